//! The fake Sendbird server: Chat Platform API v3 over in-memory state (users, group channels
//! with their url, custom type, name, data, members, freeze flag, messages and read state),
//! answering in the shapes of `docs/providers.md` §2 and failing the way Sendbird does: HTTP 400
//! with `{"error": true, "code", "message"}` (400201 not found, 400202 already exists, 400105
//! missing parameter, …), and 401 with code 400401 when the `Api-Token` header is wrong.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use caregraph::{
    config::SendbirdConfig,
    providers::{
        chat::{ChannelRef, ChatProvider, sendbird::Sendbird},
        http::{ProviderHttp, Resilience},
    },
};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use super::{Control, FakeProvider, serve};

/// The application id the fake serves.
pub const APP_ID: &str = "FAKE-APP-0001";

/// The only `Api-Token` the fake accepts.
pub const API_TOKEN: &str = "fake-sendbird-master-token";

/// The most channel URLs one list request may name.
pub const MAX_CHANNEL_URLS: usize = 100;

/// A user as the fake stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeUser {
    /// `user_id`.
    pub user_id: String,
    /// `nickname`.
    pub nickname: String,
    /// `profile_url`.
    pub profile_url: String,
}

/// A message as the fake stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeMessage {
    /// `message_id`.
    pub message_id: i64,
    /// `type`: `MESG` or `ADMM`.
    pub kind: String,
    /// `message` (the text).
    pub message: String,
    /// `custom_type`.
    pub custom_type: String,
    /// `data`.
    pub data: String,
    /// The sender (`None` for admin messages).
    pub user_id: Option<String>,
    /// `created_at` (Unix ms).
    pub created_at: i64,
    /// The `dedup_id` it was sent with.
    pub dedup_id: Option<String>,
}

/// A group channel as the fake stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeChannel {
    /// `channel_url`.
    pub url: String,
    /// `custom_type`.
    pub custom_type: String,
    /// `name`.
    pub name: String,
    /// `cover_url`.
    pub cover_url: String,
    /// `data` (an opaque string).
    pub data: String,
    /// Member user ids, in joining order.
    pub members: Vec<String>,
    /// `freeze`.
    pub frozen: bool,
    /// Messages, oldest first.
    pub messages: Vec<FakeMessage>,
    /// Per user, the `created_at` of the last message they have read.
    pub read: HashMap<String, i64>,
    /// `created_at` (Unix seconds).
    pub created_at: i64,
}

impl FakeChannel {
    /// Unread messages of `user`: messages by others after their read mark.
    pub fn unread(&self, user: &str) -> u32 {
        let mark = self.read.get(user).copied().unwrap_or(0);
        let n = self
            .messages
            .iter()
            .filter(|m| m.created_at > mark && m.user_id.as_deref() != Some(user))
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// A session token the fake issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// For whom.
    pub user_id: String,
    /// The token.
    pub token: String,
    /// `expires_at` (Unix ms).
    pub expires_at: i64,
}

/// Everything the fake knows.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Users by id.
    pub users: BTreeMap<String, FakeUser>,
    /// Group channels by url.
    pub channels: BTreeMap<String, FakeChannel>,
    /// Session tokens issued, in order.
    pub tokens: Vec<IssuedToken>,
    /// The last message id handed out.
    next_message_id: i64,
    /// The last timestamp handed out (ms).
    last_ts: i64,
}

impl FakeState {
    /// A strictly increasing millisecond timestamp close to now.
    fn tick(&mut self) -> i64 {
        let now = chrono::Utc::now().timestamp_millis();
        self.last_ts = now.max(self.last_ts + 1);
        self.last_ts
    }

    /// Appends a message to a channel and returns it.
    fn push_message(&mut self, url: &str, mut message: FakeMessage) -> Option<FakeMessage> {
        self.next_message_id += 1;
        message.message_id = 1_000 + self.next_message_id;
        message.created_at = self.tick();
        let channel = self.channels.get_mut(url)?;
        if let Some(author) = &message.user_id {
            channel.read.insert(author.clone(), message.created_at);
        }
        channel.messages.push(message.clone());
        Some(message)
    }
}

