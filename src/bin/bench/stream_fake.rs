//! A minimal in-process fake of the Stream Chat REST endpoints caregraph calls
//! (`src/providers/chat/stream.rs`), for the `chats` workload: users are accepted and forgotten;
//! channels keep their members, frozen flag, members' last read and their latest messages (at
//! most [`MESSAGES_KEPT`]); `POST /channels` refuses more than [`QUERY_CHANNELS_MAX`] channels,
//! as Stream does. It checks the `api_key` and `Stream-Auth-Type` of every call (not the
//! server token's signature), and counts calls: channel-list reads apart from the rest.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request, State},
    http::{StatusCode, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// The API key the fake accepts.
pub const API_KEY: &str = "bench-stream-key";
/// The API secret caregraph signs with (not checked).
pub const API_SECRET: &str = "bench-stream-secret-0123456789abcdef";
/// Stream's maximum `limit` of `POST /channels`.
pub const QUERY_CHANNELS_MAX: usize = 30;
/// Messages kept per channel (the oldest are dropped).
const MESSAGES_KEPT: usize = 20;

/// A stored message.
struct Message {
    id: String,
    text: String,
    kind: String,
    user_id: String,
    created_at: String,
    seq: u64,
}

/// A stored channel.
struct Channel {
    /// `type:id`.
    cid: String,
    frozen: bool,
    /// Members with the sequence number of the last message they read.
    members: Vec<(String, u64)>,
    /// The latest messages, oldest first.
    messages: VecDeque<Message>,
}

impl Channel {
    /// The channel state as Stream answers it: `channel`, `members`, the last `message_limit`
    /// messages and `read` (each member's unread messages: others' after their last read).
    fn state(&self, message_limit: usize) -> Value {
        let skip = self.messages.len().saturating_sub(message_limit);
        let messages: Vec<Value> = self
            .messages
            .iter()
            .skip(skip)
            .map(|m| self.message(m))
            .collect();
        let read: Vec<Value> = self
            .members
            .iter()
            .map(|(user, last)| {
                let unread = self
                    .messages
                    .iter()
                    .filter(|m| m.seq > *last && m.user_id != *user)
                    .count();
                json!({"user": {"id": user}, "unread_messages": unread})
            })
            .collect();
        let (channel_type, id) = self.cid.split_once(':').unwrap_or_default();
        json!({
            "channel": {
                "cid": self.cid,
                "type": channel_type,
                "id": id,
                "frozen": self.frozen,
                "member_count": self.members.len(),
            },
            "members": self.members.iter().map(|(u, _)| json!({"user_id": u, "user": {"id": u}})).collect::<Vec<_>>(),
            "messages": messages,
            "read": read,
        })
    }

    fn message(&self, m: &Message) -> Value {
        json!({
            "id": m.id,
            "text": m.text,
            "type": m.kind,
            "user": {"id": m.user_id},
            "cid": self.cid,
            "created_at": m.created_at,
        })
    }

    /// Adds the members it lacks.
    fn add(&mut self, users: &[String]) {
        for user in users {
            if !self.members.iter().any(|(u, _)| u == user) {
                self.members.push((user.clone(), 0));
            }
        }
    }
}

#[derive(Default)]
struct World {
    channels: HashMap<String, Channel>,
    seq: u64,
}

/// What the handlers share.
#[derive(Clone, Default)]
struct Shared {
    world: Arc<Mutex<World>>,
    counts: Arc<Counts>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, World> {
        // A handler that panicked left nothing half-done that matters to a benchmark.
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Calls received so far.
#[derive(Default)]
pub struct Counts {
    /// `POST /channels`: channel-list reads.
    pub query_channels: AtomicU64,
    /// Every other call.
    pub other: AtomicU64,
}

/// A running fake.
pub struct StreamFake {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its call counts.
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StreamFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StreamFake {
    /// `POST /channels` calls so far.
    pub fn channel_reads(&self) -> u64 {
        self.counts.query_channels.load(Ordering::Relaxed)
    }

    /// Calls other than `POST /channels` so far.
    pub fn other_calls(&self) -> u64 {
        self.counts.other.load(Ordering::Relaxed)
    }
}

/// Starts the fake on a free loopback port.
pub async fn start() -> anyhow::Result<StreamFake> {
    let shared = Shared::default();
    let counts = Arc::clone(&shared.counts);
    let router = Router::new()
        .route("/users", post(users).patch(users))
        .route("/users/delete", post(delete_users))
        .route("/channels", post(query_channels))
        .route("/channels/{type}/{id}/query", post(get_or_create))
        .route(
            "/channels/{type}/{id}",
            post(update_members).patch(update).delete(delete_channel),
        )
        .route("/channels/{type}/{id}/message", post(send_message))
        .route("/channels/{type}/{id}/read", post(mark_read))
        .route("/messages/{id}", get(get_message))
        .layer(middleware::from_fn_with_state(shared.clone(), check))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("the Stream fake stopped: {e}");
        }
    });
    Ok(StreamFake { base, counts, task })
}

/// Stream's error body.
fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"code": 4, "message": message, "StatusCode": status.as_u16()})),
    )
        .into_response()
}

