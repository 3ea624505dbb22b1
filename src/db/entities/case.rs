//! The `cases` table.

use sea_orm::entity::prelude::*;

model! {
    /// A case.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cases")]
    pub struct Model {
        /// The `id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The `org_id` column.
        pub org_id: String,
        /// The `reference` column.
        pub reference: String,
        /// The `kind` column.
        pub kind: String,
        /// The `title` column.
        pub title: String,
        /// The `status` column.
        pub status: String,
        /// The `patient_id` column.
        pub patient_id: Option<String>,
        /// The `created_by` column.
        pub created_by: String,
        /// The `created_at` column.
        pub created_at: DateTimeUtc,
        /// The `closed_at` column.
        pub closed_at: Option<DateTimeUtc>,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
