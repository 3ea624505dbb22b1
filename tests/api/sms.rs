//! External members by SMS (README "SMS members"): `addExternalChatMember`,
//! `removeExternalChatMember` and `ChatSession.externalMembers` in care-team and case chats
//! (staff only, E.164 numbers, the patient's `MESSAGING` consent), each message posted in the
//! chat relayed by SMS through the outbox (an outage loses nothing and sends nothing twice), the
//! signed inbound webhook that posts a reply as the external member and honours STOP and START;
//! on the local chat provider with the local SMS gateway, against the fake Twilio (exact
//! requests checked), and against the Stream and Sendbird fakes.

use std::time::Duration;

use caregraph::db::entities::audit_event;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::{
    fakes::{self, FakeProvider, twilio::FakeTwilio},
    helpers::{Clinic, TestApp, code, quick, settle},
};

const ADD: &str = "mutation($s: ID!, $i: ExternalChatMemberInput!) { addExternalChatMember(sessionId: $s, input: $i) { id name phoneNumber optedOut } }";
const REMOVE: &str = "mutation($s: ID!, $m: ID!) { removeExternalChatMember(sessionId: $s, externalMemberId: $m) { id memberCount externalMembers { id } } }";
const SESSION: &str = "query($id: ID!) { chatSession(id: $id) { memberCount members { user { id } } externalMembers { id name phoneNumber optedOut localSmsMessages { to from body } } } }";
const SEND: &str = "mutation($id: ID!, $t: String!, $k: String) { sendChatMessage(sessionId: $id, text: $t, clientMessageId: $k) { id text } }";
const HISTORY: &str = "query($id: ID!) { chatSession(id: $id) { messages(first: 20) { edges { node { id text author } } } } }";
const CONSENT: &str =
    "mutation($p: ID!, $i: RecordConsentInput!) { recordConsent(patientId: $p, input: $i) { id } }";
const REVOKE: &str = "mutation($id: ID!) { revokeConsent(id: $id) { id } }";
const TEAM: &str = "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Rex's rehab\", memberIds: $m}) { id chat { id channelId } } }";

/// Dr Ortiz, an outside clinician.
const ORTIZ: &str = "+15005550101";
/// Nurse Kim, another one.
const KIM: &str = "+15005550102";

/// The chat provider behind the app.
enum Chat {
    Local,
    Stream(fakes::stream::FakeStream),
    Sendbird(fakes::sendbird::FakeSendbird),
    Ethora(fakes::ethora::FakeEthora),
}

/// A caregraph with a clinic whose patient consented to MESSAGING and has a care team (the vet
/// and the tech) with its chat.
struct Setup {
    app: TestApp,
    c: Clinic,
    chat: Chat,
    twilio: Option<FakeTwilio>,
    consent: String,
    session: String,
    channel: String,
}

impl Setup {
    async fn start(chat: Chat, twilio: bool, tag: &str) -> Self {
        let twilio = if twilio {
            Some(fakes::twilio::start().await)
        } else {
            None
        };
        let mut vars = match &chat {
            Chat::Local => Vec::new(),
            Chat::Stream(f) => f.vars(),
            Chat::Sendbird(f) => f.vars(),
            Chat::Ethora(f) => f.vars(),
        };
        vars.extend(twilio.iter().flat_map(FakeTwilio::vars));
        let app = TestApp::spawn_with(|v| {
            quick(v);
            v.extend(vars);
        })
        .await;
        let c = app.clinic(tag).await;
        let consent = app
            .ok(
                &c.owner.token,
                CONSENT,
                json!({"p": c.patient, "i": {"scope": "MESSAGING", "grantedToOrgId": c.other_org}}),
                "recordConsent",
            )
            .await["id"]
            .as_str()
            .expect("consent")
            .to_owned();
        let team = app
            .ok(
                &c.vet.token,
                TEAM,
                json!({"p": c.patient, "m": [c.tech.id]}),
                "createCareTeam",
            )
            .await;
        settle(&app).await;
        Self {
            session: team["chat"]["id"].as_str().expect("chat").to_owned(),
            channel: team["chat"]["channelId"]
                .as_str()
                .expect("channel")
                .to_owned(),
            app,
            c,
            chat,
            twilio,
            consent,
        }
    }

    fn twilio(&self) -> &FakeTwilio {
        self.twilio.as_ref().expect("the fake Twilio")
    }

    fn provider(&self) -> Option<&dyn FakeProvider> {
        match &self.chat {
            Chat::Local => None,
            Chat::Stream(f) => Some(f),
            Chat::Sendbird(f) => Some(f),
            Chat::Ethora(f) => Some(f),
        }
    }

    fn channel_ref(&self) -> caregraph::providers::chat::ChannelRef {
        caregraph::providers::chat::ChannelRef {
            channel_type: "messaging".into(),
            channel_id: self.channel.clone(),
        }
    }

    async fn add(&self, token: &str, name: &str, phone: &str) -> Value {
        self.app
            .gql(
                Some(token),
                ADD,
                json!({"s": self.session, "i": {"name": name, "phoneNumber": phone}}),
            )
            .await
    }

