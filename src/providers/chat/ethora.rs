//! Ethora (`CAREGRAPH_CHAT_PROVIDER=ethora`): the server-to-server REST API of Ethora's backend
//! SDK (`@ethora/sdk-backend`), as described in `docs/providers.md` §3.
//!
//! # Authentication
//!
//! Every call carries one freshly minted *server JWT* twice, in `x-custom-token` and in
//! `Authorization: Bearer`. It is HS256 with the claims `{"data": {"appId", "type": "server"},
//! "iat"}` (no `exp`), signed with a purpose-scoped key: the lowercase hex of
//! HMAC-SHA256(key = app secret, message = `ethora:server:v1`), used as UTF-8 bytes. The *client
//! JWT* handed to apps ([`ChatProvider::issue_token`], minted here without any request) has the
//! claims `{"data": {"type": "client", "userId", "appId"}, "iat"}` and the key derived with
//! `ethora:client:v1`. The raw app secret is used for nothing else and never kept.
//!
//! # Names
//!
//! A room's short name is `<appId>_<channelId>`, its JID `<appId>_<channelId>@<conference host>`
//! ([`ChatProvider::room_jid`]); users are created with `uuid` = caregraph's user id and appear
//! in rooms as `<appId>_<userId>`. Ethora has no channel type: only the channel id is used.
//!
//! # Users
//!
//! Ethora wants an e-mail, a first and last name (the last at least two characters) and a
//! password for every user. caregraph sends `uuid` = user id, the placeholder e-mail
//! `<userId>@example.com` (`user-<32 hex of SHA-256(id)>@example.com` for ids that are no valid
//! local part), the display name split as the SDK does (first word; the rest, or `User`), the
//! avatar as `profileImage`, and a password nobody knows: the first 32 hex digits of
//! HMAC-SHA256(key = hex HMAC-SHA256(app secret, `caregraph:ethora-user-password:v1`), user id).
//! (The SDK's default, `password_<userId>`, is guessable.) Apps sign in with the client JWT.
//!
//! # What is mirrored at Ethora, and what is not
//!
//! | trait operation | Ethora call | notes |
//! |---|---|---|
//! | `upsert_users` | `POST /v2/users/batch` (≤ 100 per call), then `PATCH /v2/chats/users` | a batch refused because a user exists is retried one user at a time; the PATCH updates names and images of users that existed |
//! | `delete_users` | `DELETE /v1/users/batch` (≤ 100 per call) | "not found" counts as deleted (a refused batch is retried one user at a time) |
//! | `create_channel` | `POST /v2/chats`, then `POST /v2/chats/users-access` | `uuid` = channel id, `type: "group"`, `title` = name, `picture` = image; metadata as top-level extra keys; a room that exists is left as it is and the members are granted |
//! | `update_metadata` | `PATCH /v2/apps/{appId}/chats/{appId}_{id}` | set keys are written as extra keys, unset keys are sent as `null` |
//! | `add_members` / `remove_members` | `POST` / `DELETE /v2/chats/users-access` | removing from a room that is gone succeeds |
//! | `set_frozen` | the same PATCH with `{"frozen": true/false}` | **not enforced by Ethora**: see below |
//! | `send_system_message` | `POST /v2/apps/{appId}/chats/broadcast` | deduplicated per process only: see below |
//! | `delete_channel` | `DELETE /v1/chats` | 422 "not found" and 404 count as deleted |
//! | `read_channels` | `GET /v2/apps/{appId}/chats/{appId}_{id}?includeMembers=true` per room, at most [`READ_CONCURRENCY`] at once | member count and the `frozen` key only |
//! | `recent_messages` | none | always empty |
//! | `send_message`, `history` | none | refused: Ethora's REST API neither posts as a member nor reads messages |
//! | `mark_read` | none | no read markers: succeeds without a call |
//! | `issue_token` | none | client JWT signed locally |
//! | `revoke_tokens` | none | Ethora has no revocation: see below |
//!
//! What Ethora does **not** give caregraph, and how this adapter behaves instead:
//!
//! - **Freezing.** Ethora has no frozen state. The flag is stored in the room's `frozen` extra
//!   key, so caregraph reads it back and apps that honour it can disable their composer, but a
//!   member's XMPP client can still post to a frozen room. Chat windows are therefore enforced
//!   by caregraph and its apps only, not by Ethora.
//! - **Idempotent system messages.** The broadcast call has no idempotency key. The message id
//!   travels in the broadcast's `metadata`, and this adapter remembers the ids it has posted (the
//!   latest [`SENT_MESSAGES_REMEMBERED`]) so a repeat in the same process posts nothing; a repeat
//!   after a restart posts the message again.
//! - **Message history, last message and unread counts.** They live in XMPP (MAM), not in the
//!   REST API: `recent_messages` returns nothing, and `read_channels` reports no last message and
//!   no unread count (`None`, shown as `null`: [`Capabilities::unread_counts`] is `false`), never
//!   a made-up 0. Members post with the client SDK (XMPP): `send_message` and `history` refuse.
//! - **Token expiry.** Ethora's client JWT has no `exp`, and this adapter mints exactly its
//!   claims: `expires_at` is when caregraph wants apps to fetch a new token (the `ttl` asked
//!   for, or the configured lifetime), but Ethora accepts the token after that, until the app
//!   secret changes.
//! - **Token revocation.** The SDK has no call that revokes one user's tokens (its
//!   `/v2/apps/{appId}/tokens` calls manage the app's API tokens), so `revoke_tokens` succeeds
//!   without a request ([`Capabilities::revokes_tokens`] is `false`). Since the client JWT has no
//!   `exp`, `CAREGRAPH_CHAT_TOKEN_TTL_SECONDS` does not bound it either: what cuts a deactivated
//!   user off is the removal of their room access (`DELETE /v2/chats/users-access`), deleting
//!   the Ethora user, or rotating the app secret (which invalidates every user's client JWT).
//! - **Metadata.** Kept as top-level extra keys of the room (Ethora stores arbitrary extra keys).
//!   Keys that Ethora uses itself ([`RESERVED_ROOM_KEYS`]) are never written (a warning names the
//!   key). Whether the PATCH keeps keys other than `title`/`description` and whether `null`
//!   removes a key are unconfirmed.
//!
//! Every behaviour of Ethora that its sources leave unconfirmed is decided in the
//! "Unconfirmed Ethora behaviour" block of `ethora/wire.rs`, so it can be changed in one place.
//!
//! Why this file is over 700 lines: it is the one `ChatProvider` implementation with the client
//! it needs (token minting, calls, the per-room and per-user fallbacks Ethora's batch-less API
//! forces), and a third of it is this documentation; the wire facts and naming rules are in
//! `ethora/wire.rs`. Splitting the trait's implementation would scatter one provider's operations.

