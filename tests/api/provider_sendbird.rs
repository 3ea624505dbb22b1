//! Wire-level tests of the Sendbird adapter against the fake Sendbird: the exact method, path,
//! query, headers and body of every trait operation, how failures are classified, retries, the
//! one-call batch read, and idempotency.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use caregraph::providers::{
    chat::{ChannelRef, ChannelSpec, ChatProvider, ChatUser, ProviderError, SystemMessage},
    http::Resilience,
};
use serde_json::{Map, Value, json};

use crate::fakes::{
    FakeProvider, Fault, Recorded,
    sendbird::{self, API_TOKEN, APP_ID, FakeChannel, FakeSendbird, FakeUser},
};
use crate::helpers::quick_resilience;

/// A fake and the adapter pointed at it.
async fn setup(resilience: Resilience) -> (FakeSendbird, Arc<dyn ChatProvider>) {
    let fake = sendbird::start().await;
    let adapter = fake.adapter(resilience);
    (fake, adapter)
}

/// A chat user with a name and an avatar.
fn user(id: &str) -> ChatUser {
    ChatUser {
        id: id.to_owned(),
        name: format!("Name of {id}"),
        image: Some(format!("https://img.example/{id}.png")),
    }
}

/// A `care_team` channel reference.
fn care(id: &str) -> ChannelRef {
    ChannelRef {
        channel_type: "care_team".to_owned(),
        channel_id: id.to_owned(),
    }
}

/// Channel metadata from pairs.
fn metadata(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A channel to create with these members.
fn spec(id: &str, members: &[&str]) -> ChannelSpec {
    ChannelSpec {
        channel: care(id),
        created_by: "u-admin".to_owned(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        name: Some("Care team of Ada".to_owned()),
        image: Some("https://img.example/ada.png".to_owned()),
        metadata: metadata(&[("chatCategory", json!("care")), ("orgId", json!("org-1"))]),
        frozen: false,
    }
}

/// Puts users straight into the fake's state.
fn seed_users(fake: &FakeSendbird, ids: &[&str]) {
    let mut state = fake.state();
    for id in ids {
        state.users.insert(
            (*id).to_owned(),
            FakeUser {
                user_id: (*id).to_owned(),
                nickname: (*id).to_owned(),
                profile_url: String::new(),
            },
        );
    }
}

/// Puts a channel straight into the fake's state.
fn seed_channel(fake: &FakeSendbird, url: &str, members: &[&str]) {
    seed_users(fake, members);
    fake.state().channels.insert(
        url.to_owned(),
        FakeChannel {
            url: url.to_owned(),
            custom_type: "care_team".to_owned(),
            name: url.to_owned(),
            cover_url: String::new(),
            data: json!({ "orgId": "org-1" }).to_string(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            frozen: false,
            messages: Vec::new(),
            read: HashMap::new(),
            created_at: 1_700_000_000,
        },
    );
}

/// Asserts method and path, the `Api-Token` header, and a JSON content type on bodies.
fn assert_wire(r: &Recorded, method: &str, path: &str) {
    assert_eq!(r.method.as_str(), method, "method of {}", r.path);
    assert_eq!(r.path, path);
    assert_eq!(
        r.header("api-token").as_deref(),
        Some(API_TOKEN),
        "Api-Token on {path}"
    );
    assert_eq!(r.header("accept").as_deref(), Some("application/json"));
    if !r.body.is_empty() {
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "content type on {path}"
        );
    }
}

/// The query as ordered pairs.
fn query_pairs(r: &Recorded) -> Vec<(String, String)> {
    serde_urlencoded::from_str(&r.query).expect("query")
}

/// Expected query pairs.
fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Sendbird's error body.
fn sendbird_error(code: u32, message: &str) -> String {
    json!({ "error": true, "code": code, "message": message }).to_string()
}

#[tokio::test]
async fn the_adapter_is_named_sendbird_and_reads_100_channels_per_call() {
    let (_fake, adapter) = setup(quick_resilience(3)).await;
    assert_eq!(adapter.name(), "sendbird");
    assert_eq!(adapter.read_batch_limit(), 100);
    assert_eq!(adapter.room_jid(&care("c1")), None);
}

#[tokio::test]
async fn upserting_new_users_posts_each_one_to_v3_users_with_nickname_and_profile_url() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let no_image = ChatUser {
        image: None,
        ..user("u-2")
    };
    adapter
        .upsert_users(&[user("u-1"), no_image])
        .await
        .expect("upsert");

    let mut posts = fake.control().calls("POST", "/v3/users");
    assert_eq!(posts.len(), 2);
    assert_eq!(fake.control().requests().len(), 2, "no other call");
    posts.sort_by_key(|r| r.json()["user_id"].as_str().map(str::to_owned));
    for r in &posts {
        assert_wire(r, "POST", "/v3/users");
        assert_eq!(r.query, "");
    }
    assert_eq!(
        posts[0].json(),
        json!({ "user_id": "u-1", "nickname": "Name of u-1", "profile_url": "https://img.example/u-1.png" })
    );
    assert_eq!(
        posts[1].json(),
        json!({ "user_id": "u-2", "nickname": "Name of u-2", "profile_url": "" })
    );
    assert_eq!(fake.state().users["u-1"].nickname, "Name of u-1");
}

#[tokio::test]
async fn upserting_an_existing_user_puts_the_update_after_sendbird_says_it_exists() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1"]);
    adapter.upsert_users(&[user("u-1")]).await.expect("upsert");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 2, "one create, one update");
    assert_wire(&requests[0], "POST", "/v3/users");
    assert_wire(&requests[1], "PUT", "/v3/users/u-1");
    assert_eq!(
        requests[1].json(),
        json!({ "nickname": "Name of u-1", "profile_url": "https://img.example/u-1.png" })
    );
    let state = fake.state();
    assert_eq!(state.users["u-1"].nickname, "Name of u-1");
    assert_eq!(
        state.users["u-1"].profile_url,
        "https://img.example/u-1.png"
    );
}

