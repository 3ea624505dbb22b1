//! The `users` table.

use sea_orm::entity::prelude::*;

model! {
    /// One person.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        /// UUID text.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// Lowercased, unique.
        pub email: String,
        /// The identity provider's subject, when it owns the id.
        pub external_id: Option<String>,
        /// Given name.
        pub given_name: String,
        /// Family name.
        pub family_name: String,
        /// Name shown to others.
        pub display_name: String,
        /// Avatar image URL.
        pub avatar_url: Option<String>,
        /// argon2 PHC string for built-in accounts.
        pub password_hash: Option<String>,
        /// When the user was created.
        pub created_at: DateTimeUtc,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
