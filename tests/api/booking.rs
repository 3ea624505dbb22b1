//! Booking and availability: weekly availability and its validation, free slots in the
//! schedule's timezone (across a DST change), who may do what, a guardian's request of a slot
//! (REQUESTED, confirmed by staff, with its room and chat), no double booking of practitioners
//! and support staff, and concurrent requests for one slot making exactly one appointment.

use caregraph::db::entities::audit_event;
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp, code};

const SET: &str = "mutation($o: ID!, $p: ID!, $i: PractitionerAvailabilityInput!) {
    setPractitionerAvailability(orgId: $o, practitionerId: $p, input: $i) {
      practitioner { id } timezone slotMinutes weekly { weekday start end } } }";
const GET: &str = "query($o: ID!, $p: ID!) { practitionerAvailability(orgId: $o, practitionerId: $p) { timezone slotMinutes weekly { weekday start end } } }";
const SLOTS: &str = "query($o: ID!, $p: ID!, $from: DateTime!, $to: DateTime!, $t: SessionType!) {
    availableSlots(orgId: $o, practitionerId: $p, from: $from, to: $to, sessionType: $t) {
      startsAt endsAt durationMinutes sessionType } }";
const REQUEST: &str = "mutation($o: ID!, $i: RequestAppointmentInput!) {
    requestAppointment(orgId: $o, input: $i) {
      id status startsAt endsAt durationMinutes sessionType reason
      client { id } practitioner { id } meeting { roomName } } }";
const SCHEDULE: &str = "mutation($org: ID!, $input: ScheduleAppointmentInput!) { scheduleAppointment(orgId: $org, input: $input) { id status } }";
const RESCHEDULE: &str = "mutation($id: ID!, $at: DateTime!, $d: Int!) { rescheduleAppointment(id: $id, startsAt: $at, durationMinutes: $d) { startsAt } }";
const ASSIGN: &str = "mutation($id: ID!, $p: ID!, $s: [ID!]!) { assignAppointmentStaff(id: $id, practitionerId: $p, supportStaffIds: $s) { id } }";
const SET_STATUS: &str = "mutation($id: ID!, $s: AppointmentStatus!) { setAppointmentStatus(id: $id, status: $s) { status } }";
const CANCEL: &str = "mutation($id: ID!) { cancelAppointment(id: $id) { status } }";
const COUNT: &str = "query($o: ID!) { appointments(orgId: $o) { totalCount } }";

const DAYS: [&str; 7] = [
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
    "SUNDAY",
];

/// Every day from `start` to `end` local time.
fn every_day(start: &str, end: &str) -> Value {
    json!(
        DAYS.iter()
            .map(|d| json!({"weekday": d, "start": start, "end": end}))
            .collect::<Vec<_>>()
    )
}

fn week_input(timezone: &str, start: &str, end: &str, minutes: i32) -> Value {
    json!({"weekly": every_day(start, end), "timezone": timezone, "slotMinutes": minutes})
}

async fn set_availability(app: &TestApp, token: &str, c: &Clinic, input: Value) -> Value {
    app.ok(
        token,
        SET,
        json!({"o": c.org, "p": c.vet.id, "i": input}),
        "setPractitionerAvailability",
    )
    .await
}

/// From the next full hour for `days` days: the same range whenever a test asks again.
fn range(days: i64) -> (String, String) {
    let next_hour = (Utc::now().timestamp() / 3600 + 1) * 3600;
    let hour = DateTime::from_timestamp(next_hour, 0).expect("time");
    (
        hour.to_rfc3339(),
        (hour + Duration::days(days)).to_rfc3339(),
    )
}

async fn slots(app: &TestApp, token: &str, c: &Clinic, range: &(String, String)) -> Vec<Value> {
    let (from, to) = range;
    app.ok(
        token,
        SLOTS,
        json!({"o": c.org, "p": c.vet.id, "from": from, "to": to, "t": "TELECONFERENCE"}),
        "availableSlots",
    )
    .await
    .as_array()
    .expect("slots")
    .clone()
}