/// The state shared by the handlers and the test.
type Shared = Arc<Mutex<FakeState>>;

/// Locks the state (a panic in a handler poisons it, which fails the test loudly).
fn lock(state: &Shared) -> MutexGuard<'_, FakeState> {
    state.lock().expect("fake sendbird state")
}

/// A Sendbird error answer: status, Sendbird code and message.
#[derive(Debug)]
pub struct Failure {
    /// HTTP status.
    status: StatusCode,
    /// Sendbird's error code.
    code: u32,
    /// Sendbird's message.
    message: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "error": true, "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// What a handler returns.
type Answer = Result<Response, Failure>;

/// A Sendbird error with any status.
fn error(status: StatusCode, code: u32, message: &str) -> Failure {
    Failure {
        status,
        code,
        message: message.to_owned(),
    }
}

/// A Sendbird 400 error.
fn bad(code: u32, message: &str) -> Failure {
    error(StatusCode::BAD_REQUEST, code, message)
}

/// Sendbird's "not found": HTTP 400 with code 400201.
fn not_found(what: &str) -> Failure {
    bad(400201, &format!("\"{what}\" not found."))
}

/// A 200 answer with a JSON body.
fn ok(value: Value) -> Answer {
    Ok((StatusCode::OK, axum::Json(value)).into_response())
}

/// The request body as a JSON object (Sendbird's 400103 otherwise).
fn object(body: &Bytes) -> Result<Map<String, Value>, Failure> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad(400103, "The request body should be a JSON object.")),
    }
}

/// A required string field.
fn required_str(body: &Map<String, Value>, key: &str) -> Result<String, Failure> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => {
            Err(bad(400105, &format!("\"{key}\" is required but missing.")))
        }
        Some(_) => Err(bad(400100, &format!("\"{key}\" should be a string."))),
    }
}

/// An optional string field.
fn optional_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Failure> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(bad(400100, &format!("\"{key}\" should be a string."))),
    }
}

/// A required list of user ids.
fn user_ids(body: &Map<String, Value>) -> Result<Vec<String>, Failure> {
    match body.get("user_ids") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(400102, "\"user_ids\" should be a list of strings."))
            })
            .collect(),
        None | Some(Value::Null) => Err(bad(400105, "\"user_ids\" is required but missing.")),
        Some(_) => Err(bad(400102, "\"user_ids\" should be a list.")),
    }
}

/// A boolean query parameter.
fn flag(query: &HashMap<String, String>, key: &str, default: bool) -> Result<bool, Failure> {
    match query.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(bad(400104, &format!("\"{key}\" should be a boolean."))),
    }
}

/// An integer query parameter within a range.
fn number(
    query: &HashMap<String, String>,
    key: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, Failure> {
    match query.get(key) {
        None => Ok(default),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            Ok(_) => Err(bad(400111, &format!("\"{key}\" is out of range."))),
            Err(_) => Err(bad(400101, &format!("\"{key}\" should be a number."))),
        },
    }
}

