//! Reading Sendbird's answers (`docs/providers.md` §2): its errors refined into
//! [`ProviderError`] classes, message objects, counts and the member-status map it expects.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{super::ChatMessage, ProviderError, SYSTEM_ID_KEY};

/// Whether Sendbird's error message says the resource does not exist (code 400201).
pub(super) fn says_not_found(message: &str) -> bool {
    message.to_ascii_lowercase().contains("not found")
}

/// Whether Sendbird's error message says the resource exists already (code 400202, or a
/// `dedup_id` seen before).
pub(super) fn says_exists(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("unique constraint") || m.contains("already exist") || m.contains("duplicate")
}

/// Turns Sendbird's "400 + not found" into [`ProviderError::NotFound`].
pub(super) fn refine(error: ProviderError) -> ProviderError {
    match &error {
        ProviderError::Rejected {
            status: 400,
            message,
        } if says_not_found(message) => ProviderError::NotFound,
        _ => error,
    }
}

/// Whether a (refined) error means "it exists already".
pub(super) fn is_exists(error: &ProviderError) -> bool {
    matches!(error, ProviderError::Rejected { status: 400 | 409, message } if says_exists(message))
}

/// A 2xx answer that is not what the API documents.
pub(super) fn malformed(what: &str) -> ProviderError {
    ProviderError::Unavailable(format!("unexpected sendbird response: {what}"))
}

/// Milliseconds since the epoch as a UTC time (the epoch when absent or out of range).
pub(super) fn from_millis(ms: Option<i64>) -> DateTime<Utc> {
    ms.and_then(DateTime::from_timestamp_millis)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A Sendbird message object as a [`ChatMessage`] (`None` without a `message_id`).
pub(super) fn message_from(value: &Value) -> Option<ChatMessage> {
    let id = match value.get("message_id")? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let system = value.get("type").and_then(Value::as_str) == Some("ADMM");
    Some(ChatMessage {
        id,
        text: value
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        sent_at: from_millis(value.get("created_at").and_then(Value::as_i64)),
        author: if system {
            None
        } else {
            value
                .get("user")
                .and_then(|u| u.get("user_id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        },
        system,
    })
}

/// The caregraph system message id stored in an admin message's `data`.
pub(super) fn system_id_of(message: &Value) -> Option<String> {
    let data = message.get("data")?.as_str()?;
    let parsed: Value = serde_json::from_str(data).ok()?;
    parsed
        .get(SYSTEM_ID_KEY)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A non-negative JSON integer as `u32` (0 when absent, saturating).
pub(super) fn count(value: Option<&Value>) -> u32 {
    value
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// `invitation_status` marking every user as joined.
pub(super) fn joined(user_ids: &[String]) -> Value {
    Value::Object(
        user_ids
            .iter()
            .map(|u| (u.clone(), Value::String("joined".into())))
            .collect(),
    )
}
