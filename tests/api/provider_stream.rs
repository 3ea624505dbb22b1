//! Wire-level tests of the Stream Chat adapter against the fake Stream server: the exact method,
//! path, query, headers and body of every trait operation, the server and user tokens (decoded
//! independently with base64 + hmac/sha2), error classification, retries, the circuit breaker,
//! batching and idempotency.

use std::time::Duration;

use caregraph::providers::{
    chat::{
        ChannelRef, ChannelSpec, ChatProvider, ChatUser, SystemMessage,
        stream::{READ_BATCH_LIMIT, SYSTEM_USER_ID, StreamChat},
    },
    error::ProviderError,
    http::Resilience,
};
use serde_json::{Map, Value, json};

use crate::fakes::{
    Control, FakeProvider, Fault, Recorded,
    stream::{self, API_KEY, API_SECRET, FakeStream, decode_jwt},
};
use crate::helpers::quick_resilience;

/// A fake and the adapter pointed at it.
async fn setup() -> (FakeStream, StreamChat) {
    setup_with(quick_resilience(3)).await
}

/// A fake and the adapter pointed at it with `resilience`.
async fn setup_with(resilience: Resilience) -> (FakeStream, StreamChat) {
    let fake = stream::start().await;
    let adapter = fake.stream_chat(resilience);
    (fake, adapter)
}

/// A `messaging` channel.
fn messaging(id: &str) -> ChannelRef {
    ChannelRef {
        channel_type: "messaging".into(),
        channel_id: id.into(),
    }
}

/// A user without an image.
fn user(id: &str) -> ChatUser {
    ChatUser {
        id: id.into(),
        name: format!("Name of {id}"),
        image: None,
    }
}

/// Owned ids.
fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A channel spec with a name, an image and two custom keys; the first member creates it.
fn spec(id: &str, members: &[&str]) -> ChannelSpec {
    let mut metadata = Map::new();
    metadata.insert("chatCategory".into(), json!("client"));
    metadata.insert("orgId".into(), json!("org-1"));
    ChannelSpec {
        channel: messaging(id),
        created_by: members[0].to_owned(),
        members: ids(members),
        name: Some("Care team".into()),
        image: Some("https://img.example/c.png".into()),
        metadata,
        frozen: false,
    }
}

/// The only request with this method and path.
fn only(control: &Control, method: &str, path: &str) -> Recorded {
    let calls = control.calls(method, path);
    assert_eq!(
        calls.len(),
        1,
        "exactly one {method} {path}: {:?}",
        control
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>()
    );
    calls.into_iter().next().expect("one call")
}

/// Asserts the auth material of §1.2 on a request.
fn assert_server_auth(request: &Recorded) {
    assert_eq!(request.param("api_key").as_deref(), Some(API_KEY));
    assert_eq!(request.header("stream-auth-type").as_deref(), Some("jwt"));
    let token = request.header("authorization").expect("Authorization");
    assert!(
        !token.starts_with("Bearer"),
        "the raw JWT, no Bearer prefix"
    );
    let (header, payload) = decode_jwt(&token, API_SECRET).expect("a valid HS256 token");
    assert_eq!(header, json!({ "alg": "HS256", "typ": "JWT" }));
    assert_eq!(
        payload,
        json!({ "server": true }),
        "exactly the server claim"
    );
}

/// Stream's error body.
fn stream_error(status: u16, code: i64, message: &str) -> String {
    json!({
        "code": code,
        "message": message,
        "StatusCode": status,
        "duration": "0.01ms",
        "more_info": "https://getstream.io/chat/docs/api_errors_response",
        "details": [],
    })
    .to_string()
}

/// A server token signed independently of the adapter (the test helper's HS256 signer).
fn server_token() -> String {
    crate::helpers::hs256(API_SECRET.as_bytes(), &json!({ "server": true }))
}

/// Posts `body` to the fake as a server would, bypassing the adapter.
async fn raw_post(fake: &FakeStream, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}?api_key={API_KEY}", fake.base_url()))
        .header("Authorization", server_token())
        .header("Stream-Auth-Type", "jwt")
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn the_adapter_is_named_stream_and_reads_thirty_channels_per_call() {
    let (_fake, adapter) = setup().await;
    assert_eq!(adapter.name(), "stream");
    assert_eq!(adapter.read_batch_limit(), 30);
    assert_eq!(READ_BATCH_LIMIT, 30);
}

#[tokio::test]
async fn every_call_carries_the_api_key_and_the_raw_server_token() {
    let (fake, adapter) = setup().await;
    adapter.upsert_users(&[user("u-1")]).await.expect("upsert");
    let request = only(fake.control(), "POST", "/users");
    assert_server_auth(&request);
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(request.query, format!("api_key={API_KEY}"));
}

#[tokio::test]
async fn the_server_token_is_built_once_and_reused() {
    let (fake, adapter) = setup().await;
    adapter.upsert_users(&[user("u-1")]).await.expect("upsert");
    adapter.upsert_users(&[user("u-2")]).await.expect("upsert");
    let tokens: Vec<String> = fake
        .control()
        .requests()
        .iter()
        .map(|r| r.header("authorization").expect("auth"))
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], tokens[1], "no iat/exp, so the same token");
}

#[tokio::test]
async fn upserting_users_sends_one_map_of_users_in_one_post() {
    let (fake, adapter) = setup().await;
    let mut with_image = user("u-2");
    with_image.image = Some("https://img.example/2.png".into());
    adapter
        .upsert_users(&[user("u-1"), with_image])
        .await
        .expect("upsert");
    let request = only(fake.control(), "POST", "/users");
    assert_eq!(
        request.json(),
        json!({
            "users": {
                "u-1": { "id": "u-1", "name": "Name of u-1" },
                "u-2": { "id": "u-2", "name": "Name of u-2", "image": "https://img.example/2.png" },
            }
        })
    );
    assert_eq!(
        fake.user("u-2").expect("stored")["image"],
        "https://img.example/2.png"
    );
}