/// A comma-separated query parameter (`None` when absent).
fn list(query: &HashMap<String, String>, key: &str) -> Option<Vec<String>> {
    query.get(key).map(|raw| {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// A user as Sendbird renders it.
fn user_json(user: &FakeUser) -> Value {
    json!({
        "user_id": user.user_id,
        "nickname": user.nickname,
        "profile_url": user.profile_url,
        "is_online": false,
        "is_active": true,
        "created_at": 1_700_000_000,
        "last_seen_at": 0,
        "has_ever_logged_in": false,
        "metadata": {},
        "discovery_keys": [],
        "preferred_languages": [],
    })
}

/// A message as Sendbird renders it (`user` only for user messages).
fn message_json(state: &FakeState, url: &str, m: &FakeMessage) -> Value {
    let mut v = json!({
        "message_id": m.message_id,
        "type": m.kind,
        "message": m.message,
        "custom_type": m.custom_type,
        "data": m.data,
        "channel_url": url,
        "channel_type": "group",
        "created_at": m.created_at,
        "updated_at": 0,
        "mentioned_users": [],
        "mention_type": "users",
        "is_removed": false,
        "silent": false,
        "message_events": {
            "send_push_notification": "receivers",
            "update_unread_count": true,
            "update_mention_count": true,
            "update_last_message": true,
        },
    });
    if let Some(author) = &m.user_id {
        let user = state.users.get(author);
        v["user"] = json!({
            "user_id": author,
            "nickname": user.map(|u| u.nickname.clone()).unwrap_or_default(),
            "profile_url": user.map(|u| u.profile_url.clone()).unwrap_or_default(),
            "require_auth_for_profile_image": false,
            "metadata": {},
        });
    }
    v
}

/// A group channel as Sendbird renders it; `unread_message_count` is `for_user`'s.
fn channel_json(
    state: &FakeState,
    c: &FakeChannel,
    for_user: Option<&str>,
    members: bool,
) -> Value {
    let count = c.members.len();
    let mut v = json!({
        "channel_url": c.url,
        "name": c.name,
        "cover_url": c.cover_url,
        "custom_type": c.custom_type,
        "data": c.data,
        "is_distinct": false,
        "is_public": false,
        "is_super": false,
        "is_ephemeral": false,
        "is_broadcast": false,
        "is_discoverable": false,
        "is_access_code_required": false,
        "freeze": c.frozen,
        "member_count": count,
        "joined_member_count": count,
        "max_length_message": 5000,
        "created_at": c.created_at,
        "created_by": null,
        "operators": [],
        "last_message": c.messages.last().map(|m| message_json(state, &c.url, m)),
        "unread_message_count": for_user.map_or(0, |u| c.unread(u)),
        "unread_mention_count": 0,
    });
    if members {
        v["members"] = c
            .members
            .iter()
            .map(|id| {
                let user = state.users.get(id);
                json!({
                    "user_id": id,
                    "nickname": user.map(|u| u.nickname.clone()).unwrap_or_default(),
                    "profile_url": user.map(|u| u.profile_url.clone()).unwrap_or_default(),
                    "is_online": false,
                    "is_active": true,
                    "state": "joined",
                    "role": "",
                    "last_seen_at": 0,
                    "metadata": {},
                })
            })
            .collect();
    }
    v
}

/// Shared state of the router.
#[derive(Clone)]
struct App {
    /// Everything the fake knows.
    state: Shared,
}

/// Checks `Api-Token` on every request.
async fn authenticate(request: Request, next: Next) -> Response {
    let ok = request
        .headers()
        .get("api-token")
        .and_then(|v| v.to_str().ok())
        == Some(API_TOKEN);
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            400401,
            "Invalid value: \"Api-Token\".",
        )
        .into_response();
    }
    next.run(request).await
}

/// `POST /v3/users`.
async fn create_user(State(app): State<App>, body: Bytes) -> Answer {
    let body = object(&body)?;
    // `nickname` and `profile_url` are required keys (either may be empty).
    for key in ["nickname", "profile_url"] {
        if !body.contains_key(key) {
            return Err(bad(400105, &format!("\"{key}\" is required but missing.")));
        }
    }
    let user = FakeUser {
        user_id: required_str(&body, "user_id")?,
        nickname: optional_str(&body, "nickname")?.unwrap_or_default(),
        profile_url: optional_str(&body, "profile_url")?.unwrap_or_default(),
    };
    let mut state = lock(&app.state);
    if state.users.contains_key(&user.user_id) {
        return Err(bad(400202, "\"User\" violates unique constraint."));
    }
    state.users.insert(user.user_id.clone(), user.clone());
    ok(user_json(&user))
}

/// `GET /v3/users/{user_id}`.
async fn view_user(State(app): State<App>, Path(id): Path<String>) -> Answer {
    let state = lock(&app.state);
    let user = state.users.get(&id).ok_or_else(|| not_found("User"))?;
    ok(user_json(user))
}

/// `PUT /v3/users/{user_id}`.
async fn update_user(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let body = object(&body)?;
    let nickname = optional_str(&body, "nickname")?;
    let profile_url = optional_str(&body, "profile_url")?;
    let mut state = lock(&app.state);
    let user = state.users.get_mut(&id).ok_or_else(|| not_found("User"))?;
    if let Some(n) = nickname {
        user.nickname = n;
    }
    if let Some(p) = profile_url {
        user.profile_url = p;
    }
    ok(user_json(user))
}

/// `DELETE /v3/users/{user_id}` (also removes them from every channel).
async fn delete_user(State(app): State<App>, Path(id): Path<String>) -> Answer {
    let mut state = lock(&app.state);
    state.users.remove(&id).ok_or_else(|| not_found("User"))?;
    for channel in state.channels.values_mut() {
        channel.members.retain(|m| m != &id);
    }
    ok(json!({}))
}

/// `POST /v3/users/{user_id}/token`.
async fn issue_token(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    let body = object(&body)?;
    let now = chrono::Utc::now().timestamp_millis();
    let expires_at = match body.get("expires_at") {
        None | Some(Value::Null) => now + 7 * 24 * 3_600_000,
        Some(v) => match v.as_i64() {
            Some(ms) if ms > now => ms,
            Some(_) => return Err(bad(400111, "\"expires_at\" should be in the future.")),
            None => return Err(bad(400101, "\"expires_at\" should be a number.")),
        },
    };
    let mut state = lock(&app.state);
    if !state.users.contains_key(&id) {
        return Err(not_found("User"));
    }
    let token = format!("sb-session-{}", uuid::Uuid::new_v4().simple());
    state.tokens.push(IssuedToken {
        user_id: id,
        token: token.clone(),
        expires_at,
    });
    ok(json!({ "token": token, "expires_at": expires_at }))
}

/// `DELETE /v3/users/{user_id}/token`: revokes every session token of the user ("Revoke all
/// session tokens"); the answer is an empty body, an unknown user is 400201. The docs list no
/// request body, so the fake refuses one.
async fn revoke_tokens(State(app): State<App>, Path(id): Path<String>, body: Bytes) -> Answer {
    if !body.is_empty() {
        return Err(bad(400103, "The request body should be empty."));
    }
    let mut state = lock(&app.state);
    if !state.users.contains_key(&id) {
        return Err(not_found("User"));
    }
    state.tokens.retain(|t| t.user_id != id);
    Ok(StatusCode::OK.into_response())
}

/// Filters, sorts and pages channels for the two list endpoints.
fn list_channels_for(
    state: &FakeState,
    query: &HashMap<String, String>,
    for_user: Option<&str>,
) -> Answer {
    let urls = list(query, "channel_urls");
    if urls.as_ref().is_some_and(|u| u.len() > MAX_CHANNEL_URLS) {
        return Err(bad(400110, "The length of \"channel_urls\" is too long."));
    }
    let custom_types = list(query, "custom_types");
    let limit = number(query, "limit", 10, 1..=100)?;
    let show_member = flag(query, "show_member", false)?;
    let show_empty = flag(query, "show_empty", false)?;
    let show_frozen = flag(query, "show_frozen", true)?;
    let offset = match query.get("token").map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err(bad(400109, "The page token is invalid or expired.")),
    };
    let mut matching: Vec<&FakeChannel> = state
        .channels
        .values()
        .filter(|c| for_user.is_none_or(|u| c.members.iter().any(|m| m == u)))
        .filter(|c| urls.as_ref().is_none_or(|u| u.contains(&c.url)))
        .filter(|c| {
            custom_types
                .as_ref()
                .is_none_or(|t| t.contains(&c.custom_type))
        })
        .filter(|c| show_empty || !c.messages.is_empty())
        .filter(|c| show_frozen || !c.frozen)
        .collect();
    matching.sort_by_key(|c| (c.created_at, c.url.clone()));
    let limit = usize::try_from(limit).unwrap_or(10);
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|c| channel_json(state, c, for_user, show_member))
        .collect();
    let next = if offset + limit < matching.len() {
        (offset + limit).to_string()
    } else {
        String::new()
    };
    ok(json!({ "channels": page, "next": next, "ts": chrono::Utc::now().timestamp_millis() }))
}

