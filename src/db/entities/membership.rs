//! The `memberships` table: a user's role in an organisation.

use sea_orm::entity::prelude::*;

model! {
    /// One membership.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "memberships")]
    pub struct Model {
        /// The organisation.
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_id: String,
        /// The member.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
        /// `OWNER`, `ADMIN`, `PRACTITIONER` or `STAFF`.
        pub role: String,
        /// Job title, e.g. "Veterinary technician".
        pub title: Option<String>,
        /// Inactive members keep their history but take part in nothing new.
        pub active: bool,
        /// May read and export the organisation's audit trail (owners always may).
        pub auditor: bool,
        /// When the membership began.
        pub created_at: DateTimeUtc,
        /// Lowercased given name (typeahead prefix search).
        pub search_given: String,
        /// Lowercased family name (typeahead prefix search).
        pub search_family: String,
        /// Lowercased display name (typeahead prefix search and list order).
        pub search_display: String,
        /// Lowercased names and email (typeahead substring search).
        pub search_text: String,
        /// A stable integer key of the substring index (SQLite's FTS5 table).
        pub search_id: i64,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
