//! Wire-level tests of the ethora adapter against the fake Ethora: the exact method, path,
//! headers and body of every trait operation, the server and client JWTs (decoded here with
//! base64 and HMAC-SHA256 over keys derived here as `docs/providers.md` §3 describes, not by the
//! adapter), error classification, retries, the room JID and bounded concurrent reads.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use caregraph::providers::{
    chat::{ChannelRef, ChannelSpec, ChatUser, SystemMessage},
    error::ProviderError,
};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::fakes::{
    FakeProvider, Recorded,
    ethora::{self, APP_ID, APP_SECRET, CONFERENCE_HOST, FakeEthora, XMPP_SERVICE},
};
use crate::helpers::quick_resilience;

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// hex HMAC-SHA256(key, message).
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The scoped key of `docs/providers.md` §3.2: the hex HMAC of the purpose, keyed with the app secret.
fn scoped(purpose: &str) -> String {
    hmac_hex(APP_SECRET.as_bytes(), purpose.as_bytes())
}

/// A base64url JSON part of a JWT.
fn b64_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// Whether `token`'s HS256 signature verifies with `key`.
fn signed_with(token: &str, key: &[u8]) -> bool {
    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
    mac.update(signed.as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).expect("signature"))
        .is_ok()
}

/// Decodes an HS256 JWT signed with the key of `purpose` (and with nothing else) and returns
/// its claims.
fn claims(token: &str, purpose: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token");
    let header = b64_json(parts[0]);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["typ"], "JWT");
    assert!(
        signed_with(token, scoped(purpose).as_bytes()),
        "signed with the key scoped to {purpose}"
    );
    assert!(
        !signed_with(token, APP_SECRET.as_bytes()),
        "never signed with the raw app secret"
    );
    b64_json(parts[1])
}

/// `iat` is a number of seconds close to now.
fn assert_recent(iat: &Value) {
    let iat = iat.as_i64().expect("iat is a number of seconds");
    let now = chrono::Utc::now().timestamp();
    assert!((now - 60..=now + 1).contains(&iat), "iat {iat} is now");
}

/// The request carries the same server JWT in `x-custom-token` and `Authorization: Bearer`,
/// with exactly the claims of `docs/providers.md` §3.2.
fn assert_server_auth(request: &Recorded) {
    let token = request.header("x-custom-token").expect("x-custom-token");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {token}")),
        "the same token as a bearer token"
    );
    let c = claims(&token, "ethora:server:v1");
    assert_eq!(
        c,
        json!({ "data": { "appId": APP_ID, "type": "server" }, "iat": c["iat"] }),
        "exactly data.appId, data.type and iat (no exp)"
    );
    assert_recent(&c["iat"]);
}

/// The request is `method path` with this JSON body, and is authenticated.
fn assert_call(request: &Recorded, method: &str, path: &str, body: &Value) {
    assert_eq!(
        request.method.as_str(),
        method,
        "method of {}",
        request.path
    );
    assert_eq!(request.path, path);
    assert_eq!(request.query, "");
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(&request.json(), body, "body of {method} {path}");
    assert_server_auth(request);
}

/// A channel of some type (Ethora ignores it).
fn channel(id: &str) -> ChannelRef {
    ChannelRef {
        channel_type: "messaging".into(),
        channel_id: id.into(),
    }
}

/// A room short name.
fn chat_name(id: &str) -> String {
    format!("{APP_ID}_{id}")
}

/// A user's XMPP username.
fn xmpp(id: &str) -> String {
    format!("{APP_ID}_{id}")
}

/// The path of one room.
fn room_path(id: &str) -> String {
    format!("/v2/apps/{APP_ID}/chats/{APP_ID}_{id}")
}

/// The path of the broadcast endpoint.
fn broadcast_path() -> String {
    format!("/v2/apps/{APP_ID}/chats/broadcast")
}

/// A user without an avatar.
fn person(id: &str, name: &str) -> ChatUser {
    ChatUser {
        id: id.into(),
        name: name.into(),
        image: None,
    }
}