/// `GET /v3/users/{user_id}/my_group_channels`.
async fn my_group_channels(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let state = lock(&app.state);
    if !state.users.contains_key(&id) {
        return Err(not_found("User"));
    }
    list_channels_for(&state, &query, Some(&id))
}

/// `GET /v3/group_channels`.
async fn list_channels(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let state = lock(&app.state);
    list_channels_for(&state, &query, None)
}

/// `POST /v3/group_channels`.
async fn create_channel(State(app): State<App>, body: Bytes) -> Answer {
    let body = object(&body)?;
    let url = optional_str(&body, "channel_url")?;
    let custom_type = optional_str(&body, "custom_type")?;
    let name = optional_str(&body, "name")?;
    let cover_url = optional_str(&body, "cover_url")?;
    let data = optional_str(&body, "data")?;
    let members = match body.get("user_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => user_ids(&body)?,
    };
    let mut state = lock(&app.state);
    let url =
        url.unwrap_or_else(|| format!("sendbird_group_channel_{}", uuid::Uuid::new_v4().simple()));
    if state.channels.contains_key(&url) {
        return Err(bad(400202, "\"channel_url\" violates unique constraint."));
    }
    if members.iter().any(|m| !state.users.contains_key(m)) {
        return Err(not_found("User"));
    }
    let mut unique = Vec::new();
    for m in members {
        if !unique.contains(&m) {
            unique.push(m);
        }
    }
    let channel = FakeChannel {
        url: url.clone(),
        custom_type: custom_type.unwrap_or_default(),
        name: name.unwrap_or_else(|| "Group Channel".into()),
        cover_url: cover_url.unwrap_or_default(),
        data: data.unwrap_or_default(),
        members: unique,
        frozen: false,
        messages: Vec::new(),
        read: HashMap::new(),
        created_at: state.tick() / 1000,
    };
    let answer = channel_json(&state, &channel, None, true);
    state.channels.insert(url, channel);
    ok(answer)
}

