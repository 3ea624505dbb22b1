//! Revocation (README "Who sees what"): every way a person's right to a chat ends takes them
//! out of it at once, in the transaction of the change: no read, no post, their open status
//! stream ends, a new one is refused, and the provider's channel no longer lists them.

use caregraph::{clock::ManualClock, providers::chat::ChannelRef};

use crate::fakes::FakeProvider;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{Value, json};

use crate::{
    chat_sessions::{appointment, appointment_with},
    helpers::{Clinic, Person, TestApp, code, quick, settle},
    realtime::Client,
};

const READ: &str = "query($id: ID!) { chatSession(id: $id) { id channelType channelId } }";
const SEND: &str =
    "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id } }";
const STATUS: &str =
    "subscription($s: ID) { chatSessionStatus(sessionId: $s) { sessionId status reason } }";
const OPEN: &str = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id } }";
const CONSENT: &str = "mutation($p: ID!, $o: ID!, $s: ConsentScope!, $e: DateTime) { recordConsent(patientId: $p, input: {scope: $s, grantedToOrgId: $o, expiresAt: $e}) { id } }";
const TEAM: &str = "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Rehab\", memberIds: $m}) { id chat { id } members { id user { id } } } }";
const PROTOCOL: &str = "graphql-transport-ws";

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

/// The members of a session's channel at the (local) provider once the outbox has settled.
async fn provider_members(app: &TestApp, c: &Clinic, sid: &str) -> Vec<String> {
    settle(app).await;
    let s = app
        .ok(&c.owner.token, READ, json!({"id": sid}), "chatSession")
        .await;
    let channel = ChannelRef {
        channel_type: s["channelType"].as_str().expect("type").to_owned(),
        channel_id: s["channelId"].as_str().expect("channel").to_owned(),
    };
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let (_, members, _) = local
        .inspect(&channel)
        .await
        .expect("inspect")
        .expect("the channel exists");
    members
}

/// `who` is in the chat: reads it, and the provider's channel lists them; returns their status
/// stream, opened now (its first event, the state now, is read).
async fn assert_in(app: &TestApp, c: &Clinic, who: &Person, sid: &str) -> Client {
    app.ok(&who.token, READ, json!({"id": sid}), "chatSession")
        .await;
    let members = provider_members(app, c, sid).await;
    assert!(
        members.contains(&who.id),
        "{} at the provider: {members:?}",
        who.id
    );
    let mut ws = Client::connect(app, PROTOCOL, &who.token).await;
    ws.subscribe("s", STATUS, json!({"s": sid})).await;
    assert_eq!(ws.status("s").await["sessionId"], sid);
    ws
}

/// `who` lost the chat everywhere: no read, no post, `stream` (opened before) completed, a new
/// stream refused, and no place in the provider's channel.
async fn assert_out(app: &TestApp, c: &Clinic, who: &Person, sid: &str, mut stream: Client) {
    let read = app.gql(Some(&who.token), READ, json!({"id": sid})).await;
    assert_eq!(code(&read), "NOT_FOUND", "{read}");
    assert_eq!(read["data"], Value::Null, "{read}");
    let post = app
        .gql(
            Some(&who.token),
            SEND,
            json!({"id": sid, "t": "still here?"}),
        )
        .await;
    assert_eq!(code(&post), "NOT_FOUND", "{post}");
    assert_eq!(
        stream.message().await,
        json!({"type": "complete", "id": "s"}),
        "their open stream ends"
    );
    let mut again = Client::connect(app, PROTOCOL, &who.token).await;
    again.subscribe("s", STATUS, json!({"s": sid})).await;
    let error = again.refused("s", "chatSessionStatus").await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error}");
    let members = provider_members(app, c, sid).await;
    assert!(
        !members.contains(&who.id),
        "{} at the provider: {members:?}",
        who.id
    );
}

/// An appointment of the clinic's patient with the other organisation's owner as support staff
/// (the patient consented to VIDEO for that organisation), starting at `starts`.
async fn with_outside_support(app: &TestApp, c: &Clinic, starts: DateTime<Utc>) -> String {
    app.ok(
        &c.owner.token,
        CONSENT,
        json!({"p": c.patient, "o": c.other_org, "s": "VIDEO"}),
        "recordConsent",
    )
    .await;
    appointment_with(app, c, starts, &[&c.outsider.id]).await
}