#[tokio::test]
async fn upserting_the_same_user_twice_in_one_batch_writes_them_once() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let renamed = ChatUser {
        name: "Renamed".to_owned(),
        ..user("u-1")
    };
    adapter
        .upsert_users(&[user("u-1"), renamed])
        .await
        .expect("upsert");
    assert_eq!(fake.control().requests().len(), 1);
    assert_eq!(fake.state().users["u-1"].nickname, "Renamed");
}

#[tokio::test]
async fn upserting_many_users_runs_a_few_calls_at_a_time() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let users: Vec<ChatUser> = (0..8).map(|i| user(&format!("u-{i}"))).collect();
    fake.control().inject(Fault::Delay {
        by: Duration::from_millis(300),
        count: 8,
    });
    let started = Instant::now();
    adapter.upsert_users(&users).await.expect("upsert");
    let took = started.elapsed();
    // Four at a time: two waves of 300 ms. All at once would take 300 ms, one by one 2.4 s.
    assert!(took >= Duration::from_millis(550), "too parallel: {took:?}");
    assert!(
        took < Duration::from_millis(1_500),
        "too sequential: {took:?}"
    );
    assert_eq!(fake.state().users.len(), 8);
}

#[tokio::test]
async fn creating_a_channel_posts_its_url_custom_type_name_cover_members_and_data_string() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1", "u-2"]);
    adapter
        .create_channel(&spec("case-42", &["u-1", "u-2"]))
        .await
        .expect("create");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1, "not frozen: no freeze call");
    let r = &requests[0];
    assert_wire(r, "POST", "/v3/group_channels");
    let body = r.json();
    assert_eq!(
        body,
        json!({
            "channel_url": "case-42",
            "custom_type": "care_team",
            "name": "Care team of Ada",
            "cover_url": "https://img.example/ada.png",
            "user_ids": ["u-1", "u-2"],
            "invitation_status": {"u-1": "joined", "u-2": "joined"},
            "data": body["data"],
            "is_distinct": false,
        })
    );
    let data: Value =
        serde_json::from_str(body["data"].as_str().expect("data is a string")).expect("json data");
    assert_eq!(data, json!({ "chatCategory": "care", "orgId": "org-1" }));

    let channel = fake.channel("case-42").expect("channel");
    assert_eq!(channel.custom_type, "care_team");
    assert_eq!(channel.members, ["u-1", "u-2"]);
    assert!(!channel.frozen);
    assert_eq!(
        fake.metadata(&care("case-42")).expect("metadata"),
        metadata(&[("chatCategory", json!("care")), ("orgId", json!("org-1"))])
    );
}

#[tokio::test]
async fn creating_a_frozen_channel_freezes_it_right_after_creating_it() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1"]);
    let frozen = ChannelSpec {
        frozen: true,
        ..spec("case-7", &["u-1"])
    };
    adapter.create_channel(&frozen).await.expect("create");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 2);
    assert_wire(&requests[0], "POST", "/v3/group_channels");
    assert_wire(&requests[1], "PUT", "/v3/group_channels/case-7/freeze");
    assert_eq!(requests[1].json(), json!({ "freeze": true }));
    assert!(fake.channel("case-7").expect("channel").frozen);
    assert!(fake.user_posts(&care("case-7"), "u-1", "hello").is_err());
}

