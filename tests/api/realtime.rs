//! The chat subscriptions (README "Realtime") with a real WebSocket client, over both
//! subprotocols: `chatSessionStatus` (the current state first, then every transition, only for
//! those who may read the session) and `chatSessionsChanged` (the PMS list, only the caller's
//! own sessions), and a stream that ends with its access token.

use std::time::{Duration, Instant};

use caregraph::clock::ManualClock;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    chat_sessions::appointment,
    helpers::{Clinic, Person, SECRET, TestApp, code, hs256, now, quick, settle},
    websocket::{Event, Ws, acked, expect_close, next, send},
};

const PROTOCOLS: [&str; 2] = ["graphql-transport-ws", "graphql-ws"];

const STATUS: &str = "subscription($s: ID, $a: ID) { chatSessionStatus(sessionId: $s, appointmentId: $a) { sessionId appointmentId status reason allowedFrom allowedUntil at } }";
const CHANGES: &str = "subscription($o: ID!) { chatSessionsChanged(orgId: $o) { kind sessionId session { id category } lastMessage { text author system } at } }";

const OPEN: &str = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id status allowedFrom allowedUntil } }";
const CLOSE: &str = "mutation($id: ID!) { closeChatSession(sessionId: $id) { id status } }";
const RESCHEDULE: &str = "mutation($id: ID!, $s: DateTime!) { rescheduleAppointment(id: $id, startsAt: $s, durationMinutes: 45) { id } }";
const CANCEL: &str = "mutation($id: ID!) { cancelAppointment(id: $id) { status } }";
const GROUP: &str =
    "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id } }";
const MEMBERS: &str = "mutation($id: ID!, $a: [ID!], $r: [ID!]) { updateGroupMembers(sessionId: $id, add: $a, remove: $r) { id memberCount } }";
const SEND: &str =
    "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id text } }";
const DM: &str = "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id } }";

/// How long "nothing arrives" waits.
const QUIET: Duration = Duration::from_millis(300);

/// A signed-in socket speaking one of the two subprotocols.
pub(crate) struct Client {
    ws: Ws,
    legacy: bool,
}

impl Client {
    pub(crate) async fn connect(app: &TestApp, protocol: &str, token: &str) -> Self {
        Self {
            ws: acked(app, protocol, token).await,
            legacy: protocol == "graphql-ws",
        }
    }

