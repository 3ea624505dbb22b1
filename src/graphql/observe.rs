//! The one place where GraphQL operations are observed, over HTTP and WebSocket alike: each
//! operation's duration by name and type, its errors by `extensions.code`, running
//! subscriptions and the results they deliver; and each operation's trace span
//! (`graphql.operation.name`, `graphql.operation.type`, see [`crate::telemetry::otel`]).
//!
//! Registered first, so it is the outermost extension: it sees the document only after the cost
//! limits have passed it, and errors after their codes are stamped.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Instant,
};

use async_graphql::{
    Request, Response, ServerError, ServerResult, Value, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest,
        NextRequest, NextSubscribe,
    },
    futures_util::stream::BoxStream,
    parser::types::{ExecutableDocument, OperationType},
};
use futures_util::{Stream, StreamExt};
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::metrics::{GaugeGuard, Metrics, OperationLabels};

/// The extension's factory.
pub struct Observe {
    /// Where operations are recorded.
    pub metrics: Arc<Metrics>,
}

impl ExtensionFactory for Observe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ObserveOperation {
            metrics: self.metrics.clone(),
            op: Arc::default(),
        })
    }
}

/// What is known of one operation so far.
#[derive(Default)]
struct Operation {
    /// The `operationName` the client sent (used only to pick the operation in the document).
    requested: Option<String>,
    /// Set once the document parsed and the operation was found.
    labels: Option<OperationLabels>,
    /// The operation's span (disabled unless traces are exported).
    span: Option<tracing::Span>,
}

struct ObserveOperation {
    metrics: Arc<Metrics>,
    op: Arc<Mutex<Operation>>,
}

/// The labels of an operation whose document did not parse or had no such operation.
fn unknown() -> OperationLabels {
    OperationLabels {
        graphql_operation_name: "other".into(),
        graphql_operation_type: "unknown",
    }
}

fn labels_of(op: &Mutex<Operation>) -> OperationLabels {
    op.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .labels
        .clone()
        .unwrap_or_else(unknown)
}

/// A new operation span: a child of the current span, or of the client's `traceparent` when
/// the handler attached it. Names and types are recorded once the document is parsed; nothing
/// from the document's text or variables is.
fn operation_span() -> tracing::Span {
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
fn failed(span: &tracing::Span, response: &Response) {
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
fn code(error: &ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        Value::String(s) => Some(s.as_str()),
        Value::Enum(e) => Some(e.as_str()),
        _ => None,
    }
}

#[async_trait::async_trait]
impl Extension for ObserveOperation {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let span = operation_span();
        self.op.lock().unwrap_or_else(PoisonError::into_inner).span = Some(span.clone());
        let response = next.run(ctx).instrument(span.clone()).await;
        failed(&span, &response);
        self.metrics.graphql_operation(
            &labels_of(&self.op),
            started.elapsed(),
            response.errors.iter().map(code),
        );
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let span = operation_span();
        self.op.lock().unwrap_or_else(PoisonError::into_inner).span = Some(span.clone());
        Tracked {
            span,
            inner: next.run(ctx, stream),
            metrics: self.metrics.clone(),
            op: self.op.clone(),
            started: Instant::now(),
            running: None,
            recorded: false,
        }
        .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.op
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requested
            .clone_from(&request.operation_name);
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let mut op = self.op.lock().unwrap_or_else(PoisonError::into_inner);
        let picked = match op.requested.as_deref() {
            Some(wanted) => doc
                .operations
                .iter()
                .find(|(name, _)| name.is_some_and(|n| n.as_str() == wanted)),
            None => {
                let mut all = doc.operations.iter();
                match (all.next(), all.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        // A name from the parsed document is a GraphQL name; the metrics bound how many.
        op.labels = picked.map(|(name, operation)| OperationLabels {
            graphql_operation_name: self.metrics.operation_name(name.map(|n| n.as_str())),
            graphql_operation_type: match operation.node.ty {
                OperationType::Query => "query",
                OperationType::Mutation => "mutation",
                OperationType::Subscription => "subscription",
            },
        });
        if let (Some(labels), Some(span)) = (&op.labels, &op.span)
            && !span.is_disabled()
        {
            let name = &labels.graphql_operation_name;
            let kind = labels.graphql_operation_type;
            span.record("graphql.operation.name", name.as_str());
            span.record("graphql.operation.type", kind);
            // The span has started by now: its name is changed on the OpenTelemetry span.
            span.context().span().update_name(format!("{kind} {name}"));
        }
        drop(op);
        Ok(doc)
    }
}

/// An operation run as a stream (every operation over WebSocket): a query or mutation is
/// recorded at its result; a subscription counts as running from when it started until the
/// stream is dropped, and is recorded then with its lifetime.
struct Tracked<'s> {
    span: tracing::Span,
    inner: BoxStream<'s, Response>,
    metrics: Arc<Metrics>,
    op: Arc<Mutex<Operation>>,
    started: Instant,
    /// Holds the running-subscriptions gauge up while the subscription runs.
    running: Option<GaugeGuard>,
    recorded: bool,
}

impl Tracked<'_> {
    fn is_subscription(&self) -> bool {
        labels_of(&self.op).graphql_operation_type == "subscription"
    }
}

impl Stream for Tracked<'_> {
    type Item = Response;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        let this = self.get_mut();
        let polled = this.span.in_scope(|| this.inner.poll_next_unpin(cx));
        // The document is parsed during the first poll: from then on the type is known.
        if this.running.is_none() && !this.recorded && this.is_subscription() {
            this.running = Some(GaugeGuard::new(this.metrics.active_subscriptions.clone()));
        }
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
                    &labels_of(&this.op),
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
                &labels_of(&self.op),
                self.started.elapsed(),
                std::iter::empty(),
            );
        }
    }
}
