//! The GraphQL schema: roots, limits (depth, complexity), error codes, persisted queries.

pub mod accounts;
pub mod appointments;
pub mod args;
pub mod audit;
pub mod batch;
pub mod booking;
pub mod cases;
pub mod chat;
pub mod context;
pub mod cost;
pub mod documents;
pub mod engine;
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

fn builder(config: &GraphqlConfig) -> SchemaBuilder<Query, Mutation, Subscription> {
    // No extensions: the checks and observation around each operation are the gate's
    // (`engine::Gate`), outside the engine's per-field path.
    let mut builder = Schema::build(Query::default(), Mutation::default(), Subscription)
        .limit_complexity(config.max_complexity)
        // An absolute cap for everything, introspection included; the data depth limit is the
        // gate's (`limits::check_depth`), which measures introspection separately.
        .limit_depth(config.max_depth.max(INTROSPECTION_DEPTH))
        .limit_recursive_depth(32)
        .limit_directives(8);
    if !config.introspection {
        builder = builder.disable_introspection().disable_suggestions();
    }
    builder
}

/// Builds the engine: the schema with the services as schema data, behind its gate.
pub fn build(
    services: Arc<Services>,
    config: &GraphqlConfig,
    cost: cost::CostLimits,
) -> engine::Engine {
    let gate = engine::Gate::new(config, cost, services.metrics.clone());
    let schema = builder(config).data(services.clone()).finish();
    engine::Engine::new(schema, gate, services)
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
    builder(&offline_config()).finish().sdl()
}

/// The introspection result (`{"data": {"__schema": …}}`) that GraphQL Codegen and Apollo
/// tooling read, with introspection on whatever `CAREGRAPH_ENV` says.
pub async fn introspection_json() -> anyhow::Result<String> {
    let schema = builder(&offline_config()).finish();
    let response = schema.execute(offline::INTROSPECTION_QUERY).await;
    if !response.errors.is_empty() {
        let messages: Vec<String> = response.errors.into_iter().map(|e| e.message).collect();
        anyhow::bail!("the introspection query failed: {}", messages.join("; "));
    }
    Ok(serde_json::to_string_pretty(&response)?)
}

/// A schema that validates documents with the server's rules and executes nothing (see
/// [`offline::ValidateOnly`]), and the gate that checks them with the server's limits.
pub fn validator(config: &GraphqlConfig, cost: cost::CostLimits) -> (AppSchema, engine::Gate) {
    let schema = builder(config).extension(offline::ValidateOnly).finish();
    (schema, engine::Gate::new(config, cost, offline_metrics()))
}
