//! The `booking_locks` table.

use sea_orm::entity::prelude::*;

/// The lock row of one person's bookings.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "booking_locks")]
pub struct Model {
    /// The `user_id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// The `version` column: bumped by each booking transaction that takes the lock.
    pub version: i64,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
