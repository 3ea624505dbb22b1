//! The `guardians` table.

use sea_orm::entity::prelude::*;

model! {
    /// A guardian of a patient.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "guardians")]
    pub struct Model {
        /// The `patient_id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub patient_id: String,
        /// The `user_id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// The `relationship` column.
        pub relationship: String,
        /// The `can_chat` column.
        pub can_chat: bool,
        /// The `created_at` column.
        pub created_at: DateTimeUtc,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
