//! The chat-session rules (README "Chat sessions"), written once and run against every chat provider
//! backend: the local provider (caregraph's own database, the default) and the real Stream,
//! Sendbird and Ethora adapters talking HTTP to their fakes. Each rule drives the app through
//! GraphQL (and the scheduler's `tick`), then looks at what the provider holds: the channel's
//! custom data, members, frozen flag and system messages, and how often it was asked to create
//! a channel. Where a provider lacks a capability (`Capabilities` in `src/providers/chat.rs`),
//! exactly that assertion is skipped, with a comment saying so.

use std::time::Duration;

use caregraph::{
    clock::{Clock, ManualClock},
    providers::chat::{Capabilities, ChannelRef, ChatProvider, local::LocalChat},
};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};

use crate::{
    fakes::{self, FakeProvider, Recorded},
    helpers::{Clinic, TestApp, code, quick},
};

const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id } }";
const OPEN: &str = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id status channelId provider { name } allowedFrom allowedUntil } }";
const CLOSE: &str =
    "mutation($id: ID!) { closeChatSession(sessionId: $id) { id status closedAt closeReason } }";
const READ: &str = "query($id: ID!) { chatSession(id: $id) { id status closeReason allowedFrom allowedUntil recentMessages { text system } } }";
const DM: &str =
    "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id channelId } }";
const GROUP: &str = "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id channelId } }";
const MEMBERS: &str = "mutation($id: ID!, $a: [ID!], $r: [ID!]) { updateGroupMembers(sessionId: $id, add: $a, remove: $r) { id memberCount } }";
const RESCHEDULE: &str = "mutation($id: ID!, $at: DateTime!) { rescheduleAppointment(id: $id, startsAt: $at, durationMinutes: 30) { id } }";
const CREATE_TEAM: &str = "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Rehab\", memberIds: $m}) { id chat { id channelId } } }";
const ADD_TEAM_MEMBER: &str =
    "mutation($t: ID!, $u: ID!) { addCareTeamMember(careTeamId: $t, input: {userId: $u}) { id } }";

/// Fast outbox, and a scheduler that never wakes by itself: the rules call `tick`.
fn minutes(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("a time: {v}"))
        .parse()
        .expect("RFC 3339")
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    out.sort();
    out
}

fn messaging(channel_id: &str) -> ChannelRef {
    ChannelRef {
        channel_type: "messaging".into(),
        channel_id: channel_id.into(),
    }
}

/// The provider behind the app.
enum Provider {
    Local,
    Stream(fakes::stream::FakeStream),
    Sendbird(fakes::sendbird::FakeSendbird),
    Ethora(fakes::ethora::FakeEthora),
}

/// A running caregraph on one chat provider, with a clock the rule moves.
pub struct Backend {
    app: TestApp,
    clock: ManualClock,
    start: DateTime<Utc>,
    provider: Provider,
}

impl Backend {
    async fn local() -> Self {
        Self::spawn(Provider::Local).await
    }

    async fn stream() -> Self {
        Self::spawn(Provider::Stream(fakes::stream::start().await)).await
    }

    async fn sendbird() -> Self {
        Self::spawn(Provider::Sendbird(fakes::sendbird::start().await)).await
    }

    async fn ethora() -> Self {
        Self::spawn(Provider::Ethora(fakes::ethora::start().await)).await
    }

    async fn spawn(provider: Provider) -> Self {
        // Whole seconds, so that windows read back from the database compare exactly.
        let start = Utc::now().trunc_subsecs(0);
        let clock = ManualClock::new(start);
        let vars = match &provider {
            Provider::Local => Vec::new(),
            Provider::Stream(f) => f.vars(),
            Provider::Sendbird(f) => f.vars(),
            Provider::Ethora(f) => f.vars(),
        };
        let app = TestApp::spawn_with_clock(clock.clone(), |v| {
            quick(v);
            v.extend(vars);
        })
        .await;
        Self {
            app,
            clock,
            start,
            provider,
        }
    }

