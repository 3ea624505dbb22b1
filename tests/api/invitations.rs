//! Invitations: staff invite guardians (`inviteGuardian`) and OWNER/ADMIN invite staff
//! (`inviteOrganizationMember`, never above their own role); the invitee accepts anonymously
//! (`acceptInvitation`) once, before it expires; the token is stored only as its SHA-256; the
//! mail goes to the local outbox table by default, or over SMTP (checked against a tiny fake
//! SMTP server) without being lost in an outage; audit records hold ids only.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine;
use caregraph::{
    db::entities::{audit_event, invitation, membership, user},
    mail::StoredMail,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

use crate::helpers::{Clinic, TestApp, code, quick};

const INVITE_MEMBER: &str = "mutation Invite($org: ID!, $input: InviteOrganizationMemberInput!) { inviteOrganizationMember(orgId: $org, input: $input) { id email expiresAt acceptUrl status kind role title organizationId invitedBy { id } } }";
const INVITE_GUARDIAN: &str = "mutation InviteGuardian($p: ID!, $input: InviteGuardianInput!) { inviteGuardian(patientId: $p, input: $input) { id email expiresAt acceptUrl status kind patientId relationship canChat } }";
const ACCEPT: &str = "mutation Accept($t: String!, $pw: String!) { acceptInvitation(token: $t, password: $pw) { accessToken expiresAt user { id email displayName } } }";
const REVOKE: &str =
    "mutation Revoke($id: ID!) { revokeInvitation(id: $id) { id status revokedAt acceptUrl } }";
const LIST: &str = "query List($org: ID!, $first: Int, $after: String, $pending: Boolean) { invitations(orgId: $org, first: $first, after: $after, pendingOnly: $pending) { totalCount pageInfo { hasNextPage endCursor } edges { node { id email kind status acceptUrl } } } }";
const LOGIN: &str =
    "mutation SignIn($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }";
const COLLEAGUES: &str = "query($o: ID!) { colleagues(orgId: $o, first: 100, includeInactive: true) { edges { node { user { email } role title active } } } }";
const PATIENT: &str =
    "query($id: ID!) { patient(id: $id) { guardians { user { email } relationship canChat } } }";

/// A password good enough for the rules (at least 10 characters).
const PASSWORD: &str = "correct horse battery";

fn member_input(email: &str, role: &str) -> Value {
    json!({ "email": email, "givenName": "Nia", "familyName": "New", "role": role, "title": "Nurse" })
}

fn guardian_input(email: &str) -> Value {
    json!({ "email": email, "givenName": "Gus", "familyName": "Guardian", "canChat": true })
}

/// The token in an accept URL's fragment.
fn token_of(accept_url: &str) -> String {
    accept_url
        .split_once("#token=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("no token in {accept_url}"))
}

async fn invite_member(app: &TestApp, by: &str, org: &str, email: &str, role: &str) -> Value {
    app.ok(
        by,
        INVITE_MEMBER,
        json!({ "org": org, "input": member_input(email, role) }),
        "inviteOrganizationMember",
    )
    .await
}

async fn invite_guardian(app: &TestApp, by: &str, patient: &str, email: &str) -> Value {
    app.ok(
        by,
        INVITE_GUARDIAN,
        json!({ "p": patient, "input": guardian_input(email) }),
        "inviteGuardian",
    )
    .await
}

async fn accept(app: &TestApp, token: &str, password: &str) -> Value {
    app.gql(None, ACCEPT, json!({ "t": token, "pw": password }))
        .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    app.gql(None, LOGIN, json!({ "e": email, "p": password }))
        .await
}

/// Every invitation of the clinic, as its OWNER sees them, newest first.
async fn every_invitation(app: &TestApp, c: &Clinic) -> Value {
    app.ok(
        &c.owner.token,
        LIST,
        json!({ "org": c.org, "pending": false }),
        "invitations",
    )
    .await
}

async fn colleague_emails(app: &TestApp, c: &Clinic) -> Vec<String> {
    app.ok(
        &c.owner.token,
        COLLEAGUES,
        json!({ "o": c.org }),
        "colleagues",
    )
    .await["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["user"]["email"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn user_count(app: &TestApp, email: &str) -> usize {
    user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .all(&app.state.services.db)
        .await
        .expect("users")
        .len()
}

/// Waits (up to 10 s) until the invitation's mail left the `pending` state.
async fn settled_mail(app: &TestApp, invitation_id: &str) -> StoredMail {
    let queue = app.state.services.invitations.mail();
    for _ in 0..400 {
        let mails = queue.of_invitation(invitation_id).await.expect("mails");
        if let Some(mail) = mails.first()
            && mail.status != "pending"
        {
            assert_eq!(mails.len(), 1, "one mail per invitation: {mails:?}");
            return mail.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the mail of {invitation_id} stayed pending");
}

/// Every audit record written so far.
async fn audit_records(app: &TestApp) -> Vec<audit_event::Model> {
    assert!(
        app.state.services.audit.written().await,
        "the audit queue drains"
    );
    audit_event::Entity::find()
        .all(&app.state.services.db)
        .await
        .expect("records")
}

#[tokio::test]
async fn a_guardian_invitation_returns_its_url_and_accepting_it_makes_a_guardian_who_signs_in() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("ginv").await;
    let invited = invite_guardian(&app, &c.tech.token, &c.patient, "Gus@GInv.example").await;
    assert_eq!(invited["email"], "gus@ginv.example");
    assert_eq!(invited["status"], "PENDING");
    assert_eq!(invited["kind"], "GUARDIAN");
    assert_eq!(invited["patientId"], c.patient.as_str());
    assert_eq!(invited["relationship"], "CO_GUARDIAN");
    assert_eq!(invited["canChat"], true);
    let url = invited["acceptUrl"].as_str().expect("acceptUrl");
    assert!(
        url.starts_with(&app.url("/accept-invitation#token=")),
        "{url}"
    );
    let token = token_of(url);
    assert_eq!(token.len(), 43);

    // Pending: no account, no guardian link, no sign-in.
    assert_eq!(user_count(&app, "gus@ginv.example").await, 0);
    assert_eq!(
        code(&login(&app, "gus@ginv.example", PASSWORD).await),
        "UNAUTHENTICATED"
    );
    let before = app
        .ok(
            &c.owner.token,
            PATIENT,
            json!({ "id": c.patient }),
            "patient",
        )
        .await;
    assert!(!before.to_string().contains("gus@ginv.example"), "{before}");

    let accepted = accept(&app, &token, PASSWORD).await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    let payload = &accepted["data"]["acceptInvitation"];
    assert_eq!(payload["user"]["email"], "gus@ginv.example");
    assert_eq!(payload["user"]["displayName"], "Gus Guardian");
    let guardian_token = payload["accessToken"].as_str().expect("token");
    let mine = app
        .ok(
            guardian_token,
            "{ viewer { patients { id } } }",
            json!({}),
            "viewer",
        )
        .await;
    assert_eq!(mine["patients"][0]["id"], c.patient.as_str(), "{mine}");
    let after = app
        .ok(
            &c.owner.token,
            PATIENT,
            json!({ "id": c.patient }),
            "patient",
        )
        .await;
    let gus = after["guardians"]
        .as_array()
        .expect("guardians")
        .iter()
        .find(|g| g["user"]["email"] == "gus@ginv.example")
        .unwrap_or_else(|| panic!("guardian added: {after}"));
    assert_eq!(gus["relationship"], "CO_GUARDIAN");
    assert_eq!(gus["canChat"], true);
    let signed_in = login(&app, "gus@ginv.example", PASSWORD).await;
    assert!(signed_in.get("errors").is_none(), "{signed_in}");
}

#[tokio::test]
async fn a_pending_member_cannot_sign_in_and_is_no_colleague_until_accepted() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("minv").await;
    let invited = invite_member(
        &app,
        &c.owner.token,
        &c.org,
        "nia@minv.example",
        "PRACTITIONER",
    )
    .await;
    assert_eq!(invited["role"], "PRACTITIONER");
    assert_eq!(invited["title"], "Nurse");
    assert_eq!(invited["organizationId"], c.org.as_str());
    assert_eq!(invited["invitedBy"]["id"], c.owner.id.as_str());
    assert!(
        !colleague_emails(&app, &c)
            .await
            .contains(&"nia@minv.example".to_owned())
    );
    assert_eq!(
        code(&login(&app, "nia@minv.example", PASSWORD).await),
        "UNAUTHENTICATED"
    );

    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    let accepted = accept(&app, &token, PASSWORD).await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    let list = app
        .ok(
            &c.owner.token,
            COLLEAGUES,
            json!({ "o": c.org }),
            "colleagues",
        )
        .await;
    let nia = list["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["node"]["user"]["email"] == "nia@minv.example")
        .unwrap_or_else(|| panic!("member added: {list}"));
    assert_eq!(nia["node"]["role"], "PRACTITIONER");
    assert_eq!(nia["node"]["title"], "Nurse");
    assert_eq!(nia["node"]["active"], true);
    let signed_in = login(&app, "nia@minv.example", PASSWORD).await;
    assert!(signed_in.get("errors").is_none(), "{signed_in}");
}

#[tokio::test]
async fn only_owners_and_admins_invite_staff_and_nobody_invites_above_their_own_role() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("rinv").await;
    let (_, admin) = app
        .member(&c.owner.token, &c.org, "admin@rinv.example", "ADMIN")
        .await;
    let body = |token: &str, role: &str| {
        let (app, org, token, role) = (&app, c.org.clone(), token.to_owned(), role.to_owned());
        async move {
            app.gql(
                Some(&token),
                INVITE_MEMBER,
                json!({ "org": org, "input": member_input(&format!("invited-{}@rinv.example", role.to_lowercase()), &role) }),
            )
            .await
        }
    };
    assert_eq!(code(&body(&c.vet.token, "STAFF").await), "FORBIDDEN");
    assert_eq!(code(&body(&c.tech.token, "STAFF").await), "FORBIDDEN");
    assert_eq!(code(&body(&admin, "OWNER").await), "FORBIDDEN");
    assert_eq!(code(&body(&c.outsider.token, "STAFF").await), "NOT_FOUND");
    assert_eq!(code(&body(&c.client.token, "STAFF").await), "NOT_FOUND");
    let as_admin = body(&admin, "ADMIN").await;
    assert!(as_admin.get("errors").is_none(), "{as_admin}");
    let as_owner = body(&c.owner.token, "OWNER").await;
    assert!(as_owner.get("errors").is_none(), "{as_owner}");
    // An ADMIN cannot revoke an OWNER invitation either.
    let id = as_owner["data"]["inviteOrganizationMember"]["id"].clone();
    assert_eq!(
        code(&app.gql(Some(&admin), REVOKE, json!({ "id": id })).await),
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn a_guardian_is_invited_only_by_staff_of_the_patients_organisation() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("sinv").await;
    for (token, expected) in [
        (&c.client.token, "FORBIDDEN"),
        (&c.outsider.token, "NOT_FOUND"),
        (&c.stranger.token, "NOT_FOUND"),
    ] {
        let body = app
            .gql(
                Some(token),
                INVITE_GUARDIAN,
                json!({ "p": c.patient, "input": guardian_input("gus@sinv.example") }),
            )
            .await;
        assert_eq!(code(&body), expected, "{body}");
    }
    let anonymous = app
        .gql(
            None,
            INVITE_GUARDIAN,
            json!({ "p": c.patient, "input": guardian_input("gus@sinv.example") }),
        )
        .await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    let stored = invitation::Entity::find()
        .all(&app.state.services.db)
        .await
        .expect("rows");
    assert!(stored.is_empty(), "nothing was stored: {stored:?}");
    invite_guardian(&app, &c.vet.token, &c.patient, "gus@sinv.example").await;
}

#[tokio::test]
async fn an_invitation_works_once_and_a_second_accept_changes_nothing() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("oinv").await;
    let invited = invite_member(&app, &c.owner.token, &c.org, "once@oinv.example", "STAFF").await;
    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    let first = accept(&app, &token, PASSWORD).await;
    assert!(first.get("errors").is_none(), "{first}");
    let second = accept(&app, &token, "another long password").await;
    assert_eq!(code(&second), "INVITATION_USED", "{second}");
    assert!(second["data"].is_null() || second["data"]["acceptInvitation"].is_null());
    assert_eq!(user_count(&app, "once@oinv.example").await, 1);
    assert_eq!(
        code(&login(&app, "once@oinv.example", "another long password").await),
        "UNAUTHENTICATED"
    );
    let signed_in = login(&app, "once@oinv.example", PASSWORD).await;
    assert!(signed_in.get("errors").is_none(), "{signed_in}");
    let listed = every_invitation(&app, &c).await;
    assert_eq!(listed["edges"][0]["node"]["status"], "ACCEPTED", "{listed}");
}

#[tokio::test]
async fn two_concurrent_accepts_of_one_invitation_make_one_account() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("dinv").await;
    let invited = invite_guardian(&app, &c.tech.token, &c.patient, "race@dinv.example").await;
    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    let (a, b) = tokio::join!(
        accept(&app, &token, PASSWORD),
        accept(&app, &token, "another long password")
    );
    let codes: Vec<_> = [&a, &b]
        .iter()
        .map(|body| body.get("errors").map(|_| code(body).to_owned()))
        .collect();
    assert!(
        codes.contains(&None) && codes.contains(&Some("INVITATION_USED".to_owned())),
        "one accept wins, the other is told the invitation is used: {a} {b}"
    );
    assert_eq!(user_count(&app, "race@dinv.example").await, 1);
}

#[tokio::test]
async fn an_expired_invitation_is_refused_and_changes_nothing() {
    let clock = caregraph::clock::ManualClock::new(chrono::Utc::now());
    let app = TestApp::spawn_with_clock(clock.clone(), |v| {
        quick(v);
        v.insert("CAREGRAPH_INVITATION_TTL_HOURS".into(), "24".into());
    })
    .await;
    let c = app.clinic("einv").await;
    let invited = invite_guardian(&app, &c.owner.token, &c.patient, "late@einv.example").await;
    let expires: chrono::DateTime<chrono::Utc> = invited["expiresAt"]
        .as_str()
        .expect("expiresAt")
        .parse()
        .expect("a time");
    let made = caregraph::clock::Clock::now(&clock);
    assert!(
        (expires - made - chrono::Duration::hours(24))
            .num_seconds()
            .abs()
            <= 1,
        "{expires} vs {made}"
    );
    clock.advance(chrono::Duration::hours(24) + chrono::Duration::seconds(1));
    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    let late = accept(&app, &token, PASSWORD).await;
    assert_eq!(code(&late), "INVITATION_EXPIRED", "{late}");
    assert_eq!(user_count(&app, "late@einv.example").await, 0);
    let pending = app
        .ok(&c.owner.token, LIST, json!({ "org": c.org }), "invitations")
        .await;
    assert_eq!(pending["totalCount"], 0, "{pending}");
    let all = every_invitation(&app, &c).await;
    assert_eq!(all["edges"][0]["node"]["status"], "EXPIRED", "{all}");
}

#[tokio::test]
async fn the_token_is_stored_only_as_its_sha256_and_audit_records_hold_ids_only() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("hinv").await;
    let invited =
        invite_guardian(&app, &c.tech.token, &c.patient, "planted-gus@hinv.example").await;
    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    let id = invited["id"].as_str().expect("id").to_owned();
    let rows = invitation::Entity::find()
        .all(&app.state.services.db)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].token_hash,
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert!(!format!("{:?}", rows[0]).contains(&token));
    let accepted = accept(&app, &token, PASSWORD).await;
    let new_user = accepted["data"]["acceptInvitation"]["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("accepted: {accepted}"))
        .to_owned();

    let records = audit_records(&app).await;
    let of_invitation: Vec<_> = records
        .iter()
        .filter(|r| r.entity_type == "INVITATION")
        .collect();
    assert_eq!(of_invitation.len(), 2, "{of_invitation:?}");
    let created = of_invitation
        .iter()
        .find(|r| r.action == "CREATE")
        .expect("CREATE");
    assert_eq!(created.entity_id.as_deref(), Some(id.as_str()));
    assert_eq!(created.actor_id.as_deref(), Some(c.tech.id.as_str()));
    assert_eq!(created.org_id.as_deref(), Some(c.org.as_str()));
    assert_eq!(created.patient_id.as_deref(), Some(c.patient.as_str()));
    let used = of_invitation
        .iter()
        .find(|r| r.action == "UPDATE")
        .expect("accept");
    assert_eq!(used.entity_id.as_deref(), Some(id.as_str()));
    assert_eq!(used.actor_id.as_deref(), Some(new_user.as_str()));
    assert!(
        records.iter().any(|r| r.entity_type == "GUARDIAN"
            && r.action == "CREATE"
            && r.entity_id.as_deref() == Some(new_user.as_str())),
        "the guardian link is recorded"
    );
    let everything = format!("{records:?}");
    assert!(
        !everything.contains("planted-gus"),
        "no email in audit records"
    );
    assert!(!everything.contains(&token), "no token in audit records");
}

#[tokio::test]
async fn an_existing_account_accepts_with_its_own_password_and_keeps_it() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("xinv").await;
    // The stranger has an account (password "a long password 1") and no role in the clinic.
    let invited = invite_member(
        &app,
        &c.owner.token,
        &c.org,
        "stranger@xinv.example",
        "STAFF",
    )
    .await;
    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    let wrong = accept(&app, &token, "not the password at all").await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED", "{wrong}");
    assert!(
        !colleague_emails(&app, &c)
            .await
            .contains(&"stranger@xinv.example".to_owned())
    );
    let right = accept(&app, &token, "a long password 1").await;
    assert!(right.get("errors").is_none(), "{right}");
    assert_eq!(
        right["data"]["acceptInvitation"]["user"]["id"],
        c.stranger.id.as_str()
    );
    assert!(
        colleague_emails(&app, &c)
            .await
            .contains(&"stranger@xinv.example".to_owned())
    );
    let kept = login(&app, "stranger@xinv.example", "a long password 1").await;
    assert!(
        kept.get("errors").is_none(),
        "the password is unchanged: {kept}"
    );
    let memberships = membership::Entity::find()
        .filter(membership::Column::UserId.eq(c.stranger.id.as_str()))
        .all(&app.state.services.db)
        .await
        .expect("memberships");
    assert_eq!(
        memberships.len(),
        2,
        "their own organisation and the clinic"
    );
}

