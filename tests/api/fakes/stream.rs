//! A stateful fake of Stream Chat's legacy server-side REST API (`docs/providers.md` §1): users,
//! channels (type, id, members with their last read, frozen, flattened custom data, messages),
//! async deletion tasks, Stream's status codes and error bodies, and the auth checks of §1.9 on
//! every request (`api_key` query, `Stream-Auth-Type: jwt`, an HS256 server JWT whose payload
//! is exactly `{"server": true}` signed with [`API_SECRET`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use caregraph::{
    config::StreamConfig,
    providers::{
        chat::{ChannelRef, ChatProvider, stream::StreamChat},
        http::{ProviderHttp, Resilience},
    },
};
use chrono::{SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{Control, FakeProvider, serve};

/// The API key the fake accepts.
pub const API_KEY: &str = "fake-stream-key";

/// The API secret the fake verifies server tokens with.
pub const API_SECRET: &str = "fake-stream-secret-0123456789abcdef";

/// Stream's maximum `limit` of `POST /channels`.
pub const QUERY_CHANNELS_MAX: usize = 30;

/// Users per `POST /users` and `POST /users/delete`.
const USERS_MAX: usize = 100;

/// Keys of a channel's `data` that are not custom data.
const BUILT_IN_DATA_KEYS: &[&str] = &[
    "created_by_id",
    "created_by",
    "members",
    "frozen",
    "team",
    "disabled",
    "config",
    "cid",
    "id",
    "type",
    "member_count",
    "created_at",
    "updated_at",
    "last_message_at",
    "own_capabilities",
];

/// Decodes an HS256 JWT and checks its signature with `secret`; returns (header, payload).
/// Written with base64 + hmac/sha2 so that tests check tokens independently of the adapter.
pub fn decode_jwt(token: &str, secret: &str) -> Result<(Value, Value), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not three dot-separated parts".into());
    };
    let decode = |part: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("base64: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("json: {e}"))
    };
    let header = decode(h)?;
    let payload = decode(p)?;
    if header["alg"] != "HS256" {
        return Err(format!("alg is {}", header["alg"]));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("signature base64: {e}"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| format!("hmac key: {e}"))?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "bad signature".to_owned())?;
    Ok((header, payload))
}

/// Now as Stream writes timestamps (RFC 3339, microseconds, `Z`).
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Stream's error body with `status` and Stream `code`.
fn error(status: u16, code: i64, message: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        Json(json!({
            "code": code,
            "message": message,
            "StatusCode": status,
            "duration": "0.01ms",
            "more_info": "https://getstream.io/chat/docs/api_errors_response",
            "details": [],
        })),
    )
        .into_response()
}

/// An input error (400, code 4) of `operation`.
fn input_error(operation: &str, why: &str) -> Response {
    error(400, 4, &format!("{operation} failed with error: \"{why}\""))
}

/// A success with `duration` added.
fn success(status: StatusCode, mut body: Value) -> Response {
    body["duration"] = json!("0.42ms");
    (status, Json(body)).into_response()
}

/// A stored user.
#[derive(Clone, Debug)]
struct User {
    /// What was upserted (id, name, image, custom keys).
    data: Map<String, Value>,
    /// When it was first upserted.
    created_at: String,
    /// When it was last upserted.
    updated_at: String,
}

/// A channel member.
#[derive(Clone, Debug)]
struct Member {
    /// The member's user id.
    user_id: String,
    /// When they joined.
    created_at: String,
    /// The sequence number of the last message they read.
    last_read_seq: u64,
    /// When they last read.
    last_read: String,
}

/// A stored message.
#[derive(Clone, Debug)]
struct Message {
    /// The message id (unique across the app).
    id: String,
    /// The text.
    text: String,
    /// `regular` or `system`.
    kind: String,
    /// The author.
    user_id: String,
    /// When it was sent.
    created_at: String,
    /// Its place in the order of everything that happened.
    seq: u64,
}

/// A stored channel.
#[derive(Clone, Debug)]
struct Channel {
    /// The channel type.
    channel_type: String,
    /// The channel id.
    id: String,
    /// Who created it.
    created_by: String,
    /// Whether it is frozen.
    frozen: bool,
    /// Custom data (flattened into the channel object).
    custom: Map<String, Value>,
    /// Members in the order they joined.
    members: Vec<Member>,
    /// Messages, oldest first.
    messages: Vec<Message>,
    /// When it was created.
    created_at: String,
    /// When it was last updated.
    updated_at: String,
    /// The sequence number of its last change (for the default sort).
    touched: u64,
}

/// Everything the fake knows.
#[derive(Debug, Default)]
struct World {
    /// Users by id.
    users: BTreeMap<String, User>,
    /// Channels by cid.
    channels: BTreeMap<String, Channel>,
    /// Message ids are unique across the app.
    message_ids: HashSet<String>,
    /// Async tasks by id.
    tasks: BTreeMap<String, Value>,
    /// The last sequence number handed out.
    seq: u64,
}

