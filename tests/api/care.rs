//! Patients, guardians, consent, compliance groups and care teams: what staff and guardians may
//! do, the authorization matrix (outsiders and strangers learn nothing: NOT_FOUND; anonymous is
//! UNAUTHENTICATED; a guardian who tries to edit is FORBIDDEN), each refusal changing nothing,
//! and the compliance rule that another organisation joins a care team only with the patient's
//! active MESSAGING consent.

use std::time::Duration;

use chrono::{Days, Utc};
use serde_json::{Value, json};

use crate::helpers::{Clinic, Person, TestApp, code};

macro_rules! member_fields {
    () => {
        "id role external phone displayName user { id } organization { id }"
    };
}

macro_rules! team_fields {
    () => {
        concat!(
            "id name patient { id } organization { id } members { ",
            member_fields!(),
            " }"
        )
    };
}

macro_rules! consent_fields {
    () => {
        "id scope active grantedAt expiresAt revokedAt patient { id } grantedTo { id } complianceGroup { id organizations { id } }"
    };
}

macro_rules! patient_fields {
    () => {
        concat!(
            "id name species riskLevel dateOfBirth organization { id } ",
            "guardians { user { id email displayName } relationship canChat } ",
            "careTeams { ",
            team_fields!(),
            " } consents { ",
            consent_fields!(),
            " }"
        )
    };
}

const PATIENT: &str = concat!(
    "query($id: ID!) { patient(id: $id) { ",
    patient_fields!(),
    " } }"
);
const PATIENTS: &str = "query($org: ID!, $search: String, $first: Int, $after: String) {
    patients(orgId: $org, search: $search, first: $first, after: $after) {
      totalCount pageInfo { hasNextPage hasPreviousPage endCursor } nodes { id name }
    } }";
const MY_PATIENTS: &str = "{ viewer { patients { id name } } }";
const CREATE_PATIENT: &str = concat!(
    "mutation($org: ID!, $i: CreatePatientInput!) { createPatient(orgId: $org, input: $i) { ",
    patient_fields!(),
    " } }"
);
const UPDATE_PATIENT: &str = concat!(
    "mutation($id: ID!, $i: UpdatePatientInput!) { updatePatient(id: $id, input: $i) { ",
    patient_fields!(),
    " } }"
);
const ADD_GUARDIAN: &str = concat!(
    "mutation($p: ID!, $i: GuardianInput!) { addGuardian(patientId: $p, input: $i) { ",
    patient_fields!(),
    " } }"
);
const REMOVE_GUARDIAN: &str = concat!(
    "mutation($p: ID!, $u: ID!) { removeGuardian(patientId: $p, userId: $u) { ",
    patient_fields!(),
    " } }"
);
const RECORD_CONSENT: &str = concat!(
    "mutation($p: ID!, $i: RecordConsentInput!) { recordConsent(patientId: $p, input: $i) { ",
    consent_fields!(),
    " } }"
);
const REVOKE_CONSENT: &str = concat!(
    "mutation($id: ID!) { revokeConsent(id: $id) { ",
    consent_fields!(),
    " } }"
);
const CREATE_GROUP: &str = "mutation($org: ID!, $i: CreateComplianceGroupInput!) {
    createComplianceGroup(orgId: $org, input: $i) { id name organizations { id } invitedOrganizationIds } }";
const CREATE_TEAM: &str = concat!(
    "mutation($p: ID!, $i: CreateCareTeamInput!) { createCareTeam(patientId: $p, input: $i) { ",
    team_fields!(),
    " } }"
);
const ADD_MEMBER: &str = concat!(
    "mutation($t: ID!, $i: AddCareTeamMemberInput!) { addCareTeamMember(careTeamId: $t, input: $i) { ",
    member_fields!(),
    " } }"
);
const REMOVE_MEMBER: &str = concat!(
    "mutation($t: ID!, $m: ID!) { removeCareTeamMember(careTeamId: $t, memberId: $m) { ",
    team_fields!(),
    " } }"
);
const CARE_TEAM: &str = concat!(
    "query($id: ID!) { careTeam(id: $id) { ",
    team_fields!(),
    " } }"
);
/// Everything staff can see about the fixture's patient and the clinic's patient list.
const SNAPSHOT: &str = concat!(
    "query($id: ID!, $org: ID!) { patient(id: $id) { ",
    patient_fields!(),
    " } patients(orgId: $org, first: 100) { totalCount nodes { id name species riskLevel } } }"
);

/// A well-formed id that names nothing.
const UNKNOWN_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// `errors[0].extensions.field`.
fn field(body: &Value) -> &Value {
    &body["errors"][0]["extensions"]["field"]
}

/// The `id` of an object.
fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an id in {v}"))
        .to_owned()
}

/// The `name`s of a list of nodes.
fn names(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap_or_else(|| panic!("a list in {nodes}"))
        .iter()
        .map(|n| n["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// The guardian entry of a patient for this email.
fn guardian<'a>(patient: &'a Value, email: &str) -> Option<&'a Value> {
    patient["guardians"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["user"]["email"] == email))
}

/// The care team member entry for this user.
fn member<'a>(members: &'a Value, user: &str) -> Option<&'a Value> {
    members
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["user"]["id"] == user))
}

/// A consent of a patient by id.
fn consent_in<'a>(patient: &'a Value, consent: &str) -> &'a Value {
    patient["consents"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == consent))
        .unwrap_or_else(|| panic!("consent {consent} in {patient}"))
}

fn len(list: &Value) -> usize {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .len()
}

async fn patient(app: &TestApp, token: &str, id: &str) -> Value {
    app.ok(token, PATIENT, json!({ "id": id }), "patient").await
}

async fn care_team(app: &TestApp, token: &str, id: &str) -> Value {
    app.ok(token, CARE_TEAM, json!({ "id": id }), "careTeam")
        .await
}

/// A care team around the fixture's patient, created by the vet with these members.
async fn create_team(app: &TestApp, c: &Clinic, member_ids: &[&str]) -> Value {
    app.ok(
        &c.vet.token,
        CREATE_TEAM,
        json!({ "p": c.patient, "i": { "name": "Rex's team", "memberIds": member_ids } }),
        "createCareTeam",
    )
    .await
}

/// Records a consent of `scope` for the fixture's patient granted to `org`, as the owner.
async fn grant(app: &TestApp, c: &Clinic, scope: &str, org: &str) -> Value {
    app.ok(
        &c.owner.token,
        RECORD_CONSENT,
        json!({ "p": c.patient, "i": { "scope": scope, "grantedToOrgId": org } }),
        "recordConsent",
    )
    .await
}

/// Adds a user to a care team, as the vet; returns the whole body.
async fn add_user(app: &TestApp, c: &Clinic, team: &str, user: &str) -> Value {
    app.gql(
        Some(&c.vet.token),
        ADD_MEMBER,
        json!({ "t": team, "i": { "userId": user } }),
    )
    .await
}

async fn create_patient(app: &TestApp, token: &str, org: &str, input: Value) -> Value {
    app.ok(
        token,
        CREATE_PATIENT,
        json!({ "org": org, "i": input }),
        "createPatient",
    )
    .await
}

/// What staff see of the fixture's patient and the clinic's patients.
async fn snapshot(app: &TestApp, c: &Clinic) -> Value {
    let body = app
        .gql(
            Some(&c.owner.token),
            SNAPSHOT,
            json!({ "id": c.patient, "org": c.org }),
        )
        .await;
    assert!(body.get("errors").is_none(), "snapshot: {body}");
    body["data"].clone()
}

