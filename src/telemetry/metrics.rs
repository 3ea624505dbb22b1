//! The process's Prometheus metrics, one [`Metrics`] per app, rendered as text at `/metrics`.
//!
//! Names and units follow the OpenTelemetry semantic conventions where one exists
//! (`http_server_request_duration_seconds`, `db_client_connection_count`, ...); the rest are
//! prefixed `caregraph_`. Every label value comes from a bounded set: routes are the router's
//! patterns, operation names are admitted up to [`MAX_OPERATION_NAMES`] and folded into
//! `other` past that, error codes outside [`ERROR_CODES`] count as `OTHER`. No label holds
//! request data.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// The most distinct GraphQL operation names kept as label values; later names count as
/// `other`.
pub const MAX_OPERATION_NAMES: usize = 100;

/// The longest operation name kept as a label value.
const MAX_NAME_LEN: usize = 100;

/// The `extensions.code` values counted by name; any other code counts as `OTHER`.
pub const ERROR_CODES: &[&str] = &[
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "CONFLICT",
    "CONSENT_REQUIRED",
    "CHAT_NOT_OPEN",
    "MEETING_NOT_OPEN",
    "RATE_LIMITED",
    "PROVIDER_UNAVAILABLE",
    "INTERNAL",
    "PERSISTED_QUERY_NOT_FOUND",
    "PERSISTED_QUERY_NOT_SUPPORTED",
];

/// Buckets in seconds: the OpenTelemetry advice for `http.server.request.duration`.
const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn seconds() -> Histogram {
    Histogram::new(SECONDS)
}

/// A float gauge.
pub type FloatGauge = Gauge<f64, AtomicU64>;

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `POST`, ... (`_OTHER` for any other method).
    pub http_request_method: &'static str,
    /// The route's pattern, e.g. `/graphql`.
    pub http_route: String,
    /// The response's status code.
    pub http_response_status_code: u16,
}

/// Labels of a GraphQL operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation's name, `anonymous`, or `other` (see [`Metrics::operation_name`]).
    pub graphql_operation_name: String,
    /// `query`, `mutation`, `subscription`, or `unknown` when the document did not parse.
    pub graphql_operation_type: &'static str,
}

/// Labels of a GraphQL error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// One of [`ERROR_CODES`] or `OTHER`.
    pub code: &'static str,
}

/// Labels of a provider call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCall {
    /// `stream`, `sendbird`, `ethora`.
    pub provider: &'static str,
    /// The operation.
    pub operation: &'static str,
    /// `ok` or the failure class.
    pub outcome: &'static str,
}

/// Labels of a provider call's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderOperation {
    /// `stream`, `sendbird`, `ethora`.
    pub provider: &'static str,
    /// The operation.
    pub operation: &'static str,
}

/// Labels naming a provider.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    /// `stream`, `sendbird`, `ethora`.
    pub provider: &'static str,
}

/// Labels of the database pool's connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolState {
    /// `used` or `idle`.
    pub db_client_connection_state: &'static str,
}

/// A circuit breaker's state, as the `caregraph_provider_breaker_state` gauge shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through (0).
    Closed = 0,
    /// Calls fail fast (1).
    Open = 1,
    /// One probe call is let through (2).
    HalfOpen = 2,
}

/// One app's metrics.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by method, route and status.
    pub http_duration: Timings<HttpLabels>,
    /// GraphQL operations by name and type (a subscription is recorded when it ends).
    pub graphql_duration: Timings<OperationLabels>,
    /// GraphQL errors by `extensions.code`.
    pub graphql_errors: Family<ErrorLabels, Counter>,
    /// Open GraphQL WebSocket connections.
    pub websocket_connections: Gauge,
    /// Running subscriptions.
    pub active_subscriptions: Gauge,
    /// Domain events published by this process.
    pub events_published: Counter,
    /// Subscription results sent to clients.
    pub events_delivered: Counter,
    /// Provider calls by provider, operation and outcome.
    pub provider_calls: Family<ProviderCall, Counter>,
    /// Provider call durations (retries included) by provider and operation.
    pub provider_duration: Timings<ProviderOperation>,
    /// Each provider's circuit breaker (see [`BreakerState`]).
    pub breaker_state: Family<ProviderLabel, Gauge>,
    /// The same states, readable (for `/readyz`).
    breakers: Mutex<std::collections::BTreeMap<&'static str, BreakerState>>,
    /// Outbox rows waiting (set at each scrape).
    pub outbox_pending: Gauge,
    /// Outbox rows given up on (set at each scrape).
    pub outbox_dead: Gauge,
    /// Age of the oldest waiting outbox row (set at each scrape; 0 when none waits).
    pub outbox_oldest_pending_age: FloatGauge,
    /// How late the scheduler's last tick ran after it was due.
    pub scheduler_lag: FloatGauge,
    /// Audit records not written because they repeat an allowed read within the read window.
    pub audit_records_coalesced: Counter,
    /// Database pool connections by state (set at each scrape).
    pub db_connections: Family<PoolState, Gauge>,
    /// The database pool's size limit (set at each scrape).
    pub db_connections_max: Gauge,
    names: Mutex<HashSet<String>>,
}