/// The object of a JSON value.
fn map(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

/// A channel spec titled `Case <id>` with these members.
fn spec(id: &str, members: &[&str]) -> ChannelSpec {
    ChannelSpec {
        channel: channel(id),
        created_by: members.first().copied().unwrap_or("nobody").into(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        name: Some(format!("Case {id}")),
        image: None,
        metadata: Map::new(),
        frozen: false,
    }
}

/// A system message.
fn message(id: &str, text: &str) -> SystemMessage {
    SystemMessage {
        id: id.into(),
        text: text.into(),
    }
}

/// The password the adapter's module doc promises: 32 hex of HMAC(key, user id), the key being
/// the hex HMAC of `caregraph:ethora-user-password:v1` keyed with the app secret.
fn expected_password(user_id: &str) -> String {
    let key = scoped("caregraph:ethora-user-password:v1");
    hmac_hex(key.as_bytes(), user_id.as_bytes())[..32].to_owned()
}

/// A fake with users `a`, `b`, `c` and an empty room `case-42` (members `a`), requests cleared.
async fn with_room() -> FakeEthora {
    let fake = ethora::start().await;
    fake.seed_user("b", "Bea", "Second");
    fake.seed_user("c", "Cai", "Third");
    fake.seed_room("case-42", &["a"]);
    fake
}

// ---------------------------------------------------------------------------------------------
// Users.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upserting_users_creates_them_in_batches_of_a_hundred_then_updates_their_profiles() {
    let fake = ethora::start().await;
    let adapter = fake.adapter(quick_resilience(1));
    let users: Vec<ChatUser> = (0..150)
        .map(|i| ChatUser {
            id: format!("u-{i:03}"),
            name: format!("Ada {i} Lovelace"),
            image: (i == 0).then(|| "https://img.example/ada.png".to_owned()),
        })
        .collect();

    adapter.upsert_users(&[]).await.expect("nothing to do");
    assert!(fake.control().requests().is_empty(), "no users, no call");

    adapter.upsert_users(&users).await.expect("upserted");

    let requests = fake.control().requests();
    let shape: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    let create = ("POST".to_owned(), "/v2/users/batch".to_owned());
    let update = ("PATCH".to_owned(), "/v2/chats/users".to_owned());
    assert_eq!(shape, vec![create.clone(), update.clone(), create, update]);

    let new_user = |u: &ChatUser| {
        let (first, last) = u.name.split_once(' ').expect("two words");
        let mut v = json!({
            "uuid": u.id,
            "email": format!("{}@example.com", u.id),
            "firstName": first,
            "lastName": last,
            "password": expected_password(&u.id),
        });
        if let Some(image) = &u.image {
            v["profileImage"] = json!(image);
        }
        v
    };
    let update_user = |u: &ChatUser| {
        let (first, last) = u.name.split_once(' ').expect("two words");
        let mut v = json!({ "xmppUsername": xmpp(&u.id), "firstName": first, "lastName": last });
        if let Some(image) = &u.image {
            v["profileImage"] = json!(image);
        }
        v
    };
    for (n, range) in [(0, 0..100), (2, 100..150)] {
        assert_call(
            &requests[n],
            "POST",
            "/v2/users/batch",
            &json!({
                "bypassEmailConfirmation": true,
                "usersList": users[range.clone()].iter().map(new_user).collect::<Vec<_>>(),
            }),
        );
        assert_call(
            &requests[n + 1],
            "PATCH",
            "/v2/chats/users",
            &json!({ "users": users[range].iter().map(update_user).collect::<Vec<_>>() }),
        );
    }

    assert_eq!(fake.user_count(), 150);
    let ada = fake.user("u-000").expect("created");
    assert_eq!(ada.xmpp_username, xmpp("u-000"));
    assert_eq!(
        (ada.first_name.as_str(), ada.last_name.as_str()),
        ("Ada", "0 Lovelace")
    );
    assert_eq!(
        ada.profile_image.as_deref(),
        Some("https://img.example/ada.png")
    );
    assert_ne!(
        ada.password, "password_u-000",
        "not the SDK's guessable default"
    );
}

#[tokio::test]
async fn upserting_existing_users_retries_a_refused_batch_one_user_at_a_time_and_renames_them() {
    let fake = ethora::start().await;
    fake.seed_user("u-1", "Old", "Name");
    let adapter = fake.adapter(quick_resilience(1));

    adapter
        .upsert_users(&[person("u-1", "New Person"), person("u-2", "Cher")])
        .await
        .expect("an existing user is no error");

    let creates = fake.control().calls("POST", "/v2/users/batch");
    assert_eq!(creates.len(), 3, "the batch, then one call per user");
    assert_eq!(
        creates[0].json()["usersList"].as_array().map(Vec::len),
        Some(2)
    );
    let mut singles: Vec<String> = creates[1..]
        .iter()
        .map(|r| {
            let list = r.json()["usersList"].clone();
            assert_eq!(list.as_array().map(Vec::len), Some(1));
            list[0]["uuid"].as_str().expect("uuid").to_owned()
        })
        .collect();
    singles.sort();
    assert_eq!(singles, ["u-1", "u-2"]);
    let updates = fake.control().calls("PATCH", "/v2/chats/users");
    assert_eq!(updates.len(), 1);
    assert_call(
        &updates[0],
        "PATCH",
        "/v2/chats/users",
        &json!({ "users": [
            { "xmppUsername": xmpp("u-1"), "firstName": "New", "lastName": "Person" },
            { "xmppUsername": xmpp("u-2"), "firstName": "Cher", "lastName": "User" },
        ]}),
    );

    let renamed = fake.user("u-1").expect("still there");
    assert_eq!(
        (renamed.first_name.as_str(), renamed.last_name.as_str()),
        ("New", "Person")
    );
    assert_eq!(
        fake.user("u-2").map(|u| u.last_name),
        Some("User".to_owned()),
        "a one-word name gets Ethora's two-character last name"
    );

    fake.control().clear();
    adapter
        .upsert_users(&[person("u-1", "New Person")])
        .await
        .expect("upserting again is idempotent");
}

#[tokio::test]
async fn deleting_users_sends_their_plain_ids_in_batches_and_counts_unknown_users_as_deleted() {
    let fake = ethora::start().await;
    let ids: Vec<String> = (0..120).map(|i| format!("u-{i:03}")).collect();
    for id in &ids {
        fake.seed_user(id, "Some", "One");
    }
    let adapter = fake.adapter(quick_resilience(1));

    adapter.delete_users(&ids).await.expect("deleted");
    let calls = fake.control().requests();
    assert_eq!(calls.len(), 2, "100 then 20");
    assert_call(
        &calls[0],
        "DELETE",
        "/v1/users/batch",
        &json!({ "usersIdList": ids[..100] }),
    );
    assert_call(
        &calls[1],
        "DELETE",
        "/v1/users/batch",
        &json!({ "usersIdList": ids[100..] }),
    );
    assert_eq!(fake.user_count(), 0);

    fake.seed_user("known", "Kno", "Wn");
    fake.control().clear();
    adapter
        .delete_users(&["ghost".to_owned(), "known".to_owned()])
        .await
        .expect("an unknown user counts as deleted");
    assert_eq!(
        fake.user_count(),
        0,
        "the known user is deleted all the same"
    );
    assert_eq!(
        fake.control().calls("DELETE", "/v1/users/batch").len(),
        3,
        "the refused batch, then one call per user"
    );

    adapter
        .delete_users(&["ghost".to_owned()])
        .await
        .expect("deleting what is gone succeeds");
    fake.control().fail(404, r#"{"error":"Not Found"}"#, 1);
    adapter
        .delete_users(&["ghost".to_owned()])
        .await
        .expect("a 404 counts as deleted too");
}

// ---------------------------------------------------------------------------------------------
// Channels.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_channel_posts_the_room_with_the_channel_id_as_uuid_then_grants_prefixed_members()
 {
    let fake = ethora::start().await;
    fake.seed_user("a", "Ann", "First");
    fake.seed_user("b", "Bea", "Second");
    let adapter = fake.adapter(quick_resilience(1));
    let spec = ChannelSpec {
        channel: ChannelRef {
            channel_type: "team".into(),
            channel_id: "case-42".into(),
        },
        created_by: "a".into(),
        members: vec!["a".into(), "b".into()],
        name: Some("Case 42".into()),
        image: Some("https://img.example/case.png".into()),
        metadata: map(json!({
            "chatCategory": "case",
            "orgId": "org-1",
            "isGroup": true,
            "title": "a reserved key is never written",
        })),
        frozen: false,
    };

    adapter.create_channel(&spec).await.expect("created");

    let calls = fake.control().requests();
    assert_eq!(calls.len(), 2);
    assert_call(
        &calls[0],
        "POST",
        "/v2/chats",
        &json!({
            "title": "Case 42",
            "uuid": "case-42",
            "type": "group",
            "picture": "https://img.example/case.png",
            "chatCategory": "case",
            "orgId": "org-1",
            "isGroup": true,
        }),
    );
    assert_call(
        &calls[1],
        "POST",
        "/v2/chats/users-access",
        &json!({ "chatName": chat_name("case-42"), "members": [xmpp("a"), xmpp("b")] }),
    );

    let room = fake.room("case-42").expect("the room exists");
    assert_eq!(room.title, "Case 42");
    assert_eq!(room.kind, "group");
    assert_eq!(
        fake.metadata(&channel("case-42")),
        Some(map(
            json!({ "chatCategory": "case", "orgId": "org-1", "isGroup": true })
        ))
    );
    assert_eq!(
        fake.members(&channel("case-42")),
        Some(vec!["a".to_owned(), "b".to_owned()])
    );
    fake.user_posts(&channel("case-42"), "b", "hello")
        .expect("a member may post");
    assert!(fake.user_posts(&channel("case-42"), "c", "hi").is_err());
}

#[tokio::test]
async fn creating_an_existing_channel_leaves_the_room_as_it_is_and_adds_the_new_members() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));
    let mut again = spec("case-42", &["a", "b"]);
    again.name = Some("Another title".into());

    adapter
        .create_channel(&again)
        .await
        .expect("create-or-get succeeds");

    let calls = fake.control().requests();
    assert_eq!(calls.len(), 2, "the refused create, then the grant");
    assert_eq!(calls[0].path, "/v2/chats");
    assert_call(
        &calls[1],
        "POST",
        "/v2/chats/users-access",
        &json!({ "chatName": chat_name("case-42"), "members": [xmpp("a"), xmpp("b")] }),
    );
    assert_eq!(
        fake.room("case-42").map(|r| r.title),
        Some("Room case-42".to_owned())
    );
    assert_eq!(
        fake.members(&channel("case-42")),
        Some(vec!["a".to_owned(), "b".to_owned()])
    );
}