    /// Adds an external member as the vet; their id.
    async fn added(&self, name: &str, phone: &str) -> String {
        let body = self.add(&self.c.vet.token, name, phone).await;
        assert!(body.get("errors").is_none(), "add: {body}");
        settle(&self.app).await;
        body["data"]["addExternalChatMember"]["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    async fn session(&self) -> Value {
        self.app
            .ok(
                &self.c.vet.token,
                SESSION,
                json!({"id": self.session}),
                "chatSession",
            )
            .await
    }

    /// Sends as the vet (with a client message id); the message's id.
    async fn send(&self, text: &str, key: &str) -> String {
        let sent = self
            .app
            .ok(
                &self.c.vet.token,
                SEND,
                json!({"id": self.session, "t": text, "k": key}),
                "sendChatMessage",
            )
            .await;
        settle(&self.app).await;
        sent["id"].as_str().expect("id").to_owned()
    }

    /// The relayed body of `text` by `author` in the care-team chat.
    fn relayed(&self, author: &str, text: &str) -> String {
        let hex = self.session.replace('-', "");
        format!(
            "[{author}, Care team chat #{}] {text}",
            &hex[hex.len() - 6..]
        )
    }

    async fn display_name(&self, user: &str) -> String {
        let id = caregraph::domain::UserId::parse(user, "id").expect("id");
        caregraph::db::users::find(&self.app.state.services.db, id)
            .await
            .expect("read")
            .expect("user")
            .display_name
    }

    /// The SMS the fake Twilio accepted for `to`, in order.
    fn texts_to(&self, to: &str) -> Vec<String> {
        self.twilio()
            .accepted()
            .into_iter()
            .filter(|m| m.to == to)
            .map(|m| m.body)
            .collect()
    }
}

/// The local gateway's records of the external member with `phone`.
fn local_bodies(session: &Value, phone: &str) -> Vec<String> {
    session["externalMembers"]
        .as_array()
        .expect("external members")
        .iter()
        .find(|m| m["phoneNumber"] == phone)
        .unwrap_or_else(|| panic!("{phone} in {session}"))["localSmsMessages"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["body"].as_str().expect("body").to_owned())
        .collect()
}

/// Polls `check` for up to 10 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The chat's history as `(text, author)`, oldest first.
async fn history(s: &Setup) -> Vec<(String, String)> {
    let page = s
        .app
        .ok(
            &s.c.vet.token,
            HISTORY,
            json!({"id": s.session}),
            "chatSession",
        )
        .await;
    let mut out: Vec<(String, String)> = page["messages"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["node"]["text"].as_str().unwrap_or_default().to_owned(),
                e["node"]["author"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.reverse();
    out
}

#[tokio::test]
async fn an_outside_clinician_added_by_phone_counts_as_a_member_and_gets_each_message_on_the_local_gateway()
 {
    let s = Setup::start(Chat::Local, false, "smslocal").await;
    assert_eq!(s.session().await["memberCount"], 2, "the vet and the tech");
    let body = s.add(&s.c.vet.token, "Dr Ortiz", "+1 (500) 555-0101").await;
    let member = &body["data"]["addExternalChatMember"];
    assert_eq!(member["name"], "Dr Ortiz");
    assert_eq!(member["phoneNumber"], ORTIZ, "stored in E.164");
    assert_eq!(member["optedOut"], false);
    settle(&s.app).await;
    let session = s.session().await;
    assert_eq!(
        session["memberCount"], 3,
        "external members count: {session}"
    );
    assert_eq!(session["members"].as_array().expect("members").len(), 2);
    assert_eq!(session["externalMembers"][0]["id"], member["id"]);
    s.send("BP is stable after the change", "m-1").await;
    let vet = s.display_name(&s.c.vet.id).await;
    let session = s.session().await;
    assert_eq!(
        local_bodies(&session, ORTIZ),
        vec![s.relayed(&vet, "BP is stable after the change")]
    );
    let record = &session["externalMembers"][0]["localSmsMessages"][0];
    assert_eq!(record["to"], ORTIZ);
    assert_eq!(record["from"], "caregraph");
    // The same client message id again posts nothing and relays nothing new.
    s.send("BP is stable after the change", "m-1").await;
    assert_eq!(local_bodies(&s.session().await, ORTIZ).len(), 1);
}

#[tokio::test]
async fn a_phone_only_care_team_member_takes_part_in_the_team_chat_by_sms() {
    let s = Setup::start(Chat::Local, false, "smsteam").await;
    let team = s
        .app
        .ok(
            &s.c.vet.token,
            "query($id: ID!) { chatSession(id: $id) { careTeam { id } } }",
            json!({"id": s.session}),
            "chatSession",
        )
        .await["careTeam"]["id"]
        .as_str()
        .expect("team")
        .to_owned();
    let member = s
        .app
        .ok(
            &s.c.vet.token,
            "mutation($t: ID!, $i: AddCareTeamMemberInput!) { addCareTeamMember(careTeamId: $t, input: $i) { id } }",
            json!({"t": team, "i": {"phone": ORTIZ, "displayName": "Dr Ortiz"}}),
            "addCareTeamMember",
        )
        .await["id"]
        .as_str()
        .expect("member")
        .to_owned();
    settle(&s.app).await;
    let session = s.session().await;
    assert_eq!(session["memberCount"], 3, "no longer 2: {session}");
    let external = &session["externalMembers"][0];
    assert_eq!(external["name"], "Dr Ortiz");
    assert_eq!(external["phoneNumber"], ORTIZ);
    s.send("Welcome to the team", "m-1").await;
    assert_eq!(local_bodies(&s.session().await, ORTIZ).len(), 1);
    // They leave with the care team, not on their own.
    let refused = s
        .app
        .gql(
            Some(&s.c.vet.token),
            REMOVE,
            json!({"s": s.session, "m": external["id"]}),
        )
        .await;
    assert_eq!(code(&refused), "CONFLICT");
    s.app
        .ok(
            &s.c.vet.token,
            "mutation($t: ID!, $m: ID!) { removeCareTeamMember(careTeamId: $t, memberId: $m) { id } }",
            json!({"t": team, "m": member}),
            "removeCareTeamMember",
        )
        .await;
    settle(&s.app).await;
    let session = s.session().await;
    assert_eq!(session["memberCount"], 2);
    assert_eq!(session["externalMembers"], json!([]));
}

#[tokio::test]
async fn adding_an_external_member_needs_a_valid_number_staff_a_team_or_case_chat_and_consent() {
    let s = Setup::start(Chat::Local, false, "smsrules").await;
    let bad = s.add(&s.c.vet.token, "Dr Ortiz", "555-0101").await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");
    assert_eq!(bad["errors"][0]["extensions"]["field"], "input.phoneNumber");
    let unnamed = s.add(&s.c.vet.token, " ", ORTIZ).await;
    assert_eq!(unnamed["errors"][0]["extensions"]["field"], "input.name");
    // Someone who cannot read the chat learns nothing about it.
    let stranger = s.add(&s.c.stranger.token, "Dr Ortiz", ORTIZ).await;
    assert_eq!(code(&stranger), "NOT_FOUND");
    let outsider = s.add(&s.c.outsider.token, "Dr Ortiz", ORTIZ).await;
    assert_eq!(code(&outsider), "NOT_FOUND");
    s.added("Dr Ortiz", ORTIZ).await;
    let twice = s.add(&s.c.tech.token, "Dr Ortiz again", ORTIZ).await;
    assert_eq!(code(&twice), "CONFLICT");
    // A direct chat takes no external members.
    let direct = s
        .app
        .ok(
            &s.c.vet.token,
            "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id } }",
            json!({"o": s.c.org, "c": s.c.tech.id}),
            "openDirectChat",
        )
        .await;
    let refused = s
        .app
        .gql(
            Some(&s.c.vet.token),
            ADD,
            json!({"s": direct["id"], "i": {"name": "Dr Kim", "phoneNumber": KIM}}),
        )
        .await;
    assert_eq!(code(&refused), "BAD_USER_INPUT");
    assert_eq!(refused["errors"][0]["extensions"]["field"], "sessionId");
    // Without the patient's MESSAGING consent, no outside party joins.
    s.app
        .ok(
            &s.c.owner.token,
            REVOKE,
            json!({"id": s.consent}),
            "revokeConsent",
        )
        .await;
    let unconsented = s.add(&s.c.vet.token, "Nurse Kim", KIM).await;
    assert_eq!(code(&unconsented), "CONSENT_REQUIRED");
    let session = s.session().await;
    assert_eq!(
        session["externalMembers"].as_array().expect("list").len(),
        1,
        "the refusals changed nothing"
    );
}

#[tokio::test]
async fn in_a_case_chat_staff_add_external_members_and_a_patient_participant_may_not() {
    let s = Setup::start(Chat::Local, false, "smscase").await;
    let case = s
        .app
        .ok(
            &s.c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id } } }",
            json!({"o": s.c.org, "i": {"reference": "REF-7", "title": "Referral",
                "participants": [{"userId": s.c.vet.id, "role": "PRACTITIONER"},
                                 {"userId": s.c.client.id, "role": "PATIENT"}]}}),
            "createCase",
        )
        .await;
    settle(&s.app).await;
    let chat = case["chat"]["id"].as_str().expect("case room").to_owned();
    let app = &s.app;
    let add = |token: String| {
        let chat = chat.clone();
        async move {
            app.gql(
                Some(&token),
                ADD,
                json!({"s": chat, "i": {"name": "Dr Ortiz", "phoneNumber": ORTIZ}}),
            )
            .await
        }
    };
    // The client reads the room but is not staff.
    assert_eq!(code(&add(s.c.client.token.clone()).await), "FORBIDDEN");
    // A case about no patient needs no consent.
    let added = add(s.c.vet.token.clone()).await;
    assert!(added.get("errors").is_none(), "{added}");
    settle(&s.app).await;
    s.app
        .ok(
            &s.c.vet.token,
            SEND,
            json!({"id": chat, "t": "Referral letter sent", "k": "c-1"}),
            "sendChatMessage",
        )
        .await;
    settle(&s.app).await;
    let session = s
        .app
        .ok(&s.c.vet.token, SESSION, json!({"id": chat}), "chatSession")
        .await;
    let body = &local_bodies(&session, ORTIZ)[0];
    let hex = chat.replace('-', "");
    assert!(
        body.ends_with(&format!(
            "Case chat #{}] Referral letter sent",
            &hex[hex.len() - 6..]
        )),
        "{body}"
    );
    // A closed room takes no new external members.
    s.app
        .ok(
            &s.c.owner.token,
            "mutation($id: ID!) { closeCase(caseId: $id) { id } }",
            json!({"id": case["id"]}),
            "closeCase",
        )
        .await;
    let closed = s
        .app
        .gql(
            Some(&s.c.vet.token),
            ADD,
            json!({"s": chat, "i": {"name": "Nurse Kim", "phoneNumber": KIM}}),
        )
        .await;
    assert_eq!(code(&closed), "CHAT_NOT_OPEN");
}