use std::{
    num::NonZeroUsize,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lru::LruCache;
use reqwest::{Method, Response};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::{
    Capabilities, ChannelRef, ChannelSpec, ChannelState, ChatCredentials, ChatMessage,
    ChatProvider, ChatUser, ProviderError, SystemMessage,
};
use crate::{config::EthoraConfig, crypto::hmac_hex, providers::http::ProviderHttp};

mod wire;
use wire::{
    CHATS, CHATS_DELETE, FROZEN_KEY, MEMBERS_PER_CALL, PASSWORD_KEY_PURPOSE, READ_BATCH_LIMIT,
    USERS_ACCESS, USERS_BATCH_CREATE, USERS_BATCH_DELETE, USERS_PER_CALL, USERS_PER_UPDATE,
    USERS_UPDATE, broadcast_metadata, broadcast_path, custom_keys, is_already_there, is_not_found,
    placeholder_email, room_path, split_name,
};
pub use wire::{
    CLIENT_KEY_PURPOSE, READ_CONCURRENCY, RESERVED_ROOM_KEYS, SENT_MESSAGES_REMEMBERED,
    SERVER_KEY_PURPOSE, derive_key,
};

// ---------------------------------------------------------------------------------------------
// The adapter.
// ---------------------------------------------------------------------------------------------

/// The Ethora adapter.
pub struct Ethora {
    /// The API base URL, without a trailing slash.
    api_url: String,
    /// `ETHORA_CHAT_APP_ID`.
    app_id: String,
    /// The MUC host of room JIDs.
    conference_host: String,
    /// What client SDKs connect to.
    xmpp_service: String,
    /// The client-token lifetime reported when `issue_token` gets none.
    token_ttl: Duration,
    /// The scoped server-token key.
    server_key: EncodingKey,
    /// The scoped client-token key.
    client_key: EncodingKey,
    /// The key of users' passwords.
    password_key: SecretString,
    /// The resilient client every call goes through.
    http: ProviderHttp,
    /// `(room short name, message id)` of the system messages posted lately.
    sent: Mutex<LruCache<(String, String), ()>>,
}

impl std::fmt::Debug for Ethora {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ethora")
            .field("api_url", &self.api_url)
            .field("app_id", &self.app_id)
            .field("conference_host", &self.conference_host)
            .finish_non_exhaustive()
    }
}

