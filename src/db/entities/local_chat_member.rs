//! The `local_chat_members` table.

use sea_orm::entity::prelude::*;

/// A member of a local chat channel.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "local_chat_members")]
pub struct Model {
    /// The `cid` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cid: String,
    /// The `user_id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// The `last_read_seq` column.
    pub last_read_seq: i64,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
