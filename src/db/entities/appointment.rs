//! The `appointments` table.

use sea_orm::entity::prelude::*;

model! {
    /// An appointment.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "appointments")]
    pub struct Model {
        /// The `id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The `org_id` column.
        pub org_id: String,
        /// The `patient_id` column.
        pub patient_id: String,
        /// The `client_id` column.
        pub client_id: String,
        /// The `practitioner_id` column.
        pub practitioner_id: String,
        /// The `starts_at` column.
        pub starts_at: DateTimeUtc,
        /// The `ends_at` column.
        pub ends_at: DateTimeUtc,
        /// The `duration_minutes` column.
        pub duration_minutes: i32,
        /// The `session_type` column.
        pub session_type: String,
        /// The `status` column.
        pub status: String,
        /// The `reason` column.
        pub reason: Option<String>,
        /// The `external_ref` column.
        pub external_ref: Option<String>,
        /// The `activation_minutes` column.
        pub activation_minutes: Option<i32>,
        /// The `room_name` column.
        pub room_name: Option<String>,
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