/// `GET /v3/group_channels/{channel_url}`.
async fn view_channel(
    State(app): State<App>,
    Path(url): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let show_member = flag(&query, "show_member", false)?;
    let state = lock(&app.state);
    let channel = state
        .channels
        .get(&url)
        .ok_or_else(|| not_found("Channel"))?;
    let for_user = query.get("user_id").map(String::as_str);
    ok(channel_json(&state, channel, for_user, show_member))
}

/// `PUT /v3/group_channels/{channel_url}`.
async fn update_channel(State(app): State<App>, Path(url): Path<String>, body: Bytes) -> Answer {
    let body = object(&body)?;
    let name = optional_str(&body, "name")?;
    let cover_url = optional_str(&body, "cover_url")?;
    let custom_type = optional_str(&body, "custom_type")?;
    let data = optional_str(&body, "data")?;
    let mut state = lock(&app.state);
    let channel = state
        .channels
        .get_mut(&url)
        .ok_or_else(|| not_found("Channel"))?;
    if let Some(v) = name {
        channel.name = v;
    }
    if let Some(v) = cover_url {
        channel.cover_url = v;
    }
    if let Some(v) = custom_type {
        channel.custom_type = v;
    }
    if let Some(v) = data {
        channel.data = v;
    }
    let channel = channel.clone();
    ok(channel_json(&state, &channel, None, false))
}

/// `DELETE /v3/group_channels/{channel_url}`.
async fn delete_channel(State(app): State<App>, Path(url): Path<String>) -> Answer {
    let mut state = lock(&app.state);
    state
        .channels
        .remove(&url)
        .ok_or_else(|| not_found("Channel"))?;
    ok(json!({}))
}

