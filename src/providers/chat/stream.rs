//! The Stream Chat adapter: Stream's legacy server-side REST API (no `/api/v2` prefix) as
//! `docs/providers.md` §1 describes it.
//!
//! Every call carries the `api_key` query parameter, the raw server JWT (HS256, claims exactly
//! `{"server": true}`, built once) in `Authorization` and `Stream-Auth-Type: jwt`, and goes
//! through [`ProviderHttp`] (timeouts, retries, circuit breaker, classification).
//!
//! Mapping of the trait onto Stream:
//!
//! | Operation | Stream call |
//! |---|---|
//! | `upsert_users` | `POST /users` with a map id → user (≤ 100 per call) |
//! | `delete_users` | `POST /users/delete`, all hard (≤ 100 per call; 404 = done) |
//! | `create_channel` | `POST /channels/{type}/{id}/query` (get-or-create), then `add_members` for spec members the existing channel lacks |
//! | `update_metadata`, `set_frozen` | `PATCH /channels/{type}/{id}` with `set` / `unset` |
//! | `add_members`, `remove_members` | `POST /channels/{type}/{id}` with `add_members` / `remove_members` and an optional system `message` |
//! | `send_system_message` | `POST /channels/{type}/{id}/message` (a duplicate id = already posted) |
//! | `delete_channel` | `DELETE /channels/{type}/{id}?hard_delete=true` (404 = done) |
//! | `read_channels` | `POST /channels` filtered on `cid $in` (≤ 30 per call) |
//! | `recent_messages` | `POST /channels/{type}/{id}/query` with `messages.limit` |
//! | `send_message` | `POST /channels/{type}/{id}/message` as the member, with caregraph's deterministic message id; Stream's "already exists" is answered with `GET /messages/{id}` |
//! | `history` | `POST /channels/{type}/{id}/query` with `messages.limit` and `messages.id_lt` |
//! | `mark_read` | `POST /channels/{type}/{id}/read` with `user_id` |
//! | `issue_token` | an HS256 user token minted locally (no HTTP) |
//! | `revoke_tokens` | `PATCH /users` with `set.revoke_tokens_issued_before` (RFC 3339, milliseconds); a user Stream does not know is first created bare (`POST /users` with only the id) |
//!
//! System messages are sent as the user [`SYSTEM_USER_ID`], upserted once per process before
//! its first use.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{
    Method, RequestBuilder, Response, Url,
    header::{AUTHORIZATION, HeaderValue},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use super::{
    ChannelRef, ChannelSpec, ChannelState, ChatCredentials, ChatMessage, ChatProvider, ChatUser,
    ProviderError, Sent, SystemMessage, UserMessage,
};
use crate::{config::StreamConfig, providers::http::ProviderHttp};

mod wire;
use wire::{ChannelStateWire, MemberWire, MessageResponse, MessageWire, QueryChannelsResponse};

/// The Stream user that system messages are sent as.
pub const SYSTEM_USER_ID: &str = "caregraph-system";

/// The display name of [`SYSTEM_USER_ID`].
pub const SYSTEM_USER_NAME: &str = "caregraph";

/// Channels one `POST /channels` may return (Stream's maximum `limit`).
pub const READ_BATCH_LIMIT: usize = 30;

/// Users per `POST /users` and per `POST /users/delete`, and members per update.
const BATCH_LIMIT: usize = 100;

/// Stream's maximum `messages.limit` of a channel query.
const MESSAGE_LIMIT_MAX: u32 = 300;

/// Channel keys that are Stream's own: never sent as custom data (Stream's SDKs strip the first
/// ten on update; the rest have a meaning of their own and are set by dedicated fields).
const RESERVED_CHANNEL_KEYS: &[&str] = &[
    "config",
    "cid",
    "created_by",
    "id",
    "member_count",
    "type",
    "created_at",
    "updated_at",
    "last_message_at",
    "own_capabilities",
    "created_by_id",
    "members",
    "frozen",
    "disabled",
    "deleted_at",
    "team",
];

