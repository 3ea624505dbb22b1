//! The authorization matrix of every chat operation (README "Chat sessions"): for each operation an
//! anonymous caller, an active member of another organisation and a client of the same clinic
//! who is not in the session are refused with the contract's code, a refused call changes
//! nothing (here or at the provider), and one positive control per operation shows the right
//! caller succeeds, so the matrix cannot pass vacuously.
//!
//! The table is [`operations`]; every test walks it and reports all rows that failed, by
//! operation and caller. [`every_chat_operation_in_the_schema_is_in_the_matrix`] keeps the
//! table in step with the schema.

use std::collections::BTreeMap;

use caregraph::providers::chat::ChannelRef;
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{Clinic, Person, TestApp, settle};

const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id } }";
const OPEN: &str = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id } }";
const GROUP: &str =
    "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id } }";
const WHERE: &str = "query($id: ID!) { chatSession(id: $id) { channelType channelId } }";
const READ: &str = "query($id: ID!) { chatSession(id: $id) { id status title readOnly imageUrl memberCount members { user { id } role } closedAt recentMessages(limit: 100) { id text system author } } }";
const LIST: &str = "query($o: ID!) { chatSessions(orgId: $o, includeClosed: true, first: 100) { totalCount nodes { id category memberCount } } }";

/// Who makes a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// The OWNER of another organisation (an active member there, nothing here).
    Outsider,
    /// A client of the same clinic, guardian of another patient, with a chat of their own.
    OtherClient,
    /// The clinic's client: guardian of the patient, a member of the appointment chats.
    Client,
    /// The clinic's practitioner: in the appointment chats, owner of the groups.
    Vet,
    /// The clinic's technician: a plain member of the groups and the care team.
    Tech,
    /// The clinic's OWNER (an org admin).
    Owner,
    /// A STAFF member of the clinic who is in no chat.
    Desk,
}

/// What a refused caller must get.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exactly this code: the contract fixes it.
    Code(&'static str),
    /// `NOT_FOUND` or `FORBIDDEN`: the contract says who may, not which refusal.
    Refused,
    /// The call succeeds, for the caller only (`issueChatToken` has no one else to ask for).
    Own,
    /// The call succeeds with the caller's own sessions only (the target's id must not appear).
    OnlyOwn,
    /// A nested `chat` field: the parent may be readable, the session must not be (`chat: null`
    /// or `NOT_FOUND`), and its id must not appear.
    Hidden,
}

/// One chat operation of the schema.
struct Op {
    /// The schema's name (`parent.chat` for the nested fields).
    name: &'static str,
    query: &'static str,
    /// `data.<field>` of a successful answer.
    field: &'static str,
    /// The variables of a refused attempt, given the caller's own user id (a valid id of a
    /// bystander for the anonymous caller); attempts name the caller where that is the attack
    /// (adding yourself to a group).
    vars: fn(&World, &str) -> Value,
    /// The session the attempt is about: its id must not appear in a refusal.
    target: fn(&World) -> Option<String>,
    outsider: Expect,
    other_client: Expect,
    /// The positive control: who, with what.
    allowed: Who,
    allowed_vars: fn(&World) -> Value,
    /// What the positive control must return in `data.<field>`.
    allowed_check: fn(&World, &Value) -> bool,
}

/// Everything the matrix needs, built once per test.
struct World {
    c: Clinic,
    other_client: Person,
    desk: Person,
    /// The clinic's client chat (appointment A), ACTIVE; client, vet, tech.
    appt_a: String,
    s_a: String,
    /// An appointment whose chat is not opened yet.
    appt_d: String,
    /// A second client chat (appointment C), the one the close row closes.
    s_c: String,
    /// The other client's own chat (appointment B).
    s_b: String,
    /// A group owned by the vet, with the tech.
    group: String,
    /// A group owned by the vet, with the tech: the one the delete row deletes.
    group_del: String,
    case_id: String,
    case_chat: String,
    team: String,
    team_chat: String,
    /// An external (SMS) member of the care-team chat (the patient consented to MESSAGING).
    external: String,
    /// A former member, active nowhere (deactivation took them out of the group): the one
    /// `deleteChatUsers` deletes at the provider.
    leaver: String,
    /// Every session above with its provider channel (`channelType`, `channelId`).
    channels: Vec<(&'static str, String, ChannelRef)>,
}

impl World {
    fn person(&self, who: Who) -> Option<&Person> {
        match who {
            Who::Anonymous => None,
            Who::Outsider => Some(&self.c.outsider),
            Who::OtherClient => Some(&self.other_client),
            Who::Client => Some(&self.c.client),
            Who::Vet => Some(&self.c.vet),
            Who::Tech => Some(&self.c.tech),
            Who::Owner => Some(&self.c.owner),
            Who::Desk => Some(&self.desk),
        }
    }

    fn token(&self, who: Who) -> Option<&str> {
        self.person(who).map(|p| p.token.as_str())
    }