#[tokio::test]
async fn upserting_more_than_a_hundred_users_sends_maps_of_at_most_a_hundred() {
    let (fake, adapter) = setup().await;
    let users: Vec<ChatUser> = (0..250).map(|i| user(&format!("u-{i}"))).collect();
    adapter.upsert_users(&users).await.expect("upsert");
    let sizes: Vec<usize> = fake
        .control()
        .calls("POST", "/users")
        .iter()
        .map(|r| r.json()["users"].as_object().expect("map").len())
        .collect();
    assert_eq!(sizes, vec![100, 100, 50]);
    assert!(fake.user("u-249").is_some());
}

#[tokio::test]
async fn upserting_no_users_sends_nothing() {
    let (fake, adapter) = setup().await;
    adapter.upsert_users(&[]).await.expect("nothing to do");
    adapter.delete_users(&[]).await.expect("nothing to do");
    assert!(fake.control().requests().is_empty());
}

#[tokio::test]
async fn creating_a_channel_gets_or_creates_it_with_flattened_data() {
    let (fake, adapter) = setup().await;
    fake.seed_users(&["u-a", "u-b"]);
    adapter
        .create_channel(&spec("case-1", &["u-a", "u-b"]))
        .await
        .expect("create");
    let request = only(fake.control(), "POST", "/channels/messaging/case-1/query");
    assert_server_auth(&request);
    assert_eq!(
        request.json(),
        json!({
            "data": {
                "chatCategory": "client",
                "orgId": "org-1",
                "name": "Care team",
                "image": "https://img.example/c.png",
                "created_by_id": "u-a",
                "members": ["u-a", "u-b"],
                "frozen": false,
            },
            "state": false,
            "watch": false,
            "presence": false,
        })
    );
    assert_eq!(fake.control().requests().len(), 1, "no follow-up call");
    let channel = fake.channel(&messaging("case-1")).expect("created");
    assert_eq!(channel["chatCategory"], "client", "custom keys flattened");
    assert_eq!(channel["created_by"]["id"], "u-a");
    assert_eq!(
        fake.members(&messaging("case-1")).expect("members"),
        vec!["u-a", "u-b"]
    );
}

#[tokio::test]
async fn creating_a_frozen_channel_sends_frozen_true() {
    let (fake, adapter) = setup().await;
    fake.seed_users(&["u-a"]);
    let mut frozen = spec("case-frozen", &["u-a"]);
    frozen.frozen = true;
    adapter.create_channel(&frozen).await.expect("create");
    let request = only(
        fake.control(),
        "POST",
        "/channels/messaging/case-frozen/query",
    );
    assert_eq!(request.json()["data"]["frozen"], true);
    assert!(
        fake.user_posts(&messaging("case-frozen"), "u-a", "hi")
            .is_err()
    );
}

#[tokio::test]
async fn reserved_keys_in_custom_data_are_not_sent() {
    let (fake, adapter) = setup().await;
    fake.seed_users(&["u-a"]);
    let mut s = spec("case-reserved", &["u-a"]);
    s.metadata.insert("cid".into(), json!("other:x"));
    s.metadata.insert("frozen".into(), json!(true));
    s.metadata.insert("members".into(), json!(["u-evil"]));
    adapter.create_channel(&s).await.expect("create");
    let data = only(
        fake.control(),
        "POST",
        "/channels/messaging/case-reserved/query",
    )
    .json()["data"]
        .clone();
    assert!(data.get("cid").is_none());
    assert_eq!(data["frozen"], false, "the spec's frozen wins");
    assert_eq!(data["members"], json!(["u-a"]));
}

#[tokio::test]
async fn creating_an_existing_channel_adds_only_the_members_it_lacks() {
    let (fake, adapter) = setup().await;
    fake.seed_users(&["u-a", "u-b", "u-c"]);
    adapter
        .create_channel(&spec("case-2", &["u-a", "u-b"]))
        .await
        .expect("create");
    adapter
        .create_channel(&spec("case-2", &["u-a", "u-b"]))
        .await
        .expect("create again");
    assert_eq!(
        fake.control()
            .calls("POST", "/channels/messaging/case-2/query")
            .len(),
        2
    );
    assert!(
        fake.control()
            .calls("POST", "/channels/messaging/case-2")
            .is_empty(),
        "nothing missing, nothing added"
    );
    adapter
        .create_channel(&spec("case-2", &["u-a", "u-b", "u-c"]))
        .await
        .expect("create with a new member");
    let add = only(fake.control(), "POST", "/channels/messaging/case-2");
    assert_eq!(add.json(), json!({ "add_members": ["u-c"] }));
    assert_eq!(
        fake.members(&messaging("case-2")).expect("members"),
        vec!["u-a", "u-b", "u-c"]
    );
}

#[tokio::test]
async fn updating_metadata_patches_set_and_unset_only() {
    let (fake, adapter) = setup().await;
    fake.seed_users(&["u-a"]);
    adapter
        .create_channel(&spec("case-3", &["u-a"]))
        .await
        .expect("create");
    fake.control().clear();
    let mut set = Map::new();
    set.insert("status".into(), json!("ended"));
    set.insert("config".into(), json!("reserved: dropped"));
    adapter
        .update_metadata(&messaging("case-3"), &set, &ids(&["orgId"]))
        .await
        .expect("update");
    let request = only(fake.control(), "PATCH", "/channels/messaging/case-3");
    assert_server_auth(&request);
    assert_eq!(
        request.json(),
        json!({ "set": { "status": "ended" }, "unset": ["orgId"] })
    );
    let meta = fake.metadata(&messaging("case-3")).expect("metadata");
    assert_eq!(meta.get("status"), Some(&json!("ended")));
    assert_eq!(
        meta.get("chatCategory"),
        Some(&json!("client")),
        "untouched keys survive"
    );
    assert!(!meta.contains_key("orgId"));
    assert!(
        fake.control()
            .calls("POST", "/channels/messaging/case-3")
            .is_empty(),
        "never a full replace"
    );
}