fn request_input(c: &Clinic, starts_at: &str) -> Value {
    json!({"patientId": c.patient, "practitionerId": c.vet.id, "startsAt": starts_at,
           "sessionType": "TELECONFERENCE", "reason": "Check-up"})
}

fn schedule_input(c: &Clinic, starts_at: &str, minutes: i32, support: &[&str]) -> Value {
    json!({"patientId": c.patient, "clientId": c.client.id, "practitionerId": c.vet.id,
           "supportStaffIds": support, "startsAt": starts_at, "durationMinutes": minutes,
           "sessionType": "IN_PERSON"})
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().expect("time").parse().expect("rfc3339")
}

fn field(body: &Value) -> &str {
    body["errors"][0]["extensions"]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no field in {body}"))
}

async fn count(app: &TestApp, c: &Clinic) -> i64 {
    app.ok(&c.owner.token, COUNT, json!({"o": c.org}), "appointments")
        .await["totalCount"]
        .as_i64()
        .expect("count")
}

#[tokio::test]
async fn a_guardian_requests_a_free_slot_which_staff_confirm_and_which_is_then_taken() {
    let app = TestApp::spawn().await;
    let c = app.clinic("book").await;
    let set = set_availability(
        &app,
        &c.owner.token,
        &c,
        week_input("Europe/Berlin", "09:00", "12:00", 30),
    )
    .await;
    assert_eq!(set["practitioner"]["id"], c.vet.id.as_str());
    assert_eq!(set["timezone"], "Europe/Berlin");
    assert_eq!(set["weekly"].as_array().expect("weekly").len(), 7);
    assert_eq!(
        set["weekly"][0],
        json!({"weekday": "MONDAY", "start": "09:00", "end": "12:00"})
    );

    let r = range(3);
    let free = slots(&app, &c.client.token, &c, &r).await;
    // Three days hold at least two whole mornings of six 30-minute slots.
    assert!(free.len() >= 12, "{free:?}");
    for s in &free {
        assert_eq!(
            time(&s["endsAt"]) - time(&s["startsAt"]),
            Duration::minutes(30)
        );
        assert_eq!(s["durationMinutes"], 30);
        assert_eq!(s["sessionType"], "TELECONFERENCE");
        assert!(time(&s["startsAt"]) > Utc::now() - Duration::minutes(1));
        let local = time(&s["startsAt"]).with_timezone(&chrono_tz::Europe::Berlin);
        let hm = local.format("%H:%M").to_string();
        assert!(
            ["09:00", "09:30", "10:00", "10:30", "11:00", "11:30"].contains(&hm.as_str()),
            "{hm}"
        );
    }
    let chosen = free[0]["startsAt"].as_str().expect("start").to_owned();

    let a = app
        .ok(
            &c.client.token,
            REQUEST,
            json!({"o": c.org, "i": request_input(&c, &chosen)}),
            "requestAppointment",
        )
        .await;
    assert_eq!(a["status"], "REQUESTED");
    assert_eq!(a["client"]["id"], c.client.id.as_str());
    assert_eq!(a["practitioner"]["id"], c.vet.id.as_str());
    assert_eq!(a["durationMinutes"], 30);
    assert_eq!(time(&a["startsAt"]), time(&json!(chosen)));
    assert!(a["meeting"]["roomName"].is_string(), "{a}");
    let id = a["id"].as_str().expect("id").to_owned();

    // The slot is gone for everyone; the others stay.
    let after = slots(&app, &c.vet.token, &c, &r).await;
    assert_eq!(after.len(), free.len() - 1);
    assert!(
        after
            .iter()
            .all(|s| time(&s["startsAt"]) != time(&json!(chosen)))
    );

    // The client opens the appointment's chat as for any appointment; staff confirm it.
    let chat = app
        .ok(
            &c.client.token,
            "mutation($id: ID!) { openAppointmentChat(appointmentId: $id) { id members { user { id } } } }",
            json!({"id": id}),
            "openAppointmentChat",
        )
        .await;
    let members = chat["members"].to_string();
    assert!(
        members.contains(&c.client.id) && members.contains(&c.vet.id),
        "{members}"
    );
    let confirmed = app
        .ok(
            &c.vet.token,
            SET_STATUS,
            json!({"id": id, "s": "UPCOMING"}),
            "setAppointmentStatus",
        )
        .await;
    assert_eq!(confirmed["status"], "UPCOMING");
    // A guardian cannot confirm their own request.
    let body = app
        .gql(
            Some(&c.client.token),
            SET_STATUS,
            json!({"id": id, "s": "UPCOMING"}),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");

    // Both changes are in the audit trail, each once, as their author's.
    assert!(app.state.services.audit.written().await);
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::Action.eq("CREATE"))
        .all(&app.state.services.db)
        .await
        .expect("records");
    let of = |entity: &str| -> Vec<&audit_event::Model> {
        rows.iter().filter(|r| r.entity_type == entity).collect()
    };
    let availability = of("AVAILABILITY");
    assert_eq!(availability.len(), 1);
    assert_eq!(
        availability[0].entity_id.as_deref(),
        Some(c.vet.id.as_str())
    );
    assert_eq!(
        availability[0].actor_id.as_deref(),
        Some(c.owner.id.as_str())
    );
    let created = of("APPOINTMENT");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].entity_id.as_deref(), Some(id.as_str()));
    assert_eq!(created[0].actor_id.as_deref(), Some(c.client.id.as_str()));
    assert_eq!(created[0].patient_id.as_deref(), Some(c.patient.as_str()));
}

