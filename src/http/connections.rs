//! The server's accept loop: connection hygiene that `axum::serve` lacks.
//!
//! - At most `CAREGRAPH_MAX_CONNECTIONS` connections at once, and at most
//!   `CAREGRAPH_MAX_CONNECTIONS_PER_ADDRESS` from one client address; a connection over the
//!   per-address cap is closed at once (one warning every 10 s says how many were). At the global
//!   cap, the oldest connection that has not yet sent a request makes room for the new one (a
//!   flood of silent connections cannot keep a health check out); with none such, the new one is
//!   closed. WebSockets keep their connection's slot for as long as they are open. The global
//!   cap is the file-descriptor budget: kept well under the process's limit, accepting never
//!   fails for want of descriptors, so `/healthz` and `/readyz` keep answering.
//! - A connection must send a request's headers within `CAREGRAPH_HEADER_READ_TIMEOUT_SECONDS`
//!   of opening (a silent or trickling client is dropped), and a keep-alive connection with no
//!   request in flight closes after `CAREGRAPH_HTTP_IDLE_TIMEOUT_SECONDS` (a request is in flight
//!   until its response body has been sent: a long download is not idle).
//! - Accepting comes before serving: a thread of its own drains the kernel's listen queue
//!   (`CAREGRAPH_LISTEN_BACKLOG`) however busy the runtime is, so a reconnect storm waits in
//!   tasks, not in a queue whose overflow drops connects.
//! - On shutdown the listener closes, idle connections close, and requests in flight finish.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

/// The connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections at once.
    pub max_connections: usize,
    /// Connections at once from one address.
    pub max_per_address: usize,
    /// Time to send the first request's headers.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit without a request.
    pub idle_timeout: Duration,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    /// Open connections by id (ids grow, so the first is the oldest), for eviction.
    open: std::collections::BTreeMap<u64, (Arc<Activity>, CancellationToken)>,
    next_id: u64,
}

/// The open connections, counted globally and per address.
#[derive(Clone)]
struct Gate {
    limits: Limits,
    counts: Arc<Mutex<Counts>>,
}

/// A connection's slot; the last clone dropped frees it. A WebSocket upgrade holds a clone (it
/// is in the request's extensions), so an open socket keeps its slot.
#[derive(Clone)]
pub struct Slot(Arc<SlotInner>);

struct SlotInner {
    gate: Gate,
    address: IpAddr,
    id: u64,
    activity: Arc<Activity>,
    /// Cancelled when the connection is evicted to make room.
    evict: CancellationToken,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.total = counts.total.saturating_sub(1);
        counts.open.remove(&self.id);
        if let Some(n) = counts.per_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_address.remove(&self.address);
            }
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a new connection from `address`, or `None` over a cap. At the global cap the
    /// oldest connection that has sent no request yet is evicted to make room (the total may
    /// then pass the cap until it has closed, a matter of milliseconds).
    fn admit(&self, address: IpAddr) -> Option<Slot> {
        let mut counts = self.lock();
        if counts
            .per_address
            .get(&address)
            .is_some_and(|n| *n >= self.limits.max_per_address)
        {
            return None;
        }
        if counts.total >= self.limits.max_connections {
            let silent = counts
                .open
                .iter()
                .find(|(_, (activity, _))| activity.silent())
                .map(|(id, _)| *id)?;
            if let Some((_, evict)) = counts.open.remove(&silent) {
                evict.cancel();
            }
        }
        *counts.per_address.entry(address).or_insert(0) += 1;
        counts.total += 1;
        counts.next_id += 1;
        let id = counts.next_id;
        let activity = Arc::new(Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            served_one: AtomicBool::new(false),
        });
        let evict = CancellationToken::new();
        counts.open.insert(id, (activity.clone(), evict.clone()));
        drop(counts);
        Some(Slot(Arc::new(SlotInner {
            gate: self.clone(),
            address,
            id,
            activity,
            evict,
        })))
    }
}

/// Logs at most one line every 10 s about something that may happen thousands of times.
struct RareLog {
    last: Mutex<Option<Instant>>,
    skipped: AtomicUsize,
}

impl RareLog {
    const fn new() -> Self {
        Self {
            last: Mutex::new(None),
            skipped: AtomicUsize::new(0),
        }
    }

    /// Counts one occurrence; returns how many happened since the last line when it is time for
    /// another.
    fn due(&self) -> Option<usize> {
        let count = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return None;
        }
        *last = Some(Instant::now());
        self.skipped.store(0, Ordering::Relaxed);
        Some(count)
    }
}

static REFUSED: RareLog = RareLog::new();
static ACCEPT_FAILED: RareLog = RareLog::new();

/// What one connection did last, for the idle timeouts.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last request's start or end.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    served_one: AtomicBool,
}

