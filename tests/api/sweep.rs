//! The authorization sweep (issue 11 item 7): every root field of the schema, found by
//! introspection, is called against organisation A's objects by six people who hold no right to
//! them (anonymous, OWNER and STAFF of organisation B, a client of another of A's patients, a
//! deactivated staff member of A, a removed co-guardian of A's patient). A leak is an answer
//! that carries data of A (a planted id, name, email or message text the caller did not send
//! itself, or any data at all from a field that must refuse) or a change to A's state (A's
//! OWNER's view of it, or the database's row counts). A root field without an entry in the
//! argument table fails the test, so the sweep keeps up with the schema.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use chrono::Utc;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    helpers::{Clinic, Person, TestApp, quick},
    websocket::{Ws, connect, send},
};

/// (root field, attacker) pairs that leak today; the test asserts each STILL leaks, so fixing
/// one fails the test until it is removed from this list.
const KNOWN_LEAKS: &[(&str, &str)] = &[];

/// Whether a root field must refuse these callers outright.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// Must answer no data at all (and change nothing).
    Denied,
    /// Open to some outsiders (a client of another patient of A lists their own chats): may
    /// answer, but nothing of A's planted data, and change nothing.
    Scoped,
    /// Open to anyone signed in, about the caller themself (login, createOrganization,
    /// issueChatToken, viewer, serverTime): may answer and create the caller's own rows, but
    /// must carry nothing of A and change nothing of A.
    Open,
}

/// The operation type a root field belongs to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Query,
    Mutation,
    Subscription,
}

/// One call of a root field against A's objects.
struct Call {
    kind: Kind,
    field: &'static str,
    access: Access,
    doc: String,
    vars: Value,
}

/// Organisation A and its objects.
struct Fixture {
    c: Clinic,
    appointment: String,
    appointment_chat: String,
    case: String,
    case_ref: String,
    case_chat: String,
    care_team: String,
    care_member: String,
    care_chat: String,
    group: String,
    group_title: String,
    consent: String,
    /// A compliance group that invited A (pending).
    invitation: String,
    /// A's pending invitation of a staff member.
    staff_invitation: String,
    /// Strings of A no outsider may see.
    planted: Vec<String>,
}

/// A caller without rights to A's objects.
struct Attacker {
    name: &'static str,
    token: Option<String>,
    /// Their own id and email (and, for the deactivated member, the organisation they left,
    /// which `viewer.memberships` documents): seeing these is no leak.
    own: Vec<String>,
}

const APPT: &str = "id reason startsAt patient { id name guardians { user { id email } } } client { id email } practitioner { email } chat { id recentMessages { text } }";
const PATIENT: &str = "id name organization { id name } guardians { user { id email } } careTeams { id name members { user { email } } } consents { id scope }";
const SESSION: &str = "id title status organization { id name } members { user { id email } } lastMessage { text } recentMessages { text } appointment { id reason patient { id name } }";
const CASE: &str = "id title reference status patient { id name } participants { user { id email } } chat { id recentMessages { text } }";
const CARE_TEAM: &str = "id name patient { id name } members { id user { id email } } chat { id recentMessages { text } }";
const COLLEAGUE: &str =
    "user { id email givenName familyName } role active organization { id name }";
const CONSENT: &str = "id scope active patient { id name } grantedTo { id name }";
const INVITATION: &str =
    "groupId groupName organizationId invitedByOrganizationId invitedByOrganizationName invitedAt";

/// Shorthand for a table row.
fn call(kind: Kind, field: &'static str, access: Access, doc: String, vars: Value) -> Call {
    Call {
        kind,
        field,
        access,
        doc,
        vars,
    }
}

