//! How GraphQL operations are observed, over HTTP and WebSocket alike (the gate in
//! [`super::engine`] calls these): each operation's duration by name and type, its errors by
//! `extensions.code`, running subscriptions and the results they deliver; and each operation's
//! trace span (`graphql.operation.name`, `graphql.operation.type`, see
//! [`crate::telemetry::otel`]).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use async_graphql::{
    Response, ServerError, Value,
    futures_util::stream::BoxStream,
    parser::types::{ExecutableDocument, OperationType},
};
use futures_util::{Stream, StreamExt};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::metrics::{GaugeGuard, Metrics, OperationLabels};

/// The labels of an operation whose document did not parse or had no such operation.
pub fn unknown() -> OperationLabels {
    OperationLabels {
        graphql_operation_name: "other".into(),
        graphql_operation_type: "unknown",
    }
}

/// A new operation span: a child of the current span, or of the client's `traceparent` when
/// the handler attached it. Names and types are recorded once the document is parsed; nothing
/// from the document's text or variables is.
pub fn operation_span() -> tracing::Span {
    tracing::debug_span!(
        target: crate::telemetry::otel::TARGET,
        "graphql.operation",
        otel.name = "graphql",
        otel.kind = "server",
        graphql.operation.name = tracing::field::Empty,
        graphql.operation.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Marks the span failed when the response has errors, with the first error's code.
pub fn failed(span: &tracing::Span, response: &Response) {
    if let Some(first) = response.errors.first()
        && !span.is_disabled()
    {
        span.record("otel.status_code", "ERROR");
        span.record(
            "error.type",
            crate::telemetry::metrics::code_label(code(first)),
        );
    }
}

/// An error's `extensions.code`, when it is a string.
pub fn code(error: &ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        Value::String(s) => Some(s.as_str()),
        Value::Enum(e) => Some(e.as_str()),
        _ => None,
    }
}

/// The labels of the operation `doc` runs: the one named `requested`, or its only one; `None`
/// when there is no such operation. A name from a parsed document is a GraphQL name; the
/// metrics bound how many distinct names are kept.
pub fn labels(
    metrics: &Metrics,
    doc: &ExecutableDocument,
    requested: Option<&str>,
) -> Option<OperationLabels> {
    let (name, operation) = match requested {
        Some(wanted) => doc
            .operations
            .iter()
            .find(|(name, _)| name.is_some_and(|n| n.as_str() == wanted))?,
        None => {
            let mut all = doc.operations.iter();
            match (all.next(), all.next()) {
                (Some(only), None) => only,
                _ => return None,
            }
        }
    };
    Some(OperationLabels {
        graphql_operation_name: metrics.operation_name(name.map(|n| n.as_str())),
        graphql_operation_type: match operation.node.ty {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        },
    })
}

/// Names the operation's span once its labels are known (left unnamed for an operation the
/// document does not hold).
pub fn name_span(span: &tracing::Span, labels: &OperationLabels) {
    if span.is_disabled() || labels.graphql_operation_type == unknown().graphql_operation_type {
        return;
    }
    let name = &labels.graphql_operation_name;
    let kind = labels.graphql_operation_type;
    span.record("graphql.operation.name", name.as_str());
    span.record("graphql.operation.type", kind);
    // The span has started by now: its name is changed on the OpenTelemetry span.
    span.context().span().update_name(format!("{kind} {name}"));
}

/// An operation run as a stream (every operation over WebSocket): a query or mutation is
/// recorded at its result; a subscription counts as running from when it started until the
/// stream is dropped, and is recorded then with its lifetime.
pub struct Tracked<'s> {
    span: tracing::Span,
    inner: BoxStream<'s, Response>,
    metrics: Arc<Metrics>,
    labels: OperationLabels,
    started: Instant,
    /// Holds the running-subscriptions gauge up while the subscription runs.
    running: Option<GaugeGuard>,
    recorded: bool,
}

impl<'s> Tracked<'s> {
    /// Observes `inner`, an operation with `labels` that started at `started` in `span`.
    pub fn new(
        span: tracing::Span,
        inner: BoxStream<'s, Response>,
        metrics: Arc<Metrics>,
        labels: OperationLabels,
        started: Instant,
    ) -> Self {
        let running = (labels.graphql_operation_type == "subscription")
            .then(|| GaugeGuard::new(metrics.active_subscriptions.clone()));
        Self {
            span,
            inner,
            metrics,
            labels,
            started,
            running,
            recorded: false,
        }
    }
}

impl Stream for Tracked<'_> {
    type Item = Response;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        let this = self.get_mut();
        let polled = this.span.in_scope(|| this.inner.poll_next_unpin(cx));
        if let Poll::Ready(Some(response)) = &polled {
            if this.running.is_some() {
                if response.errors.is_empty() {
                    this.metrics.events_delivered.inc();
                } else {
                    this.metrics
                        .graphql_errors_by_code(response.errors.iter().map(code));
                }
            } else if !this.recorded {
                this.recorded = true;
                failed(&this.span, response);
                this.metrics.graphql_operation(
                    &this.labels,
                    this.started.elapsed(),
                    response.errors.iter().map(code),
                );
            }
        }
        polled
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if self.running.take().is_some() {
            self.metrics.graphql_operation(
                &self.labels,
                self.started.elapsed(),
                std::iter::empty(),
            );
        }
    }
}
