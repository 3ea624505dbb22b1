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
pub fn provider(config: &OtelConfig) -> anyhow::Result<(Tracing, opentelemetry_sdk::trace::Tracer)> {
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
