//! The fake Ethora server: the REST calls of Ethora's backend SDK (`docs/providers.md` §3) over
//! in-memory users and rooms (members, extra keys, messages).
//!
//! Every request must carry the same server JWT in `x-custom-token` and `Authorization: Bearer`,
//! HS256-signed with the scoped server key (hex HMAC-SHA256(app secret, `ethora:server:v1`)) and
//! with the claims `{"data": {"appId", "type": "server"}, "iat"}`; anything else is answered 401.
//! Requests with a body must be `application/json`. Unknown rooms and users are answered as
//! Ethora does: HTTP 422 with a text body containing "not found".
//!
//! Where Ethora's behaviour is unconfirmed the fake takes the strict side so the adapter's
//! fallbacks are exercised: a user batch containing one existing user is refused as a whole
//! (422 "already exists"), and a delete batch naming one unknown user is refused as a whole
//! (422 "not found"). Posting into a room whose `frozen` extra key is true fails in
//! [`FakeProvider::user_posts`]: that models caregraph's apps honouring the flag, not Ethora,
//! which does not enforce it.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use caregraph::{
    config::EthoraConfig,
    providers::{
        chat::{ChannelRef, ChatProvider, ethora::Ethora},
        http::{ProviderHttp, Resilience},
    },
};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::{Control, FakeProvider, serve};

/// The app id the fake serves.
pub const APP_ID: &str = "646cc8dc96d4a4dc8f7b2f2d";
/// The app secret the fake shares with the adapter.
pub const APP_SECRET: &str = "fake-ethora-app-secret-7d1c0a5e9b";
/// The MUC host of room JIDs.
pub const CONFERENCE_HOST: &str = "conference.xmpp.fake-ethora.test";
/// The XMPP service the configuration defaults to (`ETHORA_XMPP_SERVICE` is not set by `vars`).
pub const XMPP_SERVICE: &str = "wss://xmpp.ethoradev.com:5443/ws";

/// Room keys the fake keeps as fields, not as extra keys.
const ROOM_FIELDS: &[&str] = &[
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

/// hex HMAC-SHA256(`secret`, `purpose`): Ethora's scoped key.
pub fn scoped_key(secret: &str, purpose: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A user as the fake stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeUser {
    /// caregraph's user id.
    pub uuid: String,
    /// `<appId>_<uuid>`.
    pub xmpp_username: String,
    /// The e-mail it was created with.
    pub email: String,
    /// `firstName`.
    pub first_name: String,
    /// `lastName`.
    pub last_name: String,
    /// The password it was created with.
    pub password: String,
    /// `profileImage`.
    pub profile_image: Option<String>,
}

/// A message in a room.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeMessage {
    /// The fake's message id.
    pub id: String,
    /// The text.
    pub text: String,
    /// The author's caregraph id (`None` for broadcasts).
    pub author: Option<String>,
    /// Whether the broadcast's metadata said `system: true`.
    pub system: bool,
    /// The broadcast's `metadata` (Null for posts).
    pub metadata: Value,
}

/// A room as the fake stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeRoom {
    /// `<appId>_<uuid>`.
    pub name: String,
    /// The channel id.
    pub uuid: String,
    /// `title`.
    pub title: String,
    /// `type`.
    pub kind: String,
    /// `description`.
    pub description: Option<String>,
    /// `picture`.
    pub picture: Option<String>,
    /// XMPP usernames (`<appId>_<userId>`).
    pub members: BTreeSet<String>,
    /// Every other key the room was given.
    pub extra: Map<String, Value>,
    /// Broadcasts and posts, oldest first.
    pub messages: Vec<FakeMessage>,
}

impl FakeRoom {
    /// Whether the `frozen` extra key is true.
    pub fn frozen(&self) -> bool {
        self.extra.get("frozen") == Some(&Value::Bool(true))
    }
}

/// The fake's state.
#[derive(Default)]
struct Inner {
    /// Users by uuid.
    users: BTreeMap<String, FakeUser>,
    /// Rooms by short name.
    rooms: BTreeMap<String, FakeRoom>,
    /// How long each room read waits.
    read_delay: Duration,
    /// Room reads being answered now.
    reads_in_flight: usize,
    /// The most room reads answered at once.
    max_reads_in_flight: usize,
    /// The last id handed out.
    next_id: u64,
}

