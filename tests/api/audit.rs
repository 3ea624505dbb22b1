//! The audit trail's recording half: each read and change of patient-linked data leaves exactly
//! one record with the request's context, denials are DENIED, no PHI reaches the table, a full
//! queue makes the flush wait without losing anything, and the hash chain catches tampering
//! (an altered row, a removed row, a forged checkpoint) while retention keeps it verifiable.

use std::time::Duration;

use caregraph::{
    audit::{AuditActor, AuditEntity, AuditEntry, AuditLog, AuditScope, chain, retention, verify},
    db::entities::audit_event,
};
use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    Statement,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp, every_read, quick};

const READ_PATIENT: &str = "query ReadRex($id: ID!) { patient(id: $id) { id name } }";
const UPDATE_PATIENT: &str = "mutation RenameRex($id: ID!, $name: String!) { updatePatient(id: $id, input: { name: $name }) { id } }";
const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id } }";
const LIST_APPOINTMENTS: &str =
    "query Dashboard($org: ID!) { appointments(orgId: $org, first: 50) { edges { node { id } } } }";

/// POSTs a query with an `x-request-id`.
async fn gql_with_id(
    app: &TestApp,
    token: &str,
    request_id: &str,
    query: &str,
    vars: Value,
) -> Value {
    app.http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({ "query": query, "variables": vars }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

fn db(app: &TestApp) -> &DatabaseConnection {
    &app.state.services.db
}

/// Every record written so far (after the queue drained).
pub(crate) async fn records(app: &TestApp) -> Vec<audit_event::Model> {
    assert!(
        app.state.services.audit.written().await,
        "the audit queue drains"
    );
    audit_event::Entity::find()
        .order_by_asc(audit_event::Column::At)
        .order_by_asc(audit_event::Column::Id)
        .all(db(app))
        .await
        .expect("records")
}

/// The records of one request.
async fn of_request(app: &TestApp, request_id: &str) -> Vec<audit_event::Model> {
    records(app)
        .await
        .into_iter()
        .filter(|r| r.request_id.as_deref() == Some(request_id))
        .collect()
}

fn key(app: &TestApp) -> SecretString {
    retention::checkpoint_key(&app.state.config)
}

async fn verify_all(app: &TestApp) -> Result<verify::Summary, verify::Break> {
    let key = key(app);
    verify::verify(db(app), key.expose_secret().as_bytes(), None, |_, _| {})
        .await
        .expect("verify runs")
}

/// Schedules the vet `hours` from now (distinct hours: the vet cannot be booked twice at once).
async fn schedule(app: &TestApp, c: &Clinic, hours: i64) -> String {
    let body = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": {
                "patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
                "supportStaffIds": [], "startsAt": (Utc::now() + chrono::Duration::hours(hours)).to_rfc3339(),
                "durationMinutes": 30, "sessionType": "IN_PERSON", "reason": "Planted-reason-text"
            }}),
            "scheduleAppointment",
        )
        .await;
    body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_patient_read_leaves_exactly_one_read_record_with_the_requests_context() {
    let app = TestApp::spawn().await;
    let c = app.clinic("aread").await;
    let body = gql_with_id(
        &app,
        &c.vet.token,
        "req-read-1",
        READ_PATIENT,
        json!({"id": c.patient}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let rows = of_request(&app, "req-read-1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r.action, "READ");
    assert_eq!(r.entity_type, "PATIENT");
    assert_eq!(r.entity_id.as_deref(), Some(c.patient.as_str()));
    assert_eq!(r.patient_id.as_deref(), Some(c.patient.as_str()));
    assert_eq!(r.org_id.as_deref(), Some(c.org.as_str()));
    assert_eq!(r.chain, c.org);
    assert_eq!(r.actor_kind, "USER");
    assert_eq!(r.actor_id.as_deref(), Some(c.vet.id.as_str()));
    assert_eq!(r.outcome, "ALLOWED");
    assert_eq!(r.operation_name.as_deref(), Some("ReadRex"));
    assert_eq!(r.client_address.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn a_strangers_read_of_a_patient_is_recorded_as_denied_with_the_id_asked() {
    let app = TestApp::spawn().await;
    let c = app.clinic("adeny").await;
    let body = gql_with_id(
        &app,
        &c.stranger.token,
        "req-deny-1",
        READ_PATIENT,
        json!({"id": c.patient}),
    )
    .await;
    assert_eq!(crate::helpers::code(&body), "NOT_FOUND", "{body}");
    let rows = of_request(&app, "req-deny-1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].action, "READ");
    assert_eq!(rows[0].outcome, "DENIED");
    assert_eq!(rows[0].entity_id.as_deref(), Some(c.patient.as_str()));
    assert_eq!(rows[0].org_id.as_deref(), Some(c.org.as_str()));
    assert_eq!(rows[0].actor_id.as_deref(), Some(c.stranger.id.as_str()));
}

#[tokio::test]
async fn a_patient_update_records_one_update_and_no_read() {
    let app = TestApp::spawn().await;
    let c = app.clinic("aupd").await;
    let body = gql_with_id(
        &app,
        &c.vet.token,
        "req-upd-1",
        UPDATE_PATIENT,
        json!({"id": c.patient, "name": "Rexford"}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let rows = of_request(&app, "req-upd-1").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].action, "UPDATE");
    assert_eq!(rows[0].entity_type, "PATIENT");
    assert_eq!(rows[0].patient_id.as_deref(), Some(c.patient.as_str()));
    assert_eq!(rows[0].operation_name.as_deref(), Some("RenameRex"));
    // A guardian may read the patient but not change it: FORBIDDEN, recorded as DENIED.
    let body = gql_with_id(
        &app,
        &c.client.token,
        "req-upd-2",
        UPDATE_PATIENT,
        json!({"id": c.patient, "name": "Nope"}),
    )
    .await;
    assert_eq!(crate::helpers::code(&body), "FORBIDDEN", "{body}");
    let rows = of_request(&app, "req-upd-2").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].outcome, "DENIED");
}

#[tokio::test]
async fn creating_a_patient_records_the_patient_and_each_guardian_in_its_transaction() {
    let app = TestApp::spawn().await;
    let c = app.clinic("acreate").await;
    let created: Vec<_> = records(&app)
        .await
        .into_iter()
        .filter(|r| r.action == "CREATE" && r.patient_id.as_deref() == Some(c.patient.as_str()))
        .collect();
    let kinds: Vec<(&str, Option<&str>)> = created
        .iter()
        .map(|r| (r.entity_type.as_str(), r.entity_id.as_deref()))
        .collect();
    assert_eq!(created.len(), 3, "{kinds:?}");
    assert!(
        kinds.contains(&("PATIENT", Some(c.patient.as_str()))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("GUARDIAN", Some(c.client.id.as_str()))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("GUARDIAN", Some(c.co_guardian.id.as_str()))),
        "{kinds:?}"
    );
    assert!(
        created
            .iter()
            .all(|r| r.actor_id.as_deref() == Some(c.owner.id.as_str()))
    );
}

#[tokio::test]
async fn a_list_records_one_read_per_row_returned_and_a_schedule_one_create() {
    let app = TestApp::spawn().await;
    let c = app.clinic("alist").await;
    let mut ids = Vec::new();
    for hours in 2..5 {
        ids.push(schedule(&app, &c, hours).await);
    }
    let creates = records(&app)
        .await
        .into_iter()
        .filter(|r| r.action == "CREATE" && r.entity_type == "APPOINTMENT")
        .count();
    assert_eq!(creates, 3);
    let body = gql_with_id(
        &app,
        &c.owner.token,
        "req-list-1",
        LIST_APPOINTMENTS,
        json!({"org": c.org}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let rows = of_request(&app, "req-list-1").await;
    let mut read: Vec<String> = rows
        .iter()
        .filter(|r| r.action == "READ" && r.entity_type == "APPOINTMENT")
        .map(|r| r.entity_id.clone().expect("id"))
        .collect();
    read.sort();
    ids.sort();
    assert_eq!(read, ids);
    assert_eq!(rows.len(), 3, "nothing else was read: {rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.patient_id.as_deref() == Some(c.patient.as_str())
                && r.operation_name.as_deref() == Some("Dashboard"))
    );
}

#[tokio::test]
async fn nested_guardians_and_consents_record_one_read_per_row() {
    let app = TestApp::spawn().await;
    let c = app.clinic("anest").await;
    let query = "query Nested($id: ID!) { patient(id: $id) { id guardians { user { id } } } }";
    let body = gql_with_id(
        &app,
        &c.vet.token,
        "req-nest-1",
        query,
        json!({"id": c.patient}),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let rows = of_request(&app, "req-nest-1").await;
    let guardians: Vec<_> = rows
        .iter()
        .filter(|r| r.entity_type == "GUARDIAN")
        .collect();
    assert_eq!(guardians.len(), 2, "{rows:?}");
    assert!(
        guardians
            .iter()
            .all(|r| r.org_id.as_deref() == Some(c.org.as_str())
                && r.patient_id.as_deref() == Some(c.patient.as_str()))
    );
    assert_eq!(
        rows.iter().filter(|r| r.entity_type == "PATIENT").count(),
        1
    );
}

#[tokio::test]
async fn sign_ins_record_login_and_a_failed_one_keeps_no_email() {
    let app = TestApp::spawn().await;
    let c = app.clinic("alogin").await;
    let login = "mutation SignIn($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }";
    let ok = app
        .gql(
            None,
            login,
            json!({"e": "vet@alogin.example", "p": "a long password 1"}),
        )
        .await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let bad = app
        .gql(
            None,
            login,
            json!({"e": "nobody-planted@alogin.example", "p": "wrong password 1"}),
        )
        .await;
    assert!(bad.get("errors").is_some(), "{bad}");
    let rows: Vec<_> = records(&app)
        .await
        .into_iter()
        .filter(|r| r.entity_type == "USER")
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].action, "LOGIN");
    assert_eq!(rows[0].chain, "system");
    assert_eq!(rows[0].actor_id.as_deref(), Some(c.vet.id.as_str()));
    assert_eq!(rows[0].operation_name.as_deref(), Some("SignIn"));
    assert_eq!(rows[1].action, "LOGIN_FAILED");
    assert_eq!(rows[1].outcome, "DENIED");
    assert_eq!(rows[1].actor_kind, "ANONYMOUS");
    assert_eq!(rows[1].entity_id, None);
    assert!(!format!("{:?}", rows[1]).contains("nobody-planted"));
}

#[tokio::test]
async fn planted_phi_appears_in_no_column_of_any_audit_record() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("aphi").await;
    let name = "Zebulon-Planted-Name";
    let email = "planted-guardian@aphi.example";
    let text = "Planted message text about the hind leg";
    let phone = "+15550001234";
    let body = app
        .gql(
            Some(&c.owner.token),
            "mutation($org: ID!, $input: CreatePatientInput!) { createPatient(orgId: $org, input: $input) { id } }",
            json!({"org": c.org, "input": {"name": name, "guardians": [
                {"email": email, "givenName": "Plant", "familyName": "Ed", "relationship": "PRIMARY"}
            ]}}),
        )
        .await;
    let patient = body["data"]["createPatient"]["id"]
        .as_str()
        .expect("patient")
        .to_owned();
    app.ok(
        &c.owner.token,
        READ_PATIENT,
        json!({"id": patient}),
        "patient",
    )
    .await;
    app.ok(
        &c.owner.token,
        "query($id: ID!) { patient(id: $id) { guardians { user { email } } } }",
        json!({"id": patient}),
        "patient",
    )
    .await;
    let group = app
        .ok(
            &c.vet.token,
            "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id } }",
            json!({"o": c.org, "i": {"title": "Ward", "memberIds": [c.owner.id]}}),
            "createGroupChat",
        )
        .await;
    app.ok(
        &c.vet.token,
        "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id } }",
        json!({"id": group["id"], "t": text}),
        "sendChatMessage",
    )
    .await;
    app.ok(
        &c.owner.token,
        "query($id: ID!) { chatSession(id: $id) { recentMessages { text } } }",
        json!({"id": group["id"]}),
        "chatSession",
    )
    .await;
    let team = app
        .ok(
            &c.owner.token,
            "mutation($p: ID!, $i: CreateCareTeamInput!) { createCareTeam(patientId: $p, input: $i) { id } }",
            json!({"p": patient, "i": {"name": "Team"}}),
            "createCareTeam",
        )
        .await;
    app.ok(
        &c.owner.token,
        "mutation($t: ID!, $i: AddCareTeamMemberInput!) { addCareTeamMember(careTeamId: $t, input: $i) { id } }",
        json!({"t": team["id"], "i": {"phone": phone, "displayName": "Dr Phone"}}),
        "addCareTeamMember",
    )
    .await;
    let rows = records(&app).await;
    let kinds: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert!(kinds.contains(&"SEND"), "{kinds:?}");
    assert!(
        rows.iter()
            .any(|r| r.entity_type == "CHAT_MESSAGE" && r.action == "READ")
    );
    // Every column of every row, as the database holds it.
    let backend = db(&app).get_database_backend();
    let dump = db(&app)
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT * FROM audit_events",
        ))
        .await
        .expect("dump");
    let mut text_of_table = String::new();
    for row in &dump {
        for col in row.column_names() {
            let value: Option<String> = row.try_get("", &col).unwrap_or(None);
            text_of_table.push_str(&value.unwrap_or_default());
            text_of_table.push('\n');
        }
    }
    assert!(text_of_table.contains(&patient), "the dump holds the rows");
    for planted in [name, email, text, phone, "Planted-reason-text", "Plant"] {
        assert!(
            !text_of_table
                .to_lowercase()
                .contains(&planted.to_lowercase()),
            "{planted} leaked"
        );
    }
}

#[tokio::test]
async fn a_flush_under_a_full_queue_waits_and_loses_nothing() {
    let app = TestApp::spawn().await;
    let c = app.clinic("aqueue").await;
    let log = AuditLog::new(
        app.state.services.db.clone(),
        Some(100),
        app.state.services.clock.clone(),
        key(&app),
        2190,
    );
    let org = caregraph::domain::OrgId::parse(&c.org, "org").expect("org id");
    let scope: AuditScope = log.scope(AuditActor::System, Some("req-queue".into()), None);
    scope.record_all(
        (0..250).map(|i| AuditEntry::read(AuditEntity::Case, format!("case-{i}")).org(org)),
    );
    // No writer yet: 100 fit, the flush waits for the rest.
    let flushing = tokio::spawn({
        let log = log.clone();
        async move { log.flush(&scope).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !flushing.is_finished(),
        "the flush waits while the queue is full"
    );
    assert_eq!(log.counts().0, 100);
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(log.clone().run_writer(stop.clone()));
    tokio::time::timeout(Duration::from_secs(10), flushing)
        .await
        .expect("the flush completes once the writer drains")
        .expect("flush");
    assert!(log.written().await);
    stop.cancel();
    writer.await.expect("writer stops");
    let written = audit_event::Entity::find()
        .filter(audit_event::Column::RequestId.eq("req-queue"))
        .all(db(&app))
        .await
        .expect("rows");
    assert_eq!(written.len(), 250);
}

#[tokio::test]
async fn recording_off_records_nothing() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_AUDIT".into(), "false".into());
    })
    .await;
    let c = app.clinic("aoff").await;
    app.ok(
        &c.vet.token,
        READ_PATIENT,
        json!({"id": c.patient}),
        "patient",
    )
    .await;
    assert!(records(&app).await.is_empty());
}