    /// The caller's own id; a bystander's (the stranger's) for the anonymous caller.
    fn me(&self, who: Who) -> &str {
        self.person(who)
            .map_or(self.c.stranger.id.as_str(), |p| &p.id)
    }
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn id_in(nodes: &Value, id: &str) -> bool {
    nodes
        .as_array()
        .is_some_and(|list| list.iter().any(|n| n["id"] == id))
}

/// The matrix: every chat operation of the schema.
fn operations() -> Vec<Op> {
    vec![
        Op {
            name: "issueChatToken",
            query: "mutation { issueChatToken { provider userId token expiresAt } }",
            field: "issueChatToken",
            vars: |_, _| json!({}),
            target: |_| None,
            outsider: Expect::Own,
            other_client: Expect::Own,
            allowed: Who::Client,
            allowed_vars: |_| json!({}),
            allowed_check: |w, d| d["userId"] == w.c.client.id && d["token"].is_string(),
        },
        Op {
            name: "openAppointmentChat",
            query: "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id category appointment { id } } }",
            field: "openAppointmentChat",
            vars: |w, _| json!({"id": w.appt_d}),
            target: |_| None,
            // Another organisation's appointment, or one the client is no party to: the caller
            // may not learn it exists.
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Client,
            allowed_vars: |w| json!({"id": w.appt_d}),
            allowed_check: |w, d| d["category"] == "CLIENT" && d["appointment"]["id"] == w.appt_d,
        },
        Op {
            name: "openDirectChat",
            query: "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id category memberCount } }",
            field: "openDirectChat",
            vars: |w, _| json!({"o": w.c.org, "c": w.c.vet.id}),
            target: |_| None,
            outsider: Expect::Refused,
            other_client: Expect::Refused,
            allowed: Who::Tech,
            allowed_vars: |w| json!({"o": w.c.org, "c": w.c.vet.id}),
            allowed_check: |_, d| d["category"] == "COLLEAGUE" && d["memberCount"] == 2,
        },
        Op {
            name: "openNetworkDirectChat",
            query: "mutation($o: ID!, $c: ID!, $co: ID!) { openNetworkDirectChat(orgId: $o, colleagueId: $c, colleagueOrgId: $co) { id category counterpartOrganization { id } } }",
            field: "openNetworkDirectChat",
            // Posing as a member of the clinic.
            vars: |w, _| json!({"o": w.c.org, "c": w.c.vet.id, "co": w.c.org}),
            target: |_| None,
            outsider: Expect::Refused,
            other_client: Expect::Refused,
            allowed: Who::Vet,
            allowed_vars: |w| json!({"o": w.c.org, "c": w.c.outsider.id, "co": w.c.other_org}),
            allowed_check: |w, d| {
                d["category"] == "COLLEAGUE" && d["counterpartOrganization"]["id"] == w.c.other_org
            },
        },
        Op {
            name: "createGroupChat",
            query: "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id category memberCount } }",
            field: "createGroupChat",
            vars: |w, _| json!({"o": w.c.org, "i": {"title": "Intruders", "memberIds": [w.c.vet.id]}}),
            target: |_| None,
            outsider: Expect::Refused,
            other_client: Expect::Refused,
            allowed: Who::Tech,
            allowed_vars: |w| json!({"o": w.c.org, "i": {"title": "Day Shift", "memberIds": [w.c.vet.id]}}),
            allowed_check: |_, d| d["category"] == "GROUP" && d["memberCount"] == 2,
        },
        Op {
            name: "updateGroupChat",
            query: "mutation($id: ID!, $i: UpdateGroupChatInput!) { updateGroupChat(sessionId: $id, input: $i) { id title readOnly } }",
            field: "updateGroupChat",
            vars: |w, _| json!({"id": w.group, "i": {"title": "Hijacked", "readOnly": true}}),
            target: |w| s(&w.group),
            // A chat the caller is not in.
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Vet,
            allowed_vars: |w| json!({"id": w.group, "i": {"title": "Renamed"}}),
            allowed_check: |_, d| d["title"] == "Renamed",
        },
        Op {
            name: "updateGroupMembers",
            query: "mutation($id: ID!, $a: [ID!], $r: [ID!]) { updateGroupMembers(sessionId: $id, add: $a, remove: $r) { id memberCount members { user { id } } } }",
            field: "updateGroupMembers",
            // Adding yourself, and dropping the tech.
            vars: |w, me| json!({"id": w.group, "a": [me], "r": [w.c.tech.id]}),
            target: |w| s(&w.group),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Vet,
            allowed_vars: |w| json!({"id": w.group, "a": [w.c.owner.id]}),
            // The group: the vet, the tech and now the owner (the leaver left when deactivated).
            allowed_check: |w, d| {
                d["memberCount"] == 3 && d["members"].to_string().contains(&w.c.owner.id)
            },
        },
        Op {
            name: "addExternalChatMember",
            query: "mutation($id: ID!, $i: ExternalChatMemberInput!) { addExternalChatMember(sessionId: $id, input: $i) { id name phoneNumber } }",
            field: "addExternalChatMember",
            vars: |w, _| json!({"id": w.team_chat, "i": {"name": "Intruder", "phoneNumber": "+15005550999"}}),
            target: |w| s(&w.team_chat),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Tech,
            allowed_vars: |w| json!({"id": w.team_chat, "i": {"name": "Nurse Kim", "phoneNumber": "+15005550102"}}),
            allowed_check: |_, d| d["phoneNumber"] == "+15005550102",
        },
        Op {
            name: "removeExternalChatMember",
            query: "mutation($id: ID!, $m: ID!) { removeExternalChatMember(sessionId: $id, externalMemberId: $m) { id externalMembers { id } } }",
            field: "removeExternalChatMember",
            vars: |w, _| json!({"id": w.team_chat, "m": w.external}),
            target: |w| s(&w.team_chat),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Vet,
            allowed_vars: |w| json!({"id": w.team_chat, "m": w.external}),
            allowed_check: |w, d| {
                d["id"] == w.team_chat && !d["externalMembers"].to_string().contains(&w.external)
            },
        },
        Op {
            name: "deleteGroupChat",
            query: "mutation($id: ID!) { deleteGroupChat(sessionId: $id) }",
            field: "deleteGroupChat",
            vars: |w, _| json!({"id": w.group_del}),
            target: |w| s(&w.group_del),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Vet,
            allowed_vars: |w| json!({"id": w.group_del}),
            allowed_check: |_, d| *d == json!(true),
        },
        Op {
            name: "closeChatSession",
            query: "mutation($id: ID!) { closeChatSession(sessionId: $id) { id status } }",
            field: "closeChatSession",
            vars: |w, _| json!({"id": w.s_c}),
            target: |w| s(&w.s_c),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Vet,
            allowed_vars: |w| json!({"id": w.s_c}),
            allowed_check: |_, d| d["status"] == "CLOSED",
        },
        Op {
            name: "sendChatMessage",
            query: "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id text author } }",
            field: "sendChatMessage",
            vars: |w, me| json!({"id": w.s_a, "t": format!("intrusion by {me}")}),
            target: |w| s(&w.s_a),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Client,
            allowed_vars: |w| json!({"id": w.s_a, "t": "Rex is limping"}),
            allowed_check: |w, d| d["author"] == w.c.client.id && d["text"] == "Rex is limping",
        },
        Op {
            name: "markChatRead",
            query: "mutation($id: ID!) { markChatRead(sessionId: $id) { id unreadCount } }",
            field: "markChatRead",
            vars: |w, _| json!({"id": w.s_a}),
            target: |w| s(&w.s_a),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            // The vet has not read the client's message sent just before.
            allowed: Who::Vet,
            allowed_vars: |w| json!({"id": w.s_a}),
            allowed_check: |w, d| d["id"] == w.s_a && d["unreadCount"] == 0,
        },
        Op {
            name: "chatSession",
            query: "query($id: ID!) { chatSession(id: $id) { id members { user { id } } recentMessages { text } } }",
            field: "chatSession",
            vars: |w, _| json!({"id": w.s_a}),
            target: |w| s(&w.s_a),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Client,
            allowed_vars: |w| json!({"id": w.s_a}),
            allowed_check: |w, d| d["id"] == w.s_a,
        },
        Op {
            name: "chatSessions",
            query: "query($o: ID!) { chatSessions(orgId: $o, includeClosed: true) { totalCount nodes { id } } }",
            field: "chatSessions",
            vars: |w, _| json!({"o": w.c.org}),
            target: |w| s(&w.s_a),
            outsider: Expect::Refused,
            // A client of the clinic lists the chats they are in, never this one.
            other_client: Expect::OnlyOwn,
            // The tech's own sessions: the client chat, not the case room they are not in.
            allowed: Who::Tech,
            allowed_vars: |w| json!({"o": w.c.org}),
            allowed_check: |w, d| id_in(&d["nodes"], &w.s_a) && !id_in(&d["nodes"], &w.case_chat),
        },
        Op {
            name: "appointment.chat",
            query: "query($id: ID!) { appointment(id: $id) { id chat { id recentMessages { text } } } }",
            field: "appointment",
            vars: |w, _| json!({"id": w.appt_a}),
            target: |w| s(&w.s_a),
            // Another organisation's appointment, or one the client is no party to.
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Client,
            allowed_vars: |w| json!({"id": w.appt_a}),
            allowed_check: |w, d| d["chat"]["id"] == w.s_a,
        },
        Op {
            name: "case.chat",
            query: "query($id: ID!) { case(id: $id) { id chat { id recentMessages { text } } } }",
            field: "case",
            vars: |w, _| json!({"id": w.case_id}),
            target: |w| s(&w.case_chat),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Vet,
            allowed_vars: |w| json!({"id": w.case_id}),
            allowed_check: |w, d| d["chat"]["id"] == w.case_chat,
        },
        Op {
            name: "careTeam.chat",
            query: "query($id: ID!) { careTeam(id: $id) { id chat { id recentMessages { text } } } }",
            field: "careTeam",
            vars: |w, _| json!({"id": w.team}),
            target: |w| s(&w.team_chat),
            outsider: Expect::Code("NOT_FOUND"),
            other_client: Expect::Code("NOT_FOUND"),
            allowed: Who::Tech,
            allowed_vars: |w| json!({"id": w.team}),
            allowed_check: |w, d| d["chat"]["id"] == w.team_chat,
        },
        Op {
            name: "deleteChatUsers",
            query: "mutation($o: ID!, $u: [ID!]!) { deleteChatUsers(orgId: $o, userIds: $u) }",
            field: "deleteChatUsers",
            vars: |w, _| json!({"o": w.c.org, "u": [w.leaver]}),
            target: |_| None,
            outsider: Expect::Refused,
            other_client: Expect::Refused,
            allowed: Who::Owner,
            allowed_vars: |w| json!({"o": w.c.org, "u": [w.leaver]}),
            allowed_check: |_, d| *d == json!(1),
        },
    ]
}

fn quick(v: &mut std::collections::HashMap<String, String>) {
    crate::helpers::quick(v);
    // The matrix issues more tokens than one person would.
    v.insert("CAREGRAPH_CHAT_TOKENS_PER_MINUTE".into(), "1000".into());
}

async fn schedule(
    app: &TestApp,
    c: &Clinic,
    patient: &str,
    client: &str,
    starts_at: chrono::DateTime<Utc>,
) -> String {
    let a = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": {
                "patientId": patient, "clientId": client, "practitionerId": c.vet.id,
                "supportStaffIds": [c.tech.id],
                "startsAt": starts_at.to_rfc3339(),
                "durationMinutes": 5, "sessionType": "IN_PERSON"
            }}),
            "scheduleAppointment",
        )
        .await;
    a["id"].as_str().expect("appointment id").to_owned()
}

