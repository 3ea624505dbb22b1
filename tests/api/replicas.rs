//! Two caregraph processes (the real binary) against one PostgreSQL database and one Redis:
//! a webhook received by one reaches a subscriber connected to the other exactly once, and a
//! chat window opened by the schedulers of both is announced once. Needs
//! `CAREGRAPH_TEST_POSTGRES_URL` and `CAREGRAPH_TEST_REDIS_URL`: ignored by a plain `cargo test`,
//! run by `.ci/run` with `--include-ignored`, and failing when run without them.

use std::{process::Command, time::Duration};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    cli::{BIN, Running, serve},
    fakes::{self, FakeProvider},
    helpers::{SECRET, TestDb},
    websocket::{Event, Ws, acked_url, next, send},
};

struct Replica {
    _process: Running,
    base: String,
    token: String,
}

impl Replica {
    /// Starts the binary and waits for its printed GraphiQL link.
    fn start(vars: &[(String, String)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("CAREGRAPH_ENV").env("RUST_LOG", "warn");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let (process, link) = serve(cmd);
        let (base, token) = link.split_once("/graphiql#token=").expect("link shape");
        let base = base[base.find("http").expect("url")..].to_owned();
        Self {
            _process: process,
            base,
            token: token.to_owned(),
        }
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        assert!(body["errors"].is_null(), "{query}: {body}");
        body["data"].clone()
    }

    fn ws_url(&self) -> String {
        format!("{}/graphql", self.base.replacen("http", "ws", 1))
    }

    async fn subscribe(&self, query: &str, variables: Value) -> Ws {
        let mut ws = acked_url(&self.ws_url(), "graphql-transport-ws", &self.token).await;
        send(
            &mut ws,
            json!({"type": "subscribe", "id": "1", "payload": {"query": query, "variables": variables}}),
        )
        .await;
        ws
    }
}

/// The next `next` payload's data, within `within`, or `None`.
async fn event(ws: &mut Ws, within: Duration) -> Option<Value> {
    let got = tokio::time::timeout(within, next(ws)).await.ok()?;
    match got {
        Event::Msg(m) if m["type"] == "next" => Some(m["payload"]["data"].clone()),
        other => panic!("unexpected {other:?}"),
    }
}

// Two workers: `Replica::start` blocks its thread until the link is printed, and A's demo seed
// before it talks to the fake provider, which is served on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAREGRAPH_TEST_POSTGRES_URL and CAREGRAPH_TEST_REDIS_URL"]
async fn two_processes_share_events_through_redis_exactly_once() {
    let how = "two processes share one database only on PostgreSQL, and events only through Redis";
    crate::helpers::needs_env("CAREGRAPH_TEST_POSTGRES_URL", how);
    let redis = crate::helpers::needs_env("CAREGRAPH_TEST_REDIS_URL", how);
    let db = TestDb::new().await;
    let fake = fakes::stream::start().await;
    let mut vars = vec![
        ("CAREGRAPH_DATABASE_URL".to_owned(), db.url.clone()),
        ("CAREGRAPH_JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("CAREGRAPH_DEMO".to_owned(), "true".to_owned()),
        ("CAREGRAPH_REDIS_URL".to_owned(), redis),
        (
            "CAREGRAPH_REDIS_CHANNEL".to_owned(),
            format!("caregraph-test:{}", uuid::Uuid::new_v4().simple()),
        ),
        (
            "CAREGRAPH_CHAT_SCHEDULER_POLL_MS".to_owned(),
            "250".to_owned(),
        ),
        ("CAREGRAPH_OUTBOX_POLL_MS".to_owned(), "50".to_owned()),
    ];
    vars.extend(fake.vars());
    // A seeds the demo clinic; B starts on the same database.
    let a = Replica::start(&vars);
    let b = Replica::start(&vars);
    assert_ne!(a.base, b.base);

    let me = a
        .gql(
            "{ viewer { user { id } memberships { organization { id } } } }",
            json!({}),
        )
        .await;
    let org = me["viewer"]["memberships"][0]["organization"]["id"].clone();
    let owner = me["viewer"]["user"]["id"].clone();
    let colleagues = a
        .gql(
            "query($o: ID!) { colleagues(orgId: $o, first: 10) { edges { node { user { id } role } } } }",
            json!({"o": org}),
        )
        .await;
    let vet = colleagues["colleagues"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| &e["node"])
        .find(|n| n["user"]["id"] != owner && n["role"] == "PRACTITIONER")
        .expect("a practitioner in the demo clinic")["user"]["id"]
        .clone();

    // 1. A webhook posted to A reaches the list subscriber on B, once.
    let dm = a
        .gql(
            "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id channelId } }",
            json!({"o": org, "c": vet}),
        )
        .await;
    let mut list = b
        .subscribe(
            "subscription($o: ID!) { chatSessionsChanged(orgId: $o) { kind sessionId lastMessage { text } } }",
            json!({"o": org}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = serde_json::to_vec(&json!({"type": "message.new",
        "cid": format!("messaging:{}", dm["openDirectChat"]["channelId"].as_str().expect("channel")),
        "message": {"id": "m-1", "text": "Seen on both", "user": {"id": vet},
            "created_at": chrono::Utc::now().to_rfc3339()}}))
    .expect("json");
    let mut mac =
        Hmac::<Sha256>::new_from_slice(fakes::stream::API_SECRET.as_bytes()).expect("key");
    mac.update(&body);
    let status = reqwest::Client::new()
        .post(format!("{}/webhooks/stream", a.base))
        .header("x-signature", hex::encode(mac.finalize().into_bytes()))
        .header("x-webhook-id", "replica-delivery-1")
        .body(body)
        .send()
        .await
        .expect("webhook")
        .status();
    assert_eq!(status, 200);
    let got = event(&mut list, Duration::from_secs(5))
        .await
        .expect("the change reaches B");
    assert_eq!(got["chatSessionsChanged"]["kind"], "MESSAGE");
    assert_eq!(
        got["chatSessionsChanged"]["sessionId"],
        dm["openDirectChat"]["id"]
    );
    assert_eq!(
        got["chatSessionsChanged"]["lastMessage"]["text"],
        "Seen on both"
    );
    assert!(
        event(&mut list, Duration::from_millis(800)).await.is_none(),
        "once"
    );

    // 2. A window opened by the schedulers of both processes is announced once.
    let patients = a
        .gql(
            "query($o: ID!) { patients(orgId: $o, first: 5) { edges { node { id guardians { user { id } relationship } } } } }",
            json!({"o": org}),
        )
        .await;
    let patient = &patients["patients"]["edges"][0]["node"];
    let client = patient["guardians"]
        .as_array()
        .expect("guardians")
        .iter()
        .find(|g| g["relationship"] != "CO_GUARDIAN")
        .expect("a guardian")["user"]["id"]
        .clone();
    let starts = chrono::Utc::now() + chrono::Duration::seconds(3);
    let appointment = a
        .gql(
            "mutation($o: ID!, $i: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $o, input: $i) { id } }",
            json!({"o": org, "i": {"patientId": patient["id"], "clientId": client,
                "practitionerId": vet, "startsAt": starts.to_rfc3339(), "durationMinutes": 30,
                "sessionType": "TELECONFERENCE", "activationMinutes": 0}}),
        )
        .await["scheduleAppointment"]["id"]
        .clone();
    let opened = b
        .gql(
            "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id status } }",
            json!({"id": appointment}),
        )
        .await;
    assert_eq!(opened["openAppointmentChat"]["status"], "PENDING");
    let query = "subscription($a: ID!) { chatSessionStatus(appointmentId: $a) { status reason sessionId } }";
    let mut on_a = a.subscribe(query, json!({"a": appointment})).await;
    let mut on_b = b.subscribe(query, json!({"a": appointment})).await;
    for ws in [&mut on_a, &mut on_b] {
        let first = event(ws, Duration::from_secs(5)).await.expect("current");
        assert_eq!(first["chatSessionStatus"]["reason"], "CURRENT");
        assert_eq!(first["chatSessionStatus"]["status"], "PENDING");
    }
    for (name, ws) in [("A", &mut on_a), ("B", &mut on_b)] {
        let opened = event(ws, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("the window opening reaches {name}"));
        assert_eq!(
            opened["chatSessionStatus"]["reason"], "WINDOW_OPENED",
            "{name}"
        );
        assert_eq!(opened["chatSessionStatus"]["status"], "ACTIVE");
    }
    for (name, ws) in [("A", &mut on_a), ("B", &mut on_b)] {
        assert!(
            event(ws, Duration::from_millis(1500)).await.is_none(),
            "announced once on {name}"
        );
    }
}
