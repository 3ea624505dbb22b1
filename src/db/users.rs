//! The users repository.

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use super::entities::user;
use crate::{
    domain::{Email, User, UserId},
    error::AppResult,
};

fn to_domain(m: user::Model) -> AppResult<User> {
    Ok(User {
        id: UserId::from_db(&m.id)?,
        email: m.email,
        external_id: m.external_id,
        given_name: m.given_name,
        family_name: m.family_name,
        display_name: m.display_name,
        avatar_url: m.avatar_url,
        created_at: m.created_at,
    })
}

/// What is needed to create a user.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The normalised email.
    pub email: Email,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// An argon2 PHC string, for built-in accounts.
    pub password_hash: Option<String>,
}

/// The row of a new user, and the user it stores.
pub fn user_row(new: NewUser) -> (user::ActiveModel, User) {
    let display = crate::domain::people::display_name(&new.given_name, &new.family_name);
    let domain = User {
        id: UserId::new(),
        email: new.email.as_str().to_owned(),
        external_id: None,
        given_name: new.given_name,
        family_name: new.family_name,
        display_name: display,
        avatar_url: None,
        created_at: Utc::now(),
    };
    let row = user::ActiveModel {
        id: Set(domain.id.as_string()),
        email: Set(domain.email.clone()),
        external_id: Set(None),
        given_name: Set(domain.given_name.clone()),
        family_name: Set(domain.family_name.clone()),
        display_name: Set(domain.display_name.clone()),
        avatar_url: Set(None),
        password_hash: Set(new.password_hash),
        created_at: Set(domain.created_at),
    };
    (row, domain)
}

/// Inserts a user.
pub async fn insert(db: &impl super::Source, new: NewUser) -> AppResult<User> {
    let (row, _) = user_row(new);
    to_domain(user::Entity::insert(row).exec_with_returning(db).await?)
}

/// Finds a user by id.
pub async fn find(db: &impl super::Source, id: UserId) -> AppResult<Option<User>> {
    user::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Finds many users by id, in no particular order (for loaders).
pub async fn find_many(db: &impl super::Source, ids: &[UserId]) -> AppResult<Vec<User>> {
    super::rows_in::<user::Entity, _>(db, user::Column::Id, ids, to_domain).await
}

/// Finds a user and their password hash by email.
pub async fn find_by_email(
    db: &impl super::Source,
    email: &Email,
) -> AppResult<Option<(User, Option<String>)>> {
    match user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(db)
        .await?
    {
        None => Ok(None),
        Some(m) => {
            let hash = m.password_hash.clone();
            Ok(Some((to_domain(m)?, hash)))
        }
    }
}

/// Finds the user a token's `sub` names: caregraph's own id, or an identity provider's
/// `externalId`.
pub async fn find_by_subject(db: &impl super::Source, sub: &str) -> AppResult<Option<User>> {
    // caregraph's own ids are UUIDs; an identity provider's subject may be anything,
    // UUIDs included, so a UUID that is no user id is still tried as an external id.
    let by_id = if uuid::Uuid::parse_str(sub).is_ok() {
        super::columns::first(db, user::Entity::find_by_id(sub)).await?
    } else {
        None
    };
    let found = match by_id {
        Some(m) => Some(m),
        None => {
            let by_external = user::Entity::find().filter(user::Column::ExternalId.eq(sub));
            super::columns::first(db, by_external).await?
        }
    };
    found.map(to_domain).transpose()
}

/// Sets a user's password hash.
pub async fn set_password_hash(db: &impl super::Source, id: UserId, hash: String) -> AppResult<()> {
    user::Entity::update_many()
        .col_expr(
            user::Column::PasswordHash,
            sea_orm::sea_query::Expr::value(hash),
        )
        .filter(user::Column::Id.eq(id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}