/// A clinic with some records, all sealed.
async fn sealed_trail(tag: &str) -> (TestApp, Clinic) {
    let app = TestApp::spawn().await;
    let c = app.clinic(tag).await;
    for _ in 0..3 {
        app.ok(
            &c.vet.token,
            READ_PATIENT,
            json!({"id": c.patient}),
            "patient",
        )
        .await;
    }
    assert!(app.state.services.audit.written().await);
    app.state.services.audit.seal().await.expect("seal");
    let unsealed = audit_event::Entity::find()
        .filter(audit_event::Column::ChainIndex.is_null())
        .all(db(&app))
        .await
        .expect("rows");
    assert!(unsealed.is_empty(), "all sealed");
    (app, c)
}

async fn chain_rows(app: &TestApp, chain: &str) -> Vec<audit_event::Model> {
    audit_event::Entity::find()
        .filter(audit_event::Column::Chain.eq(chain))
        .order_by_asc(audit_event::Column::ChainIndex)
        .all(db(app))
        .await
        .expect("rows")
}

#[tokio::test]
async fn a_sealed_chain_links_every_record_from_64_zeros_and_verifies() {
    let (app, c) = sealed_trail("aseal").await;
    let rows = chain_rows(&app, &c.org).await;
    assert!(rows.len() >= 6, "{}", rows.len());
    assert_eq!(rows[0].chain_index, Some(1));
    assert_eq!(rows[0].prev_hash.as_deref(), Some(chain::GENESIS_HASH));
    for pair in rows.windows(2) {
        assert_eq!(pair[1].chain_index, pair[0].chain_index.map(|i| i + 1));
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    let summary = verify_all(&app).await.expect("intact");
    assert!(summary.records >= rows.len() as u64);
    // Sealing again finds nothing to do.
    assert_eq!(app.state.services.audit.seal().await.expect("seal"), 0);
}

#[tokio::test]
async fn a_tampered_row_fails_verification_at_that_row() {
    let (app, c) = sealed_trail("atamper").await;
    let rows = chain_rows(&app, &c.org).await;
    let victim = &rows[rows.len() / 2];
    let backend = db(&app).get_database_backend();
    db(&app)
        .execute_raw(Statement::from_string(
            backend,
            format!(
                "UPDATE audit_events SET entity_id = 'someone-else' WHERE id = '{}'",
                victim.id
            ),
        ))
        .await
        .expect("tamper");
    let broken = verify_all(&app).await.expect_err("tampering is found");
    assert_eq!(broken.chain, c.org);
    assert_eq!(Some(broken.chain_index), victim.chain_index);
    assert_eq!(broken.record_id.as_deref(), Some(victim.id.as_str()));
    assert!(broken.problem.contains("hash"), "{broken}");
}

#[tokio::test]
async fn a_deleted_middle_row_fails_verification() {
    let (app, c) = sealed_trail("adelete").await;
    let rows = chain_rows(&app, &c.org).await;
    let victim = &rows[rows.len() / 2];
    audit_event::Entity::delete_by_id(victim.id.clone())
        .exec(db(&app))
        .await
        .expect("delete");
    let broken = verify_all(&app).await.expect_err("the gap is found");
    assert_eq!(Some(broken.chain_index), victim.chain_index);
    assert!(broken.problem.contains("missing"), "{broken}");
}

#[tokio::test]
async fn retention_prunes_the_front_behind_a_checkpoint_and_the_chain_still_verifies() {
    let (app, c) = sealed_trail("aretain").await;
    let before = chain_rows(&app, &c.org).await;
    // Everything older than the third record goes.
    let cutoff = before[2].at;
    let deleted = retention::prune(db(&app), &key(&app), cutoff)
        .await
        .expect("prune");
    let after = chain_rows(&app, &c.org).await;
    assert!(deleted >= 2, "{deleted}");
    assert_eq!(
        after.len(),
        before.len() - 2,
        "only this chain's first two went"
    );
    assert_eq!(after[0].chain_index, Some(3));
    let summary = verify_all(&app).await.expect("still verifiable");
    assert!(summary.from_checkpoint >= 1);
    // New records keep chaining after the pruned prefix.
    app.ok(
        &c.vet.token,
        READ_PATIENT,
        json!({"id": c.patient}),
        "patient",
    )
    .await;
    assert!(app.state.services.audit.written().await);
    app.state.services.audit.seal().await.expect("seal");
    verify_all(&app)
        .await
        .expect("still verifiable after more records");
}

#[tokio::test]
async fn a_forged_checkpoint_fails_verification() {
    let (app, c) = sealed_trail("aforge").await;
    let before = chain_rows(&app, &c.org).await;
    retention::prune(db(&app), &key(&app), before[2].at)
        .await
        .expect("prune");
    // Someone deletes one more record and moves the checkpoint over it without the key.
    let gone = &before[2];
    audit_event::Entity::delete_by_id(gone.id.clone())
        .exec(db(&app))
        .await
        .expect("delete");
    let backend = db(&app).get_database_backend();
    db(&app)
        .execute_raw(Statement::from_string(
            backend,
            format!(
                "UPDATE audit_checkpoints SET through_index = 3, last_hash = '{}' WHERE chain = '{}'",
                gone.hash.clone().expect("hash"),
                c.org
            ),
        ))
        .await
        .expect("forge");
    let broken = verify_all(&app).await.expect_err("the forgery is found");
    assert_eq!(broken.chain, c.org);
    assert!(broken.problem.contains("signature"), "{broken}");
}

#[tokio::test]
async fn the_verify_command_exits_non_zero_at_a_break_and_zero_with_a_summary() {
    let (app, c) = sealed_trail("acli").await;
    let url = app.vars["CAREGRAPH_DATABASE_URL"].clone();
    let dir = tempfile::tempdir().expect("dir");
    let run = |org: Option<&str>| {
        let mut cmd = crate::cli::caregraph(dir.path());
        cmd.env("CAREGRAPH_DATABASE_URL", &url)
            .env("CAREGRAPH_JWT_SECRET", crate::helpers::SECRET)
            .args(["audit", "verify"]);
        if let Some(org) = org {
            cmd.args(["--org", org]);
        }
        cmd.output().expect("runs")
    };
    let ok = run(Some(&c.org));
    let stdout = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(ok.status.success(), "{stdout}");
    assert!(
        stdout.contains("audit trail intact: 1 chain(s)"),
        "{stdout}"
    );
    let victim = &chain_rows(&app, &c.org).await[1];
    let backend = db(&app).get_database_backend();
    db(&app)
        .execute_raw(Statement::from_string(
            backend,
            format!(
                "UPDATE audit_events SET entity_id = 'x' WHERE id = '{}'",
                victim.id
            ),
        ))
        .await
        .expect("tamper");
    let bad = run(None);
    let stdout = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(!bad.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "chain {} breaks at index 2 (record {})",
            c.org, victim.id
        )),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_query_over_a_websocket_is_recorded_after_its_delivery_under_its_operation_name() {
    use crate::websocket::{Event, acked, next, send};
    let app = TestApp::spawn().await;
    let c = app.clinic("aws").await;
    let mut ws = acked(&app, "graphql-transport-ws", &c.vet.token).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "q1", "payload": {
            "query": "query OverSocket($id: ID!) { patient(id: $id) { id } }",
            "variables": {"id": c.patient}
        }}),
    )
    .await;
    match next(&mut ws).await {
        Event::Msg(m) => assert_eq!(m["type"], "next", "{m}"),
        other => panic!("{other:?}"),
    }
    // The socket stays open: the record was handed over with the delivery, not at close.
    let rows: Vec<_> = records(&app)
        .await
        .into_iter()
        .filter(|r| r.operation_name.as_deref() == Some("OverSocket"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].action, "READ");
    assert_eq!(rows[0].entity_id.as_deref(), Some(c.patient.as_str()));
    assert_eq!(rows[0].actor_id.as_deref(), Some(c.vet.id.as_str()));
}

