//! The Sendbird chat provider: Chat Platform API v3 over [`ProviderHttp`].
//!
//! Mapping of the trait onto Sendbird (see `docs/providers.md` §2):
//!
//! - every call carries the `Api-Token` header (marked sensitive, never logged);
//! - users: `POST /v3/users`, and when Sendbird answers "already exists", `PUT /v3/users/{id}`
//!   (there is no batch upsert), a few users at a time;
//! - channels are group channels whose `channel_url` is the [`ChannelRef`]'s id, `custom_type`
//!   its type and `data` the metadata serialised as a JSON object string;
//! - metadata updates read the channel, merge into `data` and write it back (only when it
//!   changed): `data` is where [`Sendbird::create_channel`] keeps the metadata, and Sendbird's
//!   separate channel-metadata store holds strings only and is not documented in `docs/providers.md`;
//! - system messages are admin messages (`ADMM`) with `custom_type` [`SYSTEM_CUSTOM_TYPE`], the
//!   caregraph id in `data` and in Sendbird's `dedup_id`; the recent system messages are checked
//!   for the id first, and a duplicate answered by Sendbird counts as posted;
//! - members' messages (`send_message`) are text messages (`MESG`) sent as the member with
//!   caregraph's deterministic id in `dedup_id` and in `data`; a repeat Sendbird refuses as a
//!   duplicate is answered with the message found by that id among the recent ones;
//! - `history` lists messages before a message id (`message_id`, `include=false`, `reverse=true`:
//!   newest first), `mark_read` is `PUT /v3/group_channels/{url}/messages/mark_as_read`;
//! - `read_channels` is one `GET /v3/users/{user}/my_group_channels?channel_urls=…` per 100
//!   channels, because only the per-user list carries that user's `unread_message_count`;
//! - `revoke_tokens` is `DELETE /v3/users/{user}/token`, which revokes **all** the user's session
//!   tokens (Sendbird takes no instant, so a token issued after `issued_before` but before the
//!   delivery goes too: the app fetches a new one); a user Sendbird does not know has none.
//!
//! Sendbird answers most failures with HTTP 400 and `{error, code, message}`: a "not found"
//! (code 400201) becomes [`ProviderError::NotFound`] here, and "already exists" (400202) is
//! success where the operation is idempotent.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{TryStreamExt, stream};
use reqwest::{Method, RequestBuilder, header::HeaderValue};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use super::{
    ChannelRef, ChannelSpec, ChannelState, ChatCredentials, ChatMessage, ChatProvider, ChatUser,
    ProviderError, Sent, SystemMessage, UserMessage,
};
use crate::{config::SendbirdConfig, providers::http::ProviderHttp};

mod wire;
use wire::{count, is_exists, joined, malformed, message_from, refine, system_id_of};

/// How many channels one `read_channels` request may name (Sendbird's page limit).
pub const READ_BATCH_LIMIT: usize = 100;

/// How many per-user calls (create/update/delete user) run at once.
pub const USER_CONCURRENCY: usize = 4;

/// The `custom_type` of caregraph's system (admin) messages.
pub const SYSTEM_CUSTOM_TYPE: &str = "caregraph_system";

/// The key of the system message id inside an admin message's `data`.
pub const SYSTEM_ID_KEY: &str = "caregraph_message_id";

/// How many recent system messages are searched for a repeated id before posting.
pub const DEDUP_WINDOW: u32 = 100;

/// Sendbird's largest `prev_limit` when listing messages.
const MAX_MESSAGE_PAGE: u32 = 200;

/// Added to "now" as the reference timestamp of message lists, so that a Sendbird clock ahead
/// of ours still returns the newest messages.
const CLOCK_SKEW_MS: i64 = 60_000;

/// The Sendbird adapter.
pub struct Sendbird {
    app_id: String,
    base_url: String,
    /// The `Api-Token` header value; `None` when the configured token is not a valid header.
    api_token: Option<HeaderValue>,
    token_ttl: Duration,
    http: ProviderHttp,
}