async fn open(app: &TestApp, token: &str, appointment: &str) -> String {
    app.ok(
        token,
        OPEN,
        json!({"id": appointment}),
        "openAppointmentChat",
    )
    .await["id"]
        .as_str()
        .expect("session id")
        .to_owned()
}

async fn group(app: &TestApp, c: &Clinic, title: &str, members: &[&str]) -> String {
    app.ok(
        &c.vet.token,
        GROUP,
        json!({"o": c.org, "i": {"title": title, "memberIds": members}}),
        "createGroupChat",
    )
    .await["id"]
        .as_str()
        .expect("group id")
        .to_owned()
}

async fn channel(app: &TestApp, c: &Clinic, session: &str) -> ChannelRef {
    let s = app
        .ok(&c.owner.token, WHERE, json!({"id": session}), "chatSession")
        .await;
    ChannelRef {
        channel_type: s["channelType"].as_str().expect("type").into(),
        channel_id: s["channelId"].as_str().expect("id").into(),
    }
}

/// Builds the clinic, a second client with their own patient and chat, a staff member in no
/// chat, client chats, groups, a case room and a care-team chat; both organisations allow
/// network chats.
async fn world(app: &TestApp, tag: &str) -> World {
    let c = app.clinic(tag).await;
    let enable = "mutation($o: ID!) { updateOrganization(orgId: $o, input: {crossOrgMessaging: true}) { crossOrgMessaging } }";
    app.ok(
        &c.owner.token,
        enable,
        json!({"o": c.org}),
        "updateOrganization",
    )
    .await;
    app.ok(
        &c.outsider.token,
        enable,
        json!({"o": c.other_org}),
        "updateOrganization",
    )
    .await;
    let other_email = format!("client2@{tag}.example");
    let tom = app
        .ok(
            &c.owner.token,
            "mutation($org: ID!, $input: CreatePatientInput!) { createPatient(orgId: $org, input: $input) { id guardians { user { id } } } }",
            json!({"org": c.org, "input": {
                "name": "Tom", "species": "Cat", "riskLevel": "LOW",
                "guardians": [{ "email": other_email, "givenName": "Olive", "familyName": "Other", "relationship": "PRIMARY" }]
            }}),
            "createPatient",
        )
        .await;
    let other_client = Person {
        id: tom["guardians"][0]["user"]["id"]
            .as_str()
            .expect("guardian id")
            .to_owned(),
        token: app.token_for_email(&other_email).await,
    };
    let tom = tom["id"].as_str().expect("patient id").to_owned();
    let (desk_id, desk_token) = app
        .member(
            &c.owner.token,
            &c.org,
            &format!("desk@{tag}.example"),
            "STAFF",
        )
        .await;
    let desk = Person {
        id: desk_id,
        token: desk_token,
    };

    // Five minutes each, back to back: the vet and tech are never booked twice at once.
    let base = Utc::now();
    let at = |minutes: i64| base + chrono::Duration::minutes(minutes);
    let appt_a = schedule(app, &c, &c.patient, &c.client.id, at(0)).await;
    let s_a = open(app, &c.vet.token, &appt_a).await;
    let appt_c = schedule(app, &c, &c.patient, &c.client.id, at(10)).await;
    let s_c = open(app, &c.vet.token, &appt_c).await;
    let appt_d = schedule(app, &c, &c.patient, &c.client.id, at(24 * 60)).await;
    let appt_b = schedule(app, &c, &tom, &other_client.id, at(5)).await;
    let s_b = open(app, &other_client.token, &appt_b).await;
    app.ok(
        &c.client.token,
        "mutation($id: ID!) { sendChatMessage(sessionId: $id, text: \"Hello\") { id } }",
        json!({"id": s_a}),
        "sendChatMessage",
    )
    .await;
    let (leaver, _) = app
        .member(
            &c.owner.token,
            &c.org,
            &format!("leaver@{tag}.example"),
            "STAFF",
        )
        .await;
    let group_id = group(app, &c, "Night Shift", &[&c.tech.id, &leaver]).await;
    let group_del = group(app, &c, "Temporary", &[&c.tech.id]).await;
    app.ok(
        &c.owner.token,
        "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
        json!({"o": c.org, "u": leaver}),
        "updateOrganizationMember",
    )
    .await;
    let case = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id } } }",
            json!({"o": c.org, "i": {"reference": "CLM-1", "title": "Claim 1", "patientId": c.patient,
                "participants": [{"userId": c.vet.id, "role": "PRACTITIONER"}]}}),
            "createCase",
        )
        .await;
    let team = app
        .ok(
            &c.vet.token,
            "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Rehab\", memberIds: $m}) { id chat { id } } }",
            json!({"p": c.patient, "m": [c.tech.id]}),
            "createCareTeam",
        )
        .await;
    let case_chat = case["chat"]["id"].as_str().expect("case room").to_owned();
    let team_chat = team["chat"]["id"].as_str().expect("team chat").to_owned();
    app.ok(
        &c.owner.token,
        "mutation($p: ID!, $o: ID!) { recordConsent(patientId: $p, input: {scope: MESSAGING, grantedToOrgId: $o}) { id } }",
        json!({"p": c.patient, "o": c.other_org}),
        "recordConsent",
    )
    .await;
    let external = app
        .ok(
            &c.vet.token,
            "mutation($id: ID!) { addExternalChatMember(sessionId: $id, input: {name: \"Dr Ortiz\", phoneNumber: \"+15005550101\"}) { id } }",
            json!({"id": team_chat}),
            "addExternalChatMember",
        )
        .await["id"]
        .as_str()
        .expect("external member")
        .to_owned();
    for (session, text) in [
        (&case_chat, "Case note: the claim is disputed"),
        (&team_chat, "Staff only: the x-ray is worrying"),
    ] {
        app.ok(
            &c.vet.token,
            "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id } }",
            json!({"id": session, "t": text}),
            "sendChatMessage",
        )
        .await;
    }
    let mut channels = Vec::new();
    for (label, id) in [
        ("client chat A", &s_a),
        ("client chat B", &s_b),
        ("client chat C", &s_c),
        ("group", &group_id),
        ("group to delete", &group_del),
        ("case room", &case_chat),
        ("care-team chat", &team_chat),
    ] {
        channels.push((label, id.clone(), channel(app, &c, id).await));
    }
    settle(app).await;
    World {
        other_client,
        desk,
        appt_a,
        s_a,
        appt_d,
        s_c,
        s_b,
        group: group_id,
        group_del,
        case_id: case["id"].as_str().expect("case id").to_owned(),
        case_chat,
        team: team["id"].as_str().expect("team id").to_owned(),
        team_chat,
        external,
        channels,
        leaver,
        c,
    }
}

