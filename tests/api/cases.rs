//! Cases (claims, encounters): create-or-get on `(orgId, reference)`, participants
//! and their roles, closing, the newest-first list with cursors, lookup by reference, and the
//! authorization matrix (non-members learn nothing: NOT_FOUND; anonymous is UNAUTHENTICATED),
//! each refusal changing nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp, code};

const CASE_FIELDS: &str =
    "id reference kind title status closedAt patient { id } participants { user { id } role }";

fn create_q() -> String {
    format!(
        "mutation($o: ID!, $i: CreateCaseInput!) {{ createCase(orgId: $o, input: $i) {{ {CASE_FIELDS} }} }}"
    )
}

fn add_q() -> String {
    format!(
        "mutation($c: ID!, $i: CaseParticipantInput!) {{ addCaseParticipant(caseId: $c, input: $i) {{ {CASE_FIELDS} }} }}"
    )
}

fn remove_q() -> String {
    format!(
        "mutation($c: ID!, $u: ID!) {{ removeCaseParticipant(caseId: $c, userId: $u) {{ {CASE_FIELDS} }} }}"
    )
}

fn close_q() -> String {
    format!("mutation($c: ID!) {{ closeCase(caseId: $c) {{ {CASE_FIELDS} }} }}")
}

fn case_q() -> String {
    format!("query($c: ID!) {{ case(id: $c) {{ {CASE_FIELDS} }} }}")
}

const BY_REF: &str = "query($o: ID!, $r: String!) { caseByReference(orgId: $o, reference: $r) { id reference title } }";
const LIST: &str = "query($o: ID!, $s: CaseStatus, $f: Int, $a: String) {
    cases(orgId: $o, status: $s, first: $f, after: $a) {
      totalCount
      pageInfo { hasNextPage hasPreviousPage endCursor }
      edges { cursor node { id reference status } }
    }
  }";

/// Creates a case as `token` and returns it, panicking on errors.
async fn create(app: &TestApp, token: &str, org: &str, input: Value) -> Value {
    app.ok(
        token,
        &create_q(),
        json!({"o": org, "i": input}),
        "createCase",
    )
    .await
}

/// Reads a case as `token`, panicking on errors.
async fn read(app: &TestApp, token: &str, id: &str) -> Value {
    app.ok(token, &case_q(), json!({"c": id}), "case").await
}

/// The organisation's cases as `token`, panicking on errors.
async fn list(app: &TestApp, token: &str, vars: Value) -> Value {
    app.ok(token, LIST, vars, "cases").await
}

