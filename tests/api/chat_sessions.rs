//! Chat sessions, appointment chats so far: create-or-get (race-free),
//! members and provider metadata, the window and its scheduler with a controllable clock, the
//! provider channel frozen outside the window, closing once, tokens, lists with provider state,
//! `sendChatMessage` on the local provider, and the authorization matrix.

use caregraph::{clock::ManualClock, providers::chat::ChannelRef};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::{
    fakes::{self, FakeProvider},
    helpers::{Clinic, TestApp, code, quick, settle},
};

const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id } }";
const OPEN: &str = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id category status channelId cid provider { name } allowedFrom allowedUntil members { user { id } role } memberCount appointment { id } } }";
const CLOSE: &str = "mutation($id: ID!) { closeChatSession(sessionId: $id) { id status closedAt closeReason closedBy { id } } }";
const SEND: &str = "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id text author system } }";
const READ: &str = "query($id: ID!) { chatSession(id: $id) { id status closeReason recentMessages { text system author } lastMessage { text } unreadCount } }";

pub(crate) async fn appointment(app: &TestApp, c: &Clinic, starts_at: DateTime<Utc>) -> String {
    appointment_with(app, c, starts_at, &[&c.tech.id]).await
}

/// `n` 5-minute teleconferences of the clinic's patient with its client and vet, back to back
/// from `from` (a practitioner is never booked twice at once); their ids in order.
pub(crate) async fn back_to_back(
    app: &TestApp,
    c: &Clinic,
    from: DateTime<Utc>,
    n: i64,
) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let a = app
            .ok(
                &c.owner.token,
                SCHEDULE,
                json!({"org": c.org, "input": {
                    "patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
                    "startsAt": (from + chrono::Duration::minutes(5 * i)).to_rfc3339(),
                    "durationMinutes": 5, "sessionType": "TELECONFERENCE"
                }}),
                "scheduleAppointment",
            )
            .await;
        ids.push(a["id"].as_str().expect("id").to_owned());
    }
    ids
}

/// A 30-minute teleconference of the clinic's patient with its client and vet, and `support`.
pub(crate) async fn appointment_with(
    app: &TestApp,
    c: &Clinic,
    starts_at: DateTime<Utc>,
    support: &[&str],
) -> String {
    let a = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": {
                "patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
                "supportStaffIds": support, "startsAt": starts_at.to_rfc3339(),
                "durationMinutes": 30, "sessionType": "TELECONFERENCE"
            }}),
            "scheduleAppointment",
        )
        .await;
    a["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn opening_an_appointment_chat_is_create_or_get_even_when_concurrent() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("open").await;
    let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
    let vars = json!({"id": id});
    let (a, b) = tokio::join!(
        app.gql(Some(&c.client.token), OPEN, vars.clone()),
        app.gql(Some(&c.vet.token), OPEN, vars.clone())
    );
    let a = &a["data"]["openAppointmentChat"];
    let b = &b["data"]["openAppointmentChat"];
    assert_eq!(a["id"], b["id"], "one session: {a} {b}");
    assert_eq!(a["category"], "CLIENT");
    assert_eq!(
        a["status"], "ACTIVE",
        "the window opened 5 minutes before the start"
    );
    assert_eq!(a["channelId"], format!("appointment-{id}"));
    assert_eq!(a["provider"]["name"], "local");
    assert_eq!(a["memberCount"], 3);
    let roles: Vec<(String, String)> = a["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["user"]["id"].as_str().expect("id").to_owned(),
                m["role"].as_str().expect("role").to_owned(),
            )
        })
        .collect();
    assert!(roles.contains(&(c.client.id.clone(), "CLIENT".into())));
    assert!(roles.contains(&(c.vet.id.clone(), "STAFF".into())));
    assert!(roles.contains(&(c.tech.id.clone(), "STAFF".into())));
    assert!(
        !roles.iter().any(|(u, _)| *u == c.co_guardian.id),
        "a co-guardian without canChat is no member"
    );
    let from: DateTime<Utc> = a["allowedFrom"]
        .as_str()
        .expect("from")
        .parse()
        .expect("time");
    let until: DateTime<Utc> = a["allowedUntil"]
        .as_str()
        .expect("until")
        .parse()
        .expect("time");
    assert_eq!(until - from, chrono::Duration::minutes(5 + 30 + 120));

    // The provider channel exists once, open, with the metadata the web client groups by.
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local provider");
    let channel = ChannelRef {
        channel_type: "messaging".into(),
        channel_id: format!("appointment-{id}"),
    };
    let (meta, members, frozen) = local
        .inspect(&channel)
        .await
        .expect("inspect")
        .expect("channel");
    assert!(!frozen);
    assert_eq!(members.len(), 3);
    assert_eq!(meta["chatCategory"], "client");
    assert_eq!(meta["orgId"], c.org.as_str());
    assert_eq!(meta["appointmentId"], id.as_str());
    assert_eq!(meta["petName"], "Rex");
    assert_eq!(meta["petOwnerName"], "Casey Client");
    assert_eq!(meta["status"], "active");
    assert_eq!(meta["frozen"], false);
    assert_eq!(meta["activationMinutes"], 5);

    // appointment.chat finds it.
    let seen = app
        .ok(
            &c.client.token,
            "query($id: ID!) { appointment(id: $id) { chat { id } } }",
            vars,
            "appointment",
        )
        .await;
    assert_eq!(seen["chat"]["id"], a["id"]);
}

