//! The data depth limit, with introspection measured apart (so GraphiQL works under a tight
//! data limit).

use std::collections::HashMap;

use async_graphql::{
    Name, Positioned, ServerResult,
    parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet},
};

use super::errors::request_error;

/// Refuses a document whose data selections nest deeper than `max_depth`.
pub fn check_depth(doc: &ExecutableDocument, max_depth: usize) -> ServerResult<()> {
    let depth = data_depth(doc);
    if depth > max_depth {
        return Err(request_error(format!(
            "Query is nested too deep: depth {depth}, the limit is {max_depth}."
        )));
    }
    Ok(())
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
