//! Appointments and meeting links: scheduling rules, status transitions,
//! lists, the Jitsi room and window, signed join links, consent for outside staff, the
//! authorization matrix, and batching (SQL statements per page do not grow with its size).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Clinic, TestApp, code};

const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id status startsAt endsAt durationMinutes sessionType meeting { provider roomName joinableFrom joinableUntil state joinUrl } } }";
const READ: &str = "query($id: ID!) { appointment(id: $id) { id status startsAt endsAt meeting { roomName joinableFrom joinableUntil state joinUrl } } }";
const JOIN: &str = "mutation($id: ID!) { joinMeeting(appointmentId: $id) { roomName state joinUrl joinableFrom joinableUntil } }";
const SET_STATUS: &str = "mutation($id: ID!, $s: AppointmentStatus!) { setAppointmentStatus(id: $id, status: $s) { status } }";
const RESCHEDULE: &str = "mutation($id: ID!, $at: DateTime!, $d: Int!) { rescheduleAppointment(id: $id, startsAt: $at, durationMinutes: $d) { startsAt endsAt durationMinutes } }";
const CANCEL: &str = "mutation($id: ID!) { cancelAppointment(id: $id) { status } }";

fn at(offset_minutes: i64) -> String {
    (Utc::now() + Duration::minutes(offset_minutes)).to_rfc3339()
}

fn input(c: &Clinic, starts_in_minutes: i64, session: &str) -> Value {
    json!({
        "patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
        "supportStaffIds": [c.tech.id], "startsAt": at(starts_in_minutes), "durationMinutes": 30,
        "sessionType": session, "reason": "Limping on the left hind leg"
    })
}

