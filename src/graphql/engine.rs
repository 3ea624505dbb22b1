//! The way every operation enters the engine, over HTTP and WebSocket alike: the gate parses
//! the document once and checks its cost, depth and texts, names the audit scope's operation,
//! runs it, gives engine errors their codes and observes the operation.
//!
//! None of this is an async-graphql extension on purpose: with any extension registered, the
//! engine runs every field of every response through the extension chain (a lookup of the
//! field's type and a boxed future per extension per field), which cost a tenth of the
//! dashboard query's CPU with the seven extensions this replaced. Without extensions the
//! engine takes its direct path for each field.

use std::{sync::Arc, time::Instant};

use async_graphql::{
    Request, Response, ServerError,
    futures_util::stream::BoxStream,
    parser::types::{DocumentOperations, ExecutableDocument},
};
use futures_util::{FutureExt, StreamExt};
use tracing::Instrument;

use super::{
    AppSchema,
    batch::{Batched, Batches},
    cost,
    documents::{Candidate, Documents},
    errors::stamp_codes,
    input, limits, loaders, observe, redact,
};
use crate::{
    audit::AuditScope,
    auth::Viewer,
    config::GraphqlConfig,
    services::Services,
    telemetry::metrics::{Metrics, OperationLabels},
};

/// The checks and observation around every operation; see the module documentation.
pub struct Gate {
    metrics: Arc<Metrics>,
    cost: cost::CostLimits,
    max_depth: usize,
    /// Introspection off: engine errors naming arguments are redacted.
    redact_argument_names: bool,
    /// The documents of recent queries, parsed and checked.
    documents: Documents,
}

impl Gate {
    /// The gate for a schema built with `config`.
    pub fn new(config: &GraphqlConfig, cost: cost::CostLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            cost,
            max_depth: config.max_depth,
            redact_argument_names: !config.introspection,
            documents: Documents::default(),
        }
    }

    /// Parses and checks the request's document (the engine reuses it), or takes the kept one,
    /// naming the audit scope's operation; the operation's labels once every check has passed,
    /// and, when `keep` and the document was parsed, the candidate to keep once it has run.
    async fn admit(
        &self,
        request: &mut Request,
        audit: &AuditScope,
        keep: bool,
    ) -> Result<(OperationLabels, Option<Candidate>), ServerError> {
        let (doc, candidate) = match self.documents.get(&request.query) {
            Some(doc) => {
                name_operation(audit, &doc);
                (doc, None)
            }
            None => {
                let doc = cost::parse_checked(&request.query, self.cost).await?;
                name_operation(audit, &doc);
                limits::check_depth(&doc, self.max_depth)?;
                let candidate = keep
                    .then(|| Documents::candidate(&request.query, &doc))
                    .flatten();
                (doc, candidate)
            }
        };
        input::check_texts(&doc, &request.variables, self.cost.max_text_bytes)?;
        let labels = observe::labels(&self.metrics, &doc, request.operation_name.as_deref());
        request.set_parsed_query(doc);
        Ok((labels.unwrap_or_else(observe::unknown), candidate))
    }

    /// How many parsed documents are kept.
    pub fn documents_kept(&self) -> usize {
        self.documents.len()
    }

    /// Codes (and, with introspection off, argument names redacted) on a response's errors.
    fn finish(&self, response: &mut Response) {
        if self.redact_argument_names {
            redact::redact(&mut response.errors);
        }
        stamp_codes(&mut response.errors);
    }

    /// Runs `request` on `schema` once (a query or mutation), once `prepare` has attached
    /// what the admitted operation needs and returned the batches its loaders use.
    pub async fn execute(
        &self,
        schema: &AppSchema,
        mut request: Request,
        audit: &AuditScope,
        prepare: impl FnOnce(Request, &OperationLabels) -> (Request, Batches),
    ) -> Response {
        let started = Instant::now();
        let span = observe::operation_span();
        let (labels, mut response) = match self.admit(&mut request, audit, true).await {
            Ok((labels, candidate)) => {
                observe::name_span(&span, &labels);
                let (request, batches) = prepare(request, &labels);
                let running = Batched::new(schema.execute(request).boxed(), batches);
                let response = running.instrument(span.clone()).await;
                if let Some(candidate) = candidate
                    && response.data != async_graphql::Value::Null
                {
                    self.documents.keep(candidate);
                }
                (labels, response)
            }
            Err(error) => (observe::unknown(), Response::from_errors(vec![error])),
        };
        self.finish(&mut response);
        observe::failed(&span, &response);
        self.metrics.graphql_operation(
            &labels,
            started.elapsed(),
            response.errors.iter().map(observe::code),
        );
        response
    }

    /// Runs `request` on `schema` as a stream (every operation over WebSocket): one result
    /// for a query or mutation, one per event for a subscription; `prepare` as for
    /// [`Gate::execute`].
    pub fn execute_stream(
        self: &Arc<Self>,
        schema: &AppSchema,
        mut request: Request,
        audit: AuditScope,
        prepare: impl FnOnce(Request, &OperationLabels) -> (Request, Batches) + Send + 'static,
    ) -> BoxStream<'static, Response> {
        let started = Instant::now();
        // Made now, so it is the child of whatever context the caller attached.
        let span = observe::operation_span();
        let gate = self.clone();
        let schema = schema.clone();
        async move {
            // Boxed: the parse and checks need room only while they run, and this future's
            // room is the stream's for as long as a subscription lasts.
            let (labels, inner) = match Box::pin(gate.admit(&mut request, &audit, false)).await {
                Ok((labels, _)) => {
                    observe::name_span(&span, &labels);
                    let (request, batches) = prepare(request, &labels);
                    let inner = span.in_scope(|| schema.execute_stream(request));
                    (labels, Batched::new(inner, batches).boxed())
                }
                Err(error) => (
                    observe::unknown(),
                    futures_util::stream::once(async move { Response::from_errors(vec![error]) })
                        .boxed(),
                ),
            };
            let finishing = gate.clone();
            let inner = inner
                .map(move |mut response| {
                    finishing.finish(&mut response);
                    response
                })
                .boxed();
            observe::Tracked::new(span, inner, gate.metrics.clone(), labels, started)
        }
        .flatten_stream()
        .boxed()
    }
}