/// A call that must be refused.
struct Refusal<'a> {
    who: &'static str,
    token: Option<&'a str>,
    what: &'static str,
    query: &'static str,
    vars: Value,
    expected: &'static str,
}

/// The outsider, the stranger (NOT_FOUND) and an anonymous caller (UNAUTHENTICATED).
fn from_outside<'a>(
    c: &'a Clinic,
    what: &'static str,
    query: &'static str,
    vars: Value,
) -> Vec<Refusal<'a>> {
    vec![
        Refusal {
            who: "outsider",
            token: Some(&c.outsider.token),
            what,
            query,
            vars: vars.clone(),
            expected: "NOT_FOUND",
        },
        Refusal {
            who: "stranger",
            token: Some(&c.stranger.token),
            what,
            query,
            vars: vars.clone(),
            expected: "NOT_FOUND",
        },
        Refusal {
            who: "anonymous",
            token: None,
            what,
            query,
            vars,
            expected: "UNAUTHENTICATED",
        },
    ]
}

fn by<'a>(
    who: &'static str,
    person: &'a Person,
    what: &'static str,
    query: &'static str,
    vars: Value,
    expected: &'static str,
) -> Refusal<'a> {
    Refusal {
        who,
        token: Some(&person.token),
        what,
        query,
        vars,
        expected,
    }
}

/// Makes every call, asserting its code, that it returned no data, and that staff see exactly
/// what they saw before.
async fn assert_refused_and_unchanged(app: &TestApp, c: &Clinic, cases: Vec<Refusal<'_>>) {
    let before = snapshot(app, c).await;
    for r in cases {
        let body = app.gql(r.token, r.query, r.vars).await;
        assert_eq!(code(&body), r.expected, "{} {}: {body}", r.who, r.what);
        assert!(
            body["data"].is_null(),
            "{} {} got data: {body}",
            r.who,
            r.what
        );
        assert_eq!(
            snapshot(app, c).await,
            before,
            "{} {} changed something",
            r.who,
            r.what
        );
    }
}

fn days_from_today(days: u64) -> String {
    (Utc::now().date_naive() + Days::new(days)).to_string()
}