/// The argument table: every root field, called against A's objects. Destructive mutations come
/// last, so a leak in one does not hide the others.
fn table(f: &Fixture) -> Vec<Call> {
    use Access::{Denied, Open, Scoped};
    use Kind::{Mutation as M, Query as Q, Subscription as S};
    let c = &f.c;
    let (o, p, a) = (&c.org, &c.patient, &f.appointment);
    let b = &c.other_org;
    let intruder = json!({"email": "intruder@evil.example", "givenName": "In", "familyName": "Truder",
        "relationship": "PRIMARY", "canChat": true});
    let sessions = [&f.appointment_chat, &f.case_chat, &f.care_chat, &f.group];
    let mut t = vec![
        // The caller's own account: open to anyone signed in.
        call(Q, "viewer", Open, "{ viewer { user { id email } memberships { active role organization { id name } } patients { id name guardians { user { email } } careTeams { name } consents { id } } } }".into(), json!({})),
        call(Q, "organization", Denied, "query($o: ID!) { organization(id: $o) { id name slug } }".into(), json!({"o": o})),
        call(Q, "colleagues", Denied, format!("query($o: ID!) {{ colleagues(orgId: $o, includeInactive: true) {{ totalCount nodes {{ {COLLEAGUE} }} }} }}"), json!({"o": o})),
        call(Q, "searchColleagues", Denied, format!("query($o: ID!) {{ searchColleagues(orgId: $o, query: \"Gi\") {{ {COLLEAGUE} }} }}"), json!({"o": o})),
        call(Q, "patient", Denied, format!("query($p: ID!) {{ patient(id: $p) {{ {PATIENT} }} }}"), json!({"p": p})),
        call(Q, "patients", Denied, format!("query($o: ID!) {{ patients(orgId: $o) {{ totalCount nodes {{ {PATIENT} }} }} }}"), json!({"o": o})),
        call(Q, "careTeam", Denied, format!("query($id: ID!) {{ careTeam(id: $id) {{ {CARE_TEAM} }} }}"), json!({"id": f.care_team})),
        call(Q, "case", Denied, format!("query($id: ID!) {{ case(id: $id) {{ {CASE} }} }}"), json!({"id": f.case})),
        call(Q, "caseByReference", Denied, format!("query($o: ID!, $r: String!) {{ caseByReference(orgId: $o, reference: $r) {{ {CASE} }} }}"), json!({"o": o, "r": f.case_ref})),
        call(Q, "cases", Denied, format!("query($o: ID!) {{ cases(orgId: $o) {{ totalCount nodes {{ {CASE} }} }} }}"), json!({"o": o})),
        call(Q, "appointment", Denied, format!("query($id: ID!) {{ appointment(id: $id) {{ {APPT} }} }}"), json!({"id": a})),
        call(Q, "appointments", Denied, format!("query($o: ID!) {{ appointments(orgId: $o) {{ totalCount nodes {{ {APPT} }} }} }}"), json!({"o": o})),
        call(Q, "failedProviderOperations", Denied, "query($o: ID!) { failedProviderOperations(orgId: $o) { id operation key lastError } }".into(), json!({"o": o})),
        // A client of another of A's patients may list their own chats in A: none of these.
        call(Q, "chatSessions", Scoped, format!("query($o: ID!) {{ chatSessions(orgId: $o, includeClosed: true) {{ totalCount nodes {{ {SESSION} }} }} }}"), json!({"o": o})),
        // Signing in: a wrong password for A's owner answers nothing of A.
        call(M, "login", Open, "mutation($e: String!) { login(email: $e, password: \"not the password 1\") { accessToken user { id email } } }".into(), json!({"e": "owner@sweep.example"})),
        // Anyone signed in may create an organisation (CAREGRAPH_OPEN_SIGNUP): their own.
        call(M, "createOrganization", Open, "mutation { createOrganization(input: {name: \"Attacker Org\", slug: \"sweep-attacker-org\"}) { id name slug } }".into(), json!({})),
        call(M, "addOrganizationMember", Denied, format!("mutation($o: ID!) {{ addOrganizationMember(orgId: $o, input: {{email: \"intruder@evil.example\", givenName: \"In\", familyName: \"Truder\", role: OWNER, password: \"a long password 1\"}}) {{ {COLLEAGUE} }} }}"), json!({"o": o})),
        call(M, "updateOrganizationMember", Denied, format!("mutation($o: ID!, $u: ID!) {{ updateOrganizationMember(orgId: $o, userId: $u, input: {{role: STAFF, active: false}}) {{ {COLLEAGUE} }} }}"), json!({"o": o, "u": c.vet.id})),
        call(M, "updateOrganization", Denied, "mutation($o: ID!) { updateOrganization(orgId: $o, input: {name: \"Hijacked\", crossOrgMessaging: true}) { id name slug } }".into(), json!({"o": o})),
        call(M, "createPatient", Denied, format!("mutation($o: ID!) {{ createPatient(orgId: $o, input: {{name: \"Intruder pet\"}}) {{ {PATIENT} }} }}"), json!({"o": o})),
        call(M, "updatePatient", Denied, format!("mutation($p: ID!) {{ updatePatient(id: $p, input: {{name: \"Hijacked\"}}) {{ {PATIENT} }} }}"), json!({"p": p})),
        call(M, "addGuardian", Denied, format!("mutation($p: ID!, $i: GuardianInput!) {{ addGuardian(patientId: $p, input: $i) {{ {PATIENT} }} }}"), json!({"p": p, "i": intruder})),
        call(M, "recordConsent", Denied, format!("mutation($p: ID!, $b: ID!) {{ recordConsent(patientId: $p, input: {{scope: RECORDS, grantedToOrgId: $b}}) {{ {CONSENT} }} }}"), json!({"p": p, "b": b})),
        call(M, "createComplianceGroup", Denied, "mutation($o: ID!, $b: ID!) { createComplianceGroup(orgId: $o, input: {name: \"Evil group\", organizationIds: [$b]}) { id name organizations { id name slug } } }".into(), json!({"o": o, "b": b})),
        // B's OWNER may create B's own group (its own rows): A is only invited, and the answer
        // does not reveal A.
        call(M, "createComplianceGroup", Open, "mutation($o: ID!, $b: ID!) { createComplianceGroup(orgId: $b, input: {name: \"Enrol A\", organizationIds: [$o]}) { id name organizations { id name slug } invitedOrganizationIds } }".into(), json!({"o": o, "b": b})),
        // Invitations: A's staff invite, and only A's staff see or revoke them; accepting needs
        // the token, which no outsider has.
        call(Q, "invitations", Denied, "query($o: ID!) { invitations(orgId: $o, pendingOnly: false) { totalCount nodes { id email givenName acceptUrl status } } }".into(), json!({"o": o})),
        call(M, "inviteOrganizationMember", Denied, "mutation($o: ID!) { inviteOrganizationMember(orgId: $o, input: {email: \"intruder@evil.example\", givenName: \"In\", familyName: \"Truder\", role: OWNER}) { id email acceptUrl } }".into(), json!({"o": o})),
        call(M, "inviteGuardian", Denied, "mutation($p: ID!) { inviteGuardian(patientId: $p, input: {email: \"intruder@evil.example\", givenName: \"In\", familyName: \"Truder\", canChat: true}) { id email acceptUrl } }".into(), json!({"p": p})),
        call(M, "acceptInvitation", Denied, "mutation($t: String!) { acceptInvitation(token: $t, password: \"a long password 1\") { accessToken user { id email } } }".into(), json!({"t": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})),
        call(Q, "complianceGroupInvitations", Denied, format!("query($o: ID!) {{ complianceGroupInvitations(orgId: $o) {{ {INVITATION} }} }}"), json!({"o": o})),
        // The audit trail: A's auditors and owners only; a patient's access log: its guardians
        // and A's staff only.
        call(Q, "auditEvents", Denied, "query($o: ID!) { auditEvents(orgId: $o) { totalCount edges { node { id entityType entityId patientId organizationId actor { kind id user { id email } } } } } }".into(), json!({"o": o})),
        call(M, "exportAuditEvents", Denied, "mutation($o: ID!) { exportAuditEvents(orgId: $o, format: NDJSON) { url expiresAt } }".into(), json!({"o": o})),
        call(Q, "accessLog", Denied, "query($p: ID!) { accessLog(patientId: $p) { edges { node { at action organization { id name } reader { id displayName } } } } }".into(), json!({"p": p})),
        call(M, "createCareTeam", Denied, format!("mutation($p: ID!) {{ createCareTeam(patientId: $p, input: {{name: \"Evil team\"}}) {{ {CARE_TEAM} }} }}"), json!({"p": p})),
        call(M, "addCareTeamMember", Denied, "mutation($t: ID!, $u: ID!) { addCareTeamMember(careTeamId: $t, input: {userId: $u, role: MEMBER}) { id user { id email } } }".into(), json!({"t": f.care_team, "u": c.outsider.id})),
        call(M, "createCase", Denied, format!("mutation($o: ID!, $r: String!, $u: ID!) {{ createCase(orgId: $o, input: {{reference: $r, title: \"Evil\", participants: [{{userId: $u, role: PATIENT}}]}}) {{ {CASE} }} }}"), json!({"o": o, "r": f.case_ref, "u": c.outsider.id})),
        call(M, "addCaseParticipant", Denied, format!("mutation($id: ID!, $u: ID!) {{ addCaseParticipant(caseId: $id, input: {{userId: $u, role: PATIENT}}) {{ {CASE} }} }}"), json!({"id": f.case, "u": c.outsider.id})),
        call(M, "scheduleAppointment", Denied, format!("mutation($o: ID!, $i: ScheduleAppointmentInput!) {{ scheduleAppointment(orgId: $o, input: $i) {{ {APPT} }} }}"),
            json!({"o": o, "i": {"patientId": p, "clientId": c.client.id, "practitionerId": c.vet.id, "startsAt": (Utc::now() + chrono::Duration::days(3)).to_rfc3339(), "durationMinutes": 30, "sessionType": "TELECONFERENCE", "reason": "intruder"}})),
        call(M, "rescheduleAppointment", Denied, format!("mutation($id: ID!, $s: DateTime!) {{ rescheduleAppointment(id: $id, startsAt: $s, durationMinutes: 45) {{ {APPT} }} }}"), json!({"id": a, "s": (Utc::now() + chrono::Duration::days(2)).to_rfc3339()})),
        call(M, "assignAppointmentStaff", Denied, format!("mutation($id: ID!, $v: ID!, $u: ID!) {{ assignAppointmentStaff(id: $id, practitionerId: $v, supportStaffIds: [$u]) {{ {APPT} }} }}"), json!({"id": a, "v": c.vet.id, "u": c.outsider.id})),
        call(M, "setAppointmentStatus", Denied, format!("mutation($id: ID!) {{ setAppointmentStatus(id: $id, status: CHECKED_IN) {{ {APPT} }} }}"), json!({"id": a})),
        call(M, "joinMeeting", Denied, "mutation($id: ID!) { joinMeeting(appointmentId: $id) { provider roomName state joinUrl } }".into(), json!({"id": a})),
        // Booking: guardians of A's patients (the other patient's client) may read free slots
        // and availability, which carry no names; nobody outside may set or request.
        call(Q, "availableSlots", Scoped, "query($o: ID!, $v: ID!, $f: DateTime!, $t: DateTime!) { availableSlots(orgId: $o, practitionerId: $v, from: $f, to: $t, sessionType: IN_PERSON) { startsAt endsAt durationMinutes } }".into(),
            json!({"o": o, "v": c.vet.id, "f": Utc::now().to_rfc3339(), "t": (Utc::now() + chrono::Duration::days(7)).to_rfc3339()})),
        call(Q, "practitionerAvailability", Scoped, "query($o: ID!, $v: ID!) { practitionerAvailability(orgId: $o, practitionerId: $v) { timezone slotMinutes weekly { weekday start end } } }".into(), json!({"o": o, "v": c.vet.id})),
        call(M, "setPractitionerAvailability", Denied, "mutation($o: ID!, $v: ID!) { setPractitionerAvailability(orgId: $o, practitionerId: $v, input: {weekly: [{weekday: MONDAY, start: \"00:00\", end: \"23:00\"}], timezone: \"UTC\", slotMinutes: 30}) { timezone slotMinutes } }".into(), json!({"o": o, "v": c.vet.id})),
        call(M, "requestAppointment", Denied, format!("mutation($o: ID!, $p: ID!, $v: ID!, $s: DateTime!) {{ requestAppointment(orgId: $o, input: {{patientId: $p, practitionerId: $v, startsAt: $s, sessionType: IN_PERSON, reason: \"intruder\"}}) {{ {APPT} }} }}"),
            json!({"o": o, "p": p, "v": c.vet.id, "s": (Utc::now() + chrono::Duration::days(4)).to_rfc3339()})),
        call(M, "retryProviderOperation", Denied, "mutation($o: ID!, $id: ID!) { retryProviderOperation(orgId: $o, id: $id) { id key } }".into(), json!({"o": o, "id": uuid::Uuid::now_v7().to_string()})),
        call(M, "openAppointmentChat", Denied, format!("mutation($id: ID!) {{ openAppointmentChat(appointmentId: $id) {{ {SESSION} }} }}"), json!({"id": a})),
        call(M, "openDirectChat", Denied, format!("mutation($o: ID!, $v: ID!) {{ openDirectChat(orgId: $o, colleagueId: $v) {{ {SESSION} }} }}"), json!({"o": o, "v": c.vet.id})),
        call(M, "openNetworkDirectChat", Denied, format!("mutation($o: ID!, $b: ID!, $v: ID!) {{ openNetworkDirectChat(orgId: $b, colleagueId: $v, colleagueOrgId: $o) {{ {SESSION} }} }}"), json!({"o": o, "b": b, "v": c.vet.id})),
        // Create-or-get on an existing group's title must not hand the group out.
        call(M, "createGroupChat", Denied, format!("mutation($o: ID!, $t: String!) {{ createGroupChat(orgId: $o, input: {{title: $t, memberIds: []}}) {{ {SESSION} }} }}"), json!({"o": o, "t": f.group_title})),
        call(M, "updateGroupChat", Denied, format!("mutation($id: ID!) {{ updateGroupChat(sessionId: $id, input: {{title: \"Hijacked\", readOnly: true}}) {{ {SESSION} }} }}"), json!({"id": f.group})),
        call(M, "updateGroupMembers", Denied, format!("mutation($id: ID!, $a: [ID!], $r: [ID!]) {{ updateGroupMembers(sessionId: $id, add: $a, remove: $r) {{ {SESSION} }} }}"), json!({"id": f.group, "a": [c.outsider.id], "r": [c.vet.id]})),
        call(M, "addExternalChatMember", Denied, "mutation($id: ID!) { addExternalChatMember(sessionId: $id, input: {name: \"Intruder\", phoneNumber: \"+15005550999\"}) { id name phoneNumber } }".into(), json!({"id": f.care_chat})),
        call(M, "removeExternalChatMember", Denied, format!("mutation($id: ID!, $m: ID!) {{ removeExternalChatMember(sessionId: $id, externalMemberId: $m) {{ {SESSION} }} }}"), json!({"id": f.care_chat, "m": uuid::Uuid::now_v7().to_string()})),
        call(M, "deleteChatUsers", Denied, "mutation($o: ID!, $u: ID!) { deleteChatUsers(orgId: $o, userIds: [$u]) }".into(), json!({"o": o, "u": c.vet.id})),
        // The caller's own chat credentials: open to anyone signed in.
        call(M, "issueChatToken", Open, "mutation { issueChatToken { provider userId token connection } }".into(), json!({})),
    ];
    for s in sessions {
        t.push(call(
            Q,
            "chatSession",
            Denied,
            format!("query($id: ID!) {{ chatSession(id: $id) {{ {SESSION} }} }}"),
            json!({"id": s}),
        ));
        t.push(call(M, "sendChatMessage", Denied, "mutation($id: ID!) { sendChatMessage(sessionId: $id, text: \"intruder says hi\") { id text author } }".into(), json!({"id": s})));
        t.push(call(
            M,
            "markChatRead",
            Denied,
            "mutation($id: ID!) { markChatRead(sessionId: $id) { id unreadCount } }".into(),
            json!({"id": s}),
        ));
        t.push(call(S, "chatSessionStatus", Denied, "subscription($s: ID) { chatSessionStatus(sessionId: $s) { sessionId appointmentId status reason allowedFrom allowedUntil } }".into(), json!({"s": s})));
    }
    t.extend([
        call(S, "chatSessionStatus", Denied, "subscription($a: ID) { chatSessionStatus(appointmentId: $a) { sessionId appointmentId status reason allowedFrom allowedUntil } }".into(), json!({"a": a})),
        // A client of another of A's patients may follow their own chats in A: none of these.
        call(S, "chatSessionsChanged", Scoped, format!("subscription($o: ID!) {{ chatSessionsChanged(orgId: $o) {{ kind sessionId session {{ {SESSION} }} lastMessage {{ text }} }} }}"), json!({"o": o})),
        // The server's clock, signed-in callers only: nothing of A either way.
        call(S, "serverTime", Open, "subscription { serverTime(everyMs: 100) }".into(), json!({})),
        // Destructive ones last.
        call(M, "removeCareTeamMember", Denied, format!("mutation($t: ID!, $m: ID!) {{ removeCareTeamMember(careTeamId: $t, memberId: $m) {{ {CARE_TEAM} }} }}"), json!({"t": f.care_team, "m": f.care_member})),
        call(M, "removeCaseParticipant", Denied, format!("mutation($id: ID!, $u: ID!) {{ removeCaseParticipant(caseId: $id, userId: $u) {{ {CASE} }} }}"), json!({"id": f.case, "u": c.client.id})),
        call(M, "removeGuardian", Denied, format!("mutation($p: ID!, $u: ID!) {{ removeGuardian(patientId: $p, userId: $u) {{ {PATIENT} }} }}"), json!({"p": p, "u": c.client.id})),
        call(M, "revokeConsent", Denied, format!("mutation($id: ID!) {{ revokeConsent(id: $id) {{ {CONSENT} }} }}"), json!({"id": f.consent})),
        call(M, "closeChatSession", Denied, format!("mutation($id: ID!) {{ closeChatSession(sessionId: $id) {{ {SESSION} }} }}"), json!({"id": f.appointment_chat})),
        call(M, "closeCase", Denied, format!("mutation($id: ID!) {{ closeCase(caseId: $id, deleteRoom: true) {{ {CASE} }} }}"), json!({"id": f.case})),
        call(M, "cancelAppointment", Denied, format!("mutation($id: ID!) {{ cancelAppointment(id: $id) {{ {APPT} }} }}"), json!({"id": a})),
        call(M, "deleteGroupChat", Denied, "mutation($id: ID!) { deleteGroupChat(sessionId: $id) }".into(), json!({"id": f.group})),
        call(M, "revokeInvitation", Denied, "mutation($id: ID!) { revokeInvitation(id: $id) { id email status } }".into(), json!({"id": f.staff_invitation})),
        // Joining or turning down a compliance group in A's name.
        call(M, "acceptComplianceGroupInvitation", Denied, "mutation($g: ID!, $o: ID!) { acceptComplianceGroupInvitation(groupId: $g, orgId: $o) { id name organizations { id name slug } invitedOrganizationIds } }".into(), json!({"g": f.invitation, "o": o})),
        call(M, "declineComplianceGroupInvitation", Denied, "mutation($g: ID!, $o: ID!) { declineComplianceGroupInvitation(groupId: $g, orgId: $o) }".into(), json!({"g": f.invitation, "o": o})),
    ]);
    t
}