#[tokio::test]
async fn creating_an_existing_channel_succeeds_leaves_it_as_it_is_and_invites_the_members() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1", "u-2", "u-3"]);
    adapter
        .create_channel(&spec("case-42", &["u-1", "u-2"]))
        .await
        .expect("first create");
    fake.control().clear();

    let mut again = spec("case-42", &["u-2", "u-3"]);
    again.name = Some("Another name".to_owned());
    again.frozen = true;
    adapter.create_channel(&again).await.expect("second create");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 2, "create, then invite; no freeze");
    assert_wire(&requests[0], "POST", "/v3/group_channels");
    assert_wire(&requests[1], "POST", "/v3/group_channels/case-42/invite");
    assert_eq!(
        requests[1].json(),
        json!({ "user_ids": ["u-2", "u-3"], "invitation_status": {"u-2": "joined", "u-3": "joined"} })
    );

    assert_eq!(fake.state().channels.len(), 1);
    let channel = fake.channel("case-42").expect("channel");
    assert_eq!(channel.name, "Care team of Ada", "left as it is");
    assert!(!channel.frozen, "left as it is");
    assert_eq!(channel.members, ["u-1", "u-2", "u-3"]);
}

#[tokio::test]
async fn updating_metadata_reads_the_channel_and_puts_the_merged_data_back() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    fake.state()
        .channels
        .get_mut("case-1")
        .expect("channel")
        .data = json!({ "orgId": "org-1", "keep": 1, "drop": true }).to_string();

    adapter
        .update_metadata(
            &care("case-1"),
            &metadata(&[("status", json!("closed")), ("orgId", json!("org-2"))]),
            &["drop".to_owned()],
        )
        .await
        .expect("update");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 2);
    assert_wire(&requests[0], "GET", "/v3/group_channels/case-1");
    assert_eq!(requests[0].query, "");
    assert!(requests[0].body.is_empty());
    assert_wire(&requests[1], "PUT", "/v3/group_channels/case-1");
    let body = requests[1].json();
    assert_eq!(
        body.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["data"],
        "only data is written"
    );
    let data: Value = serde_json::from_str(body["data"].as_str().expect("string")).expect("json");
    assert_eq!(
        data,
        json!({ "orgId": "org-2", "keep": 1, "status": "closed" })
    );
    assert_eq!(
        fake.metadata(&care("case-1")).expect("metadata"),
        metadata(&[
            ("orgId", json!("org-2")),
            ("keep", json!(1)),
            ("status", json!("closed"))
        ])
    );
}

#[tokio::test]
async fn updating_metadata_to_what_it_already_is_writes_nothing() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    adapter
        .update_metadata(
            &care("case-1"),
            &metadata(&[("orgId", json!("org-1"))]),
            &["absent".to_owned()],
        )
        .await
        .expect("update");
    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    assert_wire(&requests[0], "GET", "/v3/group_channels/case-1");
}

#[tokio::test]
async fn updating_metadata_of_a_missing_channel_is_not_found() {
    let (_fake, adapter) = setup(quick_resilience(3)).await;
    let err = adapter
        .update_metadata(&care("ghost"), &metadata(&[("a", json!(1))]), &[])
        .await
        .expect_err("missing channel");
    assert_eq!(err, ProviderError::NotFound);
}

#[tokio::test]
async fn adding_members_invites_them_then_posts_the_system_message() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    seed_users(&fake, &["u-2", "u-3"]);
    let note = SystemMessage {
        id: "members-added:case-1:1".to_owned(),
        text: "Two colleagues joined".to_owned(),
    };
    adapter
        .add_members(
            &care("case-1"),
            &["u-2".to_owned(), "u-3".to_owned()],
            Some(&note),
        )
        .await
        .expect("add");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 3, "invite, look for the message, post it");
    assert_wire(&requests[0], "POST", "/v3/group_channels/case-1/invite");
    assert_eq!(
        requests[0].json(),
        json!({ "user_ids": ["u-2", "u-3"], "invitation_status": {"u-2": "joined", "u-3": "joined"} })
    );
    assert_wire(&requests[1], "GET", "/v3/group_channels/case-1/messages");
    assert_wire(&requests[2], "POST", "/v3/group_channels/case-1/messages");
    assert_eq!(
        fake.members(&care("case-1")).expect("members"),
        ["u-1", "u-2", "u-3"]
    );
    fake.user_posts(&care("case-1"), "u-3", "hi")
        .expect("a member may post");

    // Adding someone who is in already succeeds and changes nothing.
    adapter
        .add_members(&care("case-1"), &["u-2".to_owned()], None)
        .await
        .expect("add again");
    assert_eq!(fake.members(&care("case-1")).expect("members").len(), 3);
}