#[tokio::test]
async fn shutdown_writes_every_queued_record_before_the_process_stops() {
    let mut app = TestApp::spawn().await;
    let c = app.clinic("adrain").await;
    let org = caregraph::domain::OrgId::parse(&c.org, "org").expect("org id");
    let log = app.state.services.audit.clone();
    let scope = log.scope(AuditActor::System, Some("req-drain".into()), None);
    scope.record_all(
        (0..5_000).map(|i| AuditEntry::read(AuditEntity::Case, format!("c{i}")).org(org)),
    );
    log.flush(&scope).await;
    app.stop().await.expect("clean stop");
    let written = audit_event::Entity::find()
        .filter(audit_event::Column::RequestId.eq("req-drain"))
        .all(db(&app))
        .await
        .expect("rows");
    assert_eq!(written.len(), 5_000);
}

/// Runs `query` as `token` under `request_id` (no errors allowed); its records.
async fn step(
    app: &TestApp,
    token: &str,
    request_id: &str,
    query: &str,
    vars: Value,
) -> (Value, Vec<audit_event::Model>) {
    let body = gql_with_id(app, token, request_id, query, vars).await;
    assert!(body.get("errors").is_none(), "{request_id}: {body}");
    (body, of_request(app, request_id).await)
}

/// Exactly one record of `action` on `entity` among `rows`, which it returns.
fn one<'a>(rows: &'a [audit_event::Model], action: &str, entity: &str) -> &'a audit_event::Model {
    let found: Vec<_> = rows
        .iter()
        .filter(|r| r.action == action && r.entity_type == entity)
        .collect();
    assert_eq!(found.len(), 1, "{action} {entity}: {rows:?}");
    found[0]
}

