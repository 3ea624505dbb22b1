//! OpenTelemetry traces over OTLP/HTTP (protobuf), on only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! Spans meant for export are `DEBUG` spans with the target [`TARGET`]: the log output's
//! default filter (`info`) leaves them disabled, so with tracing off they cost a disabled
//! callsite check and nothing else. One span per GraphQL operation
//! (`graphql.operation.name`, `graphql.operation.type`), children for database batches and
//! provider calls; never variables, document text or values.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::OtelConfig;

/// The target of every span that is exported (and of no log line).
pub const TARGET: &str = "caregraph::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (set once at start).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The tracer provider: flushes and stops the exporter when dropped.
pub struct Tracing(SdkTracerProvider);

impl Drop for Tracing {
    fn drop(&mut self) {
        // Exports what is still buffered (the exporter runs on its own thread).
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
        }
    }
}

/// Builds the OTLP exporter and its tracer provider.
pub fn provider(
    config: &OtelConfig,
) -> anyhow::Result<(Tracing, opentelemetry_sdk::trace::Tracer)> {
    // The exporter's blocking HTTP client must not be built on a runtime thread.
    let endpoint = config.endpoint.clone();
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))??;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("caregraph");
    ENABLED.store(true, Ordering::Relaxed);
    Ok((Tracing(provider), tracer))
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// The W3C trace context a client sent (`traceparent`, `tracestate`): the parent of its
/// operation's span. The empty context when tracing is off or the client sent none.
pub fn client_context(headers: &axum::http::HeaderMap) -> Context {
    if !enabled() || !headers.contains_key("traceparent") {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&Headers(headers))
}

struct Outgoing<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for Outgoing<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The `traceparent` (and `tracestate`) of the current span, for an outgoing request; empty when
/// tracing is off.
pub fn outgoing_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    if enabled() {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&cx, &mut Outgoing(&mut headers));
    }
    headers
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceContextExt;
    use tracing::Instrument;
    use tracing_subscriber::{filter::filter_fn, prelude::*};

    use super::*;
    use crate::providers::http::{ProviderHttp, Resilience};

    /// Callsite interest is shared by every subscriber in the process: these tests take turns.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn with_traces_off_the_default_log_filter_disables_every_exported_span() {
        let _turn = SERIAL.lock().await;
        let subscriber =
            tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_filter(
                tracing_subscriber::EnvFilter::new(super::super::DEFAULT_FILTER),
            ));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!(target: TARGET, "graphql.operation");
            assert!(span.is_disabled(), "no log line formats it");
            let logged = tracing::info_span!("request");
            assert!(!logged.is_disabled(), "the filter is live");
        });
    }

    #[tokio::test]
    async fn a_provider_call_sends_its_own_span_as_the_traceparent_under_the_callers_trace() {
        let _turn = SERIAL.lock().await;
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_filter(filter_fn(|m| m.is_span() && m.target() == TARGET)),
        );
        let _default = tracing::subscriber::set_default(subscriber);
        ENABLED.store(true, Ordering::Relaxed);

        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move |headers: axum::http::HeaderMap| async move {
                let tp = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                record.lock().expect("lock").push(tp);
                "ok"
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });

        let http = ProviderHttp::new("test", reqwest::Client::new(), Resilience::default());
        let operation = tracing::debug_span!(target: TARGET, "graphql.operation");
        let trace_id = operation.context().span().span_context().trace_id();
        let parent_id = operation.context().span().span_context().span_id();
        http.send("probe", |c| c.get(format!("http://{addr}/")))
            .instrument(operation)
            .await
            .expect("answered");

        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let parts: Vec<&str> = seen[0].split('-').collect();
        assert_eq!(parts.len(), 4, "{seen:?}");
        assert_eq!(parts[1], trace_id.to_string(), "the caller's trace");
        assert_ne!(
            parts[2],
            parent_id.to_string(),
            "the provider call's own span"
        );
        assert_eq!(parts[3], "01", "sampled");
    }
}