#[tokio::test]
async fn a_removed_external_member_gets_nothing_more() {
    let s = Setup::start(Chat::Local, false, "smsremove").await;
    let ortiz = s.added("Dr Ortiz", ORTIZ).await;
    s.added("Nurse Kim", KIM).await;
    s.send("First", "m-1").await;
    let removed = s
        .app
        .ok(
            &s.c.tech.token,
            REMOVE,
            json!({"s": s.session, "m": ortiz}),
            "removeExternalChatMember",
        )
        .await;
    assert_eq!(removed["memberCount"], 3);
    assert_eq!(
        removed["externalMembers"].as_array().expect("list").len(),
        1
    );
    let again = s
        .app
        .gql(
            Some(&s.c.tech.token),
            REMOVE,
            json!({"s": s.session, "m": ortiz}),
        )
        .await;
    assert_eq!(code(&again), "NOT_FOUND");
    s.send("Second", "m-2").await;
    let session = s.session().await;
    assert_eq!(local_bodies(&session, KIM).len(), 2);
    // The removed member's records are no longer reachable through the chat.
    assert!(
        session["externalMembers"]
            .as_array()
            .expect("list")
            .iter()
            .all(|m| m["phoneNumber"] != ORTIZ)
    );
    let sms = caregraph::db::sms::local_of(&s.app.state.services.db, &ortiz, 10)
        .await
        .expect("records");
    assert_eq!(sms.len(), 1, "only the message before the removal");
}