#[tokio::test]
async fn the_window_opens_and_ends_on_time_and_the_provider_is_frozen_outside_it() {
    let start = Utc::now();
    let clock = ManualClock::new(start);
    let app = TestApp::spawn_with_clock(clock.clone(), quick).await;
    let c = app.clinic("window").await;
    let id = appointment(&app, &c, start + chrono::Duration::minutes(60)).await;
    let session = app
        .ok(
            &c.client.token,
            OPEN,
            json!({"id": id}),
            "openAppointmentChat",
        )
        .await;
    let sid = session["id"].as_str().expect("id").to_owned();
    assert_eq!(session["status"], "PENDING");
    // The scheduler's next wake is the window's opening.
    let next_due = || caregraph::db::chat_sessions::next_due(&app.state.services.db);
    let opens = next_due().await.expect("next due").expect("a window");
    assert!(
        opens > start + chrono::Duration::minutes(50)
            && opens <= start + chrono::Duration::minutes(60)
    );
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let channel = ChannelRef {
        channel_type: "messaging".into(),
        channel_id: format!("appointment-{id}"),
    };
    assert!(
        local
            .inspect(&channel)
            .await
            .expect("inspect")
            .expect("channel")
            .2,
        "frozen before the window"
    );
    let body = app
        .gql(
            Some(&c.client.token),
            SEND,
            json!({"id": sid, "t": "Hello?"}),
        )
        .await;
    assert_eq!(code(&body), "CHAT_NOT_OPEN");

    // Five minutes before the start, the scheduler opens the window.
    clock.set(start + chrono::Duration::minutes(55));
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 1);
    settle(&app).await;
    let (meta, _, frozen) = local
        .inspect(&channel)
        .await
        .expect("inspect")
        .expect("channel");
    assert!(!frozen, "unfrozen inside the window");
    // Then its end.
    let closes = next_due().await.expect("next due").expect("a window");
    assert!(
        closes > start + chrono::Duration::minutes(90)
            && closes <= start + chrono::Duration::minutes(210)
    );
    assert_eq!(meta["status"], "active");
    let sent = app
        .ok(
            &c.client.token,
            SEND,
            json!({"id": sid, "t": "Rex is limping"}),
            "sendChatMessage",
        )
        .await;
    assert_eq!(sent["author"], c.client.id.as_str());
    let vet_view = app
        .ok(&c.vet.token, READ, json!({"id": sid}), "chatSession")
        .await;
    assert_eq!(vet_view["status"], "ACTIVE");
    assert_eq!(vet_view["lastMessage"]["text"], "Rex is limping");
    assert_eq!(vet_view["unreadCount"], 1);

    // 120 minutes after the end, it closes for good.
    clock.set(start + chrono::Duration::minutes(60 + 30 + 120));
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 1);
    assert_eq!(
        app.state.services.chats.tick().await.expect("tick"),
        0,
        "once"
    );
    settle(&app).await;
    let closed = app
        .ok(&c.vet.token, READ, json!({"id": sid}), "chatSession")
        .await;
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(closed["closeReason"], "WINDOW_ENDED");
    let (meta, _, frozen) = local
        .inspect(&channel)
        .await
        .expect("inspect")
        .expect("channel");
    assert!(frozen);
    assert_eq!(meta["status"], "ended");
    let ends = closed["recentMessages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["system"] == true)
        .count();
    assert_eq!(ends, 1);
}

