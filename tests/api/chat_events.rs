//! Chat sessions, continued: every status transition is a domain event on the bus, a new
//! practitioner or support staff changes an appointment chat's members, organisations set how
//! early their appointment chats open, consent changes re-sync care-team chats at once,
//! `deleteChatUsers`, and a page of 100 sessions costs a constant number of SQL statements, as
//! many pages at once cost as many times those of one.

use std::{sync::Arc, time::Duration};

use caregraph::{
    clock::ManualClock,
    events::{ChangeKind, DomainEvent, SessionChange, StatusEvent},
    providers::chat::ChannelRef,
};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;

use crate::{
    chat_sessions::{appointment, back_to_back},
    fakes::{self, FakeProvider},
    helpers::{Clinic, TestApp, code, quick, settle, workers_asleep},
};

const OPEN: &str = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id status allowedFrom members { user { id } } } }";
const CLOSE: &str = "mutation($id: ID!) { closeChatSession(sessionId: $id) { id status } }";
const RESCHEDULE: &str = "mutation($id: ID!, $s: DateTime!) { rescheduleAppointment(id: $id, startsAt: $s, durationMinutes: 30) { id } }";

/// A clinic with `n` back-to-back appointments whose chats its vet has opened.
async fn clinic_with_chats(app: &TestApp, tag: &str, n: i64) -> Clinic {
    let c = app.clinic(tag).await;
    for id in back_to_back(app, &c, Utc::now(), n).await {
        app.ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
            .await;
    }
    c
}

/// The next status event (skipping list changes), within two seconds.
async fn next_status(rx: &mut Receiver<Arc<DomainEvent>>) -> StatusEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("a status event within 2 s")
            .expect("no lag");
        if let DomainEvent::ChatStatus(s) = &*event {
            return s.clone();
        }
    }
}

/// The next list change, within two seconds.
async fn next_change(rx: &mut Receiver<Arc<DomainEvent>>) -> SessionChange {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("a change within 2 s")
            .expect("no lag");
        if let DomainEvent::ChatChanged(c) = &*event {
            return c.clone();
        }
    }
}

fn no_more_status(rx: &mut Receiver<Arc<DomainEvent>>) {
    while let Ok(event) = rx.try_recv() {
        assert!(
            !matches!(&*event, DomainEvent::ChatStatus(_)),
            "unexpected {event:?}"
        );
    }
}

