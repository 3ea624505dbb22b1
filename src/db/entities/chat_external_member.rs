//! The `chat_external_members` table.

use sea_orm::entity::prelude::*;

/// A person outside caregraph who takes part in a chat session by SMS.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chat_external_members")]
pub struct Model {
    /// The `id` column (also the person's user id at the chat provider).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The `session_id` column.
    pub session_id: String,
    /// The `name` column.
    pub name: String,
    /// The `phone_number` column (E.164).
    pub phone_number: String,
    /// The `opted_out` column.
    pub opted_out: bool,
    /// The `care_team_member_id` column: the phone-only care-team member this one follows.
    pub care_team_member_id: Option<String>,
    /// The `last_relayed_at` column.
    pub last_relayed_at: Option<DateTimeUtc>,
    /// The `created_at` column.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