/// Counts the call and checks `api_key` and `Stream-Auth-Type: jwt`.
async fn check(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let counter = if request.uri().path() == "/channels" {
        &shared.counts.query_channels
    } else {
        &shared.counts.other
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let key = format!("api_key={API_KEY}");
    let has_key = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == key));
    let jwt = request
        .headers()
        .get("stream-auth-type")
        .is_some_and(|v| v == "jwt");
    if !has_key || !jwt {
        return error(
            StatusCode::UNAUTHORIZED,
            "api_key or Stream-Auth-Type missing",
        );
    }
    next.run(request).await
}

/// A JSON object body (else Stream's input error).
struct Object(Value);

impl<S: Send + Sync> FromRequest<S> for Object {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match serde_json::from_slice(&bytes) {
            Ok(v @ Value::Object(_)) => Ok(Self(v)),
            _ => Err(error(StatusCode::BAD_REQUEST, "invalid JSON body")),
        }
    }
}

/// The `type:id` of a `/channels/{type}/{id}…` path.
struct Cid(String);

impl<S: Send + Sync> FromRequestParts<S> for Cid {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path((channel_type, id)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self(format!("{channel_type}:{id}")))
    }
}

/// Strings of a JSON array.
fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /users` and `PATCH /users`: every user is known.
async fn users(Object(body): Object) -> Response {
    let mut known = Map::new();
    match body.get("users") {
        Some(Value::Object(users)) => {
            for id in users.keys() {
                known.insert(id.clone(), json!({"id": id}));
            }
        }
        Some(Value::Array(updates)) => {
            for id in updates.iter().filter_map(|u| u["id"].as_str()) {
                known.insert(id.to_owned(), json!({"id": id}));
            }
        }
        _ => return error(StatusCode::BAD_REQUEST, "users is a required field"),
    }
    (StatusCode::CREATED, Json(json!({"users": known}))).into_response()
}

/// `POST /users/delete`.
async fn delete_users() -> Response {
    (StatusCode::CREATED, Json(json!({"task_id": "bench"}))).into_response()
}

/// `POST /channels` on `filter_conditions.cid.$in`.
async fn query_channels(State(shared): State<Shared>, Object(body): Object) -> Response {
    let cids = strings(
        body.get("filter_conditions")
            .and_then(|f| f["cid"].get("$in")),
    );
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    if limit > QUERY_CHANNELS_MAX || cids.len() > QUERY_CHANNELS_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            "QueryChannels failed with error: \"limit must be less than or equal to 30\"",
        );
    }
    let message_limit = body
        .get("message_limit")
        .and_then(Value::as_u64)
        .unwrap_or(25) as usize;
    let world = shared.lock();
    let channels: Vec<Value> = cids
        .iter()
        .filter_map(|cid| world.channels.get(cid))
        .take(limit)
        .map(|c| c.state(message_limit))
        .collect();
    (StatusCode::CREATED, Json(json!({"channels": channels}))).into_response()
}

/// `POST /channels/{type}/{id}/query`: get or create (with `data.created_by_id`).
async fn get_or_create(
    State(shared): State<Shared>,
    Cid(cid): Cid,
    Object(body): Object,
) -> Response {
    let message_limit = body["messages"]["limit"].as_u64().unwrap_or(0) as usize;
    let mut world = shared.lock();
    if !world.channels.contains_key(&cid) {
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        if data["created_by_id"].as_str().is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "GetOrCreateChannel failed with error: \"either data.created_by or data.created_by_id must be provided when using server side auth.\"",
            );
        }
        let mut channel = Channel {
            cid: cid.clone(),
            frozen: data["frozen"].as_bool().unwrap_or(false),
            members: Vec::new(),
            messages: VecDeque::new(),
        };
        channel.add(&strings(data.get("members")));
        world.channels.insert(cid.clone(), channel);
    }
    match world.channels.get(&cid) {
        Some(channel) => (StatusCode::CREATED, Json(channel.state(message_limit))).into_response(),
        None => error(StatusCode::NOT_FOUND, "no channel"),
    }
}

/// Posts `message` (a Stream message object) in `cid` as its `user_id`; an error when its id
/// is taken there.
fn post_message(
    world: &mut World,
    cid: &str,
    message: &Value,
) -> Result<Value, (StatusCode, String)> {
    let seq = world.seq + 1;
    let Some(channel) = world.channels.get_mut(cid) else {
        return Err((StatusCode::NOT_FOUND, "no channel".into()));
    };
    let id = message["id"].as_str().unwrap_or_default().to_owned();
    if channel.messages.iter().any(|m| m.id == id) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("SendMessage failed with error: \"a message with ID {id} already exists\""),
        ));
    }
    let user_id = message["user_id"].as_str().unwrap_or_default().to_owned();
    let stored = Message {
        id,
        text: message["text"].as_str().unwrap_or_default().to_owned(),
        kind: message["type"].as_str().unwrap_or("regular").to_owned(),
        user_id: user_id.clone(),
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        seq,
    };
    // The author has read what they sent.
    if let Some(member) = channel.members.iter_mut().find(|(u, _)| *u == user_id) {
        member.1 = seq;
    }
    let answer = channel.message(&stored);
    channel.messages.push_back(stored);
    if channel.messages.len() > MESSAGES_KEPT {
        channel.messages.pop_front();
    }
    world.seq = seq;
    Ok(answer)
}

/// `POST /channels/{type}/{id}`: `add_members` / `remove_members` with an optional `message`.
async fn update_members(
    State(shared): State<Shared>,
    Cid(cid): Cid,
    Object(body): Object,
) -> Response {
    let mut world = shared.lock();
    let Some(channel) = world.channels.get_mut(&cid) else {
        return error(StatusCode::NOT_FOUND, "no channel");
    };
    channel.add(&strings(body.get("add_members")));
    let remove = strings(body.get("remove_members"));
    channel.members.retain(|(u, _)| !remove.contains(u));
    if let Some(message) = body.get("message")
        && let Err((status, why)) = post_message(&mut world, &cid, message)
    {
        return error(status, &why);
    }
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

/// `PATCH /channels/{type}/{id}`: `set.frozen` is kept, other data ignored.
async fn update(State(shared): State<Shared>, Cid(cid): Cid, Object(body): Object) -> Response {
    let mut world = shared.lock();
    let Some(channel) = world.channels.get_mut(&cid) else {
        return error(StatusCode::NOT_FOUND, "no channel");
    };
    if let Some(frozen) = body["set"]["frozen"].as_bool() {
        channel.frozen = frozen;
    }
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

/// `DELETE /channels/{type}/{id}`.
async fn delete_channel(State(shared): State<Shared>, Cid(cid): Cid) -> Response {
    match shared.lock().channels.remove(&cid) {
        Some(_) => (StatusCode::CREATED, Json(json!({}))).into_response(),
        None => error(StatusCode::NOT_FOUND, "no channel"),
    }
}

/// `POST /channels/{type}/{id}/message`.
async fn send_message(
    State(shared): State<Shared>,
    Cid(cid): Cid,
    Object(body): Object,
) -> Response {
    let Some(message) = body.get("message") else {
        return error(StatusCode::BAD_REQUEST, "message is a required field");
    };
    match post_message(&mut shared.lock(), &cid, message) {
        Ok(message) => (StatusCode::CREATED, Json(json!({"message": message}))).into_response(),
        Err((status, why)) => error(status, &why),
    }
}

/// `POST /channels/{type}/{id}/read`: the member has read everything.
async fn mark_read(State(shared): State<Shared>, Cid(cid): Cid, Object(body): Object) -> Response {
    let user = body["user_id"].as_str().unwrap_or_default();
    let mut world = shared.lock();
    let seq = world.seq;
    let Some(channel) = world.channels.get_mut(&cid) else {
        return error(StatusCode::NOT_FOUND, "no channel");
    };
    if let Some(member) = channel.members.iter_mut().find(|(u, _)| u == user) {
        member.1 = seq;
    }
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

/// `GET /messages/{id}`.
async fn get_message(State(shared): State<Shared>, Path(id): Path<String>) -> Response {
    let world = shared.lock();
    for channel in world.channels.values() {
        if let Some(m) = channel.messages.iter().find(|m| m.id == id) {
            return Json(json!({"message": channel.message(m)})).into_response();
        }
    }
    error(StatusCode::NOT_FOUND, "no message")
}