impl Ethora {
    /// An adapter for one Ethora app; `token_ttl` is the lifetime reported for client tokens
    /// when `issue_token` is given none.
    pub fn new(config: &EthoraConfig, token_ttl: Duration, http: ProviderHttp) -> Self {
        let secret = config.app_secret.expose_secret();
        let server_key = derive_key(secret, SERVER_KEY_PURPOSE);
        let client_key = derive_key(secret, CLIENT_KEY_PURPOSE);
        Self {
            api_url: config.api_url.trim().trim_end_matches('/').to_owned(),
            app_id: config.app_id.trim().to_owned(),
            conference_host: config
                .conference_host
                .trim()
                .trim_start_matches('@')
                .to_owned(),
            xmpp_service: config.xmpp_service.trim().to_owned(),
            token_ttl,
            server_key: EncodingKey::from_secret(server_key.as_bytes()),
            client_key: EncodingKey::from_secret(client_key.as_bytes()),
            password_key: SecretString::from(derive_key(secret, PASSWORD_KEY_PURPOSE)),
            http,
            sent: Mutex::new(LruCache::new(
                NonZeroUsize::new(SENT_MESSAGES_REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// A room's short name: `<appId>_<channelId>`.
    fn chat_name(&self, channel: &ChannelRef) -> String {
        format!("{}_{}", self.app_id, channel.channel_id)
    }

    /// A user's XMPP username: `<appId>_<userId>`.
    fn xmpp_username(&self, user_id: &str) -> String {
        format!("{}_{}", self.app_id, user_id)
    }

    /// Signs `claims` with `key` (HS256, `typ: JWT`).
    fn sign(claims: &Value, key: &EncodingKey) -> Result<String, ProviderError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key).map_err(|e| {
            ProviderError::Rejected {
                status: 0,
                message: format!("signing an Ethora token failed: {e}"),
            }
        })
    }

    /// A server JWT, minted per call.
    fn server_token(&self) -> Result<String, ProviderError> {
        let claims = json!({
            "data": { "appId": self.app_id, "type": "server" },
            "iat": Utc::now().timestamp(),
        });
        Self::sign(&claims, &self.server_key)
    }

    /// A user's Ethora password: stable, secret and never used by anyone (apps sign in with the
    /// client JWT). The SDK's default, `password_<userId>`, is guessable.
    fn password(&self, user_id: &str) -> String {
        hmac_hex(
            self.password_key.expose_secret().as_bytes(),
            user_id.as_bytes(),
        )[..32]
            .to_owned()
    }

    /// One user of a `POST /v2/users/batch`.
    fn new_user(&self, user: &ChatUser) -> Value {
        let (first, last) = split_name(&user.name);
        let mut record = json!({
            "uuid": user.id,
            "email": placeholder_email(&user.id),
            "firstName": first,
            "lastName": last,
            "password": self.password(&user.id),
        });
        if let (Some(image), Some(map)) = (&user.image, record.as_object_mut()) {
            map.insert("profileImage".into(), Value::String(image.clone()));
        }
        record
    }

    /// One user of a `PATCH /v2/chats/users`.
    fn user_update(&self, user: &ChatUser) -> Value {
        let (first, last) = split_name(&user.name);
        let mut record = json!({
            "xmppUsername": self.xmpp_username(&user.id),
            "firstName": first,
            "lastName": last,
        });
        if let (Some(image), Some(map)) = (&user.image, record.as_object_mut()) {
            map.insert("profileImage".into(), Value::String(image.clone()));
        }
        record
    }

    /// Sends one request with the server JWT in both headers (and a JSON body when given).
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Response, ProviderError> {
        let token = self.server_token()?;
        let bearer = format!("Bearer {token}");
        let url = format!("{}{}", self.api_url, path);
        self.http
            .send(operation, |client| {
                let mut request = client
                    .request(method.clone(), &url)
                    .header("x-custom-token", &token)
                    .header(reqwest::header::AUTHORIZATION, &bearer);
                if !query.is_empty() {
                    request = request.query(query);
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                request
            })
            .await
    }

    /// Runs `call` and maps Ethora's 422 "not found" to [`ProviderError::NotFound`].
    async fn call_ok(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<(), ProviderError> {
        match self.call(operation, method, path, &[], Some(body)).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(ProviderError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Creates users (one batch); a user that exists is no error.
    async fn create_users(&self, list: &[Value]) -> Result<(), ProviderError> {
        self.batch_tolerant(
            "create_users",
            Method::POST,
            USERS_BATCH_CREATE,
            list,
            |batch| json!({ "bypassEmailConfirmation": true, "usersList": batch }),
            is_already_there,
        )
        .await
    }

    /// Deletes users by their plain ids; "not found" is success.
    async fn delete_user_batch(&self, ids: &[String]) -> Result<(), ProviderError> {
        self.batch_tolerant(
            "delete_users",
            Method::DELETE,
            USERS_BATCH_DELETE,
            ids,
            |batch| json!({ "usersIdList": batch }),
            is_not_found,
        )
        .await
    }

    /// Sends one batch call in which an error that `tolerated` accepts counts as success.
    ///
    /// Ethora may refuse a whole batch for one item (a user that exists already, an unknown
    /// id), so after such an error a batch of more than one item is sent again item by item.
    async fn batch_tolerant<T: Sync>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        items: &[T],
        body: impl Fn(&[T]) -> Value + Send + Sync,
        tolerated: fn(&ProviderError) -> bool,
    ) -> Result<(), ProviderError> {
        let batch_body = body(items);
        match self
            .call(operation, method.clone(), path, &[], Some(&batch_body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if tolerated(&e) && items.len() > 1 => {
                let each: Vec<_> = items
                    .iter()
                    .map(|one| {
                        let one_body = body(std::slice::from_ref(one));
                        let method = method.clone();
                        async move {
                            match self
                                .call(operation, method, path, &[], Some(&one_body))
                                .await
                            {
                                Ok(_) => Ok(()),
                                Err(e) if tolerated(&e) => Ok(()),
                                Err(e) => Err(e),
                            }
                        }
                    })
                    .collect();
                stream::iter(each)
                    .buffer_unordered(READ_CONCURRENCY)
                    .try_collect::<Vec<()>>()
                    .await
                    .map(|_| ())
            }
            Err(e) if tolerated(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Grants (`POST`) or revokes (`DELETE`) room access of users.
    async fn users_access(
        &self,
        operation: &'static str,
        method: Method,
        channel: &ChannelRef,
        user_ids: &[String],
    ) -> Result<(), ProviderError> {
        let chat_name = self.chat_name(channel);
        for chunk in user_ids.chunks(MEMBERS_PER_CALL) {
            let members: Vec<String> = chunk.iter().map(|id| self.xmpp_username(id)).collect();
            let body = json!({ "chatName": chat_name, "members": members });
            self.call_ok(operation, method.clone(), USERS_ACCESS, &body)
                .await?;
        }
        Ok(())
    }

    /// Patches a room's keys.
    async fn patch_room(
        &self,
        operation: &'static str,
        channel: &ChannelRef,
        body: &Value,
    ) -> Result<(), ProviderError> {
        let path = room_path(&self.app_id, &self.chat_name(channel));
        self.call_ok(operation, Method::PATCH, &path, body).await
    }

    /// Reads one room (`None` when Ethora does not know it).
    async fn read_one(&self, channel: &ChannelRef) -> Result<Option<ChannelState>, ProviderError> {
        let path = room_path(&self.app_id, &self.chat_name(channel));
        let response = match self
            .call(
                "read_channel",
                Method::GET,
                &path,
                &[("includeMembers", "true")],
                None,
            )
            .await
        {
            Ok(response) => response,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body: Value = response
            .json()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("unreadable Ethora room: {e}")))?;
        let record = body.get("result").unwrap_or(&body);
        let member_count = record
            .get("members")
            .and_then(Value::as_array)
            .map_or(0, |m| u32::try_from(m.len()).unwrap_or(u32::MAX));
        let frozen = record
            .get(FROZEN_KEY)
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Some(ChannelState {
            channel: channel.clone(),
            last_message: None,
            member_count,
            frozen,
            unread_count: None,
        }))
    }

    /// The remembered system-message ids (a poisoned lock is still usable: it holds no
    /// invariant).
    fn sent_lock(&self) -> std::sync::MutexGuard<'_, LruCache<(String, String), ()>> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ChatProvider for Ethora {
    fn name(&self) -> &'static str {
        "ethora"
    }

    fn read_batch_limit(&self) -> usize {
        READ_BATCH_LIMIT
    }

    /// Ethora keeps messages in XMPP, out of reach of its REST API: no history or unread counts
    /// here, a freeze is a flag the apps honour, and system-message repeats are suppressed only
    /// within one process.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            message_history: false,
            unread_counts: false,
            enforces_freeze: false,
            durable_message_dedup: false,
            revokes_tokens: false,
            server_send: false,
            history: false,
            read_markers: false,
        }
    }

    fn room_jid(&self, channel: &ChannelRef) -> Option<String> {
        Some(format!(
            "{}@{}",
            self.chat_name(channel),
            self.conference_host
        ))
    }

    async fn upsert_users(&self, users: &[ChatUser]) -> Result<(), ProviderError> {
        for chunk in users.chunks(USERS_PER_CALL.min(USERS_PER_UPDATE)) {
            let list: Vec<Value> = chunk.iter().map(|u| self.new_user(u)).collect();
            self.create_users(&list).await?;
            let updates: Vec<Value> = chunk.iter().map(|u| self.user_update(u)).collect();
            let body = json!({ "users": updates });
            self.call_ok("update_users", Method::PATCH, USERS_UPDATE, &body)
                .await?;
        }
        Ok(())
    }

    async fn delete_users(&self, user_ids: &[String]) -> Result<(), ProviderError> {
        for chunk in user_ids.chunks(USERS_PER_CALL) {
            self.delete_user_batch(chunk).await?;
        }
        Ok(())
    }

    async fn create_channel(&self, spec: &ChannelSpec) -> Result<(), ProviderError> {
        let id = &spec.channel.channel_id;
        let mut body = Map::new();
        body.insert(
            "title".into(),
            Value::String(
                spec.name
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| format!("Chat Room {id}")),
            ),
        );
        body.insert("uuid".into(), Value::String(id.clone()));
        body.insert("type".into(), Value::String("group".into()));
        if let Some(image) = &spec.image {
            body.insert("picture".into(), Value::String(image.clone()));
        }
        body.extend(custom_keys(&spec.metadata));
        if spec.frozen {
            body.insert(FROZEN_KEY.into(), Value::Bool(true));
        }
        match self
            .call(
                "create_channel",
                Method::POST,
                CHATS,
                &[],
                Some(&Value::Object(body)),
            )
            .await
        {
            Ok(_) => {}
            // The room exists: leave it as it is, and add the members below.
            Err(e) if is_already_there(&e) => {}
            Err(e) => return Err(e),
        }
        if spec.members.is_empty() {
            return Ok(());
        }
        self.users_access("add_members", Method::POST, &spec.channel, &spec.members)
            .await
    }

    async fn update_metadata(
        &self,
        channel: &ChannelRef,
        set: &Map<String, Value>,
        unset: &[String],
    ) -> Result<(), ProviderError> {
        let mut body = custom_keys(set);
        for key in unset {
            if RESERVED_ROOM_KEYS.contains(&key.as_str()) {
                tracing::warn!(
                    key = key.as_str(),
                    "channel metadata key is reserved by Ethora; not removed"
                );
                continue;
            }
            body.insert(key.clone(), Value::Null);
        }
        if body.is_empty() {
            return Ok(());
        }
        self.patch_room("update_metadata", channel, &Value::Object(body))
            .await
    }

    async fn add_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        self.users_access("add_members", Method::POST, channel, user_ids)
            .await?;
        super::send_note(self, channel, message).await
    }

    async fn remove_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        match self
            .users_access("remove_members", Method::DELETE, channel, user_ids)
            .await
        {
            Ok(()) => {}
            // The room (or the user) is gone: nobody left to remove, nobody to tell.
            Err(ProviderError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        }
        super::send_note(self, channel, message).await
    }

    async fn set_frozen(&self, channel: &ChannelRef, frozen: bool) -> Result<(), ProviderError> {
        self.patch_room("set_frozen", channel, &json!({ FROZEN_KEY: frozen }))
            .await
    }

    async fn send_system_message(
        &self,
        channel: &ChannelRef,
        message: &SystemMessage,
    ) -> Result<(), ProviderError> {
        let chat_name = self.chat_name(channel);
        let key = (chat_name.clone(), message.id.clone());
        if self.sent_lock().contains(&key) {
            return Ok(());
        }
        let body = json!({
            "text": message.text,
            "chatNames": [chat_name],
            "metadata": broadcast_metadata(message),
        });
        self.call_ok(
            "send_system_message",
            Method::POST,
            &broadcast_path(&self.app_id),
            &body,
        )
        .await?;
        self.sent_lock().put(key, ());
        Ok(())
    }

    async fn delete_channel(&self, channel: &ChannelRef) -> Result<(), ProviderError> {
        let chat_name = self.chat_name(channel);
        let body = json!({ "name": chat_name });
        match self
            .call(
                "delete_channel",
                Method::DELETE,
                CHATS_DELETE,
                &[],
                Some(&body),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        // A room created again under the same id starts without remembered messages.
        let mut sent = self.sent_lock();
        let stale: Vec<(String, String)> = sent
            .iter()
            .filter(|((name, _), _)| *name == chat_name)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            sent.pop(&key);
        }
        Ok(())
    }

    /// Nothing to call: Ethora cannot revoke one user's tokens (see the module documentation).
    async fn revoke_tokens(
        &self,
        _user_id: &str,
        _issued_before: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn issue_token(
        &self,
        user: &ChatUser,
        ttl: Duration,
    ) -> Result<ChatCredentials, ProviderError> {
        let now = Utc::now();
        let claims = json!({
            "data": { "type": "client", "userId": user.id, "appId": self.app_id },
            "iat": now.timestamp(),
        });
        let token = Self::sign(&claims, &self.client_key)?;
        let ttl = if ttl.is_zero() { self.token_ttl } else { ttl };
        let expires_at = TimeDelta::from_std(ttl)
            .ok()
            .and_then(|d| now.checked_add_signed(d));
        Ok(ChatCredentials {
            provider: "ethora",
            user_id: user.id.clone(),
            token,
            expires_at,
            api_key: None,
            app_id: Some(self.app_id.clone()),
            connection: json!({
                "xmppService": self.xmpp_service,
                "conferenceHost": self.conference_host,
                "roomJidSuffix": format!("@{}", self.conference_host),
            }),
        })
    }

    async fn read_channels(
        &self,
        channels: &[ChannelRef],
        _for_user: &str,
    ) -> Result<Vec<ChannelState>, ProviderError> {
        // The futures are made first (not in a stream closure) so the whole future stays Send.
        let reads: Vec<_> = channels.iter().map(|c| self.read_one(c)).collect();
        let states: Vec<Option<ChannelState>> = stream::iter(reads)
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(states.into_iter().flatten().collect())
    }

    async fn recent_messages(
        &self,
        _channel: &ChannelRef,
        _limit: u32,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        // Ethora keeps history in XMPP (MAM); its REST API has no message read.
        Ok(Vec::new())
    }
}
