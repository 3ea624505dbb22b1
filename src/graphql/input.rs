//! Text arguments are checked once, for every field, before any resolver runs: a control
//! character (NUL and friends; tab, line feed and carriage return are allowed) or a text longer
//! than `CAREGRAPH_MAX_TEXT_BYTES` is `BAD_USER_INPUT` naming the argument (`input.name`),
//! whether the text is written in the document or passed as a variable. So no such text reaches
//! SQL, a provider or a log.

use async_graphql::{
    Pos, ServerError, ServerResult, Variables,
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};
use async_graphql_value::{ConstValue, Value};

use crate::error::AppError;

/// Refuses a document whose arguments (written in it, as variables or as variable defaults)
/// hold a control character or a text longer than `max_bytes`.
pub fn check_texts(
    doc: &ExecutableDocument,
    variables: &Variables,
    max_bytes: usize,
) -> ServerResult<()> {
    let check = Check {
        variables,
        max_bytes,
    };
    for (_, op) in doc.operations.iter() {
        for def in &op.node.variable_definitions {
            if let Some(default) = &def.node.default_value {
                check.constant(&default.node, def.node.name.node.as_str(), def.pos)?;
            }
        }
        check.set(&op.node.selection_set.node)?;
    }
    for fragment in doc.fragments.values() {
        check.set(&fragment.node.selection_set.node)?;
    }
    Ok(())
}

/// Why a text is refused, if it is.
pub fn text_problem(text: &str, max_bytes: usize) -> Option<String> {
    if text.len() > max_bytes {
        return Some(format!("is longer than {max_bytes} bytes"));
    }
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        .then(|| "contains a control character".to_owned())
}

struct Check<'a> {
    variables: &'a Variables,
    max_bytes: usize,
}

impl Check<'_> {
    fn refuse(&self, path: &str, problem: String, pos: Pos) -> ServerError {
        async_graphql::Error::from(AppError::bad_input(path, format!("`{path}` {problem}")))
            .into_server_error(pos)
    }

    fn text(&self, text: &str, path: &str, pos: Pos) -> ServerResult<()> {
        match text_problem(text, self.max_bytes) {
            Some(problem) => Err(self.refuse(path, problem, pos)),
            None => Ok(()),
        }
    }

    fn set(&self, set: &SelectionSet) -> ServerResult<()> {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    for (name, value) in &field.node.arguments {
                        self.value(&value.node, name.node.as_str(), value.pos)?;
                    }
                    self.set(&field.node.selection_set.node)?;
                }
                Selection::InlineFragment(inline) => self.set(&inline.node.selection_set.node)?,
                Selection::FragmentSpread(_) => {} // fragments are checked once each
            }
        }
        Ok(())
    }

    fn value(&self, value: &Value, path: &str, pos: Pos) -> ServerResult<()> {
        match value {
            Value::Variable(name) => match self.variables.get(name) {
                Some(v) => self.constant(v, path, pos),
                None => Ok(()),
            },
            Value::String(s) => self.text(s, path, pos),
            Value::List(items) => items.iter().try_for_each(|v| self.value(v, path, pos)),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(k, v)| self.value(v, &format!("{path}.{k}"), pos)),
            _ => Ok(()),
        }
    }

    fn constant(&self, value: &ConstValue, path: &str, pos: Pos) -> ServerResult<()> {
        match value {
            ConstValue::String(s) => self.text(s, path, pos),
            ConstValue::List(items) => items.iter().try_for_each(|v| self.constant(v, path, pos)),
            ConstValue::Object(map) => map
                .iter()
                .try_for_each(|(k, v)| self.constant(v, &format!("{path}.{k}"), pos)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::text_problem;

    #[test]
    fn control_characters_but_not_line_breaks_and_tabs_are_refused() {
        assert!(text_problem("ab\u{0}", 100).is_some());
        assert!(text_problem("\u{1b}[31m", 100).is_some());
        assert!(text_problem("\u{85}", 100).is_some());
        assert!(text_problem("line\nnext\r\n\tindent", 100).is_none());
        assert!(text_problem("émoji 🐕", 100).is_none());
        assert!(text_problem(&"a".repeat(101), 100).is_some());
    }
}