#[tokio::test]
async fn each_kind_of_change_and_read_leaves_exactly_one_record_of_its_action() {
    // Every read recorded: each request's own records are counted, and a read repeating an
    // earlier request's (the session read after the send) would otherwise be coalesced.
    let app = TestApp::spawn_with(|v| {
        quick(v);
        every_read(v);
    })
    .await;
    let c = app.clinic("akinds").await;
    let owner = c.owner.token.clone();
    // Care team: created, then read.
    let (body, rows) = step(
        &app,
        &owner,
        "k-team",
        "mutation($p: ID!) { createCareTeam(patientId: $p, input: {name: \"T\"}) { id } }",
        json!({"p": c.patient}),
    )
    .await;
    let team = body["data"]["createCareTeam"]["id"]
        .as_str()
        .expect("team")
        .to_owned();
    let r = one(&rows, "CREATE", "CARE_TEAM");
    assert_eq!(r.entity_id.as_deref(), Some(team.as_str()));
    assert_eq!(r.patient_id.as_deref(), Some(c.patient.as_str()));
    // Consent: recorded, revoked.
    let (body, rows) = step(&app, &owner, "k-consent", "mutation($p: ID!, $o: ID!) { recordConsent(patientId: $p, input: {scope: VIDEO, grantedToOrgId: $o}) { id } }", json!({"p": c.patient, "o": c.other_org})).await;
    let consent = body["data"]["recordConsent"]["id"]
        .as_str()
        .expect("consent")
        .to_owned();
    assert_eq!(
        one(&rows, "CREATE", "CONSENT").entity_id.as_deref(),
        Some(consent.as_str())
    );
    let (_, rows) = step(
        &app,
        &owner,
        "k-revoke",
        "mutation($id: ID!) { revokeConsent(id: $id) { id } }",
        json!({"id": consent}),
    )
    .await;
    assert_eq!(
        one(&rows, "UPDATE", "CONSENT").patient_id.as_deref(),
        Some(c.patient.as_str())
    );
    // Case: created, read by staff, refused to a stranger.
    let (body, rows) = step(&app, &owner, "k-case", "mutation($o: ID!, $p: ID) { createCase(orgId: $o, input: {reference: \"R-1\", title: \"Limp\", patientId: $p}) { id } }", json!({"o": c.org, "p": c.patient})).await;
    let case = body["data"]["createCase"]["id"]
        .as_str()
        .expect("case")
        .to_owned();
    assert_eq!(
        one(&rows, "CREATE", "CASE").entity_id.as_deref(),
        Some(case.as_str())
    );
    let (_, rows) = step(
        &app,
        &c.vet.token,
        "k-case-read",
        "query($id: ID!) { case(id: $id) { id } }",
        json!({"id": case}),
    )
    .await;
    assert_eq!(one(&rows, "READ", "CASE").outcome, "ALLOWED");
    let body = gql_with_id(
        &app,
        &c.stranger.token,
        "k-case-deny",
        "query($id: ID!) { case(id: $id) { id } }",
        json!({"id": case}),
    )
    .await;
    assert_eq!(crate::helpers::code(&body), "NOT_FOUND");
    let rows = of_request(&app, "k-case-deny").await;
    assert_eq!(one(&rows, "READ", "CASE").outcome, "DENIED");
    // Appointment: cancelled (an UPDATE).
    let appointment = schedule(&app, &c, 2).await;
    let (_, rows) = step(
        &app,
        &owner,
        "k-cancel",
        "mutation($id: ID!) { cancelAppointment(id: $id) { id } }",
        json!({"id": appointment}),
    )
    .await;
    assert_eq!(
        one(&rows, "UPDATE", "APPOINTMENT").entity_id.as_deref(),
        Some(appointment.as_str())
    );
    // Meeting: the practitioner joins an open teleconference.
    let (body, _) = step(
        &app,
        &owner,
        "k-tele",
        SCHEDULE,
        json!({"org": c.org, "input": {
            "patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
            "supportStaffIds": [], "startsAt": Utc::now().to_rfc3339(), "durationMinutes": 30,
            "sessionType": "TELECONFERENCE"
        }}),
    )
    .await;
    let tele = body["data"]["scheduleAppointment"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, rows) = step(
        &app,
        &c.vet.token,
        "k-join",
        "mutation($id: ID!) { joinMeeting(appointmentId: $id) { joinUrl } }",
        json!({"id": tele}),
    )
    .await;
    let r = one(&rows, "JOIN", "MEETING");
    assert_eq!(
        (r.entity_id.as_deref(), r.patient_id.as_deref()),
        (Some(tele.as_str()), Some(c.patient.as_str()))
    );
    // Chat: a token, a message, a session read, a refused session read.
    let (_, rows) = step(
        &app,
        &c.vet.token,
        "k-token",
        "mutation { issueChatToken { provider } }",
        json!({}),
    )
    .await;
    let r = one(&rows, "ISSUE_TOKEN", "CHAT_TOKEN");
    assert_eq!(
        (r.chain.as_str(), r.entity_id.as_deref()),
        ("system", Some(c.vet.id.as_str()))
    );
    let (body, _) = step(&app, &c.vet.token, "k-group", "mutation($o: ID!, $m: ID!) { createGroupChat(orgId: $o, input: {title: \"Ward\", memberIds: [$m]}) { id } }", json!({"o": c.org, "m": c.owner.id})).await;
    let group = body["data"]["createGroupChat"]["id"]
        .as_str()
        .expect("group")
        .to_owned();
    let (_, rows) = step(
        &app,
        &c.vet.token,
        "k-send",
        "mutation($id: ID!) { sendChatMessage(sessionId: $id, text: \"hello\") { id } }",
        json!({"id": group}),
    )
    .await;
    assert_eq!(
        one(&rows, "SEND", "CHAT_MESSAGE").org_id.as_deref(),
        Some(c.org.as_str())
    );
    let (_, rows) = step(
        &app,
        &c.vet.token,
        "k-session",
        "query($id: ID!) { chatSession(id: $id) { id } }",
        json!({"id": group}),
    )
    .await;
    assert_eq!(
        one(&rows, "READ", "CHAT_SESSION").entity_id.as_deref(),
        Some(group.as_str())
    );
    let body = gql_with_id(
        &app,
        &c.outsider.token,
        "k-session-deny",
        "query($id: ID!) { chatSession(id: $id) { id } }",
        json!({"id": group}),
    )
    .await;
    assert_eq!(crate::helpers::code(&body), "NOT_FOUND");
    let rows = of_request(&app, "k-session-deny").await;
    assert_eq!(one(&rows, "READ", "CHAT_SESSION").outcome, "DENIED");
}