/// `POST /v3/group_channels/{channel_url}/invite` (invitees join at once).
async fn invite(State(app): State<App>, Path(url): Path<String>, body: Bytes) -> Answer {
    let ids = user_ids(&object(&body)?)?;
    let mut state = lock(&app.state);
    if !state.channels.contains_key(&url) {
        return Err(not_found("Channel"));
    }
    if ids.iter().any(|id| !state.users.contains_key(id)) {
        return Err(not_found("User"));
    }
    let channel = state
        .channels
        .get_mut(&url)
        .ok_or_else(|| not_found("Channel"))?;
    for id in ids {
        if !channel.members.contains(&id) {
            channel.members.push(id);
        }
    }
    let channel = channel.clone();
    ok(channel_json(&state, &channel, None, true))
}

/// `PUT /v3/group_channels/{channel_url}/leave` (non-members are ignored).
async fn leave(State(app): State<App>, Path(url): Path<String>, body: Bytes) -> Answer {
    let ids = user_ids(&object(&body)?)?;
    let mut state = lock(&app.state);
    let channel = state
        .channels
        .get_mut(&url)
        .ok_or_else(|| not_found("Channel"))?;
    channel.members.retain(|m| !ids.contains(m));
    ok(json!({}))
}

/// `PUT /v3/group_channels/{channel_url}/freeze`.
async fn freeze(State(app): State<App>, Path(url): Path<String>, body: Bytes) -> Answer {
    let body = object(&body)?;
    let frozen = match body.get("freeze") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => {
            return Err(bad(400105, "\"freeze\" is required but missing."));
        }
        Some(_) => return Err(bad(400104, "\"freeze\" should be a boolean.")),
    };
    let mut state = lock(&app.state);
    let channel = state
        .channels
        .get_mut(&url)
        .ok_or_else(|| not_found("Channel"))?;
    channel.frozen = frozen;
    let channel = channel.clone();
    ok(channel_json(&state, &channel, None, false))
}

/// `GET /v3/group_channels/{channel_url}/messages`.
async fn list_messages(
    State(app): State<App>,
    Path(url): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let reference = query
        .get("message_ts")
        .or_else(|| query.get("message_id"))
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| {
            bad(
                400105,
                "\"message_ts\" or \"message_id\" is required but missing.",
            )
        })?;
    let by_id = !query.contains_key("message_ts");
    let prev = number(&query, "prev_limit", 15, 0..=200)?;
    let next = number(&query, "next_limit", 15, 0..=200)?;
    let include = flag(&query, "include", true)?;
    let reverse = flag(&query, "reverse", false)?;
    let kind = query.get("message_type").cloned();
    let custom_types = list(&query, "custom_types").filter(|t| !t.iter().any(|x| x == "*"));
    let state = lock(&app.state);
    let channel = state
        .channels
        .get(&url)
        .ok_or_else(|| not_found("Channel"))?;
    let key = |m: &FakeMessage| if by_id { m.message_id } else { m.created_at };
    let filtered: Vec<&FakeMessage> = channel
        .messages
        .iter()
        .filter(|m| kind.as_ref().is_none_or(|k| &m.kind == k))
        .filter(|m| {
            custom_types
                .as_ref()
                .is_none_or(|t| t.contains(&m.custom_type))
        })
        .collect();
    let before: Vec<&FakeMessage> = filtered
        .iter()
        .copied()
        .filter(|m| key(m) < reference || (include && key(m) == reference))
        .collect();
    let after = filtered.iter().copied().filter(|m| key(m) > reference);
    let prev = usize::try_from(prev).unwrap_or(0);
    let next = usize::try_from(next).unwrap_or(0);
    let mut page: Vec<&FakeMessage> = before[before.len().saturating_sub(prev)..].to_vec();
    page.extend(after.take(next));
    if reverse {
        page.reverse();
    }
    let messages: Vec<Value> = page.iter().map(|m| message_json(&state, &url, m)).collect();
    ok(json!({ "messages": messages }))
}

