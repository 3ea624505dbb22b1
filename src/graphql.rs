//! The GraphQL schema: roots, limits (depth, complexity), error codes, persisted queries.

pub mod accounts;
pub mod appointments;
pub mod args;
pub mod audit;
pub mod cases;
pub mod chat;
pub mod context;
pub mod cost;
pub mod enums;
pub mod errors;
pub mod input;
pub mod limits;
pub mod loaders;
pub mod organizations;
pub mod pagination;
pub mod patients;
pub mod persisted;
pub mod provider_ops;
pub mod redact;
pub mod related;
pub mod roots;
pub mod subscriptions;

use async_graphql::{Schema, SchemaBuilder};

use crate::{config::GraphqlConfig, services::Services};
pub use roots::{Mutation, Query, Subscription};

/// The executable schema.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Depth allowed inside introspection (`__schema`, `__type`): GraphiQL's own schema query
/// needs 15.
pub const INTROSPECTION_DEPTH: usize = 20;

fn builder(
    config: &GraphqlConfig,
    cost: cost::CostLimits,
) -> SchemaBuilder<Query, Mutation, Subscription> {
    let mut builder = Schema::build(Query::default(), Mutation::default(), Subscription)
        // First, so that nothing walks a document before its cost is known.
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
    builder(config, cost).data(services).finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    let config = GraphqlConfig {
        max_depth: 12,
        max_complexity: 2000,
        max_body_bytes: 1 << 20,
        introspection: true,
        apq_cache_size: 1,
        ws_init_timeout: std::time::Duration::from_secs(10),
        ws_keepalive: std::time::Duration::from_secs(15),
        ws_idle_timeout: std::time::Duration::from_secs(60),
    };
    builder(&config, cost::CostLimits::default()).finish().sdl()
}
