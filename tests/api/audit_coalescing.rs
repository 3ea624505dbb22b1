//! Read coalescing (README "Audit trail", `CAREGRAPH_AUDIT_READ_WINDOW_SECONDS`): an allowed
//! read identical to one this process recorded within the window is not recorded again; a read
//! by another person, from another address or under another operation is its own; denials are
//! always recorded; a zero window records every read. The clock is the test's: time moves
//! only when the test moves it.

use caregraph::{clock::ManualClock, db::entities::audit_event};
use chrono::Utc;
use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp};

const READ_PATIENT: &str = "query ReadRex($id: ID!) { patient(id: $id) { id name } }";
const READ_PATIENT_AGAIN: &str = "query ReadRexAgain($id: ID!) { patient(id: $id) { id name } }";

/// Reads the clinic's patient as `token` from 127.0.0.1 under `ReadRex`; the body.
async fn read(app: &TestApp, c: &Clinic, token: &str, request_id: &str) -> Value {
    read_as(app, c, "127.0.0.1", token, READ_PATIENT, request_id).await
}

/// Reads the clinic's patient as `token` from the loopback address `from` (127.0.0.x) under
/// `query`'s operation, with `request_id`; the body.
async fn read_as(
    app: &TestApp,
    c: &Clinic,
    from: &str,
    token: &str,
    query: &str,
    request_id: &str,
) -> Value {
    let client = reqwest::Client::builder()
        .local_address(Some(from.parse().expect("address")))
        .build()
        .expect("client");
    client
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({ "query": query, "variables": { "id": c.patient } }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// The records of reads of the clinic's patient (after the queue drained), oldest first.
async fn patient_reads(app: &TestApp, c: &Clinic) -> Vec<audit_event::Model> {
    crate::audit::records(app)
        .await
        .into_iter()
        .filter(|r| {
            r.action == "READ"
                && r.entity_type == "PATIENT"
                && r.entity_id.as_deref() == Some(c.patient.as_str())
        })
        .collect()
}

/// The value of `caregraph_audit_records_coalesced_total` at `/metrics`.
async fn coalesced_metric(app: &TestApp) -> u64 {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("caregraph_audit_records_coalesced_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no coalesced counter in\n{text}"))
}

/// An app on a clock that moves only when the test moves it.
async fn spawn_with_clock(
    configure: impl FnOnce(&mut std::collections::HashMap<String, String>),
) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_with_clock(clock.clone(), configure).await;
    (app, clock)
}

#[tokio::test]
async fn reading_the_same_patient_twice_within_the_window_leaves_one_read_record() {
    let (app, clock) = spawn_with_clock(|_| {}).await;
    let c = app.clinic("coal1").await;
    let before = patient_reads(&app, &c).await.len();
    let metric_before = coalesced_metric(&app).await;
    let counted_before = app.state.services.audit.coalesced();
    let first = read(&app, &c, &c.vet.token, "first").await;
    assert!(first.get("errors").is_none(), "{first}");
    clock.advance(chrono::Duration::seconds(59));
    let second = read(&app, &c, &c.vet.token, "second").await;
    assert!(second.get("errors").is_none(), "{second}");
    let rows = patient_reads(&app, &c).await;
    let new: Vec<_> = rows[before..].iter().collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(new[0].outcome, "ALLOWED");
    assert_eq!(new[0].actor_id.as_deref(), Some(c.vet.id.as_str()));
    assert_eq!(
        new[0].request_id.as_deref(),
        Some("first"),
        "the first read is the one kept"
    );
    assert_eq!(app.state.services.audit.coalesced() - counted_before, 1);
    assert_eq!(coalesced_metric(&app).await - metric_before, 1);
}

