//! The `organizations` table.

use sea_orm::entity::prelude::*;

model! {
    /// One organisation (a clinic, practice or case team).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "organizations")]
    pub struct Model {
        /// UUID text.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Display name.
        pub name: String,
        /// Unique slug.
        pub slug: String,
        /// Whether members may open network chats with other organisations.
        pub cross_org_messaging: bool,
        /// Minutes before an appointment that its chat opens (null: the deployment's default).
        pub chat_activation_minutes: Option<i32>,
        /// When the organisation was created.
        pub created_at: DateTimeUtc,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
