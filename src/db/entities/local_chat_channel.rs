//! The `local_chat_channels` table.

use sea_orm::entity::prelude::*;

/// A local chat channel.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "local_chat_channels")]
pub struct Model {
    /// The `cid` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cid: String,
    /// The `channel_type` column.
    pub channel_type: String,
    /// The `channel_id` column.
    pub channel_id: String,
    /// The `created_by` column.
    pub created_by: String,
    /// The `name` column.
    pub name: Option<String>,
    /// The `image` column.
    pub image: Option<String>,
    /// The `metadata` column.
    pub metadata: String,
    /// The `frozen` column.
    pub frozen: bool,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
    /// The `updated_at` column.
    pub updated_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
