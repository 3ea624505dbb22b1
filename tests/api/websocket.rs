//! GraphQL over WebSocket with a real client, both subprotocols: authentication (4403), the
//! graphql-ws close codes, keep-alive, token expiry and shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::helpers::{SECRET, TestApp, hs256, now};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    Msg(Value),
    Closed(u16, String),
}

pub(crate) async fn connect(app: &TestApp, protocol: &str) -> Ws {
    connect_url(&app.ws_url(), protocol).await
}

/// Opens a socket to any caregraph (`ws://host:port/graphql`) with a subprotocol.
pub(crate) async fn connect_url(url: &str, protocol: &str) -> Ws {
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).expect("header"),
    );
    let (ws, response) = connect_async(request).await.expect("connect");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or("")),
        Some(protocol)
    );
    ws
}

pub(crate) async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .expect("send");
}

/// The next JSON message or the close, skipping server keep-alives (`ping`, `ka`).
pub(crate) async fn next(ws: &mut Ws) -> Event {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an event within 10 s");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("json");
                if matches!(value["type"].as_str(), Some("ping" | "ka")) {
                    continue;
                }
                return Event::Msg(value);
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                return Event::Closed(code, reason);
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
            None => return Event::Closed(1006, String::new()),
        }
    }
}

/// Sends a `subscribe` (graphql-transport-ws) of `payload` as operation `id` and returns the
/// first message that arrives (a panic if the socket closes instead).
pub(crate) async fn subscribe(ws: &mut Ws, id: &str, payload: Value) -> Value {
    send(
        ws,
        json!({"type": "subscribe", "id": id, "payload": payload}),
    )
    .await;
    match next(ws).await {
        Event::Msg(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

pub(crate) async fn expect_close(ws: &mut Ws, code: u16) -> String {
    match next(ws).await {
        Event::Closed(c, reason) => {
            assert_eq!(c, code, "reason {reason:?}");
            assert!(reason.len() < 123);
            reason
        }
        other => panic!("expected close {code}, got {other:?}"),
    }
}

pub(crate) async fn acked(app: &TestApp, protocol: &str, token: &str) -> Ws {
    acked_url(&app.ws_url(), protocol, token).await
}

/// A socket to `url`, initialised with `token` and acknowledged.
pub(crate) async fn acked_url(url: &str, protocol: &str, token: &str) -> Ws {
    let mut ws = connect_url(url, protocol).await;
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Event::Msg(json!({"type": "connection_ack"}))
    );
    ws
}

const CLOCK: &str = "subscription { serverTime(everyMs: 100) }";

#[tokio::test]
async fn a_subscription_streams_over_graphql_transport_ws() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Ws Clinic", "ws@example.org").await;
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "1", "payload": {"query": CLOCK}}),
    )
    .await;
    for _ in 0..2 {
        match next(&mut ws).await {
            Event::Msg(m) => {
                assert_eq!(m["type"], "next");
                assert_eq!(m["id"], "1");
                assert!(m["payload"]["data"]["serverTime"].is_string(), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
    // A query over the socket answers once and completes.
    send(&mut ws, json!({"type": "subscribe", "id": "q", "payload": {"query": "{ viewer { user { email } } }"}})).await;
    let mut got_query = false;
    let mut completed = false;
    while !(got_query && completed) {
        if let Event::Msg(m) = next(&mut ws).await {
            if m["id"] == "q" && m["type"] == "next" {
                assert_eq!(
                    m["payload"]["data"]["viewer"]["user"]["email"],
                    "ws@example.org"
                );
                got_query = true;
            }
            if m["id"] == "q" && m["type"] == "complete" {
                completed = true;
            }
        }
    }
    send(&mut ws, json!({"type": "complete", "id": "1"})).await;
    send(&mut ws, json!({"type": "ping"})).await;
    // After the client's complete, the next message is the pong (late `next`s may precede it).
    loop {
        match next(&mut ws).await {
            Event::Msg(m) if m["type"] == "pong" => break,
            Event::Msg(m) if m["type"] == "next" => continue,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_message_many_times_the_sockets_read_buffer_arrives_whole() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Big Clinic", "big@example.org").await;
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    // 16 KiB of comment ahead of the query: eight times the 2 KiB read buffer.
    let query = format!(
        "# {}\n{{ viewer {{ user {{ email }} }} }}",
        "x".repeat(16 * 1024)
    );
    let m = subscribe(&mut ws, "big", json!({"query": query})).await;
    assert_eq!(m["type"], "next", "{m}");
    assert_eq!(
        m["payload"]["data"]["viewer"]["user"]["email"],
        "big@example.org"
    );
}

#[tokio::test]
async fn a_subscription_streams_over_the_legacy_graphql_ws_protocol() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Legacy Clinic", "legacy@example.org").await;
    let mut ws = connect(&app, "graphql-ws").await;
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"authToken": token}}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Event::Msg(json!({"type": "connection_ack"}))
    );
    send(
        &mut ws,
        json!({"type": "start", "id": "a", "payload": {"query": CLOCK}}),
    )
    .await;
    match next(&mut ws).await {
        Event::Msg(m) => {
            assert_eq!(m["type"], "data");
            assert!(m["payload"]["data"]["serverTime"].is_string());
        }
        other => panic!("{other:?}"),
    }
    send(&mut ws, json!({"type": "stop", "id": "a"})).await;
    send(&mut ws, json!({"type": "connection_terminate"})).await;
    loop {
        match next(&mut ws).await {
            Event::Closed(code, _) => {
                assert_eq!(code, 1000);
                break;
            }
            Event::Msg(m) => assert_eq!(m["type"], "data"),
        }
    }
}

#[tokio::test]
async fn every_auth_rejection_closes_the_socket_with_4403() {
    let app = TestApp::spawn().await;
    let (user, _, _) = app.owner("Ws Auth", "wsauth@example.org").await;
    let sub = user.id.to_string();
    let payloads = [
        json!({}),
        json!({"Authorization": "Bearer not-a-jwt"}),
        json!({"token": hs256(b"the-wrong-secret-entirely-000000", &json!({"sub": sub, "exp": now() + 600}))}),
        json!({"authorization": format!("Bearer {}", hs256(SECRET.as_bytes(), &json!({"sub": sub, "exp": now() - 120})))}),
        json!({"authToken": hs256(SECRET.as_bytes(), &json!({"sub": sub}))}),
    ];
    for payload in payloads {
        let mut ws = connect(&app, "graphql-transport-ws").await;
        send(
            &mut ws,
            json!({"type": "connection_init", "payload": payload}),
        )
        .await;
        expect_close(&mut ws, 4403).await;
    }
    // The legacy protocol says why first, then closes the same way.
    let mut ws = connect(&app, "graphql-ws").await;
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"token": "garbage"}}),
    )
    .await;
    match next(&mut ws).await {
        Event::Msg(m) => assert_eq!(m["type"], "connection_error"),
        other => panic!("{other:?}"),
    }
    expect_close(&mut ws, 4403).await;
    // Every accepted spelling works.
    let token = app.token(&user);
    for payload in [
        json!({"Authorization": format!("Bearer {token}")}),
        json!({"authorization": format!("Bearer {token}")}),
        json!({"authToken": token}),
        json!({"token": format!("Bearer {token}")}),
    ] {
        let mut ws = connect(&app, "graphql-transport-ws").await;
        send(
            &mut ws,
            json!({"type": "connection_init", "payload": payload}),
        )
        .await;
        assert_eq!(
            next(&mut ws).await,
            Event::Msg(json!({"type": "connection_ack"}))
        );
    }
}

