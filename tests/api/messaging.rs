//! Messaging through caregraph (README "Messaging through caregraph"): `sendChatMessage`
//! (idempotent on `clientMessageId`, the session rules checked before the provider is called),
//! `ChatSession.messages` (history, newest first, cursor paginated), `markChatRead` and
//! `unreadCount`, and `ChatSession.provider`'s capabilities, on the local provider and against
//! the Stream, Sendbird and Ethora fakes with the exact requests checked; also what a session
//! is about (`case`, `patient`, `careTeam`) and the refusal of a network chat inside one
//! organisation.

use serde_json::{Value, json};

use crate::{
    fakes::{self, FakeProvider, Recorded},
    helpers::{Clinic, TestApp, code, quick, settle},
};

const DM: &str =
    "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id channelId } }";
const SEND: &str = "mutation($id: ID!, $t: String!, $k: String) { sendChatMessage(sessionId: $id, text: $t, clientMessageId: $k) { id text author system sentAt } }";
const STATE: &str = "query($id: ID!) { chatSession(id: $id) { unreadCount lastMessage { text } provider { name supportsUnreadCount supportsServerSend supportsHistory } } }";
const MARK: &str = "mutation($id: ID!) { markChatRead(sessionId: $id) { id unreadCount } }";
const HISTORY: &str = "query($id: ID!, $n: Int, $b: String) { chatSession(id: $id) { messages(first: $n, before: $b) { edges { cursor node { id text author system sentAt } } pageInfo { hasNextPage hasPreviousPage } } } }";
const CLOSE: &str = "mutation($id: ID!) { closeChatSession(sessionId: $id) { id status } }";

/// The provider behind the app.
enum Provider {
    Local,
    Stream(fakes::stream::FakeStream),
    Sendbird(fakes::sendbird::FakeSendbird),
    Ethora(fakes::ethora::FakeEthora),
}

/// A running caregraph on one chat provider, with a clinic.
struct Backend {
    app: TestApp,
    c: Clinic,
    provider: Provider,
}

impl Backend {
    async fn start(provider: Provider, tag: &str) -> Self {
        let vars = match &provider {
            Provider::Local => Vec::new(),
            Provider::Stream(f) => f.vars(),
            Provider::Sendbird(f) => f.vars(),
            Provider::Ethora(f) => f.vars(),
        };
        let app = TestApp::spawn_with(|v| {
            quick(v);
            v.extend(vars);
        })
        .await;
        let c = app.clinic(tag).await;
        Self { app, c, provider }
    }

    fn fake(&self) -> Option<&dyn FakeProvider> {
        match &self.provider {
            Provider::Local => None,
            Provider::Stream(f) => Some(f),
            Provider::Sendbird(f) => Some(f),
            Provider::Ethora(f) => Some(f),
        }
    }

    /// Every request the fake received (none for the local provider).
    fn requests(&self) -> Vec<Recorded> {
        self.fake()
            .map(|f| f.control().requests())
            .unwrap_or_default()
    }

    fn clear(&self) {
        if let Some(f) = self.fake() {
            f.control().clear();
        }
    }

    /// The direct chat of the vet and the tech: (session id, channel id).
    async fn direct(&self) -> (String, String) {
        let s = self
            .app
            .ok(
                &self.c.vet.token,
                DM,
                json!({"o": self.c.org, "c": self.c.tech.id}),
                "openDirectChat",
            )
            .await;
        settle(&self.app).await;
        (
            s["id"].as_str().expect("id").to_owned(),
            s["channelId"].as_str().expect("channel").to_owned(),
        )
    }

    async fn send(&self, token: &str, session: &str, text: &str, key: Option<&str>) -> Value {
        self.app
            .gql(
                Some(token),
                SEND,
                json!({"id": session, "t": text, "k": key}),
            )
            .await
    }

    async fn sent(&self, token: &str, session: &str, text: &str, key: Option<&str>) -> Value {
        let body = self.send(token, session, text, key).await;
        assert!(body.get("errors").is_none(), "send: {body}");
        body["data"]["sendChatMessage"].clone()
    }

    async fn state(&self, token: &str, session: &str) -> Value {
        self.app
            .ok(token, STATE, json!({"id": session}), "chatSession")
            .await
    }

    async fn history(&self, token: &str, session: &str, n: i64, before: Option<&str>) -> Value {
        self.app
            .ok(
                token,
                HISTORY,
                json!({"id": session, "n": n, "b": before}),
                "chatSession",
            )
            .await["messages"]
            .clone()
    }
}