#[tokio::test]
async fn a_guardian_account_without_a_password_gets_the_one_chosen_on_acceptance() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("pinv").await;
    // The co-guardian's account was made by staff, without a password; invited as staff now.
    let invited = invite_member(&app, &c.owner.token, &c.org, "co@pinv.example", "STAFF").await;
    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    let short = accept(&app, &token, "short").await;
    assert_eq!(code(&short), "BAD_USER_INPUT");
    assert_eq!(short["errors"][0]["extensions"]["field"], "password");
    let accepted = accept(&app, &token, PASSWORD).await;
    assert_eq!(
        accepted["data"]["acceptInvitation"]["user"]["id"],
        c.co_guardian.id.as_str(),
        "{accepted}"
    );
    let signed_in = login(&app, "co@pinv.example", PASSWORD).await;
    assert!(signed_in.get("errors").is_none(), "{signed_in}");
}

#[tokio::test]
async fn inviting_a_member_a_guardian_or_a_pending_invitee_again_is_a_conflict() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("cinv").await;
    for (query, vars) in [
        (
            INVITE_MEMBER,
            json!({ "org": c.org, "input": member_input("vet@cinv.example", "STAFF") }),
        ),
        (
            INVITE_GUARDIAN,
            json!({ "p": c.patient, "input": guardian_input("client@cinv.example") }),
        ),
    ] {
        let body = app.gql(Some(&c.owner.token), query, vars).await;
        assert_eq!(code(&body), "CONFLICT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "input.email");
    }
    invite_member(&app, &c.owner.token, &c.org, "twice@cinv.example", "STAFF").await;
    let again = app
        .gql(
            Some(&c.owner.token),
            INVITE_MEMBER,
            json!({ "org": c.org, "input": member_input("twice@cinv.example", "STAFF") }),
        )
        .await;
    assert_eq!(code(&again), "CONFLICT", "{again}");
    // A guardian invitation of the same email is another invitation.
    invite_guardian(&app, &c.owner.token, &c.patient, "twice@cinv.example").await;
    let bad = app
        .gql(
            Some(&c.owner.token),
            INVITE_MEMBER,
            json!({ "org": c.org, "input": member_input("not-an-email", "STAFF") }),
        )
        .await;
    assert_eq!(code(&bad), "BAD_USER_INPUT");
    assert_eq!(bad["errors"][0]["extensions"]["field"], "input.email");
}