#[tokio::test]
async fn removing_members_puts_leave_with_their_ids() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1", "u-2", "u-3"]);
    adapter
        .remove_members(&care("case-1"), &["u-2".to_owned()], None)
        .await
        .expect("remove");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    assert_wire(&requests[0], "PUT", "/v3/group_channels/case-1/leave");
    assert_eq!(requests[0].json(), json!({ "user_ids": ["u-2"] }));
    assert_eq!(
        fake.members(&care("case-1")).expect("members"),
        ["u-1", "u-3"]
    );
    assert!(
        fake.user_posts(&care("case-1"), "u-2", "still here?")
            .is_err()
    );

    let note = SystemMessage {
        id: "left:case-1:u-3".to_owned(),
        text: "A colleague left".to_owned(),
    };
    adapter
        .remove_members(&care("case-1"), &["u-3".to_owned()], Some(&note))
        .await
        .expect("remove with message");
    let channel = fake.channel("case-1").expect("channel");
    assert_eq!(channel.members, ["u-1"]);
    assert_eq!(channel.messages.len(), 1);
    assert_eq!(channel.messages[0].kind, "ADMM");
}

#[tokio::test]
async fn freezing_and_unfreezing_put_the_freeze_flag() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    adapter
        .set_frozen(&care("case-1"), true)
        .await
        .expect("freeze");
    assert!(fake.user_posts(&care("case-1"), "u-1", "hello").is_err());
    adapter
        .set_frozen(&care("case-1"), false)
        .await
        .expect("unfreeze");
    fake.user_posts(&care("case-1"), "u-1", "hello")
        .expect("posting works again");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 2);
    for (r, flag) in requests.iter().zip([true, false]) {
        assert_wire(r, "PUT", "/v3/group_channels/case-1/freeze");
        assert_eq!(r.json(), json!({ "freeze": flag }));
    }
}

#[tokio::test]
async fn a_system_message_is_an_admin_message_carrying_its_id_after_a_look_at_recent_ones() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    let note = SystemMessage {
        id: "case-closed:case-1".to_owned(),
        text: "The case was closed".to_owned(),
    };
    let before = chrono::Utc::now().timestamp_millis();
    adapter
        .send_system_message(&care("case-1"), &note)
        .await
        .expect("send");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 2);
    let look = &requests[0];
    assert_wire(look, "GET", "/v3/group_channels/case-1/messages");
    let ts: i64 = look
        .param("message_ts")
        .expect("message_ts")
        .parse()
        .expect("ms");
    assert!(ts >= before, "reference is now or later");
    let mut q = query_pairs(look);
    q.retain(|(k, _)| k != "message_ts");
    assert_eq!(
        q,
        pairs(&[
            ("prev_limit", "100"),
            ("next_limit", "0"),
            ("include", "true"),
            ("reverse", "false"),
            ("message_type", "ADMM"),
            ("custom_types", "caregraph_system"),
        ])
    );
    let post = &requests[1];
    assert_wire(post, "POST", "/v3/group_channels/case-1/messages");
    assert_eq!(
        post.json(),
        json!({
            "message_type": "ADMM",
            "message": "The case was closed",
            "custom_type": "caregraph_system",
            "data": "{\"caregraph_message_id\":\"case-closed:case-1\"}",
            "dedup_id": "case-closed:case-1",
        })
    );
    assert!(
        post.json().get("user_id").is_none(),
        "admin messages have no sender"
    );

    let channel = fake.channel("case-1").expect("channel");
    assert_eq!(channel.messages.len(), 1);
    assert_eq!(channel.messages[0].kind, "ADMM");
    assert_eq!(channel.messages[0].user_id, None);
}

#[tokio::test]
async fn posting_the_same_system_message_id_twice_leaves_one_message() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    let note = SystemMessage {
        id: "welcome:case-1".to_owned(),
        text: "Welcome".to_owned(),
    };
    adapter
        .send_system_message(&care("case-1"), &note)
        .await
        .expect("first");
    fake.user_posts(&care("case-1"), "u-1", "thanks")
        .expect("post");
    fake.control().clear();
    adapter
        .send_system_message(&care("case-1"), &note)
        .await
        .expect("second");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1, "found among the recent ones: no post");
    assert_wire(&requests[0], "GET", "/v3/group_channels/case-1/messages");
    let channel = fake.channel("case-1").expect("channel");
    assert_eq!(
        channel.messages.iter().filter(|m| m.kind == "ADMM").count(),
        1
    );
}

