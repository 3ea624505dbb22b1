//! With introspection off (production), engine errors that would echo the schema's argument
//! names ("Field \"x\" argument \"id\" ... is required but not provided") get a generic message,
//! so that the error messages cannot stand in for the introspection that is turned off.

use async_graphql::ServerError;

/// The message that replaces an engine error naming arguments.
pub const GENERIC_ARGUMENT_ERROR: &str =
    "The query is invalid: an argument is missing, unknown or of the wrong type.";

/// Replaces the messages of engine errors about arguments: only errors the engine raised, which
/// carry no code yet, are touched (so call it before codes are stamped).
pub fn redact(errors: &mut [ServerError]) {
    for error in errors {
        let from_engine = error
            .extensions
            .as_ref()
            .is_none_or(|e| e.get("code").is_none());
        if from_engine && error.message.contains("argument") {
            error.message = GENERIC_ARGUMENT_ERROR.to_owned();
        }
    }
}