fn member_ids(session: &Value) -> Vec<String> {
    let mut ids: Vec<String> = session["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user"]["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn every_status_transition_of_a_chat_is_one_event_on_the_bus() {
    let start = Utc::now();
    let clock = ManualClock::new(start);
    let app = TestApp::spawn_with_clock(clock.clone(), quick).await;
    let c = app.clinic("events").await;
    let mut rx = app.state.services.events.subscribe();
    let id = appointment(&app, &c, start + chrono::Duration::minutes(60)).await;
    let session = app
        .ok(
            &c.client.token,
            OPEN,
            json!({"id": id}),
            "openAppointmentChat",
        )
        .await;
    let sid = session["id"].as_str().expect("id").to_owned();
    // Creation: a list change, then the status for those following the appointment.
    let created = next_change(&mut rx).await;
    assert!(
        created
            .member_ids
            .iter()
            .any(|u| u.to_string() == c.tech.id),
        "members travel with the change: {created:?}"
    );

    let current = next_status(&mut rx).await;
    assert_eq!(
        (current.reason.as_str(), current.status.as_str()),
        ("CURRENT", "PENDING"),
        "followers of the appointment learn the new session"
    );
    assert_eq!(current.session_id.map(|s| s.to_string()), Some(sid.clone()));

    // A reschedule moves the window and says so.
    let moved_to = start + chrono::Duration::minutes(20);
    app.ok(
        &c.owner.token,
        RESCHEDULE,
        json!({"id": id, "s": moved_to.to_rfc3339()}),
        "rescheduleAppointment",
    )
    .await;
    let event = next_status(&mut rx).await;
    assert_eq!(event.reason.as_str(), "RESCHEDULED");
    assert_eq!(event.status.as_str(), "PENDING");
    assert_eq!(event.session_id.map(|s| s.to_string()), Some(sid.clone()));
    assert_eq!(
        event.appointment_id.map(|a| a.to_string()),
        Some(id.clone())
    );
    let from = event.allowed_from.expect("window");
    assert_eq!(
        from.timestamp(),
        (moved_to - chrono::Duration::minutes(5)).timestamp()
    );

    // The scheduler opens the window on time, once.
    clock.set(from + chrono::Duration::seconds(1));
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 1);
    assert_eq!(app.state.services.chats.tick().await.expect("tick"), 0);
    let event = next_status(&mut rx).await;
    assert_eq!(event.reason.as_str(), "WINDOW_OPENED");
    assert_eq!(event.status.as_str(), "ACTIVE");
    no_more_status(&mut rx);

    // A close by the practice: one status event and one list change, however often it is asked.
    app.ok(&c.vet.token, CLOSE, json!({"id": sid}), "closeChatSession")
        .await;
    app.ok(&c.vet.token, CLOSE, json!({"id": sid}), "closeChatSession")
        .await;
    let event = next_status(&mut rx).await;
    assert_eq!(event.reason.as_str(), "CLOSED_BY_USER");
    assert_eq!(event.status.as_str(), "CLOSED");
    let change = next_change(&mut rx).await;
    assert_eq!(change.kind, ChangeKind::Closed);
    settle(&app).await;
    no_more_status(&mut rx);
}

#[tokio::test]
async fn the_window_ending_and_a_cancellation_are_announced_with_their_reasons() {
    let start = Utc::now();
    let clock = ManualClock::new(start);
    let app = TestApp::spawn_with_clock(clock.clone(), quick).await;
    let c = app.clinic("endings").await;
    let mut rx = app.state.services.events.subscribe();
    let ends = appointment(&app, &c, start).await;
    let cancelled = appointment(&app, &c, start + chrono::Duration::hours(5)).await;
    for id in [&ends, &cancelled] {
        app.ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
            .await;
    }
    for _ in 0..2 {
        assert_eq!(next_status(&mut rx).await.reason.as_str(), "CURRENT");
    }
    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { cancelAppointment(id: $id) { status } }",
        json!({"id": cancelled}),
        "cancelAppointment",
    )
    .await;
    let event = next_status(&mut rx).await;
    assert_eq!(event.reason.as_str(), "APPOINTMENT_CANCELLED");
    assert_eq!(event.appointment_id.map(|a| a.to_string()), Some(cancelled));

    // 30 minutes of appointment and 120 after: the window ends.
    clock.set(start + chrono::Duration::minutes(151));
    app.state.services.chats.tick().await.expect("tick");
    let event = next_status(&mut rx).await;
    assert_eq!(event.reason.as_str(), "WINDOW_ENDED");
    assert_eq!(event.status.as_str(), "CLOSED");
    assert_eq!(event.appointment_id.map(|a| a.to_string()), Some(ends));
    settle(&app).await;
    no_more_status(&mut rx);
}