    fn name(&self) -> &'static str {
        match self.provider {
            Provider::Local => "local",
            Provider::Stream(_) => "stream",
            Provider::Sendbird(_) => "sendbird",
            Provider::Ethora(_) => "ethora",
        }
    }

    fn can(&self) -> Capabilities {
        self.app
            .state
            .services
            .chat_provider
            .provider
            .capabilities()
    }

    fn local_chat(&self) -> LocalChat {
        self.app
            .state
            .services
            .chat_provider
            .local
            .clone()
            .expect("the local provider")
    }

    fn fake(&self) -> Option<&dyn FakeProvider> {
        match &self.provider {
            Provider::Local => None,
            Provider::Stream(f) => Some(f),
            Provider::Sendbird(f) => Some(f),
            Provider::Ethora(f) => Some(f),
        }
    }

    /// Waits until the outbox has delivered everything, and fails on any dead row.
    async fn settle(&self, org: &str) {
        let outbox = &self.app.state.services.outbox;
        for _ in 0..400 {
            let counts = outbox.counts().await.expect("counts");
            if counts.dead > 0 {
                let dead = outbox.rows(org, "dead", 20).await.expect("rows");
                panic!("{}: provider operations died: {dead:?}", self.name());
            }
            if counts.pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{}: the outbox did not drain", self.name());
    }

    /// The channel's custom data at the provider (`None`: no such channel).
    async fn metadata(&self, channel_id: &str) -> Option<Map<String, Value>> {
        let ch = messaging(channel_id);
        match &self.provider {
            Provider::Local => self
                .local_chat()
                .inspect(&ch)
                .await
                .expect("inspect")
                .map(|(m, _, _)| m),
            // Stream reserves `frozen` as a field of the channel's data (it is the flag itself),
            // so the `frozen` metadata key is read from there.
            Provider::Stream(f) => f.metadata(&ch).map(|mut m| {
                let channel = f.channel(&ch).expect("the channel");
                m.insert("frozen".into(), channel["frozen"].clone());
                m
            }),
            Provider::Sendbird(f) => f.metadata(&ch),
            Provider::Ethora(f) => f.metadata(&ch),
        }
    }

    /// The channel's member ids at the provider, sorted.
    async fn members(&self, channel_id: &str) -> Option<Vec<String>> {
        let ch = messaging(channel_id);
        let members = match &self.provider {
            Provider::Local => self
                .local_chat()
                .inspect(&ch)
                .await
                .expect("inspect")
                .map(|(_, m, _)| m),
            Provider::Stream(f) => f.members(&ch),
            Provider::Sendbird(f) => f.members(&ch),
            Provider::Ethora(f) => f.members(&ch),
        };
        members.map(|mut m| {
            m.sort();
            m
        })
    }

    /// Whether the provider holds the channel frozen (Ethora keeps the flag as a room key).
    async fn frozen(&self, channel_id: &str) -> bool {
        let ch = messaging(channel_id);
        let frozen = match &self.provider {
            Provider::Local => self
                .local_chat()
                .inspect(&ch)
                .await
                .expect("inspect")
                .map(|(_, _, f)| f),
            Provider::Stream(f) => f.channel(&ch).map(|c| c["frozen"] == true),
            Provider::Sendbird(f) => f.channel(channel_id).map(|c| c.frozen),
            Provider::Ethora(f) => f.room(channel_id).map(|r| r.frozen()),
        };
        frozen.unwrap_or_else(|| panic!("{}: no channel {channel_id}", self.name()))
    }

    /// The texts of the channel's system messages at the provider, oldest first. Read from the
    /// fakes' state, so it holds for Ethora too, whose adapter reads no history.
    async fn system_messages(&self, channel_id: &str) -> Vec<String> {
        let ch = messaging(channel_id);
        let texts = match &self.provider {
            Provider::Local => Some(
                ChatProvider::recent_messages(&self.local_chat(), &ch, 100)
                    .await
                    .expect("history")
                    .into_iter()
                    .filter(|m| m.system)
                    .map(|m| m.text)
                    .collect(),
            ),
            Provider::Stream(f) => f.messages(&ch).map(|ms| {
                ms.iter()
                    .filter(|m| m["type"] == "system")
                    .map(|m| m["text"].as_str().expect("text").to_owned())
                    .collect()
            }),
            Provider::Sendbird(f) => f.channel(channel_id).map(|c| {
                c.messages
                    .into_iter()
                    .filter(|m| m.kind == "ADMM")
                    .map(|m| m.message)
                    .collect()
            }),
            Provider::Ethora(f) => f.room(channel_id).map(|r| {
                r.messages
                    .into_iter()
                    .filter(|m| m.system)
                    .map(|m| m.text)
                    .collect()
            }),
        };
        texts.unwrap_or_else(|| panic!("{}: no channel {channel_id}", self.name()))
    }

    /// A member posts as the provider's client SDK would.
    async fn user_posts(&self, channel_id: &str, user: &str, text: &str) -> Result<(), String> {
        let ch = messaging(channel_id);
        match self.fake() {
            None => self
                .local_chat()
                .post_user_message(&ch, user, text)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Some(f) => f.user_posts(&ch, user, text),
        }
    }

    /// How many channel creations the provider received (for `channel_id`, or any); `None` for
    /// the local provider, which has no wire to count on.
    fn create_calls(&self, channel_id: Option<&str>) -> Option<usize> {
        let count = |calls: Vec<Recorded>, id_of: &dyn Fn(&Recorded) -> Option<String>| {
            calls
                .iter()
                .filter(|r| channel_id.is_none_or(|id| id_of(r).as_deref() == Some(id)))
                .count()
        };
        match &self.provider {
            Provider::Local => None,
            // Stream's get-or-create is `POST /channels/{type}/{id}/query` with `data`; a
            // history read uses the same path without it.
            Provider::Stream(f) => {
                let creates = f
                    .control()
                    .requests()
                    .into_iter()
                    .filter(|r| {
                        r.method == "POST"
                            && r.path.starts_with("/channels/messaging/")
                            && r.path.ends_with("/query")
                            && r.json()["data"].is_object()
                    })
                    .collect();
                Some(count(creates, &|r| {
                    r.path
                        .strip_prefix("/channels/messaging/")
                        .and_then(|p| p.strip_suffix("/query"))
                        .map(str::to_owned)
                }))
            }
            Provider::Sendbird(f) => Some(count(
                f.control().calls("POST", "/v3/group_channels"),
                &|r| r.json()["channel_url"].as_str().map(str::to_owned),
            )),
            Provider::Ethora(f) => Some(count(f.control().calls("POST", "/v2/chats"), &|r| {
                r.json()["uuid"].as_str().map(str::to_owned)
            })),
        }
    }

    /// How many channel creations caregraph queued for the organisation (any status).
    async fn queued_creates(&self, org: &str) -> usize {
        let mut n = 0;
        for status in ["pending", "done", "dead"] {
            n += self
                .app
                .state
                .services
                .outbox
                .rows(org, status, 1000)
                .await
                .expect("rows")
                .iter()
                .filter(|r| r.operation == "create_channel")
                .count();
        }
        n
    }

    /// The app's time.
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// A session as its practitioner reads it.
    async fn session(&self, token: &str, sid: &str) -> Value {
        self.app
            .ok(token, READ, json!({"id": sid}), "chatSession")
            .await
    }

    /// Runs the scheduler once at the clock's time.
    async fn tick(&self) -> usize {
        self.app.state.services.chats.tick().await.expect("tick")
    }

    /// Schedules an appointment of the clinic's dog with the vet and the tech.
    async fn appointment(&self, c: &Clinic, starts_at: DateTime<Utc>) -> String {
        crate::chat_sessions::appointment(&self.app, c, starts_at).await
    }

    /// Opens an appointment's chat as `token`: (session id, channel id, the session).
    async fn open(&self, token: &str, appointment: &str) -> (String, String, Value) {
        let s = self
            .app
            .ok(
                token,
                OPEN,
                json!({"id": appointment}),
                "openAppointmentChat",
            )
            .await;
        assert_eq!(s["provider"]["name"], self.name());
        (
            s["id"].as_str().expect("id").to_owned(),
            s["channelId"].as_str().expect("channelId").to_owned(),
            s,
        )
    }

    /// Asserts the provider's view of a session's lifecycle: `status` and `frozen` in the custom
    /// data, and the frozen flag itself.
    async fn assert_lifecycle(&self, channel_id: &str, status: &str, frozen: bool, when: &str) {
        let meta = self
            .metadata(channel_id)
            .await
            .unwrap_or_else(|| panic!("{}: no channel {channel_id} {when}", self.name()));
        assert_eq!(
            meta.get("status"),
            Some(&json!(status)),
            "{}: metadata status {when}: {meta:?}",
            self.name()
        );
        assert_eq!(
            meta.get("frozen"),
            Some(&json!(frozen)),
            "{}: metadata frozen {when}: {meta:?}",
            self.name()
        );
        assert_eq!(
            self.frozen(channel_id).await,
            frozen,
            "{}: the frozen flag {when}",
            self.name()
        );
    }

    /// Where the provider enforces the freeze, a member's post is refused exactly when frozen.
    /// Ethora does not (`enforces_freeze: false`: its XMPP clients can still post, the apps
    /// honour the flag), so there this assertion is skipped.
    async fn assert_posting(&self, channel_id: &str, user: &str, allowed: bool, when: &str) {
        if !self.can().enforces_freeze {
            return;
        }
        let posted = self.user_posts(channel_id, user, "Is anyone there?").await;
        assert_eq!(
            posted.is_ok(),
            allowed,
            "{}: a member posts {when}: {posted:?}",
            self.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The rules.
// ---------------------------------------------------------------------------------------------

async fn rule_two_concurrent_opens_create_one_channel(b: Backend) {
    let c = b.app.clinic("race").await;
    let id = b.appointment(&c, b.start).await;
    let vars = json!({"id": id});
    let (x, y) = tokio::join!(
        b.app.gql(Some(&c.client.token), OPEN, vars.clone()),
        b.app.gql(Some(&c.vet.token), OPEN, vars.clone())
    );
    let x = &x["data"]["openAppointmentChat"];
    let y = &y["data"]["openAppointmentChat"];
    assert!(x["id"].is_string(), "{x}");
    assert_eq!(x["id"], y["id"], "one session");
    let channel = format!("appointment-{id}");
    assert_eq!(x["channelId"], channel.as_str());
    // A third, later open is a get.
    let (again, _, _) = b.open(&c.tech.token, &id).await;
    assert_eq!(again, x["id"].as_str().expect("id"));
    b.settle(&c.org).await;

    assert_eq!(b.queued_creates(&c.org).await, 1, "one create queued");
    if let Some(calls) = b.create_calls(Some(&channel)) {
        assert_eq!(calls, 1, "{}: one create call at the provider", b.name());
    }
    assert_eq!(
        b.members(&channel).await.expect("the channel"),
        sorted(&[&c.client.id, &c.vet.id, &c.tech.id])
    );
}

async fn rule_the_channel_carries_the_metadata_and_members_on_create(b: Backend) {
    let c = b.app.clinic("meta").await;
    let id = b.appointment(&c, b.start + minutes(2)).await;
    let (sid, channel, session) = b.open(&c.vet.token, &id).await;
    assert_eq!(session["status"], "ACTIVE");
    b.settle(&c.org).await;
    let meta = b.metadata(&channel).await.expect("the channel");
    let expect = [
        ("chatCategory", json!("client")),
        ("orgId", json!(c.org)),
        ("organisationIds", json!([c.org])),
        ("isGroup", json!(false)),
        ("appointmentId", json!(id)),
        ("petName", json!("Rex")),
        ("petOwnerName", json!("Casey Client")),
        ("status", json!("active")),
        ("frozen", json!(false)),
        ("activationMinutes", json!(5)),
    ];
    for (key, value) in &expect {
        assert_eq!(
            meta.get(*key),
            Some(value),
            "{}: {key} in {meta:?}",
            b.name()
        );
    }
    assert!(!meta.contains_key("patientName"), "a dog has a petName");
    assert_eq!(
        b.members(&channel).await.expect("the channel"),
        sorted(&[&c.client.id, &c.vet.id, &c.tech.id]),
        "client, practitioner and support staff; no co-guardian without chat rights"
    );
    assert!(!b.frozen(&channel).await, "open inside the window");
    b.assert_posting(&channel, &c.client.id, true, "inside the window")
        .await;
    assert!(
        b.user_posts(&channel, &c.co_guardian.id, "me too")
            .await
            .is_err(),
        "no member, no post"
    );

    // A person (no species) is a patientName, and the appointment's own activationMinutes win.
    let person = b
        .app
        .ok(
            &c.owner.token,
            "mutation($org: ID!, $input: CreatePatientInput!) { createPatient(orgId: $org, input: $input) { id guardians { user { id } } } }",
            json!({"org": c.org, "input": {"name": "Pat Person", "guardians": [
                {"email": "pat@meta.example", "givenName": "Pat", "familyName": "Person", "relationship": "SELF"}
            ]}}),
            "createPatient",
        )
        .await;
    let pat = person["guardians"][0]["user"]["id"].clone();
    let human = b
        .app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": {
                "patientId": person["id"], "clientId": pat, "practitionerId": c.vet.id,
                "startsAt": (b.start + minutes(60)).to_rfc3339(), "durationMinutes": 30,
                "sessionType": "TELECONFERENCE", "activationMinutes": 15
            }}),
            "scheduleAppointment",
        )
        .await;
    let human = human["id"].as_str().expect("id").to_owned();
    let (other, other_channel, pending) = b.open(&c.vet.token, &human).await;
    assert_ne!(other, sid);
    assert_eq!(pending["status"], "PENDING");
    b.settle(&c.org).await;
    let meta = b.metadata(&other_channel).await.expect("the channel");
    assert_eq!(
        meta.get("patientName"),
        Some(&json!("Pat Person")),
        "{meta:?}"
    );
    assert!(!meta.contains_key("petName"), "{meta:?}");
    assert!(!meta.contains_key("petOwnerName"), "{meta:?}");
    assert_eq!(meta.get("activationMinutes"), Some(&json!(15)));
    assert_eq!(meta.get("appointmentId"), Some(&json!(human)));
    assert_eq!(
        b.members(&other_channel).await.expect("the channel"),
        sorted(&[pat.as_str().expect("id"), &c.vet.id])
    );
    // Created before its window: frozen from the start.
    b.assert_lifecycle(&other_channel, "active", true, "before the window")
        .await;
}