#[tokio::test]
async fn closing_twice_posts_one_system_message_and_clients_cannot_close() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("close").await;
    let id = appointment(&app, &c, Utc::now()).await;
    let session = app
        .ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
        .await;
    let sid = session["id"].as_str().expect("id").to_owned();
    assert_eq!(
        code(
            &app.gql(Some(&c.client.token), CLOSE, json!({"id": sid}))
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app.gql(Some(&c.outsider.token), CLOSE, json!({"id": sid}))
                .await
        ),
        "NOT_FOUND"
    );
    assert_eq!(
        code(&app.gql(None, CLOSE, json!({"id": sid})).await),
        "UNAUTHENTICATED"
    );
    let first = app
        .ok(&c.tech.token, CLOSE, json!({"id": sid}), "closeChatSession")
        .await;
    assert_eq!(first["status"], "CLOSED");
    assert_eq!(first["closeReason"], "CLOSED_BY_USER");
    assert_eq!(first["closedBy"]["id"], c.tech.id.as_str());
    let second = app
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
    settle(&app).await;
    let seen = app
        .ok(&c.vet.token, READ, json!({"id": sid}), "chatSession")
        .await;
    let system: Vec<&Value> = seen["recentMessages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["system"] == true)
        .collect();
    assert_eq!(system.len(), 1, "one close message: {system:?}");
    assert!(
        system[0]["text"]
            .as_str()
            .expect("text")
            .contains("closed by")
    );
    assert_eq!(
        code(
            &app.gql(Some(&c.client.token), SEND, json!({"id": sid, "t": "late"}))
                .await
        ),
        "CHAT_NOT_OPEN"
    );
}

#[tokio::test]
async fn only_members_and_admins_read_chats_and_lists_are_per_caller() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("chatauthz").await;
    let id = appointment(&app, &c, Utc::now()).await;
    let sid = app
        .ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
        .await["id"]
        .clone();
    for (who, token, expected) in [
        ("outsider", Some(c.outsider.token.as_str()), "NOT_FOUND"),
        ("stranger", Some(c.stranger.token.as_str()), "NOT_FOUND"),
        (
            "co-guardian",
            Some(c.co_guardian.token.as_str()),
            "NOT_FOUND",
        ),
        ("anonymous", None, "UNAUTHENTICATED"),
    ] {
        assert_eq!(
            code(&app.gql(token, READ, json!({"id": sid})).await),
            expected,
            "{who} reads"
        );
        assert_eq!(
            code(&app.gql(token, OPEN, json!({"id": id})).await),
            expected,
            "{who} opens"
        );
    }
    // The owner is no member but an admin: may read.
    app.ok(&c.owner.token, READ, json!({"id": sid}), "chatSession")
        .await;
    let list = "query($o: ID!) { chatSessions(orgId: $o) { totalCount edges { node { id lastMessage { text } unreadCount } } } }";
    app.ok(
        &c.client.token,
        SEND,
        json!({"id": sid, "t": "hi"}),
        "sendChatMessage",
    )
    .await;
    let vet = app
        .ok(&c.vet.token, list, json!({"o": c.org}), "chatSessions")
        .await;
    assert_eq!(vet["totalCount"], 1);
    assert_eq!(vet["edges"][0]["node"]["lastMessage"]["text"], "hi");
    assert_eq!(vet["edges"][0]["node"]["unreadCount"], 1);
    let owner = app
        .ok(&c.owner.token, list, json!({"o": c.org}), "chatSessions")
        .await;
    assert_eq!(owner["totalCount"], 0, "lists show the caller's own chats");
    assert_eq!(
        code(
            &app.gql(Some(&c.outsider.token), list, json!({"o": c.org}))
                .await
        ),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn chat_tokens_are_for_the_caller_and_rate_limited() {
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.insert("CAREGRAPH_CHAT_TOKENS_PER_MINUTE".into(), "2".into());
    })
    .await;
    let c = app.clinic("tokens").await;
    let q = "mutation { issueChatToken { provider userId token expiresAt connection } }";
    for _ in 0..2 {
        let creds = app
            .ok(&c.client.token, q, json!({}), "issueChatToken")
            .await;
        assert_eq!(creds["provider"], "local");
        assert_eq!(creds["userId"], c.client.id.as_str());
        assert!(
            creds["token"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3)
        );
    }
    let body = app.gql(Some(&c.client.token), q, json!({})).await;
    assert_eq!(code(&body), "RATE_LIMITED");
    assert!(
        body["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .is_some()
    );
    assert_eq!(code(&app.gql(None, q, json!({})).await), "UNAUTHENTICATED");
}

