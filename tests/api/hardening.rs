//! Hardening: no request stalls the server (query cost, connections), and the edge cases
//! attackers try (tokens, webhook replays, control characters, lockouts, secrets) are closed.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, code};

/// `fragment F0 on <leaf_type> { <leaf> } fragment Fi on <leaf_type> { ...Fi-1 ...Fi-1 }`, spread
/// `levels` deep from `root`.
fn fragment_bomb(levels: usize, on: &str, leaf: &str, root: &str) -> String {
    let mut q = format!("fragment F0 on {on} {{ {leaf} }} ");
    for i in 1..=levels {
        q.push_str(&format!(
            "fragment F{i} on {on} {{ ...F{} ...F{} }} ",
            i - 1,
            i - 1
        ));
    }
    q.push_str(&root.replace("SPREAD", &format!("...F{levels}")));
    q
}

/// Sends `query` anonymously and checks `/healthz` while it runs; the query must be refused as
/// too large within 100 ms.
async fn refused_quickly_while_healthz_answers(app: &TestApp, query: &str) {
    let started = Instant::now();
    let body = app.gql(None, query, json!({}));
    let health = async {
        let response = app
            .http
            .get(app.url("/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("healthz answers");
        assert!(response.status().is_success());
    };
    let (body, ()) = tokio::join!(body, health);
    let elapsed = started.elapsed();
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large")),
        "{body}"
    );
    assert!(elapsed < Duration::from_millis(100), "took {elapsed:?}");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscribes with `query` on a `graphql-transport-ws` socket and returns the first message
/// about that operation.
async fn reply(ws: &mut Socket, id: &str, query: &str) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let sub = json!({"type": "subscribe", "id": id, "payload": {"query": query}});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).expect("json");
            if v["id"] == id {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn a_25_level_fragment_bomb_is_refused_within_100_ms_while_healthz_answers() {
    let app = TestApp::spawn().await;
    let bomb = fragment_bomb(25, "Query", "__typename", "{ SPREAD }");
    refused_quickly_while_healthz_answers(&app, &bomb).await;
}

#[tokio::test]
async fn a_fragment_bomb_of_object_leaves_is_refused_within_100_ms() {
    let app = TestApp::spawn().await;
    let bomb = fragment_bomb(26, "User", "id email", "{ viewer { user { SPREAD } } }");
    refused_quickly_while_healthz_answers(&app, &bomb).await;
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_over_websocket_too() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Bomb WS", "bomb-ws@example.org").await;
    let mut ws = crate::security::socket(&app, &token).await;
    let bomb = fragment_bomb(25, "Query", "__typename", "{ SPREAD }");
    let started = Instant::now();
    let reply = reply(&mut ws, "b", &bomb).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_document_within_the_selection_budget_runs() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_MAX_SELECTIONS".into(), "40".into());
    })
    .await;
    let small = fragment_bomb(3, "Query", "__typename", "{ SPREAD }");
    let body = app.gql(None, &small, json!({})).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    let big = fragment_bomb(5, "Query", "__typename", "{ SPREAD }");
    assert_eq!(
        code(&app.gql(None, &big, json!({})).await),
        "BAD_USER_INPUT"
    );
}