async fn rule_a_direct_chat_is_one_channel_for_the_pair_in_either_order(b: Backend) {
    let c = b.app.clinic("pair").await;
    let ab = b
        .app
        .ok(
            &c.vet.token,
            DM,
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    let ba = b
        .app
        .ok(
            &c.tech.token,
            DM,
            json!({"o": c.org, "c": c.vet.id}),
            "openDirectChat",
        )
        .await;
    assert_eq!(ab["id"], ba["id"], "one session per pair");
    assert_eq!(ab["channelId"], ba["channelId"]);
    let channel = ab["channelId"].as_str().expect("channelId").to_owned();
    b.settle(&c.org).await;
    assert_eq!(b.queued_creates(&c.org).await, 1);
    if let Some(calls) = b.create_calls(Some(&channel)) {
        assert_eq!(calls, 1, "{}: one create call at the provider", b.name());
    }
    assert_eq!(
        b.members(&channel).await.expect("the channel"),
        sorted(&[&c.vet.id, &c.tech.id])
    );
    let meta = b.metadata(&channel).await.expect("the channel");
    assert_eq!(meta.get("chatCategory"), Some(&json!("colleague")));
    assert_eq!(meta.get("isGroup"), Some(&json!(false)));
    assert_eq!(meta.get("organisationIds"), Some(&json!([c.org])));
    b.assert_lifecycle(&channel, "active", false, "once open")
        .await;
}

async fn rule_closing_twice_posts_one_system_message_and_ends_the_channel(b: Backend) {
    let c = b.app.clinic("close").await;
    let id = b.appointment(&c, b.start).await;
    let (sid, channel, _) = b.open(&c.vet.token, &id).await;
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", false, "before the close")
        .await;
    b.assert_posting(&channel, &c.client.id, true, "before the close")
        .await;
    assert!(b.system_messages(&channel).await.is_empty());

    let first = b
        .app
        .ok(&c.tech.token, CLOSE, json!({"id": sid}), "closeChatSession")
        .await;
    assert_eq!(first["status"], "CLOSED");
    assert_eq!(first["closeReason"], "CLOSED_BY_USER");
    b.clock.advance(minutes(1));
    let second = b
        .app
        .ok(
            &c.owner.token,
            CLOSE,
            json!({"id": sid}),
            "closeChatSession",
        )
        .await;
    assert_eq!(
        second["closedAt"], first["closedAt"],
        "closing again changes nothing"
    );
    b.settle(&c.org).await;

    let system = b.system_messages(&channel).await;
    assert_eq!(
        system.len(),
        1,
        "{}: one close message: {system:?}",
        b.name()
    );
    assert!(system[0].contains("closed by"), "{system:?}");
    b.assert_lifecycle(&channel, "ended", true, "after the close")
        .await;
    b.assert_posting(&channel, &c.client.id, false, "after the close")
        .await;
    // Through the API too, where the provider keeps a history; Ethora's adapter reads none
    // (`message_history: false`), so there `recentMessages` is empty and this is skipped.
    if b.can().message_history {
        let seen = b.session(&c.vet.token, &sid).await;
        let system = seen["recentMessages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["system"] == true)
            .count();
        assert_eq!(system, 1, "{}: {seen}", b.name());
    }
}

async fn rule_the_window_opens_and_ends_on_time(b: Backend) {
    let c = b.app.clinic("window").await;
    let starts = b.start + minutes(60);
    let id = b.appointment(&c, starts).await;
    let (sid, channel, session) = b.open(&c.client.token, &id).await;
    assert_eq!(session["status"], "PENDING");
    assert_eq!(time(&session["allowedFrom"]), starts - minutes(5));
    assert_eq!(time(&session["allowedUntil"]), starts + minutes(30 + 120));
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", true, "before the window")
        .await;
    b.assert_posting(&channel, &c.client.id, false, "before the window")
        .await;

    // One minute early: nothing moves.
    b.clock.set(starts - minutes(6));
    assert_eq!(b.tick().await, 0, "not yet");
    b.settle(&c.org).await;
    assert!(b.frozen(&channel).await, "still frozen a minute early");

    // Five minutes before the start, the window opens.
    b.clock.set(starts - minutes(5));
    assert_eq!(b.tick().await, 1);
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", false, "inside the window")
        .await;
    b.assert_posting(&channel, &c.client.id, true, "inside the window")
        .await;
    let open = b.session(&c.vet.token, &sid).await;
    assert_eq!(open["status"], "ACTIVE");

    // A minute before the end of the window it is still open.
    b.clock.set(starts + minutes(30 + 119));
    assert_eq!(b.tick().await, 0);
    // 120 minutes after the end, it ends, once.
    b.clock.set(starts + minutes(30 + 120));
    assert_eq!(b.tick().await, 1);
    assert_eq!(b.tick().await, 0, "once");
    b.settle(&c.org).await;
    let closed = b.session(&c.vet.token, &sid).await;
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(closed["closeReason"], "WINDOW_ENDED");
    b.assert_lifecycle(&channel, "ended", true, "after the window")
        .await;
    b.assert_posting(&channel, &c.client.id, false, "after the window")
        .await;
    let system = b.system_messages(&channel).await;
    assert_eq!(system.len(), 1, "{}: {system:?}", b.name());
    assert!(system[0].contains("ended"), "{system:?}");
}

async fn rule_rescheduling_moves_the_window_and_the_provider_follows(b: Backend) {
    let c = b.app.clinic("move").await;
    let id = b.appointment(&c, b.start + minutes(2)).await;
    let (sid, channel, session) = b.open(&c.vet.token, &id).await;
    assert_eq!(session["status"], "ACTIVE");
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", false, "inside the first window")
        .await;

    // Moved to tomorrow: the window moves with it and the channel freezes until then.
    b.clock.advance(minutes(1));
    let tomorrow = b.start + chrono::Duration::days(1);
    b.app
        .ok(
            &c.owner.token,
            RESCHEDULE,
            json!({"id": id, "at": tomorrow.to_rfc3339()}),
            "rescheduleAppointment",
        )
        .await;
    let moved = b.session(&c.vet.token, &sid).await;
    assert_eq!(moved["status"], "PENDING");
    assert_eq!(time(&moved["allowedFrom"]), tomorrow - minutes(5));
    assert_eq!(time(&moved["allowedUntil"]), tomorrow + minutes(30 + 120));
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", true, "after moving it to tomorrow")
        .await;
    b.assert_posting(&channel, &c.client.id, false, "after moving it to tomorrow")
        .await;

    // Moved back to a minute from now: open again, unfrozen.
    b.clock.advance(minutes(1));
    let soon = b.now() + minutes(1);
    b.app
        .ok(
            &c.owner.token,
            RESCHEDULE,
            json!({"id": id, "at": soon.to_rfc3339()}),
            "rescheduleAppointment",
        )
        .await;
    let back = b.session(&c.vet.token, &sid).await;
    assert_eq!(back["status"], "ACTIVE");
    assert_eq!(time(&back["allowedFrom"]), soon - minutes(5));
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", false, "after moving it back")
        .await;
    b.assert_posting(&channel, &c.client.id, true, "after moving it back")
        .await;
    // The rest of the custom data is untouched by the moves.
    let meta = b.metadata(&channel).await.expect("the channel");
    assert_eq!(meta.get("chatCategory"), Some(&json!("client")));
    assert_eq!(meta.get("appointmentId"), Some(&json!(id)));
    assert_eq!(meta.get("activationMinutes"), Some(&json!(5)));
    assert!(
        b.system_messages(&channel).await.is_empty(),
        "a move posts nothing"
    );
}

async fn rule_a_window_moved_after_it_opened_reopens_on_time(b: Backend) {
    let c = b.app.clinic("reopen").await;
    let starts = b.start + minutes(60);
    let id = b.appointment(&c, starts).await;
    let (sid, channel, _) = b.open(&c.vet.token, &id).await;
    b.settle(&c.org).await;
    // The scheduler opens the first window.
    b.clock.set(starts - minutes(5));
    assert_eq!(b.tick().await, 1);
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", false, "inside the first window")
        .await;

    // Moved to tomorrow: frozen until the new window.
    b.clock.advance(minutes(1));
    let tomorrow = starts + chrono::Duration::days(1);
    b.app
        .ok(
            &c.owner.token,
            RESCHEDULE,
            json!({"id": id, "at": tomorrow.to_rfc3339()}),
            "rescheduleAppointment",
        )
        .await;
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", true, "after the move")
        .await;

    // The scheduler opens the new window at its time: the channel thaws again.
    b.clock.set(tomorrow - minutes(5));
    assert_eq!(b.tick().await, 1);
    let session = b.session(&c.vet.token, &sid).await;
    assert_eq!(session["status"], "ACTIVE");
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", false, "inside the new window")
        .await;
    b.assert_posting(&channel, &c.client.id, true, "inside the new window")
        .await;
}

async fn rule_cancelling_closes_the_chat_with_appointment_cancelled(b: Backend) {
    let c = b.app.clinic("cancel").await;
    let id = b.appointment(&c, b.start + minutes(2)).await;
    let (sid, channel, _) = b.open(&c.vet.token, &id).await;
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "active", false, "before the cancellation")
        .await;
    b.clock.advance(minutes(1));
    b.app
        .ok(
            &c.owner.token,
            "mutation($id: ID!) { cancelAppointment(id: $id) { status } }",
            json!({"id": id}),
            "cancelAppointment",
        )
        .await;
    let closed = b.session(&c.vet.token, &sid).await;
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(closed["closeReason"], "APPOINTMENT_CANCELLED");
    b.settle(&c.org).await;
    b.assert_lifecycle(&channel, "ended", true, "after the cancellation")
        .await;
    b.assert_posting(&channel, &c.client.id, false, "after the cancellation")
        .await;
    let system = b.system_messages(&channel).await;
    assert_eq!(system.len(), 1, "{}: {system:?}", b.name());
    assert!(system[0].contains("cancelled"), "{system:?}");
    // A cancelled chat stays closed: the end of its old window changes nothing.
    b.clock.set(b.start + minutes(2 + 30 + 120));
    assert_eq!(b.tick().await, 0);
}

async fn rule_a_group_member_change_posts_a_system_message_and_updates_members(b: Backend) {
    let c = b.app.clinic("group").await;
    let g = b
        .app
        .ok(
            &c.vet.token,
            GROUP,
            json!({"o": c.org, "i": {"title": "Night Shift", "memberIds": [c.tech.id]}}),
            "createGroupChat",
        )
        .await;
    let sid = g["id"].as_str().expect("id").to_owned();
    let channel = g["channelId"].as_str().expect("channelId").to_owned();
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the channel"),
        sorted(&[&c.vet.id, &c.tech.id])
    );
    let meta = b.metadata(&channel).await.expect("the channel");
    assert_eq!(meta.get("chatCategory"), Some(&json!("group")));
    assert_eq!(meta.get("isGroup"), Some(&json!(true)));
    assert!(b.system_messages(&channel).await.is_empty());

    b.clock.advance(minutes(1));
    let added = b
        .app
        .ok(
            &c.vet.token,
            MEMBERS,
            json!({"id": sid, "a": [c.owner.id]}),
            "updateGroupMembers",
        )
        .await;
    assert_eq!(added["memberCount"], 3);
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the channel"),
        sorted(&[&c.vet.id, &c.tech.id, &c.owner.id])
    );
    let system = b.system_messages(&channel).await;
    assert_eq!(system.len(), 1, "{}: {system:?}", b.name());
    assert!(system[0].contains("added"), "{system:?}");
    b.assert_posting(&channel, &c.owner.id, true, "once added")
        .await;

    b.clock.advance(minutes(1));
    let removed = b
        .app
        .ok(
            &c.vet.token,
            MEMBERS,
            json!({"id": sid, "r": [c.tech.id]}),
            "updateGroupMembers",
        )
        .await;
    assert_eq!(removed["memberCount"], 2);
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the channel"),
        sorted(&[&c.vet.id, &c.owner.id])
    );
    let system = b.system_messages(&channel).await;
    assert_eq!(system.len(), 2, "{}: {system:?}", b.name());
    assert!(system[1].contains("removed"), "{system:?}");
    assert!(
        b.user_posts(&channel, &c.tech.id, "still here?")
            .await
            .is_err(),
        "a removed member cannot post"
    );
}