impl Inner {
    /// A fresh id with `prefix`.
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:024x}", self.next_id)
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    /// The state.
    state: Arc<Mutex<Inner>>,
    /// The scoped server-token key.
    server_key: String,
}

impl Shared {
    /// Locks the state.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().expect("fake ethora state")
    }
}

/// A running fake Ethora.
pub struct FakeEthora {
    /// The request log and fault injection.
    control: Control,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The state the handlers change.
    shared: Shared,
}

/// Starts a fake Ethora on a free port.
pub async fn start() -> FakeEthora {
    let shared = Shared {
        state: Arc::default(),
        server_key: scoped_key(APP_SECRET, "ethora:server:v1"),
    };
    let router = Router::new()
        .route("/v2/users/batch", post(create_users))
        .route("/v1/users/batch", axum::routing::delete(delete_users))
        .route("/v2/chats/users", patch(update_users))
        .route("/v2/chats", post(create_chat))
        .route(
            "/v2/chats/users-access",
            post(grant_access).delete(revoke_access),
        )
        .route("/v1/chats", axum::routing::delete(delete_chat))
        .route("/v2/apps/{app_id}/chats/broadcast", post(broadcast))
        .route(
            "/v2/apps/{app_id}/chats/{chat_name}",
            get(get_room).patch(patch_room),
        )
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared.clone());
    let control = Control::default();
    let addr = serve(router, control.clone()).await;
    FakeEthora {
        control,
        base_url: format!("http://{addr}"),
        shared,
    }
}

impl FakeEthora {
    /// The configuration that points the adapter here.
    pub fn config(&self) -> EthoraConfig {
        EthoraConfig {
            api_url: self.base_url.clone(),
            app_id: APP_ID.into(),
            app_secret: APP_SECRET.to_owned().into(),
            conference_host: CONFERENCE_HOST.into(),
            xmpp_service: XMPP_SERVICE.into(),
        }
    }

    /// The adapter as its concrete type.
    pub fn ethora(&self, resilience: Resilience) -> Ethora {
        Ethora::new(
            &self.config(),
            Duration::from_secs(3600),
            ProviderHttp::new("ethora", reqwest::Client::new(), resilience),
        )
    }

    /// A room by channel id.
    pub fn room(&self, channel_id: &str) -> Option<FakeRoom> {
        self.shared
            .lock()
            .rooms
            .get(&format!("{APP_ID}_{channel_id}"))
            .cloned()
    }

    /// A user by caregraph id.
    pub fn user(&self, id: &str) -> Option<FakeUser> {
        self.shared.lock().users.get(id).cloned()
    }

    /// How many users exist.
    pub fn user_count(&self) -> usize {
        self.shared.lock().users.len()
    }

    /// Creates a user directly (as if made earlier).
    pub fn seed_user(&self, id: &str, first_name: &str, last_name: &str) {
        self.shared.lock().users.insert(
            id.to_owned(),
            FakeUser {
                uuid: id.to_owned(),
                xmpp_username: format!("{APP_ID}_{id}"),
                email: format!("{id}@seed.test"),
                first_name: first_name.to_owned(),
                last_name: last_name.to_owned(),
                password: "seeded".into(),
                profile_image: None,
            },
        );
    }

    /// Creates a room directly with these member ids (users are seeded when missing).
    pub fn seed_room(&self, channel_id: &str, members: &[&str]) {
        for m in members {
            if self.user(m).is_none() {
                self.seed_user(m, "Seed", "User");
            }
        }
        let mut inner = self.shared.lock();
        inner.rooms.insert(
            format!("{APP_ID}_{channel_id}"),
            FakeRoom {
                name: format!("{APP_ID}_{channel_id}"),
                uuid: channel_id.to_owned(),
                title: format!("Room {channel_id}"),
                kind: "group".into(),
                description: None,
                picture: None,
                members: members.iter().map(|m| format!("{APP_ID}_{m}")).collect(),
                extra: Map::new(),
                messages: Vec::new(),
            },
        );
    }