#[tokio::test]
async fn a_channel_created_frozen_and_without_a_name_carries_the_frozen_key_and_a_default_title() {
    let fake = ethora::start().await;
    fake.seed_user("a", "Ann", "First");
    let adapter = fake.adapter(quick_resilience(1));
    let mut frozen = spec("appointment-7", &["a"]);
    frozen.name = None;
    frozen.frozen = true;

    adapter.create_channel(&frozen).await.expect("created");

    assert_call(
        &fake.control().requests()[0],
        "POST",
        "/v2/chats",
        &json!({
            "title": "Chat Room appointment-7",
            "uuid": "appointment-7",
            "type": "group",
            "frozen": true,
        }),
    );
    assert!(fake.room("appointment-7").expect("room").frozen());
    assert!(
        fake.user_posts(&channel("appointment-7"), "a", "early")
            .is_err()
    );
}

#[tokio::test]
async fn creating_and_deleting_a_channel_twice_is_idempotent() {
    let fake = ethora::start().await;
    fake.seed_user("a", "Ann", "First");
    let adapter = fake.adapter(quick_resilience(1));
    let s = spec("group-1", &["a"]);

    adapter.create_channel(&s).await.expect("first create");
    adapter.create_channel(&s).await.expect("second create");
    assert_eq!(
        fake.members(&channel("group-1")),
        Some(vec!["a".to_owned()])
    );
    adapter
        .delete_channel(&s.channel)
        .await
        .expect("first delete");
    adapter
        .delete_channel(&s.channel)
        .await
        .expect("second delete");
    assert!(fake.room("group-1").is_none());
    adapter
        .create_channel(&s)
        .await
        .expect("created again after deletion");
    assert!(fake.room("group-1").is_some());
}