/// Everything a refused call could have changed: each session as its organisation's OWNER reads
/// it, each provider channel (metadata, members, frozen, read markers), each party's session
/// list, and the not-yet-opened appointment's chat.
async fn snapshot(app: &TestApp, w: &World) -> BTreeMap<String, Value> {
    settle(app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local provider");
    let mut out = BTreeMap::new();
    for (label, id, channel) in &w.channels {
        let read = app
            .gql(Some(&w.c.owner.token), READ, json!({"id": id}))
            .await;
        out.insert(format!("session: {label}"), read);
        let at_provider =
            local
                .inspect(channel)
                .await
                .expect("inspect")
                .map(|(meta, mut members, frozen)| {
                    members.sort();
                    json!({"metadata": meta, "members": members, "frozen": frozen})
                });
        out.insert(format!("provider: {label}"), json!(at_provider));
        // Each member's read marker (`markChatRead`).
        use caregraph::db::entities::local_chat_member as member;
        let mut markers: Vec<(String, i64)> = member::Entity::find()
            .filter(member::Column::Cid.eq(channel.cid()))
            .all(&app.state.services.db)
            .await
            .expect("read the provider's read markers")
            .into_iter()
            .map(|m| (m.user_id, m.last_read_seq))
            .collect();
        markers.sort();
        out.insert(format!("read markers: {label}"), json!(markers));
    }
    for (label, token, org) in [
        ("vet", &w.c.vet.token, &w.c.org),
        ("tech", &w.c.tech.token, &w.c.org),
        ("owner", &w.c.owner.token, &w.c.org),
        ("desk", &w.desk.token, &w.c.org),
        ("outsider", &w.c.outsider.token, &w.c.other_org),
    ] {
        let list = app.gql(Some(token), LIST, json!({"o": org})).await;
        out.insert(format!("list of the {label}"), list);
    }
    let d = app
        .gql(
            Some(&w.c.owner.token),
            "query($id: ID!) { appointment(id: $id) { chat { id } } }",
            json!({"id": w.appt_d}),
        )
        .await;
    out.insert("chat of the unopened appointment".into(), d);
    let leaver_at_provider =
        caregraph::db::entities::local_chat_user::Entity::find_by_id(w.leaver.clone())
            .one(&app.state.services.db)
            .await
            .expect("read the provider's users")
            .is_some();
    out.insert("provider: the leaver".into(), json!(leaver_at_provider));
    out
}

fn error_code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

/// Checks one answer against an expectation; `None` when it holds.
fn judge(w: &World, op: &Op, who: Who, expect: Expect, body: &Value) -> Option<String> {
    let got = error_code(body);
    let data = &body["data"][op.field];
    let leaked = (op.target)(w).filter(|t| body.to_string().contains(t.as_str()));
    let verdict = match expect {
        Expect::Code(code) if got == Some(code) && data.is_null() => None,
        Expect::Code(code) => Some(format!("expected {code}")),
        Expect::Refused if matches!(got, Some("NOT_FOUND" | "FORBIDDEN")) && data.is_null() => None,
        Expect::Refused => Some("expected NOT_FOUND or FORBIDDEN".to_owned()),
        Expect::Own if got.is_none() && data["userId"] == w.me(who) => None,
        Expect::Own => Some("expected the caller's own credentials".to_owned()),
        Expect::OnlyOwn if got.is_none() && !data.is_null() => None,
        Expect::OnlyOwn => Some("expected the caller's own sessions".to_owned()),
        Expect::Hidden
            if (got == Some("NOT_FOUND") && data.is_null())
                || (got.is_none() && !data.is_null() && data["chat"].is_null()) =>
        {
            None
        }
        Expect::Hidden => Some("expected chat: null or NOT_FOUND".to_owned()),
    };
    let verdict = match (verdict, leaked) {
        (None, Some(t)) => Some(format!("refused but the session id {t} is in the answer")),
        (v, _) => v,
    };
    verdict.map(|why| format!("{} as {who:?}: {why}, got {body}", op.name))
}

/// What changed between two snapshots, key by key.
fn changes(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>) -> Vec<String> {
    before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: {v} -> {}", after.get(k).unwrap_or(&Value::Null)))
        .collect()
}

/// Runs every operation as `who` and checks the answer and that nothing changed;
/// returns one line per cell of the matrix, and the failures.
async fn refusals(
    app: &TestApp,
    w: &World,
    who: Who,
    expect: impl Fn(&Op) -> Expect,
) -> (Vec<String>, Vec<String>) {
    let mut matrix = Vec::new();
    let mut failures = Vec::new();
    for op in operations().iter() {
        let expected = expect(op);
        let before = snapshot(app, w).await;
        let body = app
            .gql(w.token(who), op.query, (op.vars)(w, w.me(who)))
            .await;
        matrix.push(format!(
            "{:<24} {who:?} -> {}",
            op.name,
            error_code(&body).unwrap_or("ok")
        ));
        if let Some(failure) = judge(w, op, who, expected, &body) {
            failures.push(failure);
        }
        if !matches!(expected, Expect::Own) {
            let changed = changes(&before, &snapshot(app, w).await);
            if !changed.is_empty() {
                failures.push(format!(
                    "{} as {who:?} was refused but changed:\n  {}",
                    op.name,
                    changed.join("\n  ")
                ));
            }
        }
    }
    (matrix, failures)
}

fn report(matrix: &[String], failures: &[String]) {
    eprintln!("{}", matrix.join("\n"));
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_chat_operation_answers_an_anonymous_caller_with_unauthenticated_and_changes_nothing()
{
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, "anon").await;
    let (matrix, failures) = refusals(&app, &w, Who::Anonymous, |_| {
        Expect::Code("UNAUTHENTICATED")
    })
    .await;
    report(&matrix, &failures);
}

#[tokio::test]
async fn no_chat_operation_lets_a_member_of_another_organisation_in_or_changes_anything() {
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, "outsider").await;
    let (matrix, failures) = refusals(&app, &w, Who::Outsider, |op| op.outsider).await;
    report(&matrix, &failures);
}