impl Metrics {
    /// New metrics; `sql_statements` is the database's statement counter.
    pub fn new(sql_statements: Counter) -> Arc<Self> {
        let mut registry = Registry::default();
        let m = Self {
            http_duration: Family::new_with_constructor(seconds),
            graphql_duration: Family::new_with_constructor(seconds),
            graphql_errors: Family::default(),
            websocket_connections: Gauge::default(),
            active_subscriptions: Gauge::default(),
            events_published: Counter::default(),
            events_delivered: Counter::default(),
            provider_calls: Family::default(),
            provider_duration: Family::new_with_constructor(seconds),
            breaker_state: Family::default(),
            breakers: Mutex::default(),
            outbox_pending: Gauge::default(),
            outbox_dead: Gauge::default(),
            outbox_oldest_pending_age: FloatGauge::default(),
            scheduler_lag: FloatGauge::default(),
            audit_records_coalesced: Counter::default(),
            db_connections: Family::default(),
            db_connections_max: Gauge::default(),
            names: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        registry.register_with_unit(
            "caregraph_graphql_operation_duration",
            "GraphQL operations by name and type (a subscription counts when it ends, with its lifetime)",
            Unit::Seconds,
            m.graphql_duration.clone(),
        );
        registry.register(
            "caregraph_graphql_errors",
            "GraphQL errors by extensions.code",
            m.graphql_errors.clone(),
        );
        registry.register(
            "caregraph_websocket_connections",
            "Open GraphQL WebSocket connections",
            m.websocket_connections.clone(),
        );
        registry.register(
            "caregraph_graphql_active_subscriptions",
            "Running GraphQL subscriptions",
            m.active_subscriptions.clone(),
        );
        registry.register(
            "caregraph_events_published",
            "Domain events published by this process",
            m.events_published.clone(),
        );
        registry.register(
            "caregraph_events_delivered",
            "Subscription results sent to clients",
            m.events_delivered.clone(),
        );
        registry.register(
            "caregraph_provider_calls",
            "Chat-provider HTTP calls by outcome",
            m.provider_calls.clone(),
        );
        registry.register_with_unit(
            "caregraph_provider_call_duration",
            "Chat-provider HTTP call durations, retries included",
            Unit::Seconds,
            m.provider_duration.clone(),
        );
        registry.register(
            "caregraph_provider_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        registry.register(
            "caregraph_outbox_pending",
            "Provider side effects waiting for delivery",
            m.outbox_pending.clone(),
        );
        registry.register(
            "caregraph_outbox_dead",
            "Provider side effects given up on (admins can retry them)",
            m.outbox_dead.clone(),
        );
        registry.register_with_unit(
            "caregraph_outbox_oldest_pending_age",
            "Age of the oldest waiting provider side effect (0 when none waits)",
            Unit::Seconds,
            m.outbox_oldest_pending_age.clone(),
        );
        registry.register_with_unit(
            "caregraph_scheduler_lag",
            "How late the chat scheduler's last tick ran after it was due",
            Unit::Seconds,
            m.scheduler_lag.clone(),
        );
        registry.register(
            "caregraph_audit_records_coalesced",
            "Allowed reads not recorded again: identical to one this process recorded within CAREGRAPH_AUDIT_READ_WINDOW_SECONDS",
            m.audit_records_coalesced.clone(),
        );
        registry.register(
            "caregraph_sql_statements",
            "SQL statements run by this process",
            sql_statements,
        );
        registry.register(
            "db_client_connection_count",
            "Database pool connections by state",
            m.db_connections.clone(),
        );
        registry.register(
            "db_client_connection_max",
            "The database pool's largest size",
            m.db_connections_max.clone(),
        );
        Arc::new(Self { registry, ..m })
    }

    /// The label value for a GraphQL operation name: the name itself while fewer than
    /// [`MAX_OPERATION_NAMES`] distinct names have been seen, `anonymous` for none, and `other`
    /// past the limit or for anything that is not a valid GraphQL name.
    pub fn operation_name(&self, name: Option<&str>) -> String {
        let Some(name) = name else {
            return "anonymous".into();
        };
        if !is_graphql_name(name) || name.len() > MAX_NAME_LEN {
            return "other".into();
        }
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if names.contains(name) {
            return name.to_owned();
        }
        if names.len() < MAX_OPERATION_NAMES {
            names.insert(name.to_owned());
            return name.to_owned();
        }
        "other".into()
    }

    /// Records one finished GraphQL operation and its errors' codes.
    pub fn graphql_operation<'a>(
        &self,
        labels: &OperationLabels,
        took: Duration,
        codes: impl Iterator<Item = Option<&'a str>>,
    ) {
        self.graphql_duration
            .get_or_create(labels)
            .observe(took.as_secs_f64());
        self.graphql_errors_by_code(codes);
    }