    /// The message type that carries a result (`next`, or the legacy `data`).
    fn result_type(&self) -> &'static str {
        if self.legacy { "data" } else { "next" }
    }

    pub(crate) async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.legacy { "start" } else { "subscribe" };
        send(
            &mut self.ws,
            json!({"type": kind, "id": id, "payload": {"query": query, "variables": variables}}),
        )
        .await;
    }

    /// The next protocol message (keep-alives skipped); a close fails the test.
    pub(crate) async fn message(&mut self) -> Value {
        match next(&mut self.ws).await {
            Event::Msg(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next result of operation `id`, which must be a success: its `data`.
    pub(crate) async fn data(&mut self, id: &str) -> Value {
        let m = self.message().await;
        assert_eq!(m["type"], self.result_type(), "{m}");
        assert_eq!(m["id"], id, "{m}");
        assert!(m["payload"].get("errors").is_none(), "{m}");
        m["payload"]["data"].clone()
    }

    /// The next `chatSessionStatus` event of operation `id`.
    pub(crate) async fn status(&mut self, id: &str) -> Value {
        self.data(id).await["chatSessionStatus"].clone()
    }

    /// The next `chatSessionsChanged` change of operation `id`.
    async fn change(&mut self, id: &str) -> Value {
        self.data(id).await["chatSessionsChanged"].clone()
    }

    /// Operation `id` fails as a subscription whose resolver refused: one result with no data
    /// and the error at the field's path, then `complete`. Returns the error.
    pub(crate) async fn refused(&mut self, id: &str, field: &str) -> Value {
        let m = self.message().await;
        assert_eq!(m["type"], self.result_type(), "{m}");
        assert_eq!(m["id"], id, "{m}");
        assert_eq!(m["payload"]["data"], Value::Null, "{m}");
        let errors = m["payload"]["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{m}");
        assert_eq!(errors[0]["path"], json!([field]), "{m}");
        assert_eq!(
            self.message().await,
            json!({"type": "complete", "id": id}),
            "the refused operation completes"
        );
        errors[0].clone()
    }

    /// Nothing but keep-alives arrives for `QUIET`.
    async fn quiet(&mut self) {
        let until = tokio::time::Instant::now() + QUIET;
        loop {
            let Ok(frame) = tokio::time::timeout_at(until, self.ws.next()).await else {
                return;
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let m: Value = serde_json::from_str(&text).expect("json");
                    assert!(
                        matches!(m["type"].as_str(), Some("ping" | "ka")),
                        "nothing should arrive, got {m}"
                    );
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("nothing should arrive, got {other:?}"),
            }
        }
    }

    /// The socket still answers (a protocol `ping` over graphql-transport-ws; the legacy
    /// protocol has none, so a quiet wait there).
    async fn alive(&mut self) {
        if self.legacy {
            self.quiet().await;
        } else {
            send(&mut self.ws, json!({"type": "ping"})).await;
            assert_eq!(self.message().await, json!({"type": "pong"}));
        }
    }
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("a time, got {v}"))
        .parse()
        .expect("an RFC 3339 time")
}

/// A whole-second instant, so that windows compare exactly.
fn whole(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(0)
}

async fn open_chat(app: &TestApp, by: &Person, appointment: &str) -> Value {
    app.ok(
        &by.token,
        OPEN,
        json!({"id": appointment}),
        "openAppointmentChat",
    )
    .await
}

/// Waits until the bus has more listeners than `before` (a subscription took hold).
async fn listens(app: &TestApp, before: usize) {
    for _ in 0..500 {
        if app.state.services.events.subscribers() > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the subscription never listened on the bus");
}

/// A STAFF member of the clinic who is in none of its chats and administers nothing.
async fn plain_staff(app: &TestApp, c: &Clinic, tag: &str) -> Person {
    let (id, token) = app
        .member(
            &c.owner.token,
            &c.org,
            &format!("nurse@{tag}.example"),
            "STAFF",
        )
        .await;
    Person { id, token }
}

#[tokio::test]
async fn a_status_subscription_by_session_starts_with_the_current_state() {
    let app = TestApp::spawn_with(quick).await;
    for (n, protocol) in PROTOCOLS.into_iter().enumerate() {
        let c = app.clinic(&format!("current{n}")).await;
        let starts = whole(Utc::now()) + chrono::Duration::minutes(2);
        let id = appointment(&app, &c, starts).await;
        let session = open_chat(&app, &c.client, &id).await;
        let sid = session["id"].as_str().expect("id");

        let mut ws = Client::connect(&app, protocol, &c.client.token).await;
        let before = whole(Utc::now());
        ws.subscribe("s", STATUS, json!({"s": sid})).await;
        let event = ws.status("s").await;
        assert_eq!(event["reason"], "CURRENT", "{protocol}: {event}");
        assert_eq!(event["status"], "ACTIVE", "{protocol}: {event}");
        assert_eq!(event["sessionId"], sid);
        assert_eq!(event["appointmentId"], id.as_str());
        assert_eq!(event["allowedFrom"], session["allowedFrom"]);
        assert_eq!(event["allowedUntil"], session["allowedUntil"]);
        assert_eq!(
            time(&event["allowedFrom"]),
            starts - chrono::Duration::minutes(5)
        );
        assert_eq!(
            time(&event["allowedUntil"]),
            starts + chrono::Duration::minutes(30 + 120)
        );
        assert!(time(&event["at"]) >= before, "{event}");
        // Nothing changed, so nothing more arrives.
        ws.quiet().await;
    }
}

#[tokio::test]
async fn a_status_subscription_by_appointment_before_the_chat_exists_sees_the_window_it_will_have_and_then_its_opening()
 {
    for protocol in PROTOCOLS {
        let start = whole(Utc::now());
        let clock = ManualClock::new(start);
        let app = TestApp::spawn_with_clock(clock.clone(), quick).await;
        let c = app.clinic("early").await;
        let starts = start + chrono::Duration::hours(1);
        let id = appointment(&app, &c, starts).await;

        let mut ws = Client::connect(&app, protocol, &c.client.token).await;
        ws.subscribe("a", STATUS, json!({"a": id})).await;
        let event = ws.status("a").await;
        assert_eq!(
            event,
            json!({
                "sessionId": null,
                "appointmentId": id,
                "status": "PENDING",
                "reason": "CURRENT",
                "allowedFrom": event["allowedFrom"],
                "allowedUntil": event["allowedUntil"],
                "at": event["at"],
            }),
            "{protocol}"
        );
        let from = time(&event["allowedFrom"]);
        assert_eq!(from, starts - chrono::Duration::minutes(5), "{protocol}");
        assert_eq!(
            time(&event["allowedUntil"]),
            starts + chrono::Duration::minutes(30 + 120),
            "{protocol}"
        );

        // The practitioner opens the chat ahead of time; the window opens on the scheduler.
        let session = open_chat(&app, &c.vet, &id).await;
        assert_eq!(session["status"], "PENDING");
        assert_eq!(
            time(&session["allowedFrom"]),
            from,
            "the window announced is the session's"
        );
        let sid = session["id"].as_str().expect("id");
        let event = ws.status("a").await;
        assert_eq!(
            (&event["reason"], &event["status"], &event["sessionId"]),
            (&json!("CURRENT"), &json!("PENDING"), &json!(sid)),
            "{protocol}: the follower learns the new session: {event}"
        );
        clock.set(from + chrono::Duration::seconds(1));
        assert_eq!(app.state.services.chats.tick().await.expect("tick"), 1);
        let event = ws.status("a").await;
        assert_eq!(event["reason"], "WINDOW_OPENED", "{protocol}: {event}");
        assert_eq!(event["status"], "ACTIVE");
        assert_eq!(event["sessionId"], sid);
        assert_eq!(event["appointmentId"], id.as_str());
        assert_eq!(time(&event["allowedFrom"]), from);
        assert_eq!(
            time(&event["allowedUntil"]),
            starts + chrono::Duration::minutes(150)
        );
        ws.quiet().await;
    }
}

#[tokio::test]
async fn a_subscriber_by_appointment_learns_the_session_when_the_chat_is_opened_inside_its_window()
{
    for protocol in PROTOCOLS {
        let app = TestApp::spawn_with(quick).await;
        let c = app.clinic("inside").await;
        let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
        let mut ws = Client::connect(&app, protocol, &c.client.token).await;
        ws.subscribe("a", STATUS, json!({"a": id})).await;
        let event = ws.status("a").await;
        assert_eq!(event["reason"], "CURRENT");
        assert_eq!(event["status"], "ACTIVE");
        assert_eq!(event["sessionId"], Value::Null);

        let session = open_chat(&app, &c.vet, &id).await;
        let event = ws.status("a").await;
        assert_eq!(event["sessionId"], session["id"], "{protocol}: {event}");
        assert_eq!(event["status"], "ACTIVE");
    }
}

#[tokio::test]
async fn before_the_chat_exists_a_subscriber_by_appointment_hears_of_a_reschedule_and_a_cancellation()
 {
    for protocol in PROTOCOLS {
        let app = TestApp::spawn_with(quick).await;
        let c = app.clinic("nochat").await;
        let id = appointment(&app, &c, Utc::now() + chrono::Duration::hours(3)).await;
        let mut ws = Client::connect(&app, protocol, &c.client.token).await;
        ws.subscribe("a", STATUS, json!({"a": id})).await;
        assert_eq!(ws.status("a").await["status"], "PENDING");

        let moved = whole(Utc::now()) + chrono::Duration::days(1);
        app.ok(
            &c.owner.token,
            RESCHEDULE,
            json!({"id": id, "s": moved.to_rfc3339()}),
            "rescheduleAppointment",
        )
        .await;
        let event = ws.status("a").await;
        assert_eq!(event["reason"], "RESCHEDULED", "{protocol}: {event}");
        assert_eq!(event["status"], "PENDING");
        assert_eq!(event["sessionId"], Value::Null);
        assert_eq!(
            time(&event["allowedFrom"]),
            moved - chrono::Duration::minutes(5)
        );

        app.ok(
            &c.owner.token,
            CANCEL,
            json!({"id": id}),
            "cancelAppointment",
        )
        .await;
        let event = ws.status("a").await;
        assert_eq!(
            event["reason"], "APPOINTMENT_CANCELLED",
            "{protocol}: {event}"
        );
        assert_eq!(event["status"], "CLOSED");
    }
}

#[tokio::test]
async fn a_close_by_the_practice_reaches_the_client_within_a_second_and_only_once() {
    let app = TestApp::spawn_with(quick).await;
    for (n, protocol) in PROTOCOLS.into_iter().enumerate() {
        let c = app.clinic(&format!("close{n}")).await;
        let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
        let session = open_chat(&app, &c.client, &id).await;
        let sid = session["id"].as_str().expect("id");

        let mut ws = Client::connect(&app, protocol, &c.client.token).await;
        ws.subscribe("s", STATUS, json!({"s": sid})).await;
        assert_eq!(ws.status("s").await["status"], "ACTIVE");

        let started = Instant::now();
        let closed = app
            .ok(&c.vet.token, CLOSE, json!({"id": sid}), "closeChatSession")
            .await;
        assert_eq!(closed["status"], "CLOSED");
        let event = ws.status("s").await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "{protocol}: the close took {elapsed:?} to arrive"
        );
        assert_eq!(event["reason"], "CLOSED_BY_USER", "{protocol}: {event}");
        assert_eq!(event["status"], "CLOSED");
        assert_eq!(event["sessionId"], sid);
        assert_eq!(event["appointmentId"], id.as_str());

        // Closing a closed chat changes nothing, so it announces nothing.
        app.ok(&c.vet.token, CLOSE, json!({"id": sid}), "closeChatSession")
            .await;
        ws.quiet().await;
    }
}

#[tokio::test]
async fn rescheduling_announces_the_new_window_and_cancelling_announces_the_cancellation() {
    let app = TestApp::spawn_with(quick).await;
    for (n, protocol) in PROTOCOLS.into_iter().enumerate() {
        let c = app.clinic(&format!("resched{n}")).await;
        let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
        let session = open_chat(&app, &c.client, &id).await;
        let sid = session["id"].as_str().expect("id");

        let mut ws = Client::connect(&app, protocol, &c.client.token).await;
        ws.subscribe("s", STATUS, json!({"s": sid})).await;
        assert_eq!(ws.status("s").await["status"], "ACTIVE");

        let moved = whole(Utc::now()) + chrono::Duration::days(1);
        app.ok(
            &c.owner.token,
            RESCHEDULE,
            json!({"id": id, "s": moved.to_rfc3339()}),
            "rescheduleAppointment",
        )
        .await;
        let event = ws.status("s").await;
        assert_eq!(event["reason"], "RESCHEDULED", "{protocol}: {event}");
        assert_eq!(event["status"], "PENDING", "the new window is tomorrow");
        assert_eq!(event["sessionId"], sid);
        assert_eq!(event["appointmentId"], id.as_str());
        assert_eq!(
            time(&event["allowedFrom"]),
            moved - chrono::Duration::minutes(5)
        );
        assert_eq!(
            time(&event["allowedUntil"]),
            moved + chrono::Duration::minutes(45 + 120)
        );

        app.ok(
            &c.owner.token,
            CANCEL,
            json!({"id": id}),
            "cancelAppointment",
        )
        .await;
        let event = ws.status("s").await;
        assert_eq!(
            event["reason"], "APPOINTMENT_CANCELLED",
            "{protocol}: {event}"
        );
        assert_eq!(event["status"], "CLOSED");
        assert_eq!(event["sessionId"], sid);
        ws.quiet().await;
    }
}

#[tokio::test]
async fn a_status_subscription_takes_exactly_one_of_session_and_appointment() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("exactlyone").await;
    let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
    let session = open_chat(&app, &c.client, &id).await;
    for protocol in PROTOCOLS {
        let mut ws = Client::connect(&app, protocol, &c.client.token).await;
        for (op, variables) in [
            ("both", json!({"s": session["id"], "a": id})),
            ("neither", json!({})),
        ] {
            ws.subscribe(op, STATUS, variables).await;
            let error = ws.refused(op, "chatSessionStatus").await;
            assert_eq!(
                error["extensions"]["code"], "BAD_USER_INPUT",
                "{protocol} {op}: {error}"
            );
        }
        // The refusals ended those operations only: the socket and a good subscription work.
        ws.subscribe("ok", STATUS, json!({"a": id})).await;
        let event = ws.status("ok").await;
        assert_eq!(event["sessionId"], session["id"], "{protocol}");
        ws.alive().await;
    }
}