/// Names the audit scope's operation after the document's only one, unless it has a name.
fn name_operation(audit: &AuditScope, doc: &ExecutableDocument) {
    if audit.is_recording() && !audit.has_operation_name() {
        audit.set_operation_name(only_operation_name(doc));
    }
}

/// The name of the document's operation when it holds exactly one named operation: a request
/// that sent no `operationName` is recorded under it (tested by `tests/api/audit.rs`, whose
/// queries send no `operationName`). The parser keeps a named operation in the map by its name;
/// `Single` is anonymous.
fn only_operation_name(doc: &ExecutableDocument) -> Option<&str> {
    match &doc.operations {
        DocumentOperations::Multiple(ops) if ops.len() == 1 => {
            ops.keys().next().map(|name| name.as_str())
        }
        _ => None,
    }
}

/// The schema with its gate and the services every request's loaders read.
pub struct Engine {
    schema: AppSchema,
    gate: Arc<Gate>,
    services: Arc<Services>,
}

impl Engine {
    /// How many parsed documents the gate keeps (see `graphql/documents.rs`).
    pub fn documents_kept(&self) -> usize {
        self.gate.documents_kept()
    }

    /// The engine running `schema` behind `gate`.
    pub fn new(schema: AppSchema, gate: Gate, services: Arc<Services>) -> Self {
        Self {
            schema,
            gate: Arc::new(gate),
            services,
        }
    }

    /// What runs `viewer`'s admitted operation: the viewer and its per-request loaders. A
    /// query keeps what its loaders load and the viewer's memberships for the rest of the
    /// request; a mutation or a subscription reads afresh each time.
    fn prepare(
        services: Arc<Services>,
        viewer: Viewer,
    ) -> impl FnOnce(Request, &OperationLabels) -> (Request, Batches) + Send + 'static {
        move |request, labels| {
            let batches = Batches::default();
            let query = labels.graphql_operation_type == "query";
            batches.keep_loaded(query);
            let viewer = if query {
                viewer.remembering_memberships()
            } else {
                viewer
            };
            let request = loaders::attach(request, &services, &viewer, &batches).data(viewer);
            (request, batches)
        }
    }

    /// Runs a query or mutation for `viewer`.
    pub async fn execute(&self, request: Request, viewer: Viewer) -> Response {
        let audit = viewer.audit.clone();
        let prepare = Self::prepare(self.services.clone(), viewer);
        self.gate
            .execute(&self.schema, request, &audit, prepare)
            .await
    }

    /// Runs an operation for `viewer` as a stream (see [`Gate::execute_stream`]).
    pub fn execute_stream(&self, request: Request, viewer: Viewer) -> BoxStream<'static, Response> {
        let audit = viewer.audit.clone();
        let prepare = Self::prepare(self.services.clone(), viewer);
        self.gate
            .execute_stream(&self.schema, request, audit, prepare)
    }
}