#[tokio::test]
async fn protocol_violations_get_the_graphql_ws_close_codes() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_WS_INIT_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let (_, _, token) = app.owner("Codes", "codes@example.org").await;

    // 4401: subscribe before the ack.
    let mut ws = connect(&app, "graphql-transport-ws").await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "1", "payload": {"query": CLOCK}}),
    )
    .await;
    expect_close(&mut ws, 4401).await;

    // 4408: no connection_init in time.
    let mut ws = connect(&app, "graphql-transport-ws").await;
    expect_close(&mut ws, 4408).await;

    // 4429: a second connection_init.
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"token": token}}),
    )
    .await;
    expect_close(&mut ws, 4429).await;

    // 4409: a duplicate active operation id.
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "dup", "payload": {"query": CLOCK}}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "dup", "payload": {"query": CLOCK}}),
    )
    .await;
    loop {
        match next(&mut ws).await {
            Event::Msg(m) => assert_eq!(m["type"], "next"),
            Event::Closed(code, _) => {
                assert_eq!(code, 4409);
                break;
            }
        }
    }

    // 4400: an unknown message type, and a message that is not JSON, with short reasons.
    for bad in [
        json!({"type": "wat"}).to_string(),
        "not json at all".repeat(20),
    ] {
        let mut ws = acked(&app, "graphql-transport-ws", &token).await;
        ws.send(Message::Text(bad.into())).await.expect("send");
        expect_close(&mut ws, 4400).await;
    }
}