#[tokio::test]
async fn with_stream_the_channel_is_created_once_and_a_page_reads_in_one_call() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        for (k, val) in fake.vars() {
            v.insert(k, val);
        }
    })
    .await;
    let c = app.clinic("streamchat").await;
    let mut sessions = Vec::new();
    // Back to back from ten minutes ago: every chat window is open.
    for id in back_to_back(&app, &c, Utc::now() - chrono::Duration::minutes(10), 3).await {
        let s = app
            .ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
            .await;
        app.ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
            .await;
        assert_eq!(s["provider"]["name"], "stream");
        sessions.push((id, s["id"].as_str().expect("id").to_owned()));
    }
    settle(&app).await;
    for (id, _) in &sessions {
        let creates = fake.control().calls(
            "POST",
            &format!("/channels/messaging/appointment-{id}/query"),
        );
        assert_eq!(creates.len(), 1, "created once");
        let body = creates[0].json();
        assert_eq!(
            body["data"]["chatCategory"], "client",
            "metadata is flattened: {body}"
        );
        assert_eq!(body["data"]["frozen"], false);
    }
    fake.control().clear();
    let list = "query($o: ID!) { chatSessions(orgId: $o, first: 10) { edges { node { id lastMessage { text } unreadCount } } } }";
    let page = app
        .ok(&c.vet.token, list, json!({"o": c.org}), "chatSessions")
        .await;
    assert_eq!(page["edges"].as_array().expect("edges").len(), 3);
    assert_eq!(
        fake.control().calls("POST", "/channels").len(),
        1,
        "one provider read per page"
    );
    app.ok(
        &c.vet.token,
        CLOSE,
        json!({"id": sessions[0].1}),
        "closeChatSession",
    )
    .await;
    app.ok(
        &c.vet.token,
        CLOSE,
        json!({"id": sessions[0].1}),
        "closeChatSession",
    )
    .await;
    settle(&app).await;
    let messages = fake.control().calls(
        "POST",
        &format!("/channels/messaging/appointment-{}/message", sessions[0].0),
    );
    assert_eq!(messages.len(), 1, "one close message at Stream");
}

