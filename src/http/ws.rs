//! GraphQL over WebSocket, both subprotocols, implemented here rather than with
//! async-graphql's handler so that mobile clients get what the protocols promise:
//!
//! - `graphql-transport-ws`: 4400 bad message, 4401 subscribe before ack, 4403 rejected
//!   `connection_init`, 4408 no `connection_init` in time, 4409 duplicate operation id, 4429
//!   second init; validation errors as an `error` message; `ping` answered with `pong`; server
//!   `ping`s every keep-alive interval.
//! - legacy `graphql-ws` (subscriptions-transport-ws): `connection_error` then 4403 on a rejected
//!   init, `ka` keep-alives, `start`/`stop`/`data`/`error`/`complete`.
//!
//! Both: a silent socket is closed after the idle timeout, every stream ends when the access
//! token expires (close 4403, so the client reconnects with a fresh token), and shutdown closes
//! with 1001. Close reasons stay well under the 123-byte limit.

use std::{net::SocketAddr, pin::Pin};

use async_graphql::{Request as GqlRequest, Response as GqlResponse, Variables};
use axum::{
    extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{
    SinkExt, Stream, StreamExt,
    stream::{SplitSink, SplitStream},
};
use serde_json::{Value as Json, json};
use tokio::time::{Instant, sleep_until};
use tokio_stream::StreamMap;

use super::AppState;
use crate::{auth::Viewer, graphql::persisted};

/// The two subprotocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    TransportWs,
    /// `graphql-ws` (legacy subscriptions-transport-ws).
    LegacyWs,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::TransportWs => "graphql-transport-ws",
            Self::LegacyWs => "graphql-ws",
        }
    }
}

/// Upgrades to a WebSocket speaking the subprotocol the client offered (400 when it offered
/// neither).
pub fn upgrade(
    state: AppState,
    upgrade: WebSocketUpgrade,
    headers: &HeaderMap,
    client: SocketAddr,
    slot: Option<super::connections::Slot>,
) -> Response {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let protocol = if offered.iter().any(|p| p == "graphql-transport-ws") {
        Protocol::TransportWs
    } else if offered.iter().any(|p| p == "graphql-ws") {
        Protocol::LegacyWs
    } else {
        return (
            StatusCode::BAD_REQUEST,
            "offer the graphql-transport-ws or graphql-ws subprotocol",
        )
            .into_response();
    };
    // Native clients can put the token on the handshake; the init payload still wins.
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // When traces are exported, the handshake's `traceparent` parents each operation's span.
    let trace_parent = crate::telemetry::otel::client_context(headers);
    let request_id = super::graphql::request_id(headers);
    let tracker = state.sockets.clone();
    upgrade
        .protocols([protocol.name()])
        // Messages are GraphQL requests: the HTTP body limit applies to them too.
        .max_message_size(state.config.graphql.max_body_bytes)
        .max_frame_size(state.config.graphql.max_body_bytes)
        // Sockets are many and mostly idle: small buffers (the defaults are 128 KiB each way,
        // most of a connection's memory; 4 KiB read was a fifth of it), growing only for a
        // larger message (a subscribe message is a few hundred bytes); writes go out at once,
        // and a client that stops reading cannot make the server buffer without bound.
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .on_upgrade(move |socket| {
            let mut connection = Connection::new(state, protocol, client, header_token, request_id);
            connection.trace_parent = trace_parent;
            // Split here and handed over as they are (no `async` block around them): a future
            // keeps its arguments for its whole life, so the socket would be held twice.
            let (sink, incoming) = socket.split();
            connection.slot = slot;
            tracker.track_future(connection.run(sink, incoming))
        })
}

type OpStream = Pin<Box<dyn Stream<Item = Option<GqlResponse>> + Send>>;

/// Operations one socket may run at once.
const MAX_OPERATIONS: usize = 100;

