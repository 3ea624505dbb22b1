//! The query-cost budget, checked on the parsed document before the engine validates it.
//!
//! The engine's validation and complexity rules walk every fragment spread into its fragment,
//! so a 1 KB document of fragments that each spread the previous one twice costs 2^n steps.
//! This check counts the selections (fields, spreads, inline fragments) and directives a
//! document expands to, computing each fragment's total once (memoised, cycles counted as
//! nothing, saturating arithmetic) and refusing as soon as the budget is exceeded; so
//! everything after it is bounded by the budget. A large document is parsed and checked on the
//! blocking thread pool, so it never holds up the async runtime's other tasks.

use std::collections::HashMap;

use async_graphql::{
    Name, Positioned, ServerResult,
    parser::{
        parse_query,
        types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet},
    },
};

use super::errors::request_error;

/// The budget of one document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostLimits {
    /// The most selections (fields, fragment spreads, inline fragments) the document may expand to.
    pub max_selections: usize,
    /// The most directives the document may expand to.
    pub max_directives: usize,
    /// The longest text argument or variable, in bytes (checked by [`super::input`]).
    pub max_text_bytes: usize,
}

impl Default for CostLimits {
    fn default() -> Self {
        Self {
            max_selections: 5_000,
            max_directives: 500,
            max_text_bytes: 65_536,
        }
    }
}

/// What a selection set expands to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cost {
    selections: usize,
    directives: usize,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            selections: self.selections.saturating_add(other.selections),
            directives: self.directives.saturating_add(other.directives),
        }
    }

    fn over(self, limits: CostLimits) -> bool {
        self.selections > limits.max_selections || self.directives > limits.max_directives
    }
}

/// Why a document is over budget.
#[derive(Debug)]
struct OverBudget;

/// Refuses a document that expands to more selections or directives than `limits` allow.
pub fn check(doc: &ExecutableDocument, limits: CostLimits) -> Result<(), String> {
    let mut walk = Walk {
        fragments: &doc.fragments,
        memo: HashMap::new(),
        stack: Vec::new(),
        limits,
    };
    let mut total = Cost::default();
    for (_, op) in doc.operations.iter() {
        let own = Cost {
            selections: 0,
            directives: op.node.directives.len(),
        };
        let cost = walk
            .set(&op.node.selection_set.node)
            .map(|c| c.add(own))
            .and_then(|c| {
                total = total.add(c);
                if total.over(limits) {
                    Err(OverBudget)
                } else {
                    Ok(total)
                }
            });
        if cost.is_err() {
            return Err(format!(
                "The query is too large: it expands to more than {} selections or {} directives.",
                limits.max_selections, limits.max_directives
            ));
        }
    }
    Ok(())
}

struct Walk<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    memo: HashMap<&'a Name, Cost>,
    stack: Vec<&'a Name>,
    limits: CostLimits,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Result<Cost, OverBudget> {
        let mut total = Cost::default();
        for item in &set.items {
            let cost = match &item.node {
                Selection::Field(field) => Cost {
                    selections: 1,
                    directives: field.node.directives.len(),
                }
                .add(self.set(&field.node.selection_set.node)?),
                Selection::InlineFragment(inline) => Cost {
                    selections: 1,
                    directives: inline.node.directives.len(),
                }
                .add(self.set(&inline.node.selection_set.node)?),
                Selection::FragmentSpread(spread) => Cost {
                    selections: 1,
                    directives: spread.node.directives.len(),
                }
                .add(self.fragment(&spread.node.fragment_name.node)?),
            };
            total = total.add(cost);
            if total.over(self.limits) {
                return Err(OverBudget);
            }
        }
        Ok(total)
    }

    /// What one fragment expands to, computed once; a cycle (a validation error reported
    /// later) and an unknown fragment count as nothing.
    fn fragment(&mut self, name: &'a Name) -> Result<Cost, OverBudget> {
        if let Some(cost) = self.memo.get(name) {
            return Ok(*cost);
        }
        if self.stack.contains(&name) {
            return Ok(Cost::default());
        }
        let Some((key, fragment)) = self.fragments.get_key_value(name) else {
            return Ok(Cost::default());
        };
        self.stack.push(key);
        let cost = self.set(&fragment.node.selection_set.node).map(|c| {
            c.add(Cost {
                selections: 0,
                directives: fragment.node.directives.len(),
            })
        });
        self.stack.pop();
        let cost = cost?;
        if cost.over(self.limits) {
            return Err(OverBudget);
        }
        self.memo.insert(key, cost);
        Ok(cost)
    }
}

/// Documents up to this size are parsed on the calling task (well under a millisecond);
/// larger ones on the blocking pool.
const INLINE_PARSE_BYTES: usize = 8 * 1024;

/// Parses `query` and checks its cost: on the blocking pool when it is large, so a large
/// document never holds up the async runtime's other tasks.
pub async fn parse_checked(query: &str, limits: CostLimits) -> ServerResult<ExecutableDocument> {
    fn parse(query: &str, limits: CostLimits) -> ServerResult<ExecutableDocument> {
        let doc = parse_query(query)?;
        check(&doc, limits).map(|()| doc).map_err(request_error)
    }
    if query.len() <= INLINE_PARSE_BYTES {
        return parse(query, limits);
    }
    let query = query.to_owned();
    tokio::task::spawn_blocking(move || parse(&query, limits))
        .await
        .map_err(|_| request_error("the query could not be checked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(query: &str, max_selections: usize) -> Result<(), String> {
        let doc = parse_query(query).expect("parses");
        check(
            &doc,
            CostLimits {
                max_selections,
                max_directives: 10,
                ..CostLimits::default()
            },
        )
    }

    fn bomb(levels: usize) -> String {
        let mut q = String::from("fragment F0 on Query { __typename } ");
        for i in 1..=levels {
            q.push_str(&format!(
                "fragment F{i} on Query {{ ...F{} ...F{} }} ",
                i - 1,
                i - 1
            ));
        }
        q.push_str(&format!("{{ ...F{levels} }}"));
        q
    }

    #[test]
    fn selections_are_counted_through_fragments_once_per_fragment() {
        assert!(cost("{ a b c }", 3).is_ok());
        assert!(cost("{ a b c d }", 3).is_err());
        // F expands to 2 selections; two spreads (2) plus twice 2 = 6.
        assert!(cost("{ ...F ...F } fragment F on Query { a b }", 6).is_ok());
        assert!(cost("{ ...F ...F } fragment F on Query { a b }", 5).is_err());
        // A cycle does not hang the walk.
        assert!(cost("{ a { ...F } } fragment F on T { b { ...F } }", 100).is_ok());
    }

    #[test]
    fn a_fragment_bomb_is_refused_without_expanding_it() {
        // Expanded, 200 levels would be 2^200 selections: that the call returns at all shows
        // fragments are counted once (no clock: a timed assertion fails on a busy machine).
        assert!(cost(&bomb(25), 5_000).is_err());
        assert!(cost(&bomb(200), 5_000).is_err());
        assert!(cost(&bomb(5), 5_000).is_ok());
    }

    #[test]
    fn directives_are_bounded_through_fragments() {
        let doc = parse_query(
            "{ ...F ...F ...F } fragment F on Query { a @skip(if: false) b @skip(if: false) }",
        )
        .expect("parses");
        let limits = CostLimits {
            max_selections: 100,
            max_directives: 5,
            ..CostLimits::default()
        };
        assert!(check(&doc, limits).is_err());
    }
}
