//! GraphQL for admins: chat-provider operations that failed for good, and retrying them.

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{
    context::{services, viewer},
    errors::GqlResult,
};
use crate::{domain::OrgId, outbox::Row};

/// A side effect at the chat provider that caregraph could not deliver.
pub struct ProviderOperation(pub Row);

#[Object]
impl ProviderOperation {
    /// Id (for `retryProviderOperation`).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// What it does, e.g. `create_channel`.
    async fn operation(&self) -> &str {
        self.0.operation
    }
    /// Its idempotency key.
    async fn key(&self) -> &str {
        &self.0.key
    }
    /// `pending`, `done` or `dead`.
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// Deliveries tried.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// The provider's last answer (never user content).
    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }
    /// When it was written.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it was last tried.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// Admin queries about provider operations.
#[derive(Default)]
pub struct ProviderOpsQuery;

#[Object]
impl ProviderOpsQuery {
    /// The organisation's chat-provider operations that failed for good (OWNER/ADMIN), newest
    /// first (limit 1 to 200, default 50).
    async fn failed_provider_operations(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        limit: Option<i32>,
    ) -> GqlResult<Vec<ProviderOperation>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let rows = services(ctx)
            .provider_ops
            .failed(viewer(ctx), org, limit)
            .await?;
        Ok(rows.into_iter().map(ProviderOperation).collect())
    }
}

/// Admin mutations about provider operations.
#[derive(Default)]
pub struct ProviderOpsMutation;

#[Object]
impl ProviderOpsMutation {
    /// Queues a failed operation again (OWNER/ADMIN).
    async fn retry_provider_operation(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        id: ID,
    ) -> GqlResult<ProviderOperation> {
        let org = OrgId::parse(&org_id, "orgId")?;
        Ok(ProviderOperation(
            services(ctx)
                .provider_ops
                .retry(viewer(ctx), org, &id)
                .await?,
        ))
    }
}
