//! Compliance group invitations (issue 11 item 5): creating a group makes its organisation a
//! member and invites the others; an invited organisation counts in consent checks only after
//! one of its OWNERs or ADMINs accepts; the inviter cannot probe other organisations (an unknown
//! id is invited like an existing one, and invited organisations are shown by id only), and
//! whoever does not manage the invited organisation gets the `NOT_FOUND` of an unknown group.

use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp, code};

const GROUP_FIELDS: &str = "id name organizations { id name slug } invitedOrganizationIds";

const CREATE_GROUP: &str = "mutation($org: ID!, $i: CreateComplianceGroupInput!) {
    createComplianceGroup(orgId: $org, input: $i) { id name organizations { id name slug } invitedOrganizationIds } }";
const ACCEPT: &str = "mutation($g: ID!, $o: ID!) {
    acceptComplianceGroupInvitation(groupId: $g, orgId: $o) { id name organizations { id name slug } invitedOrganizationIds } }";
const DECLINE: &str =
    "mutation($g: ID!, $o: ID!) { declineComplianceGroupInvitation(groupId: $g, orgId: $o) }";
const INVITATIONS: &str = "query($o: ID!) { complianceGroupInvitations(orgId: $o) {
    groupId groupName organizationId invitedByOrganizationId invitedByOrganizationName invitedAt } }";
const RECORD_CONSENT: &str = "mutation($p: ID!, $i: RecordConsentInput!) {
    recordConsent(patientId: $p, input: $i) { id active complianceGroup { id } } }";
const CREATE_TEAM: &str = "mutation($p: ID!, $i: CreateCareTeamInput!) {
    createCareTeam(patientId: $p, input: $i) { id } }";
const ADD_MEMBER: &str = "mutation($t: ID!, $i: AddCareTeamMemberInput!) {
    addCareTeamMember(careTeamId: $t, input: $i) { id role external organization { id } } }";

/// A well-formed id that names nothing.
const UNKNOWN_ID: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

/// The `id` of an object.
fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an id in {v}"))
        .to_owned()
}

/// The `id`s of a list of organisations.
fn ids(orgs: &Value) -> Vec<&str> {
    orgs.as_array()
        .unwrap_or_else(|| panic!("a list in {orgs}"))
        .iter()
        .map(|o| o["id"].as_str().expect("an id"))
        .collect()
}

/// The clinic's OWNER makes a group inviting `others`; returns the group.
async fn create_group(app: &TestApp, c: &Clinic, name: &str, others: &[&str]) -> Value {
    app.ok(
        &c.owner.token,
        CREATE_GROUP,
        json!({ "org": c.org, "i": { "name": name, "organizationIds": others } }),
        "createComplianceGroup",
    )
    .await
}

/// The patient's primary guardian grants the group a MESSAGING consent.
async fn consent_to_group(app: &TestApp, c: &Clinic, group: &str) {
    let consent = app
        .ok(
            &c.client.token,
            RECORD_CONSENT,
            json!({ "p": c.patient, "i": { "scope": "MESSAGING", "complianceGroupId": group } }),
            "recordConsent",
        )
        .await;
    assert_eq!(consent["active"], true, "{consent}");
}

/// A care team around the clinic's patient, led by its vet; returns its id.
async fn care_team(app: &TestApp, c: &Clinic) -> String {
    let team = app
        .ok(
            &c.vet.token,
            CREATE_TEAM,
            json!({ "p": c.patient, "i": { "name": "Rex's team" } }),
            "createCareTeam",
        )
        .await;
    id_of(&team)
}

/// The vet adds the other organisation's OWNER to the team; returns the whole body.
async fn add_outsider(app: &TestApp, c: &Clinic, team: &str) -> Value {
    app.gql(
        Some(&c.vet.token),
        ADD_MEMBER,
        json!({ "t": team, "i": { "userId": c.outsider.id } }),
    )
    .await
}

/// The other organisation's name and slug, as its own OWNER reads them.
async fn other_org_name_and_slug(app: &TestApp, c: &Clinic) -> (String, String) {
    let org = app
        .ok(
            &c.outsider.token,
            "query($o: ID!) { organization(id: $o) { name slug } }",
            json!({ "o": c.other_org }),
            "organization",
        )
        .await;
    (
        org["name"].as_str().expect("name").to_owned(),
        org["slug"].as_str().expect("slug").to_owned(),
    )
}