#[tokio::test]
async fn updating_the_metadata_of_a_missing_channel_is_not_found() {
    let (_fake, adapter) = setup().await;
    let mut set = Map::new();
    set.insert("status".into(), json!("ended"));
    let err = adapter
        .update_metadata(&messaging("nope"), &set, &[])
        .await
        .expect_err("404");
    assert_eq!(err, ProviderError::NotFound);
}

#[tokio::test]
async fn freezing_patches_set_frozen_and_stops_members_posting() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-4"), "u-a", &["u-a"]);
    adapter
        .set_frozen(&messaging("case-4"), true)
        .await
        .expect("freeze");
    let request = only(fake.control(), "PATCH", "/channels/messaging/case-4");
    assert_server_auth(&request);
    assert_eq!(request.json(), json!({ "set": { "frozen": true } }));
    assert!(fake.user_posts(&messaging("case-4"), "u-a", "hi").is_err());
    adapter
        .set_frozen(&messaging("case-4"), false)
        .await
        .expect("unfreeze");
    assert_eq!(
        fake.control().calls("PATCH", "/channels/messaging/case-4")[1].json(),
        json!({ "set": { "frozen": false } })
    );
    fake.user_posts(&messaging("case-4"), "u-a", "hi")
        .expect("posts after unfreeze");
}

#[tokio::test]
async fn adding_members_with_a_system_message_creates_the_system_user_once() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-5"), "u-a", &["u-a"]);
    fake.seed_users(&["u-b", "u-c"]);
    let note = SystemMessage {
        id: "sys-add-b".into(),
        text: "B joined".into(),
    };
    adapter
        .add_members(&messaging("case-5"), &ids(&["u-b"]), Some(&note))
        .await
        .expect("add");
    let upsert = only(fake.control(), "POST", "/users");
    assert_eq!(
        upsert.json(),
        json!({ "users": { SYSTEM_USER_ID: { "id": SYSTEM_USER_ID, "name": "caregraph" } } })
    );
    let add = only(fake.control(), "POST", "/channels/messaging/case-5");
    assert_server_auth(&add);
    assert_eq!(
        add.json(),
        json!({
            "add_members": ["u-b"],
            "message": {
                "id": "sys-add-b",
                "text": "B joined",
                "type": "system",
                "user_id": SYSTEM_USER_ID,
            },
        })
    );
    let second = SystemMessage {
        id: "sys-add-c".into(),
        text: "C joined".into(),
    };
    adapter
        .add_members(&messaging("case-5"), &ids(&["u-c"]), Some(&second))
        .await
        .expect("add");
    assert_eq!(
        fake.control().calls("POST", "/users").len(),
        1,
        "the system user is created once per process"
    );
    assert_eq!(
        fake.members(&messaging("case-5")).expect("members"),
        vec!["u-a", "u-b", "u-c"]
    );
    let messages = fake.messages(&messaging("case-5")).expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["type"], "system");
    assert_eq!(messages[0]["user"]["id"], SYSTEM_USER_ID);
}

#[tokio::test]
async fn adding_members_without_a_message_sends_only_add_members() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-6"), "u-a", &["u-a"]);
    fake.seed_users(&["u-b"]);
    adapter
        .add_members(&messaging("case-6"), &ids(&["u-b"]), None)
        .await
        .expect("add");
    adapter
        .add_members(&messaging("case-6"), &ids(&["u-b"]), None)
        .await
        .expect("adding a member who is in");
    assert!(fake.control().calls("POST", "/users").is_empty());
    let calls = fake.control().calls("POST", "/channels/messaging/case-6");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].json(), json!({ "add_members": ["u-b"] }));
    assert_eq!(
        fake.members(&messaging("case-6")).expect("members"),
        vec!["u-a", "u-b"]
    );
}

#[tokio::test]
async fn removing_members_posts_remove_members_with_the_message() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-7"), "u-a", &["u-a", "u-b"]);
    let note = SystemMessage {
        id: "sys-remove-b".into(),
        text: "B left".into(),
    };
    adapter
        .remove_members(&messaging("case-7"), &ids(&["u-b"]), Some(&note))
        .await
        .expect("remove");
    let request = only(fake.control(), "POST", "/channels/messaging/case-7");
    assert_server_auth(&request);
    assert_eq!(
        request.json(),
        json!({
            "remove_members": ["u-b"],
            "message": {
                "id": "sys-remove-b",
                "text": "B left",
                "type": "system",
                "user_id": SYSTEM_USER_ID,
            },
        })
    );
    assert_eq!(
        fake.members(&messaging("case-7")).expect("members"),
        vec!["u-a"]
    );
}

#[tokio::test]
async fn adding_members_again_with_a_used_message_id_still_adds_them() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-8"), "u-a", &["u-a"]);
    fake.seed_users(&["u-b", "u-c"]);
    let note = SystemMessage {
        id: "sys-join".into(),
        text: "joined".into(),
    };
    adapter
        .add_members(&messaging("case-8"), &ids(&["u-b"]), Some(&note))
        .await
        .expect("add");
    // A retry of the same outbox row, with a member the first attempt did not add.
    adapter
        .add_members(&messaging("case-8"), &ids(&["u-b", "u-c"]), Some(&note))
        .await
        .expect("a used message id is not an error");
    let calls = fake.control().calls("POST", "/channels/messaging/case-8");
    assert_eq!(
        calls.len(),
        3,
        "the refused update is sent again without the message"
    );
    assert_eq!(calls[2].json(), json!({ "add_members": ["u-b", "u-c"] }));
    assert_eq!(
        fake.members(&messaging("case-8")).expect("members"),
        vec!["u-a", "u-b", "u-c"]
    );
    assert_eq!(
        fake.messages(&messaging("case-8")).expect("messages").len(),
        1
    );
}