#[tokio::test]
async fn a_revoked_invitation_cannot_be_accepted_and_its_mail_keeps_no_link() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("vinv").await;
    let invited = invite_guardian(&app, &c.vet.token, &c.patient, "gone@vinv.example").await;
    let id = invited["id"].as_str().expect("id").to_owned();
    let token = token_of(invited["acceptUrl"].as_str().expect("url"));
    settled_mail(&app, &id).await;
    assert_eq!(
        code(
            &app.gql(Some(&c.outsider.token), REVOKE, json!({ "id": id }))
                .await
        ),
        "NOT_FOUND"
    );
    let revoked = app
        .ok(
            &c.tech.token,
            REVOKE,
            json!({ "id": id }),
            "revokeInvitation",
        )
        .await;
    assert_eq!(revoked["status"], "REVOKED");
    assert!(revoked["acceptUrl"].is_null());
    let refused = accept(&app, &token, PASSWORD).await;
    assert_eq!(code(&refused), "INVITATION_USED", "{refused}");
    assert_eq!(user_count(&app, "gone@vinv.example").await, 0);
    let mail = settled_mail(&app, &id).await;
    assert_eq!(mail.body, None, "the revoked link is gone from the outbox");
    let pending = app
        .ok(&c.owner.token, LIST, json!({ "org": c.org }), "invitations")
        .await;
    assert_eq!(pending["totalCount"], 0, "{pending}");
}