/// The texts of a history page, in its order.
fn texts(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["text"].as_str().expect("text").to_owned())
        .collect()
}

/// The one send of a text by one user, twice with one client message id: the same message
/// both times, and the second posts nothing at the provider.
async fn one_client_id_posts_once(b: &Backend, session: &str) -> (Value, Value) {
    let first = b
        .sent(&b.c.vet.token, session, "Hello tech", Some("k-1"))
        .await;
    let again = b
        .sent(&b.c.vet.token, session, "Hello tech", Some("k-1"))
        .await;
    assert_eq!(
        first["id"], again["id"],
        "the same message: {first} {again}"
    );
    assert_eq!(first["sentAt"], again["sentAt"]);
    assert_eq!(first["author"], b.c.vet.id.as_str());
    assert_eq!(first["system"], false);
    let other = b
        .sent(&b.c.vet.token, session, "Hello tech", Some("k-2"))
        .await;
    assert_ne!(
        other["id"], first["id"],
        "another client id is another message"
    );
    (first, other)
}

#[tokio::test]
async fn on_the_local_provider_a_client_message_id_posts_once_and_history_pages_newest_first() {
    let b = Backend::start(Provider::Local, "msglocal").await;
    let (session, _) = b.direct().await;
    one_client_id_posts_once(&b, &session).await;
    b.sent(&b.c.tech.token, &session, "Hi vet", None).await;
    let page = b.history(&b.c.tech.token, &session, 2, None).await;
    assert_eq!(texts(&page), ["Hi vet", "Hello tech"]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    let cursor = page["edges"][1]["cursor"].as_str().expect("cursor");
    let older = b.history(&b.c.tech.token, &session, 2, Some(cursor)).await;
    assert_eq!(texts(&older), ["Hello tech"], "the repeat posted nothing");
    assert_eq!(older["pageInfo"]["hasNextPage"], false);
    assert_eq!(older["pageInfo"]["hasPreviousPage"], true);
}

#[tokio::test]
async fn on_the_local_provider_mark_chat_read_brings_the_unread_count_back_to_zero() {
    let b = Backend::start(Provider::Local, "readlocal").await;
    let (session, _) = b.direct().await;
    b.sent(&b.c.vet.token, &session, "one", None).await;
    b.sent(&b.c.vet.token, &session, "two", None).await;
    let tech = b.state(&b.c.tech.token, &session).await;
    assert_eq!(tech["unreadCount"], 2);
    assert_eq!(tech["provider"]["supportsUnreadCount"], true);
    assert_eq!(b.state(&b.c.vet.token, &session).await["unreadCount"], 0);
    let marked = b
        .app
        .ok(
            &b.c.tech.token,
            MARK,
            json!({"id": session}),
            "markChatRead",
        )
        .await;
    assert_eq!(marked["unreadCount"], 0);
    assert_eq!(b.state(&b.c.tech.token, &session).await["unreadCount"], 0);
    b.sent(&b.c.vet.token, &session, "three", None).await;
    assert_eq!(
        b.state(&b.c.tech.token, &session).await["unreadCount"],
        1,
        "counting starts again after the marker"
    );
}

#[tokio::test]
async fn session_rules_refuse_a_send_before_the_provider_is_called() {
    let fake = fakes::stream::start().await;
    let b = Backend::start(Provider::Stream(fake), "msgrules").await;
    let (session, _) = b.direct().await;
    b.clear();
    // The owner may read the chat (an admin) but is no member of it.
    let body = b.send(&b.c.owner.token, &session, "Hi", None).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = b.send(&b.c.client.token, &session, "Hi", None).await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = b.send(&b.c.vet.token, &session, "  ", None).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "text", "{body}");
    let long = "k".repeat(101);
    let body = b.send(&b.c.vet.token, &session, "Hi", Some(&long)).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "clientMessageId",
        "{body}"
    );
    b.app
        .ok(
            &b.c.vet.token,
            CLOSE,
            json!({"id": session}),
            "closeChatSession",
        )
        .await;
    settle(&b.app).await;
    b.clear();
    let body = b.send(&b.c.vet.token, &session, "Too late", None).await;
    assert_eq!(code(&body), "CHAT_NOT_OPEN", "{body}");
    let sends: Vec<Recorded> = b
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/message"))
        .collect();
    assert!(sends.is_empty(), "nothing reached Stream: {sends:?}");
}