// ---------------------------------------------------------------------------------------------
// Patients
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn staff_create_a_patient_with_guardians_and_a_new_guardian_email_creates_a_user() {
    let app = TestApp::spawn().await;
    let c = app.clinic("create").await;
    let bella = create_patient(
        &app,
        &c.tech.token,
        &c.org,
        json!({
            "name": "  Bella ", "species": "Cat", "riskLevel": "HIGH", "dateOfBirth": "2020-02-29",
            "guardians": [
                { "email": "Nora.Owner@Example.org", "givenName": "Nora", "familyName": "Owner", "relationship": "PRIMARY" },
                { "email": "client@create.example", "givenName": "Ignored", "familyName": "Ignored", "relationship": "CO_GUARDIAN", "canChat": true }
            ]
        }),
    )
    .await;
    assert_eq!(bella["name"], "Bella", "{bella}");
    assert_eq!(bella["species"], "Cat");
    assert_eq!(bella["riskLevel"], "HIGH");
    assert_eq!(bella["dateOfBirth"], "2020-02-29");
    assert_eq!(bella["organization"]["id"], c.org.as_str());
    assert_eq!(len(&bella["guardians"]), 2, "{bella}");
    let nora = guardian(&bella, "nora.owner@example.org").expect("the new guardian, lowercased");
    assert_eq!(nora["user"]["displayName"], "Nora Owner");
    assert_eq!(nora["relationship"], "PRIMARY");
    assert_eq!(nora["canChat"], false);
    // An existing user joins as they are: the names given are ignored.
    let casey = guardian(&bella, "client@create.example").expect("the existing client");
    assert_eq!(casey["user"]["id"], c.client.id.as_str());
    assert_eq!(casey["user"]["displayName"], "Casey Client");
    assert_eq!(casey["relationship"], "CO_GUARDIAN");
    assert_eq!(casey["canChat"], true);

    // The new email became a user, who can sign in (by token) and read their patient.
    let nora_token = app.token_for_email("nora.owner@example.org").await;
    let seen = patient(&app, &nora_token, &id_of(&bella)).await;
    assert_eq!(seen["name"], "Bella");
    let mine = app.ok(&nora_token, MY_PATIENTS, json!({}), "viewer").await;
    assert_eq!(names(&mine["patients"]), ["Bella"]);

    // Only a name is needed: the risk level defaults to LOW, the rest is empty.
    let plain = create_patient(&app, &c.owner.token, &c.org, json!({ "name": "Plain" })).await;
    assert_eq!(plain["riskLevel"], "LOW", "{plain}");
    assert_eq!(plain["species"], Value::Null);
    assert_eq!(plain["dateOfBirth"], Value::Null);
    assert_eq!(plain["guardians"], json!([]));
    assert_eq!(plain["careTeams"], json!([]));
    assert_eq!(plain["consents"], json!([]));

    // Bad input names the field and creates nothing.
    for (input, bad) in [
        (
            json!({ "name": "Future", "dateOfBirth": days_from_today(2) }),
            "input.dateOfBirth",
        ),
        (json!({ "name": "   " }), "input.name"),
        (
            json!({ "name": "Orphan", "guardians": [{ "email": "not-an-email", "givenName": "A", "familyName": "B", "relationship": "PRIMARY" }] }),
            "input.guardians.0.email",
        ),
    ] {
        let body = app
            .gql(
                Some(&c.owner.token),
                CREATE_PATIENT,
                json!({ "org": c.org, "i": input }),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(field(&body), bad, "{body}");
    }
    let list = app
        .ok(
            &c.owner.token,
            PATIENTS,
            json!({ "org": c.org }),
            "patients",
        )
        .await;
    assert_eq!(list["totalCount"], 3, "{list}");
    assert_eq!(names(&list["nodes"]), ["Bella", "Plain", "Rex"]);
}

#[tokio::test]
async fn staff_update_a_patient_and_null_clears_optional_fields() {
    let app = TestApp::spawn().await;
    let c = app.clinic("update").await;
    let updated = app
        .ok(
            &c.vet.token,
            UPDATE_PATIENT,
            json!({ "id": c.patient, "i": { "name": "Rex the Second", "riskLevel": "HIGH", "dateOfBirth": "2019-06-01" } }),
            "updatePatient",
        )
        .await;
    assert_eq!(updated["name"], "Rex the Second", "{updated}");
    assert_eq!(updated["riskLevel"], "HIGH");
    assert_eq!(updated["dateOfBirth"], "2019-06-01");
    // An omitted field stays.
    assert_eq!(updated["species"], "Dog");
    assert_eq!(len(&updated["guardians"]), 2);

    // `null` clears species; omitted fields (the date of birth among them) stay.
    let cleared = app
        .ok(
            &c.tech.token,
            UPDATE_PATIENT,
            json!({ "id": c.patient, "i": { "species": null } }),
            "updatePatient",
        )
        .await;
    assert_eq!(cleared["species"], Value::Null, "{cleared}");
    assert_eq!(cleared["name"], "Rex the Second");
    assert_eq!(cleared["dateOfBirth"], "2019-06-01");
    assert_eq!(cleared["riskLevel"], "HIGH");
    let reread = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(reread["species"], Value::Null);
    assert_eq!(reread["name"], "Rex the Second");

    // The renamed patient is found under its new name.
    let found = app
        .ok(
            &c.owner.token,
            PATIENTS,
            json!({ "org": c.org, "search": "second" }),
            "patients",
        )
        .await;
    assert_eq!(names(&found["nodes"]), ["Rex the Second"], "{found}");

    // A date of birth in the future is refused and changes nothing, not even the other fields.
    let before = patient(&app, &c.owner.token, &c.patient).await;
    let future = app
        .gql(
            Some(&c.vet.token),
            UPDATE_PATIENT,
            json!({ "id": c.patient, "i": { "name": "Time Traveller", "dateOfBirth": days_from_today(2) } }),
        )
        .await;
    assert_eq!(code(&future), "BAD_USER_INPUT", "{future}");
    assert_eq!(field(&future), "input.dateOfBirth", "{future}");
    let blank = app
        .gql(
            Some(&c.vet.token),
            UPDATE_PATIENT,
            json!({ "id": c.patient, "i": { "name": "  " } }),
        )
        .await;
    assert_eq!(code(&blank), "BAD_USER_INPUT", "{blank}");
    assert_eq!(field(&blank), "input.name", "{blank}");
    assert_eq!(patient(&app, &c.owner.token, &c.patient).await, before);

    // `null` clears the date of birth too.
    let no_birth = app
        .ok(
            &c.vet.token,
            UPDATE_PATIENT,
            json!({ "id": c.patient, "i": { "dateOfBirth": null } }),
            "updatePatient",
        )
        .await;
    assert_eq!(no_birth["dateOfBirth"], Value::Null, "{no_birth}");
}

#[tokio::test]
async fn staff_add_and_remove_guardians_and_removing_a_non_guardian_is_not_found() {
    let app = TestApp::spawn().await;
    let c = app.clinic("guard").await;
    let added = app
        .ok(
            &c.tech.token,
            ADD_GUARDIAN,
            json!({ "p": c.patient, "i": { "email": "gran@guard.example", "givenName": "Gran", "familyName": "Ma", "relationship": "CO_GUARDIAN", "canChat": true } }),
            "addGuardian",
        )
        .await;
    assert_eq!(len(&added["guardians"]), 3, "{added}");
    let gran = guardian(&added, "gran@guard.example").expect("the new guardian");
    assert_eq!(gran["relationship"], "CO_GUARDIAN");
    assert_eq!(gran["canChat"], true);
    assert_eq!(gran["user"]["displayName"], "Gran Ma");
    let gran_id = gran["user"]["id"].as_str().expect("gran's id").to_owned();
    let gran_token = app.token_for_email("gran@guard.example").await;
    assert_eq!(patient(&app, &gran_token, &c.patient).await["name"], "Rex");

    // Adding an existing guardian again changes their relationship, not the number of guardians.
    let changed = app
        .ok(
            &c.vet.token,
            ADD_GUARDIAN,
            json!({ "p": c.patient, "i": { "email": "co@guard.example", "givenName": "X", "familyName": "Y", "relationship": "CO_GUARDIAN", "canChat": true } }),
            "addGuardian",
        )
        .await;
    assert_eq!(len(&changed["guardians"]), 3, "{changed}");
    let co = guardian(&changed, "co@guard.example").expect("the co-guardian");
    assert_eq!(co["canChat"], true);
    assert_eq!(co["user"]["displayName"], "Cody Co");

    // Removing a guardian takes away their access.
    let removed = app
        .ok(
            &c.vet.token,
            REMOVE_GUARDIAN,
            json!({ "p": c.patient, "u": gran_id }),
            "removeGuardian",
        )
        .await;
    assert_eq!(len(&removed["guardians"]), 2, "{removed}");
    assert!(guardian(&removed, "gran@guard.example").is_none());
    let gone = app
        .gql(Some(&gran_token), PATIENT, json!({ "id": c.patient }))
        .await;
    assert_eq!(code(&gone), "NOT_FOUND", "{gone}");
    let mine = app.ok(&gran_token, MY_PATIENTS, json!({}), "viewer").await;
    assert_eq!(mine["patients"], json!([]));

    // Removing someone who is not (or no longer) a guardian is NOT_FOUND and changes nothing.
    let before = patient(&app, &c.owner.token, &c.patient).await;
    for (who, user) in [
        ("former guardian", gran_id.as_str()),
        ("stranger", c.stranger.id.as_str()),
        ("staff", c.vet.id.as_str()),
        ("unknown user", UNKNOWN_ID),
    ] {
        let body = app
            .gql(
                Some(&c.vet.token),
                REMOVE_GUARDIAN,
                json!({ "p": c.patient, "u": user }),
            )
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{who}: {body}");
    }
    assert_eq!(patient(&app, &c.owner.token, &c.patient).await, before);
}

#[tokio::test]
async fn staff_and_guardians_read_a_patient_and_clients_see_their_own_patients() {
    let app = TestApp::spawn().await;
    let c = app.clinic("read").await;
    for (who, person) in [
        ("owner", &c.owner),
        ("vet", &c.vet),
        ("tech", &c.tech),
        ("primary guardian", &c.client),
        ("co-guardian", &c.co_guardian),
    ] {
        let p = patient(&app, &person.token, &c.patient).await;
        assert_eq!(p["name"], "Rex", "{who}: {p}");
        assert_eq!(p["id"], c.patient.as_str(), "{who}");
        assert_eq!(len(&p["guardians"]), 2, "{who}");
    }

    // A second patient of the client, and one that is not theirs.
    create_patient(
        &app,
        &c.vet.token,
        &c.org,
        json!({ "name": "Ada", "guardians": [{ "email": "client@read.example", "givenName": "C", "familyName": "C", "relationship": "PRIMARY" }] }),
    )
    .await;
    create_patient(&app, &c.vet.token, &c.org, json!({ "name": "Zed" })).await;

    let mine = |token: String| {
        let app = &app;
        async move { names(&app.ok(&token, MY_PATIENTS, json!({}), "viewer").await["patients"]) }
    };
    assert_eq!(mine(c.client.token.clone()).await, ["Ada", "Rex"]);
    assert_eq!(mine(c.co_guardian.token.clone()).await, ["Rex"]);
    assert!(mine(c.stranger.token.clone()).await.is_empty());
    // Staff are not guardians: their own list is empty although they can read every patient.
    assert!(mine(c.vet.token.clone()).await.is_empty());
}

#[tokio::test]
async fn patients_are_paged_by_name_with_a_total_count() {
    let app = TestApp::spawn().await;
    let c = app.clinic("page").await;
    for name in ["echo", "Alpha", "delta", "Bravo", "Charlie"] {
        create_patient(&app, &c.tech.token, &c.org, json!({ "name": name })).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = app
            .ok(
                &c.vet.token,
                PATIENTS,
                json!({ "org": c.org, "first": 2, "after": after }),
                "patients",
            )
            .await;
        pages += 1;
        assert_eq!(page["totalCount"], 6, "{page}");
        assert_eq!(
            page["pageInfo"]["hasPreviousPage"],
            after.is_some(),
            "{page}"
        );
        let got = names(&page["nodes"]);
        assert_eq!(got.len(), 2, "{page}");
        seen.extend(got);
        if page["pageInfo"]["hasNextPage"] == true {
            after = Some(
                page["pageInfo"]["endCursor"]
                    .as_str()
                    .expect("an end cursor")
                    .to_owned(),
            );
        } else {
            assert_eq!(page["pageInfo"]["hasNextPage"], false, "{page}");
            after = page["pageInfo"]["endCursor"].as_str().map(str::to_owned);
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["Alpha", "Bravo", "Charlie", "delta", "echo", "Rex"]);

    // After the last row: no rows to carry the count along, and still all six are counted.
    let past = app
        .ok(
            &c.vet.token,
            PATIENTS,
            json!({ "org": c.org, "first": 2, "after": after.expect("a last cursor") }),
            "patients",
        )
        .await;
    assert_eq!(past["nodes"], json!([]), "{past}");
    assert_eq!(past["totalCount"], 6, "{past}");
    assert_eq!(past["pageInfo"]["hasNextPage"], false, "{past}");

    // Paging arguments are checked.
    for (vars, bad) in [
        (json!({ "org": c.org, "first": 0 }), "first"),
        (json!({ "org": c.org, "first": 101 }), "first"),
        (json!({ "org": c.org, "after": "not a cursor" }), "after"),
    ] {
        let body = app.gql(Some(&c.vet.token), PATIENTS, vars).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(field(&body), bad, "{body}");
    }
}

#[tokio::test]
async fn patient_search_treats_percent_and_underscore_as_plain_characters() {
    let app = TestApp::spawn().await;
    let c = app.clinic("search").await;
    for name in ["100% Pure", "Max_1", "Maxi"] {
        create_patient(&app, &c.vet.token, &c.org, json!({ "name": name })).await;
    }
    let search = |q: &'static str, first: Option<i32>, after: Option<String>| {
        let (app, c) = (&app, &c);
        async move {
            app.ok(
                &c.vet.token,
                PATIENTS,
                json!({ "org": c.org, "search": q, "first": first, "after": after }),
                "patients",
            )
            .await
        }
    };
    for (q, expected) in [
        ("%", vec!["100% Pure"]),
        ("_", vec!["Max_1"]),
        ("MAX", vec!["Max_1", "Maxi"]),
        ("x_", vec!["Max_1"]),
        ("0%", vec!["100% Pure"]),
        ("%%", vec![]),
        ("  rex ", vec!["Rex"]),
        ("", vec!["100% Pure", "Max_1", "Maxi", "Rex"]),
    ] {
        let found = search(q, None, None).await;
        assert_eq!(names(&found["nodes"]), expected, "search {q:?}: {found}");
        assert_eq!(found["totalCount"], expected.len(), "search {q:?}: {found}");
    }

    // Search and paging together.
    let first = search("max", Some(1), None).await;
    assert_eq!(names(&first["nodes"]), ["Max_1"], "{first}");
    assert_eq!(first["totalCount"], 2);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    let cursor = first["pageInfo"]["endCursor"]
        .as_str()
        .expect("an end cursor")
        .to_owned();
    let second = search("max", Some(1), Some(cursor)).await;
    assert_eq!(names(&second["nodes"]), ["Maxi"], "{second}");
    assert_eq!(second["totalCount"], 2);
    assert_eq!(second["pageInfo"]["hasNextPage"], false);
}

// ---------------------------------------------------------------------------------------------
// Authorization matrix
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn outsiders_and_anonymous_callers_learn_nothing_about_patients_and_guardians_cannot_edit_them()
 {
    let app = TestApp::spawn().await;
    let c = app.clinic("pmatrix").await;
    let mut cases = Vec::new();
    let read = json!({ "id": c.patient });
    let list = json!({ "org": c.org });
    let create = json!({ "org": c.org, "i": { "name": "Intruder", "guardians": [{ "email": "x@pmatrix.example", "givenName": "X", "familyName": "Y", "relationship": "PRIMARY" }] } });
    let update = json!({ "id": c.patient, "i": { "name": "Hijacked", "species": null, "riskLevel": "LOW" } });
    let add = |email: &str| json!({ "p": c.patient, "i": { "email": email, "givenName": "Sneaky", "familyName": "Guardian", "relationship": "PRIMARY" } });
    let remove = json!({ "p": c.patient, "u": c.co_guardian.id });

    cases.extend(from_outside(&c, "reads the patient", PATIENT, read));
    cases.extend(from_outside(&c, "lists patients", PATIENTS, list.clone()));
    cases.extend(from_outside(
        &c,
        "creates a patient",
        CREATE_PATIENT,
        create.clone(),
    ));
    cases.extend(from_outside(
        &c,
        "updates the patient",
        UPDATE_PATIENT,
        update.clone(),
    ));
    cases.extend(from_outside(
        &c,
        "adds a guardian",
        ADD_GUARDIAN,
        add("owner@other-pmatrix.example"),
    ));
    cases.extend(from_outside(
        &c,
        "removes a guardian",
        REMOVE_GUARDIAN,
        remove.clone(),
    ));
    // Guardians know the patient, so editing it is FORBIDDEN; the organisation's patient list and
    // creating patients are staff-only organisation business, where a non-member is NOT_FOUND.
    for (who, g) in [("client", &c.client), ("co-guardian", &c.co_guardian)] {
        cases.push(by(
            who,
            g,
            "updates the patient",
            UPDATE_PATIENT,
            update.clone(),
            "FORBIDDEN",
        ));
        cases.push(by(
            who,
            g,
            "adds a guardian",
            ADD_GUARDIAN,
            add("friend@pmatrix.example"),
            "FORBIDDEN",
        ));
        cases.push(by(
            who,
            g,
            "removes a guardian",
            REMOVE_GUARDIAN,
            remove.clone(),
            "FORBIDDEN",
        ));
        cases.push(by(
            who,
            g,
            "lists patients",
            PATIENTS,
            list.clone(),
            "NOT_FOUND",
        ));
        cases.push(by(
            who,
            g,
            "creates a patient",
            CREATE_PATIENT,
            create.clone(),
            "NOT_FOUND",
        ));
    }
    assert_refused_and_unchanged(&app, &c, cases).await;

    // The guardians still read their patient; no refused call left a trace.
    let p = patient(&app, &c.client.token, &c.patient).await;
    assert_eq!(p["name"], "Rex");
    assert_eq!(p["species"], "Dog");
    assert_eq!(p["riskLevel"], "MEDIUM");
    assert_eq!(len(&p["guardians"]), 2);
    let outsider_patients = app
        .ok(&c.outsider.token, MY_PATIENTS, json!({}), "viewer")
        .await;
    assert_eq!(outsider_patients["patients"], json!([]));
}

#[tokio::test]
async fn outsiders_and_anonymous_callers_cannot_touch_consent_and_a_co_guardian_cannot_either() {
    let app = TestApp::spawn().await;
    let c = app.clinic("cmatrix").await;
    let granted = grant(&app, &c, "MESSAGING", &c.other_org).await;
    let consent = id_of(&granted);
    let record =
        json!({ "p": c.patient, "i": { "scope": "RECORDS", "grantedToOrgId": c.other_org } });
    let revoke = json!({ "id": consent });
    let group = json!({ "org": c.org, "i": { "name": "Ring", "organizationIds": [c.other_org] } });

    let mut cases = Vec::new();
    cases.extend(from_outside(
        &c,
        "records a consent",
        RECORD_CONSENT,
        record.clone(),
    ));
    cases.extend(from_outside(
        &c,
        "revokes a consent",
        REVOKE_CONSENT,
        revoke.clone(),
    ));
    cases.extend(from_outside(
        &c,
        "creates a compliance group",
        CREATE_GROUP,
        group.clone(),
    ));
    cases.push(by(
        "co-guardian",
        &c.co_guardian,
        "records a consent",
        RECORD_CONSENT,
        record,
        "FORBIDDEN",
    ));
    cases.push(by(
        "co-guardian",
        &c.co_guardian,
        "revokes a consent",
        REVOKE_CONSENT,
        revoke,
        "FORBIDDEN",
    ));
    for (who, person) in [("client", &c.client), ("co-guardian", &c.co_guardian)] {
        cases.push(by(
            who,
            person,
            "creates a compliance group",
            CREATE_GROUP,
            group.clone(),
            "NOT_FOUND",
        ));
    }
    for (who, person) in [("tech", &c.tech), ("vet", &c.vet)] {
        cases.push(by(
            who,
            person,
            "creates a compliance group",
            CREATE_GROUP,
            group.clone(),
            "FORBIDDEN",
        ));
    }
    assert_refused_and_unchanged(&app, &c, cases).await;

    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(len(&p["consents"]), 1, "{p}");
    let still = consent_in(&p, &consent);
    assert_eq!(still["active"], true);
    assert_eq!(still["revokedAt"], Value::Null);
}

#[tokio::test]
async fn outsiders_and_anonymous_callers_cannot_touch_care_teams_and_guardians_cannot_edit_them() {
    let app = TestApp::spawn().await;
    let c = app.clinic("tmatrix").await;
    let team = create_team(&app, &c, &[&c.tech.id]).await;
    let team_id = id_of(&team);
    let tech_member = id_of(member(&team["members"], &c.tech.id).expect("the tech"));
    let read = json!({ "id": team_id });
    let create = json!({ "p": c.patient, "i": { "name": "Rogue team", "memberIds": [] } });
    let add_self = |user: &str| json!({ "t": team_id, "i": { "userId": user } });
    let add_phone =
        json!({ "t": team_id, "i": { "phone": "+447700900999", "displayName": "Dr Phone" } });
    let remove = json!({ "t": team_id, "m": tech_member });

    let mut cases = Vec::new();
    cases.extend(from_outside(&c, "reads the care team", CARE_TEAM, read));
    cases.extend(from_outside(
        &c,
        "creates a care team",
        CREATE_TEAM,
        create.clone(),
    ));
    cases.extend(from_outside(
        &c,
        "adds the outsider",
        ADD_MEMBER,
        add_self(&c.outsider.id),
    ));
    cases.extend(from_outside(
        &c,
        "adds a phone member",
        ADD_MEMBER,
        add_phone.clone(),
    ));
    cases.extend(from_outside(
        &c,
        "removes a member",
        REMOVE_MEMBER,
        remove.clone(),
    ));
    for (who, g) in [("client", &c.client), ("co-guardian", &c.co_guardian)] {
        cases.push(by(
            who,
            g,
            "creates a care team",
            CREATE_TEAM,
            create.clone(),
            "FORBIDDEN",
        ));
        cases.push(by(
            who,
            g,
            "adds themself",
            ADD_MEMBER,
            add_self(&g.id),
            "FORBIDDEN",
        ));
        cases.push(by(
            who,
            g,
            "adds a phone member",
            ADD_MEMBER,
            add_phone.clone(),
            "FORBIDDEN",
        ));
        cases.push(by(
            who,
            g,
            "removes a member",
            REMOVE_MEMBER,
            remove.clone(),
            "FORBIDDEN",
        ));
    }
    assert_refused_and_unchanged(&app, &c, cases).await;

    let after = care_team(&app, &c.vet.token, &team_id).await;
    assert_eq!(after, team, "the team is as created");
    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(len(&p["careTeams"]), 1, "{p}");
}

// ---------------------------------------------------------------------------------------------
// Consent
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn staff_and_the_primary_guardian_record_consent() {
    let app = TestApp::spawn().await;
    let c = app.clinic("consent").await;
    let expires = (Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let by_staff = app
        .ok(
            &c.tech.token,
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "MESSAGING", "grantedToOrgId": c.other_org, "expiresAt": expires } }),
            "recordConsent",
        )
        .await;
    assert_eq!(by_staff["scope"], "MESSAGING", "{by_staff}");
    assert_eq!(by_staff["active"], true);
    assert_eq!(by_staff["revokedAt"], Value::Null);
    assert!(by_staff["grantedAt"].is_string(), "{by_staff}");
    assert!(by_staff["expiresAt"].is_string(), "{by_staff}");
    assert_eq!(by_staff["patient"]["id"], c.patient.as_str());
    assert_eq!(by_staff["grantedTo"]["id"], c.other_org.as_str());
    assert_eq!(by_staff["complianceGroup"], Value::Null);

    let by_client = app
        .ok(
            &c.client.token,
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "VIDEO", "grantedToOrgId": c.other_org } }),
            "recordConsent",
        )
        .await;
    assert_eq!(by_client["scope"], "VIDEO", "{by_client}");
    assert_eq!(by_client["active"], true);
    assert_eq!(by_client["expiresAt"], Value::Null);
    assert_eq!(by_client["grantedTo"]["id"], c.other_org.as_str());

    // Both show on the patient, to staff and to guardians.
    for token in [&c.owner.token, &c.client.token, &c.co_guardian.token] {
        let p = patient(&app, token, &c.patient).await;
        assert_eq!(len(&p["consents"]), 2, "{p}");
        assert_eq!(consent_in(&p, &id_of(&by_staff))["scope"], "MESSAGING");
        assert_eq!(consent_in(&p, &id_of(&by_client))["scope"], "VIDEO");
    }
}

