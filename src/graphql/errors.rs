//! Where an [`AppError`] becomes a GraphQL error: `extensions.code` (plus `field`,
//! `retryAfterSeconds`, `opensAt`), with internal causes logged once and never sent.

use async_graphql::{ErrorExtensionValues, ServerError, Value};

use crate::error::{AppError, ErrorCode};

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        err.log_cause();
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", err.code().as_str());
        match &err {
            AppError::BadUserInput {
                field: Some(field), ..
            }
            | AppError::ConflictOn { field, .. } => extensions.set("field", field.as_str()),
            AppError::RateLimited {
                retry_after_seconds,
            } => extensions.set("retryAfterSeconds", *retry_after_seconds),
            AppError::MeetingNotOpen {
                opens_at: Some(at), ..
            } => extensions.set("opensAt", at.to_rfc3339()),
            _ => {}
        }
        async_graphql::Error {
            message: err.message(),
            source: None,
            extensions: Some(extensions),
        }
    }
}

/// The result type of resolvers.
pub type GqlResult<T> = Result<T, async_graphql::Error>;

/// Gives every error that the engine raised without a code (parse, validation, limits, argument
/// coercion) the code `BAD_USER_INPUT`: our own resolvers always set one.
pub fn stamp_codes(errors: &mut [ServerError]) {
    for error in errors {
        let ext = error.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_none() {
            ext.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
}

/// A request-level `BAD_USER_INPUT` error (no path), e.g. for a limit.
pub fn request_error(message: impl Into<String>) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", Value::from(ErrorCode::BadUserInput.as_str()));
    e.extensions = Some(ext);
    e
}