/// Runs `query` as A's OWNER and returns `data.<field>`.
async fn as_a(app: &TestApp, token: &str, query: &str, vars: Value, field: &str) -> Value {
    app.ok(token, query, vars, field).await
}

/// Builds organisation A with an appointment and its open chat, a case with its room, a care
/// team with its chat, a group chat (each with a planted message), a consent, a deactivated
/// staff member and a removed co-guardian.
async fn organisation_a(app: &TestApp) -> Fixture {
    let c = app.clinic("sweep").await;
    let owner = c.owner.token.clone();
    let patient_name = "Quenby Plantedpatient";
    as_a(
        app,
        &owner,
        "mutation($p: ID!, $n: String!) { updatePatient(id: $p, input: {name: $n}) { id } }",
        json!({"p": c.patient, "n": patient_name}),
        "updatePatient",
    )
    .await;
    // The co-guardian takes part in client chats until they are removed.
    as_a(app, &owner, "mutation($p: ID!) { addGuardian(patientId: $p, input: {email: \"co@sweep.example\", givenName: \"Cody\", familyName: \"Co\", relationship: CO_GUARDIAN, canChat: true}) { id } }", json!({"p": c.patient}), "addGuardian").await;
    let reason = "Planted reason: limping hind leg";
    let appointment = as_a(app, &owner, "mutation($o: ID!, $i: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $o, input: $i) { id } }",
        json!({"o": c.org, "i": {"patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
            "supportStaffIds": [c.tech.id], "startsAt": (Utc::now() + chrono::Duration::minutes(2)).to_rfc3339(),
            "durationMinutes": 30, "sessionType": "TELECONFERENCE", "reason": reason}}), "scheduleAppointment").await["id"]
        .as_str().expect("appointment id").to_owned();
    let appointment_chat = as_a(
        app,
        &c.vet.token,
        "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id } }",
        json!({"id": appointment}),
        "openAppointmentChat",
    )
    .await["id"]
        .as_str()
        .expect("chat id")
        .to_owned();
    let case_ref = "SWEEP-CASE-1";
    let case_title = "Planted case title: fracture follow-up";
    let case = as_a(app, &owner, "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id } } }",
        json!({"o": c.org, "i": {"reference": case_ref, "title": case_title, "patientId": c.patient,
            "participants": [{"userId": c.tech.id, "role": "PRACTITIONER"}, {"userId": c.client.id, "role": "PATIENT"}]}}), "createCase").await;
    let care_name = "Planted care team Orion";
    let team = as_a(app, &owner, "mutation($p: ID!, $i: CreateCareTeamInput!) { createCareTeam(patientId: $p, input: $i) { id members { id user { id } } chat { id } } }",
        json!({"p": c.patient, "i": {"name": care_name, "memberIds": [c.tech.id, c.vet.id]}}), "createCareTeam").await;
    let group_title = "Planted group Halcyon";
    let group = as_a(app, &owner, "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id } }",
        json!({"o": c.org, "i": {"title": group_title, "memberIds": [c.vet.id, c.tech.id]}}), "createGroupChat").await["id"]
        .as_str().expect("group id").to_owned();
    let (_, partner, partner_token) = app
        .owner("Sweep Partner", "owner@partner-sweep.example")
        .await;
    // The partner invites A to its compliance group; A has not answered yet.
    let ring = "Planted invitation ring Meridian";
    let invitation = as_a(app, &partner_token, "mutation($o: ID!, $a: ID!, $n: String!) { createComplianceGroup(orgId: $o, input: {name: $n, organizationIds: [$a]}) { id } }",
        json!({"o": partner, "a": c.org, "n": ring}), "createComplianceGroup").await["id"].as_str().expect("group id").to_owned();
    let staff_invitation = as_a(app, &owner, "mutation($o: ID!) { inviteOrganizationMember(orgId: $o, input: {email: \"invitee@sweep.example\", givenName: \"Quillon\", familyName: \"Invitee\", role: ADMIN}) { id } }",
        json!({"o": c.org}), "inviteOrganizationMember").await["id"].as_str().expect("invitation id").to_owned();
    let consent = as_a(app, &owner, "mutation($p: ID!, $o: ID!) { recordConsent(patientId: $p, input: {scope: MESSAGING, grantedToOrgId: $o}) { id } }",
        json!({"p": c.patient, "o": partner}), "recordConsent").await["id"].as_str().expect("consent id").to_owned();
    let id_of = |v: &Value| v["id"].as_str().expect("id").to_owned();
    let case_chat = id_of(&case["chat"]);
    let care_chat = id_of(&team["chat"]);
    let care_member = team["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["user"]["id"] == c.tech.id.as_str())
        .map(id_of)
        .expect("the technician is in the team");
    let mut planted = vec![
        c.org.clone(),
        "sweep Clinic".into(),
        c.patient.clone(),
        patient_name.into(),
        appointment.clone(),
        reason.into(),
        appointment_chat.clone(),
        id_of(&case),
        case_title.into(),
        case_chat.clone(),
        id_of(&team),
        care_name.into(),
        care_chat.clone(),
        group.clone(),
        group_title.into(),
        consent.clone(),
        care_member.clone(),
        invitation.clone(),
        ring.into(),
        staff_invitation.clone(),
        "invitee@sweep.example".into(),
        "Quillon".into(),
    ];
    for p in [&c.owner, &c.vet, &c.tech, &c.client, &c.co_guardian] {
        planted.push(p.id.clone());
    }
    for who in ["owner", "vet", "tech", "client", "co"] {
        planted.push(format!("{who}@sweep.example"));
    }
    for (token, session, text) in [
        (
            &c.vet.token,
            &appointment_chat,
            "Planted appointment message: the x-ray shows a hairline crack",
        ),
        (
            &c.tech.token,
            &case_chat,
            "Planted case message: claim form filed",
        ),
        (
            &owner,
            &care_chat,
            "Planted care team message: sedation plan",
        ),
        (&owner, &group, "Planted group message: rota for December"),
    ] {
        as_a(
            app,
            token,
            "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id } }",
            json!({"id": session, "t": text}),
            "sendChatMessage",
        )
        .await;
        planted.push(text.into());
    }
    for attacker in ATTACKERS {
        planted.push(trigger_text(attacker));
    }
    as_a(app, &owner, "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }", json!({"o": c.org, "u": c.tech.id}), "updateOrganizationMember").await;
    as_a(
        app,
        &owner,
        "mutation($p: ID!, $u: ID!) { removeGuardian(patientId: $p, userId: $u) { id } }",
        json!({"p": c.patient, "u": c.co_guardian.id}),
        "removeGuardian",
    )
    .await;
    Fixture {
        case: id_of(&case),
        care_team: id_of(&team),
        c,
        appointment,
        appointment_chat,
        case_ref: case_ref.into(),
        case_chat,
        care_member,
        care_chat,
        group,
        group_title: group_title.into(),
        consent,
        invitation,
        staff_invitation,
        planted,
    }
}

const ATTACKERS: [&str; 6] = [
    "anonymous",
    "OWNER of B",
    "STAFF of B",
    "CLIENT of another patient of A",
    "deactivated STAFF of A",
    "removed co-guardian of A's patient",
];

/// The message A's practitioner posts while `attacker` follows A's chat list.
fn trigger_text(attacker: &str) -> String {
    format!("Planted live message while {attacker} listens")
}

/// The six callers.
async fn attackers(app: &TestApp, f: &Fixture) -> Vec<Attacker> {
    let c = &f.c;
    let (staff_id, staff_token) = app
        .member(
            &c.outsider.token,
            &c.other_org,
            "staff@b-sweep.example",
            "STAFF",
        )
        .await;
    let other = as_a(app, &c.owner.token, "mutation($o: ID!) { createPatient(orgId: $o, input: {name: \"Other pet\", guardians: [{email: \"other-client@sweep-b.example\", givenName: \"Olive\", familyName: \"Other\", relationship: PRIMARY}]}) { guardians { user { id } } } }",
        json!({"o": c.org}), "createPatient").await;
    let other_id = other["guardians"][0]["user"]["id"]
        .as_str()
        .expect("guardian id")
        .to_owned();
    let other_token = app.token_for_email("other-client@sweep-b.example").await;
    let who = |name: &'static str, p: &Person, email: &str, extra: &[&str]| Attacker {
        name,
        token: Some(p.token.clone()),
        own: [p.id.as_str(), email]
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect(),
    };
    vec![
        Attacker {
            name: ATTACKERS[0],
            token: None,
            own: vec![],
        },
        who(ATTACKERS[1], &c.outsider, "owner@other-sweep.example", &[]),
        who(
            ATTACKERS[2],
            &Person {
                id: staff_id,
                token: staff_token,
            },
            "staff@b-sweep.example",
            &[],
        ),
        who(
            ATTACKERS[3],
            &Person {
                id: other_id,
                token: other_token,
            },
            "other-client@sweep-b.example",
            &[],
        ),
        who(
            ATTACKERS[4],
            &c.tech,
            "tech@sweep.example",
            &[c.org.as_str(), "sweep Clinic"],
        ),
        who(ATTACKERS[5], &c.co_guardian, "co@sweep.example", &[]),
    ]
}