    /// Counts errors by their `extensions.code`.
    pub fn graphql_errors_by_code<'a>(&self, codes: impl Iterator<Item = Option<&'a str>>) {
        for code in codes {
            self.graphql_errors
                .get_or_create(&ErrorLabels {
                    code: code_label(code),
                })
                .inc();
        }
    }

    /// Counts one provider call.
    pub fn provider_call(
        &self,
        provider: &'static str,
        operation: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        self.provider_calls
            .get_or_create(&ProviderCall {
                provider,
                operation,
                outcome,
            })
            .inc();
        self.provider_duration
            .get_or_create(&ProviderOperation {
                provider,
                operation,
            })
            .observe(took.as_secs_f64());
    }

    /// Sets a provider's breaker gauge.
    pub fn breaker(&self, provider: &'static str, state: BreakerState) {
        self.breaker_state
            .get_or_create(&ProviderLabel { provider })
            .set(state as i64);
        self.breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(provider, state);
    }

    /// Each provider's breaker state, by provider name.
    pub fn breaker_states(&self) -> Vec<(&'static str, BreakerState)> {
        self.breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(provider, state)| (*provider, *state))
            .collect()
    }

    /// Sets the database pool gauges.
    pub fn pool(&self, size: u32, idle: usize, max: u32) {
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        let used = i64::from(size).saturating_sub(idle).max(0);
        self.db_connections
            .get_or_create(&PoolState {
                db_client_connection_state: "used",
            })
            .set(used);
        self.db_connections
            .get_or_create(&PoolState {
                db_client_connection_state: "idle",
            })
            .set(idle);
        self.db_connections_max.set(i64::from(max));
    }

    /// An open WebSocket connection, counted until the guard drops.
    pub fn websocket_open(self: &Arc<Self>) -> GaugeGuard {
        GaugeGuard::new(self.websocket_connections.clone())
    }

    /// Reads the gauges that are set at each scrape (outbox backlog, database pool).
    pub async fn refresh(&self, services: &crate::services::Services) {
        if let Ok(counts) = services.outbox.counts().await {
            self.outbox_pending
                .set(i64::try_from(counts.pending).unwrap_or(i64::MAX));
            self.outbox_dead
                .set(i64::try_from(counts.dead).unwrap_or(i64::MAX));
            self.outbox_oldest_pending_age
                .set(counts.oldest_pending_age.as_secs_f64());
        }
        let db = &services.db;
        match db.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => {
                let pool = db.get_sqlite_connection_pool();
                self.pool(
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                );
            }
            sea_orm::DatabaseBackend::Postgres => {
                let pool = db.get_postgres_connection_pool();
                self.pool(
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                );
            }
            _ => {}
        }
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Increments a gauge and decrements it again when dropped.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Increments `gauge` until the guard drops.
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An error code's label value: one of [`ERROR_CODES`], else `OTHER`.
pub fn code_label(code: Option<&str>) -> &'static str {
    code.and_then(|c| ERROR_CODES.iter().find(|known| **known == c))
        .copied()
        .unwrap_or("OTHER")
}

/// Whether `name` matches `/[_A-Za-z][_0-9A-Za-z]*/`.
pub fn is_graphql_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The HTTP method's label value: the standard methods by name, `_OTHER` for the rest.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded_and_must_be_graphql_names() {
        let m = Metrics::new(Counter::default());
        assert_eq!(m.operation_name(None), "anonymous");
        assert_eq!(m.operation_name(Some("Patients")), "Patients");
        assert_eq!(m.operation_name(Some("Jane Doe")), "other");
        assert_eq!(m.operation_name(Some("1abc")), "other");
        assert_eq!(m.operation_name(Some("")), "other");
        assert_eq!(m.operation_name(Some(&"a".repeat(101))), "other");
        for i in 0..200 {
            let label = m.operation_name(Some(&format!("Op{i}")));
            assert_eq!(
                label,
                if i < 99 {
                    format!("Op{i}")
                } else {
                    "other".into()
                }
            );
        }
        assert_eq!(m.operation_name(Some("Patients")), "Patients", "kept");
    }

    #[test]
    fn unknown_error_codes_count_as_other() {
        let m = Metrics::new(Counter::default());
        m.graphql_errors_by_code([Some("FORBIDDEN"), Some("Jane"), None].into_iter());
        let text = m.render();
        assert!(
            text.contains("caregraph_graphql_errors_total{code=\"FORBIDDEN\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("caregraph_graphql_errors_total{code=\"OTHER\"} 2"),
            "{text}"
        );
        assert!(!text.contains("Jane"), "{text}");
    }
}
