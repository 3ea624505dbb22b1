//! The organisations repository: organisations and their memberships.

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, sea_query::Expr,
};

use super::entities::{membership, organization};
use crate::{
    domain::{Membership, OrgId, OrgRole, Organization, Slug, UserId},
    error::AppResult,
};

fn org_to_domain(m: organization::Model) -> AppResult<Organization> {
    Ok(Organization {
        id: OrgId::from_db(&m.id)?,
        name: m.name,
        slug: m.slug,
        cross_org_messaging: m.cross_org_messaging,
        created_at: m.created_at,
    })
}

fn membership_to_domain(m: membership::Model) -> AppResult<Membership> {
    Ok(Membership {
        org_id: OrgId::from_db(&m.org_id)?,
        user_id: UserId::from_db(&m.user_id)?,
        role: OrgRole::from_db(&m.role)?,
        title: m.title,
        active: m.active,
    })
}

/// Inserts an organisation.
pub async fn insert(
    db: &impl ConnectionTrait,
    name: String,
    slug: &Slug,
) -> AppResult<Organization> {
    let model = organization::ActiveModel {
        id: Set(OrgId::new().as_string()),
        name: Set(name),
        slug: Set(slug.as_str().to_owned()),
        cross_org_messaging: Set(false),
        created_at: Set(Utc::now()),
    };
    org_to_domain(
        organization::Entity::insert(model)
            .exec_with_returning(db)
            .await?,
    )
}

/// Finds an organisation by id.
pub async fn find(db: &impl ConnectionTrait, id: OrgId) -> AppResult<Option<Organization>> {
    organization::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(org_to_domain)
        .transpose()
}

/// Finds many organisations by id (for loaders).
pub async fn find_many(db: &impl ConnectionTrait, ids: &[OrgId]) -> AppResult<Vec<Organization>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    organization::Entity::find()
        .filter(organization::Column::Id.is_in(ids.iter().map(OrgId::as_string)))
        .all(db)
        .await?
        .into_iter()
        .map(org_to_domain)
        .collect()
}

/// Whether a slug is taken.
pub async fn slug_taken(db: &impl ConnectionTrait, slug: &Slug) -> AppResult<bool> {
    Ok(organization::Entity::find()
        .filter(organization::Column::Slug.eq(slug.as_str()))
        .count(db)
        .await?
        > 0)
}

/// How many organisations exist (an empty database gets demo data).
pub async fn count(db: &impl ConnectionTrait) -> AppResult<u64> {
    Ok(organization::Entity::find().count(db).await?)
}

/// Changes an organisation's name and network-messaging switch.
pub async fn update(
    db: &impl ConnectionTrait,
    id: OrgId,
    name: Option<String>,
    cross_org_messaging: Option<bool>,
) -> AppResult<()> {
    let mut update =
        organization::Entity::update_many().filter(organization::Column::Id.eq(id.as_string()));
    if let Some(name) = name {
        update = update.col_expr(organization::Column::Name, Expr::value(name));
    }
    if let Some(flag) = cross_org_messaging {
        update = update.col_expr(organization::Column::CrossOrgMessaging, Expr::value(flag));
    }
    update.exec(db).await?;
    Ok(())
}

/// Inserts a membership.
pub async fn insert_membership(
    db: &impl ConnectionTrait,
    org_id: OrgId,
    user_id: UserId,
    role: OrgRole,
    title: Option<String>,
) -> AppResult<Membership> {
    let model = membership::ActiveModel {
        org_id: Set(org_id.as_string()),
        user_id: Set(user_id.as_string()),
        role: Set(role.as_str().to_owned()),
        title: Set(title),
        active: Set(true),
        created_at: Set(Utc::now()),
    };
    membership_to_domain(
        membership::Entity::insert(model)
            .exec_with_returning(db)
            .await?,
    )
}

/// Finds one membership.
pub async fn find_membership(
    db: &impl ConnectionTrait,
    org_id: OrgId,
    user_id: UserId,
) -> AppResult<Option<Membership>> {
    membership::Entity::find_by_id((org_id.as_string(), user_id.as_string()))
        .one(db)
        .await?
        .map(membership_to_domain)
        .transpose()
}

/// A user's memberships, oldest first.
pub async fn memberships_of_user(
    db: &impl ConnectionTrait,
    user_id: UserId,
) -> AppResult<Vec<Membership>> {
    membership::Entity::find()
        .filter(membership::Column::UserId.eq(user_id.as_string()))
        .order_by_asc(membership::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(membership_to_domain)
        .collect()
}

/// Stores a membership's role, title and active flag.
pub async fn update_membership(db: &impl ConnectionTrait, m: &Membership) -> AppResult<()> {
    membership::Entity::update_many()
        .col_expr(membership::Column::Role, Expr::value(m.role.as_str()))
        .col_expr(membership::Column::Title, Expr::value(m.title.clone()))
        .col_expr(membership::Column::Active, Expr::value(m.active))
        .filter(membership::Column::OrgId.eq(m.org_id.as_string()))
        .filter(membership::Column::UserId.eq(m.user_id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// How many active owners an organisation has (the last one may not be demoted).
pub async fn active_owner_count(db: &impl ConnectionTrait, org_id: OrgId) -> AppResult<u64> {
    Ok(membership::Entity::find()
        .filter(membership::Column::OrgId.eq(org_id.as_string()))
        .filter(membership::Column::Role.eq(OrgRole::Owner.as_str()))
        .filter(membership::Column::Active.eq(true))
        .count(db)
        .await?)
}