#[tokio::test]
async fn a_new_practitioner_or_support_staff_changes_the_appointment_chat_members() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("staffing").await;
    let id = appointment(&app, &c, Utc::now() + chrono::Duration::minutes(2)).await;
    let session = app
        .ok(
            &c.client.token,
            OPEN,
            json!({"id": id}),
            "openAppointmentChat",
        )
        .await;
    assert_eq!(
        member_ids(&session),
        sorted(vec![
            c.client.id.clone(),
            c.vet.id.clone(),
            c.tech.id.clone()
        ])
    );
    let mut rx = app.state.services.events.subscribe();
    let assign = "mutation($id: ID!, $p: ID!, $s: [ID!]!) { assignAppointmentStaff(id: $id, practitionerId: $p, supportStaffIds: $s) { practitioner { id } supportStaff { id } chat { members { user { id } } } } }";
    // Bad input changes nothing.
    let body = app
        .gql(
            Some(&c.owner.token),
            assign,
            json!({"id": id, "p": c.stranger.id, "s": []}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "practitionerId",
        "{body}"
    );
    assert_eq!(
        code(
            &app.gql(
                Some(&c.client.token),
                assign,
                json!({"id": id, "p": c.tech.id, "s": []}),
            )
            .await
        ),
        "FORBIDDEN",
        "a client does not staff appointments"
    );
    let a = app
        .ok(
            &c.owner.token,
            assign,
            json!({"id": id, "p": c.tech.id, "s": [c.owner.id]}),
            "assignAppointmentStaff",
        )
        .await;
    assert_eq!(a["practitioner"]["id"], c.tech.id.as_str());
    assert_eq!(
        member_ids(&a["chat"]),
        sorted(vec![
            c.client.id.clone(),
            c.tech.id.clone(),
            c.owner.id.clone()
        ]),
        "the old practitioner left, the new support staff joined"
    );
    let change = next_change(&mut rx).await;
    assert_eq!(change.kind, ChangeKind::MembersChanged);
    assert!(
        change.member_ids.iter().any(|u| u.to_string() == c.vet.id),
        "the one who left learns of it too"
    );
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let (_, members, _) = local
        .inspect(&ChannelRef {
            channel_type: "messaging".into(),
            channel_id: format!("appointment-{id}"),
        })
        .await
        .expect("inspect")
        .expect("channel");
    assert_eq!(
        sorted(members),
        sorted(vec![
            c.client.id.clone(),
            c.tech.id.clone(),
            c.owner.id.clone()
        ]),
        "the provider channel follows"
    );
    assert_eq!(
        code(
            &app.gql(
                Some(&c.vet.token),
                "query($id: ID!) { chatSession(id: $id) { id } }",
                json!({"id": session["id"]}),
            )
            .await
        ),
        "NOT_FOUND",
        "the old practitioner no longer reads the chat"
    );
}

#[tokio::test]
async fn an_organization_sets_how_early_its_appointment_chats_open() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("early").await;
    let update = "mutation($o: ID!, $m: Int!) { updateOrganization(orgId: $o, input: {chatActivationMinutes: $m}) { chatActivationMinutes } }";
    let body = app
        .gql(Some(&c.owner.token), update, json!({"o": c.org, "m": 2000}))
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        "input.chatActivationMinutes"
    );
    assert_eq!(
        code(
            &app.gql(Some(&c.vet.token), update, json!({"o": c.org, "m": 30}))
                .await
        ),
        "FORBIDDEN",
        "an admin's setting"
    );
    let org = app
        .ok(
            &c.owner.token,
            update,
            json!({"o": c.org, "m": 30}),
            "updateOrganization",
        )
        .await;
    assert_eq!(org["chatActivationMinutes"], 30);
    let starts = Utc::now() + chrono::Duration::minutes(20);
    let id = appointment(&app, &c, starts).await;
    let session = app
        .ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
        .await;
    assert_eq!(session["status"], "ACTIVE", "open 30 minutes before");
    let from: chrono::DateTime<Utc> = session["allowedFrom"]
        .as_str()
        .expect("from")
        .parse()
        .expect("time");
    assert_eq!(
        (starts - from).num_minutes(),
        30,
        "the organisation's default decides"
    );
}