async fn schedule(app: &TestApp, c: &Clinic, starts_in_minutes: i64, session: &str) -> Value {
    app.ok(
        &c.owner.token,
        SCHEDULE,
        json!({"org": c.org, "input": input(c, starts_in_minutes, session)}),
        "scheduleAppointment",
    )
    .await
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_teleconference_gets_a_fixed_unguessable_lowercase_room() {
    let app = TestApp::spawn().await;
    let c = app.clinic("room").await;
    let a = schedule(&app, &c, 120, "TELECONFERENCE").await;
    let room = a["meeting"]["roomName"].as_str().expect("room").to_owned();
    let appointment = id(&a);
    let (prefix, rest) = room.split_once('_').expect("prefix");
    assert_eq!(prefix, "caregraph");
    let (middle, suffix) = rest.rsplit_once('_').expect("suffix");
    assert_eq!(middle, appointment);
    assert_eq!(suffix.len(), 16);
    assert!(
        suffix
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(room.len() <= 64 && room == room.to_lowercase());
    assert_eq!(a["meeting"]["provider"], "jitsi");

    // Rescheduling keeps the room; an in-person appointment has no meeting.
    app.ok(
        &c.owner.token,
        RESCHEDULE,
        json!({"id": appointment, "at": at(300), "d": 45}),
        "rescheduleAppointment",
    )
    .await;
    let again = app
        .ok(
            &c.owner.token,
            READ,
            json!({"id": appointment}),
            "appointment",
        )
        .await;
    assert_eq!(again["meeting"]["roomName"], room.as_str());
    let in_person = schedule(&app, &c, 120, "IN_PERSON").await;
    assert_eq!(in_person["meeting"], Value::Null);
    let body = app
        .gql(Some(&c.client.token), JOIN, json!({"id": id(&in_person)}))
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn the_window_opens_fifteen_minutes_early_and_join_links_go_to_participants_only() {
    let app = TestApp::spawn().await;
    let c = app.clinic("window").await;
    let a = schedule(&app, &c, 10, "TELECONFERENCE").await;
    let appointment = id(&a);
    let starts: DateTime<Utc> = a["startsAt"]
        .as_str()
        .expect("startsAt")
        .parse()
        .expect("time");
    let from: DateTime<Utc> = a["meeting"]["joinableFrom"]
        .as_str()
        .expect("from")
        .parse()
        .expect("time");
    let until: DateTime<Utc> = a["meeting"]["joinableUntil"]
        .as_str()
        .expect("until")
        .parse()
        .expect("time");
    assert_eq!(starts - from, Duration::minutes(15));
    assert_eq!(until - starts, Duration::minutes(120));

    for person in [&c.client, &c.vet, &c.tech] {
        let seen = app
            .ok(
                &person.token,
                READ,
                json!({"id": appointment}),
                "appointment",
            )
            .await;
        assert_eq!(seen["meeting"]["state"], "OPEN");
        let url = seen["meeting"]["joinUrl"]
            .as_str()
            .expect("participants get a link");
        assert_eq!(
            url,
            format!(
                "https://meet.jit.si/{}",
                seen["meeting"]["roomName"].as_str().expect("room")
            )
        );
        let joined = app
            .ok(
                &person.token,
                JOIN,
                json!({"id": appointment}),
                "joinMeeting",
            )
            .await;
        assert_eq!(joined["joinUrl"], url);
    }
    // Staff who are not participants see the meeting but get no link and cannot join.
    let owner_view = app
        .ok(
            &c.owner.token,
            READ,
            json!({"id": appointment}),
            "appointment",
        )
        .await;
    assert_eq!(owner_view["meeting"]["state"], "OPEN");
    assert_eq!(owner_view["meeting"]["joinUrl"], Value::Null);
    assert_eq!(
        code(
            &app.gql(Some(&c.owner.token), JOIN, json!({"id": appointment}))
                .await
        ),
        "FORBIDDEN"
    );
    // A co-guardian without chat rights is no participant.
    assert_eq!(
        code(
            &app.gql(Some(&c.co_guardian.token), READ, json!({"id": appointment}))
                .await
        ),
        "NOT_FOUND"
    );

    // Cancelled: closed, no link, joining says why.
    app.ok(
        &c.owner.token,
        CANCEL,
        json!({"id": appointment}),
        "cancelAppointment",
    )
    .await;
    let seen = app
        .ok(
            &c.client.token,
            READ,
            json!({"id": appointment}),
            "appointment",
        )
        .await;
    assert_eq!(seen["meeting"]["state"], "CLOSED");
    assert_eq!(seen["meeting"]["joinUrl"], Value::Null);
    let body = app
        .gql(Some(&c.client.token), JOIN, json!({"id": appointment}))
        .await;
    assert_eq!(code(&body), "MEETING_NOT_OPEN");
}

#[tokio::test]
async fn joining_before_the_window_says_when_it_opens() {
    let app = TestApp::spawn().await;
    let c = app.clinic("early").await;
    let a = schedule(&app, &c, 180, "TELECONFERENCE").await;
    assert_eq!(a["meeting"]["state"], "NOT_YET_OPEN");
    assert_eq!(a["meeting"]["joinUrl"], Value::Null);
    let body = app
        .gql(Some(&c.client.token), JOIN, json!({"id": id(&a)}))
        .await;
    assert_eq!(code(&body), "MEETING_NOT_OPEN");
    let opens: DateTime<Utc> = body["errors"][0]["extensions"]["opensAt"]
        .as_str()
        .expect("opensAt")
        .parse()
        .expect("time");
    let from: DateTime<Utc> = a["meeting"]["joinableFrom"]
        .as_str()
        .expect("from")
        .parse()
        .expect("time");
    assert_eq!(opens, from);

    // After the window it is closed.
    let past = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": input(&c, -200, "TELECONFERENCE")}),
            "scheduleAppointment",
        )
        .await;
    assert_eq!(past["meeting"]["state"], "CLOSED");
    assert_eq!(
        code(
            &app.gql(Some(&c.client.token), JOIN, json!({"id": id(&past)}))
                .await
        ),
        "MEETING_NOT_OPEN"
    );
}

fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

#[tokio::test]
async fn a_secured_jitsi_link_carries_a_token_whose_claims_match_the_meeting() {
    let secret = "jitsi-shared-secret-for-tests";
    let app = TestApp::spawn_with(|v| {
        v.insert("JITSI_DOMAIN".into(), "meet.example.org".into());
        v.insert("JITSI_APP_ID".into(), "caregraph-app".into());
        v.insert("JITSI_APP_SECRET".into(), secret.into());
    })
    .await;
    let c = app.clinic("jwt").await;
    let a = schedule(&app, &c, 5, "TELECONFERENCE").await;
    for (person, moderator, email) in [
        (&c.vet, "true", "vet@jwt.example"),
        (&c.client, "false", "client@jwt.example"),
    ] {
        let m = app
            .ok(&person.token, JOIN, json!({"id": id(&a)}), "joinMeeting")
            .await;
        let url = m["joinUrl"].as_str().expect("link");
        let (base, token) = url.split_once("?jwt=").expect("a jwt parameter");
        let room = base
            .strip_prefix("https://meet.example.org/")
            .expect("domain");
        assert_eq!(room, m["roomName"].as_str().expect("room"));

        // Decoded and verified here by hand, independently of the library that signed it.
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = b64_json(parts[0]);
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["typ"], "JWT");
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).expect("sig"))
            .expect("the signature verifies");

        let claims = b64_json(parts[1]);
        assert_eq!(claims["iss"], "caregraph-app");
        assert_eq!(claims["aud"], "jitsi");
        assert_eq!(claims["sub"], "meet.example.org");
        assert_eq!(claims["room"], room);
        let from: DateTime<Utc> = m["joinableFrom"]
            .as_str()
            .expect("from")
            .parse()
            .expect("time");
        let until: DateTime<Utc> = m["joinableUntil"]
            .as_str()
            .expect("until")
            .parse()
            .expect("time");
        assert_eq!(claims["nbf"], from.timestamp());
        assert_eq!(claims["exp"], until.timestamp());
        let user = &claims["context"]["user"];
        assert_eq!(user["id"], person.id.as_str());
        assert_eq!(user["email"], email);
        assert_eq!(user["moderator"], moderator);
        for field in ["id", "name", "email", "avatar", "moderator"] {
            assert!(user[field].is_string(), "context.user.{field} is a string");
        }
    }
}