#[tokio::test]
async fn a_co_guardian_cannot_record_consent() {
    let app = TestApp::spawn().await;
    let c = app.clinic("cocons").await;
    let body = app
        .gql(
            Some(&c.co_guardian.token),
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "MESSAGING", "grantedToOrgId": c.other_org } }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    assert!(body["data"].is_null(), "{body}");
    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(p["consents"], json!([]), "{p}");

    // A co-guardian allowed to chat is still no primary guardian.
    app.ok(
        &c.owner.token,
        ADD_GUARDIAN,
        json!({ "p": c.patient, "i": { "email": "co@cocons.example", "givenName": "C", "familyName": "C", "relationship": "CO_GUARDIAN", "canChat": true } }),
        "addGuardian",
    )
    .await;
    let body = app
        .gql(
            Some(&c.co_guardian.token),
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "VIDEO", "grantedToOrgId": c.other_org } }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(p["consents"], json!([]), "{p}");
}

#[tokio::test]
async fn a_consent_is_granted_to_exactly_one_organization_or_compliance_group() {
    let app = TestApp::spawn().await;
    let c = app.clinic("oneof").await;
    let group = app
        .ok(
            &c.owner.token,
            CREATE_GROUP,
            json!({ "org": c.org, "i": { "name": "Network", "organizationIds": [c.other_org] } }),
            "createComplianceGroup",
        )
        .await;
    let group_id = id_of(&group);
    for (what, input, bad) in [
        (
            "neither",
            json!({ "scope": "MESSAGING" }),
            "input.grantedToOrgId",
        ),
        (
            "both",
            json!({ "scope": "MESSAGING", "grantedToOrgId": c.other_org, "complianceGroupId": group_id }),
            "input.grantedToOrgId",
        ),
        (
            "the patient's own organisation",
            json!({ "scope": "MESSAGING", "grantedToOrgId": c.org }),
            "input.grantedToOrgId",
        ),
        (
            "an unknown organisation",
            json!({ "scope": "MESSAGING", "grantedToOrgId": UNKNOWN_ID }),
            "input.grantedToOrgId",
        ),
        (
            "a malformed organisation id",
            json!({ "scope": "MESSAGING", "grantedToOrgId": "nope" }),
            "input.grantedToOrgId",
        ),
        (
            "an unknown compliance group",
            json!({ "scope": "MESSAGING", "complianceGroupId": UNKNOWN_ID }),
            "input.complianceGroupId",
        ),
    ] {
        let body = app
            .gql(
                Some(&c.owner.token),
                RECORD_CONSENT,
                json!({ "p": c.patient, "i": input }),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{what}: {body}");
        assert_eq!(field(&body), bad, "{what}: {body}");
    }
    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(p["consents"], json!([]), "{p}");

    // Through the compliance group alone it works.
    let through_group = app
        .ok(
            &c.owner.token,
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "RECORDS", "complianceGroupId": group_id } }),
            "recordConsent",
        )
        .await;
    assert_eq!(through_group["grantedTo"], Value::Null, "{through_group}");
    assert_eq!(through_group["complianceGroup"]["id"], group_id.as_str());
    assert_eq!(through_group["active"], true);
}