#[tokio::test]
async fn rescheduling_moves_the_window_and_cancelling_closes_the_chat() {
    let start = Utc::now();
    let clock = ManualClock::new(start);
    let app = TestApp::spawn_with_clock(clock.clone(), quick).await;
    let c = app.clinic("move").await;
    let id = appointment(&app, &c, start + chrono::Duration::minutes(2)).await;
    let session = app
        .ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
        .await;
    let sid = session["id"].as_str().expect("id").to_owned();
    assert_eq!(session["status"], "ACTIVE");
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let channel = ChannelRef {
        channel_type: "messaging".into(),
        channel_id: format!("appointment-{id}"),
    };

    // Moved to tomorrow: the window moves and the channel freezes until then.
    let tomorrow = chrono::SubsecRound::trunc_subsecs(start + chrono::Duration::days(1), 6);
    app.ok(
        &c.owner.token,
        "mutation($id: ID!, $at: DateTime!) { rescheduleAppointment(id: $id, startsAt: $at, durationMinutes: 45) { id } }",
        json!({"id": id, "at": tomorrow.to_rfc3339()}),
        "rescheduleAppointment",
    )
    .await;
    let moved = app
        .ok(
            &c.vet.token,
            "query($id: ID!) { chatSession(id: $id) { status allowedFrom allowedUntil } }",
            json!({"id": sid}),
            "chatSession",
        )
        .await;
    assert_eq!(moved["status"], "PENDING");
    let from: DateTime<Utc> = moved["allowedFrom"]
        .as_str()
        .expect("from")
        .parse()
        .expect("time");
    assert_eq!(tomorrow - from, chrono::Duration::minutes(5));
    settle(&app).await;
    let (meta, _, frozen) = local
        .inspect(&channel)
        .await
        .expect("inspect")
        .expect("channel");
    assert!(frozen, "frozen until the new window");
    assert_eq!(meta["frozen"], true);

    // Cancelled: closed with the reason, one system message.
    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { cancelAppointment(id: $id) { status } }",
        json!({"id": id}),
        "cancelAppointment",
    )
    .await;
    settle(&app).await;
    let closed = app
        .ok(&c.vet.token, READ, json!({"id": sid}), "chatSession")
        .await;
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(closed["closeReason"], "APPOINTMENT_CANCELLED");
    let system = closed["recentMessages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["system"] == true)
        .count();
    assert_eq!(system, 1);
    // A closed chat stays closed whatever happens to the appointment.
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 0);
}

const DM: &str = "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id category status memberCount organization { id } counterpartOrganization { id } } }";
const NETWORK: &str = "mutation($o: ID!, $c: ID!, $co: ID!) { openNetworkDirectChat(orgId: $o, colleagueId: $c, colleagueOrgId: $co) { id category counterpartOrganization { id } } }";

#[tokio::test]
async fn a_direct_chat_is_one_per_pair_in_either_order() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("dm").await;
    let ab = app
        .ok(
            &c.vet.token,
            DM,
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    let ba = app
        .ok(
            &c.tech.token,
            DM,
            json!({"o": c.org, "c": c.vet.id}),
            "openDirectChat",
        )
        .await;
    assert_eq!(ab["id"], ba["id"]);
    assert_eq!(ab["category"], "COLLEAGUE");
    assert_eq!(ab["status"], "ACTIVE");
    assert_eq!(ab["memberCount"], 2);
    let me = app
        .gql(Some(&c.vet.token), DM, json!({"o": c.org, "c": c.vet.id}))
        .await;
    assert_eq!(code(&me), "BAD_USER_INPUT");
    assert_eq!(me["errors"][0]["extensions"]["field"], "colleagueId");
    // A client is no colleague; an outsider may not open chats in the organisation.
    let client = app
        .gql(
            Some(&c.vet.token),
            DM,
            json!({"o": c.org, "c": c.client.id}),
        )
        .await;
    assert_eq!(client["errors"][0]["extensions"]["field"], "colleagueId");
    assert_eq!(
        code(
            &app.gql(
                Some(&c.outsider.token),
                DM,
                json!({"o": c.org, "c": c.vet.id})
            )
            .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        code(&app.gql(None, DM, json!({"o": c.org, "c": c.vet.id})).await),
        "UNAUTHENTICATED"
    );
    // The owner is no member of this chat and sees it in no list of theirs.
    let list =
        "query($o: ID!, $c: ChatCategory) { chatSessions(orgId: $o, category: $c) { totalCount } }";
    assert_eq!(
        app.ok(
            &c.vet.token,
            list,
            json!({"o": c.org, "c": "COLLEAGUE"}),
            "chatSessions"
        )
        .await["totalCount"],
        1
    );
    assert_eq!(
        app.ok(
            &c.vet.token,
            list,
            json!({"o": c.org, "c": "CLIENT"}),
            "chatSessions"
        )
        .await["totalCount"],
        0
    );
}

#[tokio::test]
async fn a_network_chat_needs_both_organizations_and_shows_in_both_lists() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("network").await;
    let vars = json!({"o": c.org, "c": c.outsider.id, "co": c.other_org});
    assert_eq!(
        code(&app.gql(Some(&c.vet.token), NETWORK, vars.clone()).await),
        "FORBIDDEN"
    );
    let enable = "mutation($o: ID!) { updateOrganization(orgId: $o, input: {crossOrgMessaging: true}) { crossOrgMessaging } }";
    app.ok(
        &c.owner.token,
        enable,
        json!({"o": c.org}),
        "updateOrganization",
    )
    .await;
    assert_eq!(
        code(&app.gql(Some(&c.vet.token), NETWORK, vars.clone()).await),
        "FORBIDDEN",
        "the other side must allow it too"
    );
    app.ok(
        &c.outsider.token,
        enable,
        json!({"o": c.other_org}),
        "updateOrganization",
    )
    .await;
    let chat = app
        .ok(&c.vet.token, NETWORK, vars, "openNetworkDirectChat")
        .await;
    assert_eq!(chat["category"], "COLLEAGUE");
    let back = app
        .ok(
            &c.outsider.token,
            NETWORK,
            json!({"o": c.other_org, "c": c.vet.id, "co": c.org}),
            "openNetworkDirectChat",
        )
        .await;
    assert_eq!(
        back["id"], chat["id"],
        "the same pair in either order is one chat"
    );
    let list = "query($o: ID!) { chatSessions(orgId: $o) { totalCount edges { node { id } } } }";
    assert_eq!(
        app.ok(&c.vet.token, list, json!({"o": c.org}), "chatSessions")
            .await["totalCount"],
        1
    );
    assert_eq!(
        app.ok(
            &c.outsider.token,
            list,
            json!({"o": c.other_org}),
            "chatSessions"
        )
        .await["totalCount"],
        1
    );
}