/// `POST /v3/group_channels/{channel_url}/messages` (`ADMM` or `MESG`); a repeated
/// `dedup_id` is refused with 400202 (a stand-in: Sendbird's exact answer is unconfirmed).
async fn send_message(State(app): State<App>, Path(url): Path<String>, body: Bytes) -> Answer {
    let body = object(&body)?;
    let kind = required_str(&body, "message_type")?;
    let text = required_str(&body, "message")?;
    let custom_type = optional_str(&body, "custom_type")?;
    let data = optional_str(&body, "data")?;
    let dedup_id = optional_str(&body, "dedup_id")?;
    let author = match kind.as_str() {
        "ADMM" => None,
        "MESG" => Some(required_str(&body, "user_id")?),
        _ => {
            return Err(bad(
                400111,
                "\"message_type\" should be MESG, FILE or ADMM.",
            ));
        }
    };
    let mut state = lock(&app.state);
    let channel = state
        .channels
        .get(&url)
        .ok_or_else(|| not_found("Channel"))?;
    if let Some(author) = &author
        && !channel.members.contains(author)
    {
        return Err(bad(400108, "The user is not a member of the channel."));
    }
    if let Some(id) = &dedup_id
        && channel
            .messages
            .iter()
            .any(|m| m.dedup_id.as_ref() == Some(id))
    {
        return Err(bad(400202, "\"dedup_id\" violates unique constraint."));
    }
    let message = FakeMessage {
        message_id: 0,
        kind,
        message: text,
        custom_type: custom_type.unwrap_or_default(),
        data: data.unwrap_or_default(),
        user_id: author,
        created_at: 0,
        dedup_id,
    };
    let message = state
        .push_message(&url, message)
        .ok_or_else(|| not_found("Channel"))?;
    ok(message_json(&state, &url, &message))
}

/// `PUT /v3/group_channels/{channel_url}/messages/mark_as_read`: the member's read mark moves
/// to the latest message.
async fn mark_as_read(State(app): State<App>, Path(url): Path<String>, body: Bytes) -> Answer {
    let body = object(&body)?;
    let user = required_str(&body, "user_id")?;
    let mut state = lock(&app.state);
    let channel = state
        .channels
        .get_mut(&url)
        .ok_or_else(|| not_found("Channel"))?;
    if !channel.members.contains(&user) {
        return Err(bad(400108, "The user is not a member of the channel."));
    }
    let last = channel.messages.last().map_or(0, |m| m.created_at);
    channel.read.insert(user, last);
    ok(json!({}))
}

/// Any other path.
async fn unknown() -> Failure {
    error(StatusCode::NOT_FOUND, 400000, "Unknown API endpoint.")
}

/// The fake's routes, behind the `Api-Token` check.
fn router(app: App) -> Router {
    Router::new()
        .route("/v3/users", post(create_user))
        .route(
            "/v3/users/{user_id}",
            get(view_user).put(update_user).delete(delete_user),
        )
        .route(
            "/v3/users/{user_id}/token",
            post(issue_token).delete(revoke_tokens),
        )
        .route(
            "/v3/users/{user_id}/my_group_channels",
            get(my_group_channels),
        )
        .route(
            "/v3/group_channels",
            get(list_channels).post(create_channel),
        )
        .route(
            "/v3/group_channels/{channel_url}",
            get(view_channel).put(update_channel).delete(delete_channel),
        )
        .route("/v3/group_channels/{channel_url}/invite", post(invite))
        .route("/v3/group_channels/{channel_url}/leave", put(leave))
        .route("/v3/group_channels/{channel_url}/freeze", put(freeze))
        .route(
            "/v3/group_channels/{channel_url}/messages",
            get(list_messages).post(send_message),
        )
        .route(
            "/v3/group_channels/{channel_url}/messages/mark_as_read",
            put(mark_as_read),
        )
        .fallback(unknown)
        .layer(middleware::from_fn(authenticate))
        .with_state(app)
}

