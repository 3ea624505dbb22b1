//! The `outbound_mails` table.

use sea_orm::entity::prelude::*;

/// One mail to send (the queue), or kept for the operator (the local outbox).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbound_mails")]
pub struct Model {
    /// The `id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The `org_id` column.
    pub org_id: Option<String>,
    /// The `invitation_id` column (the invitation the mail carries).
    pub invitation_id: Option<String>,
    /// The `to_address` column.
    pub to_address: String,
    /// The `subject` column.
    pub subject: String,
    /// The `body` column: cleared once the mail left, or once it is no longer needed.
    pub body: Option<String>,
    /// The `status` column (`pending`, `sent`, `kept`, `dead`, `withdrawn`).
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
    /// The `sent_at` column.
    pub sent_at: Option<DateTimeUtc>,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