#[tokio::test]
async fn only_members_and_the_organization_s_admins_may_follow_a_chat_s_status() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("followers").await;
    let nurse = plain_staff(&app, &c, "followers").await;
    let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
    let session = open_chat(&app, &c.client, &id).await;
    let sid = session["id"].as_str().expect("id");
    for protocol in PROTOCOLS {
        for (who, person) in [
            ("a stranger", &c.stranger),
            ("another organisation's owner", &c.outsider),
            ("a staff member outside the chat", &nurse),
        ] {
            let mut ws = Client::connect(&app, protocol, &person.token).await;
            for (op, variables) in [("s", json!({"s": sid})), ("a", json!({"a": id}))] {
                ws.subscribe(op, STATUS, variables).await;
                let error = ws.refused(op, "chatSessionStatus").await;
                assert_eq!(
                    error["extensions"]["code"], "NOT_FOUND",
                    "{protocol}, {who}, by {op}: {error}"
                );
            }
            ws.alive().await;
        }

        // The organisation's OWNER is not in the chat but may follow it.
        let mut ws = Client::connect(&app, protocol, &c.owner.token).await;
        ws.subscribe("s", STATUS, json!({"s": sid})).await;
        let event = ws.status("s").await;
        assert_eq!(event["reason"], "CURRENT", "{protocol}: {event}");
        assert_eq!(event["sessionId"], sid);
        assert_eq!(event["status"], "ACTIVE");
        ws.subscribe("a", STATUS, json!({"a": id})).await;
        assert_eq!(ws.status("a").await["sessionId"], sid);
    }

    // Nobody outside the organisation follows its list either.
    for person in [&c.stranger, &c.outsider] {
        let mut ws = Client::connect(&app, PROTOCOLS[0], &person.token).await;
        ws.subscribe("l", CHANGES, json!({"o": c.org})).await;
        let error = ws.refused("l", "chatSessionsChanged").await;
        assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error}");
    }
}