#[tokio::test]
async fn scheduling_checks_every_party_and_names_the_field() {
    let app = TestApp::spawn().await;
    let c = app.clinic("rules").await;
    let other = app.clinic("rules2").await;
    let cases = [
        (json!({"clientId": c.stranger.id}), "input.clientId"),
        (
            json!({"practitionerId": c.client.id}),
            "input.practitionerId",
        ),
        (json!({"patientId": other.patient}), "input.patientId"),
        (json!({"durationMinutes": 4}), "input.durationMinutes"),
        (json!({"durationMinutes": 481}), "input.durationMinutes"),
        (json!({"activationMinutes": 999}), "input.activationMinutes"),
        (json!({"startsAt": at(-3 * 24 * 60)}), "input.startsAt"),
        (
            json!({"supportStaffIds": [c.client.id]}),
            "input.supportStaffIds",
        ),
        (json!({"patientId": "not-an-id"}), "input.patientId"),
    ];
    for (change, field) in cases {
        let mut i = input(&c, 60, "TELECONFERENCE");
        for (k, v) in change.as_object().expect("object") {
            i[k] = v.clone();
        }
        let body = app
            .gql(
                Some(&c.owner.token),
                SCHEDULE,
                json!({"org": c.org, "input": i}),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{field}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let list = app
        .ok(
            &c.owner.token,
            "query($o: ID!) { appointments(orgId: $o) { totalCount } }",
            json!({"o": c.org}),
            "appointments",
        )
        .await;
    assert_eq!(list["totalCount"], 0, "nothing was created");
}

#[tokio::test]
async fn statuses_move_only_along_legal_transitions() {
    let app = TestApp::spawn().await;
    let c = app.clinic("status").await;
    let a = id(&schedule(&app, &c, 60, "IN_PERSON").await);
    for s in ["CHECKED_IN", "IN_PROGRESS", "COMPLETED"] {
        let v = app
            .ok(
                &c.vet.token,
                SET_STATUS,
                json!({"id": a, "s": s}),
                "setAppointmentStatus",
            )
            .await;
        assert_eq!(v["status"], s);
    }
    for s in ["UPCOMING", "CHECKED_IN", "CANCELLED"] {
        let body = app
            .gql(Some(&c.vet.token), SET_STATUS, json!({"id": a, "s": s}))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "COMPLETED -> {s}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "status");
    }
    let b = id(&schedule(&app, &c, 120, "IN_PERSON").await);
    app.ok(
        &c.owner.token,
        CANCEL,
        json!({"id": b}),
        "cancelAppointment",
    )
    .await;
    assert_eq!(
        code(
            &app.gql(
                Some(&c.owner.token),
                SET_STATUS,
                json!({"id": b, "s": "UPCOMING"})
            )
            .await
        ),
        "BAD_USER_INPUT"
    );
    assert_eq!(
        code(
            &app.gql(
                Some(&c.owner.token),
                RESCHEDULE,
                json!({"id": b, "at": at(90), "d": 30})
            )
            .await
        ),
        "BAD_USER_INPUT"
    );
    let still = app
        .ok(&c.owner.token, READ, json!({"id": b}), "appointment")
        .await;
    assert_eq!(still["status"], "CANCELLED");
}

#[tokio::test]
async fn rescheduling_moves_the_times_and_the_meeting_window() {
    let app = TestApp::spawn().await;
    let c = app.clinic("move").await;
    let a = schedule(&app, &c, 60, "TELECONFERENCE").await;
    let new_start = Utc::now() + Duration::days(2);
    let moved = app
        .ok(
            &c.owner.token,
            RESCHEDULE,
            json!({"id": id(&a), "at": new_start.to_rfc3339(), "d": 45}),
            "rescheduleAppointment",
        )
        .await;
    assert_eq!(moved["durationMinutes"], 45);
    let starts: DateTime<Utc> = moved["startsAt"]
        .as_str()
        .expect("t")
        .parse()
        .expect("time");
    let ends: DateTime<Utc> = moved["endsAt"].as_str().expect("t").parse().expect("time");
    assert_eq!(ends - starts, Duration::minutes(45));
    let seen = app
        .ok(&c.owner.token, READ, json!({"id": id(&a)}), "appointment")
        .await;
    let from: DateTime<Utc> = seen["meeting"]["joinableFrom"]
        .as_str()
        .expect("t")
        .parse()
        .expect("time");
    assert_eq!(starts - from, Duration::minutes(15));
    assert_eq!(seen["meeting"]["state"], "NOT_YET_OPEN");
    let bad = app
        .gql(
            Some(&c.owner.token),
            RESCHEDULE,
            json!({"id": id(&a), "at": new_start.to_rfc3339(), "d": 0}),
        )
        .await;
    assert_eq!(bad["errors"][0]["extensions"]["field"], "durationMinutes");
}

#[tokio::test]
async fn outside_support_staff_need_the_patients_video_consent() {
    let app = TestApp::spawn().await;
    let c = app.clinic("video").await;
    let mut i = input(&c, 5, "TELECONFERENCE");
    i["supportStaffIds"] = json!([c.outsider.id]);
    let body = app
        .gql(
            Some(&c.owner.token),
            SCHEDULE,
            json!({"org": c.org, "input": i.clone()}),
        )
        .await;
    assert_eq!(code(&body), "CONSENT_REQUIRED");

    let consent = app
        .ok(
            &c.owner.token,
            "mutation($p: ID!, $o: ID!) { recordConsent(patientId: $p, input: {scope: VIDEO, grantedToOrgId: $o}) { id } }",
            json!({"p": c.patient, "o": c.other_org}),
            "recordConsent",
        )
        .await;
    let a = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": i}),
            "scheduleAppointment",
        )
        .await;
    let seen = app
        .ok(
            &c.outsider.token,
            READ,
            json!({"id": id(&a)}),
            "appointment",
        )
        .await;
    assert!(seen["meeting"]["joinUrl"].is_string(), "{seen}");

    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { revokeConsent(id: $id) { revokedAt } }",
        json!({"id": consent["id"]}),
        "revokeConsent",
    )
    .await;
    // Without the consent they see nothing of the appointment, nor join it.
    let seen = app
        .gql(Some(&c.outsider.token), READ, json!({"id": id(&a)}))
        .await;
    assert_eq!(code(&seen), "NOT_FOUND", "{seen}");
    assert_eq!(seen["data"], Value::Null, "{seen}");
    assert_eq!(
        code(
            &app.gql(Some(&c.outsider.token), JOIN, json!({"id": id(&a)}))
                .await
        ),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn outside_support_staff_take_part_in_the_chat_only_while_a_messaging_consent_covers_them() {
    const OPEN: &str = "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id members { user { id } } } }";
    const CHAT: &str = "query($id: ID!) { chatSession(id: $id) { id } }";
    const CONSENT: &str = "mutation($p: ID!, $o: ID!, $s: ConsentScope!) { recordConsent(patientId: $p, input: {scope: $s, grantedToOrgId: $o}) { id } }";
    let app = TestApp::spawn().await;
    let c = app.clinic("msgconsent").await;
    let mut i = input(&c, 5, "TELECONFERENCE");
    i["supportStaffIds"] = json!([c.outsider.id]);
    app.ok(
        &c.owner.token,
        CONSENT,
        json!({"p": c.patient, "o": c.other_org, "s": "VIDEO"}),
        "recordConsent",
    )
    .await;
    let a = app
        .ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": i}),
            "scheduleAppointment",
        )
        .await;
    // VIDEO alone: the outsider is not put in the chat.
    let chat = app
        .ok(
            &c.owner.token,
            OPEN,
            json!({"id": id(&a)}),
            "openAppointmentChat",
        )
        .await;
    let members = chat["members"].to_string();
    assert!(!members.contains(&c.outsider.id), "{members}");
    let read = app
        .gql(Some(&c.outsider.token), CHAT, json!({"id": chat["id"]}))
        .await;
    assert_eq!(code(&read), "NOT_FOUND", "{read}");

    // With a MESSAGING consent the next staff sync takes them in, and they read the chat.
    let messaging = app
        .ok(
            &c.owner.token,
            CONSENT,
            json!({"p": c.patient, "o": c.other_org, "s": "MESSAGING"}),
            "recordConsent",
        )
        .await;
    app.ok(
        &c.owner.token,
        "mutation($id: ID!, $p: ID!, $s: [ID!]!) { assignAppointmentStaff(id: $id, practitionerId: $p, supportStaffIds: $s) { id } }",
        json!({"id": id(&a), "p": c.vet.id, "s": [c.outsider.id]}),
        "assignAppointmentStaff",
    )
    .await;
    app.ok(
        &c.outsider.token,
        CHAT,
        json!({"id": chat["id"]}),
        "chatSession",
    )
    .await;

    // Once that consent is revoked, the member row proves nothing: the chat is gone for them.
    app.ok(
        &c.owner.token,
        "mutation($id: ID!) { revokeConsent(id: $id) { revokedAt } }",
        json!({"id": messaging["id"]}),
        "revokeConsent",
    )
    .await;
    let read = app
        .gql(Some(&c.outsider.token), CHAT, json!({"id": chat["id"]}))
        .await;
    assert_eq!(code(&read), "NOT_FOUND", "{read}");
}

#[tokio::test]
async fn the_appointment_list_filters_and_pages() {
    let app = TestApp::spawn().await;
    let c = app.clinic("list").await;
    let mut ids = Vec::new();
    for hours in [5, 1, 3, 2, 4] {
        ids.push((
            hours,
            id(&schedule(&app, &c, hours * 60, "IN_PERSON").await),
        ));
    }
    ids.sort();
    let q = "query($o: ID!, $first: Int, $after: String, $from: DateTime, $to: DateTime, $p: ID, $s: AppointmentStatus) {
        appointments(orgId: $o, first: $first, after: $after, from: $from, to: $to, practitionerId: $p, status: $s) {
          totalCount pageInfo { hasNextPage endCursor } edges { node { id } } } }";
    let page1 = app
        .ok(
            &c.tech.token,
            q,
            json!({"o": c.org, "first": 2}),
            "appointments",
        )
        .await;
    assert_eq!(page1["totalCount"], 5);
    assert_eq!(page1["pageInfo"]["hasNextPage"], true);
    let got: Vec<&str> = page1["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        got,
        vec![ids[0].1.as_str(), ids[1].1.as_str()],
        "ordered by start"
    );
    let page2 = app
        .ok(
            &c.tech.token,
            q,
            json!({"o": c.org, "first": 3, "after": page1["pageInfo"]["endCursor"]}),
            "appointments",
        )
        .await;
    let got: Vec<&str> = page2["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        got,
        vec![ids[2].1.as_str(), ids[3].1.as_str(), ids[4].1.as_str()]
    );
    assert_eq!(page2["pageInfo"]["hasNextPage"], false);

    let window = app
        .ok(
            &c.tech.token,
            q,
            json!({"o": c.org, "from": at(90), "to": at(210)}),
            "appointments",
        )
        .await;
    assert_eq!(window["totalCount"], 2);
    app.ok(
        &c.owner.token,
        CANCEL,
        json!({"id": ids[0].1}),
        "cancelAppointment",
    )
    .await;
    let cancelled = app
        .ok(
            &c.tech.token,
            q,
            json!({"o": c.org, "s": "CANCELLED"}),
            "appointments",
        )
        .await;
    assert_eq!(cancelled["totalCount"], 1);
    let by_vet = app
        .ok(
            &c.tech.token,
            q,
            json!({"o": c.org, "p": c.vet.id}),
            "appointments",
        )
        .await;
    assert_eq!(by_vet["totalCount"], 5);
    let by_tech = app
        .ok(
            &c.tech.token,
            q,
            json!({"o": c.org, "p": c.tech.id}),
            "appointments",
        )
        .await;
    assert_eq!(by_tech["totalCount"], 0);
    for (first, field) in [(0, "first"), (101, "first")] {
        let body = app
            .gql(Some(&c.tech.token), q, json!({"o": c.org, "first": first}))
            .await;
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
}

#[tokio::test]
async fn outsiders_strangers_clients_and_anonymous_callers_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let c = app.clinic("authz").await;
    let a = id(&schedule(&app, &c, 60, "TELECONFERENCE").await);
    let mutations: Vec<(&str, Value)> = vec![
        (
            SCHEDULE,
            json!({"org": c.org, "input": input(&c, 30, "IN_PERSON")}),
        ),
        (RESCHEDULE, json!({"id": a, "at": at(500), "d": 60})),
        (SET_STATUS, json!({"id": a, "s": "CHECKED_IN"})),
        (CANCEL, json!({"id": a})),
        (JOIN, json!({"id": a})),
    ];
    let queries: Vec<(&str, Value)> = vec![
        (READ, json!({"id": a})),
        (
            "query($o: ID!) { appointments(orgId: $o) { totalCount } }",
            json!({"o": c.org}),
        ),
    ];
    for (query, vars) in mutations.iter().chain(queries.iter()) {
        for (who, token, expected) in [
            ("outsider", Some(c.outsider.token.as_str()), "NOT_FOUND"),
            ("stranger", Some(c.stranger.token.as_str()), "NOT_FOUND"),
            ("anonymous", None, "UNAUTHENTICATED"),
        ] {
            let body = app.gql(token, query, vars.clone()).await;
            assert_eq!(code(&body), expected, "{who}: {query}");
        }
    }
    // The client reads their appointment but may not change it.
    for (query, vars) in &mutations[1..4] {
        assert_eq!(
            code(&app.gql(Some(&c.client.token), query, vars.clone()).await),
            "FORBIDDEN",
            "{query}"
        );
    }
    assert_eq!(
        code(
            &app.gql(
                Some(&c.client.token),
                mutations[0].0,
                mutations[0].1.clone()
            )
            .await
        ),
        "NOT_FOUND"
    );
    assert_eq!(
        code(
            &app.gql(Some(&c.client.token), queries[1].0, queries[1].1.clone())
                .await
        ),
        "NOT_FOUND"
    );
    let seen = app
        .ok(&c.owner.token, READ, json!({"id": a}), "appointment")
        .await;
    assert_eq!(seen["status"], "UPCOMING");
    let list = app
        .ok(
            &c.owner.token,
            queries[1].0,
            queries[1].1.clone(),
            "appointments",
        )
        .await;
    assert_eq!(list["totalCount"], 1);
}