#[tokio::test]
async fn a_chat_closed_by_the_scheduler_is_recorded_as_the_schedulers_and_one_closed_by_a_user_as_theirs()
 {
    let start = Utc::now();
    let clock = caregraph::clock::ManualClock::new(start);
    let app = TestApp::spawn_with_clock(clock.clone(), quick).await;
    let c = app.clinic("aclose").await;
    let open = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id } }";
    let mut sessions = Vec::new();
    for minutes in [60, 600] {
        let a =
            crate::chat_sessions::appointment(&app, &c, start + chrono::Duration::minutes(minutes))
                .await;
        let s = app
            .ok(
                &c.client.token,
                open,
                json!({"id": a}),
                "openAppointmentChat",
            )
            .await;
        sessions.push(s["id"].as_str().expect("id").to_owned());
    }
    // The vet closes the second; the window of the first ends (and the scheduler closes it).
    step(
        &app,
        &c.vet.token,
        "k-close",
        "mutation($id: ID!) { closeChatSession(sessionId: $id) { id } }",
        json!({"id": sessions[1]}),
    )
    .await;
    let by_user: Vec<_> = records(&app)
        .await
        .into_iter()
        .filter(|r| r.action == "UPDATE" && r.entity_id.as_deref() == Some(sessions[1].as_str()))
        .collect();
    assert_eq!(by_user.len(), 1, "{by_user:?}");
    assert_eq!(
        (
            by_user[0].actor_kind.as_str(),
            by_user[0].actor_id.as_deref()
        ),
        ("USER", Some(c.vet.id.as_str()))
    );
    clock.set(start + chrono::Duration::minutes(60 + 30 + 121));
    assert!(app.state.services.chats.tick().await.expect("tick") >= 1);
    let closed: Vec<_> = records(&app)
        .await
        .into_iter()
        .filter(|r| r.action == "UPDATE" && r.entity_id.as_deref() == Some(sessions[0].as_str()))
        .collect();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].actor_kind, "SCHEDULER");
    assert_eq!(closed[0].actor_id, None);
    assert_eq!(closed[0].org_id.as_deref(), Some(c.org.as_str()));
}

