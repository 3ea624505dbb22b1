//! The dashboard's dataset, written through caregraph's own GraphQL API over HTTP as
//! `../shared/bench/seed.mjs` writes it (the same steps, names from the same seeded PRNG, times
//! relative to now): in the bootstrapped organisation, 4 practitioners and 2 support staff
//! besides the OWNER (a practitioner too), 200 patients with guardians (every 5th with a
//! co-guardian who chats), 220 appointments every 30 minutes from 22 h ago, 100 appointment
//! chats opened by their practitioners (16 closed again) and statuses set by the API.

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::server::Server;

/// Patients, as `SEED_PATIENTS` defaults to.
const PATIENTS: usize = 200;
/// Appointments, as `SEED_APPOINTMENTS` defaults to.
const APPOINTMENTS: usize = 220;
const PRACTITIONER_PASSWORD: &str = "bench-practitioner-pw";

const PET_NAMES: &[&str] = &[
    "Bella", "Max", "Luna", "Charlie", "Lucy", "Cooper", "Daisy", "Milo", "Bailey", "Nala",
    "Rocky", "Coco", "Oliver", "Ruby", "Teddy", "Willow", "Bear", "Pepper", "Ziggy", "Hazel",
];
const SPECIES: &[&str] = &["Dog", "Cat", "Rabbit", "Horse", "Parrot", "Guinea pig"];
const GIVEN: &[&str] = &[
    "Amelia", "Noah", "Olivia", "Liam", "Emma", "Ethan", "Ava", "Lucas", "Mia", "Mason", "Isla",
    "Leo", "Grace", "Oscar", "Freya", "Arthur", "Ivy", "Harry", "Rosie", "Jack",
];
const FAMILY: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Wright", "Walker", "Evans", "Thomas", "Roberts", "Green", "Hall", "Wood", "Clarke",
];

/// seed.mjs's PRNG (mulberry32), so the names are the same.
struct Mulberry32(u32);

impl Mulberry32 {
    /// The next number in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x6d2b_79f5);
        let a = self.0;
        let mut t = (a ^ (a >> 15)).wrapping_mul(1 | a);
        t = t.wrapping_add((t ^ (t >> 7)).wrapping_mul(61 | t)) ^ t;
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }

    /// One of `xs`.
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() * xs.len() as f64) as usize]
    }
}

/// A member who practises, with a token of their own.
pub struct Practitioner {
    /// Their user id.
    pub id: String,
    /// Their bearer token.
    pub token: String,
}

/// What was seeded.
pub struct Seeded {
    /// The organisation.
    pub org_id: String,
    /// The OWNER (first) and the 4 other practitioners.
    pub practitioners: Vec<Practitioner>,
    /// The 2 support staff.
    pub support: Vec<String>,
    /// The appointment chats opened.
    pub chats: usize,
}

/// One appointment as scheduled.
struct Scheduled {
    id: String,
    i: usize,
    starts_at: DateTime<Utc>,
    practitioner: usize,
    upcoming: bool,
}

