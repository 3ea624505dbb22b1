//! The availability repository: practitioners' weekly schedules, the busy times of people, and
//! the per-person booking locks.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict, Query},
};

use super::entities::{
    appointment, appointment_support_staff, booking_lock, practitioner_availability,
};
use crate::{
    domain::{
        AppointmentId, OrgId, UserId,
        availability::{self, Availability, WeeklyInterval},
        care::AppointmentStatus,
    },
    error::{AppError, AppResult},
};

/// The most busy intervals read for one person at once (a 31-day range of 5-minute
/// appointments is fewer).
pub const MAX_BUSY: u64 = 10_000;

fn to_domain(m: practitioner_availability::Model) -> AppResult<Availability> {
    let weekly: Vec<WeeklyInterval> = serde_json::from_str(&m.weekly)
        .map_err(|e| AppError::internal(anyhow::anyhow!("corrupt weekly availability: {e}")))?;
    Ok(Availability {
        org_id: OrgId::from_db(&m.org_id)?,
        practitioner_id: UserId::from_db(&m.practitioner_id)?,
        weekly,
        timezone: availability::timezone(&m.timezone, "timezone")
            .map_err(|_| AppError::internal(anyhow::anyhow!("corrupt timezone")))?,
        slot_minutes: m.slot_minutes,
        updated_at: m.updated_at,
    })
}

/// A practitioner's schedule in an organisation, if set.
pub async fn find(
    db: &impl super::Source,
    org: OrgId,
    practitioner: UserId,
) -> AppResult<Option<Availability>> {
    practitioner_availability::Entity::find_by_id((org.as_string(), practitioner.as_string()))
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Stores a practitioner's schedule, replacing the one before.
pub async fn upsert(db: &impl super::Source, a: &Availability) -> AppResult<()> {
    let weekly = serde_json::to_string(&a.weekly).map_err(AppError::internal)?;
    practitioner_availability::Entity::insert(practitioner_availability::ActiveModel {
        org_id: Set(a.org_id.as_string()),
        practitioner_id: Set(a.practitioner_id.as_string()),
        timezone: Set(a.timezone.name().to_owned()),
        slot_minutes: Set(a.slot_minutes),
        weekly: Set(weekly),
        updated_at: Set(a.updated_at),
    })
    .on_conflict(
        OnConflict::columns([
            practitioner_availability::Column::OrgId,
            practitioner_availability::Column::PractitionerId,
        ])
        .update_columns([
            practitioner_availability::Column::Timezone,
            practitioner_availability::Column::SlotMinutes,
            practitioner_availability::Column::Weekly,
            practitioner_availability::Column::UpdatedAt,
        ])
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Takes the booking lock of each of `people` in the transaction `txn`, in id order (so that
/// two transactions locking overlapping sets never wait on each other in a cycle).
///
/// Each lock is an upsert of the person's `booking_locks` row. On PostgreSQL the updated row
/// stays locked until `txn` ends, so a second transaction booking the same person waits here
/// and, once the first commits, reads the first one's appointment in its overlap check (READ
/// COMMITTED takes a new snapshot per statement). On SQLite the transaction already holds the
/// database's single write lock ([`super::begin`]), which serializes every booking; the upsert
/// then costs one write and changes nothing about the order.
pub async fn lock_people(txn: &impl super::Source, people: &[UserId]) -> AppResult<()> {
    let mut ids: Vec<String> = people.iter().map(UserId::as_string).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        booking_lock::Entity::insert(booking_lock::ActiveModel {
            user_id: Set(id),
            version: Set(1),
        })
        .on_conflict(
            OnConflict::column(booking_lock::Column::UserId)
                .value(
                    booking_lock::Column::Version,
                    Expr::col((booking_lock::Entity, booking_lock::Column::Version)).add(1),
                )
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    }
    Ok(())
}

/// Appointments that count for overlaps: all but cancelled ones, meeting `[from, until)`, but
/// `except`.
fn overlapping(
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    except: Option<AppointmentId>,
) -> Condition {
    let mut c = Condition::all()
        .add(appointment::Column::Status.ne(AppointmentStatus::Cancelled.as_str()))
        .add(appointment::Column::StartsAt.lt(until))
        .add(appointment::Column::EndsAt.gt(from));
    if let Some(id) = except {
        c = c.add(appointment::Column::Id.ne(id.as_string()));
    }
    c
}

/// Which of `people` already take part in an appointment (as its practitioner or support
/// staff, in any organisation) that is not cancelled and meets `[from, until)`, `except` one.
pub async fn busy_people(
    db: &impl super::Source,
    people: &[UserId],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    except: Option<AppointmentId>,
) -> AppResult<Vec<UserId>> {
    if people.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = people.iter().map(UserId::as_string).collect();
    let mut busy: Vec<String> = appointment::Entity::find()
        .select_only()
        .column(appointment::Column::PractitionerId)
        .filter(overlapping(from, until, except))
        .filter(appointment::Column::PractitionerId.is_in(ids.clone()))
        .distinct()
        .into_tuple::<String>()
        .all(db)
        .await?;
    let supporting: Vec<String> = appointment_support_staff::Entity::find()
        .select_only()
        .column(appointment_support_staff::Column::UserId)
        .filter(appointment_support_staff::Column::UserId.is_in(ids))
        .filter(
            appointment_support_staff::Column::AppointmentId.in_subquery(
                Query::select()
                    .column(appointment::Column::Id)
                    .from(appointment::Entity)
                    .cond_where(overlapping(from, until, except))
                    .to_owned(),
            ),
        )
        .distinct()
        .into_tuple::<String>()
        .all(db)
        .await?;
    busy.extend(supporting);
    let mut out: Vec<UserId> = Vec::new();
    for raw in busy {
        let id = UserId::from_db(&raw)?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// The times `person` is taken in `[from, until)`: appointments not cancelled in which they are
/// the practitioner or support staff (any organisation), at most [`MAX_BUSY`] of each kind.
pub async fn busy_times(
    db: &impl super::Source,
    person: UserId,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> AppResult<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let mut times: Vec<(DateTime<Utc>, DateTime<Utc>)> = appointment::Entity::find()
        .select_only()
        .columns([appointment::Column::StartsAt, appointment::Column::EndsAt])
        .filter(overlapping(from, until, None))
        .filter(
            Condition::any()
                .add(appointment::Column::PractitionerId.eq(person.as_string()))
                .add(
                    appointment::Column::Id.in_subquery(
                        Query::select()
                            .column(appointment_support_staff::Column::AppointmentId)
                            .from(appointment_support_staff::Entity)
                            .and_where(
                                appointment_support_staff::Column::UserId.eq(person.as_string()),
                            )
                            .to_owned(),
                    ),
                ),
        )
        .order_by_asc(appointment::Column::StartsAt)
        .limit(MAX_BUSY)
        .into_tuple()
        .all(db)
        .await?;
    times.sort();
    Ok(times)
}
