//! Provider webhooks (`docs/providers.md`): signatures computed here, independently of caregraph,
//! over the exact bytes sent (Stream's gunzipped first); missing and wrong signatures (401),
//! malformed JSON (400), replays that change nothing, and what each event does to the session:
//! a message reaches the list subscribers, a freeze or delete by someone else closes the chat,
//! an unfreeze outside the window is undone, member events keep membership in step.

use std::{io::Write, sync::Arc, time::Duration};

use caregraph::events::{ChangeKind, DomainEvent};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::broadcast::Receiver;

use crate::{
    fakes::{self, FakeProvider},
    helpers::{Clinic, TestApp, quick, settle},
};

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body).expect("gzip");
    gz.finish().expect("gzip")
}

async fn post(
    app: &TestApp,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn direct_chat(app: &TestApp, c: &Clinic) -> (String, String) {
    let s = app
        .ok(
            &c.vet.token,
            "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id channelId } }",
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    (
        s["id"].as_str().expect("id").to_owned(),
        s["channelId"].as_str().expect("channel").to_owned(),
    )
}

async fn session(app: &TestApp, c: &Clinic, id: &str) -> Value {
    app.ok(
        &c.vet.token,
        "query($id: ID!) { chatSession(id: $id) { id status closeReason members { user { id } } } }",
        json!({"id": id}),
        "chatSession",
    )
    .await
}

/// Waits (up to 2 s) until the session satisfies `done`.
async fn until(app: &TestApp, c: &Clinic, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..80 {
        let s = session(app, c, id).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the webhook was not applied: {}", session(app, c, id).await);
}

async fn next_change(
    rx: &mut Receiver<Arc<DomainEvent>>,
) -> Option<caregraph::events::SessionChange> {
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), rx.recv()).await {
            Ok(Ok(event)) => {
                if let DomainEvent::ChatChanged(c) = &*event {
                    return Some(c.clone());
                }
            }
            _ => return None,
        }
    }
}

fn members(s: &Value) -> Vec<String> {
    let mut ids: Vec<String> = s["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user"]["id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn stream_webhooks_need_the_right_signature_and_json_and_change_nothing_otherwise() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = app.clinic("streamhook").await;
    let (id, channel) = direct_chat(&app, &c).await;
    settle(&app).await;
    let mut rx = app.state.services.events.subscribe();
    let body = serde_json::to_vec(
        &json!({"type": "channel.deleted", "cid": format!("messaging:{channel}"),
        "channel": {"cid": format!("messaging:{channel}")}}),
    )
    .expect("json");
    let good = sign(fakes::stream::API_SECRET, &body);
    for (headers, want) in [
        (vec![], 401),
        (vec![("x-signature", "00".repeat(32))], 401),
        (vec![("x-signature", "not hex".to_owned())], 401),
        (vec![("x-signature", sign("another secret", &body))], 401),
    ] {
        let (status, _) = post(&app, "/webhooks/stream", body.clone(), &headers).await;
        assert_eq!(status, want, "{headers:?}");
    }
    let junk = b"{\"type\": ".to_vec();
    let (status, _) = post(
        &app,
        "/webhooks/stream",
        junk.clone(),
        &[("x-signature", sign(fakes::stream::API_SECRET, &junk))],
    )
    .await;
    assert_eq!(status, 400, "signed but not JSON");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        session(&app, &c, &id).await["status"],
        "ACTIVE",
        "nothing changed"
    );
    assert!(
        next_change(&mut rx).await.is_none(),
        "and nothing was announced"
    );

    // The same delivery, signed: the session closes, once, and a replay changes nothing.
    let headers = [
        ("x-signature", good),
        ("x-webhook-id", "delivery-1".to_owned()),
    ];
    let (status, answer) = post(&app, "/webhooks/stream", body.clone(), &headers).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    let closed = until(&app, &c, &id, |s| s["status"] == "CLOSED").await;
    assert_eq!(closed["closeReason"], "PROVIDER_DELETED");
    assert_eq!(
        next_change(&mut rx).await.map(|c| c.kind),
        Some(ChangeKind::Closed)
    );
    let (status, answer) = post(&app, "/webhooks/stream", body, &headers).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert!(
        next_change(&mut rx).await.is_none(),
        "a replay changes nothing"
    );
    settle(&app).await;
    assert!(
        fake.control().requests().iter().all(|r| !r
            .path
            .contains(&format!("/channels/messaging/{channel}/message"))),
        "nothing is posted to a deleted channel"
    );
}

