//! Names the audit scope's operation once the document is parsed: a request that sent no
//! `operationName` but holds one named operation is recorded under that name (tested by
//! `tests/api/audit.rs`, whose queries send no `operationName`).

use std::sync::Arc;

use async_graphql::{
    Request, ServerResult,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest},
    parser::types::DocumentOperations,
};

use crate::auth::Viewer;

/// The extension (stateless).
pub struct AuditOperationName;

impl ExtensionFactory for AuditOperationName {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuditOperationName)
    }
}

#[async_trait::async_trait]
impl Extension for AuditOperationName {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Runs after `QueryCost`, which parsed the document (so this parses nothing again).
        if let Some(viewer) = request
            .data
            .get(&std::any::TypeId::of::<Viewer>())
            .and_then(|d| d.downcast_ref::<Viewer>())
            .cloned()
            && viewer.audit.is_recording()
            && !viewer.audit.has_operation_name()
        {
            // The parser keeps a named operation in the map by its name (`Single` is anonymous).
            if let Ok(doc) = request.parsed_query()
                && let DocumentOperations::Multiple(ops) = &doc.operations
                && ops.len() == 1
                && let Some(name) = ops.keys().next()
            {
                viewer.audit.set_operation_name(Some(name.as_str()));
            }
        }
        next.run(ctx, request).await
    }
}