#[tokio::test]
async fn a_consent_cannot_expire_in_the_past() {
    let app = TestApp::spawn().await;
    let c = app.clinic("past").await;
    let past = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let body = app
        .gql(
            Some(&c.owner.token),
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "MESSAGING", "grantedToOrgId": c.other_org, "expiresAt": past } }),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(field(&body), "input.expiresAt", "{body}");
    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(p["consents"], json!([]), "{p}");

    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let ok = app
        .ok(
            &c.client.token,
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "MESSAGING", "grantedToOrgId": c.other_org, "expiresAt": future } }),
            "recordConsent",
        )
        .await;
    assert_eq!(ok["active"], true, "{ok}");
}

#[tokio::test]
async fn a_revoked_consent_is_inactive_and_revoking_twice_keeps_the_first_revocation_time() {
    let app = TestApp::spawn().await;
    let c = app.clinic("revoke").await;
    let granted = grant(&app, &c, "MESSAGING", &c.other_org).await;
    assert_eq!(granted["active"], true, "{granted}");
    let consent = id_of(&granted);

    let revoked = app
        .ok(
            &c.vet.token,
            REVOKE_CONSENT,
            json!({ "id": consent }),
            "revokeConsent",
        )
        .await;
    assert_eq!(revoked["active"], false, "{revoked}");
    let revoked_at = revoked["revokedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("revokedAt set: {revoked}"))
        .to_owned();
    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(consent_in(&p, &consent)["active"], false);
    assert_eq!(consent_in(&p, &consent)["revokedAt"], revoked_at.as_str());

    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = app
        .ok(
            &c.owner.token,
            REVOKE_CONSENT,
            json!({ "id": consent }),
            "revokeConsent",
        )
        .await;
    assert_eq!(again["active"], false, "{again}");
    assert_eq!(again["revokedAt"], revoked_at.as_str(), "{again}");

    // The primary guardian may revoke too; an unknown consent is NOT_FOUND.
    let second = grant(&app, &c, "VIDEO", &c.other_org).await;
    let by_client = app
        .ok(
            &c.client.token,
            REVOKE_CONSENT,
            json!({ "id": id_of(&second) }),
            "revokeConsent",
        )
        .await;
    assert_eq!(by_client["active"], false, "{by_client}");
    assert!(by_client["revokedAt"].is_string(), "{by_client}");
    let unknown = app
        .gql(
            Some(&c.owner.token),
            REVOKE_CONSENT,
            json!({ "id": UNKNOWN_ID }),
        )
        .await;
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
}

#[tokio::test]
async fn only_owners_and_admins_create_compliance_groups_with_at_least_one_other_organization() {
    let app = TestApp::spawn().await;
    let c = app.clinic("groups").await;
    let (_, admin) = app
        .member(&c.owner.token, &c.org, "admin@groups.example", "ADMIN")
        .await;
    let create = |token: &str, name: &str, orgs: Value| {
        let (app, org) = (&app, c.org.clone());
        let (token, name) = (token.to_owned(), name.to_owned());
        async move {
            app.gql(
                Some(&token),
                CREATE_GROUP,
                json!({ "org": org, "i": { "name": name, "organizationIds": orgs } }),
            )
            .await
        }
    };

    let by_owner = create(&c.owner.token, "Referrals", json!([c.other_org])).await;
    let group = &by_owner["data"]["createComplianceGroup"];
    assert_eq!(group["name"], "Referrals", "{by_owner}");
    let orgs: Vec<&str> = group["organizations"]
        .as_array()
        .expect("organizations")
        .iter()
        .map(|o| o["id"].as_str().expect("org id"))
        .collect();
    assert_eq!(
        orgs,
        [c.org.as_str()],
        "own organisation a member: {by_owner}"
    );
    assert_eq!(
        group["invitedOrganizationIds"],
        json!([c.other_org]),
        "the other one invited: {by_owner}"
    );

    // Listing its own organisation (or another twice) invites each other one once.
    let by_admin = create(&admin, "Admin's", json!([c.other_org, c.org, c.other_org])).await;
    let group = &by_admin["data"]["createComplianceGroup"];
    assert_eq!(len(&group["organizations"]), 1, "{by_admin}");
    assert_eq!(
        group["invitedOrganizationIds"],
        json!([c.other_org]),
        "{by_admin}"
    );

    for (who, token) in [("tech", &c.tech.token), ("vet", &c.vet.token)] {
        let body = create(token, "Nope", json!([c.other_org])).await;
        assert_eq!(code(&body), "FORBIDDEN", "{who}: {body}");
    }

    for (what, orgs, bad) in [
        ("no other organisation", json!([]), "input.organizationIds"),
        ("only its own", json!([c.org]), "input.organizationIds"),
        (
            "a malformed id",
            json!([c.other_org, "nope"]),
            "input.organizationIds.1",
        ),
    ] {
        let body = create(&c.owner.token, "Bad", orgs).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{what}: {body}");
        assert_eq!(field(&body), bad, "{what}: {body}");
    }
    let blank = create(&c.owner.token, "  ", json!([c.other_org])).await;
    assert_eq!(code(&blank), "BAD_USER_INPUT", "{blank}");
    assert_eq!(field(&blank), "input.name", "{blank}");
}

// ---------------------------------------------------------------------------------------------
// Care teams
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_creator_leads_a_new_care_team_and_listed_colleagues_join_as_members() {
    let app = TestApp::spawn().await;
    let c = app.clinic("team").await;
    // The creator listed again is not added twice.
    let team = create_team(&app, &c, &[&c.tech.id, &c.owner.id, &c.vet.id]).await;
    assert_eq!(team["name"], "Rex's team", "{team}");
    assert_eq!(team["patient"]["id"], c.patient.as_str());
    assert_eq!(team["organization"]["id"], c.org.as_str());
    assert_eq!(len(&team["members"]), 3, "{team}");
    let lead = member(&team["members"], &c.vet.id).expect("the creator");
    assert_eq!(lead["role"], "LEAD");
    for (who, id) in [
        ("lead", &c.vet.id),
        ("tech", &c.tech.id),
        ("owner", &c.owner.id),
    ] {
        let m = member(&team["members"], id).unwrap_or_else(|| panic!("{who} in {team}"));
        if who != "lead" {
            assert_eq!(m["role"], "MEMBER", "{who}: {m}");
        }
        assert_eq!(m["external"], false, "{who}: {m}");
        assert_eq!(m["organization"], Value::Null, "{who}: {m}");
        assert_eq!(m["phone"], Value::Null, "{who}: {m}");
    }
    let team_id = id_of(&team);

    // Staff, guardians and members read it; the outsider and the stranger learn nothing.
    for (who, token) in [
        ("owner", &c.owner.token),
        ("tech", &c.tech.token),
        ("client", &c.client.token),
        ("co-guardian", &c.co_guardian.token),
    ] {
        assert_eq!(
            care_team(&app, token, &team_id).await,
            team,
            "{who} reads the team"
        );
    }
    for (who, token) in [
        ("outsider", &c.outsider.token),
        ("stranger", &c.stranger.token),
    ] {
        let body = app
            .gql(Some(token), CARE_TEAM, json!({ "id": team_id }))
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{who}: {body}");
    }
    let p = patient(&app, &c.client.token, &c.patient).await;
    assert_eq!(len(&p["careTeams"]), 1, "{p}");
    assert_eq!(p["careTeams"][0]["id"], team_id.as_str());

    // A member from another organisation without consent, or an unknown user, creates nothing.
    for (who, id, expected) in [
        ("outsider", c.outsider.id.as_str(), "CONSENT_REQUIRED"),
        ("unknown user", UNKNOWN_ID, "BAD_USER_INPUT"),
    ] {
        let body = app
            .gql(
                Some(&c.vet.token),
                CREATE_TEAM,
                json!({ "p": c.patient, "i": { "name": "Other", "memberIds": [c.tech.id, id] } }),
            )
            .await;
        assert_eq!(code(&body), expected, "{who}: {body}");
    }
    let p = patient(&app, &c.owner.token, &c.patient).await;
    assert_eq!(len(&p["careTeams"]), 1, "{p}");
}

#[tokio::test]
async fn a_member_of_another_organization_joins_a_care_team_only_with_messaging_consent() {
    let app = TestApp::spawn().await;
    let c = app.clinic("xorg").await;
    let team = create_team(&app, &c, &[&c.tech.id]).await;
    let team_id = id_of(&team);

    let refused = add_user(&app, &c, &team_id, &c.outsider.id).await;
    assert_eq!(code(&refused), "CONSENT_REQUIRED", "{refused}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, team);

    grant(&app, &c, "MESSAGING", &c.other_org).await;
    let added = app
        .ok(
            &c.vet.token,
            ADD_MEMBER,
            json!({ "t": team_id, "i": { "userId": c.outsider.id, "role": "MEMBER" } }),
            "addCareTeamMember",
        )
        .await;
    assert_eq!(added["role"], "EXTERNAL", "{added}");
    assert_eq!(added["external"], true);
    assert_eq!(added["user"]["id"], c.outsider.id.as_str());
    assert_eq!(added["organization"]["id"], c.other_org.as_str());
    assert_eq!(added["phone"], Value::Null);

    let now = care_team(&app, &c.vet.token, &team_id).await;
    assert_eq!(len(&now["members"]), 3, "{now}");
    assert_eq!(
        member(&now["members"], &c.outsider.id).expect("the outsider"),
        &added
    );

    // As a member, the outsider now reads the team, but still may not manage it.
    assert_eq!(care_team(&app, &c.outsider.token, &team_id).await, now);
    let phone = app
        .gql(
            Some(&c.outsider.token),
            ADD_MEMBER,
            json!({ "t": team_id, "i": { "phone": "+447700900555", "displayName": "Friend" } }),
        )
        .await;
    assert_eq!(code(&phone), "NOT_FOUND", "{phone}");
    let remove = app
        .gql(
            Some(&c.outsider.token),
            REMOVE_MEMBER,
            json!({ "t": team_id, "m": id_of(&added) }),
        )
        .await;
    assert_eq!(code(&remove), "NOT_FOUND", "{remove}");
    // …nor read the patient itself.
    let read = app
        .gql(Some(&c.outsider.token), PATIENT, json!({ "id": c.patient }))
        .await;
    assert_eq!(code(&read), "NOT_FOUND", "{read}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, now);
}

#[tokio::test]
async fn a_video_consent_does_not_let_another_organization_join_a_care_team() {
    let app = TestApp::spawn().await;
    let c = app.clinic("video").await;
    let team = create_team(&app, &c, &[]).await;
    let team_id = id_of(&team);
    grant(&app, &c, "VIDEO", &c.other_org).await;
    grant(&app, &c, "RECORDS", &c.other_org).await;
    let body = add_user(&app, &c, &team_id, &c.outsider.id).await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "{body}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, team);
    // Nor does a MESSAGING consent for some other organisation.
    grant(&app, &c, "MESSAGING", &c.other_org).await;
    let stranger = add_user(&app, &c, &team_id, &c.stranger.id).await;
    assert_eq!(code(&stranger), "CONSENT_REQUIRED", "{stranger}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, team);
}

#[tokio::test]
async fn an_expired_or_revoked_messaging_consent_does_not_count() {
    use caregraph::clock::{Clock, ManualClock};
    let clock = ManualClock::new(Utc::now());
    let app = TestApp::spawn_with_clock(clock.clone(), |_| {}).await;
    let c = app.clinic("lapsed").await;
    let team = create_team(&app, &c, &[]).await;
    let team_id = id_of(&team);

    // Revoked.
    let revoked = grant(&app, &c, "MESSAGING", &c.other_org).await;
    app.ok(
        &c.owner.token,
        REVOKE_CONSENT,
        json!({ "id": id_of(&revoked) }),
        "revokeConsent",
    )
    .await;
    let body = add_user(&app, &c, &team_id, &c.outsider.id).await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "revoked: {body}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, team);

    // Expired: valid for two seconds, then not (the app's clock moves; no real time passes).
    let expires = clock.now() + chrono::Duration::seconds(2);
    let lapsing = app
        .ok(
            &c.owner.token,
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "MESSAGING", "grantedToOrgId": c.other_org, "expiresAt": expires.to_rfc3339() } }),
            "recordConsent",
        )
        .await;
    assert_eq!(lapsing["active"], true, "{lapsing}");
    clock.advance(chrono::Duration::milliseconds(2_500));
    let p = patient(&app, &c.owner.token, &c.patient).await;
    let lapsed = consent_in(&p, &id_of(&lapsing));
    assert_eq!(lapsed["active"], false, "{lapsed}");
    assert_eq!(lapsed["revokedAt"], Value::Null, "{lapsed}");
    let body = add_user(&app, &c, &team_id, &c.outsider.id).await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "expired: {body}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, team);

    // A current consent does count.
    grant(&app, &c, "MESSAGING", &c.other_org).await;
    let body = add_user(&app, &c, &team_id, &c.outsider.id).await;
    assert_eq!(
        body["data"]["addCareTeamMember"]["role"], "EXTERNAL",
        "{body}"
    );
}

#[tokio::test]
async fn a_messaging_consent_through_a_compliance_group_lets_its_organizations_join() {
    let app = TestApp::spawn().await;
    let c = app.clinic("viagroup").await;
    let team = create_team(&app, &c, &[]).await;
    let team_id = id_of(&team);
    let group = app
        .ok(
            &c.owner.token,
            CREATE_GROUP,
            json!({ "org": c.org, "i": { "name": "Referral network", "organizationIds": [c.other_org] } }),
            "createComplianceGroup",
        )
        .await;
    // The invited organisation joins once its OWNER accepts.
    app.ok(
        &c.outsider.token,
        "mutation($g: ID!, $o: ID!) { acceptComplianceGroupInvitation(groupId: $g, orgId: $o) { id } }",
        json!({ "g": id_of(&group), "o": c.other_org }),
        "acceptComplianceGroupInvitation",
    )
    .await;
    // The group alone is no consent.
    let body = add_user(&app, &c, &team_id, &c.outsider.id).await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "{body}");

    app.ok(
        &c.client.token,
        RECORD_CONSENT,
        json!({ "p": c.patient, "i": { "scope": "MESSAGING", "complianceGroupId": id_of(&group) } }),
        "recordConsent",
    )
    .await;
    let added = app
        .ok(
            &c.vet.token,
            ADD_MEMBER,
            json!({ "t": team_id, "i": { "userId": c.outsider.id } }),
            "addCareTeamMember",
        )
        .await;
    assert_eq!(added["role"], "EXTERNAL", "{added}");
    assert_eq!(added["external"], true);
    assert_eq!(added["organization"]["id"], c.other_org.as_str());

    // An organisation outside the group still needs its own consent.
    let body = add_user(&app, &c, &team_id, &c.stranger.id).await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "{body}");
    let now = care_team(&app, &c.vet.token, &team_id).await;
    assert_eq!(len(&now["members"]), 2, "{now}");
    assert!(member(&now["members"], &c.stranger.id).is_none());
}

