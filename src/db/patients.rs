//! The patients repository: patients and their guardians.

use chrono::{NaiveDate, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, ExprTrait, LikeExpr},
};

use super::entities::{guardian, patient};
use super::keyset::Keyset;
use crate::{
    domain::{
        OrgId, PatientId, UserId,
        care::{Guardian, GuardianRelationship, Patient, RiskLevel},
        pagination::{Page, PageRequest},
    },
    error::AppResult,
};

fn to_domain(m: patient::Model) -> AppResult<Patient> {
    Ok(Patient {
        id: PatientId::from_db(&m.id)?,
        org_id: OrgId::from_db(&m.org_id)?,
        name: m.name,
        species: m.species,
        risk_level: RiskLevel::from_db(&m.risk_level)?,
        date_of_birth: m.date_of_birth,
        created_at: m.created_at,
    })
}

fn guardian_to_domain(m: guardian::Model) -> AppResult<Guardian> {
    Ok(Guardian {
        patient_id: PatientId::from_db(&m.patient_id)?,
        user_id: UserId::from_db(&m.user_id)?,
        relationship: GuardianRelationship::from_db(&m.relationship)?,
        can_chat: m.can_chat,
    })
}

/// What a patient record holds besides its ids.
#[derive(Clone, Debug)]
pub struct PatientFields {
    /// Name.
    pub name: String,
    /// Species, for animals.
    pub species: Option<String>,
    /// Risk level.
    pub risk_level: RiskLevel,
    /// Date of birth.
    pub date_of_birth: Option<NaiveDate>,
}

/// Inserts a patient.
pub async fn insert(
    db: &impl super::Source,
    org_id: OrgId,
    f: PatientFields,
) -> AppResult<Patient> {
    let now = Utc::now();
    let model = patient::ActiveModel {
        id: Set(PatientId::new().as_string()),
        org_id: Set(org_id.as_string()),
        search_name: Set(f.name.to_lowercase()),
        name: Set(f.name),
        species: Set(f.species),
        risk_level: Set(f.risk_level.as_str().to_owned()),
        date_of_birth: Set(f.date_of_birth),
        created_at: Set(now),
        updated_at: Set(now),
    };
    to_domain(
        patient::Entity::insert(model)
            .exec_with_returning(db)
            .await?,
    )
}

/// Stores a patient's fields.
pub async fn update(db: &impl super::Source, p: &Patient) -> AppResult<()> {
    patient::Entity::update_many()
        .col_expr(patient::Column::Name, Expr::value(p.name.clone()))
        .col_expr(
            patient::Column::SearchName,
            Expr::value(p.name.to_lowercase()),
        )
        .col_expr(patient::Column::Species, Expr::value(p.species.clone()))
        .col_expr(
            patient::Column::RiskLevel,
            Expr::value(p.risk_level.as_str()),
        )
        .col_expr(patient::Column::DateOfBirth, Expr::value(p.date_of_birth))
        .col_expr(patient::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(patient::Column::Id.eq(p.id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Finds a patient.
pub async fn find(db: &impl super::Source, id: PatientId) -> AppResult<Option<Patient>> {
    patient::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Finds many patients (for loaders).
pub async fn find_many(db: &impl super::Source, ids: &[PatientId]) -> AppResult<Vec<Patient>> {
    super::rows_in::<patient::Entity, _>(db, patient::Column::Id, ids, to_domain).await
}

/// A page of an organisation's patients by name, optionally those whose name contains `search`
/// (lowercased; matched as data).
pub async fn list(
    db: &impl super::Source,
    org_id: OrgId,
    search: Option<&str>,
    page: &PageRequest,
) -> AppResult<Page<Patient>> {
    let mut filter = Condition::all().add(patient::Column::OrgId.eq(org_id.as_string()));
    if let Some(q) = search {
        let pattern = format!("%{}%", super::organizations::escape_like(q));
        filter = filter
            .add(Expr::col(patient::Column::SearchName).like(LikeExpr::new(pattern).escape('\\')));
    }
    let order = Keyset::text(patient::Column::SearchName, patient::Column::Id);
    super::keyset::page::<patient::Entity, _>(db, filter, order, page, to_domain).await
}

/// The patients a user is guardian of, by name.
pub async fn of_guardian(db: &impl super::Source, user_id: UserId) -> AppResult<Vec<Patient>> {
    let ids: Vec<String> = guardian::Entity::find()
        .filter(guardian::Column::UserId.eq(user_id.as_string()))
        .all(db)
        .await?
        .into_iter()
        .map(|g| g.patient_id)
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    patient::Entity::find()
        .filter(patient::Column::Id.is_in(ids))
        .order_by_asc(patient::Column::SearchName)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// Inserts or updates a guardian.
pub async fn upsert_guardian(db: &impl super::Source, g: &Guardian) -> AppResult<()> {
    let existing = guardian::Entity::find_by_id((g.patient_id.as_string(), g.user_id.as_string()))
        .one(db)
        .await?;
    if existing.is_some() {
        guardian::Entity::update_many()
            .col_expr(
                guardian::Column::Relationship,
                Expr::value(g.relationship.as_str()),
            )
            .col_expr(guardian::Column::CanChat, Expr::value(g.can_chat))
            .filter(guardian::Column::PatientId.eq(g.patient_id.as_string()))
            .filter(guardian::Column::UserId.eq(g.user_id.as_string()))
            .exec(db)
            .await?;
    } else {
        guardian::Entity::insert(guardian::ActiveModel {
            patient_id: Set(g.patient_id.as_string()),
            user_id: Set(g.user_id.as_string()),
            relationship: Set(g.relationship.as_str().to_owned()),
            can_chat: Set(g.can_chat),
            created_at: Set(Utc::now()),
        })
        .exec(db)
        .await?;
    }
    Ok(())
}

/// Removes a guardian; whether one was removed.
pub async fn remove_guardian(
    db: &impl super::Source,
    patient: PatientId,
    user: UserId,
) -> AppResult<bool> {
    let delete = guardian::Entity::delete_many()
        .filter(guardian::Column::PatientId.eq(patient.as_string()))
        .filter(guardian::Column::UserId.eq(user.as_string()));
    Ok(super::delete_one(db, delete).await?)
}

/// One guardian link.
pub async fn find_guardian(
    db: &impl super::Source,
    patient: PatientId,
    user: UserId,
) -> AppResult<Option<Guardian>> {
    guardian::Entity::find_by_id((patient.as_string(), user.as_string()))
        .one(db)
        .await?
        .map(guardian_to_domain)
        .transpose()
}

/// The guardians of many patients (for loaders).
pub async fn guardians_of(
    db: &impl super::Source,
    patients: &[PatientId],
) -> AppResult<Vec<Guardian>> {
    if patients.is_empty() {
        return Ok(Vec::new());
    }
    guardian::Entity::find()
        .filter(guardian::Column::PatientId.is_in(patients.iter().map(PatientId::as_string)))
        .order_by_asc(guardian::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(guardian_to_domain)
        .collect()
}

/// The guardian links of many users (for loaders).
pub async fn guardianships_of(
    db: &impl super::Source,
    users: &[UserId],
) -> AppResult<Vec<Guardian>> {
    super::rows_in::<guardian::Entity, _>(db, guardian::Column::UserId, users, guardian_to_domain)
        .await
}
