//! The GraphQL schema: roots, limits (depth, complexity), error codes, persisted queries.

pub mod accounts;
pub mod appointments;
pub mod args;
pub mod audit;
pub mod audit_scope;
pub mod booking;
pub mod cases;
pub mod chat;
pub mod context;
pub mod cost;
pub mod enums;
pub mod errors;
pub mod input;
pub mod invitations;
pub mod limits;
pub mod loaders;
pub mod observe;
pub mod offline;
pub mod organizations;
pub mod pagination;
pub mod patients;
pub mod persisted;
pub mod provider_ops;
pub mod redact;
pub mod related;
pub mod roots;
pub mod sms;
pub mod subscriptions;
pub mod trusted;

use std::sync::Arc;

use async_graphql::{Schema, SchemaBuilder};

use crate::{config::GraphqlConfig, services::Services, telemetry::metrics::Metrics};
pub use roots::{Mutation, Query, Subscription};

/// The executable schema.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Depth allowed inside introspection (`__schema`, `__type`): GraphiQL's own schema query
/// needs 15.
pub const INTROSPECTION_DEPTH: usize = 20;

fn builder(
    config: &GraphqlConfig,
    cost: cost::CostLimits,
    metrics: Arc<Metrics>,
) -> SchemaBuilder<Query, Mutation, Subscription> {
    let mut builder = Schema::build(Query::default(), Mutation::default(), Subscription)
        // Outermost: it reads the document only once the cost limit below has passed it.
        .extension(observe::Observe { metrics })
        // First to walk a document, so that nothing walks one before its cost is known.
        .extension(cost::QueryCost { limits: cost })
        .limit_complexity(config.max_complexity)
        // An absolute cap for everything, introspection included; the data depth limit is the
        // `limits::DepthLimit` extension, which measures introspection separately.
        .limit_depth(config.max_depth.max(INTROSPECTION_DEPTH))
        .limit_recursive_depth(32)
        .limit_directives(8)
        .extension(limits::DepthLimit {
            max_depth: config.max_depth,
        })
        .extension(limits::ErrorCodes)
        .extension(audit_scope::AuditOperationName)
        .extension(input::TextArguments {
            max_bytes: cost.max_text_bytes,
        });
    if !config.introspection {
        builder = builder
            .disable_introspection()
            .disable_suggestions()
            .extension(redact::RedactArgumentNames);
    }
    builder
}

/// Builds the schema with the services as schema data.
pub fn build(services: Services, config: &GraphqlConfig, cost: cost::CostLimits) -> AppSchema {
    let metrics = services.metrics.clone();
    builder(config, cost, metrics).data(services).finish()
}

/// The configuration of the schema as committed and as client tooling sees it: the default
/// limits, introspection on.
fn offline_config() -> GraphqlConfig {
    GraphqlConfig {
        max_depth: 12,
        max_complexity: 2000,
        max_body_bytes: 1 << 20,
        introspection: true,
        apq_cache_size: 1,
        ws_init_timeout: std::time::Duration::from_secs(10),
        ws_keepalive: std::time::Duration::from_secs(15),
        ws_idle_timeout: std::time::Duration::from_secs(60),
        trusted_documents: None,
        trusted_documents_only: false,
    }
}

/// Metrics nobody scrapes, for the schemas that serve no requests.
fn offline_metrics() -> Arc<Metrics> {
    Metrics::new(Default::default())
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    builder(
        &offline_config(),
        cost::CostLimits::default(),
        offline_metrics(),
    )
    .finish()
    .sdl()
}

/// The introspection result (`{"data": {"__schema": …}}`) that GraphQL Codegen and Apollo
/// tooling read, with introspection on whatever `CAREGRAPH_ENV` says.
pub async fn introspection_json() -> anyhow::Result<String> {
    let schema = builder(
        &offline_config(),
        cost::CostLimits::default(),
        offline_metrics(),
    )
    .finish();
    let response = schema.execute(offline::INTROSPECTION_QUERY).await;
    if !response.errors.is_empty() {
        let messages: Vec<String> = response.errors.into_iter().map(|e| e.message).collect();
        anyhow::bail!("the introspection query failed: {}", messages.join("; "));
    }
    Ok(serde_json::to_string_pretty(&response)?)
}

/// A schema that validates documents with the server's rules and limits and executes nothing
/// (see [`offline::ValidateOnly`]).
pub fn validator(config: &GraphqlConfig, cost: cost::CostLimits) -> AppSchema {
    builder(config, cost, offline_metrics())
        .extension(offline::ValidateOnly)
        .finish()
}