async fn rule_a_case_room_follows_its_participants(b: Backend) {
    let c = b.app.clinic("caseroom").await;
    let case = b
        .app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { channelId } } }",
            json!({"o": c.org, "i": {"reference": "CLM-7", "title": "Claim 7", "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]}}),
            "createCase",
        )
        .await;
    let case_id = case["id"].as_str().expect("id").to_owned();
    let channel = format!("case-{case_id}");
    assert_eq!(case["chat"]["channelId"], channel.as_str());
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the room"),
        sorted(&[&c.owner.id, &c.vet.id]),
        "the participants and the creator"
    );
    let meta = b.metadata(&channel).await.expect("the room");
    assert_eq!(meta.get("chatCategory"), Some(&json!("case")));
    assert_eq!(meta.get("caseId"), Some(&json!(case_id)));

    b.clock.advance(minutes(1));
    b.app
        .ok(
            &c.owner.token,
            "mutation($id: ID!, $u: ID!) { addCaseParticipant(caseId: $id, input: {userId: $u, role: PATIENT}) { id } }",
            json!({"id": case_id, "u": c.client.id}),
            "addCaseParticipant",
        )
        .await;
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the room"),
        sorted(&[&c.owner.id, &c.vet.id, &c.client.id])
    );

    b.clock.advance(minutes(1));
    b.app
        .ok(
            &c.owner.token,
            "mutation($id: ID!, $u: ID!) { removeCaseParticipant(caseId: $id, userId: $u) { id } }",
            json!({"id": case_id, "u": c.vet.id}),
            "removeCaseParticipant",
        )
        .await;
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the room"),
        sorted(&[&c.owner.id, &c.client.id])
    );
    if let Some(calls) = b.create_calls(Some(&channel)) {
        assert_eq!(calls, 1, "{}: the room is created once", b.name());
    }
}

