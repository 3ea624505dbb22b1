//! Subscriptions. `serverTime` is a placeholder that proves the WebSocket transport until the
//! chat-session subscriptions land.

use std::time::Duration;

use async_graphql::{Context, Subscription};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio_stream::{StreamExt, wrappers::IntervalStream};

use super::context::viewer;
use crate::error::AppError;

/// Subscription roots.
#[derive(Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// The server's clock, every `everyMs` milliseconds (100 to 60000). Signed-in callers only.
    async fn server_time(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1000)] every_ms: i32,
    ) -> async_graphql::Result<impl Stream<Item = DateTime<Utc>>> {
        viewer(ctx).user()?;
        if !(100..=60_000).contains(&every_ms) {
            return Err(AppError::bad_input("everyMs", "must be between 100 and 60000").into());
        }
        let period = Duration::from_millis(u64::try_from(every_ms).unwrap_or(1000));
        Ok(IntervalStream::new(tokio::time::interval(period)).map(|_| Utc::now()))
    }
}
