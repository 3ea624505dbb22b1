//! `fanout`: N WebSocket subscribers of one chat session's status on one caregraph process (the
//! real binary, started fresh per N on a temporary SQLite file), then one close fanned out to
//! all: the time until the first, median and last subscriber hears it, and the server's
//! resident memory per connection (VmRSS after subscribing minus before, over N).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Barrier, mpsc};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

struct Server {
    child: Child,
    base: String,
    token: String,
    dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    fn start() -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin = exe.with_file_name("caregraph");
        let dir = std::env::temp_dir().join(format!(
            "caregraph-fanout-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new(&bin)
            .current_dir(&dir)
            .env_remove("CAREGRAPH_DATABASE_URL")
            .env_remove("CAREGRAPH_REDIS_URL")
            .env("CAREGRAPH_BIND", "127.0.0.1:0")
            .env("CAREGRAPH_WS_IDLE_TIMEOUT_SECONDS", "600")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (build it with --release)", bin.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("/graphiql#token=") {
                    let _ = tx.send(line.trim().to_owned());
                }
            }
        });
        let link = rx
            .recv_timeout(Duration::from_secs(60))
            .context("the server printed no GraphiQL link")?;
        let (base, token) = link.split_once("/graphiql#token=").context("link")?;
        let base = base[base.find("http").context("url")?..].to_owned();
        Ok(Self {
            child,
            base,
            token: token.to_owned(),
            dir,
        })
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")
    }

    async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await?
            .json()
            .await?;
        if !body["errors"].is_null() {
            bail!("{query}: {body}");
        }
        Ok(body["data"].clone())
    }
}

/// One subscriber: connects, subscribes, reports when its first event arrived, then waits for
/// the close and reports when it arrived.
async fn subscriber(
    url: String,
    token: String,
    session: String,
    subscribed: mpsc::Sender<anyhow::Result<()>>,
    go: Arc<Barrier>,
) -> anyhow::Result<Instant> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = connect_async(request).await?;
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    ))
    .await?;
    ws.send(send(json!({"type": "subscribe", "id": "1", "payload": {
        "query": "subscription($s: ID!) { chatSessionStatus(sessionId: $s) { status reason } }",
        "variables": {"s": session}}})))
        .await?;
    let mut first = true;
    loop {
        let Some(message) = ws.next().await else {
            bail!("the socket closed");
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("next") if first => {
                first = false;
                let _ = subscribed.send(Ok(())).await;
                go.wait().await;
            }
            Some("next") => {
                let at = Instant::now();
                let reason = &value["payload"]["data"]["chatSessionStatus"]["reason"];
                if reason != "CLOSED_BY_USER" {
                    bail!("unexpected event {value}");
                }
                let _ = ws.close(None).await;
                return Ok(at);
            }
            Some("ping") => ws.send(send(json!({"type": "pong"}))).await?,
            Some("connection_ack" | "pong") => {}
            _ => bail!("unexpected message {value}"),
        }
    }
}

async fn one(n: usize) -> anyhow::Result<()> {
    let server = Server::start()?;
    let me = server
        .gql(
            "{ viewer { memberships { organization { id } } } }",
            json!({}),
        )
        .await?;
    let org = me["viewer"]["memberships"][0]["organization"]["id"].clone();
    let colleagues = server
        .gql(
            "query($o: ID!) { colleagues(orgId: $o, first: 2) { edges { node { user { id } } } } }",
            json!({"o": org}),
        )
        .await?;
    let owner =
        server.gql("{ viewer { user { id } } }", json!({})).await?["viewer"]["user"]["id"].clone();
    let colleague = colleagues["colleagues"]["edges"]
        .as_array()
        .context("edges")?
        .iter()
        .map(|e| e["node"]["user"]["id"].clone())
        .find(|u| *u != owner)
        .context("a colleague")?;
    let session = server
        .gql(
            "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id } }",
            json!({"o": org, "c": colleague}),
        )
        .await?["openDirectChat"]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib()?;

    let url = format!("{}/graphql", server.base.replacen("http", "ws", 1));
    let (tx, mut rx) = mpsc::channel(n);
    let go = Arc::new(Barrier::new(n + 1));
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    // Connect in waves, so the listen backlog is never the bottleneck.
    for wave in (0..n).collect::<Vec<_>>().chunks(250) {
        for _ in wave {
            tasks.push(tokio::spawn(subscriber(
                url.clone(),
                server.token.clone(),
                session.clone(),
                tx.clone(),
                go.clone(),
            )));
        }
        for _ in wave {
            rx.recv().await.context("a subscriber stopped")??;
        }
    }
    let connected = connecting.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib()?;
    go.wait().await;

    let closing = Instant::now();
    server
        .gql(
            "mutation($s: ID!) { closeChatSession(sessionId: $s) { status } }",
            json!({"s": session}),
        )
        .await?;
    let mut delays = Vec::with_capacity(n);
    for task in tasks {
        let at = task.await??;
        delays.push(at.saturating_duration_since(closing));
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{n:>6} subscribers | connected in {:>6.0} ms | close heard by first {:>7.1} ms, median {:>7.1} ms, last {:>7.1} ms | server RSS {:>6} -> {:>7} KiB = {:>5.1} KiB per connection",
        ms(connected),
        ms(delays[0]),
        ms(delays[n / 2]),
        ms(delays[n - 1]),
        before,
        after,
        after.saturating_sub(before) as f64 / n as f64,
    );
    Ok(())
}

/// Runs the fan-out benchmark for each subscriber count, side by side.
pub async fn run(counts: &[usize]) -> anyhow::Result<()> {
    println!(
        "fan-out of one chat-session close to N WebSocket subscribers (graphql-transport-ws), one caregraph process per N:"
    );
    for &n in counts {
        if n == 0 {
            bail!("subscriber counts must be positive");
        }
        Box::pin(one(n)).await?;
    }
    Ok(())
}