#[tokio::test]
async fn revoking_a_consent_takes_outside_staff_out_of_the_care_team_chat_at_once() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("revokechat").await;
    let consent = app
        .ok(
            &c.owner.token,
            "mutation($p: ID!, $o: ID!) { recordConsent(patientId: $p, input: {scope: MESSAGING, grantedToOrgId: $o}) { id } }",
            json!({"p": c.patient, "o": c.other_org}),
            "recordConsent",
        )
        .await;
    let team = app
        .ok(
            &c.vet.token,
            "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Ortho\", memberIds: $m}) { id chat { members { user { id } } } } }",
            json!({"p": c.patient, "m": [c.tech.id, c.outsider.id]}),
            "createCareTeam",
        )
        .await;
    assert!(member_ids(&team["chat"]).contains(&c.outsider.id));
    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { revokeConsent(id: $id) { id } }",
        json!({"id": consent["id"]}),
        "revokeConsent",
    )
    .await;
    let read = "query($t: ID!) { careTeam(id: $t) { chat { members { user { id } } } } }";
    let now = app
        .ok(&c.vet.token, read, json!({"t": team["id"]}), "careTeam")
        .await;
    assert_eq!(
        member_ids(&now["chat"]),
        sorted(vec![c.vet.id.clone(), c.tech.id.clone()]),
        "the outside member left with the consent"
    );
    settle(&app).await;
    let local = app
        .state
        .services
        .chat_provider
        .local
        .clone()
        .expect("local");
    let (_, members, _) = local
        .inspect(&ChannelRef {
            channel_type: "messaging".into(),
            channel_id: format!("careteam-{}", team["id"].as_str().expect("id")),
        })
        .await
        .expect("inspect")
        .expect("room");
    assert!(
        !members.contains(&c.outsider.id),
        "and left the provider room"
    );
}

#[tokio::test]
async fn deleting_chat_users_needs_an_admin_and_users_who_are_active_nowhere() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        for (k, val) in fake.vars() {
            v.insert(k, val);
        }
    })
    .await;
    let c = app.clinic("deleteusers").await;
    let dm = "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id memberCount } }";
    let session = app
        .ok(
            &c.vet.token,
            dm,
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    let delete = "mutation($o: ID!, $u: [ID!]!) { deleteChatUsers(orgId: $o, userIds: $u) }";
    let run = |token: &str, users: Value| {
        let token = token.to_owned();
        let app = &app;
        let org = c.org.clone();
        async move {
            app.gql(Some(&token), delete, json!({"o": org, "u": users}))
                .await
        }
    };
    assert_eq!(
        code(&run(&c.vet.token, json!([c.tech.id])).await),
        "FORBIDDEN"
    );
    assert_eq!(
        code(&run(&c.outsider.token, json!([c.tech.id])).await),
        "NOT_FOUND"
    );
    let still_active = run(&c.owner.token, json!([c.tech.id])).await;
    assert_eq!(code(&still_active), "BAD_USER_INPUT");
    assert_eq!(still_active["errors"][0]["extensions"]["field"], "userIds");
    assert_eq!(
        code(&run(&c.owner.token, json!([c.stranger.id])).await),
        "BAD_USER_INPUT",
        "a user the organisation never knew"
    );
    assert_eq!(
        code(&run(&c.owner.token, json!([c.owner.id])).await),
        "BAD_USER_INPUT"
    );
    assert_eq!(
        code(&run(&c.owner.token, json!([c.client.id])).await),
        "BAD_USER_INPUT",
        "a guardian is still active"
    );
    settle(&app).await;
    assert!(
        fake.control().calls("POST", "/users/delete").is_empty(),
        "refusals changed nothing at the provider"
    );
    app.ok(
        &c.owner.token,
        "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
        json!({"o": c.org, "u": c.tech.id}),
        "updateOrganizationMember",
    )
    .await;
    let done = run(&c.owner.token, json!([c.tech.id, c.tech.id])).await;
    assert_eq!(done["data"]["deleteChatUsers"], 1, "{done}");
    settle(&app).await;
    let calls = fake.control().calls("POST", "/users/delete");
    assert_eq!(calls.len(), 1, "one bulk call");
    assert_eq!(calls[0].json()["user_ids"], json!([c.tech.id]));
    let after = app
        .ok(
            &c.vet.token,
            "query($id: ID!) { chatSession(id: $id) { memberCount } }",
            json!({"id": session["id"]}),
            "chatSession",
        )
        .await;
    assert_eq!(
        after["memberCount"], 1,
        "the deleted user left the chat here too"
    );
    assert_eq!(
        app.state
            .services
            .outbox
            .counts()
            .await
            .expect("counts")
            .dead,
        0
    );
}

