//! Demo data for the embedded default: a veterinary clinic with an owner, two practitioners,
//! two staff and two clients with their pets, and a day of its work: three video appointments
//! today (one finished, one open now, one later), their chats (one closed, one active with
//! messages, one pending), an insurance claim with its room, a care team with its chat and an
//! outside clinician reached by phone, a team channel, and the practitioners' weekly
//! availability. Seeded only into an empty database and never in production.
//!
//! The day's work goes through the same services the GraphQL mutations call, acting as the
//! clinic's people, at times relative to the app's clock, so every first start shows a current
//! day. Messages live at the chat provider: one the provider refuses or cannot take now is left
//! out (and logged by its code), the rest of the demo is seeded all the same.

use chrono::{DateTime, Duration, Utc, Weekday};
use sea_orm::DatabaseConnection;

use super::{
    Services,
    appointments::{
        ScheduleInput,
        booking::{AvailabilityInput, IntervalInput},
    },
    care_teams::NewCareTeamMember,
    cases::NewCaseInput,
    chat::GroupInput,
    organizations::create_with_owner,
};
use crate::{
    audit::AuditActor,
    auth::{Viewer, passwords},
    db::{self, patients::PatientFields, users::NewUser},
    domain::{
        AppointmentId, ChatSessionId, Email, OrgId, OrgRole, PatientId, Slug, User,
        care::{
            AppointmentStatus, CareTeamRole, CaseKind, CaseRole, Guardian, GuardianRelationship,
            RiskLevel, SessionType,
        },
        chat::ChatStatus,
    },
    error::AppResult,
};

/// The password of every demo account (printed at start; demo data never exists in production).
pub const DEMO_PASSWORD: &str = "caregraph-demo";

/// The demo clinic's OWNER.
pub const OWNER_EMAIL: &str = "olivia.hart@riverside-vets.example";

/// The reference of the demo clinic's insurance claim (`caseByReference`).
pub const CLAIM_REFERENCE: &str = "CLM-1042";

/// The phone number of the care team's outside clinician (a number reserved for drama).
pub const OUTSIDE_CLINICIAN_PHONE: &str = "+447700900123";

/// What the demo seed created.
#[derive(Clone, Debug)]
pub struct DemoSeed {
    /// The clinic's OWNER, whose token is printed.
    pub owner: User,
    /// Everyone else, by role name.
    pub people: Vec<(String, User)>,
}

const STAFF: &[(&str, &str, &str, OrgRole, Option<&str>)] = &[
    (
        "amara.okafor@riverside-vets.example",
        "Amara",
        "Okafor",
        OrgRole::Practitioner,
        Some("Veterinarian"),
    ),
    (
        "tomas.lindqvist@riverside-vets.example",
        "Tomás",
        "Lindqvist",
        OrgRole::Practitioner,
        Some("Veterinarian"),
    ),
    (
        "sam.rivera@riverside-vets.example",
        "Sam",
        "Rivera",
        OrgRole::Staff,
        Some("Veterinary technician"),
    ),
    (
        "jo.kim@riverside-vets.example",
        "Jo",
        "Kim",
        OrgRole::Staff,
        Some("Receptionist"),
    ),
];

/// Clients and their pets: (email, given, family, pet, species).
const CLIENTS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "alex.morgan@example.com",
        "Alex",
        "Morgan",
        "Biscuit",
        "Dog",
    ),
    ("priya.shah@example.com", "Priya", "Shah", "Mochi", "Cat"),
];

/// The clinic's people and pets, by name.
struct Clinic {
    org: OrgId,
    owner: User,
    /// Amara Okafor, veterinarian.
    amara: User,
    /// Tomás Lindqvist, veterinarian.
    tomas: User,
    /// Sam Rivera, veterinary technician.
    sam: User,
    /// Jo Kim, receptionist.
    jo: User,
    /// Alex Morgan, Biscuit's owner.
    alex: User,
    /// Priya Shah, Mochi's owner.
    priya: User,
    biscuit: PatientId,
    mochi: PatientId,
}