#[tokio::test]
async fn updating_metadata_patches_set_keys_and_sends_unset_keys_as_null() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));
    adapter
        .update_metadata(
            &channel("case-42"),
            &map(json!({ "petName": "Rex", "orgId": "org-1" })),
            &[],
        )
        .await
        .expect("set");
    fake.control().clear();

    adapter
        .update_metadata(
            &channel("case-42"),
            &map(json!({ "status": "ended", "orgId": "org-2" })),
            &["petName".to_owned()],
        )
        .await
        .expect("updated");

    let calls = fake.control().requests();
    assert_eq!(calls.len(), 1);
    assert_call(
        &calls[0],
        "PATCH",
        &room_path("case-42"),
        &json!({ "status": "ended", "orgId": "org-2", "petName": null }),
    );
    assert_eq!(
        fake.metadata(&channel("case-42")),
        Some(map(json!({ "orgId": "org-2", "status": "ended" })))
    );

    fake.control().clear();
    adapter
        .update_metadata(&channel("case-42"), &Map::new(), &[])
        .await
        .expect("nothing to change");
    assert!(fake.control().requests().is_empty(), "no change, no call");

    let err = adapter
        .update_metadata(&channel("nowhere"), &map(json!({ "a": 1 })), &[])
        .await
        .expect_err("no such room");
    assert_eq!(err, ProviderError::NotFound, "Ethora's 422 'not found'");
}

