//! The appointments repository: appointments and their support staff.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use super::entities::{appointment, appointment_support_staff};
use super::keyset::Keyset;
use crate::{
    domain::{
        AppointmentId, OrgId, PatientId, UserId,
        care::{Appointment, AppointmentStatus, SessionType},
        pagination::{Page, PageRequest},
    },
    error::AppResult,
};

fn to_domain(m: appointment::Model) -> AppResult<Appointment> {
    Ok(Appointment {
        id: AppointmentId::from_db(&m.id)?,
        org_id: OrgId::from_db(&m.org_id)?,
        patient_id: PatientId::from_db(&m.patient_id)?,
        client_id: UserId::from_db(&m.client_id)?,
        practitioner_id: UserId::from_db(&m.practitioner_id)?,
        starts_at: m.starts_at,
        ends_at: m.ends_at,
        duration_minutes: m.duration_minutes,
        session_type: SessionType::from_db(&m.session_type)?,
        status: AppointmentStatus::from_db(&m.status)?,
        reason: m.reason,
        external_ref: m.external_ref,
        activation_minutes: m.activation_minutes,
        room_name: m.room_name,
    })
}

/// Inserts an appointment with its support staff.
pub async fn insert(db: &impl super::Source, a: &Appointment, support: &[UserId]) -> AppResult<()> {
    let now = Utc::now();
    appointment::Entity::insert(appointment::ActiveModel {
        id: Set(a.id.as_string()),
        org_id: Set(a.org_id.as_string()),
        patient_id: Set(a.patient_id.as_string()),
        client_id: Set(a.client_id.as_string()),
        practitioner_id: Set(a.practitioner_id.as_string()),
        starts_at: Set(a.starts_at),
        ends_at: Set(a.ends_at),
        duration_minutes: Set(a.duration_minutes),
        session_type: Set(a.session_type.as_str().to_owned()),
        status: Set(a.status.as_str().to_owned()),
        reason: Set(a.reason.clone()),
        external_ref: Set(a.external_ref.clone()),
        activation_minutes: Set(a.activation_minutes),
        room_name: Set(a.room_name.clone()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec(db)
    .await?;
    set_support_staff(db, a.id, support).await
}

/// Replaces an appointment's support staff.
pub async fn set_support_staff(
    db: &impl super::Source,
    id: AppointmentId,
    support: &[UserId],
) -> AppResult<()> {
    appointment_support_staff::Entity::delete_many()
        .filter(appointment_support_staff::Column::AppointmentId.eq(id.as_string()))
        .exec(db)
        .await?;
    if !support.is_empty() {
        appointment_support_staff::Entity::insert_many(support.iter().map(|u| {
            appointment_support_staff::ActiveModel {
                appointment_id: Set(id.as_string()),
                user_id: Set(u.as_string()),
            }
        }))
        .exec(db)
        .await?;
    }
    Ok(())
}

/// Stores an appointment's practitioner (alone, so that a concurrent reschedule keeps it).
pub async fn set_practitioner(
    db: &impl super::Source,
    id: AppointmentId,
    practitioner: UserId,
) -> AppResult<()> {
    appointment::Entity::update_many()
        .col_expr(
            appointment::Column::PractitionerId,
            Expr::value(practitioner.as_string()),
        )
        .col_expr(appointment::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(appointment::Column::Id.eq(id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Stores times and status.
pub async fn update_schedule(db: &impl super::Source, a: &Appointment) -> AppResult<()> {
    appointment::Entity::update_many()
        .col_expr(appointment::Column::StartsAt, Expr::value(a.starts_at))
        .col_expr(appointment::Column::EndsAt, Expr::value(a.ends_at))
        .col_expr(
            appointment::Column::DurationMinutes,
            Expr::value(a.duration_minutes),
        )
        .col_expr(appointment::Column::Status, Expr::value(a.status.as_str()))
        .col_expr(appointment::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(appointment::Column::Id.eq(a.id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Finds an appointment.
pub async fn find(db: &impl super::Source, id: AppointmentId) -> AppResult<Option<Appointment>> {
    appointment::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Finds an appointment and locks its row until the transaction `txn` ends (PostgreSQL's
/// `FOR UPDATE`; on SQLite the transaction holds the write lock already).
pub async fn find_for_update(
    txn: &impl super::Source,
    id: AppointmentId,
) -> AppResult<Option<Appointment>> {
    appointment::Entity::find_by_id(id.as_string())
        .lock_exclusive()
        .one(txn)
        .await?
        .map(to_domain)
        .transpose()
}

/// Appointments by id (for loaders).
pub async fn find_many(
    db: &impl super::Source,
    ids: &[AppointmentId],
) -> AppResult<Vec<Appointment>> {
    super::rows_in::<appointment::Entity, _>(db, appointment::Column::Id, ids, to_domain).await
}

/// The support staff of many appointments (for loaders).
pub async fn support_staff_of(
    db: &impl super::Source,
    ids: &[AppointmentId],
) -> AppResult<Vec<(AppointmentId, UserId)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let select = appointment_support_staff::Entity::find()
        .filter(
            appointment_support_staff::Column::AppointmentId
                .is_in(ids.iter().map(AppointmentId::as_string)),
        )
        .order_by_asc(appointment_support_staff::Column::UserId);
    super::columns::all(db, select)
        .await?
        .into_iter()
        .map(|m| {
            Ok((
                AppointmentId::from_db(&m.appointment_id)?,
                UserId::from_db(&m.user_id)?,
            ))
        })
        .collect()
}

/// Filters of an appointment list.
#[derive(Clone, Debug, Default)]
pub struct AppointmentFilter {
    /// Starting at or after.
    pub from: Option<DateTime<Utc>>,
    /// Starting before.
    pub to: Option<DateTime<Utc>>,
    /// With this practitioner.
    pub practitioner: Option<UserId>,
    /// In this status.
    pub status: Option<AppointmentStatus>,
}

/// A page of an organisation's appointments by start time.
pub async fn list(
    db: &impl super::Source,
    org: OrgId,
    f: &AppointmentFilter,
    page: &PageRequest,
) -> AppResult<Page<Appointment>> {
    let mut filter = Condition::all().add(appointment::Column::OrgId.eq(org.as_string()));
    if let Some(from) = f.from {
        filter = filter.add(appointment::Column::StartsAt.gte(from));
    }
    if let Some(to) = f.to {
        filter = filter.add(appointment::Column::StartsAt.lt(to));
    }
    if let Some(p) = f.practitioner {
        filter = filter.add(appointment::Column::PractitionerId.eq(p.as_string()));
    }
    if let Some(s) = f.status {
        filter = filter.add(appointment::Column::Status.eq(s.as_str()));
    }
    let order = Keyset::time(appointment::Column::StartsAt, appointment::Column::Id);
    super::keyset::page::<appointment::Entity, _>(db, filter, order, page, to_domain).await
}
