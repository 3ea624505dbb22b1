//! The `invitations` table.

use sea_orm::entity::prelude::*;

model! {
    /// An invitation of a staff member or a guardian: pending until accepted, revoked or expired.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "invitations")]
    pub struct Model {
        /// The `id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The `kind` column: `MEMBER` or `GUARDIAN`.
        pub kind: String,
        /// The `org_id` column.
        pub org_id: String,
        /// The `patient_id` column (guardian invitations).
        pub patient_id: Option<String>,
        /// The `email` column (normalised).
        pub email: String,
        /// The `given_name` column.
        pub given_name: String,
        /// The `family_name` column.
        pub family_name: String,
        /// The `role` column (member invitations).
        pub role: Option<String>,
        /// The `title` column (member invitations).
        pub title: Option<String>,
        /// The `relationship` column (guardian invitations).
        pub relationship: Option<String>,
        /// The `can_chat` column (guardian invitations).
        pub can_chat: bool,
        /// The `token_hash` column: SHA-256 of the token, hex (the token itself is never stored).
        pub token_hash: String,
        /// The `invited_by` column.
        pub invited_by: Option<String>,
        /// The `created_at` column.
        pub created_at: DateTimeUtc,
        /// The `expires_at` column.
        pub expires_at: DateTimeUtc,
        /// The `accepted_at` column.
        pub accepted_at: Option<DateTimeUtc>,
        /// The `accepted_by` column.
        pub accepted_by: Option<String>,
        /// The `revoked_at` column.
        pub revoked_at: Option<DateTimeUtc>,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