/// A's state as its OWNER sees it, and the row count of every table.
async fn snapshot(app: &TestApp, f: &Fixture) -> (Value, BTreeMap<String, i64>) {
    let view = app.gql(Some(&f.c.owner.token), &format!("query($o: ID!, $s1: ID!, $s2: ID!, $s3: ID!, $s4: ID!) {{
        organization(id: $o) {{ id name slug crossOrgMessaging chatActivationMinutes }}
        colleagues(orgId: $o, includeInactive: true, first: 50) {{ totalCount nodes {{ user {{ id email }} role title active }} }}
        patients(orgId: $o, first: 50) {{ totalCount nodes {{ id name species riskLevel guardians {{ user {{ id }} relationship canChat }}
            careTeams {{ id name members {{ id user {{ id }} role }} }} consents {{ id scope active revokedAt grantedTo {{ id }} }} }} }}
        cases(orgId: $o, first: 50) {{ totalCount nodes {{ id reference title status participants {{ user {{ id }} role }} }} }}
        appointments(orgId: $o, first: 50) {{ totalCount nodes {{ id status startsAt endsAt reason practitioner {{ id }} supportStaff {{ id }} client {{ id }} }} }}
        chatSessions(orgId: $o, includeClosed: true, first: 50) {{ totalCount nodes {{ id status }} }}
        s1: chatSession(id: $s1) {{ {S} }} s2: chatSession(id: $s2) {{ {S} }} s3: chatSession(id: $s3) {{ {S} }} s4: chatSession(id: $s4) {{ {S} }}
    }}", S = "id status title readOnly imageUrl closedAt members { user { id } role } recentMessages(limit: 100) { id text author }"),
        json!({"o": f.c.org, "s1": f.appointment_chat, "s2": f.case_chat, "s3": f.care_chat, "s4": f.group})).await;
    let db = &app.state.services.db;
    let backend = db.get_database_backend();
    let list = match backend {
        sea_orm::DatabaseBackend::Sqlite => {
            "SELECT name AS t FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        _ => {
            "SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        }
    };
    let tables = db
        .query_all_raw(Statement::from_string(backend, list))
        .await
        .expect("tables");
    let mut counts = BTreeMap::new();
    for row in tables {
        let table: String = row.try_get("", "t").expect("table name");
        // The audit trail records the refused attempts themselves (that is its job).
        if table.starts_with("audit_") {
            continue;
        }
        let n = db
            .query_one_raw(Statement::from_string(
                backend,
                format!("SELECT COUNT(*) AS n FROM \"{table}\""),
            ))
            .await
            .expect("count")
            .expect("a row");
        counts.insert(table, n.try_get::<i64>("", "n").expect("count"));
    }
    (view, counts)
}