#[tokio::test]
async fn pending_invitations_are_listed_newest_first_and_other_staff_see_guardian_ones_only() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("linv").await;
    invite_member(&app, &c.owner.token, &c.org, "m1@linv.example", "STAFF").await;
    invite_guardian(&app, &c.tech.token, &c.patient, "g1@linv.example").await;
    invite_member(&app, &c.owner.token, &c.org, "m2@linv.example", "STAFF").await;
    let page = app
        .ok(
            &c.owner.token,
            LIST,
            json!({ "org": c.org, "first": 2 }),
            "invitations",
        )
        .await;
    assert_eq!(page["totalCount"], 3);
    let emails: Vec<_> = page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["email"].clone())
        .collect();
    assert_eq!(
        emails,
        vec![json!("m2@linv.example"), json!("g1@linv.example")]
    );
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert!(
        page["edges"][0]["node"]["acceptUrl"].is_null(),
        "the URL is shown once"
    );
    let rest = app
        .ok(
            &c.owner.token,
            LIST,
            json!({ "org": c.org, "first": 2, "after": page["pageInfo"]["endCursor"] }),
            "invitations",
        )
        .await;
    assert_eq!(rest["edges"][0]["node"]["email"], "m1@linv.example");
    let staff = app
        .ok(&c.tech.token, LIST, json!({ "org": c.org }), "invitations")
        .await;
    assert_eq!(staff["totalCount"], 1, "{staff}");
    assert_eq!(staff["edges"][0]["node"]["kind"], "GUARDIAN");
    assert_eq!(
        code(
            &app.gql(Some(&c.client.token), LIST, json!({ "org": c.org }))
                .await
        ),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn without_smtp_the_mail_stays_in_the_local_outbox_until_the_invitation_is_used() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("lbox").await;
    let invited = invite_member(&app, &c.owner.token, &c.org, "box@lbox.example", "STAFF").await;
    let id = invited["id"].as_str().expect("id").to_owned();
    let url = invited["acceptUrl"].as_str().expect("url").to_owned();
    let mail = settled_mail(&app, &id).await;
    assert_eq!(mail.status, "kept");
    assert_eq!(mail.to, "box@lbox.example");
    assert_eq!(mail.subject, "Invitation to lbox Clinic");
    let body = mail.body.expect("the operator reads the body");
    assert!(body.contains(&url), "{body}");
    assert!(body.contains("Hello Nia"), "{body}");
    let recent = app
        .state
        .services
        .invitations
        .mail()
        .recent(10)
        .await
        .expect("recent");
    assert_eq!(recent[0].id, mail.id);
    let accepted = accept(&app, &token_of(&url), PASSWORD).await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    let after = settled_mail(&app, &id).await;
    assert_eq!(after.body, None, "a used link is not kept");
}