#[tokio::test]
async fn an_outside_clinician_joins_by_e164_phone_number_with_a_name() {
    let app = TestApp::spawn().await;
    let c = app.clinic("phone").await;
    let team = create_team(&app, &c, &[]).await;
    let team_id = id_of(&team);
    let added = app
        .ok(
            &c.tech.token,
            ADD_MEMBER,
            json!({ "t": team_id, "i": { "phone": "+44 7700 900123", "displayName": " Dr Who " } }),
            "addCareTeamMember",
        )
        .await;
    assert_eq!(added["phone"], "+447700900123", "{added}");
    assert_eq!(added["displayName"], "Dr Who");
    assert_eq!(added["user"], Value::Null);
    assert_eq!(added["role"], "EXTERNAL");
    assert_eq!(added["external"], true);
    let now = care_team(&app, &c.vet.token, &team_id).await;
    assert_eq!(len(&now["members"]), 2, "{now}");

    for (what, input, expected, bad) in [
        (
            "no name",
            json!({ "phone": "+447700900124" }),
            "BAD_USER_INPUT",
            Some("input.displayName"),
        ),
        (
            "a national number",
            json!({ "phone": "07700900123", "displayName": "Dr No" }),
            "BAD_USER_INPUT",
            Some("input.phone"),
        ),
        (
            "letters",
            json!({ "phone": "+44abc", "displayName": "Dr No" }),
            "BAD_USER_INPUT",
            Some("input.phone"),
        ),
        (
            "the same number again",
            json!({ "phone": "+447700900123", "displayName": "Dr Who Again" }),
            "CONFLICT",
            None,
        ),
    ] {
        let body = app
            .gql(
                Some(&c.vet.token),
                ADD_MEMBER,
                json!({ "t": team_id, "i": input }),
            )
            .await;
        assert_eq!(code(&body), expected, "{what}: {body}");
        if let Some(bad) = bad {
            assert_eq!(field(&body), bad, "{what}: {body}");
        }
    }
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, now);
}

