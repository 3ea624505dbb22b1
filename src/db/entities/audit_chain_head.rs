//! The `audit_chain_heads` table: the last sealed record of each audit chain.

use sea_orm::entity::prelude::*;

/// The head of one chain; sealing moves it forward with a compare-and-set on `last_index`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_chain_heads")]
pub struct Model {
    /// The chain (an organisation's id, or `system`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub chain: String,
    /// The index of the last sealed record.
    pub last_index: i64,
    /// Its hash (hex).
    pub last_hash: String,
    /// When the chain was last sealed.
    pub sealed_at: DateTimeUtc,
    /// HMAC-SHA256 (hex) of the chain, `last_index` and `last_hash` with the audit key (none on
    /// heads sealed before heads were signed).
    pub signature: Option<String>,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
