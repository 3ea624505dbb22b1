//! Logging, set up once: pretty locally, JSON in production. `RUST_LOG` overrides the filter.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,tower_http=info";

/// Libraries whose debug and trace output includes request or message bytes.
const PAYLOAD_TARGETS: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
];

/// Installs the global subscriber (a second call does nothing).
pub fn init(json: bool) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Whatever RUST_LOG asks, these never log: they trace request and frame payloads (PHI).
    for quiet in PAYLOAD_TARGETS {
        if let Ok(directive) = format!("{quiet}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt::layer().json().with_current_span(false))
            .try_init()
    } else {
        registry.with(fmt::layer().compact()).try_init()
    };
}

/// Process-wide metrics, rendered as Prometheus text at `/metrics`.
pub mod metrics {
    use std::sync::LazyLock;

    use prometheus_client::{
        encoding::{EncodeLabelSet, text::encode},
        metrics::{counter::Counter, family::Family, gauge::Gauge},
        registry::Registry,
    };

    /// Labels of a provider call.
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct ProviderCall {
        /// `stream`, `sendbird`, `ethora`.
        pub provider: String,
        /// The operation.
        pub operation: String,
        /// `ok` or the failure class.
        pub outcome: String,
    }

    /// The metrics.
    pub struct Metrics {
        registry: Registry,
        /// Provider HTTP calls by provider, operation and outcome.
        pub provider_calls: Family<ProviderCall, Counter>,
        /// Outbox rows waiting (set at each scrape).
        pub outbox_pending: Gauge,
        /// Outbox rows given up on (set at each scrape).
        pub outbox_dead: Gauge,
        /// SQL statements run (set at each scrape).
        pub sql_statements: Gauge,
    }

    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        let mut registry = Registry::with_prefix("caregraph");
        let provider_calls = Family::<ProviderCall, Counter>::default();
        let outbox_pending = Gauge::default();
        let outbox_dead = Gauge::default();
        let sql_statements = Gauge::default();
        registry.register(
            "provider_calls",
            "Chat-provider HTTP calls",
            provider_calls.clone(),
        );
        registry.register(
            "outbox_pending",
            "Provider side effects waiting for delivery",
            outbox_pending.clone(),
        );
        registry.register(
            "outbox_dead",
            "Provider side effects given up on (admins can retry them)",
            outbox_dead.clone(),
        );
        registry.register(
            "sql_statements",
            "SQL statements run by this process",
            sql_statements.clone(),
        );
        Metrics {
            registry,
            provider_calls,
            outbox_pending,
            outbox_dead,
            sql_statements,
        }
    });

    /// The process's metrics.
    pub fn get() -> &'static Metrics {
        &METRICS
    }

    /// Counts one provider call.
    pub fn provider_call(provider: &str, operation: &str, outcome: &str) {
        get()
            .provider_calls
            .get_or_create(&ProviderCall {
                provider: provider.to_owned(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render() -> String {
        let mut out = String::new();
        if encode(&mut out, &get().registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Test support: what a piece of code logs.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Arc, Mutex, PoisonError};

    /// A log writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Self;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Runs `f` and returns its result with the lines it logged on this thread at `INFO` and
    /// above, each starting with its level.
    pub(crate) fn logged<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let text =
            String::from_utf8_lossy(&buffer.0.lock().unwrap_or_else(PoisonError::into_inner))
                .into_owned();
        (result, text.lines().map(|l| l.trim().to_owned()).collect())
    }
}
