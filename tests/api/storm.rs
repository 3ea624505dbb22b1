//! Reconnect storms: the listen queue (`CAREGRAPH_LISTEN_BACKLOG`) holds a fleet that connects
//! all at once, so none of it has its connect dropped and retried a second later.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use caregraph::{
    app::App,
    config::{Config, Vars},
};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    client_async_with_config,
    tungstenite::{client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig},
};

use crate::helpers::{TestApp, TestDb, base_vars};

/// The WebSockets of the storm.
const CLIENTS: usize = 5_000;

/// Held by each test here: the storm reads the kernel's count of listen drops, which the other
/// test raises on purpose.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The soft limit on open files, when the platform says (Linux: `/proc/self/limits`).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The kernel's count of connections dropped by listeners (`TcpExt: ListenDrops` in
/// `/proc/net/netstat`, which counts full accept queues among its causes), on Linux.
fn listen_drops() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if names.starts_with("TcpExt:") {
            let at = names.split_whitespace().position(|n| n == "ListenDrops")?;
            return values.split_whitespace().nth(at)?.parse().ok();
        }
    }
    None
}

/// What one client of the storm saw: the socket, the TCP connect's time and the whole upgrade's.
type Opened = (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    Duration,
    Duration,
);

/// Connects to `addr` and upgrades to `graphql-transport-ws` (no `connection_init`).
async fn open(addr: std::net::SocketAddr, url: String) -> Result<Opened, String> {
    let started = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connected = started.elapsed();
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // Small buffers, as the server's: 5,000 sockets of tungstenite's default 128 KiB each
    // would be most of a gigabyte.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (ws, response) = client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let protocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    if protocol != Some("graphql-transport-ws") {
        return Err(format!("upgrade: subprotocol {protocol:?}"));
    }
    Ok((ws, connected, started.elapsed()))
}

/// What the storm's clients saw.
#[derive(Debug, Default)]
struct Storm {
    upgraded: usize,
    failures: Vec<String>,
    elapsed: Duration,
    slowest_connect: Duration,
    slowest_upgrade: Duration,
    /// Connects that took a second or more: a dropped SYN is retried after one (Linux's initial
    /// retransmission time).
    retried: usize,
}

/// Opens [`CLIENTS`] WebSockets to `addr` at once from a runtime of their own (as a fleet of
/// devices has CPUs of its own), holding each until all are counted.
fn storm(addr: std::net::SocketAddr, url: String) -> Storm {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");
    runtime.block_on(async move {
        // Every client waits at the barrier, so the connects leave together.
        let go = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            let (go, url) = (go.clone(), url.clone());
            clients.push(tokio::spawn(async move {
                go.wait().await;
                tokio::time::timeout(Duration::from_secs(30), open(addr, url))
                    .await
                    .unwrap_or_else(|_| Err("no upgrade within 30 s".into()))
            }));
        }
        go.wait().await;
        let started = Instant::now();
        let mut storm = Storm::default();
        let mut open_sockets = Vec::with_capacity(CLIENTS);
        for client in clients {
            match client.await.expect("client task") {
                Ok((ws, connected, upgraded)) => {
                    storm.slowest_connect = storm.slowest_connect.max(connected);
                    storm.slowest_upgrade = storm.slowest_upgrade.max(upgraded);
                    if connected >= Duration::from_secs(1) {
                        storm.retried += 1;
                    }
                    open_sockets.push(ws);
                }
                Err(e) => storm.failures.push(e),
            }
        }
        storm.elapsed = started.elapsed();
        storm.upgraded = open_sockets.len();
        drop(open_sockets);
        storm
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_websockets_connecting_at_once_all_upgrade_and_none_is_dropped() {
    let _alone = ONE_AT_A_TIME.lock().await;
    if let Some(limit) = open_files_limit() {
        // Both ends of every socket are in this process, with the other tests' files.
        assert!(
            limit >= 12_000,
            "this test holds {CLIENTS} WebSockets from both ends: raise the open-file limit to at least 12000 (`ulimit -n 16384`); it is {limit}"
        );
    }
    // The default listen backlog; connection caps above the storm.
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_MAX_CONNECTIONS".into(), "6000".into());
        v.insert(
            "CAREGRAPH_MAX_CONNECTIONS_PER_ADDRESS".into(),
            "6000".into(),
        );
    })
    .await;
    let drops_before = listen_drops();
    let (addr, url) = (app.addr, app.ws_url());
    let storm = tokio::task::spawn_blocking(move || storm(addr, url))
        .await
        .expect("the storm's thread");
    let drops = listen_drops()
        .zip(drops_before)
        .map(|(after, before)| after.saturating_sub(before));
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let figures = format!(
        "{} of {CLIENTS} upgraded in {:?}; slowest connect {:?}, slowest upgrade {:?}; {} connects took 1 s or more; the kernel counted {drops:?} listen drops; net.core.somaxconn {somaxconn}",
        storm.upgraded, storm.elapsed, storm.slowest_connect, storm.slowest_upgrade, storm.retried
    );
    eprintln!("storm: {figures}");
    assert!(
        storm.failures.is_empty(),
        "{} of {CLIENTS} failed, e.g. {:?}; {figures}",
        storm.failures.len(),
        &storm.failures[..storm.failures.len().min(5)]
    );
    assert_eq!(storm.upgraded, CLIENTS);
    // A dropped connect shows twice: the kernel counts it, and its client waits a second for
    // the retransmission. Either alone can be something else on a busy machine (another
    // process's listener, a client task scheduled late), so it takes both where the counter is
    // readable.
    let dropped = storm.retried > 0 && drops.is_none_or(|d| d > 0);
    assert!(
        !dropped,
        "connects were dropped at a full listen queue and retried: {figures}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_configured_backlog_is_the_length_of_the_kernels_accept_queue() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let db = TestDb::new().await;
    let mut vars = base_vars(&db);
    vars.insert("CAREGRAPH_LISTEN_BACKLOG".into(), "4".into());
    let config = Config::from_vars(&Vars::new(move |k| vars.get(k).cloned())).expect("config");
    // Built and bound but not serving: nothing accepts, so connections stay in the queue.
    let app = Box::pin(App::build(config)).await.expect("app builds");
    let addr = app.local_addr();
    let mut queued = Vec::new();
    // Past the queue, a SYN is dropped and the connect waits a second for its retry.
    while let Ok(connected) =
        tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
    {
        queued.push(connected.expect("connect"));
        assert!(queued.len() <= 64, "the queue holds far more than 4");
    }
    // Linux completes backlog + 1 connections before it drops.
    assert!(
        (4..=5).contains(&queued.len()),
        "{} connections were queued",
        queued.len()
    );
    drop(app);
}