/// A case's participants as sorted `(user id, role)` pairs.
fn roles(case: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = case["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("participants in {case}"))
        .iter()
        .map(|p| {
            (
                p["user"]["id"].as_str().expect("participant id").to_owned(),
                p["role"].as_str().expect("participant role").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Sorted `(user id, role)` pairs from literals.
fn expected(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .map(|(u, r)| ((*u).to_owned(), (*r).to_owned()))
        .collect();
    out.sort();
    out
}

/// The references of a page of cases, in order.
fn refs(conn: &Value) -> Vec<String> {
    conn["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("edges in {conn}"))
        .iter()
        .map(|e| {
            e["node"]["reference"]
                .as_str()
                .expect("reference")
                .to_owned()
        })
        .collect()
}

fn id_of(case: &Value) -> String {
    case["id"]
        .as_str()
        .unwrap_or_else(|| panic!("case id in {case}"))
        .to_owned()
}

fn field(body: &Value) -> &Value {
    &body["errors"][0]["extensions"]["field"]
}

async fn total(app: &TestApp, c: &Clinic) -> i64 {
    list(app, &c.owner.token, json!({"o": c.org})).await["totalCount"]
        .as_i64()
        .expect("totalCount")
}

#[tokio::test]
async fn create_case_returns_the_existing_case_for_a_known_reference_and_adds_only_missing_participants()
 {
    let app = TestApp::spawn().await;
    let c = app.clinic("cget").await;

    let first = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({
            "reference": "  CLM-1 ", "kind": "CLAIM", "title": "  Hip dysplasia claim ",
            "patientId": c.patient,
            "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]
        }),
    )
    .await;
    let id = id_of(&first);
    assert_eq!(first["reference"], "CLM-1", "{first}");
    assert_eq!(first["title"], "Hip dysplasia claim");
    assert_eq!(first["kind"], "CLAIM");
    assert_eq!(first["status"], "OPEN");
    assert_eq!(first["closedAt"], Value::Null);
    assert_eq!(first["patient"]["id"], c.patient.as_str());
    assert_eq!(roles(&first), expected(&[(&c.vet.id, "PRACTITIONER")]));

    // The same reference (by another staff member, differently padded) returns the same case:
    // title and kind stay, the vet keeps PRACTITIONER, only the missing people are added.
    let second = create(
        &app,
        &c.tech.token,
        &c.org,
        json!({
            "reference": "CLM-1\t", "kind": "ENCOUNTER", "title": "Something else entirely",
            "participants": [
                {"userId": c.vet.id, "role": "ADMIN"},
                {"userId": c.client.id, "role": "PATIENT"},
                {"userId": c.owner.id, "role": "ADMIN"}
            ]
        }),
    )
    .await;
    assert_eq!(id_of(&second), id, "{second}");
    assert_eq!(second["reference"], "CLM-1");
    assert_eq!(second["title"], "Hip dysplasia claim");
    assert_eq!(second["kind"], "CLAIM");
    assert_eq!(second["patient"]["id"], c.patient.as_str());
    let all = expected(&[
        (&c.vet.id, "PRACTITIONER"),
        (&c.client.id, "PATIENT"),
        (&c.owner.id, "ADMIN"),
    ]);
    assert_eq!(roles(&second), all);

    // A third call without participants changes nothing; the stored case agrees.
    let third = create(
        &app,
        &c.vet.token,
        &c.org,
        json!({"reference": "CLM-1", "title": "Third"}),
    )
    .await;
    assert_eq!(id_of(&third), id);
    assert_eq!(roles(&third), all);
    let stored = read(&app, &c.owner.token, &id).await;
    assert_eq!(stored["title"], "Hip dysplasia claim");
    assert_eq!(stored["kind"], "CLAIM");
    assert_eq!(roles(&stored), all);
    assert_eq!(total(&app, &c).await, 1);

    // A different reference is a different case; the default kind is CASE.
    let other = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "CLM-2", "title": "Another"}),
    )
    .await;
    assert_ne!(id_of(&other), id);
    assert_eq!(other["kind"], "CASE");
    assert_eq!(other["patient"], Value::Null);
    assert_eq!(roles(&other), Vec::<(String, String)>::new());
    assert_eq!(total(&app, &c).await, 2);
}

#[tokio::test]
async fn concurrent_create_case_calls_with_one_new_reference_share_one_case() {
    let app = TestApp::spawn().await;
    let c = app.clinic("race").await;
    let query = create_q();
    for round in 0..5_i64 {
        let reference = format!("RACE-{round}");
        let a = json!({"o": c.org, "i": {
            "reference": reference, "title": "From A",
            "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]
        }});
        let b = json!({"o": c.org, "i": {
            "reference": reference, "title": "From B",
            "participants": [{"userId": c.client.id, "role": "PATIENT"}]
        }});
        let (left, right) = tokio::join!(
            app.gql(Some(&c.owner.token), &query, a),
            app.gql(Some(&c.vet.token), &query, b)
        );
        assert!(left.get("errors").is_none(), "round {round}, A: {left}");
        assert!(right.get("errors").is_none(), "round {round}, B: {right}");
        let id = id_of(&left["data"]["createCase"]);
        assert_eq!(
            id_of(&right["data"]["createCase"]),
            id,
            "round {round}: {left} / {right}"
        );
        assert_eq!(total(&app, &c).await, round + 1, "round {round}");

        // Whichever call won, both calls' participants are on the one case.
        let stored = read(&app, &c.owner.token, &id).await;
        assert_eq!(
            roles(&stored),
            expected(&[(&c.vet.id, "PRACTITIONER"), (&c.client.id, "PATIENT")]),
            "round {round}"
        );
        let title = stored["title"].as_str().expect("title");
        assert!(title == "From A" || title == "From B", "{stored}");
    }
}

#[tokio::test]
async fn staff_participants_must_be_active_members_and_a_patient_participant_a_member_or_a_guardian()
 {
    let app = TestApp::spawn().await;
    let c = app.clinic("parts").await;
    let unknown = uuid::Uuid::new_v4().to_string();

    let refused: [(&str, Value, &str); 8] = [
        (
            "a stranger as PATIENT (answered like an unknown user)",
            json!([{"userId": c.stranger.id, "role": "PATIENT"}]),
            "input.participants.0.userId",
        ),
        (
            "a member of another organisation as ADMIN",
            json!([{"userId": c.vet.id, "role": "PRACTITIONER"}, {"userId": c.outsider.id, "role": "ADMIN"}]),
            "input.participants.1.userId",
        ),
        (
            "a stranger as PRACTITIONER",
            json!([{"userId": c.stranger.id, "role": "PRACTITIONER"}]),
            "input.participants.0.userId",
        ),
        (
            "the client as ADMIN",
            json!([{"userId": c.client.id, "role": "PATIENT"}, {"userId": c.client.id, "role": "ADMIN"}]),
            "input.participants.1.userId",
        ),
        (
            "an unknown user as PATIENT",
            json!([{"userId": c.client.id, "role": "PATIENT"}, {"userId": unknown, "role": "PATIENT"}]),
            "input.participants.1.userId",
        ),
        (
            "an unknown user as PRACTITIONER",
            json!([{"userId": unknown, "role": "PRACTITIONER"}]),
            "input.participants.0.userId",
        ),
        (
            "a malformed user id",
            json!([{"userId": c.vet.id, "role": "ADMIN"}, {"userId": "not-an-id", "role": "PATIENT"}]),
            "input.participants.1.userId",
        ),
        (
            "a malformed user id first",
            json!([{"userId": "nope", "role": "ADMIN"}]),
            "input.participants.0.userId",
        ),
    ];
    let mut messages = std::collections::BTreeSet::new();
    for (what, participants, at) in refused {
        let body = app
            .gql(
                Some(&c.owner.token),
                &create_q(),
                json!({"o": c.org, "i": {"reference": "P-1", "title": "Refused", "participants": participants}}),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{what}: {body}");
        assert_eq!(field(&body), at, "{what}: {body}");
        if what.contains("as PATIENT") {
            messages.insert(body["errors"][0]["message"].to_string());
        }
    }
    assert_eq!(
        messages.len(),
        1,
        "a stranger and an unknown user get one answer: {messages:?}"
    );
    // Nothing was created by any refused call.
    assert_eq!(total(&app, &c).await, 0);
    let missing = app
        .gql(
            Some(&c.owner.token),
            BY_REF,
            json!({"o": c.org, "r": "P-1"}),
        )
        .await;
    assert_eq!(code(&missing), "NOT_FOUND", "{missing}");

    // Any organisation role may be a case ADMIN or PRACTITIONER; a guardian of one of its
    // patients a PATIENT.
    let case = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "P-1", "title": "Accepted", "participants": [
            {"userId": c.vet.id, "role": "PRACTITIONER"},
            {"userId": c.tech.id, "role": "ADMIN"},
            {"userId": c.client.id, "role": "PATIENT"}
        ]}),
    )
    .await;
    assert_eq!(
        roles(&case),
        expected(&[
            (&c.vet.id, "PRACTITIONER"),
            (&c.tech.id, "ADMIN"),
            (&c.client.id, "PATIENT"),
        ])
    );

    // A deactivated member can no longer be added, as staff or as a PATIENT.
    let deactivate = app
        .gql(
            Some(&c.owner.token),
            "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
            json!({"o": c.org, "u": c.vet.id}),
        )
        .await;
    assert_eq!(
        deactivate["data"]["updateOrganizationMember"]["active"], false,
        "{deactivate}"
    );
    let body = app
        .gql(
            Some(&c.owner.token),
            &create_q(),
            json!({"o": c.org, "i": {"reference": "P-2", "title": "Inactive", "participants": [
                {"userId": c.vet.id, "role": "PRACTITIONER"}
            ]}}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(field(&body), "input.participants.0.userId");
    let as_patient = app
        .gql(
            Some(&c.owner.token),
            &create_q(),
            json!({"o": c.org, "i": {"reference": "P-2", "title": "Inactive", "participants": [
                {"userId": c.vet.id, "role": "PATIENT"}
            ]}}),
        )
        .await;
    assert_eq!(code(&as_patient), "BAD_USER_INPUT", "{as_patient}");
}

#[tokio::test]
async fn add_case_participant_refuses_non_members_as_staff_naming_the_input_user_id() {
    let app = TestApp::spawn().await;
    let c = app.clinic("addbad").await;
    let case = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "A-1", "title": "Add", "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]}),
    )
    .await;
    let id = id_of(&case);
    let before = read(&app, &c.owner.token, &id).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for (what, input) in [
        (
            "outsider as ADMIN",
            json!({"userId": c.outsider.id, "role": "ADMIN"}),
        ),
        (
            "client as PRACTITIONER",
            json!({"userId": c.client.id, "role": "PRACTITIONER"}),
        ),
        (
            "unknown as PATIENT",
            json!({"userId": unknown, "role": "PATIENT"}),
        ),
        ("malformed id", json!({"userId": "nope", "role": "PATIENT"})),
    ] {
        let body = app
            .gql(Some(&c.owner.token), &add_q(), json!({"c": id, "i": input}))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{what}: {body}");
        assert_eq!(field(&body), "input.userId", "{what}: {body}");
    }
    assert_eq!(read(&app, &c.owner.token, &id).await, before);
}

#[tokio::test]
async fn add_case_participant_adds_or_changes_a_role_and_remove_case_participant_removes() {
    let app = TestApp::spawn().await;
    let c = app.clinic("addrm").await;
    let case = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "AR-1", "title": "Participants", "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]}),
    )
    .await;
    let id = id_of(&case);

    // Add.
    let added = app
        .ok(
            &c.tech.token,
            &add_q(),
            json!({"c": id, "i": {"userId": c.client.id, "role": "PATIENT"}}),
            "addCaseParticipant",
        )
        .await;
    assert_eq!(id_of(&added), id);
    let both = expected(&[(&c.vet.id, "PRACTITIONER"), (&c.client.id, "PATIENT")]);
    assert_eq!(roles(&added), both);
    assert_eq!(roles(&read(&app, &c.owner.token, &id).await), both);

    // Change a role; adding the same role again changes nothing.
    let changed = app
        .ok(
            &c.owner.token,
            &add_q(),
            json!({"c": id, "i": {"userId": c.vet.id, "role": "ADMIN"}}),
            "addCaseParticipant",
        )
        .await;
    let vet_admin = expected(&[(&c.vet.id, "ADMIN"), (&c.client.id, "PATIENT")]);
    assert_eq!(roles(&changed), vet_admin);
    let again = app
        .ok(
            &c.owner.token,
            &add_q(),
            json!({"c": id, "i": {"userId": c.vet.id, "role": "ADMIN"}}),
            "addCaseParticipant",
        )
        .await;
    assert_eq!(roles(&again), vet_admin);
    assert_eq!(roles(&read(&app, &c.owner.token, &id).await), vet_admin);

    // Remove.
    let removed = app
        .ok(
            &c.owner.token,
            &remove_q(),
            json!({"c": id, "u": c.client.id}),
            "removeCaseParticipant",
        )
        .await;
    assert_eq!(id_of(&removed), id);
    let vet_only = expected(&[(&c.vet.id, "ADMIN")]);
    assert_eq!(roles(&removed), vet_only);
    assert_eq!(roles(&read(&app, &c.owner.token, &id).await), vet_only);

    // Removing someone who is not (or no longer) a participant is NOT_FOUND.
    for (what, user) in [
        ("removed again", c.client.id.clone()),
        ("never a participant", c.tech.id.clone()),
        ("unknown user", uuid::Uuid::new_v4().to_string()),
    ] {
        let body = app
            .gql(
                Some(&c.owner.token),
                &remove_q(),
                json!({"c": id, "u": user}),
            )
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{what}: {body}");
    }

    // An unknown case is NOT_FOUND for both mutations.
    let nowhere = uuid::Uuid::new_v4().to_string();
    let body = app
        .gql(
            Some(&c.owner.token),
            &add_q(),
            json!({"c": nowhere, "i": {"userId": c.client.id, "role": "PATIENT"}}),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = app
        .gql(
            Some(&c.owner.token),
            &remove_q(),
            json!({"c": nowhere, "u": c.vet.id}),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    assert_eq!(roles(&read(&app, &c.owner.token, &id).await), vet_only);
}

#[tokio::test]
async fn a_participant_who_is_not_staff_reads_the_case_but_not_the_lists() {
    let app = TestApp::spawn().await;
    let c = app.clinic("client").await;
    let case = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "CL-1", "title": "Client's case", "patientId": c.patient, "participants": [
            {"userId": c.client.id, "role": "PATIENT"},
            {"userId": c.vet.id, "role": "PRACTITIONER"}
        ]}),
    )
    .await;
    let id = id_of(&case);

    let seen = read(&app, &c.client.token, &id).await;
    assert_eq!(seen["reference"], "CL-1");
    assert_eq!(seen["patient"]["id"], c.patient.as_str());
    assert_eq!(
        roles(&seen),
        expected(&[(&c.client.id, "PATIENT"), (&c.vet.id, "PRACTITIONER")])
    );

    let body = app
        .gql(Some(&c.client.token), LIST, json!({"o": c.org}))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    assert_eq!(body["data"], Value::Null, "{body}");
    let body = app
        .gql(
            Some(&c.client.token),
            BY_REF,
            json!({"o": c.org, "r": "CL-1"}),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    assert_eq!(body["data"], Value::Null, "{body}");

    // A guardian of the patient who is not a participant cannot read the case.
    let body = app
        .gql(Some(&c.co_guardian.token), &case_q(), json!({"c": id}))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");

    // A participant may not manage the case.
    let before = read(&app, &c.owner.token, &id).await;
    for (what, query, vars) in [
        (
            "add",
            add_q(),
            json!({"c": id, "i": {"userId": c.co_guardian.id, "role": "PATIENT"}}),
        ),
        ("remove", remove_q(), json!({"c": id, "u": c.vet.id})),
        ("close", close_q(), json!({"c": id})),
    ] {
        let body = app.gql(Some(&c.client.token), &query, vars).await;
        assert!(
            ["NOT_FOUND", "FORBIDDEN"].contains(&code(&body)),
            "{what}: {body}"
        );
    }
    assert_eq!(read(&app, &c.owner.token, &id).await, before);

    // Once removed, the client can no longer read it.
    app.ok(
        &c.owner.token,
        &remove_q(),
        json!({"c": id, "u": c.client.id}),
        "removeCaseParticipant",
    )
    .await;
    let body = app
        .gql(Some(&c.client.token), &case_q(), json!({"c": id}))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
}