enum Flow {
    Continue,
    Close(u16, &'static str),
}

struct Connection {
    state: AppState,
    protocol: Protocol,
    client: SocketAddr,
    header_token: Option<String>,
    request_id: Option<String>,
    init_received: bool,
    viewer: Option<Viewer>,
    ops: StreamMap<String, OpStream>,
    /// Each operation's audit scope, flushed after each of its deliveries.
    scopes: std::collections::HashMap<String, crate::audit::AuditScope>,
    first_sent: std::collections::HashSet<String>,
    /// The client's trace context from the handshake (empty unless traces are exported).
    trace_parent: opentelemetry::Context,
    /// The connection's place under the connection caps: the last field, and `self` the first
    /// argument of `run`, so it is given back only after the socket and its operations are
    /// dropped.
    slot: Option<super::connections::Slot>,
}

/// The token a `connection_init` payload carries, in the accepted spellings.
fn token_from_payload(payload: &Json) -> Option<String> {
    ["Authorization", "authorization", "authToken", "token"]
        .iter()
        .find_map(|key| payload.get(*key).and_then(Json::as_str))
        .map(str::to_owned)
}

/// A response that never executed (parse, validation, limits): sent as an `error` message.
fn is_request_error(response: &GqlResponse) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

impl Connection {
    fn new(
        state: AppState,
        protocol: Protocol,
        client: SocketAddr,
        header_token: Option<String>,
        request_id: Option<String>,
    ) -> Self {
        Self {
            state,
            protocol,
            client,
            header_token,
            request_id,
            init_received: false,
            viewer: None,
            ops: StreamMap::new(),
            scopes: Default::default(),
            first_sent: Default::default(),
            trace_parent: opentelemetry::Context::new(),
            slot: None,
        }
    }