async fn rule_a_care_team_chat_refuses_unconsented_outside_staff(b: Backend) {
    let c = b.app.clinic("team").await;
    // A team with another organisation's staff, without MESSAGING consent: refused, and
    // nothing reaches the provider.
    let body = b
        .app
        .gql(
            Some(&c.vet.token),
            CREATE_TEAM,
            json!({"p": c.patient, "m": [c.tech.id, c.outsider.id]}),
        )
        .await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "{body}");
    b.settle(&c.org).await;
    assert_eq!(b.queued_creates(&c.org).await, 0, "nothing queued");
    if let Some(calls) = b.create_calls(None) {
        assert_eq!(calls, 0, "{}: nothing created at the provider", b.name());
    }
    let list = "query($o: ID!) { chatSessions(orgId: $o, category: CARE_TEAM) { totalCount } }";
    assert_eq!(
        b.app
            .ok(&c.vet.token, list, json!({"o": c.org}), "chatSessions")
            .await["totalCount"],
        0
    );

    // Without the outsider the team and its staff-only chat are created.
    let team = b
        .app
        .ok(
            &c.vet.token,
            CREATE_TEAM,
            json!({"p": c.patient, "m": [c.tech.id]}),
            "createCareTeam",
        )
        .await;
    let team_id = team["id"].as_str().expect("id").to_owned();
    let channel = format!("careteam-{team_id}");
    assert_eq!(team["chat"]["channelId"], channel.as_str());
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the chat"),
        sorted(&[&c.vet.id, &c.tech.id])
    );
    assert_eq!(
        b.metadata(&channel)
            .await
            .expect("the chat")
            .get("chatCategory"),
        Some(&json!("care_team"))
    );

    // Adding the outsider without consent: refused, the provider's members unchanged.
    b.clock.advance(minutes(1));
    let vars = json!({"t": team_id, "u": c.outsider.id});
    let body = b
        .app
        .gql(Some(&c.vet.token), ADD_TEAM_MEMBER, vars.clone())
        .await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "{body}");
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the chat"),
        sorted(&[&c.vet.id, &c.tech.id]),
        "the outsider did not join at the provider"
    );

    // With the patient's MESSAGING consent for their organisation, they join.
    b.app
        .ok(
            &c.owner.token,
            "mutation($p: ID!, $o: ID!) { recordConsent(patientId: $p, input: {scope: MESSAGING, grantedToOrgId: $o}) { id } }",
            json!({"p": c.patient, "o": c.other_org}),
            "recordConsent",
        )
        .await;
    b.clock.advance(minutes(1));
    b.app
        .ok(&c.vet.token, ADD_TEAM_MEMBER, vars, "addCareTeamMember")
        .await;
    b.settle(&c.org).await;
    assert_eq!(
        b.members(&channel).await.expect("the chat"),
        sorted(&[&c.vet.id, &c.tech.id, &c.outsider.id])
    );
    assert_eq!(b.queued_creates(&c.org).await, 1, "one chat, created once");
    if let Some(calls) = b.create_calls(None) {
        assert_eq!(calls, 1, "{}: one create call in all", b.name());
    }
}

