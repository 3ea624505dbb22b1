//! The `patients` table.

use sea_orm::entity::prelude::*;

model! {
    /// One patient.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "patients")]
    pub struct Model {
        /// The `id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The `org_id` column.
        pub org_id: String,
        /// The `name` column.
        pub name: String,
        /// The `species` column.
        pub species: Option<String>,
        /// The `risk_level` column.
        pub risk_level: String,
        /// The `date_of_birth` column.
        pub date_of_birth: Option<Date>,
        /// The `search_name` column.
        pub search_name: String,
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
