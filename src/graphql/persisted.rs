//! Apollo automatic persisted queries (APQ v1): a client sends `extensions.persistedQuery.
//! sha256Hash` without the query; an unknown hash answers `PersistedQueryNotFound`, and the client
//! retries with the query, which is checked against the hash and remembered.
//!
//! With trusted documents (`trusted.rs`), a request may also name a manifest document by
//! `documentId` (GraphQL-over-HTTP, GraphQL Yoga) or by `extensions.persistedQuery.sha256Hash`
//! (Apollo): a manifest hit wins over the APQ cache. With `CAREGRAPH_TRUSTED_DOCUMENTS_ONLY`,
//! a raw document that is not in the manifest is refused before it is parsed
//! (`TRUSTED_DOCUMENT_REQUIRED`), and so is an APQ registration of a new document.
//!
//! Resolved before execution (not as a schema extension), so the HTTP layer sees the real
//! document and can refuse a persisted mutation over GET.

use std::{num::NonZeroUsize, sync::Arc, sync::Mutex};

use async_graphql::{ErrorExtensionValues, Request, ServerError, Value};
use lru::LruCache;
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use super::trusted::TrustedDocuments;
use crate::error::ErrorCode;

/// Why a request's document could not be resolved: a request error with its code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `extensions.code`.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadUserInput, message)
    }

    fn not_found() -> Self {
        // The message Apollo clients match on (they also read the code).
        Self::new(ErrorCode::PersistedQueryNotFound, "PersistedQueryNotFound")
    }

    fn trusted_required() -> Self {
        Self::new(
            ErrorCode::TrustedDocumentRequired,
            "only trusted documents are accepted: send a `documentId` from the manifest",
        )
    }

    /// The GraphQL error (no path) carrying the code.
    pub fn to_server_error(&self) -> ServerError {
        let mut e = ServerError::new(self.message.clone(), None);
        let mut ext = ErrorExtensionValues::default();
        ext.set("code", Value::from(self.code.as_str()));
        e.extensions = Some(ext);
        e
    }
}

/// The `documentId` of a request's parameters (HTTP body or GET parameters, WebSocket
/// `subscribe` payload), when it has one.
pub fn document_id(params: &Map<String, Json>) -> Result<Option<String>, &'static str> {
    match params.get("documentId") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(id)) if !id.is_empty() => Ok(Some(id.clone())),
        Some(_) => Err("`documentId` must be a non-empty string"),
    }
}

/// The largest document that is remembered (bounds the cache at capacity × 32 KiB).
const MAX_PERSISTED_BYTES: usize = 32 * 1024;

/// The remembered queries, by SHA-256 hex digest.
pub struct PersistedQueries {
    cache: Mutex<LruCache<String, String>>,
    trusted: Option<Arc<TrustedDocuments>>,
    only_trusted: bool,
}

impl PersistedQueries {
    /// Remembers up to `capacity` queries.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            trusted: None,
            only_trusted: false,
        }
    }

    /// Serves the trusted documents too; with `only`, nothing else runs.
    pub fn with_trusted(mut self, trusted: Option<Arc<TrustedDocuments>>, only: bool) -> Self {
        self.trusted = trusted;
        self.only_trusted = only;
        self
    }

    fn trusted(&self, id: &str) -> Option<&Arc<str>> {
        self.trusted.as_ref().and_then(|t| t.get(id))
    }

    /// Whether a raw document may run: always, unless only trusted documents may.
    fn allows_raw(&self, query: &str) -> bool {
        !self.only_trusted
            || self
                .trusted
                .as_ref()
                .is_some_and(|t| t.contains_document(query))
    }

    /// Fills in `request.query` from the trusted documents (by `document_id` or persisted-query
    /// hash) or the APQ cache, or registers the query the request carries; refuses what
    /// `CAREGRAPH_TRUSTED_DOCUMENTS_ONLY` does not allow.
    pub fn resolve(&self, request: &mut Request, document_id: Option<&str>) -> Result<(), Refusal> {
        if let Some(id) = document_id {
            if !request.query.is_empty() {
                return Err(Refusal::bad(
                    "send either `documentId` or `query`, not both",
                ));
            }
            let Some(document) = self.trusted(id) else {
                return Err(Refusal::not_found());
            };
            request.query = document.to_string();
            return Ok(());
        }
        let Some(persisted) = request.extensions.0.get("persistedQuery") else {
            if !self.allows_raw(&request.query) {
                return Err(Refusal::trusted_required());
            }
            return Ok(());
        };
        let Value::Object(fields) = persisted else {
            return Err(Refusal::bad("extensions.persistedQuery must be an object"));
        };
        if fields.get("version") != Some(&Value::from(1)) {
            return Err(Refusal::bad(
                "PersistedQueryNotSupported: only version 1 is supported",
            ));
        }
        let Some(Value::String(hash)) = fields.get("sha256Hash") else {
            return Err(Refusal::bad(
                "extensions.persistedQuery.sha256Hash must be a string",
            ));
        };
        if let Some(document) = self.trusted(hash) {
            if request.query.is_empty() {
                request.query = document.to_string();
            } else if *request.query != **document {
                return Err(Refusal::bad(
                    "the query is not the trusted document of this sha256Hash",
                ));
            }
            return Ok(());
        }
        if self.only_trusted {
            return Err(if request.query.is_empty() {
                Refusal::not_found()
            } else {
                // No registration: a new document is exactly what is not allowed.
                Refusal::trusted_required()
            });
        }
        let hash = hash.to_ascii_lowercase();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if request.query.is_empty() {
            match cache.get(&hash) {
                Some(query) => request.query.clone_from(query),
                None => return Err(Refusal::not_found()),
            }
        } else {
            // Only documents worth remembering: small, and valid GraphQL syntax.
            if request.query.len() > MAX_PERSISTED_BYTES {
                return Err(Refusal::bad("a persisted query may have at most 32 KiB"));
            }
            if async_graphql::parser::parse_query(&request.query).is_err() {
                return Err(Refusal::bad(
                    "a persisted query must be a valid GraphQL document",
                ));
            }
            let digest = hex::encode(Sha256::digest(request.query.as_bytes()));
            if digest != hash {
                return Err(Refusal::bad("provided sha256Hash does not match the query"));
            }
            cache.put(hash, request.query.clone());
        }
        Ok(())
    }
}