/// A running fake Sendbird.
pub struct FakeSendbird {
    /// The request log and fault injection.
    control: Control,
    /// Everything the fake knows.
    state: Shared,
    /// Where it listens.
    addr: SocketAddr,
}

/// Starts a fake Sendbird on a free loopback port.
pub async fn start() -> FakeSendbird {
    let control = Control::default();
    let state = Shared::default();
    let addr = serve(
        router(App {
            state: state.clone(),
        }),
        control.clone(),
    )
    .await;
    FakeSendbird {
        control,
        state,
        addr,
    }
}

impl FakeSendbird {
    /// `http://127.0.0.1:<port>` (paths start with `/v3`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The adapter's configuration, with this `Api-Token`.
    pub fn config_with_token(&self, token: &str) -> SendbirdConfig {
        SendbirdConfig {
            app_id: APP_ID.to_owned(),
            api_token: SecretString::from(token.to_owned()),
            base_url: self.base_url(),
        }
    }

    /// The concrete adapter pointed at this fake, authenticating with `token`.
    pub fn sendbird_with_token(&self, token: &str, resilience: Resilience) -> Sendbird {
        Sendbird::new(
            &self.config_with_token(token),
            Duration::from_secs(3600),
            ProviderHttp::new("sendbird", reqwest::Client::new(), resilience),
        )
    }

    /// The fake's state, to inspect or arrange.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    /// A copy of one channel (`None` when there is none).
    pub fn channel(&self, url: &str) -> Option<FakeChannel> {
        self.state().channels.get(url).cloned()
    }

    /// Marks everything in a channel as read by `user`.
    pub fn mark_read(&self, url: &str, user: &str) {
        let mut state = self.state();
        if let Some(channel) = state.channels.get_mut(url) {
            let last = channel.messages.last().map_or(0, |m| m.created_at);
            channel.read.insert(user.to_owned(), last);
        }
    }
}

impl FakeProvider for FakeSendbird {
    fn control(&self) -> &Control {
        &self.control
    }

    fn adapter(&self, resilience: Resilience) -> Arc<dyn ChatProvider> {
        Arc::new(self.sendbird_with_token(API_TOKEN, resilience))
    }

    fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("CAREGRAPH_CHAT_PROVIDER".into(), "sendbird".into()),
            ("SENDBIRD_APP_ID".into(), APP_ID.into()),
            ("SENDBIRD_API_TOKEN".into(), API_TOKEN.into()),
            ("SENDBIRD_BASE_URL".into(), self.base_url()),
        ]
    }

    fn user_posts(&self, channel: &ChannelRef, user: &str, text: &str) -> Result<(), String> {
        let mut state = self.state();
        let Some(c) = state.channels.get(&channel.channel_id) else {
            return Err(format!("channel {} does not exist", channel.channel_id));
        };
        if c.frozen {
            return Err(format!("channel {} is frozen", channel.channel_id));
        }
        if !c.members.iter().any(|m| m == user) {
            return Err(format!("{user} is no member of {}", channel.channel_id));
        }
        let message = FakeMessage {
            message_id: 0,
            kind: "MESG".into(),
            message: text.to_owned(),
            custom_type: String::new(),
            data: String::new(),
            user_id: Some(user.to_owned()),
            created_at: 0,
            dedup_id: None,
        };
        state
            .push_message(&channel.channel_id, message)
            .map(drop)
            .ok_or_else(|| format!("channel {} does not exist", channel.channel_id))
    }

    fn metadata(&self, channel: &ChannelRef) -> Option<Map<String, Value>> {
        let c = self.channel(&channel.channel_id)?;
        if c.data.trim().is_empty() {
            return Some(Map::new());
        }
        match serde_json::from_str::<Value>(&c.data) {
            Ok(Value::Object(map)) => Some(map),
            _ => Some(Map::new()),
        }
    }

    fn members(&self, channel: &ChannelRef) -> Option<Vec<String>> {
        self.channel(&channel.channel_id).map(|c| c.members)
    }
}
