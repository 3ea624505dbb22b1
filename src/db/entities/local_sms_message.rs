//! The `local_sms_messages` table.

use sea_orm::entity::prelude::*;

/// An SMS the local gateway recorded instead of sending.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "local_sms_messages")]
pub struct Model {
    /// The `id` column (the message's sid).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The `reference` column: caregraph's id of the recipient (an external member).
    pub reference: String,
    /// The `to_number` column.
    pub to_number: String,
    /// The `from_number` column.
    pub from_number: String,
    /// The `body` column.
    pub body: String,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
