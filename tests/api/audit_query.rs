//! Reading the audit trail: the auditor capability, `auditEvents` with its filters and pages,
//! the streamed export and its link, and a patient's access log. Records are inserted straight
//! into `audit_events` (the recording half writes them in production).

use caregraph::{
    audit::{AuditAction, AuditActor, AuditEntity, AuditEntry, AuditRecord, AuditScope},
    auth::Viewer,
    db::entities::{audit_event, user},
    domain::{OrgId, PatientId, UserId, pagination::PageRequest},
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp, code};

const EVENTS: &str = "query($o: ID!, $f: AuditEventFilter, $first: Int, $after: String) {
  auditEvents(orgId: $o, filter: $f, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id at actor { kind id user { id displayName } } organizationId action
      entityType entityId patientId outcome requestId clientAddress operationName } } } }";
const EXPORT: &str = "mutation($o: ID!, $f: AuditEventFilter, $fmt: AuditExportFormat!) {
  exportAuditEvents(orgId: $o, filter: $f, format: $fmt) { url expiresAt } }";
const ACCESS_LOG: &str = "query($p: ID!, $first: Int, $after: String) {
  accessLog(patientId: $p, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { at organization { id name } reader { id displayName } action } } } }";
const UPDATE_MEMBER: &str = "mutation($o: ID!, $u: ID!, $i: UpdateOrganizationMemberInput!) {
  updateOrganizationMember(orgId: $o, userId: $u, input: $i) { active auditor } }";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0)
        .single()
        .expect("time")
}

fn org(id: &str) -> OrgId {
    OrgId::parse(id, "org").expect("org id")
}

fn uid(id: &str) -> UserId {
    UserId::parse(id, "user").expect("user id")
}

fn pid(id: &str) -> PatientId {
    PatientId::parse(id, "patient").expect("patient id")
}

/// A record as the recording half would store it.
fn record(at: DateTime<Utc>, actor: AuditActor, entry: AuditEntry) -> AuditRecord {
    AuditRecord {
        id: uuid::Uuid::now_v7(),
        at,
        actor,
        entry,
        request_id: Some(format!("req-{}", at.timestamp()).into()),
        client_address: Some("203.0.113.7".into()),
        operation_name: Some("PatientScreen".into()),
    }
}

/// Waits until what the setup recorded is written, then empties the trail, so that it holds
/// the test's fixture and what the test itself does.
async fn settle(app: &TestApp) {
    assert!(
        app.state.services.audit.written().await,
        "the audit queue drains"
    );
    audit_event::Entity::delete_many()
        .exec(&app.state.services.db)
        .await
        .expect("empty the trail");
}

/// Inserts records with multi-row inserts, 1,000 a statement.
async fn insert(app: &TestApp, records: &[AuditRecord]) {
    for chunk in records.chunks(1_000) {
        audit_event::Entity::insert_many(chunk.iter().map(AuditRecord::to_row))
            .exec_without_returning(&app.state.services.db)
            .await
            .expect("insert audit records");
    }
}

/// Ids of `records` newest first, as the trail orders them.
fn newest_first(records: &[&AuditRecord]) -> Vec<String> {
    let mut sorted: Vec<_> = records.iter().map(|r| (r.at, r.id.to_string())).collect();
    sorted.sort();
    sorted.reverse();
    sorted.into_iter().map(|(_, id)| id).collect()
}

fn ids(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("a connection: {conn}"))
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Every page of `auditEvents` with `filter`, `first` at a time.
async fn all_pages(
    app: &TestApp,
    token: &str,
    org_id: &str,
    filter: Value,
    first: i32,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1_000 {
        let conn = app
            .ok(
                token,
                EVENTS,
                json!({"o": org_id, "f": filter, "first": first, "after": after}),
                "auditEvents",
            )
            .await;
        out.extend(ids(&conn));
        if !conn["pageInfo"]["hasNextPage"]
            .as_bool()
            .expect("hasNextPage")
        {
            return out;
        }
        after = Some(
            conn["pageInfo"]["endCursor"]
                .as_str()
                .expect("cursor")
                .to_owned(),
        );
    }
    panic!("more than 1,000 pages");
}

