//! The webhook deliveries repository: recording a delivery once, and finding what is left to
//! process.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::webhook_delivery as delivery;
use crate::error::AppResult;

/// Records a delivery; `false` when it was already recorded (a retry).
pub async fn record(
    db: &impl super::Source,
    provider: &str,
    delivery_id: &str,
    body: &str,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let row = delivery::ActiveModel {
        provider: Set(provider.to_owned()),
        delivery_id: Set(delivery_id.to_owned()),
        body: Set(body.to_owned()),
        received_at: Set(at),
        claimed_until: Set(None),
        processed_at: Set(None),
    };
    let key = [delivery::Column::Provider, delivery::Column::DeliveryId];
    Ok(super::insert_new(db, [row], key).await? == 1)
}

/// Claims an unprocessed delivery until `until` (one processor at a time: a claim that expired
/// may be taken again); whether this caller holds it now.
pub async fn claim(
    db: &impl super::Source,
    provider: &str,
    delivery_id: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> AppResult<bool> {
    let update = delivery::Entity::update_many()
        .col_expr(
            delivery::Column::ClaimedUntil,
            sea_orm::sea_query::Expr::value(until),
        )
        .filter(delivery::Column::Provider.eq(provider))
        .filter(delivery::Column::DeliveryId.eq(delivery_id))
        .filter(delivery::Column::ProcessedAt.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(delivery::Column::ClaimedUntil.is_null())
                .add(delivery::Column::ClaimedUntil.lt(now)),
        );
    Ok(super::update_one(db, update).await?)
}

/// Marks a delivery processed.
pub async fn processed(
    db: &impl super::Source,
    provider: &str,
    delivery_id: &str,
    at: DateTime<Utc>,
) -> AppResult<()> {
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::ProcessedAt,
            sea_orm::sea_query::Expr::value(at),
        )
        .filter(delivery::Column::Provider.eq(provider))
        .filter(delivery::Column::DeliveryId.eq(delivery_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Deliveries received by `before`, not processed yet and not held by a live claim, oldest
/// first.
pub async fn unprocessed(
    db: &impl super::Source,
    before: DateTime<Utc>,
    limit: u64,
) -> AppResult<Vec<(String, String, String)>> {
    Ok(delivery::Entity::find()
        .filter(delivery::Column::ProcessedAt.is_null())
        .filter(delivery::Column::ReceivedAt.lte(before))
        .filter(
            sea_orm::Condition::any()
                .add(delivery::Column::ClaimedUntil.is_null())
                .add(delivery::Column::ClaimedUntil.lt(before)),
        )
        .order_by_asc(delivery::Column::ReceivedAt)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|d| (d.provider, d.delivery_id, d.body))
        .collect())
}

/// Forgets processed deliveries received before `before` (providers retry for minutes, not
/// weeks).
pub async fn prune(db: &impl super::Source, before: DateTime<Utc>) -> AppResult<u64> {
    Ok(delivery::Entity::delete_many()
        .filter(delivery::Column::ProcessedAt.is_not_null())
        .filter(delivery::Column::ReceivedAt.lt(before))
        .exec(db)
        .await?
        .rows_affected)
}