#[tokio::test]
async fn revoking_the_patient_s_consent_stops_relays_and_replies_at_once() {
    let s = Setup::start(Chat::Local, true, "smsconsent").await;
    s.added("Dr Ortiz", ORTIZ).await;
    s.send("Before", "m-1").await;
    s.app
        .ok(
            &s.c.owner.token,
            REVOKE,
            json!({"id": s.consent}),
            "revokeConsent",
        )
        .await;
    s.send("After", "m-2").await;
    assert_eq!(s.texts_to(ORTIZ).len(), 1, "only the message before");
    s.twilio()
        .inbound(
            &s.app,
            "SM00000000000000000000000000000701",
            ORTIZ,
            "Late reply",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!history(&s).await.iter().any(|(t, _)| t == "Late reply"));
}

#[tokio::test]
async fn audit_records_name_external_members_and_sms_by_id_only() {
    let s = Setup::start(Chat::Local, false, "smsaudit").await;
    let ortiz = s.added("Dr Ortiz", ORTIZ).await;
    s.send("Potassium 5.9, recheck", "m-1").await;
    // Reading the list is one READ per member (written after the response).
    s.session().await;
    s.app
        .ok(
            &s.c.vet.token,
            REMOVE,
            json!({"s": s.session, "m": ortiz}),
            "removeExternalChatMember",
        )
        .await;
    let rows = audit_event::Entity::find()
        .all(&s.app.state.services.db)
        .await
        .expect("audit");
    let has = |action: &str, entity: &str, id: Option<&str>| {
        rows.iter().any(|r| {
            r.action == action
                && r.entity_type == entity
                && id.is_none_or(|id| r.entity_id.as_deref() == Some(id))
        })
    };
    assert!(has("CREATE", "EXTERNAL_CHAT_MEMBER", Some(&ortiz)));
    assert!(has("DELETE", "EXTERNAL_CHAT_MEMBER", Some(&ortiz)));
    assert!(has("SEND", "SMS", None), "the relayed SMS");
    eventually("the READ is recorded", || async {
        audit_event::Entity::find()
            .all(&s.app.state.services.db)
            .await
            .expect("audit")
            .iter()
            .any(|r| r.action == "READ" && r.entity_type == "EXTERNAL_CHAT_MEMBER")
    })
    .await;
    let everything = format!("{rows:?}");
    assert!(!everything.contains("5005550101"), "no phone number");
    assert!(!everything.contains("Potassium"), "no message text");
}