impl std::fmt::Debug for Sendbird {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sendbird")
            .field("app_id", &self.app_id)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Sendbird {
    /// An adapter for the configured application; `token_ttl` is the session-token lifetime used
    /// when `issue_token` is asked for a zero ttl.
    pub fn new(config: &SendbirdConfig, token_ttl: Duration, http: ProviderHttp) -> Self {
        let api_token = HeaderValue::from_str(config.api_token.expose_secret())
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Self {
            app_id: config.app_id.clone(),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_token,
            token_ttl,
            http,
        }
    }

    /// `{base}/v3/{segments…}` with each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> String {
        let mut url = format!("{}/v3", self.base_url);
        for s in segments {
            url.push('/');
            url.push_str(&super::path_segment(s));
        }
        url
    }

    /// Sends one request through the resilient client and reads the JSON answer (`Null` when the
    /// body is empty or not JSON). Sendbird's "not found" is refined to `NotFound`.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        url: String,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let Some(token) = self.api_token.clone() else {
            return Err(ProviderError::Rejected {
                status: 401,
                message: "SENDBIRD_API_TOKEN is not a valid header value".into(),
            });
        };
        let build = |client: &reqwest::Client| -> RequestBuilder {
            let mut request = client
                .request(method.clone(), &url)
                .header("Api-Token", token.clone())
                .header(reqwest::header::ACCEPT, "application/json");
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            request
        };
        let response = self.http.send(operation, build).await.map_err(refine)?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("reading sendbird answer: {e}")))?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Creates one user, or updates them when they exist.
    async fn upsert_user(&self, user: &ChatUser) -> Result<(), ProviderError> {
        let profile_url = user.image.clone().unwrap_or_default();
        let create = json!({
            "user_id": user.id,
            "nickname": user.name,
            "profile_url": profile_url,
        });
        match self
            .call(
                "create_user",
                Method::POST,
                self.url(&["users"]),
                &[],
                Some(&create),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_exists(&e) => {
                let update = json!({ "nickname": user.name, "profile_url": profile_url });
                self.call(
                    "update_user",
                    Method::PUT,
                    self.url(&["users", &user.id]),
                    &[],
                    Some(&update),
                )
                .await
                .map(drop)
            }
            Err(e) => Err(e),
        }
    }

    /// Invites users into a channel (`POST …/invite`), already joined so that they can post even
    /// where the app does not auto-accept invitations.
    async fn invite(&self, channel: &ChannelRef, user_ids: &[String]) -> Result<(), ProviderError> {
        if user_ids.is_empty() {
            return Ok(());
        }
        self.call(
            "invite_members",
            Method::POST,
            self.url(&["group_channels", &channel.channel_id, "invite"]),
            &[],
            Some(&json!({ "user_ids": user_ids, "invitation_status": joined(user_ids) })),
        )
        .await
        .map(drop)
    }

    /// Lists a channel's messages before now (`prev_limit` of them, oldest first).
    async fn list_messages(
        &self,
        operation: &'static str,
        channel: &ChannelRef,
        limit: u32,
        filters: &[(&str, String)],
    ) -> Result<Vec<Value>, ProviderError> {
        let reference = Utc::now().timestamp_millis() + CLOCK_SKEW_MS;
        let mut query = vec![
            ("message_ts", reference.to_string()),
            ("prev_limit", limit.min(MAX_MESSAGE_PAGE).to_string()),
            ("next_limit", "0".to_owned()),
            ("include", "true".to_owned()),
            ("reverse", "false".to_owned()),
        ];
        query.extend(filters.iter().cloned());
        let answer = self
            .call(
                operation,
                Method::GET,
                self.url(&["group_channels", &channel.channel_id, "messages"]),
                &query,
                None,
            )
            .await?;
        match answer.get("messages") {
            Some(Value::Array(messages)) => Ok(messages.clone()),
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(malformed("messages is not a list")),
        }
    }

    /// A page of a channel's messages before the message `before` (before now when `None`),
    /// newest first.
    async fn page_messages(
        &self,
        channel: &ChannelRef,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<Value>, ProviderError> {
        let mut query = match before {
            Some(id) => {
                // Sendbird's message ids are integers: anything else names no message here.
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ProviderError::NotFound);
                }
                vec![
                    ("message_id", id.to_owned()),
                    ("include", "false".to_owned()),
                ]
            }
            None => vec![
                (
                    "message_ts",
                    (Utc::now().timestamp_millis() + CLOCK_SKEW_MS).to_string(),
                ),
                ("include", "true".to_owned()),
            ],
        };
        query.extend([
            ("prev_limit", limit.min(MAX_MESSAGE_PAGE).to_string()),
            ("next_limit", "0".to_owned()),
            ("reverse", "true".to_owned()),
        ]);
        let answer = self
            .call(
                "history",
                Method::GET,
                self.url(&["group_channels", &channel.channel_id, "messages"]),
                &query,
                None,
            )
            .await?;
        match answer.get("messages") {
            Some(Value::Array(messages)) => Ok(messages.clone()),
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(malformed("messages is not a list")),
        }
    }

    /// Reads at most [`READ_BATCH_LIMIT`] channels for one user in one request.
    async fn read_chunk(
        &self,
        chunk: &[ChannelRef],
        for_user: &str,
    ) -> Result<Vec<ChannelState>, ProviderError> {
        let mut wanted: HashMap<&str, &ChannelRef> = HashMap::new();
        let mut urls: Vec<&str> = Vec::new();
        for c in chunk {
            if wanted.insert(c.channel_id.as_str(), c).is_none() {
                urls.push(&c.channel_id);
            }
        }
        let query = [
            ("channel_urls", urls.join(",")),
            ("limit", READ_BATCH_LIMIT.to_string()),
            ("show_empty", "true".to_owned()),
            ("show_frozen", "true".to_owned()),
            ("show_member", "false".to_owned()),
            ("hidden_mode", "all".to_owned()),
            ("member_state_filter", "all".to_owned()),
        ];
        let answer = match self
            .call(
                "read_channels",
                Method::GET,
                self.url(&["users", for_user, "my_group_channels"]),
                &query,
                None,
            )
            .await
        {
            Ok(answer) => answer,
            // The user is unknown at Sendbird: they are in no channel.
            Err(ProviderError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let channels = match answer.get("channels") {
            Some(Value::Array(channels)) => channels,
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(_) => return Err(malformed("channels is not a list")),
        };
        let mut out = Vec::with_capacity(channels.len());
        for ch in channels {
            let Some(url) = ch.get("channel_url").and_then(Value::as_str) else {
                continue;
            };
            let Some(channel) = wanted.remove(url) else {
                continue;
            };
            out.push(ChannelState {
                channel: channel.clone(),
                last_message: ch.get("last_message").and_then(message_from),
                member_count: count(ch.get("member_count")),
                frozen: ch.get("freeze").and_then(Value::as_bool).unwrap_or(false),
                unread_count: Some(count(ch.get("unread_message_count"))),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl ChatProvider for Sendbird {
    fn name(&self) -> &'static str {
        "sendbird"
    }

    fn read_batch_limit(&self) -> usize {
        READ_BATCH_LIMIT
    }

    async fn upsert_users(&self, users: &[ChatUser]) -> Result<(), ProviderError> {
        // The last entry wins when an id repeats, and each id is written once.
        let mut latest: HashMap<&str, &ChatUser> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for u in users {
            if latest.insert(u.id.as_str(), u).is_none() {
                order.push(&u.id);
            }
        }
        stream::iter(
            order
                .into_iter()
                .filter_map(|id| latest.get(id).copied())
                .map(Ok),
        )
        .try_for_each_concurrent(USER_CONCURRENCY, |u| self.upsert_user(u))
        .await
    }

    async fn delete_users(&self, user_ids: &[String]) -> Result<(), ProviderError> {
        let mut ids: Vec<&String> = user_ids.iter().collect();
        ids.sort();
        ids.dedup();
        stream::iter(ids.into_iter().map(Ok))
            .try_for_each_concurrent(USER_CONCURRENCY, |id| async move {
                match self
                    .call(
                        "delete_user",
                        Method::DELETE,
                        self.url(&["users", id]),
                        &[],
                        None,
                    )
                    .await
                {
                    Ok(_) | Err(ProviderError::NotFound) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    async fn create_channel(&self, spec: &ChannelSpec) -> Result<(), ProviderError> {
        let data = serde_json::to_string(&spec.metadata).map_err(|e| ProviderError::Rejected {
            status: 400,
            message: format!("channel metadata is not serialisable: {e}"),
        })?;
        let mut body = Map::new();
        body.insert("channel_url".into(), json!(spec.channel.channel_id));
        body.insert("custom_type".into(), json!(spec.channel.channel_type));
        if let Some(name) = &spec.name {
            body.insert("name".into(), json!(name));
        }
        if let Some(image) = &spec.image {
            body.insert("cover_url".into(), json!(image));
        }
        body.insert("user_ids".into(), json!(spec.members));
        body.insert("invitation_status".into(), joined(&spec.members));
        body.insert("data".into(), json!(data));
        body.insert("is_distinct".into(), json!(false));
        let body = Value::Object(body);
        match self
            .call(
                "create_channel",
                Method::POST,
                self.url(&["group_channels"]),
                &[],
                Some(&body),
            )
            .await
        {
            Ok(_) => {
                if spec.frozen {
                    self.set_frozen(&spec.channel, true).await?;
                }
                Ok(())
            }
            // The channel exists: leave it as it is, but make sure the members are in.
            Err(e) if is_exists(&e) => self.invite(&spec.channel, &spec.members).await,
            Err(e) => Err(e),
        }
    }

    async fn update_metadata(
        &self,
        channel: &ChannelRef,
        set: &Map<String, Value>,
        unset: &[String],
    ) -> Result<(), ProviderError> {
        let url = self.url(&["group_channels", &channel.channel_id]);
        let current = self
            .call("read_channel", Method::GET, url.clone(), &[], None)
            .await?;
        let data = current.get("data").and_then(Value::as_str).unwrap_or("");
        let mut merged = if data.trim().is_empty() {
            Map::new()
        } else {
            match serde_json::from_str::<Value>(data) {
                Ok(Value::Object(map)) => map,
                // Not caregraph's: refuse rather than overwrite someone else's data.
                _ => {
                    return Err(ProviderError::Rejected {
                        status: 422,
                        message: "channel data is not a JSON object".into(),
                    });
                }
            }
        };
        let before = merged.clone();
        for (k, v) in set {
            merged.insert(k.clone(), v.clone());
        }
        for k in unset {
            merged.remove(k);
        }
        if merged == before {
            return Ok(());
        }
        let data = Value::Object(merged).to_string();
        self.call(
            "update_metadata",
            Method::PUT,
            url,
            &[],
            Some(&json!({ "data": data })),
        )
        .await
        .map(drop)
    }

    async fn add_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        self.invite(channel, user_ids).await?;
        super::send_note(self, channel, message).await
    }

    async fn remove_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        if !user_ids.is_empty() {
            self.call(
                "remove_members",
                Method::PUT,
                self.url(&["group_channels", &channel.channel_id, "leave"]),
                &[],
                Some(&json!({ "user_ids": user_ids })),
            )
            .await?;
        }
        super::send_note(self, channel, message).await
    }

    async fn set_frozen(&self, channel: &ChannelRef, frozen: bool) -> Result<(), ProviderError> {
        self.call(
            "set_frozen",
            Method::PUT,
            self.url(&["group_channels", &channel.channel_id, "freeze"]),
            &[],
            Some(&json!({ "freeze": frozen })),
        )
        .await
        .map(drop)
    }

    async fn send_system_message(
        &self,
        channel: &ChannelRef,
        message: &SystemMessage,
    ) -> Result<(), ProviderError> {
        let recent = self
            .list_messages(
                "find_system_message",
                channel,
                DEDUP_WINDOW,
                &[
                    ("message_type", "ADMM".to_owned()),
                    ("custom_types", SYSTEM_CUSTOM_TYPE.to_owned()),
                ],
            )
            .await?;
        if recent
            .iter()
            .any(|m| system_id_of(m).as_deref() == Some(message.id.as_str()))
        {
            return Ok(());
        }
        let body = json!({
            "message_type": "ADMM",
            "message": message.text,
            "custom_type": SYSTEM_CUSTOM_TYPE,
            "data": json!({ SYSTEM_ID_KEY: message.id }).to_string(),
            "dedup_id": message.id,
        });
        match self
            .call(
                "send_system_message",
                Method::POST,
                self.url(&["group_channels", &channel.channel_id, "messages"]),
                &[],
                Some(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Sendbird's own dedup_id check caught a repeat the window missed.
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_channel(&self, channel: &ChannelRef) -> Result<(), ProviderError> {
        match self
            .call(
                "delete_channel",
                Method::DELETE,
                self.url(&["group_channels", &channel.channel_id]),
                &[],
                None,
            )
            .await
        {
            Ok(_) | Err(ProviderError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn revoke_tokens(
        &self,
        user_id: &str,
        _issued_before: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        match self
            .call(
                "revoke_tokens",
                Method::DELETE,
                self.url(&["users", user_id, "token"]),
                &[],
                None,
            )
            .await
        {
            // 400201: Sendbird does not know the user, who then holds no session token.
            Ok(_) | Err(ProviderError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn issue_token(
        &self,
        user: &ChatUser,
        ttl: Duration,
    ) -> Result<ChatCredentials, ProviderError> {
        let ttl = if ttl.is_zero() { self.token_ttl } else { ttl };
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_ms = Utc::now().timestamp_millis().saturating_add(ttl_ms);
        let url = self.url(&["users", &user.id, "token"]);
        let body = json!({ "expires_at": expires_ms });
        let answer = match self
            .call("issue_token", Method::POST, url.clone(), &[], Some(&body))
            .await
        {
            Ok(answer) => answer,
            // Sendbird does not know the user yet: create them, then ask again.
            Err(ProviderError::NotFound) => {
                self.upsert_user(user).await?;
                self.call("issue_token", Method::POST, url, &[], Some(&body))
                    .await?
            }
            Err(e) => return Err(e),
        };
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("no token"))?
            .to_owned();
        let expires_at = answer
            .get("expires_at")
            .and_then(Value::as_i64)
            .unwrap_or(expires_ms);
        Ok(ChatCredentials {
            provider: "sendbird",
            user_id: user.id.clone(),
            token,
            expires_at: DateTime::from_timestamp_millis(expires_at),
            api_key: None,
            app_id: Some(self.app_id.clone()),
            connection: Value::Object(Map::new()),
        })
    }

    async fn read_channels(
        &self,
        channels: &[ChannelRef],
        for_user: &str,
    ) -> Result<Vec<ChannelState>, ProviderError> {
        super::read_in_batches(channels, READ_BATCH_LIMIT, |chunk| {
            self.read_chunk(chunk, for_user)
        })
        .await
    }

    async fn recent_messages(
        &self,
        channel: &ChannelRef,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let messages = self
            .list_messages("recent_messages", channel, limit, &[])
            .await?;
        let mut out: Vec<ChatMessage> = messages.iter().filter_map(message_from).collect();
        out.sort_by_key(|m| m.sent_at);
        Ok(out)
    }

    /// `POST …/messages` as the member (`MESG`) with `dedup_id` = the message's id; a repeat
    /// Sendbird refuses is answered with the message of that id among the latest
    /// [`DEDUP_WINDOW`].
    async fn send_message(
        &self,
        channel: &ChannelRef,
        message: &UserMessage,
    ) -> Result<Sent, ProviderError> {
        let body = json!({
            "message_type": "MESG",
            "user_id": message.author,
            "message": message.text,
            "data": json!({ SYSTEM_ID_KEY: message.id }).to_string(),
            "dedup_id": message.id,
        });
        match self
            .call(
                "send_message",
                Method::POST,
                self.url(&["group_channels", &channel.channel_id, "messages"]),
                &[],
                Some(&body),
            )
            .await
        {
            Ok(answer) => Ok(Sent {
                message: message_from(&answer).ok_or_else(|| malformed("message without id"))?,
                fresh: true,
            }),
            Err(e) if is_exists(&e) => {
                let recent = self
                    .list_messages(
                        "find_message",
                        channel,
                        DEDUP_WINDOW,
                        &[("message_type", "MESG".to_owned())],
                    )
                    .await?;
                let first = recent
                    .iter()
                    .find(|m| system_id_of(m).as_deref() == Some(message.id.as_str()))
                    .and_then(message_from)
                    .ok_or(e)?;
                Ok(Sent {
                    message: first,
                    fresh: false,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `GET …/messages` before `before` (`message_id`, exclusive), newest first.
    async fn history(
        &self,
        channel: &ChannelRef,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let page = self.page_messages(channel, limit, before).await?;
        Ok(page.iter().filter_map(message_from).collect())
    }

    /// `PUT /v3/group_channels/{url}/messages/mark_as_read` with `user_id`.
    async fn mark_read(&self, channel: &ChannelRef, user_id: &str) -> Result<(), ProviderError> {
        self.call(
            "mark_read",
            Method::PUT,
            self.url(&[
                "group_channels",
                &channel.channel_id,
                "messages",
                "mark_as_read",
            ]),
            &[],
            Some(&json!({ "user_id": user_id })),
        )
        .await
        .map(drop)
    }
}