#[tokio::test]
async fn no_chat_operation_lets_a_client_who_is_not_in_the_session_in_or_changes_anything() {
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, "otherclient").await;
    let (matrix, failures) = refusals(&app, &w, Who::OtherClient, |op| op.other_client).await;
    report(&matrix, &failures);
    // Refused for not being in the session, not for a broken account: their own chat opens.
    let own = app
        .ok(
            &w.other_client.token,
            READ,
            json!({"id": w.s_b}),
            "chatSession",
        )
        .await;
    assert_eq!(own["id"], w.s_b.as_str());
}

#[tokio::test]
async fn the_right_caller_succeeds_at_every_chat_operation_and_its_change_shows() {
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, "allowed").await;
    let mut matrix = Vec::new();
    let mut failures = Vec::new();
    for op in operations().iter() {
        let before = snapshot(&app, &w).await;
        let body = app
            .gql(w.token(op.allowed), op.query, (op.allowed_vars)(&w))
            .await;
        // The snapshot the refusal tests compare sees what each allowed mutation changes, so
        // "changed nothing" there is not vacuous (a token and the reads change nothing).
        let changes_state = op.query.starts_with("mutation") && op.name != "issueChatToken";
        let changed = !changes(&before, &snapshot(&app, &w).await).is_empty();
        if changed != changes_state {
            failures.push(format!(
                "{}: the snapshot {} change",
                op.name,
                if changed { "shows a" } else { "misses the" }
            ));
        }
        matrix.push(format!(
            "{:<24} {:?} -> {}",
            op.name,
            op.allowed,
            error_code(&body).unwrap_or("ok")
        ));
        let data = &body["data"][op.field];
        if body.get("errors").is_some() || !(op.allowed_check)(&w, data) {
            failures.push(format!("{} as {:?}: got {body}", op.name, op.allowed));
        }
    }
    report(&matrix, &failures);
    // The refusals above are about sessions that exist and are readable by the right people.
    settle(&app).await;
    let read = app
        .ok(&w.c.vet.token, READ, json!({"id": w.s_a}), "chatSession")
        .await;
    assert!(
        read["recentMessages"]
            .to_string()
            .contains("Rex is limping"),
        "{read}"
    );
    let gone = app
        .gql(Some(&w.c.vet.token), READ, json!({"id": w.group_del}))
        .await;
    assert_eq!(error_code(&gone), Some("NOT_FOUND"), "deleted: {gone}");
}