const GROUP: &str = "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id category isGroup readOnly title memberCount members { user { id } role } channelId } }";
const MEMBERS: &str = "mutation($id: ID!, $a: [ID!], $r: [ID!]) { updateGroupMembers(sessionId: $id, add: $a, remove: $r) { id memberCount } }";

#[tokio::test]
async fn groups_are_created_once_managed_by_their_owner_and_deleted_for_good() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("groups").await;
    let input = json!({"title": "Night Shift", "memberIds": [c.tech.id], "readOnly": true});
    let g = app
        .ok(
            &c.vet.token,
            GROUP,
            json!({"o": c.org, "i": input}),
            "createGroupChat",
        )
        .await;
    assert_eq!(g["category"], "GROUP");
    assert_eq!(g["isGroup"], true);
    assert_eq!(g["readOnly"], true);
    assert_eq!(g["memberCount"], 2);
    let again = app
        .ok(
            &c.tech.token,
            GROUP,
            json!({"o": c.org, "i": {"title": "night shift!", "memberIds": [c.vet.id]}}),
            "createGroupChat",
        )
        .await;
    assert_eq!(again["id"], g["id"], "create-or-get on the slug");
    let sid = g["id"].as_str().expect("id").to_owned();

    for (input, field) in [
        (json!({"title": "Solo", "memberIds": []}), "input.memberIds"),
        (
            json!({"title": "Odd", "memberIds": [c.client.id]}),
            "input.memberIds.0",
        ),
        (
            json!({"title": "Bad id", "memberIds": [c.tech.id], "channelId": "Not Valid!"}),
            "input.channelId",
        ),
    ] {
        let body = app
            .gql(Some(&c.vet.token), GROUP, json!({"o": c.org, "i": input}))
            .await;
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }

    // Members: the owner or an admin; never the owner removed; at least two left.
    assert_eq!(
        code(
            &app.gql(
                Some(&c.tech.token),
                MEMBERS,
                json!({"id": sid, "a": [c.owner.id]})
            )
            .await
        ),
        "FORBIDDEN"
    );
    let added = app
        .ok(
            &c.vet.token,
            MEMBERS,
            json!({"id": sid, "a": [c.owner.id]}),
            "updateGroupMembers",
        )
        .await;
    assert_eq!(added["memberCount"], 3);
    let body = app
        .gql(
            Some(&c.owner.token),
            MEMBERS,
            json!({"id": sid, "r": [c.vet.id]}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "remove",
        "the owner stays"
    );
    let body = app
        .gql(
            Some(&c.vet.token),
            MEMBERS,
            json!({"id": sid, "r": [c.tech.id, c.owner.id]}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "remove",
        "two stay"
    );
    let body = app
        .gql(
            Some(&c.vet.token),
            MEMBERS,
            json!({"id": sid, "a": [c.client.id]}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "add.0");
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let channel = ChannelRef {
        channel_type: "messaging".into(),
        channel_id: g["channelId"].as_str().expect("channel").into(),
    };
    assert_eq!(
        local
            .inspect(&channel)
            .await
            .expect("inspect")
            .expect("channel")
            .1
            .len(),
        3
    );
    let read = "query($id: ID!) { chatSession(id: $id) { recentMessages { text system } } }";
    let messages = app
        .ok(&c.vet.token, read, json!({"id": sid}), "chatSession")
        .await;
    assert!(messages["recentMessages"].as_array().expect("list").iter().any(|m| m["system"] == true
        && m["text"].as_str().is_some_and(|t| t.contains("added"))), "{messages}");

    let update = "mutation($id: ID!) { updateGroupChat(sessionId: $id, input: {title: \"Nights\", readOnly: false}) { title readOnly } }";
    let updated = app
        .ok(
            &c.owner.token,
            update,
            json!({"id": sid}),
            "updateGroupChat",
        )
        .await;
    assert_eq!(updated, json!({"title": "Nights", "readOnly": false}));

    let delete = "mutation($id: ID!) { deleteGroupChat(sessionId: $id) }";
    assert_eq!(
        code(
            &app.gql(Some(&c.tech.token), delete, json!({"id": sid}))
                .await
        ),
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app.gql(Some(&c.outsider.token), delete, json!({"id": sid}))
                .await
        ),
        "NOT_FOUND"
    );
    app.ok(&c.vet.token, delete, json!({"id": sid}), "deleteGroupChat")
        .await;
    assert_eq!(
        code(&app.gql(Some(&c.vet.token), read, json!({"id": sid})).await),
        "NOT_FOUND"
    );
    settle(&app).await;
    assert!(
        local.inspect(&channel).await.expect("inspect").is_none(),
        "gone at the provider"
    );
}

#[tokio::test]
async fn a_case_gets_one_room_that_follows_its_participants_and_closes_with_it() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("caseroom").await;
    let create = "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id category members { user { id } } channelId } } }";
    let input = json!({"reference": "CLM-7", "title": "Claim 7", "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]});
    let case = app
        .ok(
            &c.owner.token,
            create,
            json!({"o": c.org, "i": input}),
            "createCase",
        )
        .await;
    let room = &case["chat"];
    assert_eq!(room["category"], "CASE");
    assert_eq!(
        room["channelId"],
        format!("case-{}", case["id"].as_str().expect("id"))
    );
    let again = app
        .ok(&c.owner.token, create, json!({"o": c.org, "i": {"reference": "CLM-7", "title": "x", "participants": [{"userId": c.client.id, "role": "PATIENT"}]}}), "createCase")
        .await;
    assert_eq!(again["chat"]["id"], room["id"], "one room per case");
    let ids: Vec<&str> = again["chat"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user"]["id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.contains(&c.client.id.as_str()) && ids.contains(&c.vet.id.as_str()),
        "{ids:?}"
    );

    let remove = "mutation($id: ID!, $u: ID!) { removeCaseParticipant(caseId: $id, userId: $u) { chat { memberCount } } }";
    let after = app
        .ok(
            &c.owner.token,
            remove,
            json!({"id": case["id"], "u": c.client.id}),
            "removeCaseParticipant",
        )
        .await;
    assert_eq!(
        after["chat"]["memberCount"], 2,
        "the owner (creator) and the vet"
    );
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let channel = ChannelRef {
        channel_type: "messaging".into(),
        channel_id: room["channelId"].as_str().expect("id").into(),
    };
    assert_eq!(
        local
            .inspect(&channel)
            .await
            .expect("inspect")
            .expect("room")
            .1
            .len(),
        2
    );

    let close = "mutation($id: ID!) { closeCase(caseId: $id, deleteRoom: true) { status chat { status closeReason } } }";
    let closed = app
        .ok(&c.vet.token, close, json!({"id": case["id"]}), "closeCase")
        .await;
    assert_eq!(closed["status"], "CLOSED");
    assert_eq!(closed["chat"]["status"], "CLOSED");
    settle(&app).await;
    assert!(
        local.inspect(&channel).await.expect("inspect").is_none(),
        "deleted at the provider"
    );
    // Closing again, with or without deleteRoom, is harmless (a gone room counts as deleted).
    app.ok(&c.vet.token, close, json!({"id": case["id"]}), "closeCase")
        .await;
    settle(&app).await;
    assert_eq!(
        app.state
            .services
            .outbox
            .counts()
            .await
            .expect("counts")
            .dead,
        0
    );
}

#[tokio::test]
async fn an_admin_who_opens_an_appointment_chat_takes_part_in_it() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("adminopen").await;
    let id = appointment(&app, &c, Utc::now()).await;
    let chat = app
        .ok(
            &c.owner.token,
            OPEN,
            json!({"id": id}),
            "openAppointmentChat",
        )
        .await;
    assert_eq!(chat["memberCount"], 4);
    let sent = app
        .ok(
            &c.owner.token,
            SEND,
            json!({"id": chat["id"], "t": "Hello from the clinic"}),
            "sendChatMessage",
        )
        .await;
    assert_eq!(sent["author"], c.owner.id.as_str());
    // A plain staff member who is no participant may not open it.
    let (_, other) = app
        .member(&c.owner.token, &c.org, "desk@adminopen.example", "STAFF")
        .await;
    assert_eq!(
        code(&app.gql(Some(&other), OPEN, json!({"id": id})).await),
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn a_care_team_has_a_staff_only_chat_that_follows_the_team_and_its_consent() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("teamchat").await;
    let create = "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Rehab\", memberIds: $m}) { id chat { id category members { user { id } } } } }";
    let team = app
        .ok(
            &c.vet.token,
            create,
            json!({"p": c.patient, "m": [c.tech.id]}),
            "createCareTeam",
        )
        .await;
    let chat = &team["chat"];
    assert_eq!(chat["category"], "CARE_TEAM");
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["user"]["id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut expected = vec![c.vet.id.clone(), c.tech.id.clone()];
    expected.sort();
    assert_eq!(ids(chat), expected, "staff only: no guardian");

    let add = "mutation($t: ID!, $u: ID!) { addCareTeamMember(careTeamId: $t, input: {userId: $u}) { id } }";
    let vars = json!({"t": team["id"], "u": c.outsider.id});
    assert_eq!(
        code(&app.gql(Some(&c.vet.token), add, vars.clone()).await),
        "CONSENT_REQUIRED"
    );
    let read = "query($t: ID!) { careTeam(id: $t) { chat { members { user { id } } } } }";
    assert_eq!(
        ids(&app
            .ok(&c.vet.token, read, json!({"t": team["id"]}), "careTeam")
            .await["chat"])
        .len(),
        2,
        "nothing changed"
    );
    app.ok(
        &c.owner.token,
        "mutation($p: ID!, $o: ID!) { recordConsent(patientId: $p, input: {scope: MESSAGING, grantedToOrgId: $o}) { id } }",
        json!({"p": c.patient, "o": c.other_org}),
        "recordConsent",
    )
    .await;
    app.ok(&c.vet.token, add, vars, "addCareTeamMember").await;
    let now = app
        .ok(&c.vet.token, read, json!({"t": team["id"]}), "careTeam")
        .await;
    assert!(
        ids(&now["chat"]).contains(&c.outsider.id),
        "the consented outside member joins the chat"
    );
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let channel = ChannelRef {
        channel_type: "messaging".into(),
        channel_id: format!("careteam-{}", team["id"].as_str().expect("id")),
    };
    assert_eq!(
        local
            .inspect(&channel)
            .await
            .expect("inspect")
            .expect("room")
            .1
            .len(),
        3
    );
}
