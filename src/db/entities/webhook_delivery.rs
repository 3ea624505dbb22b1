//! The `webhook_deliveries` table.

use sea_orm::entity::prelude::*;

/// One webhook delivery from a chat provider.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// `stream` or `sendbird`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub provider: String,
    /// The provider's delivery id, or `sha256:<hex>` of the body.
    #[sea_orm(primary_key, auto_increment = false)]
    pub delivery_id: String,
    /// The verified JSON body.
    pub body: String,
    /// When it arrived.
    pub received_at: DateTimeUtc,
    /// Until when a processor holds it (null: nobody).
    pub claimed_until: Option<DateTimeUtc>,
    /// When it was processed (null until then).
    pub processed_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