#[tokio::test]
async fn a_read_repeated_once_the_window_has_passed_is_recorded_again() {
    let (app, clock) = spawn_with_clock(|_| {}).await;
    let c = app.clinic("coal2").await;
    let before = patient_reads(&app, &c).await.len();
    read(&app, &c, &c.vet.token, "first").await;
    assert_eq!(patient_reads(&app, &c).await.len() - before, 1);
    clock.advance(chrono::Duration::seconds(60));
    read(&app, &c, &c.vet.token, "after-the-window").await;
    assert_eq!(patient_reads(&app, &c).await.len() - before, 2);
    // The second read opened a new window of its own.
    clock.advance(chrono::Duration::seconds(59));
    read(&app, &c, &c.vet.token, "within-the-new-window").await;
    let rows = patient_reads(&app, &c).await;
    let ids: Vec<_> = rows[before..]
        .iter()
        .map(|r| r.request_id.clone().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["first", "after-the-window"]);
}

#[tokio::test]
async fn another_client_address_operation_name_or_actor_is_recorded_separately() {
    let (app, _clock) = spawn_with_clock(|_| {}).await;
    let c = app.clinic("coal3").await;
    let before = patient_reads(&app, &c).await.len();
    let variants = [
        ("127.0.0.1", &c.vet.token, READ_PATIENT),
        ("127.0.0.2", &c.vet.token, READ_PATIENT),
        ("127.0.0.1", &c.vet.token, READ_PATIENT_AGAIN),
        ("127.0.0.1", &c.owner.token, READ_PATIENT),
    ];
    for round in 0..2 {
        for (i, (from, token, query)) in variants.iter().enumerate() {
            let body = read_as(&app, &c, from, token, query, &format!("r{round}-{i}")).await;
            assert!(body.get("errors").is_none(), "{body}");
        }
    }
    let rows = patient_reads(&app, &c).await;
    let mut seen: Vec<_> = rows[before..]
        .iter()
        .map(|r| {
            (
                r.actor_id.clone().unwrap_or_default(),
                r.client_address.clone().unwrap_or_default(),
                r.operation_name.clone().unwrap_or_default(),
                r.request_id.clone().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    let row = |actor: &str, from: &str, operation: &str, request: &str| {
        (
            actor.to_owned(),
            from.to_owned(),
            operation.to_owned(),
            request.to_owned(),
        )
    };
    let mut expected = vec![
        row(&c.vet.id, "127.0.0.1", "ReadRex", "r0-0"),
        row(&c.vet.id, "127.0.0.2", "ReadRex", "r0-1"),
        row(&c.vet.id, "127.0.0.1", "ReadRexAgain", "r0-2"),
        row(&c.owner.id, "127.0.0.1", "ReadRex", "r0-3"),
    ];
    expected.sort();
    assert_eq!(
        seen, expected,
        "one record per distinct read, the second round coalesced"
    );
}

#[tokio::test]
async fn denied_reads_are_never_coalesced() {
    let (app, _clock) = spawn_with_clock(|_| {}).await;
    let c = app.clinic("coal4").await;
    let before = patient_reads(&app, &c).await.len();
    for attempt in ["first", "second"] {
        let body = read(&app, &c, &c.stranger.token, attempt).await;
        assert_eq!(crate::helpers::code(&body), "NOT_FOUND", "{body}");
    }
    let rows = patient_reads(&app, &c).await;
    let denied: Vec<_> = rows[before..]
        .iter()
        .map(|r| (r.outcome.as_str(), r.actor_id.as_deref()))
        .collect();
    assert_eq!(
        denied,
        [
            ("DENIED", Some(c.stranger.id.as_str())),
            ("DENIED", Some(c.stranger.id.as_str()))
        ]
    );
}

#[tokio::test]
async fn a_zero_window_records_every_read() {
    let (app, _clock) = spawn_with_clock(|v| {
        v.insert("CAREGRAPH_AUDIT_READ_WINDOW_SECONDS".into(), "0".into());
    })
    .await;
    let c = app.clinic("coal5").await;
    let before = patient_reads(&app, &c).await.len();
    for attempt in ["first", "second", "third"] {
        let body = read(&app, &c, &c.vet.token, attempt).await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    assert_eq!(patient_reads(&app, &c).await.len() - before, 3);
    assert_eq!(app.state.services.audit.coalesced(), 0);
}