/// Seeds the dataset into `server`'s bootstrapped organisation (its token is the OWNER's).
pub async fn seed(server: &Server) -> anyhow::Result<Seeded> {
    let started = std::time::Instant::now();
    let mut rnd = Mulberry32(42);
    let viewer = server
        .gql(
            "{ viewer { user { id } memberships { role organization { id name } } } }",
            json!({}),
        )
        .await?;
    let owner_id = text(&viewer["viewer"]["user"]["id"])?;
    let org_id = viewer["viewer"]["memberships"]
        .as_array()
        .context("memberships")?
        .iter()
        .find(|m| m["role"] == "OWNER")
        .map(|m| text(&m["organization"]["id"]))
        .context("the OWNER's organisation")??;

    // 4 practitioners besides the owner (who is a vet too: 5 practitioners) and 2 support staff.
    let roles = [
        "PRACTITIONER",
        "PRACTITIONER",
        "PRACTITIONER",
        "PRACTITIONER",
        "STAFF",
        "STAFF",
    ];
    let mut staff = Vec::with_capacity(roles.len());
    for (i, role) in roles.into_iter().enumerate() {
        let d = server
            .gql(
                "mutation($org: ID!, $in: AddOrganizationMemberInput!) {
                   addOrganizationMember(orgId: $org, input: $in) { user { id email } role } }",
                json!({"org": org_id, "in": {
                    "email": format!("{}{i}@bench-vets.example", role.to_lowercase()),
                    "givenName": GIVEN[(i * 7) % GIVEN.len()],
                    "familyName": FAMILY[(i * 5) % FAMILY.len()],
                    "role": role,
                    "title": if role == "STAFF" { "Veterinary technician" } else { "Veterinary surgeon" },
                    "password": PRACTITIONER_PASSWORD,
                }}),
            )
            .await?;
        let user = &d["addOrganizationMember"]["user"];
        staff.push((text(&user["id"])?, text(&user["email"])?, role));
    }
    let mut practitioners = vec![Practitioner {
        id: owner_id.clone(),
        token: server.token.clone(),
    }];
    for (id, email, _) in staff.iter().filter(|s| s.2 == "PRACTITIONER") {
        let d = server
            .gql(
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
                json!({"e": email, "p": PRACTITIONER_PASSWORD}),
            )
            .await?;
        practitioners.push(Practitioner {
            id: id.clone(),
            token: text(&d["login"]["accessToken"])?,
        });
    }
    let support: Vec<String> = staff
        .iter()
        .filter(|s| s.2 == "STAFF")
        .map(|s| s.0.clone())
        .collect();

    // Patients, each with a primary guardian (the client); every 5th has a co-guardian who chats.
    let mut patients = Vec::with_capacity(PATIENTS);
    for i in 0..PATIENTS {
        let mut guardians = vec![json!({
            "email": format!("client{i}@bench-clients.example"),
            "givenName": rnd.pick(GIVEN),
            "familyName": rnd.pick(FAMILY),
            "relationship": "PRIMARY",
        })];
        if i % 5 == 0 {
            guardians.push(json!({
                "email": format!("coguardian{i}@bench-clients.example"),
                "givenName": rnd.pick(GIVEN),
                "familyName": rnd.pick(FAMILY),
                "relationship": "CO_GUARDIAN",
                "canChat": true,
            }));
        }
        let name = format!("{} {} #{i}", rnd.pick(PET_NAMES), FAMILY[i % FAMILY.len()]);
        let species = rnd.pick(SPECIES);
        let d = server
            .gql(
                "mutation($org: ID!, $in: CreatePatientInput!) {
                   createPatient(orgId: $org, input: $in) { id guardians { user { id } relationship } } }",
                json!({"org": org_id, "in": {"name": name, "species": species, "guardians": guardians}}),
            )
            .await?;
        let p = &d["createPatient"];
        let client = p["guardians"]
            .as_array()
            .context("guardians")?
            .iter()
            .find(|g| g["relationship"] == "PRIMARY")
            .map(|g| text(&g["user"]["id"]))
            .context("the primary guardian")??;
        patients.push((text(&p["id"])?, client));
    }

    // Appointments every 30 minutes from 22 h ago on: the first page (50, by start time) holds
    // finished, open and upcoming ones. Every 10th is in person (no meeting link).
    let now = Utc::now();
    let base_ms = (now.timestamp_millis() - 22 * 3_600_000).div_euclid(60_000) * 60_000;
    let mut appointments = Vec::with_capacity(APPOINTMENTS);
    for i in 0..APPOINTMENTS {
        let (patient, client) = &patients[i % patients.len()];
        let practitioner = i % practitioners.len();
        let practitioner_id = &practitioners[practitioner].id;
        let starts_at = DateTime::from_timestamp_millis(base_ms + i as i64 * 30 * 60_000)
            .context("start time")?;
        // Support staff on every 4th; the owner helps on every 3rd of the others' (so the
        // owner is a participant, and gets a joinUrl, on about half of the open meetings).
        let mut support_ids = Vec::new();
        if i % 4 == 0 {
            support_ids.push(support[(i / 4) % support.len()].clone());
        }
        if i % 3 == 0 && *practitioner_id != owner_id {
            support_ids.push(owner_id.clone());
        }
        let upcoming = i % 11 != 10;
        let minutes = [20, 30, 45][i % 3];
        let d = server
            .gql(
                "mutation($org: ID!, $in: ScheduleAppointmentInput!) {
                   scheduleAppointment(orgId: $org, input: $in) { id startsAt } }",
                json!({"org": org_id, "in": {
                    "patientId": patient,
                    "clientId": client,
                    "practitionerId": practitioner_id,
                    "supportStaffIds": support_ids,
                    "startsAt": starts_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                    "durationMinutes": minutes,
                    "sessionType": if i % 10 == 9 { "IN_PERSON" } else { "TELECONFERENCE" },
                    "reason": format!("Check-up {i}"),
                    "externalRef": format!("PMS-{}", 1000 + i),
                    "status": if upcoming { "UPCOMING" } else { "REQUESTED" },
                }}),
            )
            .await?;
        appointments.push(Scheduled {
            id: text(&d["scheduleAppointment"]["id"])?,
            i,
            starts_at,
            practitioner,
            upcoming,
        });
    }

    // Chats on every other appointment, opened by its practitioner (so the owner is a member of
    // only its own; it still reads the others as OWNER).
    let (mut chats, mut closed) = (0, 0);
    for a in appointments.iter().filter(|a| a.i % 2 == 0 && a.upcoming) {
        let token = &practitioners[a.practitioner].token;
        let d = server
            .gql_as(
                token,
                "mutation($a: ID!) { openAppointmentChat(appointmentId: $a) { id status } }",
                json!({"a": a.id}),
            )
            .await?;
        chats += 1;
        if a.i % 12 == 4 {
            server
                .gql_as(
                    token,
                    "mutation($s: ID!) { closeChatSession(sessionId: $s) { id status } }",
                    json!({"s": text(&d["openAppointmentChat"]["id"])?}),
                )
                .await?;
            closed += 1;
        }
    }

    // Statuses: appointments that started more than 2 h ago are COMPLETED, NO_SHOW or CANCELLED;
    // those of the last 2 h CHECKED_IN or IN_PROGRESS; a few upcoming ones are cancelled too.
    let mut changed = 0;
    for a in appointments.iter().filter(|a| a.upcoming) {
        let age_min = (now - a.starts_at).num_milliseconds() as f64 / 60_000.0;
        let target = if age_min > 120.0 {
            [
                "COMPLETED",
                "COMPLETED",
                "COMPLETED",
                "NO_SHOW",
                "CANCELLED",
            ][a.i % 5]
        } else if age_min > 0.0 {
            if a.i % 2 == 1 {
                "IN_PROGRESS"
            } else {
                "CHECKED_IN"
            }
        } else if a.i % 17 == 3 {
            "CANCELLED"
        } else {
            continue;
        };
        if target == "CANCELLED" {
            server
                .gql(
                    "mutation($id: ID!) { cancelAppointment(id: $id) { status } }",
                    json!({"id": a.id}),
                )
                .await?;
        } else {
            server
                .gql(
                    "mutation($id: ID!, $s: AppointmentStatus!) { setAppointmentStatus(id: $id, status: $s) { status } }",
                    json!({"id": a.id, "s": target}),
                )
                .await?;
        }
        changed += 1;
    }
    eprintln!(
        "seeded through the API in {:.1} s: {} practitioners, {} support staff, {} patients, {} appointments, {chats} chats ({closed} closed), {changed} status changes",
        started.elapsed().as_secs_f64(),
        practitioners.len(),
        support.len(),
        patients.len(),
        appointments.len(),
    );
    Ok(Seeded {
        org_id,
        practitioners,
        support,
        chats,
    })
}

/// A JSON string as an owned string.
pub fn text(v: &Value) -> anyhow::Result<String> {
    v.as_str()
        .map(str::to_owned)
        .with_context(|| format!("expected a string, got {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_draws_what_seed_mjs_draws() {
        // node: mulberry32(42)'s first five draws, then the 10,006th.
        let mut rnd = Mulberry32(42);
        let first: Vec<f64> = (0..5).map(|_| rnd.next()).collect();
        assert_eq!(
            first,
            [
                0.6011037519201636,
                0.44829055899754167,
                0.8524657934904099,
                0.6697340414393693,
                0.17481389874592423
            ]
        );
        for _ in 0..10_000 {
            rnd.next();
        }
        assert_eq!(rnd.next(), 0.5598556485492736);
    }
}