impl World {
    /// The next sequence number.
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A user object as Stream answers it (a bare one when the user is gone).
    fn user_json(&self, id: &str) -> Value {
        match self.users.get(id) {
            Some(u) => {
                let mut out = u.data.clone();
                out.insert("id".into(), json!(id));
                out.entry("role").or_insert(json!("user"));
                out.insert("created_at".into(), json!(u.created_at));
                out.insert("updated_at".into(), json!(u.updated_at));
                out.insert("banned".into(), json!(false));
                out.insert("online".into(), json!(false));
                Value::Object(out)
            }
            None => json!({ "id": id, "role": "user", "banned": false, "online": false }),
        }
    }

    /// The users of `ids` that do not exist.
    fn missing_users<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        ids.into_iter()
            .filter(|id| !self.users.contains_key(*id))
            .cloned()
            .collect()
    }

    /// A channel object as Stream answers it, custom keys flattened.
    fn channel_json(&self, c: &Channel) -> Value {
        let mut out = c.custom.clone();
        out.insert("id".into(), json!(c.id));
        out.insert("type".into(), json!(c.channel_type));
        out.insert("cid".into(), json!(format!("{}:{}", c.channel_type, c.id)));
        out.insert("created_at".into(), json!(c.created_at));
        out.insert("updated_at".into(), json!(c.updated_at));
        if let Some(last) = c.messages.last() {
            out.insert("last_message_at".into(), json!(last.created_at));
        }
        out.insert("created_by".into(), self.user_json(&c.created_by));
        out.insert("frozen".into(), json!(c.frozen));
        out.insert("disabled".into(), json!(false));
        out.insert("member_count".into(), json!(c.members.len()));
        out.insert(
            "config".into(),
            json!({ "name": c.channel_type, "typing_events": true, "read_events": true }),
        );
        Value::Object(out)
    }

    /// A channel member object.
    fn member_json(&self, m: &Member) -> Value {
        json!({
            "user_id": m.user_id,
            "user": self.user_json(&m.user_id),
            "channel_role": "channel_member",
            "role": "member",
            "created_at": m.created_at,
            "updated_at": m.created_at,
            "banned": false,
            "shadow_banned": false,
            "notifications_muted": false,
        })
    }

    /// A message object.
    fn message_json(&self, c: &Channel, m: &Message) -> Value {
        json!({
            "id": m.id,
            "text": m.text,
            "html": format!("<p>{}</p>\n", m.text),
            "type": m.kind,
            "user": self.user_json(&m.user_id),
            "cid": format!("{}:{}", c.channel_type, c.id),
            "attachments": [],
            "mentioned_users": [],
            "latest_reactions": [],
            "own_reactions": [],
            "reaction_counts": {},
            "reaction_scores": {},
            "reply_count": 0,
            "silent": false,
            "pinned": false,
            "created_at": m.created_at,
            "updated_at": m.created_at,
        })
    }

    /// Messages of others after the member's last read.
    fn unread(c: &Channel, m: &Member) -> usize {
        c.messages
            .iter()
            .filter(|msg| msg.seq > m.last_read_seq && msg.user_id != m.user_id)
            .count()
    }

    /// The channel state object: `channel`, `members`, the last `message_limit` messages,
    /// `read`, `membership` of `for_user`.
    fn state_json(&self, c: &Channel, message_limit: usize, for_user: Option<&str>) -> Value {
        let skip = c.messages.len().saturating_sub(message_limit);
        let messages: Vec<Value> = c.messages[skip..]
            .iter()
            .map(|m| self.message_json(c, m))
            .collect();
        let read: Vec<Value> = c
            .members
            .iter()
            .map(|m| {
                json!({
                    "user": self.user_json(&m.user_id),
                    "last_read": m.last_read,
                    "unread_messages": Self::unread(c, m),
                })
            })
            .collect();
        let membership = for_user
            .and_then(|u| c.members.iter().find(|m| m.user_id == u))
            .map_or(Value::Null, |m| self.member_json(m));
        json!({
            "channel": self.channel_json(c),
            "members": c.members.iter().map(|m| self.member_json(m)).collect::<Vec<_>>(),
            "messages": messages,
            "pinned_messages": [],
            "threads": [],
            "read": read,
            "watcher_count": 0,
            "membership": membership,
        })
    }
}

/// Member ids from `["id", …]` or `[{"user_id": "id"}, …]`.
fn member_ids(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| {
            v.as_str()
                .or_else(|| v.get("user_id").and_then(Value::as_str))
                .map(str::to_owned)
        })
        .collect()
}

/// Sets `value` at a dotted path (`"detail.topic"`) of `map`.
fn set_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = map.entry(head).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            if let Some(inner) = entry.as_object_mut() {
                set_path(inner, rest, value);
            }
        }
    }
}

