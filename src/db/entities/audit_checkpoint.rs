//! The `audit_checkpoints` table: what a retention sweep pruned from the front of a chain.

use sea_orm::entity::prelude::*;

/// A signed statement that a chain's records up to `through_index` ended in `last_hash`, so the
/// remaining records still verify after the prefix is deleted.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_checkpoints")]
pub struct Model {
    /// The chain.
    #[sea_orm(primary_key, auto_increment = false)]
    pub chain: String,
    /// The last pruned record's index.
    #[sea_orm(primary_key, auto_increment = false)]
    pub through_index: i64,
    /// The last pruned record's hash (hex).
    pub last_hash: String,
    /// Records before this instant were pruned.
    pub pruned_before: DateTimeUtc,
    /// When the sweep ran.
    pub created_at: DateTimeUtc,
    /// HMAC-SHA256 (hex) over the other columns with the audit key.
    pub signature: String,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
