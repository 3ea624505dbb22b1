//! The `chat_sessions` table.

use sea_orm::entity::prelude::*;

model! {
    /// One chat session.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "chat_sessions")]
    pub struct Model {
        /// The `id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The `org_id` column.
        pub org_id: String,
        /// The `counterpart_org_id` column.
        pub counterpart_org_id: Option<String>,
        /// The `category` column.
        pub category: String,
        /// The `natural_key` column.
        pub natural_key: String,
        /// The `channel_type` column.
        pub channel_type: String,
        /// The `channel_id` column.
        pub channel_id: String,
        /// The `title` column.
        pub title: Option<String>,
        /// The `image_url` column.
        pub image_url: Option<String>,
        /// The `read_only` column.
        pub read_only: bool,
        /// The `is_group` column.
        pub is_group: bool,
        /// The `created_by` column.
        pub created_by: String,
        /// The `appointment_id` column.
        pub appointment_id: Option<String>,
        /// The `case_id` column.
        pub case_id: Option<String>,
        /// The `patient_id` column.
        pub patient_id: Option<String>,
        /// The `care_team_id` column.
        pub care_team_id: Option<String>,
        /// The `allowed_from` column.
        pub allowed_from: Option<DateTimeUtc>,
        /// The `allowed_until` column.
        pub allowed_until: Option<DateTimeUtc>,
        /// The `status` column.
        pub status: String,
        /// The `closed_at` column.
        pub closed_at: Option<DateTimeUtc>,
        /// The `closed_by` column.
        pub closed_by: Option<String>,
        /// The `close_reason` column.
        pub close_reason: Option<String>,
        /// The `last_activity_at` column.
        pub last_activity_at: DateTimeUtc,
        /// The `created_at` column.
        pub created_at: DateTimeUtc,
        /// The `updated_at` column.
        pub updated_at: DateTimeUtc,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