#[tokio::test]
async fn a_page_of_100_chat_sessions_costs_the_same_sql_statements_as_a_page_of_10() {
    let app = TestApp::spawn_with(workers_asleep).await;
    let c = clinic_with_chats(&app, "chatpage", 100).await;
    let q =
        "query($o: ID!, $n: Int!) { chatSessions(orgId: $o, first: $n) { totalCount edges { node {
        id status category memberCount members { user { id displayName } role }
        organization { name } createdBy { id }
        appointment { id patient { name } client { email } practitioner { id } }
        lastMessage { text } unreadCount } } } }";
    let mut counts = Vec::new();
    for n in [100, 10] {
        let before = app.state.services.stats.statements();
        let page = app
            .ok(&c.vet.token, q, json!({"o": c.org, "n": n}), "chatSessions")
            .await;
        counts.push(app.state.services.stats.statements() - before);
        let edges = page["edges"].as_array().expect("edges");
        assert_eq!(edges.len(), n as usize);
        assert!(
            edges
                .iter()
                .all(|e| e["node"]["appointment"]["patient"]["name"].is_string()),
            "every row has its appointment"
        );
    }
    // Each lookup is one statement per wave of the loaders; users are asked for at three
    // depths (members, createdBy, the appointment's people), and whether two of those waves
    // share a batch depends on timing, so the count may differ by a wave, never by a row.
    // Four are the read rule's facts for the page (the viewer's memberships, the appointments,
    // their support staff, the patients' guardians): 18 to 19 in all when measured.
    assert!(
        counts[0] <= counts[1] + 2 && counts[0] <= 22,
        "statements for 100 vs 10 rows: {counts:?}"
    );
}