#[tokio::test]
async fn twilio_gets_one_exact_request_per_message_and_external_member() {
    let s = Setup::start(Chat::Local, true, "smstwilio").await;
    s.added("Dr Ortiz", ORTIZ).await;
    s.added("Nurse Kim", KIM).await;
    s.twilio().control().clear();
    s.send("Dressing changed at 14:00", "m-1").await;
    let vet = s.display_name(&s.c.vet.id).await;
    let expected = s.relayed(&vet, "Dressing changed at 14:00");
    let path = format!(
        "/2010-04-01/Accounts/{}/Messages.json",
        fakes::twilio::ACCOUNT_SID
    );
    let calls = s.twilio().control().calls("POST", &path);
    assert_eq!(calls.len(), 2, "one per external member: {calls:?}");
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            fakes::twilio::ACCOUNT_SID,
            fakes::twilio::AUTH_TOKEN
        ))
    );
    let mut to = Vec::new();
    for call in &calls {
        assert_eq!(call.header("authorization").as_deref(), Some(auth.as_str()));
        assert_eq!(
            call.header("content-type").as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&call.body).expect("a form");
        let recipient = form[0].1.clone();
        assert_eq!(
            form,
            vec![
                ("To".to_owned(), recipient.clone()),
                ("From".to_owned(), fakes::twilio::FROM_NUMBER.to_owned()),
                ("Body".to_owned(), expected.clone()),
            ]
        );
        to.push(recipient);
    }
    to.sort();
    assert_eq!(to, vec![ORTIZ.to_owned(), KIM.to_owned()]);
    // A retried send of the same client message id calls Twilio no more.
    s.send("Dressing changed at 14:00", "m-1").await;
    assert_eq!(s.twilio().control().calls("POST", &path).len(), 2);
}

#[tokio::test]
async fn a_twilio_outage_loses_no_sms_and_sends_none_twice() {
    let s = Setup::start(Chat::Local, true, "smsoutage").await;
    s.added("Dr Ortiz", ORTIZ).await;
    s.twilio().control().fail(
        503,
        r#"{"code": 20500, "message": "Internal Server Error", "status": 503}"#,
        3,
    );
    s.send("Labs are back", "m-1").await;
    eventually("the SMS went out", || async {
        s.texts_to(ORTIZ).len() == 1
    })
    .await;
    settle(&s.app).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.texts_to(ORTIZ).len(), 1, "sent once");
    assert_eq!(
        s.app
            .state
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
async fn a_number_twilio_refuses_dies_in_the_outbox_without_the_number_in_its_error() {
    let s = Setup::start(Chat::Local, true, "smsrefused").await;
    s.added("Dr Ortiz", ORTIZ).await;
    s.twilio().invalidate(ORTIZ);
    s.send("Are you there?", "m-1").await;
    let dead = s
        .app
        .state
        .services
        .outbox
        .rows(&s.c.org, "dead", 10)
        .await
        .expect("rows");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].operation, "send_sms");
    let error = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("21211") || error.contains("[number]"),
        "{error}"
    );
    assert!(!error.contains("5005550101"), "{error}");
    assert!(s.texts_to(ORTIZ).is_empty());
}

