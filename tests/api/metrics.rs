//! `/metrics` after a real flow (README "Operations"): every series exists and moves, gauges
//! come back down, and no label holds request data or an unbounded client string.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    fakes::{self, FakeProvider},
    helpers::{TestApp, code, quick, settle},
    websocket::{Event, acked, next, send},
};

const TOKEN: &str = "metrics-secret";
/// A patient's name and a search text no label may ever hold.
const PLANTED: &str = "Quenby Marchetti";

/// One scrape: `series{labels}` to value, and the raw text.
struct Scrape {
    values: HashMap<String, f64>,
    text: String,
}

impl Scrape {
    /// The value of the series `key` (exactly as rendered), 0 when absent.
    fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(0.0)
    }

    /// Whether the series is present.
    fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The values label `label` takes in the series named `name`.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        let prefix = format!("{name}{{");
        let needle = format!("{label}=\"");
        self.values
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .filter_map(|k| {
                let rest = &k[k.find(&needle)? + needle.len()..];
                Some(rest[..rest.find('"')?].to_owned())
            })
            .collect()
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    let text = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let values = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect();
    Scrape { values, text }
}

/// Scrapes until `done` holds (up to 10 s); returns that scrape.
async fn scrape_until(app: &TestApp, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let started = Instant::now();
    loop {
        let s = scrape(app).await;
        if done(&s) {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reached: {}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn op(name: &str, kind: &str) -> String {
    format!(
        "caregraph_graphql_operation_duration_seconds_count{{graphql_operation_name=\"{name}\",graphql_operation_type=\"{kind}\"}}"
    )
}

const WS: &str = "caregraph_websocket_connections";
const SUBS: &str = "caregraph_graphql_active_subscriptions";
const CHANGES: &str =
    "subscription Changes($o: ID!) { chatSessionsChanged(orgId: $o) { kind sessionId } }";
const GROUP: &str = "mutation NewGroup($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id } }";

#[tokio::test]
async fn a_short_flow_moves_every_series_and_no_label_holds_request_data() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        for (k, val) in fake.vars() {
            v.insert(k, val);
        }
        v.insert("CAREGRAPH_METRICS_TOKEN".into(), TOKEN.into());
        // The scheduler ticks often, so its lag is measured during the test.
        v.insert("CAREGRAPH_CHAT_SCHEDULER_POLL_MS".into(), "100".into());
    })
    .await;
    let c = app.clinic("metrics").await;
    settle(&app).await;
    let before = scrape(&app).await;

    // A named query whose variable and result hold the planted name.
    let created = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreatePatientInput!) { createPatient(orgId: $o, input: $i) { id } }",
            json!({"o": c.org, "i": {"name": PLANTED, "species": "Cat"}}),
            "createPatient",
        )
        .await;
    let found = app
        .ok(
            &c.owner.token,
            "query FindPatients($o: ID!, $s: String) { patients(orgId: $o, search: $s) { edges { node { id name } } } }",
            json!({"o": c.org, "s": PLANTED}),
            "patients",
        )
        .await;
    assert_eq!(found["edges"][0]["node"]["id"], created["id"], "{found}");
    // An anonymous query, and a named one that fails.
    app.ok(&c.owner.token, "{ __typename }", json!({}), "__typename")
        .await
        .as_str();
    let missing = app
        .gql(
            Some(&c.owner.token),
            "query Missing($id: ID!) { patient(id: $id) { id } }",
            json!({"id": c.other_org}),
        )
        .await;
    assert_eq!(code(&missing), "NOT_FOUND", "{missing}");

    // A subscription over WebSocket sees a group being created; the group is provisioned at the
    // provider through the outbox.
    let mut ws = acked(&app, "graphql-transport-ws", &c.vet.token).await;
    let listening = app.state.services.events.subscribers();
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "l", "payload": {"query": CHANGES, "variables": {"o": c.org}}}),
    )
    .await;
    for _ in 0..500 {
        if app.state.services.events.subscribers() > listening {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open = scrape(&app).await;
    assert_eq!(open.get(WS), before.get(WS) + 1.0, "{}", open.text);
    assert_eq!(open.get(SUBS), before.get(SUBS) + 1.0, "{}", open.text);
    app.ok(
        &c.tech.token,
        GROUP,
        json!({"o": c.org, "i": {"title": "Night Shift", "memberIds": [c.vet.id]}}),
        "createGroupChat",
    )
    .await;
    let Event::Msg(change) = next(&mut ws).await else {
        panic!("expected the change");
    };
    assert_eq!(
        change["payload"]["data"]["chatSessionsChanged"]["kind"],
        "CREATED"
    );
    settle(&app).await;
    send(&mut ws, json!({"type": "complete", "id": "l"})).await;
    ws.close(None).await.expect("close");

    let after = scrape_until(&app, |s| s.get(WS) == 0.0 && s.get(SUBS) == 0.0).await;
    let text = &after.text;
    let moved = |key: &str| {
        assert!(
            after.get(key) > before.get(key),
            "{key} did not move: {} -> {}\n{text}",
            before.get(key),
            after.get(key)
        );
    };
    // HTTP, by route pattern and status.
    moved(
        "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_route=\"/graphql\",http_response_status_code=\"200\"}",
    );
    moved(
        "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/graphql\",http_response_status_code=\"101\"}",
    );
    // GraphQL operations by name and type, errors by code.
    moved(&op("FindPatients", "query"));
    moved(&op("anonymous", "query"));
    moved(&op("Missing", "query"));
    moved(&op("NewGroup", "mutation"));
    moved(&op("Changes", "subscription"));
    moved("caregraph_graphql_errors_total{code=\"NOT_FOUND\"}");
    // The gauges came back down; events went out and were delivered.
    assert_eq!(after.get(WS), 0.0);
    assert_eq!(after.get(SUBS), 0.0);
    moved("caregraph_events_published_total");
    moved("caregraph_events_delivered_total");
    // The provider was called through the outbox, which drained.
    let calls = after.label_values("caregraph_provider_calls_total", "operation");
    assert!(!calls.is_empty(), "{text}");
    for operation in &calls {
        moved(&format!(
            "caregraph_provider_calls_total{{provider=\"stream\",operation=\"{operation}\",outcome=\"ok\"}}"
        ));
        moved(&format!(
            "caregraph_provider_call_duration_seconds_count{{provider=\"stream\",operation=\"{operation}\"}}"
        ));
    }
    assert!(!fake.control().requests().is_empty());
    assert!(
        after.has("caregraph_provider_breaker_state{provider=\"stream\"}"),
        "{text}"
    );
    assert_eq!(
        after.get("caregraph_provider_breaker_state{provider=\"stream\"}"),
        0.0
    );
    assert_eq!(after.get("caregraph_outbox_pending"), 0.0, "{text}");
    assert_eq!(after.get("caregraph_outbox_dead"), 0.0, "{text}");
    assert!(
        after.has("caregraph_outbox_oldest_pending_age_seconds"),
        "{text}"
    );
    assert_eq!(
        after.get("caregraph_outbox_oldest_pending_age_seconds"),
        0.0
    );
    // The scheduler ticked late by less than a second on an idle machine.
    assert!(after.has("caregraph_scheduler_lag_seconds"), "{text}");
    assert!(after.get("caregraph_scheduler_lag_seconds") < 1.0, "{text}");
    // SQL statements are a counter; the pool shows its connections.
    assert!(
        text.contains("# TYPE caregraph_sql_statements counter"),
        "{text}"
    );
    moved("caregraph_sql_statements_total");
    let used = after.get("db_client_connection_count{db_client_connection_state=\"used\"}");
    let idle = after.get("db_client_connection_count{db_client_connection_state=\"idle\"}");
    assert!(used + idle >= 1.0, "{text}");
    assert!(
        after.get("db_client_connection_max") >= used + idle,
        "{text}"
    );

    // Nothing from the requests' data reached a label.
    for planted in [
        PLANTED,
        "Quenby",
        "Marchetti",
        c.org.as_str(),
        c.other_org.as_str(),
    ] {
        assert!(!text.contains(planted), "{planted} in\n{text}");
    }
}

#[tokio::test]
async fn three_hundred_operation_names_keep_the_label_set_bounded() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_METRICS_TOKEN".into(), TOKEN.into());
    })
    .await;
    let (_, _, token) = app.owner("Names Clinic", "names@example.org").await;
    for i in 0..300 {
        let body = app
            .gql(
                Some(&token),
                &format!("query Op{i} {{ __typename }}"),
                json!({}),
            )
            .await;
        assert_eq!(body["data"]["__typename"], "Query", "{body}");
    }
    // A name that is no GraphQL name does not parse: it counts as `other`, type `unknown`.
    let bad = app
        .gql(Some(&token), "query Jane-Doe { __typename }", json!({}))
        .await;
    assert!(bad["errors"].is_array(), "{bad}");
    let s = scrape(&app).await;
    let names = s.label_values(
        "caregraph_graphql_operation_duration_seconds_count",
        "graphql_operation_name",
    );
    assert!(
        names.len() <= caregraph::telemetry::metrics::MAX_OPERATION_NAMES + 2,
        "{} names: {names:?}",
        names.len()
    );
    assert!(names.contains("Op0"), "the first names are kept: {names:?}");
    assert!(!names.contains("Op299"), "{names:?}");
    assert!(!s.text.contains("Jane"), "{}", s.text);
    // Names past the limit are counted, under `other`.
    let kept = (0..300)
        .filter(|i| names.contains(&format!("Op{i}")))
        .count();
    assert_eq!(
        s.get(&op("other", "query")),
        f64::from(u32::try_from(300 - kept).expect("small")),
        "{}",
        s.text
    );
    assert_eq!(s.get(&op("other", "unknown")), 1.0, "{}", s.text);
}
