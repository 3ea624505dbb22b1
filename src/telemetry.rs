//! Logging, set up once: pretty locally, JSON in production. `RUST_LOG` overrides the filter.
//! Metrics ([`metrics`]) and OpenTelemetry traces ([`otel`]).

use tracing_subscriber::{EnvFilter, filter::filter_fn, fmt, prelude::*};

use crate::config::OtelConfig;

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

/// Installs the global subscriber (a second call does nothing): the log output, and the OTLP
/// trace exporter when `otel` is set. Keep the returned guard until the process ends: dropping
/// it flushes the spans still buffered.
pub fn init(json: bool, otel: Option<&OtelConfig>) -> anyhow::Result<Option<otel::Tracing>> {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Whatever RUST_LOG asks, these never log: they trace request and frame payloads (PHI).
    for quiet in PAYLOAD_TARGETS {
        if let Ok(directive) = format!("{quiet}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let logs = if json {
        fmt::layer()
            .json()
            .with_current_span(false)
            .with_filter(filter)
            .boxed()
    } else {
        fmt::layer().compact().with_filter(filter).boxed()
    };
    let (guard, traces) = match otel {
        Some(config) => {
            let (guard, tracer) = otel::provider(config)?;
            // Only the spans made for export: no log line becomes a span event.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter_fn(|meta| {
                    meta.is_span() && meta.target() == otel::TARGET
                }));
            (Some(guard), Some(layer))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Ok(guard)
}

pub mod metrics;
pub mod otel;

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