#[tokio::test]
async fn a_system_message_is_posted_as_the_system_user_with_its_id() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-9"), "u-a", &["u-a"]);
    let note = SystemMessage {
        id: "sys-close-9".into(),
        text: "The chat was closed".into(),
    };
    adapter
        .send_system_message(&messaging("case-9"), &note)
        .await
        .expect("send");
    let request = only(fake.control(), "POST", "/channels/messaging/case-9/message");
    assert_server_auth(&request);
    assert_eq!(
        request.json(),
        json!({
            "message": {
                "id": "sys-close-9",
                "text": "The chat was closed",
                "type": "system",
                "user_id": SYSTEM_USER_ID,
            }
        })
    );
    let requests = fake.control().requests();
    assert_eq!(requests[0].path, "/users", "the system user comes first");
    let messages = fake.messages(&messaging("case-9")).expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["id"], "sys-close-9");
}

#[tokio::test]
async fn posting_the_same_system_message_id_twice_stores_one_message() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-10"), "u-a", &["u-a"]);
    let note = SystemMessage {
        id: "sys-once".into(),
        text: "once".into(),
    };
    adapter
        .send_system_message(&messaging("case-10"), &note)
        .await
        .expect("first");
    adapter
        .send_system_message(&messaging("case-10"), &note)
        .await
        .expect("a duplicate id counts as posted");
    assert_eq!(
        fake.control()
            .calls("POST", "/channels/messaging/case-10/message")
            .len(),
        2,
        "the duplicate is refused by Stream, not retried"
    );
    assert_eq!(
        fake.messages(&messaging("case-10"))
            .expect("messages")
            .len(),
        1
    );
}

