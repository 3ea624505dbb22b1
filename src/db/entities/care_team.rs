//! The `care_teams` table.

use sea_orm::entity::prelude::*;

model! {
    /// A care team.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "care_teams")]
    pub struct Model {
        /// The `id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The `patient_id` column.
        pub patient_id: String,
        /// The `org_id` column.
        pub org_id: String,
        /// The `name` column.
        pub name: String,
        /// The `created_at` column.
        pub created_at: DateTimeUtc,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