#[tokio::test]
async fn a_gzipped_stream_message_reaches_the_list_and_member_events_keep_membership_in_step() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = app.clinic("streammsg").await;
    let (id, channel) = direct_chat(&app, &c).await;
    settle(&app).await;
    let mut rx = app.state.services.events.subscribe();
    let cid = format!("messaging:{channel}");
    let message = serde_json::to_vec(&json!({"type": "message.new", "cid": cid,
        "message": {"id": "m-1", "text": "The x-ray is back", "type": "regular",
            "user": {"id": c.tech.id}, "created_at": chrono::Utc::now().to_rfc3339()}}))
    .expect("json");
    // Stream signs the uncompressed bytes and may send them gzipped.
    let (status, _) = post(
        &app,
        "/webhooks/stream",
        gzip(&message),
        &[
            ("x-signature", sign(fakes::stream::API_SECRET, &message)),
            ("x-webhook-id", "m-1-delivery".to_owned()),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let change = next_change(&mut rx).await.expect("a change");
    assert_eq!(change.kind, ChangeKind::Message);
    assert_eq!(change.session_id.to_string(), id);
    let last = change.last_message.expect("the message");
    assert_eq!(last.text, "The x-ray is back");
    assert_eq!(last.author.as_deref(), Some(c.tech.id.as_str()));
    let (status, _) = post(
        &app,
        "/webhooks/stream",
        gzip(&message),
        &[(
            "x-signature",
            sign(fakes::stream::API_SECRET, &gzip(&message)),
        )],
    )
    .await;
    assert_eq!(status, 401, "the signature is over the uncompressed body");

    // Someone adds the owner at Stream behind caregraph's back: caregraph takes them out again.
    fake.control().clear();
    let added = serde_json::to_vec(&json!({"type": "member.added", "cid": cid,
        "member": {"user_id": c.owner.id}, "user": {"id": c.owner.id}}))
    .expect("json");
    post(
        &app,
        "/webhooks/stream",
        added.clone(),
        &[("x-signature", sign(fakes::stream::API_SECRET, &added))],
    )
    .await;
    let path = format!("/channels/messaging/{channel}");
    let mut reverted = Vec::new();
    for _ in 0..80 {
        reverted = fake.control().calls("POST", &path);
        if !reverted.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(reverted.len(), 1, "one removal at the provider");
    assert_eq!(reverted[0].json()["remove_members"], json!([c.owner.id]));
    let mut expected = vec![c.vet.id.clone(), c.tech.id.clone()];
    expected.sort();
    assert_eq!(
        members(&session(&app, &c, &id).await),
        expected,
        "not a member here"
    );

    // A member who left at the provider leaves here too; a report from before someone joined
    // does not take them out.
    let stale = serde_json::to_vec(&json!({"type": "member.removed", "cid": cid,
        "user": {"id": c.vet.id}, "created_at": "2020-01-01T00:00:00Z"}))
    .expect("json");
    post(
        &app,
        "/webhooks/stream",
        stale.clone(),
        &[("x-signature", sign(fakes::stream::API_SECRET, &stale))],
    )
    .await;
    let removed = serde_json::to_vec(&json!({"type": "member.removed", "cid": cid,
        "user": {"id": c.tech.id}, "created_at": chrono::Utc::now().to_rfc3339()}))
    .expect("json");
    post(
        &app,
        "/webhooks/stream",
        removed.clone(),
        &[("x-signature", sign(fakes::stream::API_SECRET, &removed))],
    )
    .await;
    until(&app, &c, &id, |s| members(s) == vec![c.vet.id.clone()]).await;
}

#[tokio::test]
async fn a_freeze_by_someone_else_closes_an_open_chat_and_an_unfreeze_outside_the_window_is_undone()
{
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = app.clinic("streamfreeze").await;
    let (id, channel) = direct_chat(&app, &c).await;
    settle(&app).await;
    fake.control().clear();
    let cid = format!("messaging:{channel}");
    let frozen = serde_json::to_vec(&json!({"type": "channel.updated", "cid": cid,
        "channel": {"cid": cid, "frozen": true}, "created_at": chrono::Utc::now().to_rfc3339()}))
    .expect("json");
    post(
        &app,
        "/webhooks/stream",
        frozen.clone(),
        &[("x-signature", sign(fakes::stream::API_SECRET, &frozen))],
    )
    .await;
    let closed = until(&app, &c, &id, |s| s["status"] == "CLOSED").await;
    assert_eq!(closed["closeReason"], "PROVIDER_FROZEN");
    settle(&app).await;
    let patches = fake
        .control()
        .calls("PATCH", &format!("/channels/messaging/{channel}"));
    assert_eq!(patches.len(), 1, "the channel learns it ended");
    assert_eq!(patches[0].json()["set"]["status"], "ended");

    // Someone unfreezes the closed chat at the provider: caregraph freezes it again.
    fake.control().clear();
    let unfrozen = serde_json::to_vec(&json!({"type": "channel.unfrozen", "cid": cid,
        "channel_type": "messaging", "channel_id": channel,
        "created_at": chrono::Utc::now().to_rfc3339()}))
    .expect("json");
    post(
        &app,
        "/webhooks/stream",
        unfrozen.clone(),
        &[("x-signature", sign(fakes::stream::API_SECRET, &unfrozen))],
    )
    .await;
    for _ in 0..80 {
        if !fake
            .control()
            .calls("PATCH", &format!("/channels/messaging/{channel}"))
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let patches = fake
        .control()
        .calls("PATCH", &format!("/channels/messaging/{channel}"));
    assert_eq!(patches.len(), 1, "frozen again");
    assert_eq!(patches[0].json()["set"]["frozen"], true);
}

#[tokio::test]
async fn sendbird_webhooks_are_verified_with_the_api_token_and_update_the_session() {
    let fake = fakes::sendbird::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = app.clinic("sbhook").await;
    let (id, channel) = direct_chat(&app, &c).await;
    settle(&app).await;
    let mut rx = app.state.services.events.subscribe();
    let message = serde_json::to_vec(&json!({"category": "group_channel:message_send",
        "type": "MESG", "channel": {"channel_url": channel}, "sender": {"user_id": c.vet.id},
        "payload": {"message_id": 7, "message": "On my way", "created_at": chrono::Utc::now().timestamp_millis()}}))
    .expect("json");
    let (status, _) = post(&app, "/webhooks/sendbird", message.clone(), &[]).await;
    assert_eq!(status, 401, "unsigned");
    let (status, _) = post(
        &app,
        "/webhooks/sendbird",
        message.clone(),
        &[("x-sendbird-signature", sign("not the token", &message))],
    )
    .await;
    assert_eq!(status, 401, "wrong key");
    let signature = sign(fakes::sendbird::API_TOKEN, &message);
    let (status, _) = post(
        &app,
        "/webhooks/sendbird",
        message.clone(),
        &[("x-sendbird-signature", signature.clone())],
    )
    .await;
    assert_eq!(status, 200);
    let change = next_change(&mut rx).await.expect("a change");
    assert_eq!(change.kind, ChangeKind::Message);
    assert_eq!(change.last_message.expect("message").text, "On my way");
    // Sendbird retries the same bytes: recognised by their hash.
    let (status, answer) = post(
        &app,
        "/webhooks/sendbird",
        message,
        &[("x-sendbird-signature", signature)],
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert!(next_change(&mut rx).await.is_none());
    let removed = serde_json::to_vec(&json!({"category": "group_channel:remove",
        "channel": {"channel_url": channel}}))
    .expect("json");
    post(
        &app,
        "/webhooks/sendbird",
        removed.clone(),
        &[(
            "x-sendbird-signature",
            sign(fakes::sendbird::API_TOKEN, &removed),
        )],
    )
    .await;
    let closed = until(&app, &c, &id, |s| s["status"] == "CLOSED").await;
    assert_eq!(closed["closeReason"], "PROVIDER_DELETED");
}

#[tokio::test]
async fn a_provider_that_is_not_configured_has_no_webhook() {
    let app = TestApp::spawn().await;
    let body = b"{}".to_vec();
    for path in ["/webhooks/stream", "/webhooks/sendbird"] {
        let (status, _) = post(
            &app,
            path,
            body.clone(),
            &[
                ("x-signature", sign("x", &body)),
                ("x-sendbird-signature", sign("x", &body)),
            ],
        )
        .await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn a_delivery_whose_processing_was_interrupted_is_processed_by_the_sweep() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = app.clinic("sweep").await;
    let (id, channel) = direct_chat(&app, &c).await;
    // Recorded but never processed, as if the process had stopped right after answering.
    let body =
        json!({"type": "channel.deleted", "cid": format!("messaging:{channel}")}).to_string();
    let hooks = &app.state.services.webhooks;
    assert!(
        hooks
            .record(
                caregraph::services::webhooks::Source::Stream,
                "left-over",
                &body
            )
            .await
            .expect("record")
    );
    assert_eq!(session(&app, &c, &id).await["status"], "ACTIVE");
    // Two replicas sweeping at once: the claim lets one of them apply it.
    let (a, b) = tokio::join!(hooks.sweep(Duration::ZERO), hooks.sweep(Duration::ZERO));
    assert_eq!(a.expect("sweep") + b.expect("sweep"), 1);
    assert_eq!(session(&app, &c, &id).await["status"], "CLOSED");
    assert_eq!(hooks.sweep(Duration::ZERO).await.expect("sweep"), 0, "once");
}

#[tokio::test]
async fn a_replayed_stream_delivery_with_a_new_delivery_id_has_no_second_effect() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
    })
    .await;
    let c = app.clinic("replay").await;
    let (id, channel) = direct_chat(&app, &c).await;
    settle(&app).await;
    let mut rx = app.state.services.events.subscribe();
    let message = serde_json::to_vec(&json!({"type": "message.new",
        "cid": format!("messaging:{channel}"), "created_at": chrono::Utc::now().to_rfc3339(),
        "message": {"id": "m-replay", "text": "Once", "type": "regular",
            "user": {"id": c.tech.id}, "created_at": chrono::Utc::now().to_rfc3339()}}))
    .expect("json");
    let signature = sign(fakes::stream::API_SECRET, &message);
    let mut answers = Vec::new();
    for delivery in ["replay-1", "replay-2", "replay-3"] {
        let (status, answer) = post(
            &app,
            "/webhooks/stream",
            message.clone(),
            &[
                ("x-signature", signature.clone()),
                ("x-webhook-id", delivery.to_owned()),
            ],
        )
        .await;
        answers.push((status, answer["status"].as_str().map(str::to_owned)));
    }
    assert_eq!(
        answers,
        vec![
            (200, Some("accepted".to_owned())),
            (200, Some("duplicate".to_owned())),
            (200, Some("duplicate".to_owned())),
        ]
    );
    let change = next_change(&mut rx).await.expect("one change");
    assert_eq!(
        (change.kind, change.session_id.to_string()),
        (ChangeKind::Message, id)
    );
    assert!(next_change(&mut rx).await.is_none(), "and no second one");
}

#[tokio::test]
async fn a_delivery_older_than_the_window_is_refused() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick(v);
        v.extend(fake.vars());
        v.insert("CAREGRAPH_WEBHOOK_MAX_AGE_SECONDS".into(), "600".into());
    })
    .await;
    let c = app.clinic("oldhook").await;
    let (_, channel) = direct_chat(&app, &c).await;
    let at = |age: i64| (chrono::Utc::now() - chrono::Duration::seconds(age)).to_rfc3339();
    for (age, expected) in [(3600, 400), (60, 200)] {
        let body = serde_json::to_vec(&json!({"type": "message.new",
            "cid": format!("messaging:{channel}"), "created_at": at(age),
            "message": {"id": format!("m-{age}"), "text": "hi", "type": "regular",
                "user": {"id": c.tech.id}, "created_at": at(age)}}))
        .expect("json");
        let (status, answer) = post(
            &app,
            "/webhooks/stream",
            body.clone(),
            &[("x-signature", sign(fakes::stream::API_SECRET, &body))],
        )
        .await;
        assert_eq!(status, expected, "{age} s old: {answer}");
    }
}