#[tokio::test]
async fn patient_id_must_be_a_patient_of_the_same_organization() {
    let app = TestApp::spawn().await;
    let c = app.clinic("pid").await;
    let body = app
        .gql(
            Some(&c.outsider.token),
            "mutation($o: ID!) { createPatient(orgId: $o, input: {name: \"Tom\", species: \"Cat\"}) { id } }",
            json!({"o": c.other_org}),
        )
        .await;
    let foreign = body["data"]["createPatient"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("foreign patient: {body}"))
        .to_owned();

    for (what, patient) in [
        ("another organisation's patient", foreign.clone()),
        ("an unknown patient", uuid::Uuid::new_v4().to_string()),
        ("a malformed id", "not-an-id".to_owned()),
    ] {
        let body = app
            .gql(
                Some(&c.owner.token),
                &create_q(),
                json!({"o": c.org, "i": {"reference": "PT-1", "title": "Wrong patient", "patientId": patient}}),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{what}: {body}");
        assert_eq!(field(&body), "input.patientId", "{what}: {body}");
    }
    assert_eq!(total(&app, &c).await, 0);

    // The other organisation's own staff can use that patient in their own organisation.
    let theirs = create(
        &app,
        &c.outsider.token,
        &c.other_org,
        json!({"reference": "PT-1", "title": "Tom's case", "patientId": foreign}),
    )
    .await;
    assert_eq!(theirs["patient"]["id"], foreign.as_str());

    let ours = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "PT-1", "title": "Rex's case", "patientId": c.patient}),
    )
    .await;
    assert_eq!(ours["patient"]["id"], c.patient.as_str());
    assert_ne!(id_of(&ours), id_of(&theirs));
    assert_eq!(total(&app, &c).await, 1);
}

