//! The cases repository: cases and their participants.

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr,
};

use super::entities::{case, case_participant};
use super::keyset::Keyset;
use crate::{
    domain::{
        CaseId, OrgId, PatientId, UserId,
        care::{Case, CaseKind, CaseParticipant, CaseRole, CaseStatus},
        pagination::{Page, PageRequest},
    },
    error::AppResult,
};

fn to_domain(m: case::Model) -> AppResult<Case> {
    Ok(Case {
        id: CaseId::from_db(&m.id)?,
        org_id: OrgId::from_db(&m.org_id)?,
        reference: m.reference,
        kind: CaseKind::from_db(&m.kind)?,
        title: m.title,
        status: CaseStatus::from_db(&m.status)?,
        patient_id: m
            .patient_id
            .as_deref()
            .map(PatientId::from_db)
            .transpose()?,
        created_at: m.created_at,
        closed_at: m.closed_at,
    })
}

fn participant_to_domain(m: case_participant::Model) -> AppResult<CaseParticipant> {
    Ok(CaseParticipant {
        case_id: CaseId::from_db(&m.case_id)?,
        user_id: UserId::from_db(&m.user_id)?,
        role: CaseRole::from_db(&m.role)?,
    })
}

/// What a new case holds.
#[derive(Clone, Debug)]
pub struct NewCase {
    /// Organisation.
    pub org_id: OrgId,
    /// The caller's reference.
    pub reference: String,
    /// Kind.
    pub kind: CaseKind,
    /// Title.
    pub title: String,
    /// Patient.
    pub patient_id: Option<PatientId>,
    /// Creator.
    pub created_by: UserId,
}

/// Inserts a case.
pub async fn insert(db: &impl super::Source, new: NewCase) -> AppResult<Case> {
    let model = case::ActiveModel {
        id: Set(CaseId::new().as_string()),
        org_id: Set(new.org_id.as_string()),
        reference: Set(new.reference),
        kind: Set(new.kind.as_str().to_owned()),
        title: Set(new.title),
        status: Set(CaseStatus::Open.as_str().to_owned()),
        patient_id: Set(new.patient_id.map(|p| p.as_string())),
        created_by: Set(new.created_by.as_string()),
        created_at: Set(Utc::now()),
        closed_at: Set(None),
    };
    to_domain(case::Entity::insert(model).exec_with_returning(db).await?)
}

/// Finds a case.
pub async fn find(db: &impl super::Source, id: CaseId) -> AppResult<Option<Case>> {
    case::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Finds many cases (for loaders).
pub async fn find_many(db: &impl super::Source, ids: &[CaseId]) -> AppResult<Vec<Case>> {
    super::rows_in::<case::Entity, _>(db, case::Column::Id, ids, to_domain).await
}

/// Finds a case by its organisation's reference.
pub async fn find_by_reference(
    db: &impl super::Source,
    org: OrgId,
    reference: &str,
) -> AppResult<Option<Case>> {
    case::Entity::find()
        .filter(case::Column::OrgId.eq(org.as_string()))
        .filter(case::Column::Reference.eq(reference))
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Closes a case (once).
pub async fn close(db: &impl super::Source, id: CaseId) -> AppResult<()> {
    case::Entity::update_many()
        .col_expr(
            case::Column::Status,
            Expr::value(CaseStatus::Closed.as_str()),
        )
        .col_expr(case::Column::ClosedAt, Expr::value(Utc::now()))
        .filter(case::Column::Id.eq(id.as_string()))
        .filter(case::Column::Status.eq(CaseStatus::Open.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// A page of an organisation's cases, newest first.
pub async fn list(
    db: &impl super::Source,
    org: OrgId,
    status: Option<CaseStatus>,
    page: &PageRequest,
) -> AppResult<Page<Case>> {
    let mut filter = Condition::all().add(case::Column::OrgId.eq(org.as_string()));
    if let Some(s) = status {
        filter = filter.add(case::Column::Status.eq(s.as_str()));
    }
    let order = Keyset::time(case::Column::CreatedAt, case::Column::Id).descending();
    super::keyset::page::<case::Entity, _>(db, filter, order, page, to_domain).await
}

/// Adds a participant, or changes their role.
pub async fn upsert_participant(db: &impl super::Source, p: &CaseParticipant) -> AppResult<()> {
    let existing =
        case_participant::Entity::find_by_id((p.case_id.as_string(), p.user_id.as_string()))
            .one(db)
            .await?;
    if existing.is_some() {
        case_participant::Entity::update_many()
            .col_expr(case_participant::Column::Role, Expr::value(p.role.as_str()))
            .filter(case_participant::Column::CaseId.eq(p.case_id.as_string()))
            .filter(case_participant::Column::UserId.eq(p.user_id.as_string()))
            .exec(db)
            .await?;
    } else {
        case_participant::Entity::insert(case_participant::ActiveModel {
            case_id: Set(p.case_id.as_string()),
            user_id: Set(p.user_id.as_string()),
            role: Set(p.role.as_str().to_owned()),
            created_at: Set(Utc::now()),
        })
        .exec(db)
        .await?;
    }
    Ok(())
}

/// Removes a participant; whether one was removed.
pub async fn remove_participant(
    db: &impl super::Source,
    case: CaseId,
    user: UserId,
) -> AppResult<bool> {
    let delete = case_participant::Entity::delete_many()
        .filter(case_participant::Column::CaseId.eq(case.as_string()))
        .filter(case_participant::Column::UserId.eq(user.as_string()));
    Ok(super::delete_one(db, delete).await?)
}

/// The participants of many cases (for loaders).
pub async fn participants_of(
    db: &impl super::Source,
    cases: &[CaseId],
) -> AppResult<Vec<CaseParticipant>> {
    if cases.is_empty() {
        return Ok(Vec::new());
    }
    case_participant::Entity::find()
        .filter(case_participant::Column::CaseId.is_in(cases.iter().map(CaseId::as_string)))
        .order_by_asc(case_participant::Column::CreatedAt)
        .order_by_asc(case_participant::Column::UserId)
        .all(db)
        .await?
        .into_iter()
        .map(participant_to_domain)
        .collect()
}