async fn user(
    db: &DatabaseConnection,
    email: &str,
    given: &str,
    family: &str,
    hash: &str,
) -> AppResult<User> {
    db::users::insert(
        db,
        NewUser {
            email: Email::parse(email, "email")?,
            given_name: given.into(),
            family_name: family.into(),
            password_hash: Some(hash.to_owned()),
        },
    )
    .await
}

/// Seeds the demo clinic when the database has no organisation yet; `None` when it had one.
pub async fn seed_if_empty(services: &Services) -> AppResult<Option<DemoSeed>> {
    let db = &services.db;
    if db::organizations::count(db).await? > 0 {
        return Ok(None);
    }
    let (clinic, people) = people(db).await?;
    let day = Day::new(services, services.clock.now());
    day.availability(&clinic).await?;
    day.appointments(&clinic).await?;
    day.claim(&clinic).await?;
    day.care_team(&clinic).await?;
    day.team_channel(&clinic).await?;
    tracing::info!(org = %clinic.org, "demo data seeded");
    Ok(Some(DemoSeed {
        owner: clinic.owner,
        people,
    }))
}

/// The clinic, its people and the pets with their owners.
async fn people(db: &DatabaseConnection) -> AppResult<(Clinic, Vec<(String, User)>)> {
    let hash = passwords::hash(DEMO_PASSWORD.into()).await?;
    let owner = user(db, OWNER_EMAIL, "Olivia", "Hart", &hash).await?;
    let org = create_with_owner(
        db,
        "Riverside Veterinary Clinic".into(),
        &Slug::parse("riverside-vets", "slug")?,
        &owner,
    )
    .await?;
    let mut people = Vec::new();
    let mut staff = Vec::new();
    for (email, given, family, role, title) in STAFF {
        let u = user(db, email, given, family, &hash).await?;
        db::organizations::insert_membership(db, org.id, &u, *role, title.map(str::to_owned))
            .await?;
        people.push((role.as_str().to_lowercase(), u.clone()));
        staff.push(u);
    }
    let mut clients = Vec::new();
    for (email, given, family, pet, species) in CLIENTS {
        let client = user(db, email, given, family, &hash).await?;
        let patient = db::patients::insert(
            db,
            org.id,
            PatientFields {
                name: (*pet).into(),
                species: Some((*species).into()),
                risk_level: RiskLevel::Low,
                date_of_birth: None,
            },
        )
        .await?;
        db::patients::upsert_guardian(
            db,
            &Guardian {
                patient_id: patient.id,
                user_id: client.id,
                relationship: GuardianRelationship::Primary,
                can_chat: true,
            },
        )
        .await?;
        people.push(("client".into(), client.clone()));
        clients.push((client, patient.id));
    }
    let [amara, tomas, sam, jo] = <[User; 4]>::try_from(staff)
        .map_err(|_| crate::error::AppError::internal(anyhow::anyhow!("demo staff")))?;
    let [(alex, biscuit), (priya, mochi)] = <[(User, PatientId); 2]>::try_from(clients)
        .map_err(|_| crate::error::AppError::internal(anyhow::anyhow!("demo clients")))?;
    let clinic = Clinic {
        org: org.id,
        owner,
        amara,
        tomas,
        sam,
        jo,
        alex,
        priya,
        biscuit,
        mochi,
    };
    Ok((clinic, people))
}

/// One day of the clinic's work, made through the services at times relative to `now`.
struct Day<'a> {
    services: &'a Services,
    now: DateTime<Utc>,
    /// `now` rounded down to five minutes: appointments start on the clock's marks.
    mark: DateTime<Utc>,
}

impl<'a> Day<'a> {
    fn new(services: &'a Services, now: DateTime<Utc>) -> Self {
        let secs = now.timestamp();
        let mark = DateTime::from_timestamp(secs - secs.rem_euclid(300), 0).unwrap_or(now);
        Self {
            services,
            now,
            mark,
        }
    }

    /// `user` as a signed-in caller whose changes are recorded in the audit trail as theirs.
    fn as_user(&self, user: &User) -> Viewer {
        Viewer::signed_in(user.clone(), self.now + Duration::hours(1), None).with_audit(
            self.services
                .audit
                .scope(AuditActor::User(user.id), None, None),
        )
    }