#[tokio::test]
async fn an_inbound_reply_is_posted_as_the_external_member_and_relayed_to_the_others_once() {
    let s = Setup::start(Chat::Local, true, "smsinbound").await;
    let ortiz = s.added("Dr Ortiz", ORTIZ).await;
    s.added("Nurse Kim", KIM).await;
    s.send("Can you review the x-ray?", "m-1").await;
    let sid = "SM00000000000000000000000000000101";
    assert_eq!(
        s.twilio()
            .inbound(&s.app, sid, ORTIZ, "Reviewed: no fracture")
            .await,
        200
    );
    eventually("the reply is in the chat", || async {
        history(&s)
            .await
            .contains(&("Reviewed: no fracture".to_owned(), ortiz.clone()))
    })
    .await;
    // The webhook is answered before it is processed, and the reply is in the chat before its
    // relays are queued: wait for the relay itself, then for the outbox to settle.
    let relayed = s.relayed("Dr Ortiz", "Reviewed: no fracture");
    eventually(
        "the reply is relayed to the other external member",
        || async { s.texts_to(KIM).contains(&relayed) },
    )
    .await;
    settle(&s.app).await;
    assert_eq!(
        s.texts_to(KIM).last().cloned(),
        Some(relayed),
        "relayed to the other external member"
    );
    assert_eq!(s.texts_to(ORTIZ).len(), 1, "not back to its author");
    let sent_by_twilio = audit_event::Entity::find()
        .all(&s.app.state.services.db)
        .await
        .expect("audit")
        .into_iter()
        .any(|r| {
            r.action == "SEND"
                && r.entity_type == "CHAT_MESSAGE"
                && r.actor_id.as_deref() == Some("twilio")
        });
    assert!(
        sent_by_twilio,
        "the reply is recorded as sent by the webhook"
    );
    // Twilio retries the same SMS: nothing new.
    assert_eq!(
        s.twilio()
            .inbound(&s.app, sid, ORTIZ, "Reviewed: no fracture")
            .await,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle(&s.app).await;
    let replies = history(&s)
        .await
        .into_iter()
        .filter(|(t, _)| t == "Reviewed: no fracture")
        .count();
    assert_eq!(replies, 1);
    assert_eq!(s.texts_to(KIM).len(), 2);
    // A number nobody added posts nothing.
    s.twilio()
        .inbound(
            &s.app,
            "SM00000000000000000000000000000199",
            "+15005550199",
            "hi",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!history(&s).await.iter().any(|(t, _)| t == "hi"));
}

#[tokio::test]
async fn a_number_in_two_chats_replies_into_the_one_that_relayed_to_it_last() {
    let s = Setup::start(Chat::Local, true, "smstwochats").await;
    let in_team = s.added("Dr Ortiz", ORTIZ).await;
    let case = s
        .app
        .ok(
            &s.c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { chat { id } } }",
            json!({"o": s.c.org, "i": {"reference": "REF-9", "title": "Second opinion",
                "participants": [{"userId": s.c.vet.id, "role": "PRACTITIONER"}]}}),
            "createCase",
        )
        .await;
    settle(&s.app).await;
    let case_chat = case["chat"]["id"].as_str().expect("room").to_owned();
    let in_case = s
        .app
        .ok(
            &s.c.vet.token,
            ADD,
            json!({"s": case_chat, "i": {"name": "Dr Ortiz", "phoneNumber": ORTIZ}}),
            "addExternalChatMember",
        )
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    settle(&s.app).await;
    s.send("Team question", "m-1").await;
    s.app
        .ok(
            &s.c.vet.token,
            SEND,
            json!({"id": case_chat, "t": "Case question", "k": "c-1"}),
            "sendChatMessage",
        )
        .await;
    settle(&s.app).await;
    s.twilio()
        .inbound(
            &s.app,
            "SM00000000000000000000000000000601",
            ORTIZ,
            "Answer one",
        )
        .await;
    let case_history = || async {
        let page = s
            .app
            .ok(
                &s.c.vet.token,
                HISTORY,
                json!({"id": case_chat}),
                "chatSession",
            )
            .await;
        page["messages"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| (e["node"]["text"].clone(), e["node"]["author"].clone()))
            .collect::<Vec<_>>()
    };
    eventually("the reply is in the case chat", || async {
        case_history()
            .await
            .contains(&(json!("Answer one"), json!(in_case)))
    })
    .await;
    assert!(!history(&s).await.iter().any(|(t, _)| t == "Answer one"));
    s.send("Team follow-up", "m-2").await;
    s.twilio()
        .inbound(
            &s.app,
            "SM00000000000000000000000000000602",
            ORTIZ,
            "Answer two",
        )
        .await;
    eventually("the next reply is in the team chat", || async {
        history(&s)
            .await
            .contains(&("Answer two".to_owned(), in_team.clone()))
    })
    .await;
}

#[tokio::test]
async fn the_twilio_webhook_refuses_bad_signatures_and_other_accounts() {
    let s = Setup::start(Chat::Local, true, "smssig").await;
    s.added("Dr Ortiz", ORTIZ).await;
    let url = s.app.url("/webhooks/twilio");
    let params = [
        ("AccountSid", fakes::twilio::ACCOUNT_SID),
        ("Body", "Forged"),
        ("From", ORTIZ),
        ("MessageSid", "SM00000000000000000000000000000201"),
    ];
    let post = fakes::twilio::post_form;
    assert_eq!(post(&url, &params, None).await, 401, "unsigned");
    let wrong_key = fakes::twilio::sign("another token", &url, &params);
    assert_eq!(post(&url, &params, Some(wrong_key.as_str())).await, 401);
    let other_url = fakes::twilio::sign(
        fakes::twilio::AUTH_TOKEN,
        "http://example.org/webhooks/twilio",
        &params,
    );
    assert_eq!(post(&url, &params, Some(other_url.as_str())).await, 401);
    let good = fakes::twilio::sign(fakes::twilio::AUTH_TOKEN, &url, &params);
    let mut tampered = params;
    tampered[1].1 = "Tampered";
    assert_eq!(post(&url, &tampered, Some(good.as_str())).await, 401);
    let foreign = [
        ("AccountSid", "AC99999999999999999999999999999999"),
        ("Body", "Forged"),
        ("From", ORTIZ),
        ("MessageSid", "SM00000000000000000000000000000202"),
    ];
    let signed = fakes::twilio::sign(fakes::twilio::AUTH_TOKEN, &url, &foreign);
    assert_eq!(post(&url, &foreign, Some(signed.as_str())).await, 403);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!history(&s).await.iter().any(|(t, _)| t == "Forged"));
    // Without Twilio there is no webhook.
    let local = TestApp::spawn().await;
    let url = local.url("/webhooks/twilio");
    assert_eq!(post(&url, &params, Some(good.as_str())).await, 404);
}

