//! The Ethora backend SDK's wire facts (`docs/providers.md` §3) and the choices this adapter
//! makes where the sources are silent: key purposes, paths, limits, reserved room keys, naming,
//! and which failures mean "not found" or "already there".

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::super::{ProviderError, SystemMessage};
use crate::crypto::hmac_hex;

// ---------------------------------------------------------------------------------------------
// The SDK's constants (`docs/providers.md` §3.2).
// ---------------------------------------------------------------------------------------------

/// The message whose HMAC (keyed with the app secret) is the server-token key.
pub const SERVER_KEY_PURPOSE: &str = "ethora:server:v1";

/// The message whose HMAC (keyed with the app secret) is the client-token key.
pub const CLIENT_KEY_PURPOSE: &str = "ethora:client:v1";

/// `createUser`: `POST`, a batch of users.
pub(super) const USERS_BATCH_CREATE: &str = "/v2/users/batch";
/// `deleteUsers`: `DELETE` with a JSON body.
pub(super) const USERS_BATCH_DELETE: &str = "/v1/users/batch";
/// `updateUsers`: `PATCH`, 1 to 100 users.
pub(super) const USERS_UPDATE: &str = "/v2/chats/users";
/// `createChatRoom`: `POST`.
pub(super) const CHATS: &str = "/v2/chats";
/// `grantUserAccessToChatRoom` (`POST`) and `removeUserAccessFromChatRoom` (`DELETE`).
pub(super) const USERS_ACCESS: &str = "/v2/chats/users-access";
/// `deleteChatRoom`: `DELETE` with a JSON body.
pub(super) const CHATS_DELETE: &str = "/v1/chats";

/// The most users `PATCH /v2/chats/users` takes.
pub(super) const USERS_PER_UPDATE: usize = 100;

// ---------------------------------------------------------------------------------------------
// Unconfirmed Ethora behaviour: every choice this adapter makes where the sources are silent.
// ---------------------------------------------------------------------------------------------

/// Users per `POST /v2/users/batch` and per `DELETE /v1/users/batch` (no documented limit; the
/// same as the documented limit of the update call).
pub(super) const USERS_PER_CALL: usize = 100;

/// Members per `users-access` call (no documented limit).
pub(super) const MEMBERS_PER_CALL: usize = 100;

/// Channels one `read_channels` call is asked for.
pub(super) const READ_BATCH_LIMIT: usize = 50;

/// Requests in flight at once when Ethora has one call per room (reads, per-user fallbacks).
pub const READ_CONCURRENCY: usize = 8;

/// How many posted system-message ids are remembered for deduplication.
pub const SENT_MESSAGES_REMEMBERED: usize = 4096;

/// The room's extra key that carries the frozen flag.
pub(super) const FROZEN_KEY: &str = "frozen";

/// Room keys Ethora itself uses: metadata with these names is never written.
pub const RESERVED_ROOM_KEYS: &[&str] = &[
    "_id",
    "name",
    "title",
    "uuid",
    "type",
    "description",
    "picture",
    "members",
    "appId",
    "createdBy",
    "createdAt",
    "updatedAt",
    "reported",
];

/// The purpose string of the key that derives users' Ethora passwords (caregraph's own).
pub(super) const PASSWORD_KEY_PURPOSE: &str = "caregraph:ethora-user-password:v1";

/// One room, for reads and metadata (`updateChatRoom`'s path; the `GET` on it is assumed).
pub(super) fn room_path(app_id: &str, chat_name: &str) -> String {
    format!(
        "/v2/apps/{}/chats/{}",
        super::super::path_segment(app_id),
        super::super::path_segment(chat_name)
    )
}

/// The app's broadcast endpoint (tenant-admin `chats/broadcast`), used for system messages.
pub(super) fn broadcast_path(app_id: &str) -> String {
    format!(
        "/v2/apps/{}/chats/broadcast",
        super::super::path_segment(app_id)
    )
}

/// The broadcast's `metadata`: marks a system message and carries its id.
pub(super) fn broadcast_metadata(message: &SystemMessage) -> Value {
    json!({ "system": true, "caregraphMessageId": message.id })
}

