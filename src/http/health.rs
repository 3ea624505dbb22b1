//! `/healthz` (the process is up), `/readyz` (each dependency, as JSON) and `/metrics`
//! (Prometheus text; behind a bearer token when `CAREGRAPH_METRICS_TOKEN` is set).

use axum::{Json, extract::State, http::StatusCode};

use super::AppState;
use crate::{db, telemetry::metrics::BreakerState};

/// 200 while the process serves requests.
pub async fn healthz() -> &'static str {
    "ok"
}

/// What `/readyz` says about one dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Check {
    /// It answers.
    Up,
    /// It does not answer.
    Down,
    /// Not configured (Redis without `CAREGRAPH_REDIS_URL`).
    Disabled,
}

/// The readiness report: `ready`, `degraded` (serving, but a dependency whose loss does not stop
/// this replica is down) or `unavailable` / `shutting_down` (503: take it out of rotation).
#[derive(Debug, serde::Serialize)]
struct Readiness {
    status: &'static str,
    checks: Checks,
}

/// One entry per dependency.
#[derive(Debug, serde::Serialize)]
struct Checks {
    database: Check,
    redis: Check,
    /// Each chat provider's circuit breaker (none for the local provider).
    providers: std::collections::BTreeMap<&'static str, BreakerState>,
}

/// 200 while the database answers (`degraded` when Redis does not, as events then stay on this
/// replica, or when a provider's breaker is open, as side effects then wait in the outbox: the
/// replica still serves), 503 when it does not or while shutting down; a JSON body says which
/// dependency is down.
pub async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let redis = match state.services.events.redis_up() {
        None => Check::Disabled,
        Some(true) => Check::Up,
        Some(false) => Check::Down,
    };
    let database = if db::ping(&state.services.db).await {
        Check::Up
    } else {
        Check::Down
    };
    let providers: std::collections::BTreeMap<_, _> = state
        .services
        .metrics
        .breaker_states()
        .into_iter()
        .collect();
    let provider_down = providers.values().any(|b| *b != BreakerState::Closed);
    let (code, status) = if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if database == Check::Down {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else if redis == Check::Down || provider_down {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ready")
    };
    (
        code,
        Json(Readiness {
            status,
            checks: Checks {
                database,
                redis,
                providers,
            },
        }),
    )
        .into_response()
}

/// Prometheus metrics (the series are listed in README "Operations").
pub async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Some(expected) = &state.config.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let ok: bool = subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            secrecy::ExposeSecret::expose_secret(expected).as_bytes(),
        )
        .into();
        if !ok {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let metrics = &state.services.metrics;
    metrics.refresh(&state.services).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}