#[tokio::test]
async fn a_repeat_the_recent_window_misses_is_caught_by_sendbirds_dedup_id() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    let note = SystemMessage {
        id: "welcome:case-1".to_owned(),
        text: "Welcome".to_owned(),
    };
    adapter
        .send_system_message(&care("case-1"), &note)
        .await
        .expect("first");
    // 100 later system messages push the first one out of the window that is looked at.
    for i in 0..100 {
        let other = SystemMessage {
            id: format!("other:{i}"),
            text: format!("Note {i}"),
        };
        adapter
            .send_system_message(&care("case-1"), &other)
            .await
            .expect("other");
    }
    fake.control().clear();
    adapter
        .send_system_message(&care("case-1"), &note)
        .await
        .expect("a duplicate dedup_id counts as posted");

    let requests = fake.control().requests();
    assert_eq!(
        requests.len(),
        2,
        "looked, posted, Sendbird refused the duplicate"
    );
    assert_wire(&requests[1], "POST", "/v3/group_channels/case-1/messages");
    let channel = fake.channel("case-1").expect("channel");
    assert_eq!(channel.messages.len(), 101);
    assert_eq!(
        channel
            .messages
            .iter()
            .filter(|m| m.dedup_id.as_deref() == Some("welcome:case-1"))
            .count(),
        1
    );
}

#[tokio::test]
async fn deleting_a_channel_sends_delete_and_a_missing_channel_counts_as_deleted() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    adapter
        .delete_channel(&care("case-1"))
        .await
        .expect("delete");
    assert!(fake.channel("case-1").is_none());
    adapter
        .delete_channel(&care("case-1"))
        .await
        .expect("deleting again (Sendbird's 400201) succeeds");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_wire(r, "DELETE", "/v3/group_channels/case-1");
        assert!(r.body.is_empty());
    }

    fake.control().fail(404, "", 1);
    adapter
        .delete_channel(&care("case-1"))
        .await
        .expect("a plain 404 counts as deleted too");
}

#[tokio::test]
async fn deleting_users_sends_one_delete_each_and_unknown_users_count_as_deleted() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1", "u-2"]);
    adapter
        .delete_users(&["u-1".to_owned(), "u-2".to_owned(), "ghost".to_owned()])
        .await
        .expect("delete");

    let mut requests = fake.control().requests();
    requests.sort_by(|a, b| a.path.cmp(&b.path));
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/v3/users/ghost", "/v3/users/u-1", "/v3/users/u-2"]);
    for r in &requests {
        assert_wire(r, "DELETE", &r.path);
        assert!(r.body.is_empty());
    }
    assert!(fake.state().users.is_empty());
}

#[tokio::test]
async fn user_ids_are_percent_encoded_in_paths() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    adapter
        .delete_users(&["a b/c".to_owned()])
        .await
        .expect("delete");
    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v3/users/a%20b%2Fc");
}

#[tokio::test]
async fn issuing_a_token_posts_expires_at_in_milliseconds_and_returns_sendbird_credentials() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1"]);
    let before = chrono::Utc::now().timestamp_millis();
    let creds = adapter
        .issue_token(&user("u-1"), Duration::from_secs(600))
        .await
        .expect("token");
    let after = chrono::Utc::now().timestamp_millis();

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_wire(r, "POST", "/v3/users/u-1/token");
    let body = r.json();
    assert_eq!(body.as_object().expect("object").len(), 1);
    let expires = body["expires_at"].as_i64().expect("ms");
    assert!(
        (before + 600_000..=after + 600_000).contains(&expires),
        "now + ttl in ms"
    );

    let issued = fake.state().tokens[0].clone();
    assert_eq!(creds.provider, "sendbird");
    assert_eq!(creds.user_id, "u-1");
    assert_eq!(creds.token, issued.token);
    assert_eq!(creds.app_id.as_deref(), Some(APP_ID));
    assert_eq!(creds.api_key, None);
    assert_eq!(
        creds.expires_at.expect("expiry").timestamp_millis(),
        issued.expires_at
    );
}

#[tokio::test]
async fn issuing_a_token_for_a_user_sendbird_does_not_know_creates_them_first() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let creds = adapter
        .issue_token(&user("u-9"), Duration::from_secs(60))
        .await
        .expect("token");
    assert!(!creds.token.is_empty());
    let requests = fake.control().requests();
    let calls: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST".to_owned(), "/v3/users/u-9/token".to_owned()),
            ("POST".to_owned(), "/v3/users".to_owned()),
            ("POST".to_owned(), "/v3/users/u-9/token".to_owned()),
        ]
    );
    assert!(fake.state().users.contains_key("u-9"));
}

