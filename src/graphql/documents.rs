//! The parsed documents of recent queries, by their text: a client sends the same few
//! documents over and over (the PMS dashboard, the chat list), and parsing one was a tenth of
//! what the dashboard query cost in instructions.
//!
//! A document is kept only once it has passed every check of the gate and the engine has run it
//! to data (so it also passed schema validation), and only when its text is short: what a
//! client cannot send in [`MAX_KEPT_BYTES`] it cannot make the cache hold, and a stranger's
//! invalid documents are never kept. A hit skips the parse and the cost and depth checks, never
//! the text checks of the variables, trusted documents or the engine's validation.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
};

use async_graphql::parser::types::ExecutableDocument;
use lru::LruCache;

/// How many documents are kept (the least recently used goes first).
pub const DOCUMENTS_KEPT: usize = 128;

/// The longest query text that is kept. The parsed form of a text is a few dozen times its size
/// at most (a list argument of many short values), so the cache stays within a few megabytes
/// whatever it is sent; the PMS's own documents are under 500 bytes.
pub const MAX_KEPT_BYTES: usize = 2 * 1024;

/// Recently run documents by query text; see the module documentation.
pub struct Documents {
    kept: Mutex<LruCache<Box<str>, Arc<ExecutableDocument>>>,
}

/// A checked document that may be kept once the engine has run it to data.
pub struct Candidate {
    query: Box<str>,
    doc: Arc<ExecutableDocument>,
}

impl Default for Documents {
    fn default() -> Self {
        Self::with_capacity(NonZeroUsize::new(DOCUMENTS_KEPT).unwrap_or(NonZeroUsize::MIN))
    }
}

impl Documents {
    /// A cache keeping at most `capacity` documents.
    pub fn with_capacity(capacity: NonZeroUsize) -> Self {
        Self {
            kept: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// The kept document of `query`, if any.
    pub fn get(&self, query: &str) -> Option<ExecutableDocument> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(query)
            .cloned();
        kept.map(|doc| doc.as_ref().clone())
    }

    /// `doc`, the checked document of `query`, as a candidate for keeping (none for a long text).
    pub fn candidate(query: &str, doc: &ExecutableDocument) -> Option<Candidate> {
        (query.len() <= MAX_KEPT_BYTES).then(|| Candidate {
            query: query.into(),
            doc: Arc::new(doc.clone()),
        })
    }

    /// Keeps a candidate (its document was run to data).
    pub fn keep(&self, candidate: Candidate) {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(candidate.query, candidate.doc);
    }

    /// How many documents are kept.
    pub fn len(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no document is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn keep(docs: &Documents, query: &str) {
        let doc = parse_query(query).expect("parses");
        docs.keep(Documents::candidate(query, &doc).expect("short"));
    }

    #[test]
    fn a_kept_document_is_answered_by_its_exact_text() {
        let docs = Documents::default();
        assert!(docs.get("{ a { b } }").is_none());
        keep(&docs, "{ a { b } }");
        let again = docs.get("{ a { b } }").expect("kept");
        let parsed = parse_query("{ a { b } }").expect("parses");
        assert_eq!(format!("{again:?}"), format!("{parsed:?}"));
        assert!(docs.get("{ a  { b } }").is_none(), "another text");
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_no_long_text() {
        let docs = Documents::with_capacity(NonZeroUsize::new(3).expect("3"));
        for i in 0..10 {
            keep(&docs, &format!("{{ f{i} }}"));
        }
        assert_eq!(docs.len(), 3);
        assert!(docs.get("{ f9 }").is_some() && docs.get("{ f0 }").is_none());
        let long = format!("{{ a {} }}", "b ".repeat(MAX_KEPT_BYTES));
        let doc = parse_query(&long).expect("parses");
        assert!(Documents::candidate(&long, &doc).is_none());
    }
}