#[tokio::test]
async fn a_co_guardian_given_the_chat_right_joins_the_appointment_chat_and_leaves_it_everywhere_when_it_is_withdrawn()
 {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("canchat").await;
    let a = appointment(&app, &c, Utc::now() + Duration::minutes(2)).await;
    let sid = id(&app
        .ok(
            &c.owner.token,
            OPEN,
            json!({"id": a}),
            "openAppointmentChat",
        )
        .await);
    const GUARDIAN: &str = "mutation($p: ID!, $c: Boolean!) { addGuardian(patientId: $p, input: {email: \"co@canchat.example\", givenName: \"Cody\", familyName: \"Co\", relationship: CO_GUARDIAN, canChat: $c}) { id } }";
    let read = app
        .gql(Some(&c.co_guardian.token), READ, json!({"id": sid}))
        .await;
    assert_eq!(code(&read), "NOT_FOUND", "no chat right yet: {read}");

    app.ok(
        &c.owner.token,
        GUARDIAN,
        json!({"p": c.patient, "c": true}),
        "addGuardian",
    )
    .await;
    let stream = assert_in(&app, &c, &c.co_guardian, &sid).await;

    app.ok(
        &c.owner.token,
        GUARDIAN,
        json!({"p": c.patient, "c": false}),
        "addGuardian",
    )
    .await;
    assert_out(&app, &c, &c.co_guardian, &sid, stream).await;
    // The primary guardian keeps their place.
    assert_in(&app, &c, &c.client, &sid).await;
}

#[tokio::test]
async fn a_removed_case_participant_leaves_the_case_room_everywhere() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("caseout").await;
    let case = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id } } }",
            json!({"o": c.org, "i": {"reference": "CLM-1", "title": "Claim", "participants": [
                {"userId": c.vet.id, "role": "ADMIN"}, {"userId": c.tech.id, "role": "PRACTITIONER"}]}}),
            "createCase",
        )
        .await;
    let sid = id(&case["chat"]);
    let stream = assert_in(&app, &c, &c.tech, &sid).await;

    app.ok(
        &c.owner.token,
        "mutation($c: ID!, $u: ID!) { removeCaseParticipant(caseId: $c, userId: $u) { id } }",
        json!({"c": id(&case), "u": c.tech.id}),
        "removeCaseParticipant",
    )
    .await;
    assert_out(&app, &c, &c.tech, &sid, stream).await;
    assert_in(&app, &c, &c.vet, &sid).await;
}

#[tokio::test]
async fn a_removed_care_team_member_leaves_the_team_chat_everywhere() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("teamout").await;
    let team = app
        .ok(
            &c.owner.token,
            TEAM,
            json!({"p": c.patient, "m": [c.tech.id, c.vet.id]}),
            "createCareTeam",
        )
        .await;
    let sid = id(&team["chat"]);
    let stream = assert_in(&app, &c, &c.tech, &sid).await;
    let member = team["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["user"]["id"] == c.tech.id.as_str())
        .map(id)
        .expect("the tech is a member");

    app.ok(
        &c.owner.token,
        "mutation($t: ID!, $m: ID!) { removeCareTeamMember(careTeamId: $t, memberId: $m) { id } }",
        json!({"t": id(&team), "m": member}),
        "removeCareTeamMember",
    )
    .await;
    assert_out(&app, &c, &c.tech, &sid, stream).await;
    assert_in(&app, &c, &c.vet, &sid).await;
}

#[tokio::test]
async fn outside_staff_leave_the_appointment_and_care_team_chats_everywhere_when_the_messaging_consent_is_revoked()
 {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("consentout").await;
    let messaging = app
        .ok(
            &c.owner.token,
            CONSENT,
            json!({"p": c.patient, "o": c.other_org, "s": "MESSAGING"}),
            "recordConsent",
        )
        .await;
    let a = with_outside_support(&app, &c, Utc::now() + Duration::minutes(2)).await;
    let chat = id(&app
        .ok(
            &c.owner.token,
            OPEN,
            json!({"id": a}),
            "openAppointmentChat",
        )
        .await);
    let team = app
        .ok(
            &c.owner.token,
            TEAM,
            json!({"p": c.patient, "m": [c.outsider.id]}),
            "createCareTeam",
        )
        .await;
    let team_chat = id(&team["chat"]);
    let chat_stream = assert_in(&app, &c, &c.outsider, &chat).await;
    let team_stream = assert_in(&app, &c, &c.outsider, &team_chat).await;

    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { revokeConsent(id: $id) { revokedAt } }",
        json!({"id": id(&messaging)}),
        "revokeConsent",
    )
    .await;
    assert_out(&app, &c, &c.outsider, &chat, chat_stream).await;
    assert_out(&app, &c, &c.outsider, &team_chat, team_stream).await;
    // The appointment itself stays theirs to see while the VIDEO consent lasts.
    app.ok(
        &c.outsider.token,
        "query($id: ID!) { appointment(id: $id) { id } }",
        json!({"id": a}),
        "appointment",
    )
    .await;
}

#[tokio::test]
async fn a_messaging_consent_that_reaches_its_expiry_takes_outside_staff_out_of_the_chat_when_the_scheduler_wakes()
 {
    let start = Utc::now().trunc_subsecs(0);
    let clock = ManualClock::new(start);
    let app = TestApp::spawn_with_clock(clock.clone(), quick).await;
    let c = app.clinic("lapse").await;
    app.ok(
        &c.owner.token,
        CONSENT,
        json!({"p": c.patient, "o": c.other_org, "s": "MESSAGING",
            "e": (start + Duration::hours(1)).to_rfc3339()}),
        "recordConsent",
    )
    .await;
    let a = with_outside_support(&app, &c, start + Duration::hours(3)).await;
    let chat = id(&app
        .ok(
            &c.owner.token,
            OPEN,
            json!({"id": a}),
            "openAppointmentChat",
        )
        .await);
    let stream = assert_in(&app, &c, &c.outsider, &chat).await;

    // Before the expiry the scheduler changes nothing; after it, the lapse applies once.
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 0);
    clock.advance(Duration::minutes(90));
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 1);
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 0);
    assert_out(&app, &c, &c.outsider, &chat, stream).await;
    assert_in(&app, &c, &c.vet, &chat).await;
}