#[tokio::test]
async fn a_page_of_appointments_costs_the_same_sql_statements_whatever_its_size() {
    // The outbox worker sleeps through the measurement: only the queries' statements count.
    // Meetings stay open a day after their start, so that 50 back-to-back appointments of one
    // practitioner (no double booking) all have open meetings.
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_OUTBOX_POLL_MS".into(), "600000".into());
        v.insert("JITSI_MAX_LATE_MINUTES".into(), "1440".into());
    })
    .await;
    let c = app.clinic("batch").await;
    // Five minutes each, back to back, from 255 to 10 minutes ago: every meeting is open.
    for i in 0..50 {
        let mut one = input(&c, i * 5 - 255, "TELECONFERENCE");
        one["durationMinutes"] = json!(5);
        app.ok(
            &c.owner.token,
            SCHEDULE,
            json!({"org": c.org, "input": one}),
            "scheduleAppointment",
        )
        .await;
    }
    let q =
        "query($o: ID!, $n: Int!) { appointments(orgId: $o, first: $n) { totalCount edges { node {
        id patient { name species guardians { user { email } relationship } organization { name } }
        client { email displayName } practitioner { email } supportStaff { email }
        meeting { roomName state joinUrl joinableFrom } } } } }";
    let mut counts = Vec::new();
    for n in [50, 5] {
        let before = app.state.services.stats.statements();
        let page = app
            .ok(
                &c.tech.token,
                q,
                json!({"o": c.org, "n": n}),
                "appointments",
            )
            .await;
        counts.push(app.state.services.stats.statements() - before);
        let edges = page["edges"].as_array().expect("edges");
        assert_eq!(edges.len(), n as usize);
        assert!(
            edges
                .iter()
                .all(|e| e["node"]["meeting"]["joinUrl"].is_string()),
            "the tech is support staff"
        );
    }
    assert_eq!(
        counts[0], counts[1],
        "statements for 50 vs 5 rows: {counts:?}"
    );
    // On SQLite every read of the page was answered on the request's own thread.
    let db = &app.state.services.db;
    if sea_orm::ConnectionTrait::get_database_backend(db) == sea_orm::DatabaseBackend::Sqlite {
        let direct = caregraph::db::Source::direct(db).expect("a SQLite file is read directly");
        assert_eq!(direct.fallbacks(), 0, "reads left to the pool");
    }
}