    /// Serves the socket until it closes.
    async fn run(
        mut self,
        mut sink: SplitSink<WebSocket, Message>,
        mut incoming: SplitStream<WebSocket>,
    ) {
        let _open = self.state.services.metrics.websocket_open();
        let cfg = &self.state.config.graphql;
        let (init_timeout, idle_timeout) = (cfg.ws_init_timeout, cfg.ws_idle_timeout);
        let init_deadline = Instant::now() + init_timeout;
        let mut idle_deadline = Instant::now() + idle_timeout;
        let mut keepalive =
            tokio::time::interval_at(Instant::now() + cfg.ws_keepalive, cfg.ws_keepalive);
        let shutdown = self.state.shutdown.clone();

        let (code, reason) = loop {
            let expiry = self.token_deadline();
            let flow = tokio::select! {
                message = incoming.next() => match message {
                    None | Some(Ok(Message::Close(_))) => break (1000, "bye"),
                    // Over CAREGRAPH_MAX_BODY_BYTES: 1009 (message too big); any other read
                    // error means the peer is gone.
                    Some(Err(e)) if e.to_string().contains("Space limit exceeded") => {
                        break (1009, "Message too big")
                    }
                    Some(Err(_)) => break (1000, "bye"),
                    Some(Ok(message)) => {
                        idle_deadline = Instant::now() + idle_timeout;
                        // Boxed, as the deliveries and the last flush: this future lives as long
                        // as the socket, and would otherwise keep room for the largest thing it
                        // ever awaited (the token check's database reads) while it waits.
                        Box::pin(self.on_message(message, &mut sink)).await
                    }
                },
                Some((id, item)) = self.ops.next(), if !self.ops.is_empty() => {
                    Box::pin(self.on_result(id, item, &mut sink)).await
                }
                _ = keepalive.tick() => {
                    // A WebSocket ping frame too: every client answers it with a pong frame,
                    // which keeps a live connection from looking idle (legacy clients send
                    // nothing of their own).
                    if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break (1000, "bye");
                    }
                    let ka = match self.protocol {
                        Protocol::TransportWs => json!({"type": "ping"}),
                        Protocol::LegacyWs if self.viewer.is_some() => json!({"type": "ka"}),
                        Protocol::LegacyWs => continue,
                    };
                    send(&mut sink, ka).await
                }
                () = sleep_until(init_deadline), if !self.init_received => {
                    Flow::Close(4408, "Connection initialisation timeout")
                }
                () = sleep_until(idle_deadline) => Flow::Close(1000, "Idle timeout"),
                () = sleep_until(expiry.unwrap_or(idle_deadline)), if expiry.is_some() => {
                    Flow::Close(4403, "Forbidden: access token expired")
                }
                () = shutdown.cancelled() => Flow::Close(1001, "Server shutting down"),
            };
            if let Flow::Close(code, reason) = flow {
                break (code, reason);
            }
        };
        for scope in std::mem::take(&mut self.scopes).into_values() {
            Box::pin(self.state.services.audit.flush(&scope)).await;
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
        if code == 1009 {
            // The rest of the oversized message may still be arriving: closing the TCP socket
            // with unread bytes sends a reset, and the client would lose the 1009 frame (and
            // see 1006). Read on for a bounded time until the client closes its side.
            let drain = async {
                for _ in 0..4096 {
                    if incoming.next().await.is_none() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        }
    }

    fn token_deadline(&self) -> Option<Instant> {
        let expires = self.viewer.as_ref()?.token_expires_at?;
        let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
        Some(Instant::now() + left)
    }

    async fn on_message(
        &mut self,
        message: Message,
        sink: &mut SplitSink<WebSocket, Message>,
    ) -> Flow {
        let text = match message {
            Message::Text(text) => text,
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
            Message::Binary(_) | Message::Close(_) => return Flow::Close(4400, "Invalid message"),
        };
        let Ok(Json::Object(msg)) = serde_json::from_str::<Json>(&text) else {
            return Flow::Close(4400, "Invalid message: not a JSON object");
        };
        let kind = msg.get("type").and_then(Json::as_str).unwrap_or("");
        let payload = msg.get("payload").cloned().unwrap_or(Json::Null);
        let id = msg.get("id").and_then(Json::as_str).map(str::to_owned);
        match (self.protocol, kind) {
            (_, "connection_init") => self.on_init(payload, sink).await,
            (Protocol::TransportWs, "ping") => send(sink, json!({"type": "pong"})).await,
            (Protocol::TransportWs, "pong") => Flow::Continue,
            (Protocol::TransportWs, "subscribe") | (Protocol::LegacyWs, "start") => {
                self.on_subscribe(id, payload, sink).await
            }
            (Protocol::TransportWs, "complete") | (Protocol::LegacyWs, "stop") => {
                if let Some(id) = id {
                    self.ops.remove(&id);
                    self.first_sent.remove(&id);
                    if let Some(scope) = self.scopes.remove(&id) {
                        self.state.services.audit.flush(&scope).await;
                    }
                }
                Flow::Continue
            }
            (Protocol::LegacyWs, "connection_terminate") => Flow::Close(1000, "Terminated"),
            _ => Flow::Close(4400, "Invalid message type"),
        }
    }

    async fn on_init(&mut self, payload: Json, sink: &mut SplitSink<WebSocket, Message>) -> Flow {
        if self.init_received {
            return Flow::Close(4429, "Too many initialisation requests");
        }
        self.init_received = true;
        let token = token_from_payload(&payload).or_else(|| self.header_token.clone());
        let auth = self.state.services.accounts.authenticator();
        let viewer = match token {
            Some(token) => match auth.viewer_from_token(&token, Some(self.client.ip())).await {
                Ok(viewer) => Some(viewer),
                // Our own failure (database, JWKS) is not the client's: 4500, which clients
                // retry, instead of 4403, which they treat as final.
                Err(e) if e.code() == crate::error::ErrorCode::Internal => {
                    e.log_cause();
                    return Flow::Close(4500, "Internal server error");
                }
                Err(_) => None,
            },
            None => None,
        };
        let Some(viewer) = viewer else {
            if self.protocol == Protocol::LegacyWs {
                let _ = send(
                    sink,
                    json!({"type": "connection_error", "payload": {"message": "Forbidden"}}),
                )
                .await;
            }
            return Flow::Close(4403, "Forbidden");
        };
        self.viewer = Some(viewer);
        if let Flow::Close(c, r) = send(sink, json!({"type": "connection_ack"})).await {
            return Flow::Close(c, r);
        }
        match self.protocol {
            Protocol::LegacyWs => send(sink, json!({"type": "ka"})).await,
            Protocol::TransportWs => Flow::Continue,
        }
    }

    async fn on_subscribe(
        &mut self,
        id: Option<String>,
        payload: Json,
        sink: &mut SplitSink<WebSocket, Message>,
    ) -> Flow {
        let Some(viewer) = self.viewer.clone() else {
            return Flow::Close(4401, "Unauthorized");
        };
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return Flow::Close(4400, "Invalid message: missing id");
        };
        if self.ops.contains_key(&id) {
            return Flow::Close(4409, "Subscriber for this id already exists");
        }
        if self.ops.len() >= MAX_OPERATIONS {
            return Flow::Close(4400, "Too many operations on one socket");
        }
        let Some((mut request, document_id)) = request_from_payload(&payload) else {
            return Flow::Close(4400, "Invalid message: bad subscribe payload");
        };
        if let Err(e) = self
            .state
            .persisted
            .resolve(&mut request, document_id.as_deref())
        {
            let errors = serde_json::to_value(vec![e.to_server_error()]).unwrap_or(Json::Null);
            return send(sink, json!({"type": "error", "id": id, "payload": errors})).await;
        }
        // Each operation records under its own name, with the connection's request id.
        let actor = match viewer.user_opt() {
            Some(user) => crate::audit::AuditActor::User(user.id),
            None => crate::audit::AuditActor::Anonymous,
        };
        let scope = self.state.services.audit.scope(
            actor,
            self.request_id.clone(),
            Some(self.client.ip().to_string()),
        );
        scope.set_operation_name(request.operation_name.as_deref());
        let viewer = viewer.with_audit(scope.clone());
        if scope.is_recording() {
            self.scopes.insert(id.clone(), scope);
        }
        let stream = {
            // The operation's span is made in this call: under the handshake's trace context.
            let _parent =
                crate::telemetry::otel::enabled().then(|| self.trace_parent.clone().attach());
            self.state.graphql.execute_stream(request, viewer)
        }
        .map(Some)
        .chain(futures_util::stream::once(async { None }));
        self.ops.insert(id, Box::pin(stream));
        Flow::Continue
    }

    async fn on_result(
        &mut self,
        id: String,
        item: Option<GqlResponse>,
        sink: &mut SplitSink<WebSocket, Message>,
    ) -> Flow {
        let first = self.first_sent.insert(id.clone());
        // What producing this delivery read is handed to the audit queue now.
        if let Some(scope) = self.scopes.get(&id) {
            self.state.services.audit.flush(scope).await;
        }
        let Some(response) = item else {
            self.first_sent.remove(&id);
            self.scopes.remove(&id);
            return send(sink, json!({"type": "complete", "id": id})).await;
        };
        if first && is_request_error(&response) {
            self.ops.remove(&id);
            self.first_sent.remove(&id);
            self.scopes.remove(&id);
            let errors = serde_json::to_value(&response.errors).unwrap_or(Json::Null);
            return send(sink, json!({"type": "error", "id": id, "payload": errors})).await;
        }
        let kind = match self.protocol {
            Protocol::TransportWs => "next",
            Protocol::LegacyWs => "data",
        };
        let body = serde_json::to_value(&response).unwrap_or(Json::Null);
        send(sink, json!({"type": kind, "id": id, "payload": body})).await
    }
}

/// The request of a `subscribe` payload and its trusted `documentId`, if any.
fn request_from_payload(payload: &Json) -> Option<(GqlRequest, Option<String>)> {
    let document_id = persisted::document_id(payload.as_object()?).ok()?;
    let by_hash = payload
        .get("extensions")
        .is_some_and(|e| e.get("persistedQuery").is_some());
    let query = match payload.get("query") {
        Some(Json::String(query)) => query.as_str(),
        None | Some(Json::Null) if document_id.is_some() || by_hash => "",
        _ => return None,
    };
    let mut request = GqlRequest::new(query);
    match payload.get("operationName") {
        None | Some(Json::Null) => {}
        Some(Json::String(name)) => request = request.operation_name(name.clone()),
        Some(_) => return None,
    }
    match payload.get("variables") {
        None | Some(Json::Null) => {}
        Some(v @ Json::Object(_)) => request = request.variables(Variables::from_json(v.clone())),
        Some(_) => return None,
    }
    if let Some(Json::Object(map)) = payload.get("extensions") {
        for (k, v) in map {
            request
                .extensions
                .0
                .insert(k.clone(), async_graphql::Value::from_json(v.clone()).ok()?);
        }
    }
    Some((request, document_id))
}

async fn send(sink: &mut SplitSink<WebSocket, Message>, value: Json) -> Flow {
    match sink.send(Message::Text(value.to_string().into())).await {
        Ok(()) => Flow::Continue,
        Err(_) => Flow::Close(1000, "bye"),
    }
}
