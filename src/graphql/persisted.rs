//! Apollo automatic persisted queries (APQ v1): a client sends `extensions.persistedQuery.
//! sha256Hash` without the query; an unknown hash answers `PersistedQueryNotFound`, and the client
//! retries with the query, which is checked against the hash and remembered.
//!
//! Resolved before execution (not as a schema extension), so the HTTP layer sees the real
//! document and can refuse a persisted mutation over GET.

use std::{num::NonZeroUsize, sync::Mutex};

use async_graphql::{Request, ServerError, Value};
use lru::LruCache;
use sha2::{Digest, Sha256};

use super::errors::request_error;

/// The largest document that is remembered (bounds the cache at capacity × 32 KiB).
const MAX_PERSISTED_BYTES: usize = 32 * 1024;

/// The remembered queries, by SHA-256 hex digest.
pub struct PersistedQueries {
    cache: Mutex<LruCache<String, String>>,
}

impl PersistedQueries {
    /// Remembers up to `capacity` queries.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Fills in `request.query` from the cache, or registers the query the request carries.
    pub fn resolve(&self, request: &mut Request) -> Result<(), ServerError> {
        let Some(persisted) = request.extensions.0.get("persistedQuery") else {
            return Ok(());
        };
        let Value::Object(fields) = persisted else {
            return Err(request_error("extensions.persistedQuery must be an object"));
        };
        if fields.get("version") != Some(&Value::from(1)) {
            return Err(request_error(
                "PersistedQueryNotSupported: only version 1 is supported",
            ));
        }
        let Some(Value::String(hash)) = fields.get("sha256Hash") else {
            return Err(request_error(
                "extensions.persistedQuery.sha256Hash must be a string",
            ));
        };
        let hash = hash.to_ascii_lowercase();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if request.query.is_empty() {
            match cache.get(&hash) {
                Some(query) => request.query.clone_from(query),
                None => return Err(request_error("PersistedQueryNotFound")),
            }
        } else {
            // Only documents worth remembering: small, and valid GraphQL syntax.
            if request.query.len() > MAX_PERSISTED_BYTES {
                return Err(request_error("a persisted query may have at most 32 KiB"));
            }
            if async_graphql::parser::parse_query(&request.query).is_err() {
                return Err(request_error(
                    "a persisted query must be a valid GraphQL document",
                ));
            }
            let digest = hex::encode(Sha256::digest(request.query.as_bytes()));
            if digest != hash {
                return Err(request_error(
                    "provided sha256Hash does not match the query",
                ));
            }
            cache.put(hash, request.query.clone());
        }
        Ok(())
    }
}