#[tokio::test]
async fn a_client_lists_the_chats_they_are_in_and_nobody_else_lists_an_organization_they_do_not_know()
 {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("clientlist").await;
    let id = appointment(&app, &c, Utc::now()).await;
    let session = app
        .ok(&c.vet.token, OPEN, json!({"id": id}), "openAppointmentChat")
        .await;
    app.ok(
        &c.vet.token,
        "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id } }",
        json!({"o": c.org, "c": c.tech.id}),
        "openDirectChat",
    )
    .await;
    let list = "query($o: ID!) { chatSessions(orgId: $o, first: 10) { totalCount edges { node { id category } } } }";
    let mine = app
        .ok(&c.client.token, list, json!({"o": c.org}), "chatSessions")
        .await;
    assert_eq!(mine["totalCount"], 1, "only the client's own chat: {mine}");
    assert_eq!(mine["edges"][0]["node"]["id"], session["id"]);
    assert_eq!(
        code(
            &app.gql(Some(&c.stranger.token), list, json!({"o": c.org}))
                .await
        ),
        "NOT_FOUND"
    );
    assert_eq!(
        code(
            &app.gql(Some(&c.outsider.token), list, json!({"o": c.org}))
                .await
        ),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_page_of_100_chats_with_last_message_and_unread_count_reads_stream_in_4_calls() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = clinic_with_chats(&app, "streampage", 100).await;
    settle(&app).await;
    fake.control().clear();
    let page = app
        .ok(
            &c.vet.token,
            "query($o: ID!) { chatSessions(orgId: $o, first: 100) { edges { node { id lastMessage { text } unreadCount } } } }",
            json!({"o": c.org}),
            "chatSessions",
        )
        .await;
    assert_eq!(page["edges"].as_array().expect("edges").len(), 100);
    assert!(
        page["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .all(|e| e["node"]["unreadCount"] == 0)
    );
    assert_eq!(
        fake.control().calls("POST", "/channels").len(),
        4,
        "ceil(100 / 30): one call per Stream batch, both fields sharing each row's read"
    );
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_gets_the_current_state_instead_of_a_gap() {
    use futures_util::StreamExt;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.insert("CAREGRAPH_EVENT_BUFFER".into(), "16".into());
    })
    .await;
    let c = app.clinic("lagging").await;
    let dm = app
        .ok(
            &c.vet.token,
            "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id } }",
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    let vet_id = caregraph::domain::UserId::parse(&c.vet.id, "id").expect("id");
    let vet = app
        .state
        .services
        .lookups
        .users(&[vet_id])
        .await
        .expect("users")[&vet_id]
        .clone();
    let viewer =
        caregraph::auth::Viewer::signed_in(vet, Utc::now() + chrono::Duration::hours(1), None);
    let request = async_graphql::Request::new(
        "subscription($s: ID!) { chatSessionStatus(sessionId: $s) { status reason } }",
    )
    .variables(async_graphql::Variables::from_json(json!({"s": dm["id"]})));
    let mut stream = app.state.graphql.execute_stream(request, viewer);
    let first = stream
        .next()
        .await
        .expect("first")
        .data
        .into_json()
        .expect("json");
    assert_eq!(first["chatSessionStatus"]["reason"], "CURRENT");
    assert_eq!(first["chatSessionStatus"]["status"], "ACTIVE");
    // While this subscriber reads nothing, far more than its 16 buffered events go by.
    for _ in 0..100 {
        app.state
            .services
            .events
            .publish(DomainEvent::ChatChanged(SessionChange {
                session_id: caregraph::domain::ChatSessionId::new(),
                org_ids: vec![],
                member_ids: vec![],
                kind: ChangeKind::Message,
                last_message: None,
                at: Utc::now(),
            }));
    }
    app.ok(
        &c.vet.token,
        CLOSE,
        json!({"id": dm["id"]}),
        "closeChatSession",
    )
    .await;
    let resync = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("an event")
        .expect("open")
        .data
        .into_json()
        .expect("json");
    assert_eq!(
        resync["chatSessionStatus"],
        json!({"status": "CLOSED", "reason": "CURRENT"}),
        "the state as it is now, not a silent gap"
    );
}

#[tokio::test]
async fn a_chat_list_page_asked_16_times_at_once_costs_16_times_the_sql_statements_of_one() {
    // Stream, so that the rows' provider state and their members answer at different times
    // (they did split the members' level into batches of two rows when they landed together).
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        v.extend(fake.vars());
        workers_asleep(v);
    })
    .await;
    let c = clinic_with_chats(&app, "chatload", 60).await;
    // The PMS chat list (`caregraph-bench chats`).
    let q = "query($o: ID!) { chatSessions(orgId: $o, first: 50) { nodes { id category status
        title isGroup memberCount unreadCount lastMessage { id text } members { role user { id
        displayName } } } } }";
    let page = || app.ok(&c.vet.token, q, json!({"o": c.org}), "chatSessions");
    let statements = || app.state.services.stats.statements();
    let one = page().await;
    let before = statements();
    page().await;
    let single = statements() - before;
    assert_eq!(one["nodes"].as_array().expect("nodes").len(), 50);
    assert!(
        one["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .all(|n| n["unreadCount"] == 0)
    );
    let before = statements();
    futures_util::future::join_all((0..16).map(|_| page())).await;
    assert_eq!(
        statements() - before,
        16 * single,
        "each page's levels are loaded in one batch per lookup, whatever the load"
    );
}
