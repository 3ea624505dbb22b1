//! Fake provider servers for the tests: real HTTP on 127.0.0.1, one axum app per provider with
//! in-memory state (so behaviour can be tested), a record of every request (so the exact wire
//! format can be asserted), and fault injection (outages, rate limits, slow answers).

pub mod ethora;
pub mod sendbird;
pub mod stream;
pub mod twilio;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use caregraph::{
    outbox::{Entry, enqueue},
    providers::{
        chat::{ChannelRef, ChatProvider},
        http::Resilience,
    },
};

use crate::helpers::TestApp;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The raw query string ("" when none).
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The body as JSON (Null when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&self.query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// What the fake does instead of answering.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status with this body (and headers) to the next `count` requests.
    Respond {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        count: usize,
    },
    /// Wait this long before answering the next `count` requests.
    Delay { by: Duration, count: usize },
}

/// Shared control of a running fake.
#[derive(Clone, Default)]
pub struct Control {
    recorded: Arc<Mutex<Vec<Recorded>>>,
    faults: Arc<Mutex<Vec<Fault>>>,
}

impl Control {
    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("lock").clone()
    }

    /// Requests whose method and path match.
    pub fn calls(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method.as_str() == method && r.path == path)
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        self.recorded.lock().expect("lock").clear();
    }

    /// Queues a fault.
    pub fn inject(&self, fault: Fault) {
        self.faults.lock().expect("lock").push(fault);
    }

    /// Answers `status` with `body` to the next `count` requests.
    pub fn fail(&self, status: u16, body: &str, count: usize) {
        self.inject(Fault::Respond {
            status,
            body: body.to_owned(),
            headers: Vec::new(),
            count,
        });
    }

    /// Drops every queued fault.
    pub fn heal(&self) {
        self.faults.lock().expect("lock").clear();
    }

    fn next_fault(&self) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("lock");
        let fault = faults.first_mut()?;
        let left = match fault {
            Fault::Respond { count, .. } | Fault::Delay { count, .. } => {
                *count -= 1;
                *count
            }
        };
        let out = fault.clone();
        if left == 0 {
            faults.remove(0);
        }
        Some(out)
    }
}

async fn record_and_inject(
    State(control): State<Control>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    // A faulted request does not count as received: the provider never acted on it.
    match control.next_fault() {
        Some(Fault::Respond {
            status,
            body,
            headers,
            ..
        }) => {
            let mut response =
                (StatusCode::from_u16(status).expect("status"), body).into_response();
            for (k, v) in headers {
                response.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    v.parse().expect("value"),
                );
            }
            return response;
        }
        Some(Fault::Delay { by, .. }) => tokio::time::sleep(by).await,
        None => {}
    }
    control.recorded.lock().expect("lock").push(Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers.clone(),
        body: bytes.clone(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Serves `router` on a free loopback port with recording and fault injection.
pub async fn serve(router: Router, control: Control) -> SocketAddr {
    let app = router.layer(middleware::from_fn_with_state(control, record_and_inject));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// What the shared behavioural suite needs from every provider's fake (and from the local
/// provider): the adapter pointed at it, and a way to act as a client SDK would.
pub trait FakeProvider: Send + Sync {
    /// The request log and fault injection.
    fn control(&self) -> &Control;

    /// The real adapter, pointed at this fake.
    fn adapter(&self, resilience: Resilience) -> Arc<dyn ChatProvider>;

    /// The variables that point a `TestApp` at this fake (`CAREGRAPH_CHAT_PROVIDER`, base URL,
    /// keys).
    fn vars(&self) -> Vec<(String, String)>;

    /// A member posts a message as a client SDK would; `Err` when the channel is frozen, gone,
    /// or the user is no member.
    fn user_posts(&self, channel: &ChannelRef, user: &str, text: &str) -> Result<(), String>;

    /// The channel's custom data as the provider stores it (`None` when there is no channel).
    fn metadata(&self, channel: &ChannelRef) -> Option<serde_json::Map<String, serde_json::Value>>;

    /// The channel's member ids (`None` when there is no channel).
    fn members(&self, channel: &ChannelRef) -> Option<Vec<String>>;
}

/// Writes `entries` to `app`'s outbox in a transaction of their own and delivers them at once
/// through the app's configured provider; whether every one was delivered.
pub async fn deliver_through_outbox(app: &TestApp, entries: &[Entry]) -> bool {
    let txn = caregraph::db::begin(&app.state.services.db)
        .await
        .expect("begin");
    let keys = enqueue(&txn, entries, chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    app.state
        .services
        .outbox
        .deliver_now(&keys)
        .await
        .expect("deliver")
}