    /// Every room read waits this long (to observe concurrency).
    pub fn set_read_delay(&self, delay: Duration) {
        self.shared.lock().read_delay = delay;
    }

    /// The most room reads that were in flight at once.
    pub fn max_concurrent_reads(&self) -> usize {
        self.shared.lock().max_reads_in_flight
    }
}

impl FakeProvider for FakeEthora {
    fn control(&self) -> &Control {
        &self.control
    }

    fn adapter(&self, resilience: Resilience) -> Arc<dyn ChatProvider> {
        Arc::new(self.ethora(resilience))
    }

    fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("CAREGRAPH_CHAT_PROVIDER".into(), "ethora".into()),
            ("ETHORA_CHAT_API_URL".into(), self.base_url.clone()),
            ("ETHORA_CHAT_APP_ID".into(), APP_ID.into()),
            ("ETHORA_CHAT_APP_SECRET".into(), APP_SECRET.into()),
            ("ETHORA_CONFERENCE_HOST".into(), CONFERENCE_HOST.into()),
        ]
    }

    fn user_posts(&self, channel: &ChannelRef, user: &str, text: &str) -> Result<(), String> {
        let mut inner = self.shared.lock();
        let id = inner.id("msg");
        let room = inner
            .rooms
            .get_mut(&format!("{APP_ID}_{}", channel.channel_id))
            .ok_or_else(|| format!("room {} not found", channel.channel_id))?;
        if room.frozen() {
            return Err("the room is frozen".into());
        }
        if !room.members.contains(&format!("{APP_ID}_{user}")) {
            return Err(format!("{user} is no member"));
        }
        room.messages.push(FakeMessage {
            id,
            text: text.to_owned(),
            author: Some(user.to_owned()),
            system: false,
            metadata: Value::Null,
        });
        Ok(())
    }

    fn metadata(&self, channel: &ChannelRef) -> Option<Map<String, Value>> {
        self.room(&channel.channel_id).map(|r| r.extra)
    }

    fn members(&self, channel: &ChannelRef) -> Option<Vec<String>> {
        let prefix = format!("{APP_ID}_");
        self.room(&channel.channel_id).map(|r| {
            r.members
                .iter()
                .map(|m| m.strip_prefix(&prefix).unwrap_or(m).to_owned())
                .collect()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication.
// ---------------------------------------------------------------------------------------------

/// A header as text.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Whether `token` is a server JWT of this app signed with the scoped server key.
fn valid_server_token(token: &str, key: &str) -> bool {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let Ok(data) = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(key.as_bytes()),
        &validation,
    ) else {
        return false;
    };
    let claims = data.claims;
    let now = chrono::Utc::now().timestamp();
    data.header.typ.as_deref() == Some("JWT")
        && claims["data"]["appId"] == APP_ID
        && claims["data"]["type"] == "server"
        && claims["iat"].as_i64().is_some_and(|iat| iat <= now + 60)
}

/// Refuses (401) anything but the same valid server JWT in both headers, and (400) bodies that
/// are not JSON.
async fn authenticate(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let custom = header_text(headers, "x-custom-token");
    let bearer = header_text(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));
    let authorised = match (custom, bearer) {
        (Some(custom), Some(bearer)) => {
            custom == bearer && valid_server_token(&custom, &shared.server_key)
        }
        _ => false,
    };
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({ "success": false, "error": "Unauthorized", "code": "UNAUTHORIZED" }),
            ),
        )
            .into_response();
    }
    if request.method() != Method::GET
        && header_text(request.headers(), header::CONTENT_TYPE.as_str()).as_deref()
            != Some("application/json")
    {
        return bad_request("expected a JSON body");
    }
    next.run(request).await
}

// ---------------------------------------------------------------------------------------------
// Answers.
// ---------------------------------------------------------------------------------------------