#[tokio::test]
async fn with_stream_a_send_is_the_member_s_message_with_a_deterministic_id() {
    let fake = fakes::stream::start().await;
    let b = Backend::start(Provider::Stream(fake), "msgstream").await;
    let (session, channel) = b.direct().await;
    b.clear();
    let (first, _) = one_client_id_posts_once(&b, &session).await;
    let path = format!("/channels/messaging/{channel}/message");
    let Provider::Stream(fake) = &b.provider else {
        unreachable!("stream")
    };
    let posts = fake.control().calls("POST", &path);
    assert_eq!(posts.len(), 3, "two sends of k-1, one of k-2");
    let body = posts[0].json();
    let id = first["id"].as_str().expect("id");
    assert_eq!(
        body,
        json!({"message": {"id": id, "text": "Hello tech", "user_id": b.c.vet.id}}),
        "the member's message with caregraph's id"
    );
    assert!(id.starts_with("cg-") && id.len() == 35, "{id}");
    assert_eq!(posts[1].json(), body, "the repeat sends the same id");
    assert_eq!(
        fake.control()
            .calls("GET", &format!("/messages/{id}"))
            .len(),
        1,
        "the repeat is answered with the stored message"
    );
    let ch = caregraph::providers::chat::ChannelRef {
        channel_type: "messaging".into(),
        channel_id: channel.clone(),
    };
    let stored = fake.messages(&ch).expect("channel");
    assert_eq!(
        stored.iter().filter(|m| m["id"] == id).count(),
        1,
        "posted once"
    );
}

#[tokio::test]
async fn with_stream_history_pages_with_id_lt_and_mark_read_moves_the_member_s_marker() {
    let fake = fakes::stream::start().await;
    let b = Backend::start(Provider::Stream(fake), "histstream").await;
    let (session, channel) = b.direct().await;
    for text in ["one", "two", "three"] {
        b.sent(&b.c.vet.token, &session, text, None).await;
    }
    let Provider::Stream(fake) = &b.provider else {
        unreachable!("stream")
    };
    fake.control().clear();
    let query = format!("/channels/messaging/{channel}/query");
    let page = b.history(&b.c.tech.token, &session, 2, None).await;
    assert_eq!(texts(&page), ["three", "two"]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let cursor = page["edges"][1]["cursor"].as_str().expect("cursor");
    let older = b.history(&b.c.tech.token, &session, 2, Some(cursor)).await;
    assert_eq!(texts(&older), ["one"]);
    assert_eq!(older["pageInfo"]["hasNextPage"], false);
    let reads = fake.control().calls("POST", &query);
    assert_eq!(reads.len(), 2);
    assert_eq!(
        reads[0].json(),
        json!({"state": true, "watch": false, "presence": false, "messages": {"limit": 3}})
    );
    assert_eq!(
        reads[1].json(),
        json!({"state": true, "watch": false, "presence": false,
               "messages": {"limit": 3, "id_lt": page["edges"][1]["node"]["id"]}})
    );

    assert_eq!(b.state(&b.c.tech.token, &session).await["unreadCount"], 3);
    fake.control().clear();
    b.app
        .ok(
            &b.c.tech.token,
            MARK,
            json!({"id": session}),
            "markChatRead",
        )
        .await;
    let marks = fake
        .control()
        .calls("POST", &format!("/channels/messaging/{channel}/read"));
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].json(), json!({"user_id": b.c.tech.id}));
    assert_eq!(b.state(&b.c.tech.token, &session).await["unreadCount"], 0);
}