/// What every request needs, prepared once: the parsed base URL and the server token header.
#[derive(Debug)]
struct Prepared {
    /// `STREAM_BASE_URL`, parsed.
    base: Url,
    /// The server JWT as a sensitive header value (redacted in `Debug`).
    server_auth: HeaderValue,
}

/// Stream Chat.
#[derive(Debug)]
pub struct StreamChat {
    /// `STREAM_API_KEY`, sent as the `api_key` query parameter and handed to clients.
    api_key: String,
    /// `STREAM_API_SECRET`: signs the server token and user tokens.
    api_secret: SecretString,
    /// The base URL as configured (handed to clients as a connection setting).
    base_url: String,
    /// The base URL and server token, or why they could not be prepared (every call then fails
    /// with that reason, without a request).
    prepared: Result<Prepared, String>,
    /// The default lifetime of user tokens (used when `issue_token` is asked for zero).
    token_ttl: Duration,
    /// The resilient client.
    http: ProviderHttp,
    /// Set once the system user has been upserted in this process.
    system_user: OnceCell<()>,
}

impl StreamChat {
    /// The adapter for `config`; user tokens default to `token_ttl`.
    pub fn new(config: &StreamConfig, token_ttl: Duration, http: ProviderHttp) -> Self {
        let prepared = Url::parse(config.base_url.trim_end_matches('/'))
            .map_err(|e| format!("STREAM_BASE_URL is not a URL: {e}"))
            .and_then(|base| {
                if base.cannot_be_a_base() {
                    return Err("STREAM_BASE_URL cannot be a base URL".to_owned());
                }
                let token = sign(&json!({ "server": true }), &config.api_secret)
                    .map_err(|e| format!("signing the Stream server token failed: {e}"))?;
                let mut server_auth = HeaderValue::from_str(&token)
                    .map_err(|_| "the Stream server token is not a valid header".to_owned())?;
                server_auth.set_sensitive(true);
                Ok(Prepared { base, server_auth })
            });
        Self {
            api_key: config.api_key.clone(),
            api_secret: config.api_secret.clone(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            prepared,
            token_ttl,
            http,
            system_user: OnceCell::new(),
        }
    }

    /// The prepared request material, or a non-retryable error when configuration is unusable.
    fn prepared(&self) -> Result<&Prepared, ProviderError> {
        self.prepared
            .as_ref()
            .map_err(|why| ProviderError::Rejected {
                status: 0,
                message: why.clone(),
            })
    }

    /// Sends one request: `segments` are the path below the base URL (each percent-encoded),
    /// `query` comes after `api_key`, `body` is sent as JSON.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Response, ProviderError> {
        let prepared = self.prepared()?;
        let mut url = prepared.base.clone();
        url.path_segments_mut()
            .map_err(|()| ProviderError::Rejected {
                status: 0,
                message: "STREAM_BASE_URL cannot be a base URL".into(),
            })?
            .pop_if_empty()
            .extend(segments);
        self.http
            .send(operation, |client| {
                let request: RequestBuilder = client
                    .request(method.clone(), url.clone())
                    .query(&[("api_key", self.api_key.as_str())])
                    .query(query)
                    .header(AUTHORIZATION, prepared.server_auth.clone())
                    .header("Stream-Auth-Type", "jwt");
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await
    }

    /// Reads a successful response's JSON body as `T`.
    async fn read<T: for<'de> Deserialize<'de>>(response: Response) -> Result<T, ProviderError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("reading the Stream response: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ProviderError::Unavailable(format!("unexpected Stream response shape: {e}"))
        })
    }