/// Whether a failure is Ethora's "not found" (a 404, or a 422 whose text says so).
pub(super) fn is_not_found(error: &ProviderError) -> bool {
    match error {
        ProviderError::NotFound => true,
        ProviderError::Rejected {
            status: 422,
            message,
        } => message.to_ascii_lowercase().contains("not found"),
        _ => false,
    }
}

/// Whether a failure says the thing exists already (409, or a 422 that says so).
pub(super) fn is_already_there(error: &ProviderError) -> bool {
    match error {
        ProviderError::Rejected { status: 409, .. } => true,
        ProviderError::Rejected {
            status: 422,
            message,
        } => {
            let message = message.to_ascii_lowercase();
            message.contains("already exist") || message.contains("duplicate")
        }
        _ => false,
    }
}

/// The placeholder e-mail of a user (Ethora requires one; the SDK makes up a random one, this
/// one is stable so that a repeated batch is the same request).
pub(super) fn placeholder_email(user_id: &str) -> String {
    let plain = !user_id.is_empty()
        && user_id.len() <= 64
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !user_id.starts_with('.')
        && !user_id.ends_with('.');
    if plain {
        format!("{user_id}@example.com")
    } else {
        let digest = hex::encode(Sha256::digest(user_id.as_bytes()));
        format!("user-{}@example.com", &digest[..32])
    }
}

/// `firstName` and `lastName` from a display name, as the SDK splits it: the first word, and
/// the rest (`User` when empty or shorter than the two characters Ethora requires).
pub(super) fn split_name(display: &str) -> (String, String) {
    let display = display.trim();
    let (first, rest) = match display.split_once(char::is_whitespace) {
        Some((first, rest)) => (first, rest.trim()),
        None => (display, ""),
    };
    let first = if first.is_empty() { "User" } else { first };
    let last = if rest.chars().count() < 2 {
        "User"
    } else {
        rest
    };
    (first.to_owned(), last.to_owned())
}

/// The scoped signing key for `purpose`: hex HMAC-SHA256(app secret, purpose), as UTF-8 bytes.
pub fn derive_key(app_secret: &str, purpose: &str) -> String {
    hmac_hex(app_secret.as_bytes(), purpose.as_bytes())
}

/// The custom keys of `metadata` that may be written (reserved ones are skipped, with a
/// warning that names the key only).
pub(super) fn custom_keys(metadata: &Map<String, Value>) -> Map<String, Value> {
    metadata
        .iter()
        .filter(|(key, _)| {
            let reserved = RESERVED_ROOM_KEYS.contains(&key.as_str());
            if reserved {
                tracing::warn!(
                    key = key.as_str(),
                    "channel metadata key is reserved by Ethora; not written"
                );
            }
            !reserved
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Unit tests of the naming and classification helpers.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_the_sdk() {
        assert_eq!(
            split_name("Ada King Lovelace"),
            ("Ada".into(), "King Lovelace".into())
        );
        assert_eq!(split_name("Cher"), ("Cher".into(), "User".into()));
        assert_eq!(split_name("Li X"), ("Li".into(), "User".into()));
        assert_eq!(split_name("  "), ("User".into(), "User".into()));
    }

    #[test]
    fn placeholder_emails_are_stable_and_valid() {
        assert_eq!(placeholder_email("u-1"), "u-1@example.com");
        let odd = placeholder_email("a b@c");
        assert!(odd.starts_with("user-") && odd.ends_with("@example.com"));
        assert_eq!(odd, placeholder_email("a b@c"));
    }

    #[test]
    fn not_found_and_exists_are_read_from_422_texts() {
        let nf = ProviderError::Rejected {
            status: 422,
            message: "Chat room Not Found".into(),
        };
        assert!(is_not_found(&nf) && !is_already_there(&nf));
        let ex = ProviderError::Rejected {
            status: 422,
            message: "User already exists".into(),
        };
        assert!(is_already_there(&ex) && !is_not_found(&ex));
        assert!(!is_not_found(&ProviderError::Rejected {
            status: 400,
            message: "not found".into()
        }));
    }
}
