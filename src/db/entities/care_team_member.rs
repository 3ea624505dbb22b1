//! The `care_team_members` table.

use sea_orm::entity::prelude::*;

/// A care team member.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "care_team_members")]
pub struct Model {
    /// The `id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The `care_team_id` column.
    pub care_team_id: String,
    /// The `user_id` column.
    pub user_id: Option<String>,
    /// The `phone` column.
    pub phone: Option<String>,
    /// The `display_name` column.
    pub display_name: Option<String>,
    /// The `role` column.
    pub role: String,
    /// The `member_org_id` column.
    pub member_org_id: Option<String>,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