#[tokio::test]
async fn the_chat_list_subscription_follows_the_callers_own_sessions_only() {
    for (n, protocol) in PROTOCOLS.into_iter().enumerate() {
        let app = TestApp::spawn_with(quick).await;
        let c = app.clinic("list").await;
        let mut ws = Client::connect(&app, protocol, &c.vet.token).await;
        let listening = app.state.services.events.subscribers();
        ws.subscribe("l", CHANGES, json!({"o": c.org})).await;
        // This stream has no first event: it is live once the server listens on the bus.
        listens(&app, listening).await;

        // A colleague creates a group with the vet in it.
        let group = app
            .ok(
                &c.tech.token,
                GROUP,
                json!({"o": c.org, "i": {"title": format!("Night Shift {n}"), "memberIds": [c.vet.id]}}),
                "createGroupChat",
            )
            .await;
        let gid = group["id"].as_str().expect("id");
        let change = ws.change("l").await;
        assert_eq!(change["kind"], "CREATED", "{protocol}: {change}");
        assert_eq!(change["sessionId"], gid);
        assert_eq!(
            change["session"],
            json!({"id": gid, "category": "GROUP"}),
            "{change}"
        );
        assert_eq!(change["lastMessage"], Value::Null);

        // Its owner adds someone.
        app.ok(
            &c.tech.token,
            MEMBERS,
            json!({"id": gid, "a": [c.owner.id]}),
            "updateGroupMembers",
        )
        .await;
        let change = ws.change("l").await;
        assert_eq!(change["kind"], "MEMBERS_CHANGED", "{protocol}: {change}");
        assert_eq!(change["sessionId"], gid);

        // Sessions the vet is not in are none of the vet's business, whatever happens in them.
        let dm = app
            .ok(
                &c.owner.token,
                DM,
                json!({"o": c.org, "c": c.tech.id}),
                "openDirectChat",
            )
            .await;
        app.ok(
            &c.tech.token,
            SEND,
            json!({"id": dm["id"], "t": "between us"}),
            "sendChatMessage",
        )
        .await;
        app.ok(
            &c.owner.token,
            CLOSE,
            json!({"id": dm["id"]}),
            "closeChatSession",
        )
        .await;
        ws.quiet().await;

        // A message in the group.
        app.ok(
            &c.tech.token,
            SEND,
            json!({"id": gid, "t": "Coffee is ready"}),
            "sendChatMessage",
        )
        .await;
        let change = ws.change("l").await;
        assert_eq!(change["kind"], "MESSAGE", "{protocol}: {change}");
        assert_eq!(change["sessionId"], gid);
        assert_eq!(
            change["lastMessage"],
            json!({"text": "Coffee is ready", "author": c.tech.id, "system": false})
        );

        // And its close.
        app.ok(&c.tech.token, CLOSE, json!({"id": gid}), "closeChatSession")
            .await;
        let change = ws.change("l").await;
        assert_eq!(change["kind"], "CLOSED", "{protocol}: {change}");
        assert_eq!(change["sessionId"], gid);
        ws.quiet().await;
    }
}

