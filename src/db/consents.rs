//! The consents repository: consent records and compliance groups.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use super::entities::{
    compliance_group, compliance_group_invitation, compliance_group_member, consent,
};
use crate::{
    domain::{
        ComplianceGroupId, ConsentId, OrgId, PatientId, UserId,
        care::{ComplianceGroup, ComplianceGroupInvitation, Consent, ConsentScope},
    },
    error::AppResult,
};

fn to_domain(m: consent::Model) -> AppResult<Consent> {
    Ok(Consent {
        id: ConsentId::from_db(&m.id)?,
        patient_id: PatientId::from_db(&m.patient_id)?,
        scope: ConsentScope::from_db(&m.scope)?,
        granted_to: m
            .granted_to_org_id
            .as_deref()
            .map(OrgId::from_db)
            .transpose()?,
        compliance_group: m
            .compliance_group_id
            .as_deref()
            .map(ComplianceGroupId::from_db)
            .transpose()?,
        granted_at: m.granted_at,
        expires_at: m.expires_at,
        revoked_at: m.revoked_at,
    })
}

/// A consent to record.
#[derive(Clone, Debug)]
pub struct NewConsent {
    /// The patient.
    pub patient_id: PatientId,
    /// What it allows.
    pub scope: ConsentScope,
    /// Granted to this organisation…
    pub granted_to: Option<OrgId>,
    /// …or to this compliance group.
    pub compliance_group: Option<ComplianceGroupId>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who recorded it.
    pub recorded_by: UserId,
}

/// Records a consent.
pub async fn insert(db: &impl super::Source, new: NewConsent) -> AppResult<Consent> {
    let model = consent::ActiveModel {
        id: Set(ConsentId::new().as_string()),
        patient_id: Set(new.patient_id.as_string()),
        scope: Set(new.scope.as_str().to_owned()),
        granted_to_org_id: Set(new.granted_to.map(|o| o.as_string())),
        compliance_group_id: Set(new.compliance_group.map(|g| g.as_string())),
        granted_at: Set(Utc::now()),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
        recorded_by: Set(new.recorded_by.as_string()),
        lapse_applied_at: Set(None),
    };
    to_domain(
        consent::Entity::insert(model)
            .exec_with_returning(db)
            .await?,
    )
}