#[tokio::test]
async fn the_operator_reads_the_kept_mail_with_caregraph_mails() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("cmail").await;
    let invited = invite_member(&app, &c.owner.token, &c.org, "cli@cmail.example", "STAFF").await;
    let url = invited["acceptUrl"].as_str().expect("url").to_owned();
    settled_mail(&app, invited["id"].as_str().expect("id")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = crate::cli::caregraph(dir.path())
        .args(["mails", "--limit", "5"])
        .env(
            "CAREGRAPH_DATABASE_URL",
            &app.vars["CAREGRAPH_DATABASE_URL"],
        )
        .env("CAREGRAPH_JWT_SECRET", crate::helpers::SECRET)
        .output()
        .expect("caregraph mails");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" kept "), "{stdout}");
    assert!(stdout.contains("To: cli@cmail.example"), "{stdout}");
    assert!(stdout.contains(&url), "{stdout}");
}

#[tokio::test]
async fn accepting_is_rate_limited_per_client_address_like_login() {
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.insert("CAREGRAPH_LOGIN_PER_ADDRESS_PER_MINUTE".into(), "3".into());
    })
    .await;
    for _ in 0..3 {
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let body = accept(&app, &token, PASSWORD).await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
    }
    let limited = accept(&app, "whatever", PASSWORD).await;
    assert_eq!(code(&limited), "RATE_LIMITED", "{limited}");
    assert!(
        limited["errors"][0]["extensions"]["retryAfterSeconds"]
            .as_u64()
            .is_some()
    );
}