#[tokio::test]
async fn reading_channels_is_one_call_to_my_group_channels_with_state_and_unread_counts() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "c1", &["u-1", "u-2"]);
    seed_channel(&fake, "c2", &["u-1"]);
    seed_channel(&fake, "c3", &["u-1", "u-2", "u-3"]);
    seed_channel(&fake, "not-mine", &["u-2"]);
    fake.user_posts(&care("c1"), "u-2", "one").expect("post");
    fake.user_posts(&care("c1"), "u-2", "two").expect("post");
    fake.user_posts(&care("c3"), "u-1", "mine").expect("post");
    fake.user_posts(&care("c3"), "u-3", "theirs").expect("post");
    fake.mark_read("c3", "u-1");
    fake.user_posts(&care("c3"), "u-2", "new").expect("post");
    fake.state().channels.get_mut("c3").expect("c3").frozen = true;

    let asked = [
        care("c1"),
        care("c2"),
        care("c3"),
        care("ghost"),
        care("not-mine"),
    ];
    let states = adapter.read_channels(&asked, "u-1").await.expect("read");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_wire(r, "GET", "/v3/users/u-1/my_group_channels");
    assert!(r.body.is_empty());
    assert_eq!(
        query_pairs(r),
        pairs(&[
            ("channel_urls", "c1,c2,c3,ghost,not-mine"),
            ("limit", "100"),
            ("show_empty", "true"),
            ("show_frozen", "true"),
            ("show_member", "false"),
            ("hidden_mode", "all"),
            ("member_state_filter", "all"),
        ])
    );

    let by_id: HashMap<&str, _> = states
        .iter()
        .map(|s| (s.channel.channel_id.as_str(), s))
        .collect();
    assert_eq!(
        by_id.len(),
        3,
        "unknown channels and others' channels are left out"
    );
    let c1 = by_id["c1"];
    assert_eq!(c1.channel, care("c1"));
    assert_eq!(c1.member_count, 2);
    assert!(!c1.frozen);
    assert_eq!(c1.unread_count, Some(2));
    let last = c1.last_message.as_ref().expect("last message");
    assert_eq!(last.text, "two");
    assert_eq!(last.author.as_deref(), Some("u-2"));
    assert!(!last.system);
    let c2 = by_id["c2"];
    assert_eq!((c2.member_count, c2.unread_count), (1, Some(0)));
    assert!(c2.last_message.is_none(), "empty channels are read too");
    let c3 = by_id["c3"];
    assert!(c3.frozen);
    assert_eq!(c3.member_count, 3);
    assert_eq!(
        c3.unread_count,
        Some(1),
        "only what came after the read mark"
    );
}

#[tokio::test]
async fn reading_100_channels_costs_exactly_one_call() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let refs: Vec<ChannelRef> = (0..100).map(|i| care(&format!("c{i:03}"))).collect();
    for r in &refs {
        seed_channel(&fake, &r.channel_id, &["u-1"]);
    }
    let states = adapter.read_channels(&refs, "u-1").await.expect("read");
    assert_eq!(states.len(), 100);
    assert_eq!(fake.control().requests().len(), 1);
    let urls = fake.control().requests()[0]
        .param("channel_urls")
        .expect("channel_urls");
    assert_eq!(urls.split(',').count(), 100);
}

#[tokio::test]
async fn reading_10_channels_costs_one_call() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let refs: Vec<ChannelRef> = (0..10).map(|i| care(&format!("c{i}"))).collect();
    for r in &refs {
        seed_channel(&fake, &r.channel_id, &["u-1"]);
    }
    let states = adapter.read_channels(&refs, "u-1").await.expect("read");
    assert_eq!(states.len(), 10);
    assert_eq!(fake.control().requests().len(), 1);
}

#[tokio::test]
async fn reading_more_than_100_channels_asks_at_most_100_per_call() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let refs: Vec<ChannelRef> = (0..150).map(|i| care(&format!("c{i:03}"))).collect();
    for r in &refs {
        seed_channel(&fake, &r.channel_id, &["u-1"]);
    }
    let states = adapter.read_channels(&refs, "u-1").await.expect("read");
    assert_eq!(states.len(), 150);
    let counts: Vec<usize> = fake
        .control()
        .requests()
        .iter()
        .map(|r| r.param("channel_urls").expect("urls").split(',').count())
        .collect();
    assert_eq!(counts, [100, 50]);
}

#[tokio::test]
async fn reading_channels_for_a_user_sendbird_does_not_know_returns_nothing() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "c1", &["u-1"]);
    let states = adapter
        .read_channels(&[care("c1")], "stranger")
        .await
        .expect("read");
    assert!(states.is_empty());
    assert_eq!(fake.control().requests().len(), 1);
}

#[tokio::test]
async fn recent_messages_lists_the_messages_endpoint_newest_last() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1", "u-2"]);
    fake.user_posts(&care("case-1"), "u-1", "first")
        .expect("post");
    adapter
        .send_system_message(
            &care("case-1"),
            &SystemMessage {
                id: "s1".to_owned(),
                text: "system".to_owned(),
            },
        )
        .await
        .expect("system");
    fake.user_posts(&care("case-1"), "u-2", "third")
        .expect("post");
    fake.control().clear();

    let before = chrono::Utc::now().timestamp_millis();
    let messages = adapter
        .recent_messages(&care("case-1"), 2)
        .await
        .expect("messages");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_wire(r, "GET", "/v3/group_channels/case-1/messages");
    assert!(r.body.is_empty());
    let ts: i64 = r.param("message_ts").expect("ts").parse().expect("ms");
    assert!(ts >= before);
    let mut q = query_pairs(r);
    q.retain(|(k, _)| k != "message_ts");
    assert_eq!(
        q,
        pairs(&[
            ("prev_limit", "2"),
            ("next_limit", "0"),
            ("include", "true"),
            ("reverse", "false"),
        ])
    );

    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["system", "third"]);
    assert!(messages[0].system);
    assert_eq!(messages[0].author, None);
    assert!(!messages[1].system);
    assert_eq!(messages[1].author.as_deref(), Some("u-2"));
    assert!(messages[0].sent_at < messages[1].sent_at);
    let stored = fake.channel("case-1").expect("channel");
    assert_eq!(messages[1].id, stored.messages[2].message_id.to_string());
}