    /// Upserts the system user once per process (again after a failure).
    async fn ensure_system_user(&self) -> Result<(), ProviderError> {
        self.system_user
            .get_or_try_init(|| async {
                self.upsert_users(&[ChatUser {
                    id: SYSTEM_USER_ID.to_owned(),
                    name: SYSTEM_USER_NAME.to_owned(),
                    image: None,
                }])
                .await
            })
            .await
            .map(|_| ())
    }

    /// The `message` object of a system message.
    fn system_message(message: &SystemMessage) -> Value {
        json!({
            "id": message.id,
            "text": message.text,
            "type": "system",
            "user_id": SYSTEM_USER_ID,
        })
    }

    /// `POST /channels/{type}/{id}` with one member operation (`add_members` or
    /// `remove_members`, also the operation's name) and an optional system message. A message whose id Stream already has
    /// is dropped and the member operation sent again without it.
    async fn update_members(
        &self,
        field: &'static str,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        if user_ids.is_empty() {
            return super::send_note(self, channel, message).await;
        }
        if message.is_some() {
            self.ensure_system_user().await?;
        }
        let chunks: Vec<&[String]> = user_ids.chunks(BATCH_LIMIT).collect();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            // The message goes with the last chunk, once every member is in (or out).
            let message = message.filter(|_| i == last);
            let mut body = json!({ field: chunk });
            if let Some(message) = message {
                body["message"] = Self::system_message(message);
            }
            let path = channel_path(channel);
            match self
                .call(field, Method::POST, &path, &[], Some(&body))
                .await
            {
                Ok(_) => {}
                Err(e) if message.is_some() && is_duplicate_message(&e) => {
                    let body = json!({ field: chunk });
                    self.call(field, Method::POST, &path, &[], Some(&body))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `PATCH /users` with one partial update that sets `revoke_tokens_issued_before`, as the
    /// official SDKs' `revokeUserToken` sends it; whether Stream knows the user (`false` when it
    /// answers 404, or leaves the user out of the updated `users`).
    async fn patch_revocation(&self, body: &Value, user_id: &str) -> Result<bool, ProviderError> {
        let response = match self
            .call("revoke_tokens", Method::PATCH, &["users"], &[], Some(body))
            .await
        {
            Ok(response) => response,
            Err(ProviderError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        let answer: Value = Self::read(response).await?;
        Ok(match answer.get("users") {
            Some(Value::Object(users)) => users.contains_key(user_id),
            // An answer without the map says nothing against the update.
            _ => true,
        })
    }

    /// `POST /channels/{type}/{id}/query` for messages only (`messages` is the pagination object);
    /// a channel that does not exist is [`ProviderError::NotFound`]. Oldest first, as Stream
    /// answers.
    async fn query_messages(
        &self,
        operation: &'static str,
        channel: &ChannelRef,
        messages: Value,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        let body = json!({
            "state": true,
            "watch": false,
            "presence": false,
            "messages": messages,
        });
        let mut path = channel_path(channel);
        path.push("query");
        let response = match self
            .call(operation, Method::POST, &path, &[], Some(&body))
            .await
        {
            Ok(response) => response,
            // Querying a channel that does not exist without `created_by` is Stream's
            // "cannot create it" input error: the channel is not there.
            Err(ProviderError::Rejected {
                status: 400,
                message,
            }) if message.contains("created_by") => {
                return Err(ProviderError::NotFound);
            }
            Err(e) => return Err(e),
        };
        let state: ChannelStateWire = Self::read(response).await?;
        let mut messages: Vec<ChatMessage> = state
            .messages
            .into_iter()
            .map(MessageWire::into_chat)
            .collect();
        messages.sort_by_key(|m| m.sent_at);
        Ok(messages)
    }

    /// `GET /messages/{id}`: a message posted before (for a repeated send).
    async fn get_message(&self, id: &str) -> Result<ChatMessage, ProviderError> {
        let response = self
            .call("get_message", Method::GET, &["messages", id], &[], None)
            .await?;
        let answer: MessageResponse = Self::read(response).await?;
        Ok(answer.message.into_chat())
    }

    /// `POST /channels` for at most [`READ_BATCH_LIMIT`] channels.
    async fn read_batch(
        &self,
        channels: &[ChannelRef],
        for_user: &str,
    ) -> Result<Vec<ChannelState>, ProviderError> {
        let cids: Vec<String> = channels.iter().map(ChannelRef::cid).collect();
        let body = json!({
            "filter_conditions": { "cid": { "$in": cids } },
            "limit": cids.len(),
            "state": true,
            "watch": false,
            "presence": false,
            "message_limit": 1,
            "user_id": for_user,
        });
        let response = self
            .call(
                "query_channels",
                Method::POST,
                &["channels"],
                &[],
                Some(&body),
            )
            .await?;
        let parsed: QueryChannelsResponse = Self::read(response).await?;
        let mut found: HashMap<String, ChannelState> = HashMap::new();
        for entry in parsed.channels {
            let Some(channel) = entry.channel else {
                continue;
            };
            let Some(reference) = channel.reference() else {
                continue;
            };
            let unread_count = entry
                .read
                .iter()
                .find(|r| r.user.as_ref().is_some_and(|u| u.id == for_user))
                .map_or(0, |r| r.unread_messages);
            let member_count = channel
                .member_count
                .or_else(|| entry.members.as_ref().map(|m| count_u32(m.len())))
                .unwrap_or(0);
            let state = ChannelState {
                channel: reference,
                last_message: entry
                    .messages
                    .into_iter()
                    .last()
                    .map(MessageWire::into_chat),
                member_count,
                frozen: channel.frozen,
                unread_count: Some(unread_count),
            };
            found.insert(state.channel.cid(), state);
        }
        // In the order asked for; unknown channels are left out.
        Ok(cids.iter().filter_map(|cid| found.remove(cid)).collect())
    }
}

#[async_trait]
impl ChatProvider for StreamChat {
    /// `stream`.
    fn name(&self) -> &'static str {
        "stream"
    }

    /// Stream's maximum `limit` of `POST /channels`: 30.
    fn read_batch_limit(&self) -> usize {
        READ_BATCH_LIMIT
    }

    /// `POST /users` with a map id → `{id, name, image?}`, at most 100 users per call.
    async fn upsert_users(&self, users: &[ChatUser]) -> Result<(), ProviderError> {
        for chunk in users.chunks(BATCH_LIMIT) {
            let mut map = Map::new();
            for user in chunk {
                let mut wire = Map::new();
                wire.insert("id".into(), json!(user.id));
                wire.insert("name".into(), json!(user.name));
                if let Some(image) = &user.image {
                    wire.insert("image".into(), json!(image));
                }
                map.insert(user.id.clone(), Value::Object(wire));
            }
            let body = json!({ "users": map });
            self.call("upsert_users", Method::POST, &["users"], &[], Some(&body))
                .await?;
        }
        Ok(())
    }

    /// `POST /users/delete` (user, messages and conversations hard), at most 100 ids per call;
    /// a 404 counts as deleted. Stream finishes the deletion asynchronously; the task is not polled.
    async fn delete_users(&self, user_ids: &[String]) -> Result<(), ProviderError> {
        for chunk in user_ids.chunks(BATCH_LIMIT) {
            let body = json!({
                "user_ids": chunk,
                "user": "hard",
                "messages": "hard",
                "conversations": "hard",
            });
            match self
                .call(
                    "delete_users",
                    Method::POST,
                    &["users", "delete"],
                    &[],
                    Some(&body),
                )
                .await
            {
                Ok(_) | Err(ProviderError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `POST /channels/{type}/{id}/query` with `created_by_id`, `members`, `frozen`, name, image and
    /// the custom data flattened into `data`; then `add_members` for members an existing channel lacks.
    async fn create_channel(&self, spec: &ChannelSpec) -> Result<(), ProviderError> {
        let mut data = custom_data(&spec.metadata);
        if let Some(name) = &spec.name {
            data.insert("name".into(), json!(name));
        }
        if let Some(image) = &spec.image {
            data.insert("image".into(), json!(image));
        }
        data.insert("created_by_id".into(), json!(spec.created_by));
        data.insert("members".into(), json!(spec.members));
        data.insert("frozen".into(), json!(spec.frozen));
        let body = json!({
            "data": data,
            "state": false,
            "watch": false,
            "presence": false,
        });
        let mut path = channel_path(&spec.channel);
        path.push("query");
        let response = self
            .call("create_channel", Method::POST, &path, &[], Some(&body))
            .await?;
        // Stream ignores `data` for a channel that exists: add the members it lacks. When the
        // answer lists no members, add them all (adding a member who is in changes nothing).
        let state: ChannelStateWire = Self::read(response).await?;
        let missing: Vec<String> = match &state.members {
            Some(members) => {
                let present: Vec<&str> = members.iter().filter_map(MemberWire::id).collect();
                spec.members
                    .iter()
                    .filter(|m| !present.contains(&m.as_str()))
                    .cloned()
                    .collect()
            }
            None => spec.members.clone(),
        };
        if missing.is_empty() {
            return Ok(());
        }
        self.update_members("add_members", &spec.channel, &missing, None)
            .await
    }

    /// `PATCH /channels/{type}/{id}` with `set` and `unset` (reserved keys are left out; nothing is
    /// sent when nothing is left).
    async fn update_metadata(
        &self,
        channel: &ChannelRef,
        set: &Map<String, Value>,
        unset: &[String],
    ) -> Result<(), ProviderError> {
        let set = custom_data(set);
        let unset: Vec<&String> = unset.iter().filter(|k| !reserved(k)).collect();
        if set.is_empty() && unset.is_empty() {
            return Ok(());
        }
        let body = json!({ "set": set, "unset": unset });
        self.call(
            "update_metadata",
            Method::PATCH,
            &channel_path(channel),
            &[],
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// `POST /channels/{type}/{id}` with `add_members` and the optional system `message`.
    async fn add_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        self.update_members("add_members", channel, user_ids, message)
            .await
    }

    /// `POST /channels/{type}/{id}` with `remove_members` and the optional system `message`.
    async fn remove_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        self.update_members("remove_members", channel, user_ids, message)
            .await
    }

    /// `PATCH /channels/{type}/{id}` with `set.frozen`.
    async fn set_frozen(&self, channel: &ChannelRef, frozen: bool) -> Result<(), ProviderError> {
        let body = json!({ "set": { "frozen": frozen } });
        self.call(
            "set_frozen",
            Method::PATCH,
            &channel_path(channel),
            &[],
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// `POST /channels/{type}/{id}/message` as the system user with the message's id; Stream's
    /// "a message with ID … already exists" counts as posted.
    async fn send_system_message(
        &self,
        channel: &ChannelRef,
        message: &SystemMessage,
    ) -> Result<(), ProviderError> {
        self.ensure_system_user().await?;
        let body = json!({ "message": Self::system_message(message) });
        let mut path = channel_path(channel);
        path.push("message");
        match self
            .call("send_system_message", Method::POST, &path, &[], Some(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_message(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /channels/{type}/{id}?hard_delete=true`; a 404 counts as deleted.
    async fn delete_channel(&self, channel: &ChannelRef) -> Result<(), ProviderError> {
        match self
            .call(
                "delete_channel",
                Method::DELETE,
                &channel_path(channel),
                &[("hard_delete", "true")],
                None,
            )
            .await
        {
            Ok(_) | Err(ProviderError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An HS256 token `{user_id, iat, exp}` signed with the API secret, without a request; a zero
    /// `ttl` means the configured token lifetime.
    async fn issue_token(
        &self,
        user: &ChatUser,
        ttl: Duration,
    ) -> Result<ChatCredentials, ProviderError> {
        let ttl = if ttl.is_zero() { self.token_ttl } else { ttl };
        let now = Utc::now();
        let iat = now.timestamp();
        let exp = iat.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let token = sign(
            &json!({ "user_id": user.id, "iat": iat, "exp": exp }),
            &self.api_secret,
        )
        .map_err(|e| ProviderError::Rejected {
            status: 0,
            message: format!("signing a Stream user token failed: {e}"),
        })?;
        Ok(ChatCredentials {
            provider: "stream",
            user_id: user.id.clone(),
            token,
            expires_at: DateTime::from_timestamp(exp, 0),
            api_key: Some(self.api_key.clone()),
            app_id: None,
            connection: json!({ "base_url": self.base_url }),
        })
    }

    /// `PATCH /users` with `{"users": [{"id", "set": {"revoke_tokens_issued_before"}}]}`, the
    /// instant in RFC 3339 with milliseconds and `Z` (the JS SDK's `toISOString`). Stream then
    /// refuses the user's tokens whose `iat` is earlier. A user Stream does not know could still
    /// be created by a client connecting with a token minted for them, so they are created bare
    /// (`POST /users` with only the id) and the revocation is sent again.
    async fn revoke_tokens(
        &self,
        user_id: &str,
        issued_before: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        let body = json!({
            "users": [{
                "id": user_id,
                "set": {
                    "revoke_tokens_issued_before":
                        issued_before.to_rfc3339_opts(SecondsFormat::Millis, true),
                },
            }],
        });
        if self.patch_revocation(&body, user_id).await? {
            return Ok(());
        }
        let bare = json!({ "users": { user_id: { "id": user_id } } });
        self.call("upsert_users", Method::POST, &["users"], &[], Some(&bare))
            .await?;
        if self.patch_revocation(&body, user_id).await? {
            Ok(())
        } else {
            Err(ProviderError::Unavailable(format!(
                "Stream did not record the token revocation of user {user_id}"
            )))
        }
    }

    /// `POST /channels` on `cid $in`, in batches of [`READ_BATCH_LIMIT`].
    async fn read_channels(
        &self,
        channels: &[ChannelRef],
        for_user: &str,
    ) -> Result<Vec<ChannelState>, ProviderError> {
        super::read_in_batches(channels, READ_BATCH_LIMIT, |chunk| {
            self.read_batch(chunk, for_user)
        })
        .await
    }

    /// `POST /channels/{type}/{id}/query` with `messages.limit` (at most 300); a channel that does
    /// not exist is [`ProviderError::NotFound`].
    async fn recent_messages(
        &self,
        channel: &ChannelRef,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query_messages(
            "recent_messages",
            channel,
            json!({ "limit": limit.min(MESSAGE_LIMIT_MAX) }),
        )
        .await
    }

    /// `POST /channels/{type}/{id}/message` with `{id, text, user_id}`: Stream keeps message ids
    /// unique, so a repeat is refused ("a message with ID … already exists") and answered with
    /// the stored message (`GET /messages/{id}`).
    async fn send_message(
        &self,
        channel: &ChannelRef,
        message: &UserMessage,
    ) -> Result<Sent, ProviderError> {
        let body = json!({
            "message": {
                "id": message.id,
                "text": message.text,
                "user_id": message.author,
            },
        });
        let mut path = channel_path(channel);
        path.push("message");
        match self
            .call("send_message", Method::POST, &path, &[], Some(&body))
            .await
        {
            Ok(response) => {
                let answer: MessageResponse = Self::read(response).await?;
                Ok(Sent {
                    message: answer.message.into_chat(),
                    fresh: true,
                })
            }
            Err(e) if is_duplicate_message(&e) => Ok(Sent {
                message: self.get_message(&message.id).await?,
                fresh: false,
            }),
            Err(e) => Err(e),
        }
    }

    /// `POST /channels/{type}/{id}/query` with `messages: {limit, id_lt}`, newest first.
    async fn history(
        &self,
        channel: &ChannelRef,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut page = json!({ "limit": limit.min(MESSAGE_LIMIT_MAX) });
        if let Some(before) = before {
            page["id_lt"] = json!(before);
        }
        let mut messages = self.query_messages("history", channel, page).await?;
        messages.reverse();
        Ok(messages)
    }

    /// `POST /channels/{type}/{id}/read` with `user_id`: the member's read marker moves to the
    /// latest message.
    async fn mark_read(&self, channel: &ChannelRef, user_id: &str) -> Result<(), ProviderError> {
        let mut path = channel_path(channel);
        path.push("read");
        let body = json!({ "user_id": user_id });
        self.call("mark_read", Method::POST, &path, &[], Some(&body))
            .await?;
        Ok(())
    }
}

/// Signs `claims` as an HS256 JWT (`{"alg":"HS256","typ":"JWT"}`) with `secret`.
fn sign(claims: &Value, secret: &SecretString) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

/// `["channels", type, id]`.
fn channel_path(channel: &ChannelRef) -> Vec<&str> {
    vec!["channels", &channel.channel_type, &channel.channel_id]
}

/// Whether `key` is one of Stream's own channel keys.
fn reserved(key: &str) -> bool {
    RESERVED_CHANNEL_KEYS.contains(&key)
}

/// Reserved keys that caregraph's channel metadata carries on purpose and the request sends
/// through a field of its own: `frozen` follows the chat's status in the metadata, and goes to
/// Stream as `ChannelSpec::frozen` on creation and by `set_frozen` after.
const CARRIED_BY_ITS_OWN_FIELD: &[&str] = &["frozen"];

/// Custom channel data without Stream's reserved keys. Dropping one the request carries by its
/// own field is the normal path and silent; any other is logged by name (a caller sent
/// something Stream would not keep).
fn custom_data(metadata: &Map<String, Value>) -> Map<String, Value> {
    metadata
        .iter()
        .filter(|(k, _)| {
            if !reserved(k) {
                return true;
            }
            if !CARRIED_BY_ITS_OWN_FIELD.contains(&k.as_str()) {
                tracing::warn!(key = %k, "ignoring a reserved Stream channel key in custom data");
            }
            false
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether Stream refused a message because its id is taken: 400, code 4,
/// `SendMessage failed with error: "a message with ID … already exists"`.
fn is_duplicate_message(error: &ProviderError) -> bool {
    match error {
        ProviderError::Rejected {
            status: 400,
            message,
        } => {
            let message = message.to_ascii_lowercase();
            message.contains("message with id") && message.contains("already exists")
        }
        _ => false,
    }
}

/// A count as `u32`, saturating.
fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::logged;

    #[test]
    fn the_frozen_flag_of_the_status_metadata_is_dropped_without_a_warning() {
        let metadata = json!({"status": "active", "frozen": false, "isGroup": true});
        let Value::Object(metadata) = metadata else {
            unreachable!("an object")
        };
        let (data, lines) = logged(|| custom_data(&metadata));
        assert_eq!(
            data,
            json!({"status": "active", "isGroup": true})
                .as_object()
                .cloned()
                .unwrap_or_default()
        );
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn any_other_reserved_key_in_custom_data_is_warned_of_by_name() {
        let metadata = json!({"team": "a", "created_by_id": "x", "topic": "t"});
        let Value::Object(metadata) = metadata else {
            unreachable!("an object")
        };
        let (data, lines) = logged(|| custom_data(&metadata));
        assert_eq!(data.keys().collect::<Vec<_>>(), ["topic"]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("WARN") && l.contains("reserved Stream channel key")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|l| l.contains("key=team")), "{lines:?}");
    }
}
