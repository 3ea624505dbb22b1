//! The `chat_session_members` table.

use sea_orm::entity::prelude::*;

model! {
    /// A member of a chat session.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "chat_session_members")]
    pub struct Model {
        /// The `session_id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub session_id: String,
        /// The `user_id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// The `role` column.
        pub role: String,
        /// The `created_at` column.
        pub created_at: DateTimeUtc,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