#[tokio::test]
async fn a_400_is_rejected_with_sendbirds_message_and_not_retried() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    fake.control().fail(
        400,
        &sendbird_error(400105, "\"freeze\" is required but missing."),
        1,
    );
    let err = adapter
        .set_frozen(&care("case-1"), true)
        .await
        .expect_err("400");
    assert_eq!(
        err,
        ProviderError::Rejected {
            status: 400,
            message: "\"freeze\" is required but missing.".to_owned()
        }
    );
    assert!(!err.is_transient());
    assert!(
        fake.control().requests().is_empty(),
        "a retry would have reached the fake"
    );
    assert!(!fake.channel("case-1").expect("channel").frozen);
}

#[tokio::test]
async fn sendbirds_400_not_found_code_is_not_found() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    let err = adapter
        .set_frozen(&care("ghost"), true)
        .await
        .expect_err("missing");
    assert_eq!(err, ProviderError::NotFound);
    let err = adapter
        .recent_messages(&care("ghost"), 5)
        .await
        .expect_err("missing");
    assert_eq!(err, ProviderError::NotFound);
    assert_eq!(fake.control().requests().len(), 2, "not retried");
}

#[tokio::test]
async fn a_wrong_api_token_is_rejected_with_401_and_not_retried() {
    let fake = sendbird::start().await;
    let adapter = fake.sendbird_with_token("not-the-token", quick_resilience(3));
    let err = adapter
        .set_frozen(&care("case-1"), true)
        .await
        .expect_err("401");
    assert_eq!(
        err,
        ProviderError::Rejected {
            status: 401,
            message: "Invalid value: \"Api-Token\".".to_owned()
        }
    );
    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("api-token").as_deref(),
        Some("not-the-token")
    );
}

#[tokio::test]
async fn a_429_with_a_json_body_and_retry_after_is_rate_limited_with_that_wait() {
    let (fake, adapter) = setup(quick_resilience(1)).await;
    fake.control().inject(Fault::Respond {
        status: 429,
        body: sendbird_error(500910, "Too many requests."),
        headers: vec![
            ("Retry-After".to_owned(), "2".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ],
        count: 1,
    });
    let err = adapter.upsert_users(&[user("u-1")]).await.expect_err("429");
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_429_with_x_ratelimit_retryafter_and_no_body_is_rate_limited_with_that_wait() {
    let (fake, adapter) = setup(quick_resilience(1)).await;
    fake.control().inject(Fault::Respond {
        status: 429,
        body: String::new(),
        headers: vec![("X-RateLimit-RetryAfter".to_owned(), "3".to_owned())],
        count: 1,
    });
    let err = adapter
        .read_channels(&[care("c1")], "u-1")
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
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_channel(&fake, "case-1", &["u-1"]);
    fake.control().inject(Fault::Respond {
        status: 429,
        body: sendbird_error(500910, "Too many requests."),
        headers: vec![("X-RateLimit-RetryAfter".to_owned(), "0".to_owned())],
        count: 1,
    });
    adapter
        .set_frozen(&care("case-1"), true)
        .await
        .expect("retried");
    assert!(fake.channel("case-1").expect("channel").frozen);
}

#[tokio::test]
async fn the_fake_refuses_more_than_100_channel_urls() {
    let fake = sendbird::start().await;
    seed_users(&fake, &["u-1"]);
    let urls: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v3/users/u-1/my_group_channels",
            fake.base_url()
        ))
        .header("Api-Token", API_TOKEN)
        .query(&[("channel_urls", urls.join(","))])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], json!(true));
    assert_eq!(body["code"], json!(400110));
}

#[tokio::test]
async fn the_fake_refuses_requests_without_the_api_token() {
    let fake = sendbird::start().await;
    let response = reqwest::Client::new()
        .get(format!("{}/v3/group_channels", fake.base_url()))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({ "error": true, "code": 400401, "message": "Invalid value: \"Api-Token\"." })
    );
}