/// A subscription opened as `who`: the socket, or the refusal (`{"closed": code}`, an error
/// message) when it ends before the operation starts.
async fn subscribe(app: &TestApp, who: &Attacker, c: &Call) -> Result<Ws, Value> {
    let mut ws = connect(app, "graphql-transport-ws").await;
    let payload = who.token.as_ref().map_or(
        json!({}),
        |t| json!({"Authorization": format!("Bearer {t}")}),
    );
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    let ack = receive(&mut ws, Duration::from_secs(5)).await;
    if ack["type"] != "connection_ack" {
        return Err(ack);
    }
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "1", "payload": {"query": c.doc, "variables": c.vars}}),
    )
    .await;
    Ok(ws)
}

/// A's practitioner posts in the appointment chat while `who` follows A's chat list.
async fn trigger(app: &TestApp, f: &Fixture, who: &Attacker) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.ok(
        &f.c.vet.token,
        "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id } }",
        json!({"id": f.appointment_chat, "t": trigger_text(who.name)}),
        "sendChatMessage",
    )
    .await;
}

/// The next protocol message within `wait` (keep-alives skipped), `{"closed": code}` on a
/// close, `null` when nothing arrives.
async fn receive(ws: &mut Ws, wait: Duration) -> Value {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) | Ok(None) => return Value::Null,
            Ok(Some(Ok(Message::Text(text)))) => {
                let v: Value = serde_json::from_str(&text).expect("json");
                if !matches!(v["type"].as_str(), Some("ping" | "pong" | "ka")) {
                    return v;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return json!({"closed": frame.map(|f| u16::from(f.code))});
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return json!({"socket error": e.to_string()}),
        }
    }
}