#[tokio::test]
async fn an_invited_organizations_admin_accepts_and_then_consent_through_the_group_covers_it() {
    let app = TestApp::spawn().await;
    let c = app.clinic("accept").await;
    let (_, admin) = app
        .member(
            &c.outsider.token,
            &c.other_org,
            "admin@other-accept.example",
            "ADMIN",
        )
        .await;
    let group = create_group(&app, &c, "Referral ring", &[&c.other_org]).await;
    let group_id = id_of(&group);
    assert_eq!(ids(&group["organizations"]), [c.org.as_str()], "{group}");
    assert_eq!(group["invitedOrganizationIds"], json!([c.other_org]));
    consent_to_group(&app, &c, &group_id).await;
    let team = care_team(&app, &c).await;

    // The invited organisation's ADMIN sees the invitation: the group and who sent it.
    let pending = app
        .ok(
            &admin,
            INVITATIONS,
            json!({ "o": c.other_org }),
            "complianceGroupInvitations",
        )
        .await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending[0]["groupId"], group_id.as_str());
    assert_eq!(pending[0]["groupName"], "Referral ring");
    assert_eq!(pending[0]["organizationId"], c.other_org.as_str());
    assert_eq!(pending[0]["invitedByOrganizationId"], c.org.as_str());
    assert_eq!(pending[0]["invitedByOrganizationName"], "accept Clinic");

    let accepted = app
        .ok(
            &admin,
            ACCEPT,
            json!({ "g": group_id, "o": c.other_org }),
            "acceptComplianceGroupInvitation",
        )
        .await;
    let mut members = ids(&accepted["organizations"]);
    members.sort_unstable();
    let mut expected = vec![c.org.as_str(), c.other_org.as_str()];
    expected.sort_unstable();
    assert_eq!(members, expected, "{accepted}");
    assert_eq!(accepted["invitedOrganizationIds"], json!([]), "{accepted}");

    // The group's consent now covers the organisation that joined.
    let body = add_outsider(&app, &c, &team).await;
    let added = &body["data"]["addCareTeamMember"];
    assert_eq!(added["role"], "EXTERNAL", "{body}");
    assert_eq!(added["organization"]["id"], c.other_org.as_str(), "{body}");

    // Accepted once: nothing is pending, and accepting again is an unknown invitation.
    let pending = app
        .ok(
            &admin,
            INVITATIONS,
            json!({ "o": c.other_org }),
            "complianceGroupInvitations",
        )
        .await;
    assert_eq!(pending, json!([]));
    let again = app
        .gql(
            Some(&admin),
            ACCEPT,
            json!({ "g": group_id, "o": c.other_org }),
        )
        .await;
    assert_eq!(code(&again), "NOT_FOUND", "{again}");
}

#[tokio::test]
async fn before_acceptance_a_group_consent_does_not_cover_an_invited_organization() {
    let app = TestApp::spawn().await;
    let c = app.clinic("pending").await;
    let group = id_of(&create_group(&app, &c, "Ring", &[&c.other_org]).await);
    consent_to_group(&app, &c, &group).await;
    let team = care_team(&app, &c).await;

    let body = add_outsider(&app, &c, &team).await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "{body}");

    // Declining leaves it uncovered for good: the invitation is gone.
    let declined = app
        .ok(
            &c.outsider.token,
            DECLINE,
            json!({ "g": group, "o": c.other_org }),
            "declineComplianceGroupInvitation",
        )
        .await;
    assert_eq!(declined, true);
    let late = app
        .gql(
            Some(&c.outsider.token),
            ACCEPT,
            json!({ "g": group, "o": c.other_org }),
        )
        .await;
    assert_eq!(code(&late), "NOT_FOUND", "{late}");
    let body = add_outsider(&app, &c, &team).await;
    assert_eq!(code(&body), "CONSENT_REQUIRED", "{body}");
    let pending = app
        .ok(
            &c.outsider.token,
            INVITATIONS,
            json!({ "o": c.other_org }),
            "complianceGroupInvitations",
        )
        .await;
    assert_eq!(pending, json!([]));
}