#[tokio::test]
async fn with_sendbird_a_send_carries_a_dedup_id_and_a_repeat_posts_nothing() {
    let fake = fakes::sendbird::start().await;
    let b = Backend::start(Provider::Sendbird(fake), "msgsendbird").await;
    let (session, channel) = b.direct().await;
    b.clear();
    let (first, _) = one_client_id_posts_once(&b, &session).await;
    let Provider::Sendbird(fake) = &b.provider else {
        unreachable!("sendbird")
    };
    let path = format!("/v3/group_channels/{channel}/messages");
    let posts = fake.control().calls("POST", &path);
    assert_eq!(posts.len(), 3, "two sends of k-1, one of k-2");
    let body = posts[0].json();
    let id = body["dedup_id"].as_str().expect("dedup_id").to_owned();
    assert!(id.starts_with("cg-") && id.len() == 35, "{id}");
    assert_eq!(
        body,
        json!({
            "message_type": "MESG",
            "user_id": b.c.vet.id,
            "message": "Hello tech",
            "data": json!({"caregraph_message_id": id}).to_string(),
            "dedup_id": id,
        })
    );
    assert_eq!(posts[1].json(), body, "the repeat sends the same dedup_id");
    let lookups = fake.control().calls("GET", &path);
    assert_eq!(lookups.len(), 1, "the repeat is found among the recent");
    assert_eq!(lookups[0].param("message_type").as_deref(), Some("MESG"));
    let stored = fake.channel(&channel).expect("channel");
    assert_eq!(
        stored
            .messages
            .iter()
            .filter(|m| m.dedup_id.as_deref() == Some(id.as_str()))
            .count(),
        1,
        "posted once"
    );
    let posted = stored
        .messages
        .iter()
        .find(|m| m.dedup_id.as_deref() == Some(id.as_str()))
        .expect("posted");
    assert_eq!(first["id"], posted.message_id.to_string());
}

#[tokio::test]
async fn with_sendbird_history_pages_by_message_id_and_mark_read_zeroes_the_unread_count() {
    let fake = fakes::sendbird::start().await;
    let b = Backend::start(Provider::Sendbird(fake), "histsendbird").await;
    let (session, channel) = b.direct().await;
    for text in ["one", "two", "three"] {
        b.sent(&b.c.vet.token, &session, text, None).await;
    }
    let Provider::Sendbird(fake) = &b.provider else {
        unreachable!("sendbird")
    };
    fake.control().clear();
    let path = format!("/v3/group_channels/{channel}/messages");
    let page = b.history(&b.c.tech.token, &session, 2, None).await;
    assert_eq!(texts(&page), ["three", "two"]);
    let cursor = page["edges"][1]["cursor"].as_str().expect("cursor");
    let older = b.history(&b.c.tech.token, &session, 2, Some(cursor)).await;
    assert_eq!(texts(&older), ["one"]);
    assert_eq!(older["pageInfo"]["hasNextPage"], false);
    let reads = fake.control().calls("GET", &path);
    assert_eq!(reads.len(), 2);
    assert!(reads[0].param("message_ts").is_some());
    assert_eq!(reads[0].param("include").as_deref(), Some("true"));
    assert_eq!(reads[0].param("prev_limit").as_deref(), Some("3"));
    assert_eq!(reads[0].param("next_limit").as_deref(), Some("0"));
    assert_eq!(reads[0].param("reverse").as_deref(), Some("true"));
    assert_eq!(
        reads[1].param("message_id"),
        page["edges"][1]["node"]["id"].as_str().map(str::to_owned)
    );
    assert_eq!(reads[1].param("include").as_deref(), Some("false"));
    assert!(reads[1].param("message_ts").is_none());

    assert_eq!(b.state(&b.c.tech.token, &session).await["unreadCount"], 3);
    fake.control().clear();
    b.app
        .ok(
            &b.c.tech.token,
            MARK,
            json!({"id": session}),
            "markChatRead",
        )
        .await;
    let marks = fake.control().calls(
        "PUT",
        &format!("/v3/group_channels/{channel}/messages/mark_as_read"),
    );
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].json(), json!({"user_id": b.c.tech.id}));
    assert_eq!(b.state(&b.c.tech.token, &session).await["unreadCount"], 0);
}

#[tokio::test]
async fn with_ethora_what_its_api_cannot_answer_is_null_or_refused_and_the_capabilities_say_so() {
    let fake = fakes::ethora::start().await;
    let b = Backend::start(Provider::Ethora(fake), "msgethora").await;
    let (session, _) = b.direct().await;
    b.clear();
    let state = b.state(&b.c.tech.token, &session).await;
    assert_eq!(state["unreadCount"], Value::Null, "no made-up 0: {state}");
    assert_eq!(
        state["provider"],
        json!({"name": "ethora", "supportsUnreadCount": false,
               "supportsServerSend": false, "supportsHistory": false})
    );
    let body = b.send(&b.c.vet.token, &session, "Hello", Some("k-1")).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "sessionId");
    let body = b
        .app
        .gql(
            Some(&b.c.vet.token),
            HISTORY,
            json!({"id": session, "n": 5, "b": null}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "messages");
    let marked = b
        .app
        .ok(
            &b.c.tech.token,
            MARK,
            json!({"id": session}),
            "markChatRead",
        )
        .await;
    assert_eq!(marked["unreadCount"], Value::Null);
    let calls: Vec<String> = b
        .requests()
        .iter()
        .filter(|r| !r.path.contains("/chats/") || r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        calls.is_empty(),
        "nothing but room reads reached Ethora: {calls:?}"
    );
}

