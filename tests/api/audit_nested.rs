//! Nested reads of patient-linked rows are recorded like the rest: one READ per care-team
//! member, case participant and appointment support staff member handed out, and an
//! appointment's `meeting` as a JOIN of the MEETING when it hands out the caller's link (without
//! the link it is part of the appointment's READ).

use caregraph::db::entities::audit_event;
use chrono::Utc;
use sea_orm::{EntityTrait, QueryOrder};
use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp};

const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id } }";

/// Runs `query` as `token` under `request_id` (no errors allowed): the body and the request's
/// records.
async fn step(
    app: &TestApp,
    token: &str,
    request_id: &str,
    query: &str,
    vars: Value,
) -> (Value, Vec<audit_event::Model>) {
    let body: Value = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({ "query": query, "variables": vars }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(body.get("errors").is_none(), "{request_id}: {body}");
    assert!(app.state.services.audit.written().await, "the queue drains");
    let rows = audit_event::Entity::find()
        .order_by_asc(audit_event::Column::At)
        .all(&app.state.services.db)
        .await
        .expect("records")
        .into_iter()
        .filter(|r| r.request_id.as_deref() == Some(request_id))
        .collect();
    (body, rows)
}

/// The entity ids of `rows`' records of `entity`, sorted, after checking each is an allowed
/// READ of the clinic's patient.
fn reads_of(rows: &[audit_event::Model], entity: &str, c: &Clinic) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .filter(|r| r.entity_type == entity)
        .map(|r| {
            assert_eq!(
                (r.action.as_str(), r.outcome.as_str()),
                ("READ", "ALLOWED"),
                "{r:?}"
            );
            assert_eq!(r.org_id.as_deref(), Some(c.org.as_str()));
            assert_eq!(r.patient_id.as_deref(), Some(c.patient.as_str()));
            r.entity_id.clone().expect("entity id")
        })
        .collect();
    ids.sort();
    ids
}