    /// Each practitioner sets their own weekly hours (Europe/London, 30-minute slots): Amara
    /// every day (weekend clinic 10:00 to 14:00), Tomás on weekdays.
    async fn availability(&self, c: &Clinic) -> AppResult<()> {
        use Weekday::{Fri, Mon, Sat, Sun, Thu, Tue, Wed};
        let weekdays = [Mon, Tue, Wed, Thu, Fri];
        let hours = |days: &[Weekday], spans: &[(&str, &str)]| -> Vec<IntervalInput> {
            days.iter()
                .flat_map(|d| {
                    spans.iter().map(|(start, end)| IntervalInput {
                        weekday: *d,
                        start: (*start).into(),
                        end: (*end).into(),
                    })
                })
                .collect()
        };
        let mut amara = hours(&weekdays, &[("09:00", "12:30"), ("13:30", "17:00")]);
        amara.extend(hours(&[Sat, Sun], &[("10:00", "14:00")]));
        let tomas = hours(&weekdays, &[("08:00", "16:00")]);
        for (vet, weekly) in [(&c.amara, amara), (&c.tomas, tomas)] {
            self.services
                .appointments
                .set_availability(
                    &self.as_user(vet),
                    c.org,
                    vet.id,
                    AvailabilityInput {
                        weekly,
                        timezone: "Europe/London".into(),
                        slot_minutes: 30,
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Jo at the front desk books today's three video appointments; the vets open their chats
    /// and take them through their statuses: Biscuit's post-op check two hours ago (done, its
    /// chat closed), Mochi's check-up now (in progress, its chat active with messages) and
    /// Biscuit's physio review in three hours (its chat pending until its window opens).
    async fn appointments(&self, c: &Clinic) -> AppResult<()> {
        let desk = self.as_user(&c.jo);
        let (amara, tomas) = (self.as_user(&c.amara), self.as_user(&c.tomas));
        let (alex, priya, sam) = (
            self.as_user(&c.alex),
            self.as_user(&c.priya),
            self.as_user(&c.sam),
        );

        let finished = self
            .book(
                &desk,
                c,
                (c.biscuit, &c.alex, &c.amara, None),
                self.mark - Duration::hours(2),
                "Post-operative check after cruciate ligament surgery",
            )
            .await?;
        let chat = self
            .services
            .chats
            .open_appointment_chat(&amara, finished)
            .await?;
        if chat.status == ChatStatus::Active {
            self.post(
                &alex,
                chat.id,
                1,
                "He's putting weight on the leg again today.",
            )
            .await;
            self.post(
                &amara,
                chat.id,
                2,
                "Lovely to see. Keep to short lead walks for another week; I'll book his physio review.",
            )
            .await;
        }
        self.walk(
            &amara,
            finished,
            &[AppointmentStatus::InProgress, AppointmentStatus::Completed],
        )
        .await?;
        self.services.chats.close(&amara, chat.id).await?;

        let current = self
            .book(
                &desk,
                c,
                (c.mochi, &c.priya, &c.tomas, Some(&c.sam)),
                self.mark - Duration::minutes(5),
                "Kidney check-up: drinking more, eating less",
            )
            .await?;
        let chat = self
            .services
            .chats
            .open_appointment_chat(&tomas, current)
            .await?;
        self.walk(&tomas, current, &[AppointmentStatus::InProgress])
            .await?;
        self.post(
            &priya,
            chat.id,
            1,
            "Hi! We're in. Mochi has been drinking a lot more water since Sunday.",
        )
        .await;
        self.post(
            &tomas,
            chat.id,
            2,
            "Thanks, Priya. I have last week's bloods open; join the video call whenever you're ready.",
        )
        .await;
        self.post(
            &sam,
            chat.id,
            3,
            "I've put a water-intake sheet in the clinic app: could you note what she drinks today?",
        )
        .await;

        let later = self
            .book(
                &desk,
                c,
                (c.biscuit, &c.alex, &c.amara, None),
                self.mark + Duration::hours(3),
                "Physiotherapy plan review",
            )
            .await?;
        self.services
            .chats
            .open_appointment_chat(&amara, later)
            .await?;
        Ok(())
    }

    /// Schedules a 30-minute video appointment of `(patient, client, practitioner, support)`.
    async fn book(
        &self,
        desk: &Viewer,
        c: &Clinic,
        (patient, client, practitioner, support): (PatientId, &User, &User, Option<&User>),
        starts_at: DateTime<Utc>,
        reason: &str,
    ) -> AppResult<AppointmentId> {
        let appointment = self
            .services
            .appointments
            .schedule(
                desk,
                c.org,
                ScheduleInput {
                    patient_id: patient,
                    client_id: client.id,
                    practitioner_id: practitioner.id,
                    support_staff_ids: support.map(|s| s.id).into_iter().collect(),
                    starts_at,
                    duration_minutes: 30,
                    session_type: SessionType::Teleconference,
                    reason: Some(reason.into()),
                    external_ref: None,
                    activation_minutes: None,
                    status: None,
                },
            )
            .await?;
        Ok(appointment.id)
    }

    /// Takes an appointment through `statuses`, in order, as `vet`.
    async fn walk(
        &self,
        vet: &Viewer,
        id: AppointmentId,
        statuses: &[AppointmentStatus],
    ) -> AppResult<()> {
        for status in statuses {
            self.services
                .appointments
                .set_status(vet, id, *status)
                .await?;
        }
        Ok(())
    }

    /// Posts `text` as `author` (idempotent on `n`); a provider that refuses or fails leaves the
    /// message out, logged by its code only (never the text).
    async fn post(&self, author: &Viewer, chat: ChatSessionId, n: u32, text: &str) {
        let client_id = format!("demo-{n}");
        if let Err(e) = self
            .services
            .chats
            .send_message(author, chat, text, Some(&client_id))
            .await
        {
            tracing::warn!(
                code = e.code().as_str(),
                "a demo message was not posted; the demo goes on without it"
            );
        }
    }

    /// Olivia opens Biscuit's insurance claim with Amara and Alex; its room is made with it.
    async fn claim(&self, c: &Clinic) -> AppResult<()> {
        self.services
            .cases
            .create(
                &self.as_user(&c.owner),
                c.org,
                NewCaseInput {
                    reference: CLAIM_REFERENCE.into(),
                    kind: CaseKind::Claim,
                    title: "Biscuit: cruciate ligament repair".into(),
                    patient_id: Some(c.biscuit),
                    participants: vec![
                        (c.owner.id, CaseRole::Admin),
                        (c.amara.id, CaseRole::Practitioner),
                        (c.alex.id, CaseRole::Patient),
                    ],
                },
            )
            .await?;
        Ok(())
    }

    /// Tomás leads Mochi's kidney care team with Sam; the referral nephrologist, who has no
    /// account, joins by phone. The team's staff-only chat follows the team.
    async fn care_team(&self, c: &Clinic) -> AppResult<()> {
        let tomas = self.as_user(&c.tomas);
        let team = self
            .services
            .care_teams
            .create(&tomas, c.mochi, "Mochi's kidney care", &[c.sam.id])
            .await?;
        self.services
            .care_teams
            .add_member(
                &tomas,
                team.id,
                NewCareTeamMember {
                    user_id: None,
                    phone: Some(OUTSIDE_CLINICIAN_PHONE.into()),
                    display_name: Some("Dr Rhea Patel (referral nephrologist)".into()),
                    role: CareTeamRole::External,
                    organization_id: None,
                },
            )
            .await?;
        Ok(())
    }

    /// Olivia makes the clinic's team channel with everyone on staff; Jo posts in it.
    async fn team_channel(&self, c: &Clinic) -> AppResult<()> {
        let group = self
            .services
            .chats
            .create_group(
                &self.as_user(&c.owner),
                c.org,
                GroupInput {
                    title: "Riverside team".into(),
                    member_ids: vec![c.amara.id, c.tomas.id, c.sam.id, c.jo.id],
                    read_only: false,
                    image_url: None,
                    channel_id: None,
                },
            )
            .await?;
        self.post(
            &self.as_user(&c.jo),
            group.id,
            1,
            "Reminder: the 4 pm slots are kept for post-op checks this week.",
        )
        .await;
        Ok(())
    }
}