/// Members and staff without the right part in a session: the contract fixes the client member's
/// `FORBIDDEN` on close and the non-member's `NOT_FOUND` on reads; a plain group member is
/// refused group management.
#[tokio::test]
async fn members_and_staff_without_the_right_part_are_refused_and_change_nothing() {
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, "roles").await;
    let ops = operations();
    let op = |name: &str| {
        ops.iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("{name} in the matrix"))
    };
    let mut matrix = Vec::new();
    let mut failures = Vec::new();
    for (name, who, expect) in [
        ("closeChatSession", Who::Client, Expect::Code("FORBIDDEN")),
        ("updateGroupChat", Who::Tech, Expect::Refused),
        ("updateGroupMembers", Who::Tech, Expect::Refused),
        ("deleteGroupChat", Who::Tech, Expect::Refused),
        ("chatSession", Who::Desk, Expect::Code("NOT_FOUND")),
        (
            "addExternalChatMember",
            Who::Desk,
            Expect::Code("NOT_FOUND"),
        ),
        (
            "removeExternalChatMember",
            Who::Client,
            Expect::Code("NOT_FOUND"),
        ),
        ("sendChatMessage", Who::Desk, Expect::Code("NOT_FOUND")),
        ("closeChatSession", Who::Desk, Expect::Code("NOT_FOUND")),
        ("updateGroupChat", Who::Desk, Expect::Code("NOT_FOUND")),
        ("openAppointmentChat", Who::Desk, Expect::Code("FORBIDDEN")),
        ("deleteChatUsers", Who::Vet, Expect::Code("FORBIDDEN")),
    ] {
        let op = op(name);
        let before = snapshot(&app, &w).await;
        let body = app
            .gql(w.token(who), op.query, (op.vars)(&w, w.me(who)))
            .await;
        matrix.push(format!(
            "{:<24} {who:?} -> {}",
            op.name,
            error_code(&body).unwrap_or("ok")
        ));
        if let Some(failure) = judge(&w, op, who, expect, &body) {
            failures.push(failure);
        }
        let changed = changes(&before, &snapshot(&app, &w).await);
        if !changed.is_empty() {
            failures.push(format!(
                "{name} as {who:?} was refused but changed:\n  {}",
                changed.join("\n  ")
            ));
        }
    }
    report(&matrix, &failures);
}