/// The ids at `path` (an array of objects) in `value`, sorted.
fn ids_at(value: &Value, pick: impl Fn(&Value) -> &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("a list: {value}"))
        .iter()
        .map(|v| pick(v).as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

async fn schedule(app: &TestApp, c: &Clinic, session: &str, starts_in_minutes: i64) -> String {
    let body = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": {
                "patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
                "supportStaffIds": [c.tech.id],
                "startsAt": (Utc::now() + chrono::Duration::minutes(starts_in_minutes)).to_rfc3339(),
                "durationMinutes": 30, "sessionType": session
            }}),
            "scheduleAppointment",
        )
        .await;
    body["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn nested_members_participants_and_support_staff_record_one_read_per_row() {
    let app = TestApp::spawn().await;
    let c = app.clinic("anrows").await;
    let team = app
        .ok(
            &c.owner.token,
            "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"T\", memberIds: $m}) { id } }",
            json!({"p": c.patient, "m": [c.vet.id, c.tech.id]}),
            "createCareTeam",
        )
        .await["id"]
        .as_str()
        .expect("team")
        .to_owned();
    let (body, rows) = step(
        &app,
        &c.vet.token,
        "n-team",
        "query($id: ID!) { careTeam(id: $id) { id members { id } } }",
        json!({"id": team}),
    )
    .await;
    let members = ids_at(&body["data"]["careTeam"]["members"], |m| &m["id"]);
    assert!(members.len() >= 2, "{members:?}");
    assert_eq!(reads_of(&rows, "CARE_TEAM_MEMBER", &c), members);

    let case = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $p: ID, $v: ID!) { createCase(orgId: $o, input: {reference: \"N-1\", title: \"Limp\", patientId: $p, participants: [{userId: $v, role: PRACTITIONER}]}) { id } }",
            json!({"o": c.org, "p": c.patient, "v": c.vet.id}),
            "createCase",
        )
        .await["id"]
        .as_str()
        .expect("case")
        .to_owned();
    let (body, rows) = step(
        &app,
        &c.vet.token,
        "n-case",
        "query($id: ID!) { case(id: $id) { id participants { user { id } } } }",
        json!({"id": case}),
    )
    .await;
    let participants = ids_at(&body["data"]["case"]["participants"], |p| &p["user"]["id"]);
    assert!(participants.contains(&c.vet.id), "{participants:?}");
    assert_eq!(reads_of(&rows, "CASE_PARTICIPANT", &c), participants);

    let appointment = schedule(&app, &c, "IN_PERSON", 120).await;
    let (body, rows) = step(
        &app,
        &c.vet.token,
        "n-staff",
        "query($id: ID!) { appointment(id: $id) { id supportStaff { id } } }",
        json!({"id": appointment}),
    )
    .await;
    let staff = ids_at(&body["data"]["appointment"]["supportStaff"], |u| &u["id"]);
    assert_eq!(staff, vec![c.tech.id.clone()]);
    assert_eq!(reads_of(&rows, "SUPPORT_STAFF", &c), staff);
    // Not asked for, not recorded.
    let (_, rows) = step(
        &app,
        &c.vet.token,
        "n-no-staff",
        "query($id: ID!) { appointment(id: $id) { id } }",
        json!({"id": appointment}),
    )
    .await;
    assert!(reads_of(&rows, "SUPPORT_STAFF", &c).is_empty(), "{rows:?}");
}

#[tokio::test]
async fn an_appointments_meeting_is_the_appointments_read_until_it_hands_out_the_callers_link_then_a_join()
 {
    let app = TestApp::spawn().await;
    let c = app.clinic("anmeet").await;
    const MEETING: &str =
        "query($id: ID!) { appointment(id: $id) { id meeting { state joinUrl } } }";
    let later = schedule(&app, &c, "TELECONFERENCE", 240).await;
    let (body, rows) = step(&app, &c.vet.token, "n-later", MEETING, json!({"id": later})).await;
    assert!(
        body["data"]["appointment"]["meeting"]["joinUrl"].is_null(),
        "{body}"
    );
    assert!(rows.iter().all(|r| r.entity_type != "MEETING"), "{rows:?}");
    let appointment: Vec<_> = rows
        .iter()
        .filter(|r| r.entity_type == "APPOINTMENT")
        .collect();
    assert_eq!(appointment.len(), 1, "{rows:?}");
    assert_eq!(
        (
            appointment[0].action.as_str(),
            appointment[0].entity_id.as_deref()
        ),
        ("READ", Some(later.as_str()))
    );
    assert_eq!(
        appointment[0].patient_id.as_deref(),
        Some(c.patient.as_str())
    );
    assert_eq!(appointment[0].org_id.as_deref(), Some(c.org.as_str()));

    let now = schedule(&app, &c, "TELECONFERENCE", 0).await;
    let (body, rows) = step(&app, &c.vet.token, "n-now", MEETING, json!({"id": now})).await;
    assert!(
        body["data"]["appointment"]["meeting"]["joinUrl"].is_string(),
        "{body}"
    );
    let meeting: Vec<_> = rows.iter().filter(|r| r.entity_type == "MEETING").collect();
    assert_eq!(meeting.len(), 1, "{rows:?}");
    assert_eq!(
        (meeting[0].action.as_str(), meeting[0].entity_id.as_deref()),
        ("JOIN", Some(now.as_str()))
    );
    assert_eq!(meeting[0].patient_id.as_deref(), Some(c.patient.as_str()));
    assert_eq!(meeting[0].org_id.as_deref(), Some(c.org.as_str()));

    // An in-person appointment has no meeting, so nothing of it is recorded.
    let in_person = schedule(&app, &c, "IN_PERSON", 60).await;
    let (_, rows) = step(
        &app,
        &c.vet.token,
        "n-none",
        MEETING,
        json!({"id": in_person}),
    )
    .await;
    assert!(rows.iter().all(|r| r.entity_type != "MEETING"), "{rows:?}");
}
