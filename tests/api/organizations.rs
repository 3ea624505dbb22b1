//! Organisations and members: creation, membership management, and the
//! authorization matrix (a non-member learns nothing: NOT_FOUND; a plain member is FORBIDDEN;
//! anonymous is UNAUTHENTICATED), each changing nothing.

use serde_json::{Value, json};

use crate::helpers::{TestApp, code};

const CREATE: &str = "mutation($i: CreateOrganizationInput!) { createOrganization(input: $i) { id name slug crossOrgMessaging } }";
const ADD: &str = "mutation($o: ID!, $i: AddOrganizationMemberInput!) { addOrganizationMember(orgId: $o, input: $i) { user { id email displayName } role title active organization { slug } } }";
const UPDATE_MEMBER: &str = "mutation($o: ID!, $u: ID!, $i: UpdateOrganizationMemberInput!) { updateOrganizationMember(orgId: $o, userId: $u, input: $i) { role title active } }";
const UPDATE_ORG: &str = "mutation($o: ID!, $i: UpdateOrganizationInput!) { updateOrganization(orgId: $o, input: $i) { name crossOrgMessaging } }";
const MEMBERSHIPS: &str = "{ viewer { memberships { role active organization { id name } } } }";

async fn memberships(app: &TestApp, token: &str) -> Value {
    app.gql(Some(token), MEMBERSHIPS, json!({})).await["data"]["viewer"]["memberships"].clone()
}

#[tokio::test]
async fn a_signed_in_user_creates_an_organization_and_becomes_its_owner() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("First", "first@example.org").await;
    let body = app
        .gql(
            Some(&token),
            CREATE,
            json!({"i": {"name": "  Harbour Vets ", "slug": "harbour-vets"}}),
        )
        .await;
    assert_eq!(body["data"]["createOrganization"]["name"], "Harbour Vets");
    assert_eq!(
        body["data"]["createOrganization"]["crossOrgMessaging"],
        false
    );
    let list = memberships(&app, &token).await;
    assert_eq!(list.as_array().expect("list").len(), 2);
    assert_eq!(list[1]["role"], "OWNER");
    assert_eq!(list[1]["organization"]["name"], "Harbour Vets");

    // A taken slug is a conflict; a malformed one names the field; neither creates anything.
    let taken = app
        .gql(
            Some(&token),
            CREATE,
            json!({"i": {"name": "Again", "slug": "harbour-vets"}}),
        )
        .await;
    assert_eq!(code(&taken), "CONFLICT");
    let bad = app
        .gql(
            Some(&token),
            CREATE,
            json!({"i": {"name": "Bad", "slug": "Not A Slug"}}),
        )
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");
    assert_eq!(bad["errors"][0]["extensions"]["field"], "slug");
    let empty = app
        .gql(
            Some(&token),
            CREATE,
            json!({"i": {"name": "   ", "slug": "fine-slug"}}),
        )
        .await;
    assert_eq!(empty["errors"][0]["extensions"]["field"], "name");
    assert_eq!(
        memberships(&app, &token)
            .await
            .as_array()
            .expect("list")
            .len(),
        2
    );

    let anon = app
        .gql(None, CREATE, json!({"i": {"name": "Anon", "slug": "anon"}}))
        .await;
    assert_eq!(code(&anon), "UNAUTHENTICATED");
}

#[tokio::test]
async fn closed_signup_leaves_organization_creation_to_bootstrap() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_OPEN_SIGNUP".into(), "false".into());
    })
    .await;
    let (_, _, token) = app.owner("Boot", "boot@example.org").await;
    let body = app
        .gql(
            Some(&token),
            CREATE,
            json!({"i": {"name": "Nope", "slug": "nope"}}),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
}

