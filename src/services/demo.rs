//! Demo data for the embedded default: a veterinary clinic with an owner, two practitioners,
//! two staff and two clients with their pets. Seeded only into an empty database and never in
//! production.

use sea_orm::DatabaseConnection;

use super::organizations::create_with_owner;
use crate::{
    auth::passwords,
    db::{self, patients::PatientFields, users::NewUser},
    domain::{
        Email, OrgRole, Slug, User,
        care::{Guardian, GuardianRelationship, RiskLevel},
    },
    error::AppResult,
};

/// The password of every demo account (printed at start; demo data never exists in production).
pub const DEMO_PASSWORD: &str = "caregraph-demo";

/// The demo clinic's OWNER.
pub const OWNER_EMAIL: &str = "olivia.hart@riverside-vets.example";

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
pub async fn seed_if_empty(db: &DatabaseConnection) -> AppResult<Option<DemoSeed>> {
    if db::organizations::count(db).await? > 0 {
        return Ok(None);
    }
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
    for (email, given, family, role, title) in STAFF {
        let u = user(db, email, given, family, &hash).await?;
        db::organizations::insert_membership(db, org.id, &u, *role, title.map(str::to_owned))
            .await?;
        people.push((role.as_str().to_lowercase(), u));
    }
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
        people.push(("client".into(), client));
    }
    tracing::info!(org = %org.id, "demo data seeded");
    Ok(Some(DemoSeed { owner, people }))
}
