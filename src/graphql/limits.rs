//! Schema extensions: the data depth limit (introspection measured apart, so GraphiQL works),
//! and `extensions.code` on every error the engine raises itself.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Name, Positioned, Response, ServerResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
    },
    futures_util::stream::BoxStream,
    parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet},
};
use futures_util::StreamExt;

use super::errors::{request_error, stamp_codes};

/// Rejects documents whose data selections nest deeper than `max_depth`.
pub struct DepthLimit {
    /// The largest allowed depth of non-introspection fields.
    pub max_depth: usize,
}

impl ExtensionFactory for DepthLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DepthLimit {
            max_depth: self.max_depth,
        })
    }
}

#[async_trait::async_trait]
impl Extension for DepthLimit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let depth = data_depth(&doc);
        if depth > self.max_depth {
            return Err(request_error(format!(
                "Query is nested too deep: depth {depth}, the limit is {}.",
                self.max_depth
            )));
        }
        Ok(doc)
    }
}

/// The deepest nesting of fields in any operation, not counting introspection subtrees
/// (`__schema`, `__type`), which the schema-wide cap bounds instead.
pub fn data_depth(doc: &ExecutableDocument) -> usize {
    let mut memo = HashMap::new();
    doc.operations
        .iter()
        .map(|(_, op)| {
            depth_of(
                &op.node.selection_set.node,
                &doc.fragments,
                &mut memo,
                &mut Vec::new(),
            )
        })
        .max()
        .unwrap_or(0)
}

fn depth_of(
    set: &SelectionSet,
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    memo: &mut HashMap<Name, usize>,
    stack: &mut Vec<Name>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                if name == "__schema" || name == "__type" {
                    0
                } else {
                    1 + depth_of(&field.node.selection_set.node, fragments, memo, stack)
                }
            }
            Selection::InlineFragment(inline) => {
                depth_of(&inline.node.selection_set.node, fragments, memo, stack)
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if let Some(depth) = memo.get(name) {
                    return *depth;
                }
                // A cycle is a validation error reported later; count it as nothing here.
                if stack.contains(name) {
                    return 0;
                }
                let Some(fragment) = fragments.get(name) else {
                    return 0;
                };
                stack.push(name.clone());
                let depth = depth_of(&fragment.node.selection_set.node, fragments, memo, stack);
                stack.pop();
                memo.insert(name.clone(), depth);
                depth
            }
        })
        .max()
        .unwrap_or(0)
}

/// Gives every error without `extensions.code` the code `BAD_USER_INPUT`.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        stamp_codes(&mut response.errors);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                stamp_codes(&mut response.errors);
                response
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(query: &str) -> usize {
        data_depth(&async_graphql::parser::parse_query(query).expect("parses"))
    }

    #[test]
    fn depth_counts_fields_through_fragments_but_not_introspection() {
        assert_eq!(depth("{ a }"), 1);
        assert_eq!(depth("{ a { b { c } } }"), 3);
        assert_eq!(depth("query { a { ...F } } fragment F on T { b { c } }"), 3);
        assert_eq!(
            depth("{ __schema { types { fields { type { ofType { name } } } } } }"),
            0
        );
        assert_eq!(depth("{ a { ... on T { b } } }"), 2);
        // A fragment cycle does not hang the walk.
        assert_eq!(depth("{ a { ...F } } fragment F on T { b { ...F } }"), 2);
    }
}