#[tokio::test]
async fn a_validation_error_arrives_as_an_error_message() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Validation", "validation@example.org").await;
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "v", "payload": {"query": "subscription { nope }"}}),
    )
    .await;
    match next(&mut ws).await {
        Event::Msg(m) => {
            assert_eq!(m["type"], "error", "{m}");
            assert_eq!(m["id"], "v");
            assert_eq!(m["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
        }
        other => panic!("{other:?}"),
    }
    // No `complete` follows an `error`; the connection stays usable.
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next(&mut ws).await, Event::Msg(json!({"type": "pong"})));
}

#[tokio::test]
async fn production_subscription_errors_do_not_name_schema_arguments() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_ENV".into(), "production".into());
    })
    .await;
    let (_, _, token) = app.owner("Redacted", "redacted@example.org").await;
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    // `orgId` is required: the engine's message would name it.
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "r", "payload": {"query": "subscription { chatSessionsChanged { kind } }"}}),
    )
    .await;
    match next(&mut ws).await {
        Event::Msg(m) => {
            assert_eq!(m["type"], "error", "{m}");
            let errors = m["payload"].as_array().expect("errors");
            assert!(!errors.is_empty(), "{m}");
            for error in errors {
                assert_eq!(
                    error["message"],
                    caregraph::graphql::redact::GENERIC_ARGUMENT_ERROR,
                    "{m}"
                );
                assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
            }
            assert!(!m.to_string().contains("orgId"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_socket_closes_when_the_access_token_expires() {
    let app = TestApp::spawn().await;
    let (user, _, _) = app.owner("Expiry", "expiry@example.org").await;
    let token = hs256(
        SECRET.as_bytes(),
        &json!({"sub": user.id.to_string(), "exp": now() + 2}),
    );
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    send(&mut ws, json!({"type": "subscribe", "id": "1", "payload": {"query": "subscription { serverTime(everyMs: 500) }"}})).await;
    let started = std::time::Instant::now();
    loop {
        match next(&mut ws).await {
            Event::Msg(m) => assert_eq!(m["type"], "next"),
            Event::Closed(code, reason) => {
                assert_eq!(code, 4403);
                assert!(reason.contains("expired"), "{reason}");
                break;
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn the_server_pings_keeps_live_sockets_and_closes_dead_ones() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_WS_KEEPALIVE_SECONDS".into(), "1".into());
        v.insert("CAREGRAPH_WS_IDLE_TIMEOUT_SECONDS".into(), "3".into());
    })
    .await;
    let (_, _, token) = app.owner("Idle", "idle@example.org").await;
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    // A WebSocket ping frame and a protocol ping arrive within the keep-alive interval.
    let mut frame_ping = false;
    let mut protocol_ping = false;
    while !(frame_ping && protocol_ping) {
        match tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .expect("pings in time")
        {
            Some(Ok(Message::Ping(_))) => frame_ping = true,
            Some(Ok(Message::Text(t))) => {
                assert_eq!(
                    serde_json::from_str::<Value>(&t).expect("json")["type"],
                    "ping"
                );
                protocol_ping = true;
            }
            other => panic!("{other:?}"),
        }
    }

    // A legacy client that only reads (its library answers ping frames) stays connected past
    // the idle timeout.
    let mut legacy = connect(&app, "graphql-ws").await;
    send(
        &mut legacy,
        json!({"type": "connection_init", "payload": {"token": token}}),
    )
    .await;
    assert_eq!(
        next(&mut legacy).await,
        Event::Msg(json!({"type": "connection_ack"}))
    );
    let alive_until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < alive_until {
        if let Ok(Some(Ok(Message::Close(frame)))) =
            tokio::time::timeout(Duration::from_millis(500), legacy.next()).await
        {
            panic!("a live legacy socket was closed: {frame:?}");
        }
    }

    // The first client stopped reading (so it answered nothing) while we waited: the server
    // closed it after the idle timeout, with 1000 (or the client finds the connection gone when
    // its library tries to answer the queued pings).
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        }
    }
    assert!(
        ws.send(Message::Text("{}".into())).await.is_err(),
        "the socket is closed"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_lets_the_server_stop() {
    let mut app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Shutdown", "shutdown@example.org").await;
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "1", "payload": {"query": CLOCK}}),
    )
    .await;
    let _ = next(&mut ws).await;
    let stopping = tokio::spawn(async move { app.stop().await });
    loop {
        match next(&mut ws).await {
            Event::Msg(_) => continue,
            Event::Closed(code, _) => {
                assert_eq!(code, 1001);
                break;
            }
        }
    }
    stopping.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn an_upgrade_without_a_graphql_subprotocol_is_refused() {
    let app = TestApp::spawn().await;
    let request = app.ws_url().into_client_request().expect("request");
    let err = connect_async(request).await.expect_err("refused");
    assert!(err.to_string().contains("400"), "{err}");
}