/// A nested `chat` field reads a session, so it follows the session's rule:
/// members and the organisation's OWNER/ADMIN see it; anyone else who may read the parent gets
/// `chat: null` (or `NOT_FOUND`), never the session or its messages.
async fn nested_chat_is_hidden_from(tag: &str, name: &str, who: Who) {
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, tag).await;
    let ops = operations();
    let op = ops
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("{name} in the matrix"));
    let body = app
        .gql(w.token(who), op.query, (op.vars)(&w, w.me(who)))
        .await;
    assert!(
        body["data"][op.field]["id"].is_string(),
        "{name} as {who:?} may read the parent: {body}"
    );
    if let Some(failure) = judge(&w, op, who, Expect::Hidden, &body) {
        panic!("{failure}");
    }
}

#[tokio::test]
async fn a_staff_member_outside_an_appointment_chat_cannot_read_it_through_the_appointment() {
    nested_chat_is_hidden_from("deskappt", "appointment.chat", Who::Desk).await;
}

#[tokio::test]
async fn a_staff_member_outside_a_case_room_cannot_read_it_through_the_case() {
    nested_chat_is_hidden_from("deskcase", "case.chat", Who::Desk).await;
}

#[tokio::test]
async fn a_staff_member_outside_a_care_team_chat_cannot_read_it_through_the_team() {
    nested_chat_is_hidden_from("deskteam", "careTeam.chat", Who::Desk).await;
}