#[tokio::test]
async fn history_first_is_bounded_and_a_forged_cursor_is_bad_user_input() {
    let b = Backend::start(Provider::Local, "histbounds").await;
    let (session, _) = b.direct().await;
    b.sent(&b.c.vet.token, &session, "one", None).await;
    for (n, before, field) in [
        (0, None, "first"),
        (101, None, "first"),
        (5, Some("not-a-cursor"), "before"),
        (5, Some("bTpub3Bl"), "before"),
    ] {
        let body = b
            .app
            .gql(
                Some(&b.c.vet.token),
                HISTORY,
                json!({"id": session, "n": n, "b": before}),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{n} {before:?}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
}

#[tokio::test]
async fn a_network_chat_with_a_colleague_of_the_same_organization_is_bad_user_input() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("netsame").await;
    let enable = "mutation($o: ID!) { updateOrganization(orgId: $o, input: {crossOrgMessaging: true}) { crossOrgMessaging } }";
    app.ok(
        &c.owner.token,
        enable,
        json!({"o": c.org}),
        "updateOrganization",
    )
    .await;
    let body = app
        .gql(
            Some(&c.vet.token),
            "mutation($o: ID!, $c: ID!, $co: ID!) { openNetworkDirectChat(orgId: $o, colleagueId: $c, colleagueOrgId: $co) { id } }",
            json!({"o": c.org, "c": c.tech.id, "co": c.org}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "colleagueOrgId");
    let list = "query($o: ID!) { chatSessions(orgId: $o) { totalCount } }";
    assert_eq!(
        app.ok(&c.vet.token, list, json!({"o": c.org}), "chatSessions")
            .await["totalCount"],
        0,
        "nothing was created"
    );
}

const SUBJECT: &str = "query($id: ID!) { chatSession(id: $id) { category case { id reference } patient { id name } careTeam { id name } } }";

#[tokio::test]
async fn a_session_names_its_case_patient_and_care_team_for_those_who_may_read_them() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("subject").await;
    let case = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id } } }",
            json!({"o": c.org, "i": {"reference": "CLM-1", "title": "Hip", "patientId": c.patient,
                "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"},
                                 {"userId": c.client.id, "role": "PATIENT"}]}}),
            "createCase",
        )
        .await;
    let room = case["chat"]["id"].as_str().expect("room").to_owned();
    for token in [&c.vet.token, &c.client.token, &c.owner.token] {
        let s = app
            .ok(token, SUBJECT, json!({"id": room}), "chatSession")
            .await;
        assert_eq!(s["category"], "CASE");
        assert_eq!(s["case"]["id"], case["id"], "{s}");
        assert_eq!(s["case"]["reference"], "CLM-1");
        assert_eq!(s["patient"]["id"], c.patient.as_str(), "{s}");
        assert_eq!(s["careTeam"], Value::Null);
    }
    let bare = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { chat { id } } }",
            json!({"o": c.org, "i": {"reference": "CLM-2", "title": "No patient",
                "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]}}),
            "createCase",
        )
        .await;
    let s = app
        .ok(
            &c.vet.token,
            SUBJECT,
            json!({"id": bare["chat"]["id"]}),
            "chatSession",
        )
        .await;
    assert!(s["case"]["id"].is_string(), "{s}");
    assert_eq!(s["patient"], Value::Null, "a case without a patient");

    let team = app
        .ok(
            &c.owner.token,
            "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Rehab\", memberIds: $m}) { id chat { id } } }",
            json!({"p": c.patient, "m": [c.vet.id, c.tech.id]}),
            "createCareTeam",
        )
        .await;
    let s = app
        .ok(
            &c.tech.token,
            SUBJECT,
            json!({"id": team["chat"]["id"]}),
            "chatSession",
        )
        .await;
    assert_eq!(s["category"], "CARE_TEAM");
    assert_eq!(s["careTeam"]["id"], team["id"]);
    assert_eq!(s["careTeam"]["name"], "Rehab");
    assert_eq!(s["patient"]["id"], c.patient.as_str());
    assert_eq!(s["case"], Value::Null);

    let dm = app
        .ok(
            &c.vet.token,
            DM,
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    let s = app
        .ok(
            &c.vet.token,
            SUBJECT,
            json!({"id": dm["id"]}),
            "chatSession",
        )
        .await;
    assert_eq!(
        (&s["case"], &s["patient"], &s["careTeam"]),
        (&Value::Null, &Value::Null, &Value::Null),
        "a colleague chat is about no one: {s}"
    );
}

/// The trait's messaging operations, the same on every adapter that has them: a repeated id
/// posts once, the history is newest first and pages back, the read marker zeroes the unread
/// count; an adapter without them refuses or reports `None`, never a made-up value.
async fn adapters_message_alike(subject: &dyn crate::chat_providers::Subject) {
    use caregraph::providers::chat::{ChannelRef, ChannelSpec, ChatUser, UserMessage};
    let p = subject.provider();
    let can = p.capabilities();
    let users: Vec<ChatUser> = ["u-ann", "u-bob"]
        .iter()
        .map(|id| ChatUser {
            id: (*id).to_owned(),
            name: format!("User {id}"),
            image: None,
        })
        .collect();
    p.upsert_users(&users).await.expect("users");
    let ch = ChannelRef {
        channel_type: "messaging".into(),
        channel_id: "talk-1".into(),
    };
    p.create_channel(&ChannelSpec {
        channel: ch.clone(),
        created_by: "u-ann".into(),
        members: vec!["u-ann".into(), "u-bob".into()],
        name: Some("Talk".into()),
        image: None,
        metadata: serde_json::Map::new(),
        frozen: false,
    })
    .await
    .expect("channel");
    let message = |id: &str, text: &str| UserMessage {
        id: id.to_owned(),
        author: "u-ann".into(),
        text: text.to_owned(),
    };
    if !can.server_send {
        assert!(p.send_message(&ch, &message("cg-1", "hi")).await.is_err());
        assert!(p.history(&ch, 10, None).await.is_err());
        p.mark_read(&ch, "u-bob")
            .await
            .expect("no marker: nothing to do");
        let state = p
            .read_channels(std::slice::from_ref(&ch), "u-bob")
            .await
            .expect("read");
        assert_eq!(state[0].unread_count, None, "no made-up unread count");
        return;
    }
    let first = p
        .send_message(&ch, &message("cg-1", "one"))
        .await
        .expect("send");
    assert!(first.fresh);
    assert_eq!(first.message.author.as_deref(), Some("u-ann"));
    assert_eq!(first.message.text, "one");
    let again = p
        .send_message(&ch, &message("cg-1", "one"))
        .await
        .expect("repeat");
    assert!(!again.fresh, "a repeated id posts nothing");
    assert_eq!(again.message.id, first.message.id);
    p.send_message(&ch, &message("cg-2", "two"))
        .await
        .expect("send");
    p.send_message(&ch, &message("cg-3", "three"))
        .await
        .expect("send");
    let page = p.history(&ch, 2, None).await.expect("history");
    let texts: Vec<&str> = page.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["three", "two"], "newest first");
    let older = p.history(&ch, 2, Some(&page[1].id)).await.expect("older");
    let texts: Vec<&str> = older.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["one"], "the repeat posted nothing");
    let state = p
        .read_channels(std::slice::from_ref(&ch), "u-bob")
        .await
        .expect("read");
    assert_eq!(state[0].unread_count, Some(3));
    p.mark_read(&ch, "u-bob").await.expect("mark");
    let state = p
        .read_channels(std::slice::from_ref(&ch), "u-bob")
        .await
        .expect("read");
    assert_eq!(
        state[0].unread_count,
        Some(0),
        "the marker is at the latest message"
    );
}

#[tokio::test]
async fn the_local_adapter_messages_like_the_others() {
    adapters_message_alike(&crate::chat_providers::Local::start().await).await;
}

#[tokio::test]
async fn the_stream_adapter_messages_like_the_others() {
    adapters_message_alike(&crate::chat_providers::Fake(fakes::stream::start().await)).await;
}

#[tokio::test]
async fn the_sendbird_adapter_messages_like_the_others() {
    adapters_message_alike(&crate::chat_providers::Fake(fakes::sendbird::start().await)).await;
}

#[tokio::test]
async fn the_ethora_adapter_refuses_what_its_api_lacks_and_reports_no_unread_count() {
    adapters_message_alike(&crate::chat_providers::Fake(fakes::ethora::start().await)).await;
}