#[tokio::test]
async fn a_request_without_an_id_gets_one_that_its_answer_and_its_records_carry() {
    let app = TestApp::spawn().await;
    let c = app.clinic("areqid").await;
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&c.vet.token)
        .json(&json!({ "query": READ_PATIENT, "variables": {"id": c.patient} }))
        .send()
        .await
        .expect("request");
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("the answer names its request id")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a fresh UUID: {id}");
    let rows = of_request(&app, &id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].action, "READ");

    let echoed = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&c.vet.token)
        .header("x-request-id", "proxy-42")
        .json(&json!({ "query": READ_PATIENT, "variables": {"id": c.patient} }))
        .send()
        .await
        .expect("request");
    assert_eq!(
        echoed.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"proxy-42"[..]),
        "a proxy's id is kept"
    );
}

#[tokio::test]
async fn an_over_long_id_and_a_record_already_stored_hold_back_no_other_record() {
    let app = TestApp::spawn().await;
    let log = &app.state.services.audit;
    let scope = log.scope(AuditActor::System, None, None);
    // A system chat message's id is 84 characters; an entity id is stored up to 128.
    let long = "m".repeat(300);
    scope.record(AuditEntry::read(AuditEntity::ChatMessage, &long));
    let first = scope.take();
    log.submit(first.clone()).await;
    assert!(log.written().await, "the over-long id is written");
    let stored = audit_event::Entity::find_by_id(first[0].id.to_string())
        .one(db(&app))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.entity_id.as_deref(), Some("m".repeat(128).as_str()));

    // The same record again (as after a commit whose answer was lost) beside a new one: the
    // batch fails as a whole, row by row the new one goes in, and the writer goes on.
    scope.record(AuditEntry::read(AuditEntity::Patient, "fresh"));
    let mut again = first.clone();
    again.extend(scope.take());
    log.submit(again).await;
    assert!(log.written().await, "the writer is not stuck");
    let fresh = audit_event::Entity::find()
        .filter(audit_event::Column::EntityId.eq("fresh"))
        .all(db(&app))
        .await
        .expect("read");
    assert_eq!(fresh.len(), 1);
    let copies = audit_event::Entity::find()
        .filter(audit_event::Column::Id.eq(first[0].id.to_string()))
        .all(db(&app))
        .await
        .expect("read");
    assert_eq!(copies.len(), 1, "stored once");
}

