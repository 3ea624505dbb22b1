//! Access that ends: people who were entitled once (deactivated staff, removed guardians,
//! outside members whose consent was revoked) lose access at once; participants who are not the
//! patient's carers do not see the patient's record; sockets have size and operation limits.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::helpers::{TestApp, code};

const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id } }";
const READ: &str = "query($id: ID!) { appointment(id: $id) { id meeting { joinUrl } } }";
const DEACTIVATE: &str = "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }";

#[tokio::test]
async fn deactivated_support_staff_and_removed_guardians_lose_the_appointment() {
    let app = TestApp::spawn().await;
    let c = app.clinic("revoke").await;
    let a = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": {
                "patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
                "supportStaffIds": [c.tech.id], "startsAt": chrono::Utc::now().to_rfc3339(),
                "durationMinutes": 30, "sessionType": "TELECONFERENCE"
            }}),
            "scheduleAppointment",
        )
        .await;
    let id = a["id"].as_str().expect("id").to_owned();
    for person in [&c.tech, &c.client] {
        let seen = app
            .ok(&person.token, READ, json!({"id": id}), "appointment")
            .await;
        assert!(seen["meeting"]["joinUrl"].is_string());
    }
    app.ok(
        &c.owner.token,
        DEACTIVATE,
        json!({"o": c.org, "u": c.tech.id}),
        "updateOrganizationMember",
    )
    .await;
    assert_eq!(
        code(&app.gql(Some(&c.tech.token), READ, json!({"id": id})).await),
        "NOT_FOUND"
    );
    let join = "mutation($id: ID!) { joinMeeting(appointmentId: $id) { joinUrl } }";
    assert_eq!(
        code(&app.gql(Some(&c.tech.token), join, json!({"id": id})).await),
        "NOT_FOUND"
    );

    app.ok(
        &c.owner.token,
        "mutation($p: ID!, $u: ID!) { removeGuardian(patientId: $p, userId: $u) { id } }",
        json!({"p": c.patient, "u": c.client.id}),
        "removeGuardian",
    )
    .await;
    assert_eq!(
        code(
            &app.gql(Some(&c.client.token), READ, json!({"id": id}))
                .await
        ),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn an_outside_care_team_member_loses_the_team_when_consent_is_revoked() {
    let app = TestApp::spawn().await;
    let c = app.clinic("teamrevoke").await;
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
            &c.owner.token,
            "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Rehab\", memberIds: $m}) { id } }",
            json!({"p": c.patient, "m": [c.outsider.id]}),
            "createCareTeam",
        )
        .await;
    let read = "query($id: ID!) { careTeam(id: $id) { name } }";
    let vars = json!({"id": team["id"]});
    assert_eq!(
        app.ok(&c.outsider.token, read, vars.clone(), "careTeam")
            .await["name"],
        "Rehab"
    );
    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { revokeConsent(id: $id) { id } }",
        json!({"id": consent["id"]}),
        "revokeConsent",
    )
    .await;
    assert_eq!(
        code(&app.gql(Some(&c.outsider.token), read, vars).await),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_case_participant_who_is_no_longer_a_carer_sees_the_case_but_not_the_patient() {
    let app = TestApp::spawn().await;
    let c = app.clinic("casepatient").await;
    let case = app
        .ok(
            &c.owner.token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id } }",
            json!({"o": c.org, "i": {"reference": "CLM-1", "title": "Claim", "patientId": c.patient,
                "participants": [{"userId": c.co_guardian.id, "role": "PATIENT"}, {"userId": c.client.id, "role": "PATIENT"}]}}),
            "createCase",
        )
        .await;
    // The co-guardian stops being one; they stay a participant of the case.
    app.ok(
        &c.owner.token,
        "mutation($p: ID!, $u: ID!) { removeGuardian(patientId: $p, userId: $u) { id } }",
        json!({"p": c.patient, "u": c.co_guardian.id}),
        "removeGuardian",
    )
    .await;
    let read = "query($id: ID!) { case(id: $id) { reference patient { name guardians { user { email } } } } }";
    let vars = json!({"id": case["id"]});
    let former = app
        .ok(&c.co_guardian.token, read, vars.clone(), "case")
        .await;
    assert_eq!(former["reference"], "CLM-1");
    assert_eq!(former["patient"], Value::Null);
    let client = app.ok(&c.client.token, read, vars.clone(), "case").await;
    assert_eq!(client["patient"]["name"], "Rex");
    let staff = app.ok(&c.tech.token, read, vars, "case").await;
    assert_eq!(staff["patient"]["name"], "Rex");
}

pub async fn socket(
    app: &TestApp,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = app.ws_url().into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = connect_async(request).await.expect("connect");
    ws.send(Message::Text(
        json!({"type": "connection_init", "payload": {"token": token}})
            .to_string()
            .into(),
    ))
    .await
    .expect("init");
    loop {
        if let Some(Ok(Message::Text(t))) = ws.next().await
            && serde_json::from_str::<Value>(&t).expect("json")["type"] == "connection_ack"
        {
            return ws;
        }
    }
}

pub async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<u16> {
    while let Ok(Some(msg)) =
        tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await
    {
        match msg {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test]
async fn a_socket_refuses_oversized_messages_and_too_many_operations() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_MAX_BODY_BYTES".into(), "65536".into());
    })
    .await;
    let (_, _, token) = app.owner("Limits WS", "limits-ws@example.org").await;

    let mut ws = socket(&app, &token).await;
    let huge = json!({"type": "subscribe", "id": "x", "payload": {"query": "x".repeat(100_000)}});
    let _ = ws.send(Message::Text(huge.to_string().into())).await;
    let code = close_code(&mut ws).await;
    assert_eq!(code, Some(1009), "an oversized message ends the socket");

    let mut ws = socket(&app, &token).await;
    for i in 0..101 {
        let sub = json!({"type": "subscribe", "id": format!("s{i}"), "payload": {"query": "subscription { serverTime(everyMs: 60000) }"}});
        if ws
            .send(Message::Text(sub.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, Some(4400));
}

#[tokio::test]
async fn list_arguments_are_bounded_and_named_when_too_long() {
    let app = TestApp::spawn().await;
    let c = app.clinic("lists").await;
    let ids: Vec<String> = (0..51)
        .map(|_| caregraph::domain::UserId::new().to_string())
        .collect();
    let body = app
        .gql(
            Some(&c.owner.token),
            "mutation($p: ID!, $m: [ID!]!) { createCareTeam(patientId: $p, input: {name: \"Big\", memberIds: $m}) { id } }",
            json!({"p": c.patient, "m": ids}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.memberIds");
    let participants: Vec<Value> = (0..51)
        .map(|_| json!({"userId": c.client.id, "role": "PATIENT"}))
        .collect();
    let body = app
        .gql(
            Some(&c.owner.token),
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id } }",
            json!({"o": c.org, "i": {"reference": "BIG", "title": "Big", "participants": participants}}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"],
        "input.participants"
    );
}