/// The clinic's trail: reads, changes and denials of two patients by staff, a guardian, the
/// scheduler and a webhook, over ten days, with ties on `at`.
fn clinic_trail(c: &Clinic, other_patient: PatientId) -> Vec<AuditRecord> {
    let o = org(&c.org);
    let rex = pid(&c.patient);
    let vet = AuditActor::User(uid(&c.vet.id));
    let tech = AuditActor::User(uid(&c.tech.id));
    let mut out = Vec::new();
    for i in 0..30i64 {
        // Every third record shares its second with the previous one.
        let at = t0() + Duration::hours(8 * i - (i % 3 == 2) as i64 * 8);
        let (actor, entry) = match i % 6 {
            0 => (
                vet.clone(),
                AuditEntry::read(AuditEntity::Patient, rex)
                    .org(o)
                    .patient(rex),
            ),
            1 => (
                tech.clone(),
                AuditEntry::read(AuditEntity::Appointment, uuid::Uuid::now_v7())
                    .org(o)
                    .patient(rex),
            ),
            2 => (
                vet.clone(),
                AuditEntry::new(AuditAction::Update, AuditEntity::Case, uuid::Uuid::now_v7())
                    .org(o)
                    .patient(other_patient),
            ),
            3 => (
                AuditActor::User(uid(&c.outsider.id)),
                AuditEntry::read(AuditEntity::Patient, rex)
                    .org(o)
                    .patient(rex)
                    .denied(),
            ),
            4 => (
                AuditActor::Scheduler,
                AuditEntry::new(
                    AuditAction::Update,
                    AuditEntity::ChatSession,
                    uuid::Uuid::now_v7(),
                )
                .org(o),
            ),
            _ => (
                AuditActor::Webhook("stream"),
                AuditEntry::new(
                    AuditAction::Send,
                    AuditEntity::ChatMessage,
                    uuid::Uuid::now_v7(),
                )
                .org(o)
                .patient(other_patient),
            ),
        };
        out.push(record(at, actor, entry));
    }
    // Another organisation's record about the same patient id: never in this clinic's trail.
    out.push(record(
        t0(),
        vet,
        AuditEntry::read(AuditEntity::Patient, rex)
            .org(org(&c.other_org))
            .patient(rex),
    ));
    out
}

/// Which records a filter keeps.
type Keep<'a> = Box<dyn Fn(&AuditRecord) -> bool + 'a>;

async fn make_auditor(app: &TestApp, c: &Clinic, who: &str, auditor: bool) -> Value {
    app.gql(
        Some(&c.owner.token),
        UPDATE_MEMBER,
        json!({"o": c.org, "u": who, "i": {"auditor": auditor}}),
    )
    .await
}

