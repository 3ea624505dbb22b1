//! The `compliance_group_invitations` table.

use sea_orm::entity::prelude::*;

/// An organisation invited to a compliance group that has not accepted yet.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "compliance_group_invitations")]
pub struct Model {
    /// The `group_id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub group_id: String,
    /// The `org_id` column (no foreign key: an unknown id is an invitation nobody accepts).
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: String,
    /// The `invited_at` column.
    pub invited_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