#[tokio::test]
async fn staff_taken_off_an_appointment_leave_its_chat_everywhere_and_the_new_ones_join() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("reassign").await;
    let a = appointment(&app, &c, Utc::now() + Duration::minutes(2)).await;
    let sid = id(&app
        .ok(
            &c.client.token,
            OPEN,
            json!({"id": a}),
            "openAppointmentChat",
        )
        .await);
    let stream = assert_in(&app, &c, &c.tech, &sid).await;

    app.ok(
        &c.owner.token,
        "mutation($id: ID!, $p: ID!, $s: [ID!]!) { assignAppointmentStaff(id: $id, practitionerId: $p, supportStaffIds: $s) { id } }",
        json!({"id": a, "p": c.vet.id, "s": []}),
        "assignAppointmentStaff",
    )
    .await;
    assert_out(&app, &c, &c.tech, &sid, stream).await;
    assert_in(&app, &c, &c.vet, &sid).await;
}

#[tokio::test]
async fn deactivating_a_member_on_stream_removes_them_from_the_channel_and_revokes_their_tokens() {
    let fake = crate::fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = app.clinic("streamout").await;
    let a = appointment(&app, &c, Utc::now() + Duration::minutes(2)).await;
    app.ok(
        &c.owner.token,
        OPEN,
        json!({"id": a}),
        "openAppointmentChat",
    )
    .await;
    settle(&app).await;
    let before = fake.control().requests().len();

    app.ok(
        &c.owner.token,
        "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
        json!({"o": c.org, "u": c.tech.id}),
        "updateOrganizationMember",
    )
    .await;
    settle(&app).await;
    let after: Vec<_> = fake.control().requests().into_iter().skip(before).collect();
    let removal = after
        .iter()
        .find(|r| r.method == "POST" && r.path.starts_with("/channels/"))
        .map(crate::fakes::Recorded::json)
        .expect("a channel update after the deactivation");
    assert_eq!(removal["remove_members"], json!([c.tech.id]), "{removal}");
    let revocation = after
        .iter()
        .find(|r| r.method == "PATCH" && r.path == "/users")
        .map(crate::fakes::Recorded::json)
        .expect("a token revocation after the deactivation");
    assert_eq!(
        revocation["users"][0]["id"],
        c.tech.id.as_str(),
        "{revocation}"
    );
    assert!(
        revocation["users"][0]["set"]["revoke_tokens_issued_before"].is_string(),
        "{revocation}"
    );
}

#[tokio::test]
async fn a_deactivated_practitioner_or_case_participant_stays_out_when_a_later_change_syncs_the_chat()
 {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("staysout").await;
    let a = appointment(&app, &c, Utc::now() + Duration::minutes(2)).await;
    let chat = id(&app
        .ok(
            &c.client.token,
            OPEN,
            json!({"id": a}),
            "openAppointmentChat",
        )
        .await);
    let case = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id } } }",
            json!({"o": c.org, "i": {"reference": "CLM-9", "title": "Claim", "participants": [
                {"userId": c.vet.id, "role": "PRACTITIONER"}, {"userId": c.owner.id, "role": "ADMIN"}]}}),
            "createCase",
        )
        .await;
    let room = id(&case["chat"]);
    let in_chat = assert_in(&app, &c, &c.vet, &chat).await;
    let in_room = assert_in(&app, &c, &c.vet, &room).await;
    app.ok(
        &c.owner.token,
        "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
        json!({"o": c.org, "u": c.vet.id}),
        "updateOrganizationMember",
    )
    .await;
    assert_out(&app, &c, &c.vet, &chat, in_chat).await;
    assert_out(&app, &c, &c.vet, &room, in_room).await;

    // Later changes bring both in step again, without the deactivated practitioner.
    app.ok(
        &c.owner.token,
        CONSENT,
        json!({"p": c.patient, "o": c.other_org, "s": "MESSAGING"}),
        "recordConsent",
    )
    .await;
    app.ok(
        &c.owner.token,
        "mutation($c: ID!, $i: CaseParticipantInput!) { addCaseParticipant(caseId: $c, input: $i) { id } }",
        json!({"c": id(&case), "i": {"userId": c.tech.id, "role": "PRACTITIONER"}}),
        "addCaseParticipant",
    )
    .await;
    for sid in [&chat, &room] {
        let members = provider_members(&app, &c, sid).await;
        assert!(!members.contains(&c.vet.id), "{members:?}");
    }
    assert!(provider_members(&app, &c, &room).await.contains(&c.tech.id));
}
