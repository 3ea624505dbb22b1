//! The used nonces of audit export download links: a link's nonce is inserted when it is used,
//! and the primary key refuses a second use from any replica sharing the database.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TryInsertResult};

use super::entities::audit_export_link;
use crate::error::AppResult;

/// Uses up the link with `nonce` (which expires at `expires_at`): true the first time, false
/// when it was used before. Nonces expired at `now` are removed first (their links are refused
/// by their signed expiry, so they can never be presented again).
pub async fn use_once(
    db: &impl super::Source,
    nonce: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    audit_export_link::Entity::delete_many()
        .filter(audit_export_link::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?;
    let inserted = audit_export_link::Entity::insert(audit_export_link::ActiveModel {
        nonce: Set(nonce.to_owned()),
        expires_at: Set(expires_at),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    Ok(matches!(inserted, TryInsertResult::Inserted(1)))
}