#[tokio::test]
async fn a_malformed_token_is_bad_input_naming_the_field() {
    let app = TestApp::spawn_with(quick).await;
    let body = accept(&app, "not-a-token", PASSWORD).await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "token");
}

#[tokio::test]
async fn the_accept_page_is_served_with_a_strict_content_security_policy() {
    let app = TestApp::spawn_with(quick).await;
    let page = app
        .http
        .get(app.url("/accept-invitation"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        page.text()
            .await
            .expect("html")
            .contains("/accept-invitation/accept.js")
    );
    let script = app
        .http
        .get(app.url("/accept-invitation/accept.js"))
        .send()
        .await
        .expect("js");
    assert_eq!(script.status(), 200);
    assert!(
        script
            .text()
            .await
            .expect("js")
            .contains("acceptInvitation")
    );
}

/// What the fake SMTP server received in one session.
#[derive(Clone, Debug, Default)]
struct Received {
    /// The decoded `AUTH PLAIN` credentials (`user`, `password`).
    auth: Option<(String, String)>,
    /// `MAIL FROM` address.
    from: String,
    /// `RCPT TO` addresses.
    to: Vec<String>,
    /// The message (headers and body).
    data: String,
}

/// A fake SMTP server on loopback: refuses the first `refuse` connections with `421`, then
/// speaks enough SMTP (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) and records each mail.
struct FakeSmtp {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Mutex<usize>>,
}

impl FakeSmtp {
    async fn start(refuse: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0usize));
        let (store, count) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            // Bounded: a test opens a handful of connections.
            for _ in 0..50 {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let n = {
                    let mut c = count.lock().expect("count");
                    *c += 1;
                    *c
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = session(socket, n <= refuse, store).await;
                });
            }
        });
        Self {
            addr,
            received,
            connections,
        }
    }

    fn mails(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    refuse: bool,
    store: Arc<Mutex<Vec<Received>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    if refuse {
        write
            .write_all(b"421 4.3.2 fake.smtp busy, try later\r\n")
            .await?;
        return Ok(());
    }
    write.write_all(b"220 fake.smtp ESMTP\r\n").await?;
    let mut lines = BufReader::new(read).lines();
    let mut current = Received::default();
    let mut commands = 0;
    while let Some(line) = lines.next_line().await? {
        commands += 1;
        if commands > 100 {
            break;
        }
        let upper = line.to_ascii_uppercase();
        let address = || {
            line.split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(a, _)| a.to_owned())
                .unwrap_or_default()
        };
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write
                .write_all(b"250-fake.smtp\r\n250 AUTH PLAIN\r\n")
                .await?;
        } else if upper.starts_with("AUTH PLAIN") {
            let encoded = match line.split_whitespace().nth(2) {
                Some(initial) => initial.to_owned(),
                None => {
                    write.write_all(b"334 \r\n").await?;
                    lines.next_line().await?.unwrap_or_default()
                }
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            current.auth = parts
                .get(1)
                .zip(parts.get(2))
                .map(|(u, p)| (u.clone(), p.clone()));
            write.write_all(b"235 2.7.0 accepted\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            current.from = address();
            write.write_all(b"250 2.1.0 ok\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            current.to.push(address());
            write.write_all(b"250 2.1.5 ok\r\n").await?;
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." || data.len() > 1_000_000 {
                    break;
                }
                data.push_str(&l);
                data.push('\n');
            }
            current.data = data;
            store.lock().expect("store").push(current.clone());
            write.write_all(b"250 2.0.0 queued\r\n").await?;
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            break;
        } else {
            write.write_all(b"250 ok\r\n").await?;
        }
    }
    Ok(())
}