#[tokio::test]
async fn adding_members_grants_access_then_broadcasts_the_system_message() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));

    adapter
        .add_members(
            &channel("case-42"),
            &["b".to_owned(), "c".to_owned()],
            Some(&message("m-1", "Bea and Cai joined")),
        )
        .await
        .expect("added");

    let calls = fake.control().requests();
    assert_eq!(calls.len(), 2);
    assert_call(
        &calls[0],
        "POST",
        "/v2/chats/users-access",
        &json!({ "chatName": chat_name("case-42"), "members": [xmpp("b"), xmpp("c")] }),
    );
    assert_call(
        &calls[1],
        "POST",
        &broadcast_path(),
        &json!({
            "text": "Bea and Cai joined",
            "chatNames": [chat_name("case-42")],
            "metadata": { "system": true, "caregraphMessageId": "m-1" },
        }),
    );
    assert_eq!(
        fake.members(&channel("case-42")),
        Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
    let room = fake.room("case-42").expect("room");
    assert_eq!(room.messages.len(), 1);
    assert!(room.messages[0].system && room.messages[0].author.is_none());

    adapter
        .add_members(&channel("case-42"), &["b".to_owned()], None)
        .await
        .expect("adding a member who is in succeeds");
    let err = adapter
        .add_members(&channel("nowhere"), &["b".to_owned()], None)
        .await
        .expect_err("no such room");
    assert_eq!(err, ProviderError::NotFound);
}

#[tokio::test]
async fn removing_members_revokes_access_with_a_json_body_on_delete() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));
    adapter
        .add_members(&channel("case-42"), &["b".to_owned()], None)
        .await
        .expect("added");
    fake.control().clear();

    adapter
        .remove_members(
            &channel("case-42"),
            &["b".to_owned()],
            Some(&message("m-2", "Bea left")),
        )
        .await
        .expect("removed");

    let calls = fake.control().requests();
    assert_eq!(calls.len(), 2);
    assert_call(
        &calls[0],
        "DELETE",
        "/v2/chats/users-access",
        &json!({ "chatName": chat_name("case-42"), "members": [xmpp("b")] }),
    );
    assert_eq!(calls[1].path, broadcast_path());
    assert_eq!(
        fake.members(&channel("case-42")),
        Some(vec!["a".to_owned()])
    );
    assert!(
        fake.user_posts(&channel("case-42"), "b", "still here?")
            .is_err()
    );

    fake.control().clear();
    adapter
        .remove_members(
            &channel("nowhere"),
            &["b".to_owned()],
            Some(&message("m-3", "Bea left")),
        )
        .await
        .expect("removing from a room that is gone succeeds");
    assert_eq!(
        fake.control().requests().len(),
        1,
        "and tells nobody: no broadcast"
    );
}

#[tokio::test]
async fn freezing_writes_the_frozen_key_and_members_can_no_longer_post() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));

    adapter
        .set_frozen(&channel("case-42"), true)
        .await
        .expect("frozen");
    assert_call(
        &fake.control().requests()[0],
        "PATCH",
        &room_path("case-42"),
        &json!({ "frozen": true }),
    );
    assert!(fake.user_posts(&channel("case-42"), "a", "hello").is_err());
    let state = adapter
        .read_channels(&[channel("case-42")], "a")
        .await
        .expect("read");
    assert!(state[0].frozen, "read back from the room's frozen key");

    fake.control().clear();
    adapter
        .set_frozen(&channel("case-42"), false)
        .await
        .expect("unfrozen");
    assert_call(
        &fake.control().requests()[0],
        "PATCH",
        &room_path("case-42"),
        &json!({ "frozen": false }),
    );
    fake.user_posts(&channel("case-42"), "a", "hello again")
        .expect("members post again");

    let err = adapter
        .set_frozen(&channel("nowhere"), true)
        .await
        .expect_err("no such room");
    assert_eq!(err, ProviderError::NotFound);
}

#[tokio::test]
async fn a_system_message_is_broadcast_once_per_id() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));
    let closing = message("close-1", "This chat was closed");

    adapter
        .send_system_message(&channel("case-42"), &closing)
        .await
        .expect("sent");
    adapter
        .send_system_message(&channel("case-42"), &closing)
        .await
        .expect("a repeat succeeds");
    assert_eq!(fake.control().requests().len(), 1, "and posts nothing");
    assert_call(
        &fake.control().requests()[0],
        "POST",
        &broadcast_path(),
        &json!({
            "text": "This chat was closed",
            "chatNames": [chat_name("case-42")],
            "metadata": { "system": true, "caregraphMessageId": "close-1" },
        }),
    );

    adapter
        .send_system_message(&channel("case-42"), &message("close-2", "Reopened"))
        .await
        .expect("another id is posted");
    let texts: Vec<String> = fake
        .room("case-42")
        .expect("room")
        .messages
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["This chat was closed", "Reopened"]);

    let err = adapter
        .send_system_message(&channel("nowhere"), &closing)
        .await
        .expect_err("no such room");
    assert_eq!(err, ProviderError::NotFound);
}