#[tokio::test]
async fn close_case_closes_once_and_a_closed_case_takes_no_new_participants() {
    let app = TestApp::spawn().await;
    let c = app.clinic("close").await;
    let case = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "CC-1", "title": "To close", "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]}),
    )
    .await;
    let id = id_of(&case);

    let closed = app
        .ok(&c.vet.token, &close_q(), json!({"c": id}), "closeCase")
        .await;
    assert_eq!(closed["status"], "CLOSED", "{closed}");
    let closed_at = closed["closedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("closedAt set: {closed}"))
        .to_owned();
    let at = chrono::DateTime::parse_from_rfc3339(&closed_at).expect("closedAt is RFC 3339");
    let age = chrono::Utc::now().signed_duration_since(at);
    assert!(age.num_seconds().abs() < 60, "closedAt {closed_at} is now");

    // Closing again changes nothing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = app
        .ok(&c.owner.token, &close_q(), json!({"c": id}), "closeCase")
        .await;
    assert_eq!(again["status"], "CLOSED");
    assert_eq!(again["closedAt"], closed_at.as_str());
    let stored = read(&app, &c.owner.token, &id).await;
    assert_eq!(stored["status"], "CLOSED");
    assert_eq!(stored["closedAt"], closed_at.as_str());

    // A closed case takes no new participant, nor a role change.
    for input in [
        json!({"userId": c.client.id, "role": "PATIENT"}),
        json!({"userId": c.vet.id, "role": "ADMIN"}),
    ] {
        let body = app
            .gql(Some(&c.owner.token), &add_q(), json!({"c": id, "i": input}))
            .await;
        assert_eq!(code(&body), "CONFLICT", "{body}");
    }
    let stored = read(&app, &c.owner.token, &id).await;
    assert_eq!(roles(&stored), expected(&[(&c.vet.id, "PRACTITIONER")]));
    assert_eq!(stored["closedAt"], closed_at.as_str());

    // Closing an unknown case is NOT_FOUND.
    let body = app
        .gql(
            Some(&c.owner.token),
            &close_q(),
            json!({"c": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
}

#[tokio::test]
async fn cases_lists_newest_first_filters_by_status_and_pages_with_cursors() {
    let app = TestApp::spawn().await;
    let c = app.clinic("list").await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        let case = create(
            &app,
            &c.owner.token,
            &c.org,
            json!({"reference": format!("R-{n}"), "title": format!("Case {n}")}),
        )
        .await;
        ids.push(id_of(&case));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for closing in [&ids[1], &ids[3]] {
        app.ok(
            &c.owner.token,
            &close_q(),
            json!({"c": closing}),
            "closeCase",
        )
        .await;
    }
    // Another organisation's case is not listed.
    create(
        &app,
        &c.outsider.token,
        &c.other_org,
        json!({"reference": "R-1", "title": "Elsewhere"}),
    )
    .await;

    let all = list(&app, &c.tech.token, json!({"o": c.org})).await;
    assert_eq!(all["totalCount"], 5, "{all}");
    assert_eq!(refs(&all), ["R-5", "R-4", "R-3", "R-2", "R-1"]);
    assert_eq!(all["pageInfo"]["hasNextPage"], false);
    assert_eq!(all["pageInfo"]["hasPreviousPage"], false);
    assert_eq!(all["edges"][0]["node"]["id"], ids[4].as_str());
    assert_eq!(all["edges"][1]["node"]["status"], "CLOSED");
    assert_eq!(all["edges"][2]["node"]["status"], "OPEN");

    // Pages of two, following endCursor.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = list(
            &app,
            &c.owner.token,
            json!({"o": c.org, "f": 2, "a": after}),
        )
        .await;
        pages += 1;
        assert_eq!(page["totalCount"], 5, "{page}");
        assert_eq!(
            page["pageInfo"]["hasPreviousPage"],
            after.is_some(),
            "{page}"
        );
        let edges = page["edges"].as_array().expect("edges");
        assert!(!edges.is_empty() && edges.len() <= 2, "{page}");
        assert_eq!(
            page["pageInfo"]["endCursor"],
            edges[edges.len() - 1]["cursor"],
            "{page}"
        );
        seen.extend(refs(&page));
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = Some(
            page["pageInfo"]["endCursor"]
                .as_str()
                .expect("endCursor")
                .to_owned(),
        );
        assert!(pages < 5, "pagination does not end: {seen:?}");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["R-5", "R-4", "R-3", "R-2", "R-1"]);

    // By status, also paged.
    let open = list(&app, &c.owner.token, json!({"o": c.org, "s": "OPEN"})).await;
    assert_eq!(open["totalCount"], 3, "{open}");
    assert_eq!(refs(&open), ["R-5", "R-3", "R-1"]);
    let closed = list(
        &app,
        &c.owner.token,
        json!({"o": c.org, "s": "CLOSED", "f": 1}),
    )
    .await;
    assert_eq!(closed["totalCount"], 2, "{closed}");
    assert_eq!(refs(&closed), ["R-4"]);
    assert_eq!(closed["pageInfo"]["hasNextPage"], true);
    let cursor = closed["pageInfo"]["endCursor"].clone();
    let rest = list(
        &app,
        &c.owner.token,
        json!({"o": c.org, "s": "CLOSED", "f": 1, "a": cursor}),
    )
    .await;
    assert_eq!(refs(&rest), ["R-2"]);
    assert_eq!(rest["totalCount"], 2);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    assert_eq!(rest["pageInfo"]["hasPreviousPage"], true);

    // The largest page is 100; outside 1..=100 and garbage cursors are refused.
    let big = list(&app, &c.owner.token, json!({"o": c.org, "f": 100})).await;
    assert_eq!(refs(&big).len(), 5);
    for (vars, at) in [
        (json!({"o": c.org, "f": 0}), "first"),
        (json!({"o": c.org, "f": 101}), "first"),
        (json!({"o": c.org, "f": -1}), "first"),
        (json!({"o": c.org, "a": "garbage!!"}), "after"),
        // Base64 of `["not a time","x"]`: well-formed, but no cursor of this list.
        (
            json!({"o": c.org, "a": "WyJub3QgYSB0aW1lIiwieCJd"}),
            "after",
        ),
    ] {
        let body = app.gql(Some(&c.owner.token), LIST, vars.clone()).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{vars}: {body}");
        assert_eq!(field(&body), at, "{vars}: {body}");
    }
}

#[tokio::test]
async fn case_by_reference_finds_a_case_by_its_trimmed_reference_within_the_organization() {
    let app = TestApp::spawn().await;
    let c = app.clinic("byref").await;
    let ours = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "ENC-7", "kind": "ENCOUNTER", "title": "Check-up"}),
    )
    .await;
    let theirs = create(
        &app,
        &c.outsider.token,
        &c.other_org,
        json!({"reference": "ENC-7", "title": "Their check-up"}),
    )
    .await;
    assert_ne!(id_of(&ours), id_of(&theirs));

    for reference in ["ENC-7", "  ENC-7 "] {
        let found = app
            .ok(
                &c.vet.token,
                BY_REF,
                json!({"o": c.org, "r": reference}),
                "caseByReference",
            )
            .await;
        assert_eq!(found["id"], ours["id"], "{reference:?}: {found}");
        assert_eq!(found["title"], "Check-up");
    }
    let found = app
        .ok(
            &c.outsider.token,
            BY_REF,
            json!({"o": c.other_org, "r": "ENC-7"}),
            "caseByReference",
        )
        .await;
    assert_eq!(found["id"], theirs["id"]);

    for reference in ["ENC-8", "ENC"] {
        let body = app
            .gql(
                Some(&c.owner.token),
                BY_REF,
                json!({"o": c.org, "r": reference}),
            )
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{reference}: {body}");
    }
}