/// Finds a consent.
pub async fn find(db: &impl super::Source, id: ConsentId) -> AppResult<Option<Consent>> {
    consent::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Marks a consent revoked (once; a second revocation keeps the first time).
pub async fn revoke(db: &impl super::Source, id: ConsentId, at: DateTime<Utc>) -> AppResult<()> {
    consent::Entity::update_many()
        .col_expr(consent::Column::RevokedAt, Expr::value(at))
        .filter(consent::Column::Id.eq(id.as_string()))
        .filter(consent::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// The consents of many patients, oldest first (for loaders).
pub async fn of_patients(
    db: &impl super::Source,
    patients: &[PatientId],
) -> AppResult<Vec<Consent>> {
    if patients.is_empty() {
        return Ok(Vec::new());
    }
    consent::Entity::find()
        .filter(consent::Column::PatientId.is_in(patients.iter().map(PatientId::as_string)))
        .order_by_asc(consent::Column::GrantedAt)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// A patient's unrevoked consents of one scope (expiry is the caller's to judge).
pub async fn unrevoked(
    db: &impl super::Source,
    patient: PatientId,
    scope: ConsentScope,
) -> AppResult<Vec<Consent>> {
    consent::Entity::find()
        .filter(consent::Column::PatientId.eq(patient.as_string()))
        .filter(consent::Column::Scope.eq(scope.as_str()))
        .filter(consent::Column::RevokedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// Up to `limit` consents that reached `expires_at` by `now` unrevoked, whose lapse the chats
/// have not followed yet.
pub async fn lapsed_unapplied(
    db: &impl super::Source,
    now: DateTime<Utc>,
    limit: u64,
) -> AppResult<Vec<Consent>> {
    consent::Entity::find()
        .filter(consent::Column::ExpiresAt.lte(now))
        .filter(consent::Column::RevokedAt.is_null())
        .filter(consent::Column::LapseAppliedAt.is_null())
        .order_by_asc(consent::Column::ExpiresAt)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// Marks a consent's lapse applied; whether this call did (a concurrent scheduler loses).
pub async fn mark_lapse_applied(
    db: &impl super::Source,
    id: ConsentId,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let update = consent::Entity::update_many()
        .col_expr(consent::Column::LapseAppliedAt, Expr::value(at))
        .filter(consent::Column::Id.eq(id.as_string()))
        .filter(consent::Column::LapseAppliedAt.is_null());
    Ok(super::update_one(db, update).await?)
}

/// When the next unrevoked consent lapses whose lapse is still to apply.
pub async fn next_lapse(db: &impl super::Source) -> AppResult<Option<DateTime<Utc>>> {
    Ok(consent::Entity::find()
        .filter(consent::Column::ExpiresAt.is_not_null())
        .filter(consent::Column::RevokedAt.is_null())
        .filter(consent::Column::LapseAppliedAt.is_null())
        .order_by_asc(consent::Column::ExpiresAt)
        .one(db)
        .await?
        .and_then(|c| c.expires_at))
}

/// Creates a compliance group with `owner` as its member and an invitation for each of `invited`.
///
/// An invitation is stored whether or not its id names an organisation.
pub async fn insert_group(
    db: &impl super::Source,
    name: String,
    owner: OrgId,
    invited: &[OrgId],
    at: DateTime<Utc>,
) -> AppResult<ComplianceGroup> {
    let id = ComplianceGroupId::new();
    compliance_group::Entity::insert(compliance_group::ActiveModel {
        id: Set(id.as_string()),
        name: Set(name.clone()),
        owner_org_id: Set(owner.as_string()),
        created_at: Set(at),
    })
    .exec(db)
    .await?;
    compliance_group_member::Entity::insert(compliance_group_member::ActiveModel {
        group_id: Set(id.as_string()),
        org_id: Set(owner.as_string()),
    })
    .exec(db)
    .await?;
    if !invited.is_empty() {
        compliance_group_invitation::Entity::insert_many(invited.iter().map(|o| {
            compliance_group_invitation::ActiveModel {
                group_id: Set(id.as_string()),
                org_id: Set(o.as_string()),
                invited_at: Set(at),
            }
        }))
        .exec(db)
        .await?;
    }
    Ok(ComplianceGroup {
        id,
        name,
        owner_org_id: owner,
        org_ids: vec![owner],
        invited_org_ids: invited.to_vec(),
    })
}

/// Finds compliance groups with their members and pending invitations.
pub async fn find_groups(
    db: &impl super::Source,
    ids: &[ComplianceGroupId],
) -> AppResult<Vec<ComplianceGroup>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = ids.iter().map(ComplianceGroupId::as_string).collect();
    let groups = compliance_group::Entity::find()
        .filter(compliance_group::Column::Id.is_in(keys.clone()))
        .all(db)
        .await?;
    let members = compliance_group_member::Entity::find()
        .filter(compliance_group_member::Column::GroupId.is_in(keys.clone()))
        .all(db)
        .await?;
    let invitations = compliance_group_invitation::Entity::find()
        .filter(compliance_group_invitation::Column::GroupId.is_in(keys))
        .order_by_asc(compliance_group_invitation::Column::InvitedAt)
        .order_by_asc(compliance_group_invitation::Column::OrgId)
        .all(db)
        .await?;
    groups
        .into_iter()
        .map(|g| {
            let org_ids = members
                .iter()
                .filter(|m| m.group_id == g.id)
                .map(|m| OrgId::from_db(&m.org_id))
                .collect::<AppResult<Vec<_>>>()?;
            let invited_org_ids = invitations
                .iter()
                .filter(|i| i.group_id == g.id)
                .map(|i| OrgId::from_db(&i.org_id))
                .collect::<AppResult<Vec<_>>>()?;
            Ok(ComplianceGroup {
                id: ComplianceGroupId::from_db(&g.id)?,
                name: g.name,
                owner_org_id: OrgId::from_db(&g.owner_org_id)?,
                org_ids,
                invited_org_ids,
            })
        })
        .collect()
}

/// An organisation's pending invitations, oldest first, with each group's name and owner.
pub async fn invitations_of_org(
    db: &impl super::Source,
    org: OrgId,
) -> AppResult<Vec<ComplianceGroupInvitation>> {
    let invitations = compliance_group_invitation::Entity::find()
        .filter(compliance_group_invitation::Column::OrgId.eq(org.as_string()))
        .order_by_asc(compliance_group_invitation::Column::InvitedAt)
        .order_by_asc(compliance_group_invitation::Column::GroupId)
        .all(db)
        .await?;
    if invitations.is_empty() {
        return Ok(Vec::new());
    }
    let groups = compliance_group::Entity::find()
        .filter(compliance_group::Column::Id.is_in(invitations.iter().map(|i| i.group_id.clone())))
        .all(db)
        .await?;
    let owners = groups
        .iter()
        .map(|g| OrgId::from_db(&g.owner_org_id))
        .collect::<AppResult<Vec<_>>>()?;
    let owners = super::organizations::find_many(db, &owners).await?;
    invitations
        .into_iter()
        .filter_map(|i| {
            let group = groups.iter().find(|g| g.id == i.group_id)?;
            let owner = owners
                .iter()
                .find(|o| o.id.as_string() == group.owner_org_id)?;
            Some((i, group, owner))
        })
        .map(|(i, group, owner)| {
            Ok(ComplianceGroupInvitation {
                group_id: ComplianceGroupId::from_db(&group.id)?,
                group_name: group.name.clone(),
                org_id: OrgId::from_db(&i.org_id)?,
                invited_by: owner.id,
                invited_by_name: owner.name.clone(),
                invited_at: i.invited_at,
            })
        })
        .collect()
}

/// Removes a pending invitation; `false` when there was none.
pub async fn remove_invitation(
    db: &impl super::Source,
    group: ComplianceGroupId,
    org: OrgId,
) -> AppResult<bool> {
    let delete = compliance_group_invitation::Entity::delete_many()
        .filter(compliance_group_invitation::Column::GroupId.eq(group.as_string()))
        .filter(compliance_group_invitation::Column::OrgId.eq(org.as_string()));
    Ok(super::delete_one(db, delete).await?)
}

/// Makes an organisation a member of a compliance group.
pub async fn add_member(
    db: &impl super::Source,
    group: ComplianceGroupId,
    org: OrgId,
) -> AppResult<()> {
    compliance_group_member::Entity::insert(compliance_group_member::ActiveModel {
        group_id: Set(group.as_string()),
        org_id: Set(org.as_string()),
    })
    .exec(db)
    .await?;
    Ok(())
}

/// The compliance groups an organisation belongs to as a member (pending invitations do not count).
pub async fn groups_of_org(
    db: &impl super::Source,
    org: OrgId,
) -> AppResult<Vec<ComplianceGroupId>> {
    compliance_group_member::Entity::find()
        .filter(compliance_group_member::Column::OrgId.eq(org.as_string()))
        .all(db)
        .await?
        .into_iter()
        .map(|m| ComplianceGroupId::from_db(&m.group_id))
        .collect()
}
