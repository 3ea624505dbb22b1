//! `audit`: `auditEvents` over a year of a busy clinic's trail. Loads 1,000,000 records (5,000
//! patients, 80 staff, one target patient with a chronic patient's share of 0.25 %) into a fresh
//! database with multi-row inserts, then times the first page (50) of the target patient's trail
//! through the service layer, and a few other filters for comparison.

use std::{sync::Arc, time::Instant};

use caregraph::{
    app::App,
    audit::{AuditAction, AuditActor, AuditEntity, AuditEntry, AuditOutcome, AuditRecord},
    auth::Viewer,
    config::Config,
    db::{self, entities::audit_event, users::NewUser},
    domain::{Email, OrgId, PatientId, Slug, UserId, audit::AuditFilter, pagination::PageRequest},
    services::organizations::create_with_owner,
};
use chrono::{Duration, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};

use super::Rng;

/// Records per multi-row insert (17 columns: 17,000 parameters, within both databases' limits).
const ROWS_PER_INSERT: usize = 1_000;
/// Patients of the clinic.
const PATIENTS: usize = 5_000;
/// Staff who read and change records.
const STAFF: usize = 80;
/// The target patient's share of the records, in parts per 10,000.
const TARGET_SHARE: usize = 25;

/// Seeds `records` records into the database at `url` and prints the timings of `runs` queries
/// per filter.
pub async fn run(label: &str, config: Config, records: usize, runs: usize) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let conn = db::connect(&config.database).await?;
    db::migrate(&conn).await?;
    let owner = db::users::insert(
        &conn,
        NewUser {
            email: Email::parse("audit.owner@example.org", "email")?,
            given_name: "Audit".into(),
            family_name: "Owner".into(),
            password_hash: None,
        },
    )
    .await?;
    let org = create_with_owner(
        &conn,
        "Busy Clinic".into(),
        &Slug::parse("busy-clinic", "slug")?,
        &owner,
    )
    .await?;
    let Loaded {
        target,
        target_count,
        staff,
    } = load(&conn, org.id, records, label).await?;
    eprintln!("[{label}] the target patient has {target_count} records");

    let app = App::build(config.as_ref().clone()).await?;
    let services = app.state.services.clone();
    let viewer = Viewer::signed_in(owner, Utc::now() + Duration::hours(1), None);
    let page = PageRequest::new(Some(50), None)?;
    let filters = [
        (
            "patient (first 50)",
            AuditFilter {
                patient_id: Some(target),
                ..AuditFilter::default()
            },
        ),
        (
            "patient, last 30 days",
            AuditFilter {
                patient_id: Some(target),
                from: Some(Utc::now() - Duration::days(30)),
                ..AuditFilter::default()
            },
        ),
        (
            "patient, DENIED",
            AuditFilter {
                patient_id: Some(target),
                outcome: Some(AuditOutcome::Denied),
                ..AuditFilter::default()
            },
        ),
        (
            "actor",
            AuditFilter {
                actor_id: Some(staff[0].as_string()),
                ..AuditFilter::default()
            },
        ),
        (
            "action JOIN",
            AuditFilter {
                action: Some(AuditAction::Join),
                ..AuditFilter::default()
            },
        ),
        ("whole trail", AuditFilter::default()),
    ];
    println!(
        "{label}: {records} records, {runs} auditEvents calls per filter (first 50, with totalCount), through the service layer"
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "filter", "p50 ms", "p99 ms", "max ms", "total"
    );
    for (name, filter) in filters {
        let mut total = 0;
        for _ in 0..10 {
            total = services
                .audit_trail
                .events(&viewer, org.id, filter.clone(), &page)
                .await?
                .total;
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let found = services
                .audit_trail
                .events(&viewer, org.id, filter.clone(), &page)
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            total = found.total;
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name:<24} {:>9.2} {:>9.2} {:>9.2} {total:>9}",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
    Ok(())
}

/// What [`load`] put in.
pub struct Loaded {
    /// The patient with a chronic patient's share of the records.
    pub target: PatientId,
    /// How many records the target patient has.
    pub target_count: usize,
    /// The staff who read and changed records.
    pub staff: Vec<UserId>,
}

/// Loads `records` records of a busy clinic's year (5,000 patients, 80 staff, one target
/// patient with 0.25 % of them) into organisation `org`, unsealed, with multi-row inserts.
pub async fn load(
    conn: &DatabaseConnection,
    org: OrgId,
    records: usize,
    label: &str,
) -> anyhow::Result<Loaded> {
    let patients: Vec<PatientId> = (0..PATIENTS).map(|_| PatientId::new()).collect();
    let target = patients[0];
    let staff: Vec<UserId> = (0..STAFF).map(|_| UserId::new()).collect();
    let year_start = Utc::now() - Duration::days(365);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let started = Instant::now();
    let mut target_count = 0usize;
    let mut batch = Vec::with_capacity(ROWS_PER_INSERT);
    for i in 0..records {
        let at = year_start + Duration::milliseconds((rng.next() % (365 * 86_400_000)) as i64);
        let patient = if rng.next() % 10_000 < TARGET_SHARE {
            target_count += 1;
            target
        } else {
            patients[1 + rng.next() % (PATIENTS - 1)]
        };
        let actor = AuditActor::User(staff[rng.next() % STAFF]);
        let roll = rng.next() % 100;
        let entry =
            match roll {
                0..=64 => AuditEntry::read(AuditEntity::Patient, patient).patient(patient),
                65..=79 => AuditEntry::read(AuditEntity::Appointment, uuid::Uuid::now_v7())
                    .patient(patient),
                80..=87 => AuditEntry::read(AuditEntity::ChatMessage, uuid::Uuid::now_v7())
                    .patient(patient),
                88..=93 => {
                    AuditEntry::new(AuditAction::Update, AuditEntity::Case, uuid::Uuid::now_v7())
                        .patient(patient)
                }
                94..=96 => AuditEntry::new(
                    AuditAction::Join,
                    AuditEntity::Meeting,
                    uuid::Uuid::now_v7(),
                )
                .patient(patient),
                _ => AuditEntry::read(AuditEntity::Patient, patient)
                    .patient(patient)
                    .denied(),
            };
        batch.push(
            AuditRecord {
                id: uuid::Uuid::now_v7(),
                at,
                actor,
                entry: entry.org(org),
                request_id: Some(format!("{:016x}", rng.next()).into()),
                client_address: Some(
                    format!("10.0.{}.{}", rng.next() % 256, rng.next() % 256).into(),
                ),
                operation_name: Some("PatientScreen".into()),
            }
            .to_row(),
        );
        if batch.len() == ROWS_PER_INSERT || i + 1 == records {
            audit_event::Entity::insert_many(std::mem::take(&mut batch))
                .exec_without_returning(conn)
                .await?;
            if (i + 1) % 100_000 == 0 || i + 1 == records {
                eprintln!(
                    "[{label}] loaded {} / {records} records ({:.0} s)",
                    i + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    conn.execute_unprepared("ANALYZE").await?;
    eprintln!(
        "[{label}] loaded {records} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Loaded {
        target,
        target_count,
        staff,
    })
}