/// Removes a dotted path from `map`.
fn unset_path(map: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        None => {
            map.remove(path);
        }
        Some((head, rest)) => {
            if let Some(inner) = map.get_mut(head).and_then(Value::as_object_mut) {
                unset_path(inner, rest);
            }
        }
    }
}

/// The shared state of the running fake.
#[derive(Clone, Default)]
struct Shared {
    /// The state.
    world: Arc<Mutex<World>>,
}

impl Shared {
    /// Locks the state.
    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().expect("fake stream state")
    }
}

/// A running fake Stream server.
pub struct FakeStream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its request log and fault injection.
    control: Control,
    /// Its state.
    shared: Shared,
}

/// Starts a fake Stream server on a free port.
pub async fn start() -> FakeStream {
    let shared = Shared::default();
    let control = Control::default();
    let router = Router::new()
        .route("/users", post(upsert_users).patch(partial_update_users))
        .route("/users/delete", post(delete_users))
        .route("/tasks/{id}", get(get_task))
        .route("/channels", post(query_channels))
        .route("/channels/{type}/{id}/query", post(get_or_create))
        .route(
            "/channels/{type}/{id}",
            post(update_channel)
                .patch(partial_update)
                .delete(delete_channel),
        )
        .route("/channels/{type}/{id}/message", post(send_message))
        .route("/channels/{type}/{id}/read", post(mark_read))
        .route("/messages/{id}", get(get_message))
        .layer(middleware::from_fn(check_auth))
        .with_state(shared.clone());
    let addr = serve(router, control.clone()).await;
    FakeStream {
        addr,
        control,
        shared,
    }
}

/// §1.9: `api_key`, `Stream-Auth-Type: jwt` and a server JWT signed with the test secret.
async fn check_auth(request: Request, next: Next) -> Response {
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(request.uri().query().unwrap_or("")).unwrap_or_default();
    let api_key = query.iter().find(|(k, _)| k == "api_key").map(|(_, v)| v);
    if api_key.map(String::as_str) != Some(API_KEY) {
        return error(401, 2, "api_key not found");
    }
    let headers = request.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if header("stream-auth-type").as_deref() != Some("jwt") {
        return error(
            401,
            43,
            "Stream-Auth-Type header must be jwt for server-side requests",
        );
    }
    let Some(token) = header("authorization") else {
        return error(401, 43, "missing Authorization header");
    };
    match decode_jwt(&token, API_SECRET) {
        Ok((_, payload)) if payload == json!({ "server": true }) => next.run(request).await,
        Ok(_) => error(
            401,
            43,
            "the server token must carry exactly {\"server\": true}",
        ),
        Err(why) => error(
            401,
            43,
            &format!("JWTAuth error: signature is not valid ({why})"),
        ),
    }
}

/// Parses a JSON object body or answers Stream's input error.
#[allow(clippy::result_large_err)]
fn object(operation: &str, body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(input_error(operation, "invalid JSON body")),
    }
}