#[tokio::test]
async fn an_admin_adds_members_creating_users_for_new_emails() {
    let app = TestApp::spawn().await;
    let (_, org, owner) = app.owner("Members", "members-owner@example.org").await;
    let body = app
        .gql(
            Some(&owner),
            ADD,
            json!({"o": org, "i": {
                "email": "New.Vet@Example.org", "givenName": "Nia", "familyName": "Vet",
                "role": "PRACTITIONER", "title": "Veterinarian", "password": "a long password 1"
            }}),
        )
        .await;
    let added = &body["data"]["addOrganizationMember"];
    assert_eq!(added["user"]["email"], "new.vet@example.org", "{body}");
    assert_eq!(added["user"]["displayName"], "Nia Vet");
    assert_eq!(added["role"], "PRACTITIONER");
    assert_eq!(added["title"], "Veterinarian");
    assert_eq!(added["active"], true);
    assert_eq!(added["organization"]["slug"], "members");

    // The new member can sign in with the password given.
    let login = app
        .gql(None, "mutation { login(email: \"new.vet@example.org\", password: \"a long password 1\") { user { email } } }", json!({}))
        .await;
    assert_eq!(
        login["data"]["login"]["user"]["email"],
        "new.vet@example.org"
    );

    // Adding the same person again is a conflict; an existing user from elsewhere joins as is.
    let again = app
        .gql(Some(&owner), ADD, json!({"o": org, "i": {"email": "new.vet@example.org", "givenName": "X", "familyName": "Y", "role": "STAFF"}}))
        .await;
    assert_eq!(code(&again), "CONFLICT");
    let (_, _, _) = app.owner("Elsewhere", "elsewhere@example.org").await;
    let join = app
        .gql(Some(&owner), ADD, json!({"o": org, "i": {"email": "elsewhere@example.org", "givenName": "Ignored", "familyName": "Ignored", "role": "STAFF"}}))
        .await;
    assert_eq!(
        join["data"]["addOrganizationMember"]["user"]["displayName"],
        "Test Owner"
    );

    // Bad input names the field.
    for (input, field) in [
        (
            json!({"email": "nope", "givenName": "A", "familyName": "B", "role": "STAFF"}),
            "input.email",
        ),
        (
            json!({"email": "a@example.org", "givenName": " ", "familyName": "B", "role": "STAFF"}),
            "input.givenName",
        ),
        (
            json!({"email": "a@example.org", "givenName": "A", "familyName": "B", "role": "STAFF", "password": "short"}),
            "input.password",
        ),
    ] {
        let body = app
            .gql(Some(&owner), ADD, json!({"o": org, "i": input}))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
    let bad_id = app.gql(Some(&owner), ADD, json!({"o": "not-an-id", "i": {"email": "a@example.org", "givenName": "A", "familyName": "B", "role": "STAFF"}})).await;
    assert_eq!(bad_id["errors"][0]["extensions"]["field"], "orgId");
}

#[tokio::test]
async fn only_owners_and_admins_manage_members_and_outsiders_learn_nothing() {
    let app = TestApp::spawn().await;
    let (_, org, owner) = app.owner("Matrix", "matrix-owner@example.org").await;
    let (staff_id, staff) = app
        .member(&owner, &org, "matrix-staff@example.org", "STAFF")
        .await;
    let (_, admin) = app
        .member(&owner, &org, "matrix-admin@example.org", "ADMIN")
        .await;
    let (_, _, outsider) = app.owner("Other", "matrix-outsider@example.org").await;

    let add = |email: &str| json!({"o": org, "i": {"email": email, "givenName": "A", "familyName": "B", "role": "STAFF"}});
    let cases: [(&str, Option<&str>, &str, Value); 9] = [
        ("staff adds", Some(&staff), ADD, add("x1@example.org")),
        ("outsider adds", Some(&outsider), ADD, add("x2@example.org")),
        ("anonymous adds", None, ADD, add("x3@example.org")),
        (
            "staff updates",
            Some(&staff),
            UPDATE_MEMBER,
            json!({"o": org, "u": staff_id, "i": {"role": "ADMIN"}}),
        ),
        (
            "outsider updates",
            Some(&outsider),
            UPDATE_MEMBER,
            json!({"o": org, "u": staff_id, "i": {"active": false}}),
        ),
        (
            "anonymous updates",
            None,
            UPDATE_MEMBER,
            json!({"o": org, "u": staff_id, "i": {"active": false}}),
        ),
        (
            "staff renames",
            Some(&staff),
            UPDATE_ORG,
            json!({"o": org, "i": {"name": "Hijacked"}}),
        ),
        (
            "outsider renames",
            Some(&outsider),
            UPDATE_ORG,
            json!({"o": org, "i": {"name": "Hijacked"}}),
        ),
        (
            "anonymous renames",
            None,
            UPDATE_ORG,
            json!({"o": org, "i": {"name": "Hijacked"}}),
        ),
    ];
    for (what, token, query, vars) in cases {
        let body = app.gql(token, query, vars).await;
        let expected = match token {
            None => "UNAUTHENTICATED",
            Some(t) if t == outsider => "NOT_FOUND",
            Some(_) => "FORBIDDEN",
        };
        assert_eq!(code(&body), expected, "{what}: {body}");
    }
    let org_query = "query($o: ID!) { organization(id: $o) { name } }";
    assert_eq!(
        code(&app.gql(Some(&outsider), org_query, json!({"o": org})).await),
        "NOT_FOUND"
    );

    // Nothing changed.
    let body = app.gql(Some(&staff), org_query, json!({"o": org})).await;
    assert_eq!(body["data"]["organization"]["name"], "Matrix");
    let list = memberships(&app, &staff).await;
    assert_eq!(list[0]["role"], "STAFF");
    assert_eq!(list[0]["active"], true);
    for email in ["x1@example.org", "x2@example.org", "x3@example.org"] {
        let login = app.gql(None, "mutation($e: String!) { login(email: $e, password: \"a long password 1\") { accessToken } }", json!({"e": email})).await;
        assert_eq!(code(&login), "UNAUTHENTICATED");
    }

    // An admin may rename and manage staff, but not grant OWNER.
    let body = app
        .gql(
            Some(&admin),
            UPDATE_ORG,
            json!({"o": org, "i": {"name": "Matrix Vets", "crossOrgMessaging": true}}),
        )
        .await;
    assert_eq!(
        body["data"]["updateOrganization"],
        json!({"name": "Matrix Vets", "crossOrgMessaging": true})
    );
    let body = app.gql(Some(&admin), UPDATE_MEMBER, json!({"o": org, "u": staff_id, "i": {"title": "Receptionist", "role": "PRACTITIONER"}})).await;
    assert_eq!(
        body["data"]["updateOrganizationMember"],
        json!({"role": "PRACTITIONER", "title": "Receptionist", "active": true})
    );
    let body = app
        .gql(
            Some(&admin),
            UPDATE_MEMBER,
            json!({"o": org, "u": staff_id, "i": {"role": "OWNER"}}),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN");
    // `title: null` clears the title; omitted fields stay.
    let body = app
        .gql(
            Some(&admin),
            UPDATE_MEMBER,
            json!({"o": org, "u": staff_id, "i": {"title": null}}),
        )
        .await;
    assert_eq!(
        body["data"]["updateOrganizationMember"],
        json!({"role": "PRACTITIONER", "title": null, "active": true})
    );
}

#[tokio::test]
async fn the_last_active_owner_cannot_be_demoted_or_deactivated() {
    let app = TestApp::spawn().await;
    let (owner_user, org, owner) = app.owner("Owners", "owners@example.org").await;
    let me = owner_user.id.to_string();
    for change in [json!({"role": "ADMIN"}), json!({"active": false})] {
        let body = app
            .gql(
                Some(&owner),
                UPDATE_MEMBER,
                json!({"o": org, "u": me, "i": change}),
            )
            .await;
        assert_eq!(code(&body), "CONFLICT", "{body}");
    }
    let (second_id, _) = app
        .member(&owner, &org, "second-owner@example.org", "OWNER")
        .await;
    let body = app
        .gql(
            Some(&owner),
            UPDATE_MEMBER,
            json!({"o": org, "u": me, "i": {"role": "ADMIN"}}),
        )
        .await;
    assert_eq!(body["data"]["updateOrganizationMember"]["role"], "ADMIN");
    // Now the second owner is the last one.
    let second = app.token_for_email("second-owner@example.org").await;
    let body = app
        .gql(
            Some(&second),
            UPDATE_MEMBER,
            json!({"o": org, "u": second_id, "i": {"active": false}}),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT");
}

#[tokio::test]
async fn a_deactivated_member_loses_access_to_the_organization() {
    let app = TestApp::spawn().await;
    let (_, org, owner) = app.owner("Deact", "deact@example.org").await;
    let (staff_id, staff) = app
        .member(&owner, &org, "deact-staff@example.org", "STAFF")
        .await;
    let q = "query($o: ID!) { organization(id: $o) { name } }";
    assert_eq!(
        app.gql(Some(&staff), q, json!({"o": org})).await["data"]["organization"]["name"],
        "Deact"
    );
    let body = app
        .gql(
            Some(&owner),
            UPDATE_MEMBER,
            json!({"o": org, "u": staff_id, "i": {"active": false}}),
        )
        .await;
    assert_eq!(body["data"]["updateOrganizationMember"]["active"], false);
    assert_eq!(
        code(&app.gql(Some(&staff), q, json!({"o": org})).await),
        "NOT_FOUND"
    );
    // The membership still shows, inactive, in the member's own list.
    assert_eq!(memberships(&app, &staff).await[0]["active"], false);
}