/// The body of a received message, decoded when it is quoted-printable (lettre's choice for
/// lines longer than 76 characters, such as one holding the accept URL).
fn body_text(data: &str) -> String {
    let (headers, body) = data.split_once("\n\n").unwrap_or((data, ""));
    if !headers
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        return body.to_owned();
    }
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = joined.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn smtp_vars(smtp: &FakeSmtp) -> impl FnOnce(&mut std::collections::HashMap<String, String>) {
    let url = format!("smtp://smtp-user:smtp%20pass@{}", smtp.addr);
    move |v| {
        quick(v);
        v.insert("CAREGRAPH_SMTP_URL".into(), url);
        v.insert(
            "CAREGRAPH_MAIL_FROM".into(),
            "Clinic <noreply@clinic.example>".into(),
        );
        v.insert(
            "CAREGRAPH_PUBLIC_URL".into(),
            "https://care.example.org/".into(),
        );
    }
}

#[tokio::test]
async fn the_smtp_adapter_sends_the_exact_envelope_with_the_accept_url() {
    let smtp = FakeSmtp::start(0).await;
    let app = TestApp::spawn_with(smtp_vars(&smtp)).await;
    let c = app.clinic("smtp").await;
    let invited = invite_member(&app, &c.owner.token, &c.org, "Nia@SMTP.example", "STAFF").await;
    let url = invited["acceptUrl"].as_str().expect("url").to_owned();
    assert!(
        url.starts_with("https://care.example.org/accept-invitation#token="),
        "{url}"
    );
    let mail = settled_mail(&app, invited["id"].as_str().expect("id")).await;
    assert_eq!(mail.status, "sent", "{mail:?}");
    assert_eq!(mail.body, None, "a sent mail keeps no link");
    let got = smtp.mails();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].auth,
        Some(("smtp-user".to_owned(), "smtp pass".to_owned()))
    );
    assert_eq!(got[0].from, "noreply@clinic.example");
    assert_eq!(got[0].to, vec!["nia@smtp.example".to_owned()]);
    assert!(
        got[0].data.contains("Subject: Invitation to smtp Clinic"),
        "{}",
        got[0].data
    );
    assert!(
        got[0].data.contains("To: nia@smtp.example"),
        "{}",
        got[0].data
    );
    let body = body_text(&got[0].data);
    assert!(
        body.contains(&url),
        "the body carries the accept URL: {body}"
    );
}

#[tokio::test]
async fn an_smtp_outage_delays_the_mail_and_loses_nothing() {
    let smtp = FakeSmtp::start(2).await;
    let app = TestApp::spawn_with(smtp_vars(&smtp)).await;
    let c = app.clinic("down").await;
    // The invitation is made while the mail server refuses: the mail waits in the queue.
    let invited = invite_guardian(&app, &c.tech.token, &c.patient, "gus@down.example").await;
    let mail = settled_mail(&app, invited["id"].as_str().expect("id")).await;
    assert_eq!(mail.status, "sent", "{mail:?}");
    assert_eq!(mail.attempts, 3, "two refusals, then delivered: {mail:?}");
    assert_eq!(*smtp.connections.lock().expect("count"), 3);
    let got = smtp.mails();
    assert_eq!(got.len(), 1, "delivered once: {got:?}");
    assert_eq!(got[0].to, vec!["gus@down.example".to_owned()]);
    assert!(body_text(&got[0].data).contains(invited["acceptUrl"].as_str().expect("url")));
}