/// What in `body` is a leak: planted strings of A the caller neither owns nor sent, and for a
/// field that must refuse, any data at all.
fn leaks(f: &Fixture, who: &Attacker, c: &Call, body: &Value) -> Vec<String> {
    let text = body.to_string();
    let sent = c.vars.to_string();
    let mut found: Vec<String> = f
        .planted
        .iter()
        .filter(|p| !who.own.contains(p) && !sent.contains(p.as_str()) && text.contains(p.as_str()))
        .map(|p| format!("carries {p:?}"))
        .collect();
    let data = if c.kind == Kind::Subscription {
        if body["type"] == "next" {
            &body["payload"]["data"][c.field]
        } else {
            &Value::Null
        }
    } else {
        &body["data"][c.field]
    };
    if c.access == Access::Denied && !data.is_null() {
        found.push(format!("answers data: {data}"));
    }
    found
}

#[tokio::test]
async fn no_root_field_leaks_organisation_a_to_anyone_outside_it() {
    let started = Instant::now();
    let app = TestApp::spawn_with(quick).await;
    let f = organisation_a(&app).await;
    let people = attackers(&app, &f).await;
    let calls = table(&f);

    // Every root field has an entry, and every entry is a root field.
    let schema = app.ok(&f.c.owner.token, "{ __schema { queryType { fields { name } } mutationType { fields { name } } subscriptionType { fields { name } } } }", json!({}), "__schema").await;
    let mut introspected = BTreeSet::new();
    for (kind, key) in [
        (Kind::Query, "queryType"),
        (Kind::Mutation, "mutationType"),
        (Kind::Subscription, "subscriptionType"),
    ] {
        for field in schema[key]["fields"].as_array().expect("fields") {
            introspected.insert(format!(
                "{kind:?}.{}",
                field["name"].as_str().expect("name")
            ));
        }
    }
    let covered: BTreeSet<String> = calls
        .iter()
        .map(|c| format!("{:?}.{}", c.kind, c.field))
        .collect();
    let missing: Vec<_> = introspected.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "root fields without an entry in the sweep's argument table: {missing:?}"
    );
    let stale: Vec<_> = covered.difference(&introspected).collect();
    assert!(
        stale.is_empty(),
        "entries for fields the schema no longer has: {stale:?}"
    );

    // The documents reach A's data when the caller may read it: A's OWNER gets an answer from
    // every read and every subscription (so a refusal below is the rule at work, not a typo).
    let owner = Attacker {
        name: "A's OWNER",
        token: Some(f.c.owner.token.clone()),
        own: vec![],
    };
    for c in calls
        .iter()
        .filter(|c| c.access == Access::Denied && c.kind != Kind::Mutation)
    {
        let body = match c.kind {
            Kind::Subscription => {
                let mut ws = subscribe(&app, &owner, c)
                    .await
                    .expect("A's OWNER subscribes");
                receive(&mut ws, Duration::from_secs(5)).await
            }
            _ => {
                app.gql(Some(&f.c.owner.token), &c.doc, c.vars.clone())
                    .await
            }
        };
        assert!(
            !leaks(&f, &owner, c, &body).is_empty(),
            "A's OWNER reads nothing of A from {}: {body}",
            c.field
        );
    }

    let mut found: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    let mut tried = 0;
    for who in &people {
        let (mut view, mut rows) = snapshot(&app, &f).await;
        for c in &calls {
            tried += 1;
            let mut socket = None;
            let mut body = if c.kind == Kind::Subscription {
                match subscribe(&app, who, c).await {
                    Ok(ws) => {
                        socket = Some(ws);
                        Value::Null
                    }
                    Err(refusal) => refusal,
                }
            } else {
                app.gql(who.token.as_deref(), &c.doc, c.vars.clone()).await
            };
            let (mut view_now, mut rows_now) = snapshot(&app, &f).await;
            let mut leaked = Vec::new();
            if view_now != view {
                leaked.push("changed A as its OWNER sees it".into());
            }
            // Open fields create the caller's own rows (an organisation, a provider user).
            if c.access != Access::Open && rows_now != rows {
                let changed: Vec<_> = rows_now
                    .iter()
                    .filter(|(t, n)| rows.get(*t) != Some(n))
                    .map(|(t, _)| t)
                    .collect();
                leaked.push(format!("changed rows of {changed:?}"));
            }
            if let Some(mut ws) = socket {
                // A's own change meanwhile (a message) is the event the list would carry.
                let live = c.field == "chatSessionsChanged";
                if live {
                    trigger(&app, &f, who).await;
                    (view_now, rows_now) = snapshot(&app, &f).await;
                }
                body = receive(
                    &mut ws,
                    Duration::from_millis(if live { 1500 } else { 800 }),
                )
                .await;
            }
            leaked.extend(leaks(&f, who, c, &body));
            if !leaked.is_empty() {
                eprintln!(
                    "LEAK {} as {}: {leaked:?}\n  answer: {body}",
                    c.field, who.name
                );
                found.entry((c.field, who.name)).or_default().extend(leaked);
            }
            (view, rows) = (view_now, rows_now);
        }
    }
    let fields = covered.len();
    eprintln!(
        "sweep: {fields} root fields, {} operations × {} attackers = {tried} tried, leaks found: {} (field, attacker) pairs ({} findings; KNOWN_LEAKS lists {}), {:.1} s",
        calls.len(),
        people.len(),
        found.len(),
        found.values().map(Vec::len).sum::<usize>(),
        KNOWN_LEAKS.len(),
        started.elapsed().as_secs_f64()
    );
    let known: BTreeSet<(&str, &str)> = KNOWN_LEAKS.iter().copied().collect();
    let new: Vec<_> = found.iter().filter(|(k, _)| !known.contains(*k)).collect();
    assert!(new.is_empty(), "leaks of organisation A: {new:#?}");
    let fixed: Vec<_> = known.iter().filter(|k| !found.contains_key(*k)).collect();
    assert!(
        fixed.is_empty(),
        "no longer leaking, remove from KNOWN_LEAKS: {fixed:?}"
    );
}