#[tokio::test]
async fn a_refused_organisation_is_denied_in_its_own_trail_and_a_made_up_one_in_the_system_trail() {
    let app = TestApp::spawn().await;
    let c = app.clinic("aorgs").await;
    const ORG: &str = "query($o: ID!) { organization(id: $o) { id name } }";
    let made_up = uuid::Uuid::now_v7().to_string();
    for (request, org) in [("req-org-real", c.org.as_str()), ("req-org-fake", &made_up)] {
        let body = gql_with_id(&app, &c.stranger.token, request, ORG, json!({"o": org})).await;
        assert_eq!(crate::helpers::code(&body), "NOT_FOUND", "{body}");
    }
    let real = of_request(&app, "req-org-real").await;
    assert_eq!(real.len(), 1, "{real:?}");
    assert_eq!(
        (real[0].outcome.as_str(), real[0].entity_type.as_str()),
        ("DENIED", "MEMBERSHIP")
    );
    assert_eq!(real[0].chain, c.org);
    assert_eq!(real[0].org_id.as_deref(), Some(c.org.as_str()));
    let fake = of_request(&app, "req-org-fake").await;
    assert_eq!(fake.len(), 1, "{fake:?}");
    assert_eq!(fake[0].outcome, "DENIED");
    assert_eq!(fake[0].entity_id.as_deref(), Some(made_up.as_str()));
    assert_eq!(fake[0].chain, "system", "a made-up id starts no chain");
    assert_eq!(fake[0].org_id, None);
}