#[tokio::test]
async fn other_message_errors_are_not_mistaken_for_duplicates() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-11"), "u-a", &["u-a"]);
    adapter
        .send_system_message(
            &messaging("case-11"),
            &SystemMessage {
                id: "sys-x".into(),
                text: "x".into(),
            },
        )
        .await
        .expect("creates the system user");
    fake.control().fail(
        400,
        &stream_error(
            400,
            4,
            "SendMessage failed with error: \"message.text is too long\"",
        ),
        1,
    );
    let err = adapter
        .send_system_message(
            &messaging("case-11"),
            &SystemMessage {
                id: "sys-y".into(),
                text: "y".into(),
            },
        )
        .await
        .expect_err("a real input error");
    assert!(
        matches!(err, ProviderError::Rejected { status: 400, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn deleting_a_channel_hard_deletes_it_and_a_missing_one_counts_as_deleted() {
    let (fake, adapter) = setup().await;
    fake.seed_channel(&messaging("case-12"), "u-a", &["u-a"]);
    adapter
        .delete_channel(&messaging("case-12"))
        .await
        .expect("delete");
    let request = only(fake.control(), "DELETE", "/channels/messaging/case-12");
    assert_server_auth(&request);
    assert_eq!(request.param("hard_delete").as_deref(), Some("true"));
    assert!(request.body.is_empty(), "no body");
    assert!(fake.channel(&messaging("case-12")).is_none());
    adapter
        .delete_channel(&messaging("case-12"))
        .await
        .expect("404 counts as deleted");
    assert_eq!(
        fake.control()
            .calls("DELETE", "/channels/messaging/case-12")
            .len(),
        2
    );
}

#[tokio::test]
async fn deleting_users_hard_deletes_them_in_calls_of_at_most_a_hundred() {
    let (fake, adapter) = setup().await;
    let user_ids: Vec<String> = (0..150).map(|i| format!("u-{i}")).collect();
    let refs: Vec<&str> = user_ids.iter().map(String::as_str).collect();
    fake.seed_users(&refs);
    adapter.delete_users(&user_ids).await.expect("delete");
    let calls = fake.control().calls("POST", "/users/delete");
    assert_eq!(calls.len(), 2);
    assert_server_auth(&calls[0]);
    assert_eq!(
        calls[0].json(),
        json!({
            "user_ids": &user_ids[..100],
            "user": "hard",
            "messages": "hard",
            "conversations": "hard",
        })
    );
    assert_eq!(calls[1].json()["user_ids"], json!(&user_ids[100..]));
    assert!(fake.user("u-0").is_none());
    assert!(fake.user("u-149").is_none());
}

#[tokio::test]
async fn issuing_a_token_signs_the_user_claims_locally_without_a_request() {
    let (fake, adapter) = setup().await;
    let before = chrono::Utc::now().timestamp();
    let creds = adapter
        .issue_token(&user("u-tok"), Duration::from_secs(900))
        .await
        .expect("token");
    let after = chrono::Utc::now().timestamp();
    assert!(fake.control().requests().is_empty(), "minted locally");
    assert_eq!(creds.provider, "stream");
    assert_eq!(creds.user_id, "u-tok");
    assert_eq!(creds.api_key.as_deref(), Some(API_KEY));
    assert_eq!(creds.app_id, None);
    let (header, payload) = decode_jwt(&creds.token, API_SECRET).expect("signed with the secret");
    assert_eq!(header, json!({ "alg": "HS256", "typ": "JWT" }));
    let claims = payload.as_object().expect("claims");
    let mut keys: Vec<&str> = claims.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, vec!["exp", "iat", "user_id"]);
    assert_eq!(payload["user_id"], "u-tok");
    let iat = payload["iat"].as_i64().expect("iat");
    let exp = payload["exp"].as_i64().expect("exp");
    assert!((before..=after).contains(&iat));
    assert_eq!(exp - iat, 900);
    assert_eq!(creds.expires_at.map(|t| t.timestamp()), Some(exp));
}

#[tokio::test]
async fn reading_channels_queries_them_by_cid_with_one_message_for_the_user() {
    let (fake, adapter) = setup().await;
    let (a, b) = (messaging("read-a"), messaging("read-b"));
    fake.seed_channel(&a, "u-a", &["u-a", "u-b", "u-c"]);
    fake.seed_channel(&b, "u-a", &["u-a", "u-b"]);
    fake.user_posts(&a, "u-a", "first").expect("post");
    fake.user_posts(&a, "u-c", "second").expect("post");
    fake.user_posts(&b, "u-b", "mine").expect("post");
    adapter.set_frozen(&b, true).await.expect("freeze");
    fake.control().clear();
    let asked = vec![a.clone(), messaging("read-unknown"), b.clone()];
    let states = adapter.read_channels(&asked, "u-b").await.expect("read");
    let request = only(fake.control(), "POST", "/channels");
    assert_server_auth(&request);
    assert_eq!(
        request.json(),
        json!({
            "filter_conditions": { "cid": { "$in": ["messaging:read-a", "messaging:read-unknown", "messaging:read-b"] } },
            "limit": 3,
            "state": true,
            "watch": false,
            "presence": false,
            "message_limit": 1,
            "user_id": "u-b",
        })
    );
    assert_eq!(states.len(), 2, "unknown channels are left out");
    assert_eq!(states[0].channel, a, "in the order asked for");
    assert_eq!(states[0].member_count, 3);
    assert!(!states[0].frozen);
    assert_eq!(states[0].unread_count, Some(2));
    let last = states[0].last_message.as_ref().expect("last message");
    assert_eq!(last.text, "second");
    assert_eq!(last.author.as_deref(), Some("u-c"));
    assert!(!last.system);
    assert_eq!(states[1].channel, b);
    assert!(states[1].frozen);
    assert_eq!(states[1].member_count, 2);
    assert_eq!(states[1].unread_count, Some(0), "one's own message is read");
    fake.mark_read(&a, "u-b");
    let again = adapter
        .read_channels(std::slice::from_ref(&a), "u-b")
        .await
        .expect("read");
    assert_eq!(again[0].unread_count, Some(0));
}

#[tokio::test]
async fn reading_a_hundred_channels_costs_four_queries_and_ten_cost_one() {
    let (fake, adapter) = setup().await;
    let channels: Vec<ChannelRef> = (0..100).map(|i| messaging(&format!("bulk-{i}"))).collect();
    for c in &channels {
        fake.seed_channel(c, "u-a", &["u-a"]);
    }
    // As a loader would: chunks of read_batch_limit().
    let mut read = 0;
    for chunk in channels.chunks(adapter.read_batch_limit()) {
        read += adapter
            .read_channels(chunk, "u-a")
            .await
            .expect("read")
            .len();
    }
    assert_eq!(read, 100);
    let calls = fake.control().calls("POST", "/channels");
    assert_eq!(calls.len(), 4);
    let limits: Vec<u64> = calls
        .iter()
        .map(|r| r.json()["limit"].as_u64().expect("limit"))
        .collect();
    assert_eq!(limits, vec![30, 30, 30, 10]);

    fake.control().clear();
    let ten = adapter
        .read_channels(&channels[..10], "u-a")
        .await
        .expect("read");
    assert_eq!(ten.len(), 10);
    assert_eq!(fake.control().calls("POST", "/channels").len(), 1);
}

#[tokio::test]
async fn reading_more_channels_than_a_batch_is_split_by_the_adapter() {
    let (fake, adapter) = setup().await;
    let channels: Vec<ChannelRef> = (0..31).map(|i| messaging(&format!("split-{i}"))).collect();
    for c in &channels {
        fake.seed_channel(c, "u-a", &["u-a"]);
    }
    let states = adapter.read_channels(&channels, "u-a").await.expect("read");
    assert_eq!(states.len(), 31);
    assert_eq!(fake.control().calls("POST", "/channels").len(), 2);
    assert!(
        adapter
            .read_channels(&[], "u-a")
            .await
            .expect("none")
            .is_empty()
    );
    assert_eq!(
        fake.control().calls("POST", "/channels").len(),
        2,
        "nothing asked, nothing sent"
    );
}

#[tokio::test]
async fn the_fake_refuses_more_than_thirty_channels_in_one_query() {
    let fake = stream::start().await;
    let cids: Vec<String> = (0..31).map(|i| format!("messaging:c{i}")).collect();
    let (status, body) = raw_post(
        &fake,
        "/channels",
        json!({ "filter_conditions": { "cid": { "$in": cids } }, "limit": 31 }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 4);
    assert_eq!(body["StatusCode"], 400);
    let (status, body) = raw_post(
        &fake,
        "/channels",
        json!({ "filter_conditions": { "cid": { "$in": &cids[..30] } }, "limit": 30 }),
    )
    .await;
    assert_eq!(status, 201, "30 is allowed");
    assert_eq!(body["channels"], json!([]));
    assert!(body["duration"].is_string());
}

#[tokio::test]
async fn recent_messages_query_the_channel_with_a_message_limit_newest_last() {
    let (fake, adapter) = setup().await;
    let c = messaging("recent-1");
    fake.seed_channel(&c, "u-a", &["u-a", "u-b"]);
    fake.user_posts(&c, "u-a", "one").expect("post");
    fake.user_posts(&c, "u-b", "two").expect("post");
    adapter
        .send_system_message(
            &c,
            &SystemMessage {
                id: "sys-recent".into(),
                text: "three".into(),
            },
        )
        .await
        .expect("system");
    fake.control().clear();
    let messages = adapter.recent_messages(&c, 2).await.expect("recent");
    let request = only(fake.control(), "POST", "/channels/messaging/recent-1/query");
    assert_server_auth(&request);
    assert_eq!(
        request.json(),
        json!({
            "state": true,
            "watch": false,
            "presence": false,
            "messages": { "limit": 2 },
        })
    );
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["two", "three"]);
    assert_eq!(messages[0].author.as_deref(), Some("u-b"));
    assert!(!messages[0].system);
    assert_eq!(messages[1].id, "sys-recent");
    assert!(messages[1].system);
    assert_eq!(messages[1].author, None, "system messages have no author");
    assert!(messages[0].sent_at <= messages[1].sent_at);
}

#[tokio::test]
async fn recent_messages_of_a_missing_channel_are_not_found() {
    let (fake, adapter) = setup().await;
    let err = adapter
        .recent_messages(&messaging("never-created"), 5)
        .await
        .expect_err("missing");
    assert_eq!(err, ProviderError::NotFound);
    assert!(
        fake.channel(&messaging("never-created")).is_none(),
        "reading creates nothing"
    );
}

#[tokio::test]
async fn the_fake_refuses_requests_without_valid_server_auth() {
    let fake = stream::start().await;
    let good = server_token();
    let client = reqwest::Client::new();
    let url = |key: &str| format!("{}/users?api_key={key}", fake.base_url());
    let body = json!({ "users": { "u": { "id": "u" } } });
    let cases = [
        (url("wrong-key"), Some(good.clone()), Some("jwt"), 2),
        (url(API_KEY), Some(good.clone()), None, 43),
        (url(API_KEY), None, Some("jwt"), 43),
        (
            url(API_KEY),
            Some(crate::helpers::hs256(
                b"another-secret",
                &json!({ "server": true }),
            )),
            Some("jwt"),
            43,
        ),
        (
            url(API_KEY),
            Some(crate::helpers::hs256(
                API_SECRET.as_bytes(),
                &json!({ "server": true, "iat": 1 }),
            )),
            Some("jwt"),
            43,
        ),
        (
            url(API_KEY),
            Some(format!("Bearer {good}")),
            Some("jwt"),
            43,
        ),
    ];
    for (url, auth, auth_type, code) in cases {
        let mut request = client.post(&url).json(&body);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(t) = auth_type {
            request = request.header("Stream-Auth-Type", t);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), 401, "{url} {code}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["code"], code);
        assert_eq!(error["StatusCode"], 401);
    }
    assert!(fake.user("u").is_none());
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_with_stream_s_401() {
    let fake = stream::start().await;
    let mut config = fake.config();
    config.api_secret = secrecy::SecretString::from("not-the-secret");
    let adapter = StreamChat::new(
        &config,
        Duration::from_secs(60),
        caregraph::providers::http::ProviderHttp::new(
            "stream",
            reqwest::Client::new(),
            quick_resilience(3),
        ),
    );
    let err = adapter.upsert_users(&[user("u-1")]).await.expect_err("401");
    match err {
        ProviderError::Rejected { status, message } => {
            assert_eq!(status, 401);
            assert!(message.contains("signature"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(fake.control().requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn a_400_is_rejected_and_not_retried() {
    let (fake, adapter) = setup().await;
    fake.control().fail(
        400,
        &stream_error(400, 4, "UpdateUsers failed with error: \"bad input\""),
        1,
    );
    let err = adapter.upsert_users(&[user("u-1")]).await.expect_err("400");
    assert_eq!(
        err,
        ProviderError::Rejected {
            status: 400,
            message: "UpdateUsers failed with error: \"bad input\"".into()
        }
    );
    // The fault answered one request; a retry would have reached the fake and been recorded.
    assert!(fake.control().requests().is_empty(), "exactly one request");
    assert!(fake.user("u-1").is_none());
}

#[tokio::test]
async fn a_401_is_rejected_with_stream_s_message() {
    let (fake, adapter) = setup().await;
    fake.control().fail(
        401,
        &stream_error(401, 40, "JWTAuth error: token has expired"),
        1,
    );
    let err = adapter.upsert_users(&[user("u-1")]).await.expect_err("401");
    assert_eq!(
        err,
        ProviderError::Rejected {
            status: 401,
            message: "JWTAuth error: token has expired".into()
        }
    );
    assert!(fake.control().requests().is_empty(), "not retried");
}

#[tokio::test]
async fn a_429_with_stream_s_json_and_a_reset_header_is_rate_limited_with_the_wait() {
    let (fake, adapter) = setup_with(quick_resilience(1)).await;
    let reset = chrono::Utc::now().timestamp() + 7;
    fake.control().inject(Fault::Respond {
        status: 429,
        body: stream_error(
            429,
            9,
            "Too many requests, check response headers for more information.",
        ),
        headers: vec![
            ("X-RateLimit-Limit".into(), "300".into()),
            ("X-RateLimit-Remaining".into(), "0".into()),
            ("X-RateLimit-Reset".into(), reset.to_string()),
        ],
        count: 1,
    });
    let err = adapter.upsert_users(&[user("u-1")]).await.expect_err("429");
    match err {
        ProviderError::RateLimited {
            retry_after: Some(wait),
        } => assert!(
            (Duration::from_secs(5)..=Duration::from_secs(7)).contains(&wait),
            "{wait:?}"
        ),
        other => panic!("expected RateLimited with a wait, got {other:?}"),
    }
}

#[tokio::test]
async fn a_429_with_a_plain_text_body_and_retry_after_is_rate_limited() {
    let (fake, adapter) = setup_with(quick_resilience(1)).await;
    fake.control().inject(Fault::Respond {
        status: 429,
        body: "<html><body>429 Too Many Requests</body></html>".into(),
        headers: vec![("Retry-After".into(), "3".into())],
        count: 1,
    });
    let err = adapter
        .send_system_message(
            &messaging("any"),
            &SystemMessage {
                id: "m".into(),
                text: "t".into(),
            },
        )
        .await
        .expect_err("429");
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_and_then_succeeds() {
    let (fake, adapter) = setup().await;
    fake.control().inject(Fault::Respond {
        status: 429,
        body: "Too Many Requests".into(),
        headers: vec![("Retry-After".into(), "0".into())],
        count: 1,
    });
    adapter.upsert_users(&[user("u-1")]).await.expect("retried");
    assert_eq!(fake.control().calls("POST", "/users").len(), 1);
    assert!(fake.user("u-1").is_some());
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_fails_fast_without_a_request() {
    let (fake, adapter) = setup_with(Resilience {
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_secs(60),
        ..quick_resilience(1)
    })
    .await;
    fake.control().fail(500, "boom", 2);
    for _ in 0..2 {
        let err = adapter.upsert_users(&[user("u-1")]).await.expect_err("500");
        assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    }
    // The faults are used up: a request now would reach the fake and be recorded.
    let err = adapter
        .upsert_users(&[user("u-1")])
        .await
        .expect_err("breaker open");
    assert_eq!(
        err,
        ProviderError::Unavailable("circuit breaker open".into())
    );
    assert!(fake.control().requests().is_empty(), "failed fast");
    assert!(fake.user("u-1").is_none());
}

#[tokio::test]
async fn creating_twice_and_posting_one_system_message_twice_leave_one_of_each() {
    let (fake, adapter) = setup().await;
    adapter
        .upsert_users(&[user("u-a"), user("u-b")])
        .await
        .expect("users");
    let s = spec("idem-1", &["u-a", "u-b"]);
    adapter.create_channel(&s).await.expect("create");
    adapter.create_channel(&s).await.expect("create again");
    let note = SystemMessage {
        id: "sys-idem".into(),
        text: "Welcome".into(),
    };
    adapter
        .send_system_message(&s.channel, &note)
        .await
        .expect("post");
    adapter
        .send_system_message(&s.channel, &note)
        .await
        .expect("post again");
    let states = adapter
        .read_channels(std::slice::from_ref(&s.channel), "u-a")
        .await
        .expect("read");
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].member_count, 2);
    let messages = fake.messages(&s.channel).expect("messages");
    assert_eq!(messages.len(), 1, "one message for one id");
    assert_eq!(messages[0]["id"], "sys-idem");
    let last = states[0].last_message.as_ref().expect("last");
    assert!(last.system);
    assert_eq!(last.author, None);
}

#[tokio::test]
async fn the_fake_answers_a_deletion_task_it_can_serve() {
    let fake = stream::start().await;
    fake.seed_users(&["u-t"]);
    let (status, body) = raw_post(
        &fake,
        "/users/delete",
        json!({ "user_ids": ["u-t"], "user": "hard", "messages": "hard", "conversations": "hard" }),
    )
    .await;
    assert_eq!(status, 201);
    assert!(body["duration"].is_string());
    let task_id = body["task_id"].as_str().expect("task id");
    let task: Value = reqwest::Client::new()
        .get(format!(
            "{}/tasks/{task_id}?api_key={API_KEY}",
            fake.base_url()
        ))
        .header("Authorization", server_token())
        .header("Stream-Auth-Type", "jwt")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(task["status"], "completed");
    assert!(fake.user("u-t").is_none());
    let (status, body) = raw_post(
        &fake,
        "/users/delete",
        json!({ "user_ids": ["u-t"], "user": "hard", "messages": "soft" }),
    )
    .await;
    assert_eq!(
        status, 400,
        "user=hard needs hard messages and conversations"
    );
    assert_eq!(body["code"], 4);
}

#[tokio::test]
async fn a_failed_system_user_upsert_is_tried_again_on_the_next_message() {
    let (fake, adapter) = setup_with(quick_resilience(1)).await;
    fake.seed_channel(&messaging("sys-retry"), "u-a", &["u-a"]);
    fake.control()
        .fail(500, &stream_error(500, -1, "internal error"), 1);
    let note = SystemMessage {
        id: "sys-retry-1".into(),
        text: "hello".into(),
    };
    let err = adapter
        .send_system_message(&messaging("sys-retry"), &note)
        .await
        .expect_err("the system user could not be created");
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert!(
        fake.control().requests().is_empty(),
        "no message without its user"
    );
    adapter
        .send_system_message(&messaging("sys-retry"), &note)
        .await
        .expect("second try");
    assert_eq!(fake.control().calls("POST", "/users").len(), 1);
    assert!(fake.user(SYSTEM_USER_ID).is_some());
    assert_eq!(
        fake.messages(&messaging("sys-retry"))
            .expect("messages")
            .len(),
        1
    );
}

#[tokio::test]
async fn the_fake_refuses_channels_and_messages_of_unknown_users() {
    let fake = stream::start().await;
    fake.seed_users(&["u-a"]);
    let (status, body) = raw_post(
        &fake,
        "/channels/messaging/strangers/query",
        json!({ "data": { "created_by_id": "u-a", "members": ["u-a", "u-ghost"] } }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 4);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("u-ghost")
    );
    let (status, _) = raw_post(
        &fake,
        "/channels/messaging/strangers/query",
        json!({ "data": { "members": ["u-a"] } }),
    )
    .await;
    assert_eq!(status, 400, "server-side creation needs created_by_id");
    fake.seed_channel(&messaging("known"), "u-a", &["u-a"]);
    let (status, body) = raw_post(
        &fake,
        "/channels/messaging/known/message",
        json!({ "message": { "text": "hi", "user_id": "u-ghost" } }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 4);
    let (status, body) = raw_post(
        &fake,
        "/channels/messaging/known/message",
        json!({ "message": { "text": "hi", "user_id": "u-a" } }),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(body["message"]["user"]["id"], "u-a");
    assert!(body["duration"].is_string());
}

/// An instant from RFC 3339 text.
fn instant(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("an RFC 3339 instant")
        .to_utc()
}

/// The partial update `revokeUserToken` sends for `user` and the instant `before`.
fn revocation(user: &str, before: &str) -> Value {
    json!({ "users": [{ "id": user, "set": { "revoke_tokens_issued_before": before } }] })
}

/// Method and path of every request, in order.
fn calls(control: &Control) -> Vec<(String, String)> {
    control
        .requests()
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect()
}

#[tokio::test]
async fn revoking_tokens_patches_the_user_with_revoke_tokens_issued_before_in_milliseconds() {
    let (fake, adapter) = setup().await;
    fake.seed_users(&["u-rev"]);
    assert!(adapter.capabilities().revokes_tokens);
    adapter
        .revoke_tokens("u-rev", instant("2026-12-06T18:00:00.123456+00:00"))
        .await
        .expect("revoke");
    assert_eq!(fake.control().requests().len(), 1, "one call");
    let request = only(fake.control(), "PATCH", "/users");
    assert_server_auth(&request);
    assert_eq!(request.query, format!("api_key={API_KEY}"));
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        request.json(),
        revocation("u-rev", "2026-12-06T18:00:00.123Z")
    );
    let stored = fake.user("u-rev").expect("the user");
    assert_eq!(
        stored["revoke_tokens_issued_before"],
        "2026-12-06T18:00:00.123Z"
    );
    assert_eq!(stored["name"], "u-rev", "a partial update keeps the rest");
}

#[tokio::test]
async fn a_revoked_users_earlier_tokens_are_refused_and_later_ones_accepted() {
    let (fake, adapter) = setup().await;
    fake.seed_users(&["u-rev"]);
    let earlier = adapter
        .issue_token(&user("u-rev"), Duration::from_secs(900))
        .await
        .expect("token");
    fake.accepts_user_token("u-rev", &earlier.token)
        .expect("valid before the revocation");
    tokio::time::sleep(Duration::from_millis(5)).await;
    adapter
        .revoke_tokens("u-rev", chrono::Utc::now())
        .await
        .expect("revoke");
    let refused = fake
        .accepts_user_token("u-rev", &earlier.token)
        .expect_err("revoked");
    assert!(refused.contains("revoked"), "{refused}");
    // `iat` has whole seconds: a token minted in a later second than the revocation works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = adapter
        .issue_token(&user("u-rev"), Duration::from_secs(900))
        .await
        .expect("token");
    fake.accepts_user_token("u-rev", &later.token)
        .expect("a token issued after the revocation works");
}

#[tokio::test]
async fn revoking_the_tokens_of_a_user_stream_does_not_know_creates_them_bare_and_revokes_again() {
    let (fake, adapter) = setup().await;
    adapter
        .revoke_tokens("u-new", instant("2026-12-06T18:00:00Z"))
        .await
        .expect("revoke");
    assert_eq!(
        calls(fake.control()),
        [
            ("PATCH".to_owned(), "/users".to_owned()),
            ("POST".to_owned(), "/users".to_owned()),
            ("PATCH".to_owned(), "/users".to_owned()),
        ]
    );
    let requests = fake.control().requests();
    let expected = revocation("u-new", "2026-12-06T18:00:00.000Z");
    assert_eq!(requests[0].json(), expected);
    assert_eq!(
        requests[1].json(),
        json!({ "users": { "u-new": { "id": "u-new" } } }),
        "only the id: nothing else of the user is known here"
    );
    assert_eq!(requests[2].json(), expected);
    for request in &requests {
        assert_server_auth(request);
    }
    assert_eq!(
        fake.user("u-new").expect("created")["revoke_tokens_issued_before"],
        "2026-12-06T18:00:00.000Z"
    );
}

#[tokio::test]
async fn a_404_to_a_revocation_also_creates_the_user_and_revokes_again() {
    let (fake, adapter) = setup().await;
    fake.control().fail(
        404,
        &stream_error(
            404,
            16,
            "UpdateUsersPartial failed with error: \"user u-404 does not exist\"",
        ),
        1,
    );
    adapter
        .revoke_tokens("u-404", instant("2026-12-06T18:00:00Z"))
        .await
        .expect("revoke");
    // The faulted PATCH is not recorded: the bare user, then the revocation again.
    assert_eq!(
        calls(fake.control()),
        [
            ("POST".to_owned(), "/users".to_owned()),
            ("PATCH".to_owned(), "/users".to_owned()),
        ]
    );
    assert!(fake.user("u-404").expect("created")["revoke_tokens_issued_before"].is_string());
}

#[tokio::test]
async fn another_refusal_of_a_revocation_is_rejected_and_creates_no_user() {
    let (fake, adapter) = setup().await;
    fake.control().fail(
        400,
        &stream_error(
            400,
            4,
            "UpdateUsersPartial failed with error: \"something else\"",
        ),
        1,
    );
    let error = adapter
        .revoke_tokens("u-1", instant("2026-12-06T18:00:00Z"))
        .await
        .expect_err("refused");
    assert!(
        matches!(error, ProviderError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert!(fake.control().requests().is_empty(), "no bare user");
}

#[tokio::test]
async fn a_token_revocation_written_to_the_outbox_goes_out_as_stream_s_partial_user_update() {
    let fake = stream::start().await;
    fake.seed_users(&["staff-1"]);
    let app = crate::helpers::TestApp::spawn_with(|v| v.extend(fake.vars())).await;
    let at = instant("2026-12-06T18:00:00.250Z");
    assert!(
        crate::fakes::deliver_through_outbox(
            &app,
            &[caregraph::outbox::revoke_tokens_entry("staff-1", None, at)]
        )
        .await,
        "delivered"
    );
    let request = only(fake.control(), "PATCH", "/users");
    assert_server_auth(&request);
    assert_eq!(
        request.json(),
        revocation("staff-1", "2026-12-06T18:00:00.250Z")
    );
    assert_eq!(
        fake.user("staff-1").expect("user")["revoke_tokens_issued_before"],
        "2026-12-06T18:00:00.250Z"
    );
}