#[tokio::test]
async fn a_care_team_member_is_a_user_or_a_phone_number_but_not_both() {
    let app = TestApp::spawn().await;
    let c = app.clinic("either").await;
    let team = create_team(&app, &c, &[]).await;
    let team_id = id_of(&team);
    for (what, input) in [
        (
            "both",
            json!({ "userId": c.tech.id, "phone": "+447700900123", "displayName": "Dr Both" }),
        ),
        ("neither", json!({ "displayName": "Dr Nobody" })),
    ] {
        let body = app
            .gql(
                Some(&c.vet.token),
                ADD_MEMBER,
                json!({ "t": team_id, "i": input }),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{what}: {body}");
        assert_eq!(field(&body), "input.userId", "{what}: {body}");
    }
    // An unknown user is bad input too.
    let unknown = add_user(&app, &c, &team_id, UNKNOWN_ID).await;
    assert_eq!(code(&unknown), "BAD_USER_INPUT", "{unknown}");
    assert_eq!(field(&unknown), "input.userId", "{unknown}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, team);

    // A colleague keeps the role asked for.
    let peer = app
        .ok(
            &c.vet.token,
            ADD_MEMBER,
            json!({ "t": team_id, "i": { "userId": c.tech.id, "role": "PEER_SUPPORT" } }),
            "addCareTeamMember",
        )
        .await;
    assert_eq!(peer["role"], "PEER_SUPPORT", "{peer}");
    assert_eq!(peer["external"], false);
    assert_eq!(peer["organization"], Value::Null);
}

#[tokio::test]
async fn adding_the_same_user_twice_is_a_conflict() {
    let app = TestApp::spawn().await;
    let c = app.clinic("twice").await;
    let team = create_team(&app, &c, &[]).await;
    let team_id = id_of(&team);
    let first = add_user(&app, &c, &team_id, &c.tech.id).await;
    assert_eq!(
        first["data"]["addCareTeamMember"]["role"], "MEMBER",
        "{first}"
    );
    let now = care_team(&app, &c.vet.token, &team_id).await;
    for (who, id) in [("tech", &c.tech.id), ("the lead", &c.vet.id)] {
        let again = add_user(&app, &c, &team_id, id).await;
        assert_eq!(code(&again), "CONFLICT", "{who}: {again}");
    }
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, now);
    assert_eq!(len(&now["members"]), 2, "{now}");
}

#[tokio::test]
async fn staff_remove_care_team_members_and_an_unknown_member_is_not_found() {
    let app = TestApp::spawn().await;
    let c = app.clinic("remove").await;
    let team = create_team(&app, &c, &[&c.tech.id, &c.owner.id]).await;
    let team_id = id_of(&team);
    let tech_member = id_of(member(&team["members"], &c.tech.id).expect("the tech"));
    let other = app
        .ok(
            &c.owner.token,
            CREATE_TEAM,
            json!({ "p": c.patient, "i": { "name": "Night shift", "memberIds": [c.tech.id] } }),
            "createCareTeam",
        )
        .await;
    let other_tech = id_of(member(&other["members"], &c.tech.id).expect("the tech"));

    let after = app
        .ok(
            &c.owner.token,
            REMOVE_MEMBER,
            json!({ "t": team_id, "m": tech_member }),
            "removeCareTeamMember",
        )
        .await;
    assert_eq!(len(&after["members"]), 2, "{after}");
    assert!(member(&after["members"], &c.tech.id).is_none(), "{after}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, after);

    // Removed again, unknown, or a member of another team: NOT_FOUND, and nothing changes.
    for (what, m) in [
        ("removed again", tech_member.as_str()),
        ("unknown", UNKNOWN_ID),
        ("of another team", other_tech.as_str()),
    ] {
        let body = app
            .gql(
                Some(&c.owner.token),
                REMOVE_MEMBER,
                json!({ "t": team_id, "m": m }),
            )
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{what}: {body}");
    }
    let malformed = app
        .gql(
            Some(&c.owner.token),
            REMOVE_MEMBER,
            json!({ "t": team_id, "m": "nope" }),
        )
        .await;
    assert_eq!(code(&malformed), "BAD_USER_INPUT", "{malformed}");
    assert_eq!(field(&malformed), "memberId", "{malformed}");
    assert_eq!(care_team(&app, &c.vet.token, &team_id).await, after);
    assert_eq!(care_team(&app, &c.vet.token, &id_of(&other)).await, other);

    // A phone member is removed the same way.
    let phone = app
        .ok(
            &c.vet.token,
            ADD_MEMBER,
            json!({ "t": team_id, "i": { "phone": "+15551234567", "displayName": "Dr Phone" } }),
            "addCareTeamMember",
        )
        .await;
    let without = app
        .ok(
            &c.vet.token,
            REMOVE_MEMBER,
            json!({ "t": team_id, "m": id_of(&phone) }),
            "removeCareTeamMember",
        )
        .await;
    assert_eq!(without, after);
}