#[tokio::test]
async fn stop_opts_a_number_out_and_start_opts_it_back_in() {
    let s = Setup::start(Chat::Local, true, "smsstop").await;
    s.added("Dr Ortiz", ORTIZ).await;
    let opted_out = || async { s.session().await["externalMembers"][0]["optedOut"] == true };
    s.twilio()
        .inbound(&s.app, "SM00000000000000000000000000000301", ORTIZ, "STOP")
        .await;
    eventually("the number is opted out", opted_out).await;
    s.send("While opted out", "m-1").await;
    assert!(s.texts_to(ORTIZ).is_empty(), "nothing sent");
    s.twilio()
        .inbound(
            &s.app,
            "SM00000000000000000000000000000302",
            ORTIZ,
            "A reply",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !history(&s)
            .await
            .iter()
            .any(|(t, _)| t == "A reply" || t == "STOP"),
        "a reply from an opted-out number is not posted, nor the keyword"
    );
    s.twilio()
        .inbound(&s.app, "SM00000000000000000000000000000303", ORTIZ, "start")
        .await;
    eventually("the number is opted in", || async { !opted_out().await }).await;
    s.send("Back in", "m-2").await;
    let vet = s.display_name(&s.c.vet.id).await;
    assert_eq!(s.texts_to(ORTIZ), vec![s.relayed(&vet, "Back in")]);
    let by_twilio = audit_event::Entity::find()
        .all(&s.app.state.services.db)
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| {
            r.action == "UPDATE"
                && r.entity_type == "EXTERNAL_CHAT_MEMBER"
                && r.actor_kind == "WEBHOOK"
                && r.actor_id.as_deref() == Some("twilio")
        })
        .count();
    assert_eq!(by_twilio, 2, "STOP and START");
}