/// 200 with a JSON body.
fn ok(body: Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Ethora's 422 with a text body.
fn unprocessable(text: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

/// 400 with Ethora's documented error shape.
fn bad_request(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "success": false, "error": error, "code": "VALIDATION_ERROR" })),
    )
        .into_response()
}

/// 403: another app's path.
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "success": false, "error": "Forbidden for this app" })),
    )
        .into_response()
}

/// The JSON object of a body, or what is wrong with it.
fn parse(body: &Bytes) -> Result<Map<String, Value>, &'static str> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("malformed JSON body"),
    }
}

/// A non-empty string field.
fn text<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A list of strings (`None` when absent or not all strings).
fn strings(map: &Map<String, Value>, key: &str) -> Option<Vec<String>> {
    map.get(key)?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// A user as rooms list their members.
fn user_public(user: &FakeUser) -> Value {
    json!({
        "_id": format!("u_{}", user.uuid),
        "uuid": user.uuid,
        "xmppUsername": user.xmpp_username,
        "firstName": user.first_name,
        "lastName": user.last_name,
        "profileImage": user.profile_image,
    })
}

/// A room as Ethora returns it: fields, members when asked for, and its extra keys.
fn room_record(inner: &Inner, room: &FakeRoom, include_members: bool) -> Value {
    let mut record = Map::new();
    record.insert("_id".into(), json!(format!("r_{}", room.uuid)));
    record.insert("name".into(), json!(room.name));
    record.insert("title".into(), json!(room.title));
    record.insert("type".into(), json!(room.kind));
    record.insert("description".into(), json!(room.description));
    record.insert("picture".into(), json!(room.picture));
    record.insert("appId".into(), json!(APP_ID));
    if include_members {
        let prefix = format!("{APP_ID}_");
        let members: Vec<Value> = room
            .members
            .iter()
            .filter_map(|m| inner.users.get(m.strip_prefix(&prefix).unwrap_or(m)))
            .map(user_public)
            .collect();
        record.insert("members".into(), Value::Array(members));
    }
    for (k, v) in &room.extra {
        record.insert(k.clone(), v.clone());
    }
    Value::Object(record)
}

// ---------------------------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------------------------

/// `POST /v2/users/batch`: all or nothing (one existing user refuses the batch).
async fn create_users(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let Some(list) = body.get("usersList").and_then(Value::as_array) else {
        return bad_request("usersList is required");
    };
    if list.is_empty() {
        return bad_request("usersList must not be empty");
    }
    let mut users = Vec::new();
    for entry in list {
        let Some(entry) = entry.as_object() else {
            return bad_request("usersList holds objects");
        };
        let (Some(uuid), Some(email), Some(first), Some(last), Some(password)) = (
            text(entry, "uuid"),
            text(entry, "email"),
            text(entry, "firstName"),
            text(entry, "lastName"),
            text(entry, "password"),
        ) else {
            return bad_request("uuid, email, firstName, lastName and password are required");
        };
        if last.chars().count() < 2 {
            return bad_request("lastName must have at least 2 characters");
        }
        users.push(FakeUser {
            uuid: uuid.to_owned(),
            xmpp_username: format!("{APP_ID}_{uuid}"),
            email: email.to_owned(),
            first_name: first.to_owned(),
            last_name: last.to_owned(),
            password: password.to_owned(),
            profile_image: text(entry, "profileImage").map(str::to_owned),
        });
    }
    let mut inner = shared.lock();
    if let Some(existing) = users.iter().find(|u| inner.users.contains_key(&u.uuid)) {
        return unprocessable(&format!("User {} already exists", existing.uuid));
    }
    let mut results = Vec::new();
    for user in users {
        results.push(json!({ "uuid": user.uuid, "xmppUsername": user.xmpp_username }));
        inner.users.insert(user.uuid.clone(), user);
    }
    ok(json!({ "success": true, "results": results }))
}

/// `PATCH /v2/chats/users`: 1 to 100 users, per-user results.
async fn update_users(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let Some(list) = body.get("users").and_then(Value::as_array) else {
        return bad_request("users is required");
    };
    if list.is_empty() || list.len() > 100 {
        return bad_request("users must hold 1 to 100 entries");
    }
    let prefix = format!("{APP_ID}_");
    let mut inner = shared.lock();
    let mut results = Vec::new();
    for entry in list {
        let Some(entry) = entry.as_object() else {
            return bad_request("users holds objects");
        };
        let Some(xmpp) = text(entry, "xmppUsername") else {
            results.push(json!({ "status": "skipped" }));
            continue;
        };
        let uuid = xmpp.strip_prefix(&prefix).unwrap_or(xmpp);
        let Some(user) = inner.users.get_mut(uuid) else {
            results.push(json!({ "xmppUsername": xmpp, "status": "not-found" }));
            continue;
        };
        if let Some(first) = text(entry, "firstName") {
            user.first_name = first.to_owned();
        }
        if let Some(last) = text(entry, "lastName") {
            user.last_name = last.to_owned();
        }
        if let Some(image) = text(entry, "profileImage") {
            user.profile_image = Some(image.to_owned());
        }
        results.push(json!({ "xmppUsername": xmpp, "status": "updated" }));
    }
    ok(json!({ "success": true, "results": results }))
}

/// `DELETE /v1/users/batch`: all or nothing (one unknown user refuses the batch).
async fn delete_users(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let Some(ids) = strings(&body, "usersIdList").filter(|ids| !ids.is_empty()) else {
        return bad_request("usersIdList is required");
    };
    let mut inner = shared.lock();
    if ids.iter().any(|id| !inner.users.contains_key(id)) {
        return unprocessable("User not found");
    }
    for id in &ids {
        inner.users.remove(id);
        let xmpp = format!("{APP_ID}_{id}");
        for room in inner.rooms.values_mut() {
            room.members.remove(&xmpp);
        }
    }
    ok(json!({ "success": true, "deleted": ids.len() }))
}

/// `POST /v2/chats`: 422 when the room exists.
async fn create_chat(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let (Some(title), Some(uuid), Some(kind)) = (
        text(&body, "title"),
        text(&body, "uuid"),
        text(&body, "type"),
    ) else {
        return bad_request("title, uuid and type are required");
    };
    let name = format!("{APP_ID}_{uuid}");
    let mut inner = shared.lock();
    if inner.rooms.contains_key(&name) {
        return unprocessable("Chat room already exists");
    }
    let extra: Map<String, Value> = body
        .iter()
        .filter(|(k, _)| !ROOM_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let room = FakeRoom {
        name: name.clone(),
        uuid: uuid.to_owned(),
        title: title.to_owned(),
        kind: kind.to_owned(),
        description: text(&body, "description").map(str::to_owned),
        picture: text(&body, "picture").map(str::to_owned),
        members: BTreeSet::new(),
        extra,
        messages: Vec::new(),
    };
    let record = room_record(&inner, &room, false);
    inner.rooms.insert(name, room);
    ok(json!({ "result": record }))
}

/// The chat name and members of a users-access body, or what is wrong with it.
fn access_body(body: &Bytes) -> Result<(String, Vec<String>), &'static str> {
    let body = parse(body)?;
    let chat = text(&body, "chatName").ok_or("chatName is required")?;
    let members = strings(&body, "members")
        .filter(|m| !m.is_empty())
        .ok_or("members must be a non-empty list of strings")?;
    Ok((chat.to_owned(), members))
}

/// `POST /v2/chats/users-access`: members must be known users.
async fn grant_access(State(shared): State<Shared>, body: Bytes) -> Response {
    let (chat, members) = match access_body(&body) {
        Ok(x) => x,
        Err(e) => return bad_request(e),
    };
    let prefix = format!("{APP_ID}_");
    let mut inner = shared.lock();
    if !inner.rooms.contains_key(&chat) {
        return unprocessable("Chat room not found");
    }
    if members.iter().any(|m| {
        m.strip_prefix(&prefix)
            .is_none_or(|uuid| !inner.users.contains_key(uuid))
    }) {
        return unprocessable("User not found");
    }
    if let Some(room) = inner.rooms.get_mut(&chat) {
        room.members.extend(members);
    }
    ok(json!({ "success": true }))
}

/// `DELETE /v2/chats/users-access`.
async fn revoke_access(State(shared): State<Shared>, body: Bytes) -> Response {
    let (chat, members) = match access_body(&body) {
        Ok(x) => x,
        Err(e) => return bad_request(e),
    };
    let mut inner = shared.lock();
    let Some(room) = inner.rooms.get_mut(&chat) else {
        return unprocessable("Chat room not found");
    };
    for m in &members {
        room.members.remove(m);
    }
    ok(json!({ "success": true }))
}

/// `DELETE /v1/chats`: 422 "not found" when there is no such room.
async fn delete_chat(State(shared): State<Shared>, body: Bytes) -> Response {
    let body = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let Some(name) = text(&body, "name") else {
        return bad_request("name is required");
    };
    if shared.lock().rooms.remove(name).is_none() {
        return unprocessable("Chat room not found");
    }
    ok(json!({ "success": true }))
}

/// `PATCH /v2/apps/{appId}/chats/{name}`: title, description and extra keys (`null` removes).
async fn patch_room(
    State(shared): State<Shared>,
    Path((app_id, chat_name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if app_id != APP_ID {
        return forbidden();
    }
    let body = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let mut inner = shared.lock();
    let Some(mut room) = inner.rooms.get(&chat_name).cloned() else {
        return unprocessable("Chat room not found");
    };
    for (key, value) in body {
        match key.as_str() {
            "title" => {
                if let Some(t) = value.as_str() {
                    room.title = t.to_owned();
                }
            }
            "description" => room.description = value.as_str().map(str::to_owned),
            k if ROOM_FIELDS.contains(&k) => {}
            _ if value.is_null() => {
                room.extra.remove(&key);
            }
            _ => {
                room.extra.insert(key, value);
            }
        }
    }
    let record = room_record(&inner, &room, false);
    inner.rooms.insert(chat_name, room);
    ok(json!({ "result": record }))
}

/// Counts a room read in flight until dropped.
struct InFlight(Shared);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().reads_in_flight -= 1;
    }
}

/// `GET /v2/apps/{appId}/chats/{name}`, counting reads in flight.
async fn get_room(
    State(shared): State<Shared>,
    Path((app_id, chat_name)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if app_id != APP_ID {
        return forbidden();
    }
    let delay = {
        let mut inner = shared.lock();
        inner.reads_in_flight += 1;
        inner.max_reads_in_flight = inner.max_reads_in_flight.max(inner.reads_in_flight);
        inner.read_delay
    };
    let _guard = InFlight(shared.clone());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let include_members = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "includeMembers=true"));
    let inner = shared.lock();
    let Some(room) = inner.rooms.get(&chat_name) else {
        return unprocessable("Chat room not found");
    };
    ok(json!({ "result": room_record(&inner, room, include_members) }))
}

