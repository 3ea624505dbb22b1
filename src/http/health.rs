//! `/healthz` (the process is up), `/readyz` (the database answers) and `/metrics`
//! (Prometheus text; behind a bearer token when `CAREGRAPH_METRICS_TOKEN` is set).

use axum::{extract::State, http::StatusCode};

use super::AppState;
use crate::db;

/// 200 while the process serves requests.
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the database answers, 503 otherwise.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if db::ping(&state.services.db).await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
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