#[tokio::test]
async fn a_guardian_cannot_read_the_staff_only_care_team_chat_through_the_team() {
    nested_chat_is_hidden_from("guardianteam", "careTeam.chat", Who::Client).await;
}

/// The other side of the rule above: the organisation's admin, who is in none of these chats,
/// and their members see them through the parent.
#[tokio::test]
async fn an_org_admin_and_the_members_see_a_chat_through_its_appointment_case_and_care_team() {
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, "nestedok").await;
    let ops = operations();
    let mut failures = Vec::new();
    for (name, who) in [
        ("appointment.chat", Who::Owner),
        ("appointment.chat", Who::Client),
        ("appointment.chat", Who::Tech),
        ("case.chat", Who::Owner),
        ("case.chat", Who::Vet),
        ("careTeam.chat", Who::Owner),
        ("careTeam.chat", Who::Vet),
    ] {
        let op = ops
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("{name} in the matrix"));
        let body = app
            .gql(w.token(who), op.query, (op.vars)(&w, w.me(who)))
            .await;
        let expected = (op.target)(&w).expect("the chat");
        if body.get("errors").is_some() || body["data"][op.field]["chat"]["id"] != expected {
            failures.push(format!("{name} as {who:?}: got {body}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The chats visible in one page of the clinic's appointments, by session id.
async fn chats_in_page(app: &TestApp, w: &World, who: Who) -> BTreeMap<String, String> {
    let page = app
        .ok(
            w.token(who).expect("a signed-in caller"),
            "query($o: ID!) { appointments(orgId: $o, first: 50) { nodes { id chat { id } } } }",
            json!({"o": w.c.org}),
            "appointments",
        )
        .await;
    page["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| {
            let chat = n["chat"]["id"].as_str()?;
            Some((chat.to_owned(), n["id"].as_str().expect("id").to_owned()))
        })
        .collect()
}

/// A page asks the read rule about all its rows' chats at once: the owner, who manages the
/// clinic, sees every one; a staff member sees those they still take part in, not the one they
/// were just taken off, nor does a colleague in none of them see any.
#[tokio::test]
async fn one_page_of_appointments_shows_each_caller_only_the_chats_they_may_read_now() {
    let app = TestApp::spawn_with(quick).await;
    let w = world(&app, "pagechats").await;
    let owner_sees = chats_in_page(&app, &w, Who::Owner).await;
    for s in [&w.s_a, &w.s_b, &w.s_c] {
        assert!(
            owner_sees.contains_key(s),
            "the owner sees {s}: {owner_sees:?}"
        );
    }
    let tech_sees = chats_in_page(&app, &w, Who::Tech).await;
    assert!(tech_sees.contains_key(&w.s_a) && tech_sees.contains_key(&w.s_c));
    // The tech is taken off appointment C (its chat's members follow).
    app.ok(
        &w.c.owner.token,
        "mutation($id: ID!, $p: ID!) { assignAppointmentStaff(id: $id, practitionerId: $p, supportStaffIds: []) { id } }",
        json!({"id": owner_sees[&w.s_c], "p": w.c.vet.id}),
        "assignAppointmentStaff",
    )
    .await;
    let tech_sees = chats_in_page(&app, &w, Who::Tech).await;
    assert!(
        tech_sees.contains_key(&w.s_a),
        "still in chat A: {tech_sees:?}"
    );
    assert!(
        !tech_sees.contains_key(&w.s_c),
        "taken off C: {tech_sees:?}"
    );
    assert!(chats_in_page(&app, &w, Who::Desk).await.is_empty());
}

/// The table covers every chat operation the schema has: root fields about chats and every
/// `chat` field of an object type.
#[tokio::test]
async fn every_chat_operation_in_the_schema_is_in_the_matrix() {
    let app = TestApp::spawn_with(quick).await;
    let (_, _, token) = app.owner("Schema Clinic", "owner@schema.example").await;
    let schema = app
        .ok(
            &token,
            "{ __schema { types { name kind fields { name } } } }",
            json!({}),
            "__schema",
        )
        .await;
    let mut in_schema = Vec::new();
    for t in schema["types"].as_array().expect("types") {
        let name = t["name"].as_str().expect("type name");
        let fields = t["fields"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for f in fields {
            let field = f["name"].as_str().expect("field name");
            match name {
                "Query" | "Mutation"
                    if field.to_lowercase().contains("chat") || field.contains("GroupMembers") =>
                {
                    in_schema.push(field.to_owned());
                }
                "Query" | "Mutation" | "Subscription" => {}
                _ if field == "chat" => {
                    let mut parent = name.to_owned();
                    parent[..1].make_ascii_lowercase();
                    in_schema.push(format!("{parent}.chat"));
                }
                _ => {}
            }
        }
    }
    let table: Vec<&str> = operations().iter().map(|op| op.name).collect();
    let missing: Vec<&String> = in_schema
        .iter()
        .filter(|n| !table.contains(&n.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in the matrix: {missing:?}");
    assert!(
        in_schema.len() >= 15,
        "the schema's chat operations: {in_schema:?}"
    );
}
