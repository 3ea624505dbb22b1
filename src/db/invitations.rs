//! The invitations repository: pending members and guardians, found by id or by token hash.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, sea_query::Expr,
};

use super::{entities::invitation, keyset::Keyset};
use crate::{
    domain::{
        InvitationId, OrgId, OrgRole, PatientId, UserId,
        care::GuardianRelationship,
        invitation::{Invitation, InvitationKind},
        pagination::{Page, PageRequest},
    },
    error::{AppError, AppResult},
};

fn to_domain(m: invitation::Model) -> AppResult<Invitation> {
    let kind = match (m.kind.as_str(), m.patient_id.as_deref()) {
        ("MEMBER", _) => InvitationKind::Member {
            role: OrgRole::from_db(m.role.as_deref().unwrap_or(""))?,
            title: m.title,
        },
        ("GUARDIAN", Some(patient)) => InvitationKind::Guardian {
            patient_id: PatientId::from_db(patient)?,
            relationship: GuardianRelationship::from_db(m.relationship.as_deref().unwrap_or(""))?,
            can_chat: m.can_chat,
        },
        (other, _) => {
            return Err(AppError::internal(anyhow::anyhow!(
                "corrupt invitation kind {other:?}"
            )));
        }
    };
    Ok(Invitation {
        id: InvitationId::from_db(&m.id)?,
        org_id: OrgId::from_db(&m.org_id)?,
        email: m.email,
        given_name: m.given_name,
        family_name: m.family_name,
        kind,
        invited_by: m.invited_by.as_deref().map(UserId::from_db).transpose()?,
        created_at: m.created_at,
        expires_at: m.expires_at,
        accepted_at: m.accepted_at,
        accepted_by: m.accepted_by.as_deref().map(UserId::from_db).transpose()?,
        revoked_at: m.revoked_at,
    })
}

/// Inserts an invitation with the hash of its token.
pub async fn insert(
    db: &impl super::Source,
    invitation: &Invitation,
    token_hash: String,
) -> AppResult<()> {
    let (role, title, patient, relationship, can_chat) = match &invitation.kind {
        InvitationKind::Member { role, title } => {
            (Some(role.as_str()), title.clone(), None, None, false)
        }
        InvitationKind::Guardian {
            patient_id,
            relationship,
            can_chat,
        } => (
            None,
            None,
            Some(patient_id.as_string()),
            Some(relationship.as_str()),
            *can_chat,
        ),
    };
    let row = invitation::ActiveModel {
        id: Set(invitation.id.as_string()),
        kind: Set(invitation.kind.as_str().to_owned()),
        org_id: Set(invitation.org_id.as_string()),
        patient_id: Set(patient),
        email: Set(invitation.email.clone()),
        given_name: Set(invitation.given_name.clone()),
        family_name: Set(invitation.family_name.clone()),
        role: Set(role.map(str::to_owned)),
        title: Set(title),
        relationship: Set(relationship.map(str::to_owned)),
        can_chat: Set(can_chat),
        token_hash: Set(token_hash),
        invited_by: Set(invitation.invited_by.map(|u| u.as_string())),
        created_at: Set(invitation.created_at),
        expires_at: Set(invitation.expires_at),
        accepted_at: Set(None),
        accepted_by: Set(None),
        revoked_at: Set(None),
    };
    invitation::Entity::insert(row)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Finds an invitation by id.
pub async fn find(db: &impl super::Source, id: InvitationId) -> AppResult<Option<Invitation>> {
    invitation::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Finds an invitation by the hash of its token.
pub async fn find_by_token_hash(
    db: &impl super::Source,
    hash: &str,
) -> AppResult<Option<Invitation>> {
    invitation::Entity::find()
        .filter(invitation::Column::TokenHash.eq(hash))
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// The condition "neither accepted nor revoked, and not expired at `now`".
fn pending_at(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(invitation::Column::AcceptedAt.is_null())
        .add(invitation::Column::RevokedAt.is_null())
        .add(invitation::Column::ExpiresAt.gt(now))
}

/// Whether a pending invitation of `email` to `org` exists: as a member when `patient` is
/// `None`, else as a guardian of that patient.
pub async fn pending_exists(
    db: &impl super::Source,
    org: OrgId,
    email: &str,
    patient: Option<PatientId>,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let target = match patient {
        None => invitation::Column::Kind.eq("MEMBER"),
        Some(p) => invitation::Column::PatientId.eq(p.as_string()),
    };
    Ok(invitation::Entity::find()
        .filter(invitation::Column::OrgId.eq(org.as_string()))
        .filter(invitation::Column::Email.eq(email))
        .filter(target)
        .filter(pending_at(now))
        .one(db)
        .await?
        .is_some())
}

/// Marks a pending invitation accepted, first thing in the accepting transaction; false when it
/// was no longer pending (a concurrent accept or a revocation won: on PostgreSQL the row lock
/// holds a concurrent accept here until this one ends, and it then finds no pending row).
pub async fn mark_accepted(
    db: &impl super::Source,
    id: InvitationId,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let done = invitation::Entity::update_many()
        .col_expr(invitation::Column::AcceptedAt, Expr::value(now))
        .filter(invitation::Column::Id.eq(id.as_string()))
        .filter(pending_at(now))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// Records whose account accepted an invitation.
pub async fn set_accepted_by(
    db: &impl super::Source,
    id: InvitationId,
    user: UserId,
) -> AppResult<()> {
    invitation::Entity::update_many()
        .col_expr(
            invitation::Column::AcceptedBy,
            Expr::value(user.as_string()),
        )
        .filter(invitation::Column::Id.eq(id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Marks an invitation revoked unless it was accepted or revoked already; whether it changed.
pub async fn mark_revoked(
    db: &impl super::Source,
    id: InvitationId,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let done = invitation::Entity::update_many()
        .col_expr(invitation::Column::RevokedAt, Expr::value(now))
        .filter(invitation::Column::Id.eq(id.as_string()))
        .filter(invitation::Column::AcceptedAt.is_null())
        .filter(invitation::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// A page of an organisation's invitations, newest first: all of them, or only those still
/// pending at `now`; only guardian invitations unless `members_too`.
pub async fn page_of_org(
    db: &impl super::Source,
    org: OrgId,
    pending_only: bool,
    members_too: bool,
    now: DateTime<Utc>,
    page: &PageRequest,
) -> AppResult<Page<Invitation>> {
    let mut filter = Condition::all().add(invitation::Column::OrgId.eq(org.as_string()));
    if pending_only {
        filter = filter.add(pending_at(now));
    }
    if !members_too {
        filter = filter.add(invitation::Column::Kind.eq("GUARDIAN"));
    }
    super::keyset::page::<invitation::Entity, _>(
        db,
        filter,
        Keyset::time(invitation::Column::CreatedAt, invitation::Column::Id).descending(),
        page,
        to_domain,
    )
    .await
}