// ---------------------------------------------------------------------------------------------
// Every rule on every backend: `local::…`, `stream::…`, `sendbird::…`, `ethora::…`.
// ---------------------------------------------------------------------------------------------

macro_rules! on_backend {
    ($backend:ident: $($(#[$attr:meta])* $name:ident => $rule:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                $(#[$attr])*
                async fn $name() {
                    super::$rule(super::Backend::$backend().await).await;
                }
            )*
        }
    };
}

macro_rules! rules {
    ($($(#[$attr:meta])* $name:ident => $rule:ident),* $(,)?) => {
        on_backend!(local: $($(#[$attr])* $name => $rule),*);
        on_backend!(stream: $($(#[$attr])* $name => $rule),*);
        on_backend!(sendbird: $($(#[$attr])* $name => $rule),*);
        on_backend!(ethora: $($(#[$attr])* $name => $rule),*);
    };
}

rules! {
    two_concurrent_opens_create_one_channel => rule_two_concurrent_opens_create_one_channel,
    the_channel_carries_the_metadata_and_members_on_create =>
        rule_the_channel_carries_the_metadata_and_members_on_create,
    a_direct_chat_is_one_channel_for_the_pair_in_either_order =>
        rule_a_direct_chat_is_one_channel_for_the_pair_in_either_order,
    closing_twice_posts_one_system_message_and_ends_the_channel =>
        rule_closing_twice_posts_one_system_message_and_ends_the_channel,
    the_window_opens_and_ends_on_time => rule_the_window_opens_and_ends_on_time,
    rescheduling_moves_the_window_and_the_provider_follows =>
        rule_rescheduling_moves_the_window_and_the_provider_follows,
    // A window that opens a second time (after a reschedule) thaws the channel again.
    a_window_moved_after_it_opened_reopens_on_time =>
        rule_a_window_moved_after_it_opened_reopens_on_time,
    cancelling_closes_the_chat_with_appointment_cancelled =>
        rule_cancelling_closes_the_chat_with_appointment_cancelled,
    a_group_member_change_posts_a_system_message_and_updates_members =>
        rule_a_group_member_change_posts_a_system_message_and_updates_members,
    a_case_room_follows_its_participants => rule_a_case_room_follows_its_participants,
    a_care_team_chat_refuses_unconsented_outside_staff =>
        rule_a_care_team_chat_refuses_unconsented_outside_staff,
}