/// `POST /users`: upsert a map id → user.
async fn upsert_users(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match object("UpdateUsers", &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(users) = body.get("users").and_then(Value::as_object) else {
        return input_error("UpdateUsers", "users is a required field");
    };
    if users.is_empty() || users.len() > USERS_MAX {
        return input_error("UpdateUsers", "users must contain 1 to 100 users");
    }
    for (key, user) in users {
        if user.get("id").and_then(Value::as_str) != Some(key.as_str()) {
            return input_error("UpdateUsers", &format!("user {key}: id must match its key"));
        }
    }
    let mut world = shared.lock();
    let stamp = now();
    for (id, user) in users {
        let data = user.as_object().cloned().unwrap_or_default();
        let created_at = world
            .users
            .get(id)
            .map_or_else(|| stamp.clone(), |u| u.created_at.clone());
        world.users.insert(
            id.clone(),
            User {
                data,
                created_at,
                updated_at: stamp.clone(),
            },
        );
    }
    let out: Map<String, Value> = users
        .keys()
        .map(|id| (id.clone(), world.user_json(id)))
        .collect();
    success(
        StatusCode::CREATED,
        json!({ "users": out, "membership_deletion_task_id": "" }),
    )
}

/// `PATCH /users`: partial updates `{"users": [{"id", "set"?, "unset"?}]}` (1 to 100), the
/// call of the SDKs' `partialUpdateUsers` and `revokeUserToken`. `revoke_tokens_issued_before`
/// must be an RFC 3339 instant (or `null` to undo). Unknown users are left out of the answer's
/// `users` map, as the Go SDK's `PartialUpdateUser` expects (Stream's exact answer for them is
/// unconfirmed).
async fn partial_update_users(State(shared): State<Shared>, body: Bytes) -> Response {
    let op = "UpdateUsersPartial";
    let body = match object(op, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(updates) = body.get("users").and_then(Value::as_array) else {
        return input_error(op, "users is a required field and must be a list");
    };
    if updates.is_empty() || updates.len() > USERS_MAX {
        return input_error(op, "users must contain 1 to 100 updates");
    }
    let mut parsed = Vec::with_capacity(updates.len());
    for update in updates {
        let Some(update) = update.as_object() else {
            return input_error(op, "each update must be an object");
        };
        let Some(id) = update.get("id").and_then(Value::as_str) else {
            return input_error(op, "id is a required field");
        };
        let set = match update.get("set") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return input_error(op, "set must be an object"),
        };
        let unset = match update.get("unset") {
            None => Vec::new(),
            Some(v) => match member_ids(v) {
                Some(u) => u,
                None => return input_error(op, "unset must be a list of strings"),
            },
        };
        if set.is_empty() && unset.is_empty() {
            return input_error(op, "set or unset must be provided");
        }
        if let Some(before) = set.get("revoke_tokens_issued_before")
            && !before.is_null()
            && before
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_none()
        {
            return input_error(op, "revoke_tokens_issued_before must be an RFC 3339 time");
        }
        parsed.push((id.to_owned(), set, unset));
    }
    let mut world = shared.lock();
    let stamp = now();
    let mut out = Map::new();
    for (id, set, unset) in parsed {
        let Some(user) = world.users.get_mut(&id) else {
            continue;
        };
        for (key, value) in set {
            set_path(&mut user.data, &key, value);
        }
        for key in &unset {
            unset_path(&mut user.data, key);
        }
        user.updated_at = stamp.clone();
        out.insert(id.clone(), world.user_json(&id));
    }
    success(StatusCode::OK, json!({ "users": out }))
}

/// `POST /users/delete`: marks users deleted at once, answers a task.
async fn delete_users(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match object("DeleteUsers", &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(ids) = body.get("user_ids").and_then(member_ids) else {
        return input_error("DeleteUsers", "user_ids is a required field");
    };
    if ids.is_empty() || ids.len() > USERS_MAX {
        return input_error("DeleteUsers", "user_ids must contain 1 to 100 ids");
    }
    let mode = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("soft");
    if mode("user") == "hard" && (mode("messages") != "hard" || mode("conversations") != "hard") {
        return input_error(
            "DeleteUsers",
            "user hard delete requires hard deletion of messages and conversations",
        );
    }
    let mut world = shared.lock();
    for id in &ids {
        world.users.remove(id);
    }
    if mode("messages") == "hard" {
        let mut freed = Vec::new();
        for channel in world.channels.values_mut() {
            channel.messages.retain(|m| {
                let keep = !ids.contains(&m.user_id);
                if !keep {
                    freed.push(m.id.clone());
                }
                keep
            });
            channel.members.retain(|m| !ids.contains(&m.user_id));
        }
        for id in freed {
            world.message_ids.remove(&id);
        }
    }
    let task_id = uuid::Uuid::new_v4().to_string();
    let stamp = now();
    world.tasks.insert(
        task_id.clone(),
        json!({
            "task_id": task_id,
            "status": "completed",
            "created_at": stamp,
            "updated_at": stamp,
            "result": { "deleted_user_ids": ids },
        }),
    );
    success(StatusCode::CREATED, json!({ "task_id": task_id }))
}

/// `GET /tasks/{id}`.
async fn get_task(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    match shared.lock().tasks.get(&id) {
        Some(task) => success(StatusCode::OK, task.clone()),
        None => error(
            404,
            16,
            &format!("GetTask failed with error: \"task {id} not found\""),
        ),
    }
}

/// The cids a `filter_conditions` selects: `{cid: {$in: […]}}`, `{cid: {$eq: x}}` or
/// `{cid: x}`.
fn filtered_cids(filter: &Value) -> Option<Vec<String>> {
    let cid = filter.get("cid")?;
    if let Some(s) = cid.as_str() {
        return Some(vec![s.to_owned()]);
    }
    if let Some(s) = cid.get("$eq").and_then(Value::as_str) {
        return Some(vec![s.to_owned()]);
    }
    member_ids(cid.get("$in")?)
}

/// `POST /channels`: query channels by cid, at most 30.
async fn query_channels(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match object("QueryChannels", &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(cids) = body.get("filter_conditions").and_then(filtered_cids) else {
        return input_error(
            "QueryChannels",
            "the fake supports only filter_conditions on cid ($in, $eq)",
        );
    };
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    if limit > QUERY_CHANNELS_MAX {
        return input_error("QueryChannels", "limit must be less than or equal to 30");
    }
    let message_limit = body
        .get("message_limit")
        .and_then(Value::as_u64)
        .unwrap_or(25)
        .min(300) as usize;
    let state = body.get("state").and_then(Value::as_bool).unwrap_or(true);
    let user_id = body.get("user_id").and_then(Value::as_str);
    let world = shared.lock();
    let mut found: Vec<&Channel> = cids
        .iter()
        .filter_map(|cid| world.channels.get(cid))
        .collect();
    // Stream's default sort: most recently updated first.
    found.sort_by_key(|c| std::cmp::Reverse(c.touched));
    let channels: Vec<Value> = found
        .into_iter()
        .take(limit)
        .map(|c| world.state_json(c, if state { message_limit } else { 0 }, user_id))
        .collect();
    success(StatusCode::CREATED, json!({ "channels": channels }))
}

/// `POST /channels/{type}/{id}/query`: get or create.
async fn get_or_create(
    State(shared): State<Shared>,
    Path((channel_type, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let op = "GetOrCreateChannel";
    let body = match object(op, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let cid = format!("{channel_type}:{id}");
    let state = body.get("state").and_then(Value::as_bool).unwrap_or(false);
    let message_limit = if state {
        body.get("messages")
            .and_then(|m| m.get("limit"))
            .and_then(Value::as_u64)
            .unwrap_or(25)
            .min(300) as usize
    } else {
        0
    };
    let mut world = shared.lock();
    if !world.channels.contains_key(&cid) {
        let data = body
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let Some(created_by) = data
            .get("created_by_id")
            .and_then(Value::as_str)
            .or_else(|| {
                data.get("created_by")
                    .and_then(|c| c.get("id"))
                    .and_then(Value::as_str)
            })
            .map(str::to_owned)
        else {
            return input_error(
                op,
                "either data.created_by or data.created_by_id must be provided when using server side auth.",
            );
        };
        let members = match data.get("members") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => match member_ids(v) {
                Some(m) => m,
                None => return input_error(op, "data.members must be a list of user ids"),
            },
        };
        let missing = world.missing_users(std::iter::once(&created_by).chain(&members));
        if !missing.is_empty() {
            return input_error(
                op,
                &format!(
                    "The following users are involved in channel create operation, but don't exist: [{}]. Please create the user objects before setting up the channel.",
                    missing.join(", ")
                ),
            );
        }
        let stamp = now();
        let seq = world.next_seq();
        let mut seen = HashSet::new();
        let channel = Channel {
            channel_type: channel_type.clone(),
            id: id.clone(),
            created_by,
            frozen: data.get("frozen").and_then(Value::as_bool).unwrap_or(false),
            custom: data
                .iter()
                .filter(|(k, _)| !BUILT_IN_DATA_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            members: members
                .into_iter()
                .filter(|m| seen.insert(m.clone()))
                .map(|user_id| Member {
                    user_id,
                    created_at: stamp.clone(),
                    last_read_seq: seq,
                    last_read: stamp.clone(),
                })
                .collect(),
            messages: Vec::new(),
            created_at: stamp.clone(),
            updated_at: stamp,
            touched: seq,
        };
        world.channels.insert(cid.clone(), channel);
    }
    let channel = &world.channels[&cid];
    // `messages.id_lt` pages back: only messages before that one (none when it is unknown).
    let id_lt = body
        .get("messages")
        .and_then(|m| m.get("id_lt"))
        .and_then(Value::as_str);
    let state = match id_lt {
        Some(id) => {
            let mut older = channel.clone();
            let end = older.messages.iter().position(|m| m.id == id).unwrap_or(0);
            older.messages.truncate(end);
            world.state_json(&older, message_limit, None)
        }
        None => world.state_json(channel, message_limit, None),
    };
    success(StatusCode::CREATED, state)
}

/// `POST /channels/{type}/{id}/read`: a member's read marker moves to the latest message.
async fn mark_read(
    State(shared): State<Shared>,
    Path((channel_type, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let op = "MarkRead";
    let body = match object(op, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(user_id) = body.get("user_id").and_then(Value::as_str) else {
        return input_error(
            op,
            "either user or user_id must be provided when using server side auth.",
        );
    };
    let cid = format!("{channel_type}:{id}");
    let mut world = shared.lock();
    let seq = world.seq;
    let stamp = now();
    let Some(channel) = world.channels.get_mut(&cid) else {
        return no_channel(op, &channel_type, &id);
    };
    let Some(member) = channel.members.iter_mut().find(|m| m.user_id == user_id) else {
        return error(
            403,
            17,
            &format!("{op} failed with error: \"user {user_id} is not a member of {cid}\""),
        );
    };
    member.last_read_seq = seq;
    member.last_read = stamp.clone();
    let user = world.user_json(user_id);
    success(
        StatusCode::CREATED,
        json!({ "event": { "type": "message.read", "cid": cid, "user": user, "created_at": stamp } }),
    )
}

/// `GET /messages/{id}`: one message by id.
async fn get_message(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let world = shared.lock();
    for channel in world.channels.values() {
        if let Some(m) = channel.messages.iter().find(|m| m.id == id) {
            return success(
                StatusCode::OK,
                json!({ "message": world.message_json(channel, m) }),
            );
        }
    }
    error(
        404,
        16,
        &format!("GetMessage failed with error: \"message with id {id} not found\""),
    )
}

/// Validates a `message` of a server-side request; returns (id, text, type, user id).
#[allow(clippy::result_large_err)]
fn validate_message(
    world: &World,
    op: &str,
    message: &Value,
) -> Result<(String, String, String, String), Response> {
    let Some(user_id) = message.get("user_id").and_then(Value::as_str).or_else(|| {
        message
            .get("user")
            .and_then(|u| u.get("id"))
            .and_then(Value::as_str)
    }) else {
        return Err(input_error(
            op,
            "either message.user or message.user_id must be provided when using server side auth",
        ));
    };
    if !world.users.contains_key(user_id) {
        return Err(input_error(op, &format!("user {user_id} does not exist")));
    }
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("regular");
    if kind != "regular" && kind != "system" {
        return Err(input_error(
            op,
            "message.type must be one of [regular system]",
        ));
    }
    let id = message
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    if world.message_ids.contains(&id) {
        return Err(input_error(
            op,
            &format!("a message with ID {id} already exists"),
        ));
    }
    let text = message
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok((id, text, kind.to_owned(), user_id.to_owned()))
}

/// Appends a message to channel `cid` and marks the author read.
fn append_message(
    world: &mut World,
    cid: &str,
    (id, text, kind, user_id): (String, String, String, String),
) -> Value {
    let seq = world.next_seq();
    let stamp = now();
    world.message_ids.insert(id.clone());
    let channel = world.channels.get_mut(cid).expect("channel exists");
    channel.messages.push(Message {
        id,
        text,
        kind,
        user_id: user_id.clone(),
        created_at: stamp.clone(),
        seq,
    });
    channel.touched = seq;
    if let Some(member) = channel.members.iter_mut().find(|m| m.user_id == user_id) {
        member.last_read_seq = seq;
        member.last_read = stamp;
    }
    let channel = &world.channels[cid];
    let last = channel.messages.last().expect("just pushed");
    world.message_json(channel, last)
}

/// Stream's 404 for a channel that does not exist.
fn no_channel(op: &str, channel_type: &str, id: &str) -> Response {
    error(
        404,
        16,
        &format!("{op} failed with error: \"Can't find channel with id {channel_type}:{id}\""),
    )
}

/// `POST /channels/{type}/{id}`: full update, `add_members`, `remove_members`, with an optional
/// `message`.
async fn update_channel(
    State(shared): State<Shared>,
    Path((channel_type, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let op = "UpdateChannel";
    let body = match object(op, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let cid = format!("{channel_type}:{id}");
    let mut world = shared.lock();
    if !world.channels.contains_key(&cid) {
        return no_channel(op, &channel_type, &id);
    }
    // A list of ids, `Some(vec![])` when absent, `None` when malformed.
    let list = |key: &str| match body.get(key) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(v) => member_ids(v),
    };
    let Some(add) = list("add_members") else {
        return input_error(op, "add_members must be a list");
    };
    let Some(remove) = list("remove_members") else {
        return input_error(op, "remove_members must be a list");
    };
    let missing = world.missing_users(&add);
    if !missing.is_empty() {
        return input_error(
            op,
            &format!(
                "The following users are involved in channel update operation, but don't exist: [{}]. Please create the user objects before setting up the channel.",
                missing.join(", ")
            ),
        );
    }
    let message = match body.get("message") {
        None | Some(Value::Null) => None,
        Some(m) => match validate_message(&world, op, m) {
            Ok(m) => Some(m),
            Err(r) => return r,
        },
    };
    let data = body.get("data").and_then(Value::as_object).cloned();
    let seq = world.next_seq();
    let stamp = now();
    let channel = world.channels.get_mut(&cid).expect("checked");
    for user_id in add {
        if !channel.members.iter().any(|m| m.user_id == user_id) {
            channel.members.push(Member {
                user_id,
                created_at: stamp.clone(),
                last_read_seq: seq,
                last_read: stamp.clone(),
            });
        }
    }
    channel.members.retain(|m| !remove.contains(&m.user_id));
    if let Some(data) = data {
        // A full update replaces the custom data.
        channel.frozen = data.get("frozen").and_then(Value::as_bool).unwrap_or(false);
        channel.custom = data
            .into_iter()
            .filter(|(k, _)| !BUILT_IN_DATA_KEYS.contains(&k.as_str()))
            .collect();
    }
    channel.updated_at = stamp;
    channel.touched = seq;
    let message = message.map(|m| append_message(&mut world, &cid, m));
    let channel = &world.channels[&cid];
    let mut out = json!({
        "channel": world.channel_json(channel),
        "members": channel.members.iter().map(|m| world.member_json(m)).collect::<Vec<_>>(),
    });
    if let Some(message) = message {
        out["message"] = message;
    }
    success(StatusCode::CREATED, out)
}

/// `PATCH /channels/{type}/{id}`: `set` / `unset` (dotted paths allowed).
async fn partial_update(
    State(shared): State<Shared>,
    Path((channel_type, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let op = "UpdateChannelPartial";
    let body = match object(op, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let set = match body.get("set") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return input_error(op, "set must be an object"),
    };
    let unset: Vec<String> = match body.get("unset") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => match member_ids(v) {
            Some(u) => u,
            None => return input_error(op, "unset must be a list of strings"),
        },
    };
    if set.is_empty() && unset.is_empty() {
        return input_error(op, "set or unset must be provided");
    }
    for key in set.keys().chain(&unset) {
        if BUILT_IN_DATA_KEYS.contains(&key.as_str()) && key != "frozen" {
            return input_error(op, &format!("{key} is a reserved field"));
        }
    }
    let cid = format!("{channel_type}:{id}");
    let mut world = shared.lock();
    let seq = world.next_seq();
    let Some(channel) = world.channels.get_mut(&cid) else {
        return no_channel(op, &channel_type, &id);
    };
    for (key, value) in set {
        if key == "frozen" {
            channel.frozen = value.as_bool().unwrap_or(false);
        } else {
            set_path(&mut channel.custom, &key, value);
        }
    }
    for key in &unset {
        if key == "frozen" {
            channel.frozen = false;
        } else {
            unset_path(&mut channel.custom, key);
        }
    }
    channel.updated_at = now();
    channel.touched = seq;
    let channel = &world.channels[&cid];
    success(
        StatusCode::OK,
        json!({
            "channel": world.channel_json(channel),
            "members": channel.members.iter().map(|m| world.member_json(m)).collect::<Vec<_>>(),
        }),
    )
}

/// `DELETE /channels/{type}/{id}` (`hard_delete=true` also frees the message ids).
async fn delete_channel(
    State(shared): State<Shared>,
    Path((channel_type, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let cid = format!("{channel_type}:{id}");
    let mut world = shared.lock();
    let Some(channel) = world.channels.remove(&cid) else {
        return no_channel("DeleteChannel", &channel_type, &id);
    };
    if query.get("hard_delete").map(String::as_str) == Some("true") {
        for m in &channel.messages {
            world.message_ids.remove(&m.id);
        }
    }
    let mut out = world.channel_json(&channel);
    out["deleted_at"] = json!(now());
    success(StatusCode::OK, json!({ "channel": out }))
}

/// `POST /channels/{type}/{id}/message`: a server-side message (accepted in frozen channels:
/// server-side calls skip permission checks).
async fn send_message(
    State(shared): State<Shared>,
    Path((channel_type, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let op = "SendMessage";
    let body = match object(op, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(message) = body.get("message") else {
        return input_error(op, "message is a required field");
    };
    let cid = format!("{channel_type}:{id}");
    let mut world = shared.lock();
    if !world.channels.contains_key(&cid) {
        return no_channel(op, &channel_type, &id);
    }
    let message = match validate_message(&world, op, message) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let message = append_message(&mut world, &cid, message);
    success(StatusCode::CREATED, json!({ "message": message }))
}

impl FakeStream {
    /// The base URL to point the adapter at.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The adapter's configuration for this fake.
    pub fn config(&self) -> StreamConfig {
        StreamConfig {
            api_key: API_KEY.to_owned(),
            api_secret: SecretString::from(API_SECRET),
            base_url: self.base_url(),
        }
    }

    /// The concrete adapter pointed at this fake.
    pub fn stream_chat(&self, resilience: Resilience) -> StreamChat {
        StreamChat::new(
            &self.config(),
            Duration::from_secs(3600),
            ProviderHttp::new("stream", reqwest::Client::new(), resilience),
        )
    }

    /// A user as stored (`None` when absent).
    pub fn user(&self, id: &str) -> Option<Value> {
        let world = self.shared.lock();
        world.users.contains_key(id).then(|| world.user_json(id))
    }

    /// Whether Stream would accept `token` as `user`'s client token: signed with the secret,
    /// for that user, not expired, and not revoked (a user with `revoke_tokens_issued_before`
    /// refuses tokens whose `iat` is earlier, and tokens without `iat`; Stream's error 401/42
    /// "token before iat").
    pub fn accepts_user_token(&self, user: &str, token: &str) -> Result<(), String> {
        let (_, claims) = decode_jwt(token, API_SECRET)?;
        if claims["user_id"] != user {
            return Err(format!("the token is for {}", claims["user_id"]));
        }
        let now = Utc::now().timestamp();
        if claims["exp"].as_i64().is_some_and(|exp| exp <= now) {
            return Err("token expired".into());
        }
        let world = self.shared.lock();
        let revoked_before = world
            .users
            .get(user)
            .and_then(|u| u.data.get("revoke_tokens_issued_before"))
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let Some(before) = revoked_before {
            let Some(iat) = claims["iat"].as_i64() else {
                return Err("tokens without iat are invalid once revocation is set".into());
            };
            // `iat` has whole seconds; the fake compares it to the millisecond (Stream's own
            // rounding is unconfirmed).
            if iat.saturating_mul(1000) < before.timestamp_millis() {
                return Err("token revoked (issued before revoke_tokens_issued_before)".into());
            }
        }
        Ok(())
    }

    /// The channel object as Stream answers it (`None` when absent).
    pub fn channel(&self, channel: &ChannelRef) -> Option<Value> {
        let world = self.shared.lock();
        world
            .channels
            .get(&channel.cid())
            .map(|c| world.channel_json(c))
    }

    /// The channel's messages as Stream answers them, oldest first (`None` when absent).
    pub fn messages(&self, channel: &ChannelRef) -> Option<Vec<Value>> {
        let world = self.shared.lock();
        let c = world.channels.get(&channel.cid())?;
        Some(
            c.messages
                .iter()
                .map(|m| world.message_json(c, m))
                .collect(),
        )
    }

    /// Marks everything in the channel read for `user`.
    pub fn mark_read(&self, channel: &ChannelRef, user: &str) {
        let mut world = self.shared.lock();
        let seq = world.seq;
        if let Some(member) = world
            .channels
            .get_mut(&channel.cid())
            .and_then(|c| c.members.iter_mut().find(|m| m.user_id == user))
        {
            member.last_read_seq = seq;
            member.last_read = now();
        }
    }

    /// Puts users (id = name) straight into the state.
    pub fn seed_users(&self, ids: &[&str]) {
        let mut world = self.shared.lock();
        let stamp = now();
        for id in ids {
            world.users.insert(
                (*id).to_owned(),
                User {
                    data: json!({ "id": id, "name": id })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                    created_at: stamp.clone(),
                    updated_at: stamp.clone(),
                },
            );
        }
    }

    /// Puts a channel straight into the state (its users are seeded too).
    pub fn seed_channel(&self, channel: &ChannelRef, created_by: &str, members: &[&str]) {
        self.seed_users(&[created_by]);
        self.seed_users(members);
        let mut world = self.shared.lock();
        let seq = world.next_seq();
        let stamp = now();
        world.channels.insert(
            channel.cid(),
            Channel {
                channel_type: channel.channel_type.clone(),
                id: channel.channel_id.clone(),
                created_by: created_by.to_owned(),
                frozen: false,
                custom: Map::new(),
                members: members
                    .iter()
                    .map(|m| Member {
                        user_id: (*m).to_owned(),
                        created_at: stamp.clone(),
                        last_read_seq: seq,
                        last_read: stamp.clone(),
                    })
                    .collect(),
                messages: Vec::new(),
                created_at: stamp.clone(),
                updated_at: stamp,
                touched: seq,
            },
        );
    }
}

impl FakeProvider for FakeStream {
    /// The request log and fault injection.
    fn control(&self) -> &Control {
        &self.control
    }

    /// The real [`StreamChat`] pointed at this fake.
    fn adapter(&self, resilience: Resilience) -> Arc<dyn ChatProvider> {
        Arc::new(self.stream_chat(resilience))
    }

    /// `CAREGRAPH_CHAT_PROVIDER=stream` and the `STREAM_*` variables of this fake.
    fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("CAREGRAPH_CHAT_PROVIDER".into(), "stream".into()),
            ("STREAM_API_KEY".into(), API_KEY.into()),
            ("STREAM_API_SECRET".into(), API_SECRET.into()),
            ("STREAM_BASE_URL".into(), self.base_url()),
        ]
    }

    /// A member posts as a client would; frozen or missing channels and non-members refuse.
    fn user_posts(&self, channel: &ChannelRef, user: &str, text: &str) -> Result<(), String> {
        let mut world = self.shared.lock();
        let cid = channel.cid();
        let Some(c) = world.channels.get(&cid) else {
            return Err(format!("channel {cid} does not exist"));
        };
        if c.frozen {
            return Err(format!("channel {cid} is frozen"));
        }
        if !c.members.iter().any(|m| m.user_id == user) {
            return Err(format!("{user} is not a member of {cid}"));
        }
        let id = uuid::Uuid::new_v4().to_string();
        append_message(
            &mut world,
            &cid,
            (id, text.to_owned(), "regular".into(), user.to_owned()),
        );
        Ok(())
    }

    /// The channel's custom data (name and image included: Stream stores them as custom keys).
    fn metadata(&self, channel: &ChannelRef) -> Option<Map<String, Value>> {
        let world = self.shared.lock();
        world.channels.get(&channel.cid()).map(|c| c.custom.clone())
    }

    /// The channel's member ids, in the order they joined.
    fn members(&self, channel: &ChannelRef) -> Option<Vec<String>> {
        let world = self.shared.lock();
        world
            .channels
            .get(&channel.cid())
            .map(|c| c.members.iter().map(|m| m.user_id.clone()).collect())
    }
}
