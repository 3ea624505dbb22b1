//! The HTTP surface: router and layers. `/graphql` (GET, POST and WebSocket upgrade),
//! `/graphiql`, `/exports/audit/{token}`, `/accept-invitation`, `/healthz`, `/readyz`,
//! `/metrics`, and the providers' webhooks.

pub mod body;
pub mod connections;
pub mod exports;
pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod invitation;
pub mod webhooks;
pub mod ws;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{MatchedPath, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    config::Config,
    error::AppError,
    graphql::{engine::Engine, persisted::PersistedQueries},
    services::Services,
    telemetry::metrics::{HttpLabels, Metrics, method_label},
};

/// What every handler shares, behind one `Arc`: axum clones the state for every extractor and
/// middleware that reads it (13 times per GraphQL request), and a clone of the fields
/// themselves touched every `Arc` among them (0.7% of the dashboard query's instructions,
/// callgrind, when `Services` was still a field by value).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state holding `shared`.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// A copy of the state with `change` made to its fields (the original is unchanged).
    pub fn modified(&self, change: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Shared::clone(&self.0);
        change(&mut shared);
        Self::new(shared)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    /// The executable schema behind its gate.
    pub graphql: Arc<Engine>,
    /// The services (the same `Arc` the GraphQL engine holds).
    pub services: Arc<Services>,
    /// The configuration.
    pub config: Arc<Config>,
    /// Apollo persisted queries.
    pub persisted: Arc<PersistedQueries>,
    /// Cancelled when the process shuts down; WebSockets close cleanly then.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket connections, so shutdown can wait for them to close.
    pub sockets: TaskTracker,
}

/// The router with every route and layer.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.graphql.max_body_bytes;
    let request_timeout = state.config.security.request_timeout;
    let mut routes = Router::new();
    // `CAREGRAPH_GRAPHIQL=false` and `CAREGRAPH_METRICS=false` remove these (404).
    if state.config.security.graphiql {
        routes = routes
            .route("/graphiql", get(graphiql::page))
            .route("/graphiql/assets/{name}", get(graphiql::asset));
    }
    if state.config.security.metrics {
        routes = routes.route("/metrics", get(health::metrics));
    }
    routes
        .route("/graphql", get(graphql::get_or_upgrade).post(graphql::post))
        .route("/exports/audit/{token}", get(exports::audit))
        .route("/accept-invitation", get(invitation::page))
        .route("/accept-invitation/accept.js", get(invitation::script))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/webhooks/stream", post(webhooks::stream))
        .route("/webhooks/sendbird", post(webhooks::sendbird))
        .route("/webhooks/twilio", post(webhooks::twilio))
        // Inside the router, where the matched route's pattern is known.
        .route_layer(axum::middleware::from_fn_with_state(
            state.services.metrics.clone(),
            measure,
        ))
        .with_state(state)
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        // The span names the path only: a query string can hold a search text or variables,
        // and an export link's path is its credential.
        .layer(TraceLayer::new_for_http().make_span_with(
            |request: &axum::http::Request<axum::body::Body>| {
                let path = request.uri().path();
                let path = if path.starts_with("/exports/audit/") {
                    "/exports/audit/{token}"
                } else {
                    path
                };
                tracing::debug_span!("request", method = %request.method(), path = %path)
            },
        ))
        // Every request has an id (a proxy's `x-request-id` is kept, else a new UUID), which the
        // answer carries and audit records name.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| {
            AppError::internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        // Outermost, so that it sees the answers of the limit and timeout layers too.
        .layer(axum::middleware::map_response(graphql_bodies_for_limits))
}

/// Records each request's duration by method, route pattern and status.
async fn measure(
    State(metrics): State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics
        .http_duration
        .get_or_create(&HttpLabels {
            http_request_method: method,
            http_route: route,
            http_response_status_code: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Gives the plain answers of the body-size and timeout layers (413, 408) a GraphQL error body
/// with `extensions.code`, like every other error.
async fn graphql_bodies_for_limits(response: Response) -> Response {
    let (code, message) = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ("BAD_USER_INPUT", "the request body is too large"),
        StatusCode::REQUEST_TIMEOUT => ("INTERNAL", "the request took too long"),
        _ => return response,
    };
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        return response;
    }
    let body =
        serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (response.status(), Json(body)).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log_cause();
        let status = match self.code() {
            crate::error::ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            crate::error::ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            crate::error::ErrorCode::NotFound => StatusCode::NOT_FOUND,
            crate::error::ErrorCode::BadUserInput => StatusCode::BAD_REQUEST,
            crate::error::ErrorCode::Conflict => StatusCode::CONFLICT,
            crate::error::ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            crate::error::ErrorCode::ProviderUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            crate::error::ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        let body = serde_json::json!({
            "errors": [{
                "message": self.message(),
                "extensions": { "code": self.code().as_str() },
            }]
        });
        let mut response = (status, Json(body)).into_response();
        if let AppError::RateLimited {
            retry_after_seconds,
        } = &self
            && let Ok(v) = retry_after_seconds.to_string().parse()
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
