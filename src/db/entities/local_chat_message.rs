//! The `local_chat_messages` table.

use sea_orm::entity::prelude::*;

/// A message in a local chat channel.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "local_chat_messages")]
pub struct Model {
    /// The `seq` column.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The `id` column.
    pub id: String,
    /// The `cid` column.
    pub cid: String,
    /// The `user_id` column.
    pub user_id: Option<String>,
    /// The `text` column.
    pub text: String,
    /// The `system` column.
    pub system: bool,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
