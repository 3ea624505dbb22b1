//! The `audit_export_links` table: the nonces of export download links already used.

use sea_orm::entity::prelude::*;

/// A used download link: its nonce, kept until the link would have expired anyway.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_export_links")]
pub struct Model {
    /// The link's nonce (32 hex digits).
    #[sea_orm(primary_key, auto_increment = false)]
    pub nonce: String,
    /// When the link expires (after which the row may go).
    pub expires_at: DateTimeUtc,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