#[tokio::test]
async fn a_failed_system_message_is_posted_when_repeated() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));
    fake.control().fail(500, "boom", 1);
    let m = message("m-9", "Hello");
    adapter
        .send_system_message(&channel("case-42"), &m)
        .await
        .expect_err("the outage fails the call");
    adapter
        .send_system_message(&channel("case-42"), &m)
        .await
        .expect("the repeat posts it");
    assert_eq!(fake.room("case-42").expect("room").messages.len(), 1);
}

#[tokio::test]
async fn deleting_a_channel_sends_its_short_name_and_a_missing_room_counts_as_deleted() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));

    adapter
        .delete_channel(&channel("case-42"))
        .await
        .expect("deleted");
    let calls = fake.control().requests();
    assert_eq!(calls.len(), 1);
    assert_call(
        &calls[0],
        "DELETE",
        "/v1/chats",
        &json!({ "name": chat_name("case-42") }),
    );
    assert!(fake.room("case-42").is_none());
    assert_eq!(fake.members(&channel("case-42")), None);

    adapter
        .delete_channel(&channel("case-42"))
        .await
        .expect("Ethora's 422 'not found' text is success");
    fake.control().fail(422, r#""Chat room not found""#, 1);
    adapter
        .delete_channel(&channel("case-42"))
        .await
        .expect("so is a JSON string saying so");
    fake.control().fail(404, "", 1);
    adapter
        .delete_channel(&channel("case-42"))
        .await
        .expect("and a 404");
    fake.control().fail(422, "Chat room is locked", 1);
    let err = adapter
        .delete_channel(&channel("case-42"))
        .await
        .expect_err("another 422 is a failure");
    assert!(matches!(err, ProviderError::Rejected { status: 422, .. }));
}

// ---------------------------------------------------------------------------------------------
// Tokens, names, reads.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn issuing_a_token_signs_the_client_claims_with_the_client_key_without_any_request() {
    let fake = ethora::start().await;
    let adapter = fake.adapter(quick_resilience(1));
    let before = chrono::Utc::now();

    let creds = adapter
        .issue_token(&person("user-7", "Gus Seven"), Duration::from_secs(900))
        .await
        .expect("issued");

    assert!(
        fake.control().requests().is_empty(),
        "minted locally, no HTTP"
    );
    assert_eq!(creds.provider, "ethora");
    assert_eq!(creds.user_id, "user-7");
    assert_eq!(creds.app_id.as_deref(), Some(APP_ID));
    assert_eq!(creds.api_key, None);
    assert_eq!(
        creds.connection,
        json!({
            "xmppService": XMPP_SERVICE,
            "conferenceHost": CONFERENCE_HOST,
            "roomJidSuffix": format!("@{CONFERENCE_HOST}"),
        })
    );
    let c = claims(&creds.token, "ethora:client:v1");
    assert_eq!(
        c,
        json!({
            "data": { "type": "client", "userId": "user-7", "appId": APP_ID },
            "iat": c["iat"],
        }),
        "exactly the SDK's client claims"
    );
    assert_recent(&c["iat"]);
    assert!(
        !signed_with(&creds.token, scoped("ethora:server:v1").as_bytes()),
        "not a server token"
    );
    let expires = creds.expires_at.expect("an expiry is reported");
    let lifetime = (expires - before).num_seconds();
    assert!((899..=901).contains(&lifetime), "about the ttl: {lifetime}");
}

#[tokio::test]
async fn the_room_jid_is_the_app_scoped_room_name_at_the_conference_host() {
    let fake = ethora::start().await;
    let adapter = fake.adapter(quick_resilience(1));
    let jid = adapter.room_jid(&channel("appointment-0190"));
    assert_eq!(
        jid,
        Some(format!("{APP_ID}_appointment-0190@{CONFERENCE_HOST}"))
    );
    let other_type = ChannelRef {
        channel_type: "livestream".into(),
        channel_id: "appointment-0190".into(),
    };
    assert_eq!(
        adapter.room_jid(&other_type),
        jid,
        "Ethora has no channel type"
    );
    assert_eq!(adapter.name(), "ethora");
}