#[tokio::test]
async fn outsiders_strangers_and_anonymous_callers_can_neither_read_nor_change_cases() {
    let app = TestApp::spawn().await;
    let c = app.clinic("authz").await;
    let case = create(
        &app,
        &c.owner.token,
        &c.org,
        json!({"reference": "AZ-1", "title": "Private", "patientId": c.patient, "participants": [
            {"userId": c.vet.id, "role": "PRACTITIONER"},
            {"userId": c.client.id, "role": "PATIENT"}
        ]}),
    )
    .await;
    let id = id_of(&case);
    let snapshot = read(&app, &c.owner.token, &id).await;

    let reads: [(&str, String, Value); 3] = [
        ("case", case_q(), json!({"c": id})),
        (
            "caseByReference",
            BY_REF.to_owned(),
            json!({"o": c.org, "r": "AZ-1"}),
        ),
        ("cases", LIST.to_owned(), json!({"o": c.org})),
    ];
    let writes: [(&str, String, Value); 6] = [
        (
            "createCase (new reference)",
            create_q(),
            json!({"o": c.org, "i": {"reference": "AZ-INTRUDER", "title": "Intruder"}}),
        ),
        (
            "createCase (existing reference)",
            create_q(),
            json!({"o": c.org, "i": {"reference": "AZ-1", "title": "Hijack", "participants": [
                {"userId": c.stranger.id, "role": "PATIENT"}
            ]}}),
        ),
        (
            "addCaseParticipant",
            add_q(),
            json!({"c": id, "i": {"userId": c.stranger.id, "role": "PATIENT"}}),
        ),
        (
            "addCaseParticipant (role change)",
            add_q(),
            json!({"c": id, "i": {"userId": c.vet.id, "role": "ADMIN"}}),
        ),
        (
            "removeCaseParticipant",
            remove_q(),
            json!({"c": id, "u": c.vet.id}),
        ),
        ("closeCase", close_q(), json!({"c": id})),
    ];
    let callers: [(&str, Option<&str>, &str); 3] = [
        ("outsider", Some(&c.outsider.token), "NOT_FOUND"),
        ("stranger", Some(&c.stranger.token), "NOT_FOUND"),
        ("anonymous", None, "UNAUTHENTICATED"),
    ];

    for (who, token, expected_code) in callers {
        for (what, query, vars) in &reads {
            let body = app.gql(token, query, vars.clone()).await;
            assert_eq!(code(&body), expected_code, "{who} {what}: {body}");
            assert_eq!(body["data"], Value::Null, "{who} {what}: {body}");
        }
        for (what, query, vars) in &writes {
            let body = app.gql(token, query, vars.clone()).await;
            assert_eq!(code(&body), expected_code, "{who} {what}: {body}");
            assert_eq!(body["data"], Value::Null, "{who} {what}: {body}");

            // Nothing changed.
            assert_eq!(
                read(&app, &c.owner.token, &id).await,
                snapshot,
                "{who} {what} changed the case"
            );
            assert_eq!(total(&app, &c).await, 1, "{who} {what} created a case");
            let intruder = app
                .gql(
                    Some(&c.owner.token),
                    BY_REF,
                    json!({"o": c.org, "r": "AZ-INTRUDER"}),
                )
                .await;
            assert_eq!(code(&intruder), "NOT_FOUND", "{who} {what}: {intruder}");
        }
    }

    // Their own organisation's id does not open this organisation's cases either.
    let body = app
        .gql(
            Some(&c.outsider.token),
            BY_REF,
            json!({"o": c.other_org, "r": "AZ-1"}),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let theirs = list(&app, &c.outsider.token, json!({"o": c.other_org})).await;
    assert_eq!(theirs["totalCount"], 0, "{theirs}");
}

#[tokio::test]
async fn create_case_on_a_closed_case_adds_no_participants() {
    let app = TestApp::spawn().await;
    let c = app.clinic("closedcreate").await;
    let create = "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id status participants { user { id } } } }";
    let case = app
        .ok(
            &c.owner.token,
            create,
            json!({"o": c.org, "i": {"reference": "C-9", "title": "Claim"}}),
            "createCase",
        )
        .await;
    let id = case["id"].as_str().expect("id").to_owned();
    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { closeCase(caseId: $id) { status } }",
        json!({"id": id}),
        "closeCase",
    )
    .await;
    // The same reference without new participants still answers with the (closed) case.
    let again = app
        .ok(
            &c.owner.token,
            create,
            json!({"o": c.org, "i": {"reference": "C-9", "title": "Claim"}}),
            "createCase",
        )
        .await;
    assert_eq!(again["id"], id.as_str());
    assert_eq!(again["status"], "CLOSED");
    let body = app
        .gql(
            Some(&c.owner.token),
            create,
            json!({"o": c.org, "i": {"reference": "C-9", "title": "Claim", "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]}}),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT");
    let seen = app
        .ok(
            &c.owner.token,
            "query($id: ID!) { case(id: $id) { participants { user { id } } } }",
            json!({"id": id}),
            "case",
        )
        .await;
    assert_eq!(seen["participants"].as_array().expect("list").len(), 0);
}
