//! `fanout`: N WebSocket subscribers of one chat session's status on one caregraph process (the
//! real binary, started fresh per N on a temporary SQLite file), then one close fanned out to
//! all.
//!
//! Everything is prepared before the clock starts: the HTTP client with a warm keep-alive
//! connection, the close request built, every subscriber connected, subscribed (its first event
//! received) and its task waiting on its socket. The clock starts just before the close request
//! is sent; each subscriber notes when the close reached it, relative to that instant, and keeps
//! its socket open until all have heard (or [`HEAR_TIMEOUT`] passes), so no client closes a
//! socket while the fan-out is still running. Reported: the first, median and last arrival, when
//! the close mutation was answered, the server's CPU time (user + system, `/proc/<pid>/stat`)
//! from just before the send until the last arrival, and the server's resident memory per
//! connection (VmRSS after subscribing minus before, over N).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::server::Server;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

/// How long all subscribers may take to hear the close.
const HEAR_TIMEOUT: Duration = Duration::from_secs(60);

/// What a subscriber task tells the benchmark.
enum Report {
    /// Connected, subscribed, and the current status received.
    Subscribed,
    /// The close arrived at this instant.
    Heard(Instant),
    Failed(anyhow::Error),
}

/// One subscriber: connects, subscribes, reports when its first event (the current status)
/// arrived, then waits on its socket for the close and reports when it arrived; keeps the socket
/// open (answering pings) until `release`, then closes it.
async fn subscriber(
    url: String,
    token: String,
    session: String,
    reports: mpsc::UnboundedSender<Report>,
    mut release: watch::Receiver<bool>,
) -> anyhow::Result<()> {
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
    let mut subscribed = false;
    let mut heard = false;
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = release.wait_for(|r| *r) => break,
        };
        let Some(message) = message else {
            if heard {
                // Nothing left to hear; the server may end the stream after a close.
                return Ok(());
            }
            bail!("the socket closed");
        };
        let Message::Text(text) = message? else {
            continue;
        };
        let at = Instant::now();
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("next") if !subscribed => {
                subscribed = true;
                let _ = reports.send(Report::Subscribed);
            }
            Some("next") if !heard => {
                let reason = &value["payload"]["data"]["chatSessionStatus"]["reason"];
                if reason != "CLOSED_BY_USER" {
                    bail!("unexpected event {value}");
                }
                heard = true;
                let _ = reports.send(Report::Heard(at));
            }
            Some("ping") => ws.send(send(json!({"type": "pong"}))).await?,
            Some("connection_ack" | "pong") => {}
            Some("next" | "complete") if heard => {}
            _ => bail!("unexpected message {value}"),
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

async fn one(n: usize) -> anyhow::Result<()> {
    let cap = (n + 64).to_string();
    let server = Server::start(&[
        ("CAREGRAPH_WS_IDLE_TIMEOUT_SECONDS", "600"),
        ("CAREGRAPH_MAX_CONNECTIONS", &cap),
        ("CAREGRAPH_MAX_CONNECTIONS_PER_ADDRESS", &cap),
    ])?;
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
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (release_tx, release) = watch::channel(false);
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    // Connect in waves, so the listen backlog is never the bottleneck.
    for wave in (0..n).collect::<Vec<_>>().chunks(250) {
        for _ in wave {
            let reports_tx = reports_tx.clone();
            let work = subscriber(
                url.clone(),
                server.token.clone(),
                session.clone(),
                reports_tx.clone(),
                release.clone(),
            );
            tasks.push(tokio::spawn(async move {
                if let Err(e) = work.await {
                    let _ = reports_tx.send(Report::Failed(e));
                }
            }));
        }
        for _ in wave {
            match reports.recv().await.context("a subscriber stopped")? {
                Report::Subscribed => {}
                Report::Heard(_) => bail!("a close heard before it was sent"),
                Report::Failed(e) => return Err(e.context("a subscriber")),
            }
        }
    }
    drop(reports_tx);
    let connected = connecting.elapsed();
    // Let every task settle into waiting on its socket, and the server's memory settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib()?;

    let close = server.request(
        "mutation($s: ID!) { closeChatSession(sessionId: $s) { status } }",
        json!({"s": session}),
    )?;
    // Warm the keep-alive connection the close will be sent on.
    server.gql("{ viewer { user { id } } }", json!({})).await?;
    let cpu_before = server.cpu()?;

    let sent = Instant::now();
    let answer = async {
        server
            .execute(close)
            .await
            .context("closeChatSession")
            .map(|_| sent.elapsed())
    };
    let hear = async {
        let mut arrivals = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::from_std(sent + HEAR_TIMEOUT);
        while arrivals.len() < n {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(Report::Heard(at))) => arrivals.push(at.saturating_duration_since(sent)),
                Ok(Some(Report::Subscribed)) => bail!("a subscriber subscribed twice"),
                Ok(Some(Report::Failed(e))) => return Err(e.context("a subscriber")),
                Ok(None) => bail!("the subscribers stopped"),
                Err(_) => bail!(
                    "only {} of {n} subscribers heard the close within {HEAR_TIMEOUT:?}",
                    arrivals.len()
                ),
            }
        }
        Ok(arrivals)
    };
    let (answered, arrivals) = tokio::join!(answer, hear);
    let cpu = server.cpu()?.saturating_sub(cpu_before);
    let _ = release_tx.send(true);
    let (answered, mut arrivals) = (answered?, arrivals?);
    for task in tasks {
        task.await?;
    }
    while let Ok(report) = reports.try_recv() {
        if let Report::Failed(e) = report {
            return Err(e.context("a subscriber while closing"));
        }
    }

    arrivals.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{n:>6} subscribers | connected in {:>6.0} ms | from the close request: answered {:>6.1} ms, heard by first {:>7.1} ms, median {:>7.1} ms, last {:>7.1} ms | server CPU {:>5.0} ms | server RSS {:>6} -> {:>7} KiB = {:>5.1} KiB per connection",
        ms(connected),
        ms(answered),
        ms(arrivals[0]),
        ms(arrivals[n / 2]),
        ms(arrivals[n - 1]),
        ms(cpu),
        before,
        after,
        after.saturating_sub(before) as f64 / n as f64,
    );
    Ok(())
}

/// Runs the fan-out benchmark for each subscriber count, side by side.
pub async fn run(counts: &[usize]) -> anyhow::Result<()> {
    println!(
        "fan-out of one chat-session close to N WebSocket subscribers (graphql-transport-ws), one caregraph process per N; times from the moment the close request is sent, server CPU (user + system, 10 ms ticks) from then until the last subscriber heard:"
    );
    for &n in counts {
        if n == 0 {
            bail!("subscriber counts must be positive");
        }
        Box::pin(one(n)).await?;
    }
    Ok(())
}
