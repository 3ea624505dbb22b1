//! The `compliance_group_members` table.

use sea_orm::entity::prelude::*;

/// An organisation in a compliance group.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "compliance_group_members")]
pub struct Model {
    /// The `group_id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub group_id: String,
    /// The `org_id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: String,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
