//! The care teams repository.

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::{care_team, care_team_member};
use crate::{
    domain::{
        CareTeamId, CareTeamMemberId, OrgId, PatientId, UserId,
        care::{CareTeam, CareTeamMember, CareTeamRole},
    },
    error::AppResult,
};

fn to_domain(m: care_team::Model) -> AppResult<CareTeam> {
    Ok(CareTeam {
        id: CareTeamId::from_db(&m.id)?,
        patient_id: PatientId::from_db(&m.patient_id)?,
        org_id: OrgId::from_db(&m.org_id)?,
        name: m.name,
    })
}

fn member_to_domain(m: care_team_member::Model) -> AppResult<CareTeamMember> {
    Ok(CareTeamMember {
        id: CareTeamMemberId::from_db(&m.id)?,
        care_team_id: CareTeamId::from_db(&m.care_team_id)?,
        user_id: m.user_id.as_deref().map(UserId::from_db).transpose()?,
        phone: m.phone,
        display_name: m.display_name,
        role: CareTeamRole::from_db(&m.role)?,
        member_org_id: m.member_org_id.as_deref().map(OrgId::from_db).transpose()?,
    })
}

/// Inserts a care team.
pub async fn insert(
    db: &impl super::Source,
    patient: PatientId,
    org: OrgId,
    name: String,
) -> AppResult<CareTeam> {
    let model = care_team::ActiveModel {
        id: Set(CareTeamId::new().as_string()),
        patient_id: Set(patient.as_string()),
        org_id: Set(org.as_string()),
        name: Set(name),
        created_at: Set(Utc::now()),
    };
    to_domain(
        care_team::Entity::insert(model)
            .exec_with_returning(db)
            .await?,
    )
}

/// Finds a care team.
pub async fn find(db: &impl super::Source, id: CareTeamId) -> AppResult<Option<CareTeam>> {
    care_team::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Finds many care teams (for loaders).
pub async fn find_many(db: &impl super::Source, ids: &[CareTeamId]) -> AppResult<Vec<CareTeam>> {
    super::rows_in::<care_team::Entity, _>(db, care_team::Column::Id, ids, to_domain).await
}

/// The care teams of many patients (for loaders).
pub async fn of_patients(
    db: &impl super::Source,
    patients: &[PatientId],
) -> AppResult<Vec<CareTeam>> {
    if patients.is_empty() {
        return Ok(Vec::new());
    }
    care_team::Entity::find()
        .filter(care_team::Column::PatientId.is_in(patients.iter().map(PatientId::as_string)))
        .order_by_asc(care_team::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// Adds a member.
pub async fn insert_member(db: &impl super::Source, m: &CareTeamMember) -> AppResult<()> {
    care_team_member::Entity::insert(care_team_member::ActiveModel {
        id: Set(m.id.as_string()),
        care_team_id: Set(m.care_team_id.as_string()),
        user_id: Set(m.user_id.map(|u| u.as_string())),
        phone: Set(m.phone.clone()),
        display_name: Set(m.display_name.clone()),
        role: Set(m.role.as_str().to_owned()),
        member_org_id: Set(m.member_org_id.map(|o| o.as_string())),
        created_at: Set(Utc::now()),
    })
    .exec(db)
    .await?;
    Ok(())
}

/// Removes a member; whether one was removed.
pub async fn remove_member(
    db: &impl super::Source,
    team: CareTeamId,
    member: CareTeamMemberId,
) -> AppResult<bool> {
    let delete = care_team_member::Entity::delete_many()
        .filter(care_team_member::Column::CareTeamId.eq(team.as_string()))
        .filter(care_team_member::Column::Id.eq(member.as_string()));
    Ok(super::delete_one(db, delete).await?)
}

/// The members of many teams, oldest first (for loaders).
pub async fn members_of(
    db: &impl super::Source,
    teams: &[CareTeamId],
) -> AppResult<Vec<CareTeamMember>> {
    if teams.is_empty() {
        return Ok(Vec::new());
    }
    care_team_member::Entity::find()
        .filter(care_team_member::Column::CareTeamId.is_in(teams.iter().map(CareTeamId::as_string)))
        .order_by_asc(care_team_member::Column::CreatedAt)
        .order_by_asc(care_team_member::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(member_to_domain)
        .collect()
}