#[tokio::test]
async fn the_fake_lists_group_channels_by_url_with_members_and_pages() {
    let fake = sendbird::start().await;
    for i in 0..3 {
        seed_channel(&fake, &format!("c{i}"), &["u-1"]);
        fake.user_posts(&care(&format!("c{i}")), "u-1", "hi")
            .expect("post");
    }
    let client = reqwest::Client::new();
    let page: Value = client
        .get(format!("{}/v3/group_channels", fake.base_url()))
        .header("Api-Token", API_TOKEN)
        .query(&[
            ("channel_urls", "c0,c2"),
            ("show_member", "true"),
            ("limit", "1"),
        ])
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(page["channels"].as_array().expect("list").len(), 1);
    assert_eq!(page["channels"][0]["channel_url"], json!("c0"));
    assert_eq!(page["channels"][0]["members"][0]["user_id"], json!("u-1"));
    let next = page["next"].as_str().expect("next").to_owned();
    assert!(!next.is_empty());
    let rest: Value = client
        .get(format!("{}/v3/group_channels", fake.base_url()))
        .header("Api-Token", API_TOKEN)
        .query(&[("channel_urls", "c0,c2"), ("limit", "1"), ("token", &next)])
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["channels"][0]["channel_url"], json!("c2"));
    assert_eq!(rest["next"], json!(""));
}

#[tokio::test]
async fn the_fake_applies_the_vars_a_test_app_needs() {
    let fake = sendbird::start().await;
    let vars: HashMap<String, String> = fake.vars().into_iter().collect();
    assert_eq!(vars["CAREGRAPH_CHAT_PROVIDER"], "sendbird");
    assert_eq!(vars["SENDBIRD_APP_ID"], APP_ID);
    assert_eq!(vars["SENDBIRD_API_TOKEN"], API_TOKEN);
    assert_eq!(vars["SENDBIRD_BASE_URL"], fake.base_url());
    assert_eq!(fake.metadata(&care("none")), None);
    assert_eq!(fake.members(&care("none")), None);
    assert!(fake.user_posts(&care("none"), "u-1", "x").is_err());
}

#[tokio::test]
async fn revoking_tokens_deletes_all_of_the_users_session_tokens_and_no_one_elses() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1", "u-2"]);
    assert!(adapter.capabilities().revokes_tokens);
    for id in ["u-1", "u-1", "u-2"] {
        adapter
            .issue_token(&user(id), Duration::from_secs(600))
            .await
            .expect("token");
    }
    fake.control().clear();
    adapter
        .revoke_tokens("u-1", chrono::Utc::now())
        .await
        .expect("revoke");

    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_wire(r, "DELETE", "/v3/users/u-1/token");
    assert!(r.body.is_empty(), "no body");
    assert_eq!(r.query, "");
    assert_eq!(r.header("content-type"), None);
    let left: Vec<String> = fake
        .state()
        .tokens
        .iter()
        .map(|t| t.user_id.clone())
        .collect();
    assert_eq!(left, ["u-2"]);
}

#[tokio::test]
async fn revoking_the_tokens_of_a_user_sendbird_does_not_know_succeeds() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    adapter
        .revoke_tokens("u-9", chrono::Utc::now())
        .await
        .expect("400201: nothing to revoke");
    let requests = fake.control().requests();
    assert_eq!(requests.len(), 1, "no retry, no user created");
    assert_wire(&requests[0], "DELETE", "/v3/users/u-9/token");
}

#[tokio::test]
async fn another_refusal_of_a_revocation_is_rejected() {
    let (fake, adapter) = setup(quick_resilience(3)).await;
    seed_users(&fake, &["u-1"]);
    fake.control().fail(
        400,
        &sendbird_error(
            400108,
            "Not authorized. \"To access the requested resource.\"",
        ),
        1,
    );
    let error = adapter
        .revoke_tokens("u-1", chrono::Utc::now())
        .await
        .expect_err("refused");
    assert!(
        matches!(error, ProviderError::Rejected { status: 400, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_token_revocation_written_to_the_outbox_goes_out_as_sendbird_s_token_delete() {
    let fake = sendbird::start().await;
    seed_users(&fake, &["staff-1"]);
    fake.state().tokens.push(sendbird::IssuedToken {
        user_id: "staff-1".into(),
        token: "sb-session-earlier".into(),
        expires_at: chrono::Utc::now().timestamp_millis() + 600_000,
    });
    let app = crate::helpers::TestApp::spawn_with(|v| v.extend(fake.vars())).await;
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
    let calls = fake.control().calls("DELETE", "/v3/users/staff-1/token");
    assert_eq!(calls.len(), 1);
    assert_wire(&calls[0], "DELETE", "/v3/users/staff-1/token");
    assert!(calls[0].body.is_empty());
    assert!(fake.state().tokens.is_empty(), "the session token is gone");
}
