//! The `practitioner_availability` table.

use sea_orm::entity::prelude::*;

/// A practitioner's weekly schedule in one organisation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "practitioner_availability")]
pub struct Model {
    /// The `org_id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: String,
    /// The `practitioner_id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub practitioner_id: String,
    /// The `timezone` column (an IANA name).
    pub timezone: String,
    /// The `slot_minutes` column.
    pub slot_minutes: i32,
    /// The `weekly` column: the intervals as JSON text.
    pub weekly: String,
    /// The `updated_at` column.
    pub updated_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