#[tokio::test]
async fn a_status_stream_ends_with_4403_when_its_access_token_expires() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("expiring").await;
    let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
    let session = open_chat(&app, &c.client, &id).await;
    for protocol in PROTOCOLS {
        let token = hs256(
            SECRET.as_bytes(),
            &json!({"sub": c.client.id, "exp": now() + 3}),
        );
        let started = Instant::now();
        let mut ws = Client::connect(&app, protocol, &token).await;
        ws.subscribe("s", STATUS, json!({"s": session["id"]})).await;
        let event = ws.status("s").await;
        assert_eq!(event["reason"], "CURRENT", "{protocol}: {event}");
        let reason = expect_close(&mut ws.ws, 4403).await;
        assert!(reason.contains("expired"), "{protocol}: {reason}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{protocol}: closed after {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_member_removed_from_a_chat_stops_hearing_its_status() {
    for (n, protocol) in PROTOCOLS.into_iter().enumerate() {
        let app = TestApp::spawn_with(quick).await;
        let c = app.clinic("removed").await;
        let group = app
            .ok(
                &c.tech.token,
                GROUP,
                json!({"o": c.org, "i": {"title": format!("Rota {n}"), "memberIds": [c.vet.id, c.owner.id]}}),
                "createGroupChat",
            )
            .await;
        let gid = group["id"].as_str().expect("id");
        let mut ws = Client::connect(&app, protocol, &c.vet.token).await;
        ws.subscribe("s", STATUS, json!({"s": gid})).await;
        assert_eq!(ws.status("s").await["reason"], "CURRENT");
        app.ok(
            &c.tech.token,
            MEMBERS,
            json!({"id": gid, "r": [c.vet.id]}),
            "updateGroupMembers",
        )
        .await;
        assert_eq!(
            ws.message().await,
            json!({"type": "complete", "id": "s"}),
            "{protocol}: the stream ends with the membership"
        );
        app.ok(&c.tech.token, CLOSE, json!({"id": gid}), "closeChatSession")
            .await;
        ws.quiet().await;
    }
}

#[tokio::test]
async fn staff_following_an_appointment_stop_when_its_chat_opens_without_them() {
    for protocol in PROTOCOLS {
        let app = TestApp::spawn_with(quick).await;
        let c = app.clinic("follow").await;
        let nurse = plain_staff(&app, &c, "follow").await;
        let id = appointment(&app, &c, Utc::now() + chrono::Duration::hours(1)).await;
        // Before the chat exists, staff who may read the appointment may follow it.
        let mut ws = Client::connect(&app, protocol, &nurse.token).await;
        ws.subscribe("a", STATUS, json!({"a": id})).await;
        assert_eq!(ws.status("a").await["status"], "PENDING");
        // Once it exists, the chat's own rule decides: the nurse is neither in it nor an admin.
        open_chat(&app, &c.vet, &id).await;
        assert_eq!(
            ws.message().await,
            json!({"type": "complete", "id": "a"}),
            "{protocol}: the stream ends instead of telling the session"
        );
    }
}

#[tokio::test]
async fn a_deactivated_staff_member_and_a_removed_guardian_lose_the_chat_its_messages_and_its_streams_at_once()
 {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("revoke").await;
    let appointment = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
    let sid = open_chat(&app, &c.owner, &appointment).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    const READ: &str = "query($id: ID!) { chatSession(id: $id) { id recentMessages { text } appointment { reason patient { name } } } }";
    const NESTED: &str = "query($id: ID!) { appointment(id: $id) { chat { id } } }";
    const TOKEN: &str = "mutation { issueChatToken { token } }";
    // Before: the technician (support staff) and the client (primary guardian) read and post.
    for p in [&c.tech, &c.client] {
        app.ok(&p.token, READ, json!({"id": sid}), "chatSession")
            .await;
        app.ok(
            &p.token,
            SEND,
            json!({"id": sid, "t": "before"}),
            "sendChatMessage",
        )
        .await;
        app.ok(&p.token, TOKEN, json!({}), "issueChatToken").await;
    }
    // The client also cares for a second pet of the clinic, so they keep listing its chats.
    app.ok(
        &c.owner.token,
        "mutation($org: ID!, $input: CreatePatientInput!) { createPatient(orgId: $org, input: $input) { id } }",
        json!({"org": c.org, "input": {"name": "Milo", "species": "Cat", "riskLevel": "LOW",
            "guardians": [{"email": "client@revoke.example", "givenName": "Casey",
                "familyName": "Client", "relationship": "PRIMARY"}]}}),
        "createPatient",
    )
    .await;
    const LIST: &str = "query($o: ID!) { chatSessions(orgId: $o) { edges { node { id } } } }";
    let listed = app
        .ok(&c.client.token, LIST, json!({"o": c.org}), "chatSessions")
        .await;
    assert!(listed.to_string().contains(&sid), "{listed}");
    // The technician follows the clinic's list from before the revocation.
    let before = app.state.services.events.subscribers();
    let mut list = Client::connect(&app, PROTOCOLS[0], &c.tech.token).await;
    list.subscribe("l", CHANGES, json!({"o": c.org})).await;
    listens(&app, before).await;

    app.ok(
        &c.owner.token,
        "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
        json!({"o": c.org, "u": c.tech.id}),
        "updateOrganizationMember",
    )
    .await;
    app.ok(
        &c.owner.token,
        "mutation($p: ID!, $u: ID!) { removeGuardian(patientId: $p, userId: $u) { id } }",
        json!({"p": c.patient, "u": c.client.id}),
        "removeGuardian",
    )
    .await;

    // After: no read (directly or through the appointment), no post, no stream.
    for p in [&c.tech, &c.client] {
        let read = app.gql(Some(&p.token), READ, json!({"id": sid})).await;
        assert_eq!(code(&read), "NOT_FOUND", "{read}");
        assert_eq!(read["data"], Value::Null, "nothing of the chat: {read}");
        let nested = app
            .gql(Some(&p.token), NESTED, json!({"id": appointment}))
            .await;
        assert!(
            nested["data"]["appointment"].is_null(),
            "nothing through the appointment: {nested}"
        );
        let post = app
            .gql(Some(&p.token), SEND, json!({"id": sid, "t": "after"}))
            .await;
        assert_eq!(code(&post), "NOT_FOUND", "{post}");
        let mut ws = Client::connect(&app, PROTOCOLS[0], &p.token).await;
        ws.subscribe("s", STATUS, json!({"s": sid})).await;
        let error = ws.refused("s", "chatSessionStatus").await;
        assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error}");
    }
    // The technician, active nowhere now, gets no chat token; the client still cares for Milo.
    let token = app.gql(Some(&c.tech.token), TOKEN, json!({})).await;
    assert_eq!(code(&token), "FORBIDDEN", "{token}");
    app.ok(&c.client.token, TOKEN, json!({}), "issueChatToken")
        .await;
    // The client still lists the clinic's chats, but no longer this one.
    let listed = app
        .ok(&c.client.token, LIST, json!({"o": c.org}), "chatSessions")
        .await;
    assert!(!listed.to_string().contains(&sid), "{listed}");
    // The practitioner still reads and posts; the technician's list stream carries no text.
    app.ok(
        &c.vet.token,
        SEND,
        json!({"id": sid, "t": "after revocation"}),
        "sendChatMessage",
    )
    .await;
    app.ok(&c.vet.token, READ, json!({"id": sid}), "chatSession")
        .await;
    // The technician's list stream heard their leaving last (no session, no text), then ended.
    let last = list.change("l").await;
    assert_eq!(last["kind"], "MEMBERS_CHANGED", "{last}");
    assert_eq!(last["sessionId"], sid.as_str(), "{last}");
    assert_eq!(last["session"], Value::Null, "{last}");
    assert_eq!(
        list.message().await,
        json!({"type": "complete", "id": "l"}),
        "the list stream ends"
    );
    // Both left the chat here and at the provider.
    let members = app
        .ok(
            &c.vet.token,
            "query($id: ID!) { chatSession(id: $id) { channelType channelId members { user { id } } } }",
            json!({"id": sid}),
            "chatSession",
        )
        .await;
    for gone in [&c.tech.id, &c.client.id] {
        assert!(
            !members["members"].to_string().contains(gone.as_str()),
            "{members}"
        );
    }
    settle(&app).await;
    let channel = caregraph::providers::chat::ChannelRef {
        channel_type: members["channelType"].as_str().expect("type").to_owned(),
        channel_id: members["channelId"].as_str().expect("id").to_owned(),
    };
    let (_, at_provider, _) = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local provider")
        .inspect(&channel)
        .await
        .expect("inspect")
        .expect("the channel");
    assert!(at_provider.contains(&c.vet.id), "{at_provider:?}");
    for gone in [&c.tech.id, &c.client.id] {
        assert!(!at_provider.contains(gone), "{at_provider:?}");
    }
}