#[tokio::test]
async fn reading_channels_reports_members_and_frozen_and_leaves_out_unknown_rooms() {
    let fake = with_room().await;
    fake.seed_room("group-2", &["a", "b", "c"]);
    let adapter = fake.adapter(quick_resilience(1));
    adapter
        .set_frozen(&channel("group-2"), true)
        .await
        .expect("frozen");
    fake.control().clear();

    let states = adapter
        .read_channels(
            &[channel("case-42"), channel("missing"), channel("group-2")],
            "a",
        )
        .await
        .expect("read");

    let summary: Vec<(String, u32, bool, Option<u32>, bool)> = states
        .iter()
        .map(|s| {
            (
                s.channel.channel_id.clone(),
                s.member_count,
                s.frozen,
                s.unread_count,
                s.last_message.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("case-42".to_owned(), 1, false, None, false),
            ("group-2".to_owned(), 3, true, None, false),
        ]
    );
    let calls = fake.control().requests();
    assert_eq!(calls.len(), 3, "one read per room");
    let mut paths: Vec<String> = calls.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    let mut expected = vec![
        room_path("case-42"),
        room_path("group-2"),
        room_path("missing"),
    ];
    expected.sort();
    assert_eq!(paths, expected);
    for call in &calls {
        assert_eq!(call.method.as_str(), "GET");
        assert_eq!(call.query, "includeMembers=true");
        assert!(call.body.is_empty(), "a GET has no body");
        assert_server_auth(call);
    }

    assert!(
        adapter
            .read_channels(&[], "a")
            .await
            .expect("nothing")
            .is_empty()
    );
}

#[tokio::test]
async fn reading_a_hundred_rooms_makes_bounded_concurrent_requests() {
    let fake = ethora::start().await;
    let channels: Vec<ChannelRef> = (0..100).map(|i| channel(&format!("room-{i:03}"))).collect();
    for c in &channels {
        fake.seed_room(&c.channel_id, &["a"]);
    }
    fake.set_read_delay(Duration::from_millis(40));
    let adapter = fake.adapter(quick_resilience(1));
    assert_eq!(adapter.read_batch_limit(), 50);

    let started = Instant::now();
    let states = adapter.read_channels(&channels, "a").await.expect("read");
    let took = started.elapsed();

    assert_eq!(states.len(), 100);
    assert_eq!(
        states.iter().map(|s| s.channel.clone()).collect::<Vec<_>>(),
        channels,
        "in the order asked"
    );
    assert_eq!(fake.control().requests().len(), 100);
    let peak = fake.max_concurrent_reads();
    assert!(peak > 1, "reads run concurrently (peak {peak})");
    assert!(
        peak <= caregraph::providers::chat::ethora::READ_CONCURRENCY,
        "and within the bound (peak {peak})"
    );
    assert!(
        took < Duration::from_millis(100 * 40 / 2),
        "faster than one by one: {took:?}"
    );
}

#[tokio::test]
async fn recent_messages_are_empty_because_ethora_keeps_history_in_xmpp() {
    let fake = with_room().await;
    fake.user_posts(&channel("case-42"), "a", "hello")
        .expect("posted");
    let adapter = fake.adapter(quick_resilience(1));
    let messages = adapter
        .recent_messages(&channel("case-42"), 20)
        .await
        .expect("no failure");
    assert!(messages.is_empty());
    assert!(fake.control().requests().is_empty(), "no REST call exists");
}

// ---------------------------------------------------------------------------------------------
// Errors, retries, authentication.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn failures_are_classified_at_the_adapter_edge() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(1));
    /// Status, body, headers, and the error the adapter must return.
    type Case<'a> = (u16, &'a str, Vec<(&'a str, &'a str)>, ProviderError);
    let cases: Vec<Case<'_>> = vec![
        (
            400,
            r#"{"success":false,"error":"Validation Failed","code":"VALIDATION_ERROR"}"#,
            vec![],
            ProviderError::Rejected {
                status: 400,
                message: "Validation Failed".into(),
            },
        ),
        (
            401,
            r#"{"success":false,"error":"Unauthorized"}"#,
            vec![],
            ProviderError::Rejected {
                status: 401,
                message: "Unauthorized".into(),
            },
        ),
        (422, "Chat room not found", vec![], ProviderError::NotFound),
        (
            422,
            "title is too long",
            vec![],
            ProviderError::Rejected {
                status: 422,
                message: "title is too long".into(),
            },
        ),
        (
            500,
            r#"{"success":false,"error":"Internal"}"#,
            vec![],
            ProviderError::Unavailable("500 Internal Server Error: Internal".into()),
        ),
    ];
    for (status, body, headers, expected) in cases {
        fake.control()
            .inject(crate::provider_errors::respond(status, body, &headers));
        let err = adapter
            .update_metadata(&channel("case-42"), &map(json!({ "k": status })), &[])
            .await
            .expect_err("the fault fails the call");
        assert_eq!(err, expected, "HTTP {status} {body}");
    }
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let fake = with_room().await;
    let adapter = fake.adapter(quick_resilience(3));
    fake.control()
        .fail(400, r#"{"error":"Validation Failed"}"#, 2);
    for attempt in ["first", "second"] {
        let err = adapter
            .set_frozen(&channel("case-42"), true)
            .await
            .expect_err("a 400 fails at once");
        assert!(
            matches!(err, ProviderError::Rejected { status: 400, .. }),
            "{attempt} call: {err:?}"
        );
    }
    adapter
        .set_frozen(&channel("case-42"), true)
        .await
        .expect("each call used exactly one of the two faults");
}