#[tokio::test]
async fn an_auditor_sees_the_trail_with_every_filter() {
    // Recording off: the trail holds the fixture only, not this test's own reads.
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_AUDIT".into(), "false".into());
    })
    .await;
    let c = app.clinic("audq1").await;
    let other_patient = PatientId::new();
    let trail = clinic_trail(&c, other_patient);
    insert(&app, &trail).await;
    let granted = make_auditor(&app, &c, &c.tech.id, true).await;
    assert_eq!(
        granted["data"]["updateOrganizationMember"],
        json!({"active": true, "auditor": true}),
        "{granted}"
    );
    let ours: Vec<&AuditRecord> = trail
        .iter()
        .filter(|r| r.entry.org_id == Some(org(&c.org)))
        .collect();
    let from = t0() + Duration::days(3);
    let to = t0() + Duration::days(7);
    let cases: Vec<(Value, Keep)> = vec![
        (json!(null), Box::new(|_| true)),
        (
            json!({"patientId": c.patient}),
            Box::new(|r| r.entry.patient_id == Some(pid(&c.patient))),
        ),
        (
            json!({"actorId": c.vet.id}),
            Box::new(|r| r.actor == AuditActor::User(uid(&c.vet.id))),
        ),
        (
            json!({"actorId": "stream"}),
            Box::new(|r| r.actor == AuditActor::Webhook("stream")),
        ),
        (
            json!({"entityType": "CHAT_MESSAGE"}),
            Box::new(|r| r.entry.entity == AuditEntity::ChatMessage),
        ),
        (
            json!({"action": "UPDATE"}),
            Box::new(|r| r.entry.action == AuditAction::Update),
        ),
        (
            json!({"outcome": "DENIED"}),
            Box::new(|r| r.entry.outcome == caregraph::audit::AuditOutcome::Denied),
        ),
        (
            json!({"from": from, "to": to}),
            Box::new(|r| r.at >= from && r.at < to),
        ),
        (
            json!({"patientId": c.patient, "action": "READ", "outcome": "ALLOWED", "from": from}),
            Box::new(|r| {
                r.entry.patient_id == Some(pid(&c.patient))
                    && r.entry.action == AuditAction::Read
                    && r.entry.outcome == caregraph::audit::AuditOutcome::Allowed
                    && r.at >= from
            }),
        ),
    ];
    for (filter, keep) in &cases {
        let expected = newest_first(&ours.iter().copied().filter(|r| keep(r)).collect::<Vec<_>>());
        assert!(!expected.is_empty(), "the fixture covers {filter}");
        let got = all_pages(&app, &c.tech.token, &c.org, filter.clone(), 100).await;
        assert_eq!(got, expected, "auditor, filter {filter}");
        let by_owner = all_pages(&app, &c.owner.token, &c.org, filter.clone(), 100).await;
        assert_eq!(by_owner, expected, "owner, filter {filter}");
    }
    // The fields of one record, the acting user resolved now.
    let conn = app
        .ok(
            &c.tech.token,
            EVENTS,
            json!({"o": c.org, "f": {"actorId": c.vet.id, "action": "READ"}, "first": 1}),
            "auditEvents",
        )
        .await;
    let node = &conn["edges"][0]["node"];
    let newest = trail
        .iter()
        .filter(|r| {
            r.actor == AuditActor::User(uid(&c.vet.id))
                && r.entry.action == AuditAction::Read
                && r.entry.org_id == Some(org(&c.org))
        })
        .max_by_key(|r| (r.at, r.id))
        .expect("a vet read");
    assert_eq!(node["id"], newest.id.to_string());
    assert_eq!(node["actor"]["kind"], "USER");
    assert_eq!(node["actor"]["id"], c.vet.id);
    assert_eq!(node["actor"]["user"]["id"], c.vet.id);
    assert_eq!(node["organizationId"], c.org);
    assert_eq!(node["action"], "READ");
    assert_eq!(node["entityType"], "PATIENT");
    assert_eq!(node["entityId"], c.patient);
    assert_eq!(node["patientId"], c.patient);
    assert_eq!(node["outcome"], "ALLOWED");
    assert_eq!(node["requestId"], format!("req-{}", newest.at.timestamp()));
    assert_eq!(node["clientAddress"], "203.0.113.7");
    assert_eq!(node["operationName"], "PatientScreen");
    assert_eq!(
        DateTime::parse_from_rfc3339(node["at"].as_str().expect("at")).expect("rfc3339"),
        newest.at
    );
    let hook = app
        .ok(
            &c.tech.token,
            EVENTS,
            json!({"o": c.org, "f": {"actorId": "stream"}, "first": 1}),
            "auditEvents",
        )
        .await;
    assert_eq!(
        hook["edges"][0]["node"]["actor"],
        json!({"kind": "WEBHOOK", "id": "stream", "user": null})
    );
    // Bad input names its field.
    for (filter, field) in [
        (json!({"from": to, "to": from}), "filter.to"),
        (json!({"patientId": "nope"}), "filter.patientId"),
        (json!({"actorId": "x".repeat(65)}), "filter.actorId"),
    ] {
        let body = app
            .gql(
                Some(&c.tech.token),
                EVENTS,
                json!({"o": c.org, "f": filter}),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let body = app
        .gql(
            Some(&c.tech.token),
            EVENTS,
            json!({"o": c.org, "first": 101}),
        )
        .await;
    assert_eq!(
        code(&body),
        "BAD_USER_INPUT",
        "first is bounded like other connections"
    );
}

#[tokio::test]
async fn a_plain_staff_member_is_forbidden_a_non_member_not_found_and_only_owners_grant() {
    let app = TestApp::spawn().await;
    let c = app.clinic("audq2").await;
    let (admin_id, admin_token) = app
        .member(&c.owner.token, &c.org, "admin@audq2.example", "ADMIN")
        .await;
    for token in [&c.vet.token, &c.tech.token, &admin_token] {
        let body = app.gql(Some(token), EVENTS, json!({"o": c.org})).await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
        let body = app
            .gql(Some(token), EXPORT, json!({"o": c.org, "fmt": "CSV"}))
            .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }
    for token in [&c.outsider.token, &c.stranger.token, &c.client.token] {
        let body = app.gql(Some(token), EVENTS, json!({"o": c.org})).await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
        let body = app
            .gql(Some(token), EXPORT, json!({"o": c.org, "fmt": "NDJSON"}))
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
    }
    let body = app.gql(None, EVENTS, json!({"o": c.org})).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    // An ADMIN may not grant the capability, not even to themself.
    for who in [&c.tech.id, &admin_id] {
        let body = app
            .gql(
                Some(&admin_token),
                UPDATE_MEMBER,
                json!({"o": c.org, "u": who, "i": {"auditor": true}}),
            )
            .await;
        assert_eq!(code(&body), "FORBIDDEN", "{body}");
    }
    let list = app
        .ok(&c.owner.token, "query($o: ID!) { colleagues(orgId: $o, first: 50) { edges { node { user { id } role auditor } } } }", json!({"o": c.org}), "colleagues")
        .await;
    for edge in list["edges"].as_array().expect("edges") {
        let is_owner = edge["node"]["role"] == "OWNER";
        assert_eq!(
            edge["node"]["auditor"], is_owner,
            "only the OWNER is an auditor yet: {edge}"
        );
    }
    // Granted, the tech reads; deactivated, they lose it in effect (and the membership too).
    make_auditor(&app, &c, &c.tech.id, true).await;
    app.ok(&c.tech.token, EVENTS, json!({"o": c.org}), "auditEvents")
        .await;
    let off = app
        .gql(
            Some(&c.owner.token),
            UPDATE_MEMBER,
            json!({"o": c.org, "u": c.tech.id, "i": {"active": false}}),
        )
        .await;
    assert_eq!(
        off["data"]["updateOrganizationMember"],
        json!({"active": false, "auditor": false}),
        "{off}"
    );
    let body = app
        .gql(Some(&c.tech.token), EVENTS, json!({"o": c.org}))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    // Reactivated, the flag is still set; withdrawn, FORBIDDEN again.
    app.gql(
        Some(&c.owner.token),
        UPDATE_MEMBER,
        json!({"o": c.org, "u": c.tech.id, "i": {"active": true}}),
    )
    .await;
    app.ok(&c.tech.token, EVENTS, json!({"o": c.org}), "auditEvents")
        .await;
    let withdrawn = make_auditor(&app, &c, &c.tech.id, false).await;
    assert_eq!(
        withdrawn["data"]["updateOrganizationMember"]["auditor"], false,
        "{withdrawn}"
    );
    let body = app
        .gql(Some(&c.tech.token), EVENTS, json!({"o": c.org}))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
}

#[tokio::test]
async fn pagination_across_pages_is_complete_and_stable() {
    // Recording off: the trail holds the fixture only, not this test's own reads.
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_AUDIT".into(), "false".into());
    })
    .await;
    let c = app.clinic("audq3").await;
    let o = org(&c.org);
    let rex = pid(&c.patient);
    // 47 records, in groups of four sharing one `at` (the id breaks the tie).
    let records: Vec<AuditRecord> = (0..47i64)
        .map(|i| {
            record(
                t0() + Duration::minutes(i / 4),
                AuditActor::User(uid(&c.vet.id)),
                AuditEntry::read(AuditEntity::Patient, rex)
                    .org(o)
                    .patient(rex),
            )
        })
        .collect();
    insert(&app, &records).await;
    let expected = newest_first(&records.iter().collect::<Vec<_>>());
    let filter = json!({"patientId": c.patient});
    let first = app
        .ok(
            &c.owner.token,
            EVENTS,
            json!({"o": c.org, "f": filter, "first": 10}),
            "auditEvents",
        )
        .await;
    assert_eq!(first["totalCount"], 47);
    assert_eq!(ids(&first), expected[..10]);
    // Newer records arriving meanwhile neither shift nor repeat the pages that follow.
    let newer: Vec<AuditRecord> = (0..5)
        .map(|_| {
            record(
                t0() + Duration::days(1),
                AuditActor::User(uid(&c.tech.id)),
                AuditEntry::read(AuditEntity::Patient, rex)
                    .org(o)
                    .patient(rex),
            )
        })
        .collect();
    insert(&app, &newer).await;
    let mut got = ids(&first);
    let mut after = first["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    let mut pages = 1;
    loop {
        let page = app
            .ok(
                &c.owner.token,
                EVENTS,
                json!({"o": c.org, "f": filter, "first": 10, "after": after}),
                "auditEvents",
            )
            .await;
        got.extend(ids(&page));
        pages += 1;
        if !page["pageInfo"]["hasNextPage"].as_bool().expect("flag") {
            break;
        }
        after = page["pageInfo"]["endCursor"]
            .as_str()
            .expect("cursor")
            .to_owned();
        assert!(pages < 10, "too many pages");
    }
    assert_eq!(pages, 5);
    assert_eq!(got, expected, "every record once, in order");
    // Walking again from the start shows the newer ones first, then the same sequence.
    let again = all_pages(&app, &c.owner.token, &c.org, filter, 7).await;
    let mut all: Vec<&AuditRecord> = records.iter().collect();
    all.extend(newer.iter());
    assert_eq!(again, newest_first(&all));
    let body = app
        .gql(
            Some(&c.owner.token),
            EVENTS,
            json!({"o": c.org, "after": "garbage"}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

/// Downloads a link's body (status, content type, body).
async fn download(app: &TestApp, url: &str) -> (u16, String, String) {
    let res = app.http.get(app.url(url)).send().await.expect("download");
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ctype, res.text().await.expect("body"))
}

async fn export_url(
    app: &TestApp,
    token: &str,
    org_id: &str,
    filter: Value,
    format: &str,
) -> String {
    let link = app
        .ok(
            token,
            EXPORT,
            json!({"o": org_id, "f": filter, "fmt": format}),
            "exportAuditEvents",
        )
        .await;
    link["url"].as_str().expect("url").to_owned()
}

/// Parses RFC 4180 CSV (quoted fields with doubled quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, _) => field.push(ch),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, _) => field.push(ch),
        }
    }
    assert!(
        field.is_empty() && row.is_empty(),
        "the body ends with a line break"
    );
    rows
}