impl Activity {
    /// Whether the connection has not sent a request yet (and has none in flight).
    fn silent(&self) -> bool {
        !self.served_one.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Relaxed) == 0
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Whether the connection has been quiet past its allowance.
    fn expired(&self, limits: &Limits) -> bool {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let allowance = if self.served_one.load(Ordering::Relaxed) {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        let quiet = self
            .started
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
        quiet > allowance
    }
}

/// Ends a request's count when its response has been sent (the response body holds it: see
/// [`CountedBody`]), or when the request is dropped.
struct InFlight(Arc<Activity>);

/// A response body that keeps its request counted in flight until hyper has sent it or dropped
/// it, so a long streamed download (an audit export) is never taken for an idle connection.
struct CountedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish and returns when every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let gate = Gate {
        limits,
        counts: Arc::default(),
    };
    let connections = TaskTracker::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Accepting has a thread of its own, so a connect never waits in the kernel's queue behind
    // the runtime's tasks: a connection waiting there costs a dropped connect (and a client's
    // one-second retry) once the queue is full, one accepted costs a task. The thread stops when
    // `shutdown` is cancelled or this future is dropped (its runtime gone).
    let stop = shutdown.child_token();
    let _stop_when_dropped = stop.clone().drop_guard();
    let accepting = Accepting {
        gate,
        builder,
        router,
        connections: connections.clone(),
        runtime: tokio::runtime::Handle::current(),
        shutdown,
        stop,
    };
    let (stopped, accept_ended) = tokio::sync::oneshot::channel::<()>();
    let listener = listener.into_std();
    let spawned = listener.and_then(|listener| {
        std::thread::Builder::new()
            .name("caregraph-accept".into())
            .spawn(move || {
                accepting.run(listener);
                drop(stopped);
            })
    });
    match spawned {
        Ok(_) => {
            let _ = accept_ended.await;
        }
        Err(e) => tracing::error!(error = %e, "the accept thread could not start"),
    }
    connections.close();
    connections.wait().await;
}

/// What the accept thread needs: the listener's side of [`serve`].
struct Accepting {
    gate: Gate,
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    connections: TaskTracker,
    /// The server's runtime, where connections are served.
    runtime: tokio::runtime::Handle,
    /// The server's shutdown, handed to each connection.
    shutdown: CancellationToken,
    /// Cancelled at shutdown or when [`serve`] is dropped.
    stop: CancellationToken,
}

impl Accepting {
    /// Accepts on `listener` until stopped, on a single-threaded runtime of the calling thread.
    fn run(self, listener: std::net::TcpListener) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "the accept thread's runtime could not start");
                return;
            }
        };
        runtime.block_on(self.accept(listener));
    }

    async fn accept(self, listener: std::net::TcpListener) {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "the listener could not be registered");
                return;
            }
        };
        let limits = self.gate.limits;
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        if let Some(n) = ACCEPT_FAILED.due() {
                            tracing::warn!(error = %e, failures = n, "accepting a connection failed");
                        }
                        // Out of descriptors, most likely: give connections time to close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = self.stop.cancelled() => break,
            };
            let Some(slot) = self.gate.admit(peer.ip()) else {
                drop(stream);
                if let Some(n) = REFUSED.due() {
                    tracing::warn!(
                        refused = n,
                        max_connections = limits.max_connections,
                        max_per_address = limits.max_per_address,
                        "connections over CAREGRAPH_MAX_CONNECTIONS(_PER_ADDRESS) were closed"
                    );
                }
                continue;
            };
            // The socket moves to the server's runtime: off this thread's reactor, onto its.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "an accepted connection could not be handed over");
                    continue;
                }
            };
            let (builder, router, shutdown) = (
                self.builder.clone(),
                self.router.clone(),
                self.shutdown.clone(),
            );
            self.connections.spawn_on(
                async move {
                    match tokio::net::TcpStream::from_std(stream) {
                        Ok(stream) => connection(builder, stream, peer, slot, router, shutdown).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "an accepted connection could not be registered");
                        }
                    }
                },
                &self.runtime,
            );
        }
    }
}

async fn connection(
    builder: Arc<Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    router: Router,
    shutdown: CancellationToken,
) {
    let limits = slot.0.gate.limits;
    let activity = slot.0.activity.clone();
    let evicted = slot.0.evict.clone();
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        seen.in_flight.fetch_add(1, Ordering::Relaxed);
        seen.served_one.store(true, Ordering::Relaxed);
        seen.touch();
        let in_flight = InFlight(seen.clone());
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(slot.clone());
        let router = router.clone();
        async move {
            let response = router
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {});
            Ok::<_, Infallible>(response.map(|inner| CountedBody {
                inner,
                _in_flight: in_flight,
            }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut closing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            // Evicted for a newer connection: it never sent a request, so nothing is lost.
            () = evicted.cancelled() => break,
            _ = tick.tick() => {
                if let Some(since) = closing_since {
                    // Asked to close and still quiet: drop it (nothing is in flight).
                    if since.elapsed() > Duration::from_secs(1)
                        && activity.in_flight.load(Ordering::Relaxed) == 0
                    {
                        break;
                    }
                } else if activity.expired(&limits) {
                    conn.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
            () = shutdown.cancelled(), if closing_since.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
        }
    }
}