#[tokio::test]
async fn a_stranger_cannot_accept_an_invitation_and_hears_what_an_unknown_group_answers() {
    let app = TestApp::spawn().await;
    let c = app.clinic("strangers").await;
    let group = id_of(&create_group(&app, &c, "Ring", &[&c.other_org]).await);
    let (_, staff) = app
        .member(
            &c.outsider.token,
            &c.other_org,
            "staff@other-strangers.example",
            "STAFF",
        )
        .await;

    let unknown = app
        .gql(
            Some(&c.outsider.token),
            ACCEPT,
            json!({ "g": UNKNOWN_ID, "o": c.other_org }),
        )
        .await;
    assert_eq!(code(&unknown), "NOT_FOUND", "{unknown}");
    for (who, token, org) in [
        ("a stranger", &c.stranger.token, &c.other_org),
        ("staff of the invited organisation", &staff, &c.other_org),
        ("the inviter's OWNER", &c.owner.token, &c.other_org),
        (
            "the inviter's OWNER, for its own organisation",
            &c.owner.token,
            &c.org,
        ),
    ] {
        for (doc, field) in [
            (ACCEPT, "acceptComplianceGroupInvitation"),
            (DECLINE, "declineComplianceGroupInvitation"),
        ] {
            let body = app
                .gql(Some(token), doc, json!({ "g": group, "o": org }))
                .await;
            assert_eq!(body["data"], Value::Null, "{who}, {field}: {body}");
            assert_eq!(
                body["errors"][0]["extensions"], unknown["errors"][0]["extensions"],
                "{who}, {field}: {body}"
            );
            assert_eq!(
                body["errors"][0]["message"], unknown["errors"][0]["message"],
                "{who}, {field}: {body}"
            );
        }
    }
    let anonymous = app
        .gql(None, ACCEPT, json!({ "g": group, "o": c.other_org }))
        .await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{anonymous}");

    // Only the invited organisation's OWNERs and ADMINs list its invitations.
    for (who, token, expected) in [
        ("a stranger", &c.stranger.token, "NOT_FOUND"),
        ("the inviter's OWNER", &c.owner.token, "NOT_FOUND"),
        ("staff of the invited organisation", &staff, "FORBIDDEN"),
    ] {
        let body = app
            .gql(Some(token), INVITATIONS, json!({ "o": c.other_org }))
            .await;
        assert_eq!(code(&body), expected, "{who}: {body}");
    }

    // Nothing changed: the invitation is still there for the one who may accept it.
    let pending = app
        .ok(
            &c.outsider.token,
            INVITATIONS,
            json!({ "o": c.other_org }),
            "complianceGroupInvitations",
        )
        .await;
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending[0]["groupId"], group.as_str());
}

#[tokio::test]
async fn the_inviter_cannot_tell_an_existing_organization_from_a_missing_one() {
    let app = TestApp::spawn().await;
    let c = app.clinic("probe").await;
    let answer = |other: &str| {
        let (app, c, other) = (&app, &c, other.to_owned());
        async move {
            let body = app
                .gql(
                    Some(&c.owner.token),
                    CREATE_GROUP,
                    json!({ "org": c.org, "i": { "name": "Probe", "organizationIds": [other] } }),
                )
                .await;
            // The only differences allowed: the new group's id and the id the caller sent.
            let group = body["data"]["createComplianceGroup"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("a group in {body}"))
                .to_owned();
            body.to_string()
                .replace(&group, "<group>")
                .replace(&other, "<other>")
        }
    };
    let existing = answer(&c.other_org).await;
    let missing = answer(UNKNOWN_ID).await;
    assert_eq!(existing, missing);
    assert!(!existing.contains("errors"), "{existing}");

    // Listing both at once is no different either.
    let both = create_group(&app, &c, "Both", &[&c.other_org, UNKNOWN_ID]).await;
    assert_eq!(
        both["invitedOrganizationIds"],
        json!([c.other_org, UNKNOWN_ID])
    );
    assert_eq!(ids(&both["organizations"]), [c.org.as_str()], "{both}");
}

#[tokio::test]
async fn invited_organization_names_are_not_revealed_to_the_inviter() {
    let app = TestApp::spawn().await;
    let c = app.clinic("names").await;
    let (name, slug) = other_org_name_and_slug(&app, &c).await;
    let created = create_group(&app, &c, "Ring", &[&c.other_org]).await;
    let group = id_of(&created);
    consent_to_group(&app, &c, &group).await;
    let text = created.to_string();
    assert!(!text.contains(&name) && !text.contains(&slug), "{text}");

    // Nor through the consent that names the group, whoever reads it; only the inviter's
    // managers see the invited id.
    let read = format!(
        "query($p: ID!) {{ patient(id: $p) {{ consents {{ complianceGroup {{ {GROUP_FIELDS} }} }} }} }}"
    );
    for (who, token, sees_invited) in [
        ("the inviter's OWNER", &c.owner.token, true),
        ("the inviter's vet", &c.vet.token, false),
        ("the patient's guardian", &c.client.token, false),
    ] {
        let body = app
            .ok(token, &read, json!({ "p": c.patient }), "patient")
            .await;
        let text = body.to_string();
        assert!(
            !text.contains(&name) && !text.contains(&slug),
            "{who}: {text}"
        );
        let seen = &body["consents"][0]["complianceGroup"];
        assert_eq!(
            ids(&seen["organizations"]),
            [c.org.as_str()],
            "{who}: {body}"
        );
        let invited = if sees_invited {
            json!([c.other_org])
        } else {
            json!([])
        };
        assert_eq!(seen["invitedOrganizationIds"], invited, "{who}: {body}");
    }

    // Once the organisation accepts, it is a member like any other and its name shows.
    app.ok(
        &c.outsider.token,
        ACCEPT,
        json!({ "g": group, "o": c.other_org }),
        "acceptComplianceGroupInvitation",
    )
    .await;
    let body = app
        .ok(&c.owner.token, &read, json!({ "p": c.patient }), "patient")
        .await;
    assert!(body.to_string().contains(&name), "{body}");
}