#[tokio::test]
async fn on_stream_an_external_member_joins_the_channel_and_replies_as_their_own_user() {
    let fake = fakes::stream::start().await;
    let s = Setup::start(Chat::Stream(fake), true, "smsstream").await;
    let stream = s.provider().expect("stream");
    stream.control().clear();
    let ortiz = s.added("Dr Ortiz", ORTIZ).await;
    let users = stream.control().calls("POST", "/users");
    assert_eq!(
        users.last().expect("an upsert").json(),
        json!({"users": {ortiz.clone(): {"id": ortiz, "name": "Dr Ortiz"}}})
    );
    let channel_path = format!("/channels/messaging/{}", s.channel);
    let adds = stream.control().calls("POST", &channel_path);
    assert_eq!(
        adds.last().expect("an add").json(),
        json!({"add_members": [ortiz]})
    );
    assert!(
        stream
            .members(&s.channel_ref())
            .expect("channel")
            .contains(&ortiz)
    );
    assert_eq!(s.session().await["memberCount"], 3);
    // A reply is posted at Stream as the external member's user.
    stream.control().clear();
    s.twilio()
        .inbound(
            &s.app,
            "SM00000000000000000000000000000401",
            ORTIZ,
            "Seen, agree",
        )
        .await;
    let message_path = format!("{channel_path}/message");
    eventually("the reply reached Stream", || async {
        !stream.control().calls("POST", &message_path).is_empty()
    })
    .await;
    let post = stream.control().calls("POST", &message_path)[0].json();
    let id = post["message"]["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("cg-"), "{id}");
    assert_eq!(
        post,
        json!({"message": {"id": id, "text": "Seen, agree", "user_id": ortiz}})
    );
    // A message a client SDK posted, reported by Stream's webhook, is relayed once.
    let text = "Sutures out on Friday";
    let event = serde_json::to_vec(
        &json!({"type": "message.new", "cid": format!("messaging:{}", s.channel),
        "message": {"id": "sdk-1", "text": text, "type": "regular",
            "user": {"id": s.c.tech.id}, "created_at": chrono::Utc::now().to_rfc3339()}}),
    )
    .expect("json");
    for _ in 0..2 {
        let status = signed_webhook(
            &s.app,
            "/webhooks/stream",
            "x-signature",
            fakes::stream::API_SECRET,
            &event,
        )
        .await;
        assert_eq!(status, 200);
    }
    let tech = s.display_name(&s.c.tech.id).await;
    eventually("the SDK message was relayed", || async {
        s.texts_to(ORTIZ).contains(&s.relayed(&tech, text))
    })
    .await;
    // Stream reports the external member's join: no intrusion to undo. A system message is not
    // relayed.
    let cid = format!("messaging:{}", s.channel);
    let joined = serde_json::to_vec(&json!({"type": "member.added", "cid": cid,
        "member": {"user_id": ortiz}, "user": {"id": ortiz},
        "created_at": chrono::Utc::now().to_rfc3339()}))
    .expect("json");
    let system = serde_json::to_vec(&json!({"type": "message.new", "cid": cid,
        "message": {"id": "sys-1", "text": "Dr Ortiz joined", "type": "system",
            "user": {"id": s.c.tech.id}, "created_at": chrono::Utc::now().to_rfc3339()}}))
    .expect("json");
    for event in [joined, system] {
        let status = signed_webhook(
            &s.app,
            "/webhooks/stream",
            "x-signature",
            fakes::stream::API_SECRET,
            &event,
        )
        .await;
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle(&s.app).await;
    assert!(
        stream
            .members(&s.channel_ref())
            .expect("channel")
            .contains(&ortiz),
        "still in the channel"
    );
    assert!(!s.texts_to(ORTIZ).iter().any(|t| t.contains("joined")));
    // Leaving: removed at Stream too.
    stream.control().clear();
    s.app
        .ok(
            &s.c.vet.token,
            REMOVE,
            json!({"s": s.session, "m": ortiz}),
            "removeExternalChatMember",
        )
        .await;
    settle(&s.app).await;
    let removes = stream.control().calls("POST", &channel_path);
    assert_eq!(
        removes.last().expect("a removal").json(),
        json!({"remove_members": [ortiz]})
    );
    assert_eq!(s.texts_to(ORTIZ).len(), 1, "the SDK message once");
}

#[tokio::test]
async fn on_sendbird_an_external_member_joins_the_channel_and_replies_as_their_own_user() {
    let fake = fakes::sendbird::start().await;
    let s = Setup::start(Chat::Sendbird(fake), true, "smssendbird").await;
    let sendbird = s.provider().expect("sendbird");
    sendbird.control().clear();
    let ortiz = s.added("Dr Ortiz", ORTIZ).await;
    let created = sendbird.control().calls("POST", "/v3/users");
    assert_eq!(
        created.last().expect("a user").json(),
        json!({"user_id": ortiz, "nickname": "Dr Ortiz", "profile_url": ""})
    );
    let invite = format!("/v3/group_channels/{}/invite", s.channel);
    let invites = sendbird.control().calls("POST", &invite);
    assert_eq!(
        invites.last().expect("an invite").json()["user_ids"],
        json!([ortiz])
    );
    assert!(
        sendbird
            .members(&s.channel_ref())
            .expect("channel")
            .contains(&ortiz)
    );
    assert_eq!(s.session().await["memberCount"], 3);
    s.send("Please call the owner", "m-1").await;
    let vet = s.display_name(&s.c.vet.id).await;
    assert_eq!(
        s.texts_to(ORTIZ),
        vec![s.relayed(&vet, "Please call the owner")]
    );
    sendbird.control().clear();
    s.twilio()
        .inbound(
            &s.app,
            "SM00000000000000000000000000000501",
            ORTIZ,
            "Called",
        )
        .await;
    let messages = format!("/v3/group_channels/{}/messages", s.channel);
    eventually("the reply reached Sendbird", || async {
        !sendbird.control().calls("POST", &messages).is_empty()
    })
    .await;
    let post = sendbird.control().calls("POST", &messages)[0].json();
    assert_eq!(post["message_type"], "MESG");
    assert_eq!(post["user_id"], json!(ortiz));
    assert_eq!(post["message"], "Called");
    let dedup = post["dedup_id"].as_str().expect("dedup id");
    assert!(dedup.starts_with("cg-"), "{dedup}");
    // Sendbird's webhook of caregraph's own message relays nothing twice.
    let sent = s
        .app
        .ok(
            &s.c.vet.token,
            SEND,
            json!({"id": s.session, "t": "Thanks", "k": "m-2"}),
            "sendChatMessage",
        )
        .await;
    settle(&s.app).await;
    let id: i64 = sent["id"].as_str().expect("id").parse().expect("numeric");
    let event = serde_json::to_vec(&json!({"category": "group_channel:message_send",
        "type": "MESG", "channel": {"channel_url": s.channel}, "sender": {"user_id": s.c.vet.id},
        "payload": {"message_id": id, "message": "Thanks", "created_at": chrono::Utc::now().timestamp_millis()}}))
    .expect("json");
    let status = signed_webhook(
        &s.app,
        "/webhooks/sendbird",
        "x-sendbird-signature",
        fakes::sendbird::API_TOKEN,
        &event,
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    settle(&s.app).await;
    assert_eq!(
        s.texts_to(ORTIZ)
            .iter()
            .filter(|t| t.ends_with("] Thanks"))
            .count(),
        1
    );
}

/// Posts a JSON webhook delivery signed as Stream and Sendbird sign them (HMAC-SHA256 hex of
/// the body with `key`, in `header`); the status.
async fn signed_webhook(app: &TestApp, path: &str, header: &str, key: &str, body: &[u8]) -> u16 {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/json")
        .header(header, hex::encode(mac.finalize().into_bytes()))
        .body(body.to_vec())
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[tokio::test]
async fn on_ethora_external_members_are_refused_as_their_replies_could_not_be_posted() {
    let fake = fakes::ethora::start().await;
    let s = Setup::start(Chat::Ethora(fake), false, "smsethora").await;
    let refused = s.add(&s.c.vet.token, "Dr Ortiz", ORTIZ).await;
    assert_eq!(code(&refused), "BAD_USER_INPUT");
    assert_eq!(refused["errors"][0]["extensions"]["field"], "sessionId");
    assert_eq!(s.session().await["memberCount"], 2);
}