/// `POST /v2/apps/{appId}/chats/broadcast`: appends the text to each named room.
async fn broadcast(
    State(shared): State<Shared>,
    Path(app_id): Path<String>,
    body: Bytes,
) -> Response {
    if app_id != APP_ID {
        return forbidden();
    }
    let body = match parse(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let Some(message) = text(&body, "text").map(str::to_owned) else {
        return bad_request("text is required");
    };
    let Some(chats) = strings(&body, "chatNames").filter(|c| !c.is_empty()) else {
        return bad_request("chatNames is required (allRooms is not supported by the fake)");
    };
    let metadata = body.get("metadata").cloned().unwrap_or(Value::Null);
    let mut inner = shared.lock();
    if let Some(missing) = chats.iter().find(|c| !inner.rooms.contains_key(*c)) {
        return unprocessable(&format!("Chat room {missing} not found"));
    }
    for chat in &chats {
        let id = inner.id("msg");
        if let Some(room) = inner.rooms.get_mut(chat) {
            room.messages.push(FakeMessage {
                id,
                text: message.clone(),
                author: None,
                system: metadata["system"] == true,
                metadata: metadata.clone(),
            });
        }
    }
    let job = inner.id("job");
    ok(json!({ "success": true, "jobId": job, "status": "completed" }))
}