#[tokio::test]
async fn a_chat_whose_channel_waited_for_the_provider_is_announced_when_it_comes_to_exist() {
    use crate::fakes::FakeProvider;
    const OPEN: &str = "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id provisioning } }";
    let fake = crate::fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
        v.insert("CAREGRAPH_OUTBOX_BACKOFF_MS".into(), "50".into());
        v.insert("CAREGRAPH_OUTBOX_MAX_BACKOFF_SECONDS".into(), "1".into());
        v.insert("CAREGRAPH_PROVIDER_RETRIES".into(), "0".into());
    })
    .await;
    let c = app.clinic("pending").await;
    let before = app.state.services.events.subscribers();
    let mut list = Client::connect(&app, PROTOCOLS[0], &c.vet.token).await;
    list.subscribe("l", CHANGES, json!({"o": c.org})).await;
    listens(&app, before).await;

    fake.control().fail(503, "{}", 3);
    let chat = app
        .ok(
            &c.vet.token,
            OPEN,
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    assert_ne!(chat["provisioning"], "READY", "{chat}");
    let created = list.change("l").await;
    assert_eq!(created["kind"], "CREATED", "{created}");
    // The outbox gets through once the provider answers again; the list hears of it.
    let updated = list.change("l").await;
    assert_eq!(updated["kind"], "UPDATED", "{updated}");
    assert_eq!(updated["sessionId"], chat["id"], "{updated}");
    let now = app
        .ok(
            &c.vet.token,
            "query($id: ID!) { chatSession(id: $id) { provisioning provisioningRetryAt } }",
            json!({"id": chat["id"]}),
            "chatSession",
        )
        .await;
    assert_eq!(
        now,
        json!({"provisioning": "READY", "provisioningRetryAt": null})
    );
}
