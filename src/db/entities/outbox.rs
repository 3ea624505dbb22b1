//! The `outbox` table.

use sea_orm::entity::prelude::*;

/// One provider side effect waiting for delivery.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// The `seq` column.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The `id` column.
    pub id: String,
    /// The `idempotency_key` column.
    pub idempotency_key: String,
    /// The `org_id` column.
    pub org_id: Option<String>,
    /// The `partition_key` column.
    pub partition_key: String,
    /// The `operation` column.
    pub operation: String,
    /// The `status` column.
    pub status: String,
    /// The `attempts` column.
    pub attempts: i32,
    /// The `next_attempt_at` column.
    pub next_attempt_at: DateTimeUtc,
    /// The `locked_until` column.
    pub locked_until: Option<DateTimeUtc>,
    /// The `last_error` column.
    pub last_error: Option<String>,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
    /// The `updated_at` column.
    pub updated_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