async fn export_rows(app: &TestApp, o: &str) -> Vec<audit_event::Model> {
    audit_event::Entity::find()
        .filter(audit_event::Column::OrgId.eq(o))
        .filter(audit_event::Column::Action.eq("EXPORT"))
        .all(&app.state.services.db)
        .await
        .expect("export records")
}

#[tokio::test]
async fn the_export_returns_exactly_the_filtered_rows_in_both_formats_and_is_recorded() {
    let app = TestApp::spawn().await;
    let c = app.clinic("audq4").await;
    settle(&app).await;
    let mut trail = clinic_trail(&c, PatientId::new());
    // A request id that needs quoting, and one that looks like a spreadsheet formula.
    trail[0].request_id = Some("a,\"b\"".into());
    trail[6].request_id = Some("=cmd()".into());
    insert(&app, &trail).await;
    let o = org(&c.org);
    let filter = json!({"patientId": c.patient, "outcome": "ALLOWED"});
    let keep = |r: &&AuditRecord| {
        r.entry.org_id == Some(o)
            && r.entry.patient_id == Some(pid(&c.patient))
            && r.entry.outcome == caregraph::audit::AuditOutcome::Allowed
    };
    let expected_records: Vec<&AuditRecord> = trail.iter().filter(keep).collect();
    let expected = newest_first(&expected_records);
    assert!(expected.len() >= 8);

    let url = export_url(&app, &c.owner.token, &c.org, filter.clone(), "CSV").await;
    assert!(url.starts_with("/exports/audit/"), "{url}");
    let (status, ctype, body) = download(&app, &url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ctype, "text/csv; charset=utf-8");
    let rows = parse_csv(&body);
    assert_eq!(
        rows[0],
        "id,at,actor_kind,actor_id,organization_id,action,entity_type,entity_id,patient_id,outcome,request_id,client_address,operation_name"
            .split(',')
            .collect::<Vec<_>>()
    );
    let got: Vec<String> = rows[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(got, expected);
    for row in &rows[1..] {
        let r = expected_records
            .iter()
            .find(|r| r.id.to_string() == row[0])
            .expect("known");
        assert_eq!(DateTime::parse_from_rfc3339(&row[1]).expect("at"), r.at);
        assert_eq!(row[4], c.org);
        assert_eq!(row[8], c.patient);
        assert_eq!(row[9], "ALLOWED");
        let request_id = r.request_id.as_deref().unwrap_or_default().to_owned();
        let shown = if request_id.starts_with('=') {
            format!("'{request_id}")
        } else {
            request_id
        };
        assert_eq!(row[10], shown, "quoted, formulas defused");
    }
    assert!(
        body.contains("\"a,\"\"b\"\"\""),
        "RFC 4180 quoting in the raw body"
    );

    let body = app
        .gql(
            Some(&c.tech.token),
            EXPORT,
            json!({"o": c.org, "fmt": "NDJSON"}),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "the tech is no auditor yet");
    make_auditor(&app, &c, &c.tech.id, true).await;
    let url = export_url(&app, &c.tech.token, &c.org, filter, "NDJSON").await;
    let (status, ctype, body) = download(&app, &url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ctype, "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["id"].as_str().expect("id").to_owned())
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(lines[0]["organizationId"], c.org);
    assert_eq!(lines[0]["patientId"], c.patient);
    assert_eq!(lines[0]["outcome"], "ALLOWED");
    assert!(lines.iter().all(|l| l["actorKind"] == "USER"));

    // Each download left one EXPORT record by the auditor who asked for it.
    let exports = export_rows(&app, &c.org).await;
    let mut actors: Vec<_> = exports
        .iter()
        .map(|e| e.actor_id.clone().expect("actor"))
        .collect();
    actors.sort();
    let mut want = vec![c.owner.id.clone(), c.tech.id.clone()];
    want.sort();
    assert_eq!(actors, want);
    for e in &exports {
        assert_eq!(
            (
                e.entity_type.as_str(),
                e.outcome.as_str(),
                e.actor_kind.as_str()
            ),
            ("AUDIT_TRAIL", "ALLOWED", "USER")
        );
        assert_eq!(e.entity_id.as_deref(), Some(c.org.as_str()));
        assert_eq!(e.client_address.as_deref(), Some("127.0.0.1"));
    }
}

#[tokio::test]
async fn an_export_link_is_single_use_expires_and_a_wrong_token_is_404() {
    let clock = caregraph::clock::ManualClock::new(Utc::now());
    let app = TestApp::spawn_with_clock(clock.clone(), |_| {}).await;
    let c = app.clinic("audq5").await;
    insert(&app, &clinic_trail(&c, PatientId::new())).await;
    let link = app
        .ok(
            &c.owner.token,
            EXPORT,
            json!({"o": c.org, "fmt": "CSV"}),
            "exportAuditEvents",
        )
        .await;
    let expires =
        DateTime::parse_from_rfc3339(link["expiresAt"].as_str().expect("expiresAt")).expect("time");
    let lifetime = expires.with_timezone(&Utc) - caregraph::clock::Clock::now(&clock);
    assert!(
        lifetime <= Duration::minutes(5) && lifetime > Duration::minutes(4),
        "{lifetime}"
    );
    let url = link["url"].as_str().expect("url");
    let (status, _, _) = download(&app, url).await;
    assert_eq!(status, 200);
    let (status, _, body) = download(&app, url).await;
    assert_eq!(status, 404, "single use: {body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );

    let late = export_url(&app, &c.owner.token, &c.org, json!(null), "NDJSON").await;
    clock.advance(Duration::minutes(5) + Duration::seconds(1));
    let (status, _, _) = download(&app, &late).await;
    assert_eq!(status, 404, "expired");

    let fresh = export_url(&app, &c.owner.token, &c.org, json!(null), "CSV").await;
    let token = fresh.trim_start_matches("/exports/audit/");
    let (body, tag) = token.split_once('.').expect("two parts");
    let mut flipped = tag.to_owned();
    let last = if flipped.ends_with('A') { 'B' } else { 'A' };
    flipped.pop();
    flipped.push(last);
    for wrong in [
        format!("/exports/audit/{body}.{flipped}"),
        format!("/exports/audit/{body}"),
        "/exports/audit/not-a-token".to_owned(),
        format!("/exports/audit/{}", "x".repeat(5_000)),
    ] {
        let (status, _, _) = download(&app, &wrong).await;
        assert_eq!(status, 404, "{wrong}");
    }
    // A link stops working when its auditor stops being one.
    make_auditor(&app, &c, &c.tech.id, true).await;
    let techs = export_url(&app, &c.tech.token, &c.org, json!(null), "CSV").await;
    make_auditor(&app, &c, &c.tech.id, false).await;
    let (status, _, _) = download(&app, &techs).await;
    assert_eq!(status, 403);
    // The untouched fresh link still works once.
    let (status, _, _) = download(&app, &fresh).await;
    assert_eq!(status, 200);
}

/// Stores `total` READ records of the clinic's patient by its vet, 7 s apart, 10,000 per insert.
async fn seed_reads(app: &TestApp, c: &Clinic, total: usize) {
    let o = org(&c.org);
    let rex = pid(&c.patient);
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..total {
        batch.push(record(
            t0() + Duration::seconds(i as i64 * 7),
            AuditActor::User(uid(&c.vet.id)),
            AuditEntry::read(AuditEntity::Patient, rex)
                .org(o)
                .patient(rex),
        ));
        if batch.len() == 10_000 {
            insert(app, &batch).await;
            batch.clear();
        }
    }
    insert(app, &batch).await;
}

#[tokio::test]
async fn a_download_that_outlasts_the_idle_timeout_arrives_whole() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_HTTP_IDLE_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let c = app.clinic("audq9").await;
    settle(&app).await;
    let total = 50_000usize;
    seed_reads(&app, &c, total).await;
    let url = export_url(&app, &c.owner.token, &c.org, json!(null), "CSV").await;
    let mut res = app.http.get(app.url(&url)).send().await.expect("download");
    assert_eq!(res.status().as_u16(), 200);
    // A slow reader: for three idle timeouts the server can send only as fast as this reads
    // (about 10 MB do not fit in the sockets' buffers), then the rest is read at once.
    let started = std::time::Instant::now();
    let mut rows = 0usize;
    while let Some(chunk) = res.chunk().await.expect("the body is not cut short") {
        rows += chunk.iter().filter(|b| **b == b'\n').count();
        if started.elapsed() < std::time::Duration::from_secs(3) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert!(started.elapsed() > std::time::Duration::from_secs(3));
    assert_eq!(
        rows,
        1 + total + 1,
        "the header, every record and the export's record"
    );
}

#[tokio::test]
async fn an_export_of_200000_records_streams_in_chunks_of_at_most_1000_records() {
    let app = TestApp::spawn().await;
    let c = app.clinic("audq6").await;
    settle(&app).await;
    let total = 200_000usize;
    seed_reads(&app, &c, total).await;
    // The service's stream yields one chunk of at most 1,000 records at a time.
    let url = export_url(&app, &c.owner.token, &c.org, json!(null), "NDJSON").await;
    let grant = app
        .state
        .services
        .audit_trail
        .open_download(
            url.trim_start_matches("/exports/audit/"),
            Default::default(),
        )
        .await
        .expect("a valid link");
    let mut chunks = 0;
    let mut lines = 0;
    let mut stream = std::pin::pin!(app.state.services.audit_trail.download(grant));
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        let chunk = chunk.expect("chunk");
        let n = chunk.iter().filter(|b| **b == b'\n').count();
        assert!(
            n <= caregraph::services::audit_trail::EXPORT_CHUNK as usize,
            "{n} records in one chunk"
        );
        lines += n;
        chunks += 1;
    }
    // Every record, and the record of this export itself (written before the first byte).
    assert_eq!(lines, total + 1);
    assert_eq!(
        chunks,
        total / 1_000 + 1,
        "200 full chunks and the last one"
    );

    // Over HTTP: every row arrives.
    let url = export_url(&app, &c.owner.token, &c.org, json!(null), "CSV").await;
    let mut res = app.http.get(app.url(&url)).send().await.expect("download");
    assert_eq!(res.status().as_u16(), 200);
    let mut bytes = 0u64;
    let mut rows = 0usize;
    while let Some(chunk) = res.chunk().await.expect("chunk") {
        bytes += chunk.len() as u64;
        rows += chunk.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(
        rows,
        1 + total + 2,
        "the header, every record and the two exports' records"
    );
    assert!(bytes > 40_000_000, "{bytes}");
}

#[tokio::test]
async fn the_access_log_shows_staff_reads_with_names_resolved_now() {
    let app = TestApp::spawn().await;
    let c = app.clinic("audq7").await;
    settle(&app).await;
    let o = org(&c.org);
    let rex = pid(&c.patient);
    let read = || {
        AuditEntry::read(AuditEntity::Patient, rex)
            .org(o)
            .patient(rex)
    };
    let vet = AuditActor::User(uid(&c.vet.id));
    let tech = AuditActor::User(uid(&c.tech.id));
    let shown = vec![
        record(t0(), vet.clone(), read()),
        record(
            t0() + Duration::hours(1),
            tech.clone(),
            AuditEntry::read(AuditEntity::Appointment, "a1")
                .org(o)
                .patient(rex),
        ),
        record(t0() + Duration::hours(2), vet.clone(), read()),
    ];
    let hidden = vec![
        // The guardian's own read, a denied probe, a change, a job, another patient, a read
        // attributed to an organisation the reader is no member of.
        record(
            t0() + Duration::hours(3),
            AuditActor::User(uid(&c.client.id)),
            read(),
        ),
        record(
            t0() + Duration::hours(4),
            AuditActor::User(uid(&c.outsider.id)),
            read().denied(),
        ),
        record(
            t0() + Duration::hours(5),
            vet.clone(),
            AuditEntry::new(AuditAction::Update, AuditEntity::Patient, rex)
                .org(o)
                .patient(rex),
        ),
        record(t0() + Duration::hours(6), AuditActor::System, read()),
        record(
            t0() + Duration::hours(7),
            vet.clone(),
            AuditEntry::read(AuditEntity::Patient, "p")
                .org(o)
                .patient(PatientId::new()),
        ),
        record(
            t0() + Duration::hours(8),
            AuditActor::User(uid(&c.outsider.id)),
            AuditEntry::read(AuditEntity::Patient, rex)
                .org(o)
                .patient(rex),
        ),
    ];
    insert(&app, &shown).await;
    insert(&app, &hidden).await;
    let log = app
        .ok(
            &c.client.token,
            ACCESS_LOG,
            json!({"p": c.patient, "first": 2}),
            "accessLog",
        )
        .await;
    assert_eq!(log["totalCount"], 3);
    assert_eq!(log["pageInfo"]["hasNextPage"], true);
    let node = &log["edges"][0]["node"];
    assert_eq!(
        node["reader"],
        json!({"id": c.vet.id, "displayName": "Given vet"})
    );
    assert_eq!(
        node["organization"],
        json!({"id": c.org, "name": "audq7 Clinic"})
    );
    assert_eq!(node["action"], "READ");
    assert_eq!(
        DateTime::parse_from_rfc3339(node["at"].as_str().expect("at")).expect("time"),
        t0() + Duration::hours(2)
    );
    assert_eq!(log["edges"][1]["node"]["reader"]["id"], c.tech.id);
    let rest = app
        .ok(
            &c.client.token,
            ACCESS_LOG,
            json!({"p": c.patient, "first": 2, "after": log["pageInfo"]["endCursor"]}),
            "accessLog",
        )
        .await;
    assert_eq!(rest["edges"].as_array().expect("edges").len(), 1);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    // Renamed, the vet shows under the new name: names are resolved now, never stored.
    user::Entity::update_many()
        .col_expr(user::Column::DisplayName, Expr::value("Dr. Renamed"))
        .filter(user::Column::Id.eq(c.vet.id.as_str()))
        .exec(&app.state.services.db)
        .await
        .expect("rename");
    let again = app
        .ok(
            &c.co_guardian.token,
            ACCESS_LOG,
            json!({"p": c.patient}),
            "accessLog",
        )
        .await;
    let names: Vec<&str> = again["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["reader"]["displayName"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["Dr. Renamed", "Given tech", "Dr. Renamed"]);
    // Staff of the patient's organisation see it too; a stranger and another clinic do not.
    app.ok(
        &c.tech.token,
        ACCESS_LOG,
        json!({"p": c.patient}),
        "accessLog",
    )
    .await;
    for token in [&c.stranger.token, &c.outsider.token] {
        let body = app
            .gql(Some(token), ACCESS_LOG, json!({"p": c.patient}))
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
    }
    let body = app
        .gql(
            Some(&c.client.token),
            ACCESS_LOG,
            json!({"p": PatientId::new().to_string()}),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
}

#[tokio::test]
async fn reading_the_trail_and_the_access_log_is_recorded_in_the_viewers_scope() {
    let app = TestApp::spawn().await;
    let c = app.clinic("audq8").await;
    let services = &app.state.services;
    let viewer_of = |id: &str| {
        let id = uid(id);
        async move {
            let user = caregraph::db::users::find(&services.db, id)
                .await
                .expect("find")
                .expect("user");
            let scope = AuditScope::new(AuditActor::User(id), Some("r-1".into()), None);
            Viewer::signed_in(user, Utc::now() + Duration::hours(1), None).with_audit(scope)
        }
    };
    let owner = viewer_of(&c.owner.id).await;
    let page = PageRequest::new(Some(5), None).expect("page");
    services
        .audit_trail
        .events(&owner, org(&c.org), Default::default(), &page)
        .await
        .expect("events");
    let taken = owner.audit.take();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].entry,
        AuditEntry::read(AuditEntity::AuditTrail, org(&c.org)).org(org(&c.org))
    );
    let client = viewer_of(&c.client.id).await;
    services
        .audit_trail
        .access_log(&client, pid(&c.patient), &page)
        .await
        .expect("access log");
    let taken = client.audit.take();
    assert_eq!(taken.len(), 1);
    assert_eq!(
        taken[0].entry,
        AuditEntry::read(AuditEntity::AuditTrail, pid(&c.patient))
            .org(org(&c.org))
            .patient(pid(&c.patient))
    );
    // A refused caller reads nothing, so nothing is recorded as read here (denials are the
    // recording half's).
    let vet = viewer_of(&c.vet.id).await;
    assert!(
        services
            .audit_trail
            .events(&vet, org(&c.org), Default::default(), &page)
            .await
            .is_err()
    );
    assert!(
        vet.audit
            .take()
            .iter()
            .all(|r| r.entry.outcome != caregraph::audit::AuditOutcome::Allowed)
    );
}

/// Enabled by the lead once the recording half (the batched writer) is merged: a query of the
/// trail over HTTP leaves a READ of AUDIT_TRAIL in the table.
#[tokio::test]
async fn an_audit_events_query_over_http_leaves_a_read_record_in_the_table() {
    let app = TestApp::spawn().await;
    let c = app.clinic("audq9").await;
    app.ok(&c.owner.token, EVENTS, json!({"o": c.org}), "auditEvents")
        .await;
    assert!(
        app.state.services.audit.written().await,
        "the audit queue drains"
    );
    let found = audit_event::Entity::find()
        .filter(audit_event::Column::EntityType.eq("AUDIT_TRAIL"))
        .filter(audit_event::Column::Action.eq("READ"))
        .filter(audit_event::Column::ActorId.eq(c.owner.id.as_str()))
        .all(&app.state.services.db)
        .await
        .expect("records");
    assert_eq!(found.len(), 1, "one READ of the trail");
    assert_eq!(found[0].org_id.as_deref(), Some(c.org.as_str()));
}