#[tokio::test]
async fn a_time_off_the_schedule_is_bad_input_and_a_taken_slot_a_conflict_naming_starts_at() {
    let app = TestApp::spawn().await;
    let c = app.clinic("offslot").await;
    set_availability(
        &app,
        &c.vet.token,
        &c,
        week_input("UTC", "08:00", "20:00", 60),
    )
    .await;
    let r = range(2);
    let free = slots(&app, &c.client.token, &c, &r).await;
    let first = time(&free[0]["startsAt"]);

    // Ten minutes into a slot is no slot.
    let off = (first + Duration::minutes(10)).to_rfc3339();
    let body = app
        .gql(
            Some(&c.client.token),
            REQUEST,
            json!({"o": c.org, "i": request_input(&c, &off)}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(field(&body), "input.startsAt");
    // Nor is a time at night.
    let night = (first
        .date_naive()
        .and_hms_opt(22, 0, 0)
        .expect("22:00")
        .and_utc()
        + Duration::days(1))
    .to_rfc3339();
    let body = app
        .gql(
            Some(&c.client.token),
            REQUEST,
            json!({"o": c.org, "i": request_input(&c, &night)}),
        )
        .await;
    assert_eq!(field(&body), "input.startsAt", "{body}");

    // Staff book the vet over the slot's second half: the slot is taken.
    app.ok(
        &c.owner.token,
        SCHEDULE,
        json!({"org": c.org, "input": schedule_input(&c, &(first + Duration::minutes(30)).to_rfc3339(), 45, &[])}),
        "scheduleAppointment",
    )
    .await;
    let body = app
        .gql(
            Some(&c.client.token),
            REQUEST,
            json!({"o": c.org, "i": request_input(&c, &first.to_rfc3339())}),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(field(&body), "input.startsAt");
    let now_free = slots(&app, &c.client.token, &c, &r).await;
    assert!(
        now_free
            .iter()
            .all(|s| time(&s["startsAt"]) != first
                && time(&s["startsAt"]) != first + Duration::hours(1)),
        "the slots the appointment overlaps are gone"
    );
    assert_eq!(
        count(&app, &c).await,
        1,
        "the refused requests created nothing"
    );

    // A practitioner without availability takes no requests.
    let mut other = request_input(&c, &first.to_rfc3339());
    other["practitionerId"] = json!(c.tech.id);
    let body = app
        .gql(
            Some(&c.client.token),
            REQUEST,
            json!({"o": c.org, "i": other}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(field(&body), "input.practitionerId");
}

#[tokio::test]
async fn availability_input_is_checked_field_by_field_and_a_refusal_changes_nothing() {
    let app = TestApp::spawn().await;
    let c = app.clinic("avinput").await;
    let good = week_input("Europe/Berlin", "09:00", "12:00", 30);
    let with = |k: &str, v: Value| {
        let mut i = good.clone();
        i[k] = v;
        i
    };
    let cases = [
        (with("timezone", json!("Mars/Olympus_Mons")), "input.timezone"),
        (with("timezone", json!("")), "input.timezone"),
        (with("slotMinutes", json!(4)), "input.slotMinutes"),
        (with("slotMinutes", json!(481)), "input.slotMinutes"),
        (
            with("weekly", json!([{"weekday": "MONDAY", "start": "9:00", "end": "12:00"}])),
            "input.weekly[0].start",
        ),
        (
            with("weekly", json!([{"weekday": "MONDAY", "start": "09:00", "end": "24:00"}])),
            "input.weekly[0].end",
        ),
        (
            with("weekly", json!([{"weekday": "MONDAY", "start": "12:00", "end": "09:00"}])),
            "input.weekly[0].end",
        ),
        (
            with(
                "weekly",
                json!([
                    {"weekday": "MONDAY", "start": "09:00", "end": "12:00"},
                    {"weekday": "MONDAY", "start": "11:30", "end": "13:00"}
                ]),
            ),
            "input.weekly[1].start",
        ),
        (
            with(
                "weekly",
                json!(
                    (0..71)
                        .map(|i| json!({"weekday": DAYS[i % 7], "start": format!("{:02}:00", i / 7), "end": format!("{:02}:30", i / 7)}))
                        .collect::<Vec<_>>()
                ),
            ),
            "input.weekly",
        ),
    ];
    for (input, expected) in cases {
        let body = app
            .gql(
                Some(&c.owner.token),
                SET,
                json!({"o": c.org, "p": c.vet.id, "i": input}),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(field(&body), expected, "{body}");
    }
    // An unknown weekday is refused by the schema itself.
    let body = app
        .gql(
            Some(&c.owner.token),
            SET,
            json!({"o": c.org, "p": c.vet.id, "i": with("weekly", json!([{"weekday": "FUNDAY", "start": "09:00", "end": "10:00"}]))}),
        )
        .await;
    assert!(body["errors"].is_array(), "{body}");
    let none = app
        .ok(
            &c.owner.token,
            GET,
            json!({"o": c.org, "p": c.vet.id}),
            "practitionerAvailability",
        )
        .await;
    assert_eq!(none, Value::Null, "nothing was stored");

    // Setting again replaces the schedule; touching intervals are fine.
    set_availability(&app, &c.owner.token, &c, good).await;
    let replaced = set_availability(
        &app,
        &c.vet.token,
        &c,
        json!({"weekly": [
            {"weekday": "TUESDAY", "start": "13:00", "end": "17:00"},
            {"weekday": "TUESDAY", "start": "09:00", "end": "13:00"}
        ], "timezone": "America/New_York", "slotMinutes": 20}),
    )
    .await;
    assert_eq!(
        replaced["weekly"][0]["start"], "09:00",
        "sorted by weekday and start"
    );
    let stored = app
        .ok(
            &c.client.token,
            GET,
            json!({"o": c.org, "p": c.vet.id}),
            "practitionerAvailability",
        )
        .await;
    assert_eq!(stored["timezone"], "America/New_York");
    assert_eq!(stored["slotMinutes"], 20);
    assert_eq!(stored["weekly"].as_array().expect("weekly").len(), 2);
}

#[tokio::test]
async fn slots_keep_their_local_time_when_daylight_saving_time_starts() {
    let app = TestApp::spawn().await;
    let c = app.clinic("dst").await;
    set_availability(
        &app,
        &c.owner.token,
        &c,
        json!({"weekly": [{"weekday": "MONDAY", "start": "09:00", "end": "10:00"}],
               "timezone": "America/New_York", "slotMinutes": 60}),
    )
    .await;
    // US clocks go forward on Sunday 2027-03-14: 09:00 is 14:00Z the Monday before, 13:00Z after.
    let got = app
        .ok(
            &c.client.token,
            SLOTS,
            json!({"o": c.org, "p": c.vet.id, "from": "2027-03-08T00:00:00Z",
                   "to": "2027-03-16T00:00:00Z", "t": "IN_PERSON"}),
            "availableSlots",
        )
        .await;
    let starts: Vec<DateTime<Utc>> = got
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| time(&s["startsAt"]))
        .collect();
    assert_eq!(
        starts,
        [
            time(&json!("2027-03-08T14:00:00Z")),
            time(&json!("2027-03-15T13:00:00Z"))
        ]
    );
}

#[tokio::test]
async fn the_slot_range_is_bounded_and_ordered() {
    let app = TestApp::spawn().await;
    let c = app.clinic("range").await;
    set_availability(
        &app,
        &c.owner.token,
        &c,
        week_input("UTC", "09:00", "17:00", 30),
    )
    .await;
    let now = Utc::now();
    for (from, to) in [
        (now, now),
        (now + Duration::days(1), now),
        (now, now + Duration::days(31) + Duration::seconds(1)),
    ] {
        let body = app
            .gql(
                Some(&c.owner.token),
                SLOTS,
                json!({"o": c.org, "p": c.vet.id, "from": from.to_rfc3339(), "to": to.to_rfc3339(), "t": "IN_PERSON"}),
            )
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(field(&body), "to");
    }
    let month = slots(&app, &c.owner.token, &c, &range(30)).await;
    assert!(month.len() >= 29 * 16, "{}", month.len());
    assert!(
        month
            .windows(2)
            .all(|w| time(&w[0]["startsAt"]) < time(&w[1]["startsAt"]))
    );
    // Someone who is no member gets nothing about the practitioner.
    let body = app
        .gql(
            Some(&c.owner.token),
            SLOTS,
            json!({"o": c.org, "p": c.outsider.id, "from": now.to_rfc3339(), "to": (now + Duration::days(1)).to_rfc3339(), "t": "IN_PERSON"}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(field(&body), "practitionerId");
}

#[tokio::test]
async fn who_may_set_availability_read_slots_and_request_appointments() {
    let app = TestApp::spawn().await;
    let c = app.clinic("bookauth").await;
    let input = week_input("UTC", "08:00", "20:00", 30);
    // The practitioner themself and an OWNER may; other staff may not; outsiders learn nothing.
    set_availability(&app, &c.vet.token, &c, input.clone()).await;
    set_availability(&app, &c.owner.token, &c, input.clone()).await;
    for (token, expected) in [
        (c.tech.token.as_str(), "FORBIDDEN"),
        (c.client.token.as_str(), "NOT_FOUND"),
        (c.outsider.token.as_str(), "NOT_FOUND"),
        (c.stranger.token.as_str(), "NOT_FOUND"),
    ] {
        let body = app
            .gql(
                Some(token),
                SET,
                json!({"o": c.org, "p": c.vet.id, "i": input}),
            )
            .await;
        assert_eq!(code(&body), expected, "{body}");
    }
    // Staff and guardians (with or without chat rights) read slots; others get NOT_FOUND.
    let (from, to) = range(2);
    let vars = json!({"o": c.org, "p": c.vet.id, "from": from, "to": to, "t": "IN_PERSON"});
    for token in [
        &c.owner.token,
        &c.tech.token,
        &c.client.token,
        &c.co_guardian.token,
    ]
    .map(String::as_str)
    {
        let body = app.gql(Some(token), SLOTS, vars.clone()).await;
        assert!(body.get("errors").is_none(), "{body}");
        assert!(
            !body["data"]["availableSlots"]
                .as_array()
                .expect("slots")
                .is_empty()
        );
    }
    for token in [c.outsider.token.as_str(), c.stranger.token.as_str()] {
        let body = app.gql(Some(token), SLOTS, vars.clone()).await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
        let body = app
            .gql(Some(token), GET, json!({"o": c.org, "p": c.vet.id}))
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
    }
    let body = app.gql(None, SLOTS, vars.clone()).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");

    // Only a guardian of the patient requests; staff schedule; strangers learn nothing.
    let free = slots(&app, &c.client.token, &c, &range(2)).await;
    let start = free[0]["startsAt"].as_str().expect("start");
    let body = app
        .gql(
            Some(&c.owner.token),
            REQUEST,
            json!({"o": c.org, "i": request_input(&c, start)}),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    for token in [c.outsider.token.as_str(), c.stranger.token.as_str()] {
        let body = app
            .gql(
                Some(token),
                REQUEST,
                json!({"o": c.org, "i": request_input(&c, start)}),
            )
            .await;
        assert_eq!(code(&body), "NOT_FOUND", "{body}");
    }
    // The co-guardian (a guardian, without chat rights) may request and is the client.
    let a = app
        .ok(
            &c.co_guardian.token,
            REQUEST,
            json!({"o": c.org, "i": request_input(&c, start)}),
            "requestAppointment",
        )
        .await;
    assert_eq!(a["client"]["id"], c.co_guardian.id.as_str());
    assert_eq!(count(&app, &c).await, 1);
}

#[tokio::test]
async fn a_practice_that_allows_overbooking_may_schedule_a_vet_into_overlapping_appointments() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_ALLOW_OVERBOOKING".into(), "true".into());
    })
    .await;
    let c = app.clinic("overbook").await;
    let at = |minutes: i64| (Utc::now() + Duration::minutes(minutes)).to_rfc3339();
    for start in [120, 140] {
        let body = app
            .gql(
                Some(&c.owner.token),
                SCHEDULE,
                json!({"org": c.org, "input": schedule_input(&c, &at(start), 30, &[&c.tech.id])}),
            )
            .await;
        assert!(
            body["data"]["scheduleAppointment"]["id"].is_string(),
            "{body}"
        );
    }
}

#[tokio::test]
async fn scheduling_moving_or_staffing_someone_into_an_overlapping_appointment_is_a_conflict() {
    let app = TestApp::spawn().await;
    let c = app.clinic("overlap").await;
    let at = |minutes: i64| (Utc::now() + Duration::minutes(minutes)).to_rfc3339();
    let schedule = |input: Value| {
        let app = &app;
        let org = c.org.clone();
        let token = c.owner.token.clone();
        async move {
            app.gql(Some(&token), SCHEDULE, json!({"org": org, "input": input}))
                .await
        }
    };
    // A: the vet with the tech, 120 to 150 minutes from now.
    let a = schedule(schedule_input(&c, &at(120), 30, &[&c.tech.id])).await;
    let a = a["data"]["scheduleAppointment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{a}"))
        .to_owned();

    let body = schedule(schedule_input(&c, &at(140), 30, &[])).await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(field(&body), "input.practitionerId");

    let mut with_tech = schedule_input(&c, &at(100), 30, &[&c.tech.id]);
    with_tech["practitionerId"] = json!(c.owner.id);
    let body = schedule(with_tech).await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(field(&body), "input.supportStaffIds");

    // Back to back is fine: B right after A, with the owner as practitioner.
    let mut b = schedule_input(&c, &at(150), 30, &[]);
    b["practitionerId"] = json!(c.owner.id);
    let b = schedule(b).await;
    let b = b["data"]["scheduleAppointment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{b}"))
        .to_owned();
    let c2 = schedule(schedule_input(&c, &at(300), 30, &[])).await;
    let c2 = c2["data"]["scheduleAppointment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{c2}"))
        .to_owned();

    // Moving the vet's later appointment into A is a conflict on startsAt.
    let body = app
        .gql(
            Some(&c.owner.token),
            RESCHEDULE,
            json!({"id": c2, "at": at(110), "d": 30}),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(field(&body), "startsAt");
    // B (the owner alone) may overlap A's time: they share nobody. It may overlap its own.
    for minutes in [125, 130] {
        app.ok(
            &c.owner.token,
            RESCHEDULE,
            json!({"id": b, "at": at(minutes), "d": 30}),
            "rescheduleAppointment",
        )
        .await;
    }
    // Staffing B with A's vet or A's tech is a conflict on the argument that brought them in.
    let body = app
        .gql(
            Some(&c.owner.token),
            ASSIGN,
            json!({"id": b, "p": c.vet.id, "s": []}),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(field(&body), "practitionerId");
    let body = app
        .gql(
            Some(&c.owner.token),
            ASSIGN,
            json!({"id": b, "p": c.owner.id, "s": [c.tech.id]}),
        )
        .await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(field(&body), "supportStaffIds");

    // A cancelled appointment takes nobody's time.
    app.ok(
        &c.owner.token,
        CANCEL,
        json!({"id": a}),
        "cancelAppointment",
    )
    .await;
    app.ok(
        &c.owner.token,
        ASSIGN,
        json!({"id": b, "p": c.vet.id, "s": [c.tech.id]}),
        "assignAppointmentStaff",
    )
    .await;
    // Now the vet is B's practitioner: as support staff of another appointment, a conflict.
    let mut helper = schedule_input(&c, &at(140), 30, &[&c.vet.id]);
    helper["practitionerId"] = json!(c.owner.id);
    let body = schedule(helper).await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert_eq!(field(&body), "input.supportStaffIds");
    assert_eq!(
        count(&app, &c).await,
        3,
        "A, B and the later one; no refused one"
    );
}

/// Sends `n` requests for one slot at once: half guardian requests, half staff schedules.
async fn race(app: &TestApp, c: &Clinic, start: &str, n: usize) -> Vec<Value> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (token, query, vars) = if i % 2 == 0 {
            (
                c.client.token.clone(),
                REQUEST,
                json!({"o": c.org, "i": request_input(c, start)}),
            )
        } else {
            (
                c.owner.token.clone(),
                SCHEDULE,
                json!({"org": c.org, "input": schedule_input(c, start, 30, &[])}),
            )
        };
        let http = app.http.clone();
        let url = app.url("/graphql");
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"query": query, "variables": vars}))
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn concurrent_requests_for_one_slot_make_exactly_one_appointment() {
    let app = TestApp::spawn().await;
    let c = app.clinic("race").await;
    set_availability(
        &app,
        &c.owner.token,
        &c,
        week_input("UTC", "00:00", "23:30", 30),
    )
    .await;
    let free = slots(&app, &c.client.token, &c, &range(2)).await;
    for round in 0..3 {
        let start = free[round * 2]["startsAt"]
            .as_str()
            .expect("start")
            .to_owned();
        let answers = race(&app, &c, &start, 8).await;
        let won: Vec<&Value> = answers
            .iter()
            .filter(|b| b.get("errors").is_none())
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {answers:?}");
        for body in answers.iter().filter(|b| b.get("errors").is_some()) {
            assert_eq!(code(body), "CONFLICT", "{body}");
            assert!(
                ["input.startsAt", "input.practitionerId"].contains(&field(body)),
                "{body}"
            );
        }
        assert_eq!(
            count(&app, &c).await,
            i64::try_from(round + 1).expect("small")
        );
    }
}
