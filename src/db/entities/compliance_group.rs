//! The `compliance_groups` table.

use sea_orm::entity::prelude::*;

/// A compliance group.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "compliance_groups")]
pub struct Model {
    /// The `id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The `name` column.
    pub name: String,
    /// The `owner_org_id` column.
    pub owner_org_id: String,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