#[tokio::test]
async fn the_fake_accepts_only_the_scoped_server_token_in_both_headers() {
    let fake = with_room().await;
    let sign = |key: &str| {
        let claims = json!({ "data": { "appId": APP_ID, "type": "server" }, "iat": chrono::Utc::now().timestamp() });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .expect("sign")
    };
    let client = reqwest::Client::new();
    let url = format!("{}{}", fake.base_url, room_path("case-42"));
    let send = |custom: Option<String>, bearer: Option<String>| {
        let mut request = client.get(&url);
        if let Some(t) = custom {
            request = request.header("x-custom-token", t);
        }
        if let Some(t) = bearer {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        request.send()
    };
    let good = sign(&scoped("ethora:server:v1"));
    let raw = sign(APP_SECRET);
    let client_key = sign(&scoped("ethora:client:v1"));

    let status = |r: reqwest::Result<reqwest::Response>| r.expect("sent").status().as_u16();
    assert_eq!(
        status(send(Some(good.clone()), Some(good.clone())).await),
        200
    );
    assert_eq!(status(send(Some(raw.clone()), Some(raw)).await), 401);
    assert_eq!(
        status(send(Some(client_key.clone()), Some(client_key)).await),
        401
    );
    assert_eq!(status(send(Some(good.clone()), None).await), 401);
    assert_eq!(status(send(None, Some(good)).await), 401);
}

#[tokio::test]
async fn the_fake_provider_points_an_app_at_the_fake() {
    let fake = ethora::start().await;
    let vars: std::collections::HashMap<String, String> = fake.vars().into_iter().collect();
    assert_eq!(vars["CAREGRAPH_CHAT_PROVIDER"], "ethora");
    assert_eq!(vars["ETHORA_CHAT_API_URL"], fake.base_url);
    assert_eq!(vars["ETHORA_CHAT_APP_ID"], APP_ID);
    assert_eq!(vars["ETHORA_CHAT_APP_SECRET"], APP_SECRET);
    assert_eq!(vars["ETHORA_CONFERENCE_HOST"], CONFERENCE_HOST);
    assert_eq!(fake.metadata(&channel("nothing")), None);
    assert_eq!(fake.members(&channel("nothing")), None);
    assert!(fake.user_posts(&channel("nothing"), "a", "hi").is_err());
}

// ---------------------------------------------------------------------------------------------
// Token revocation.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn revoking_tokens_sends_nothing_to_ethora_which_cannot_revoke_them() {
    let fake = ethora::start().await;
    let adapter = fake.adapter(quick_resilience(3));
    assert!(!adapter.capabilities().revokes_tokens);
    adapter
        .revoke_tokens("a", chrono::Utc::now())
        .await
        .expect("nothing to do");
    assert!(fake.control().requests().is_empty());
}

#[tokio::test]
async fn a_token_revocation_written_to_the_outbox_is_delivered_without_a_call_to_ethora() {
    let fake = ethora::start().await;
    let app = crate::helpers::TestApp::spawn_with(|v| v.extend(fake.vars())).await;
    fake.control().clear();
    assert!(
        crate::fakes::deliver_through_outbox(
            &app,
            &[caregraph::outbox::revoke_tokens_entry(
                "staff-1",
                None,
                chrono::Utc::now()
            )]
        )
        .await,
        "delivered"
    );
    assert!(fake.control().requests().is_empty());
}
