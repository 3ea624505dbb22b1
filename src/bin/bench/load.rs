//! A closed-loop HTTP load driver for the GraphQL workloads: N concurrent keep-alive connections
//! (one HTTP/1.1 client each), each sending its next request as soon as the previous answer
//! arrived, for a warm-up and then a measured window. Around the window it reads the server's
//! CPU time (`/proc`), its SQL statement counter (`/metrics`) and, every 250 ms, its resident
//! memory. Latencies go into a bounded histogram (1/128 relative precision), not a list.
//!
//! Every answer is checked: HTTP 200, a `data` member and no `errors` member; anything else is
//! an error, reported with the first one's text.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::body::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, de::IgnoredAny};
use serde_json::{Value, json};

use super::server::Server;

/// How often the server's memory is sampled during the window.
const RSS_EVERY: Duration = Duration::from_millis(250);

/// The longest error text kept.
const ERROR_TEXT_MAX: usize = 400;

/// The load settings of the GraphQL workloads (`dashboard`, `chats`, `appointment`).
#[derive(clap::Args)]
pub struct LoadArgs {
    /// Also run on this PostgreSQL server (a fresh database is created and dropped).
    #[arg(long, env = "CAREGRAPH_BENCH_POSTGRES_URL")]
    pub postgres: Option<String>,
    /// Concurrent connections, one measurement each.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64])]
    pub conns: Vec<usize>,
    /// Seconds per measured window.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Seconds of warm-up before each window.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
}

/// A JSON request body: `query`, `variables`.
pub fn graphql_body(query: &str, variables: Value) -> anyhow::Result<Bytes> {
    Ok(serde_json::to_vec(&json!({"query": query, "variables": variables}))?.into())
}

/// A column of [`table`] besides the common ones: a counter read at the window's edges (its
/// delta is [`Measurement::extra`]) and how to show it.
pub struct Column<'a> {
    /// The column's header.
    pub header: &'a str,
    /// The counter.
    pub counter: &'a dyn Fn() -> u64,
    /// The cell of a measurement.
    pub cell: &'a dyn Fn(&Measurement) -> String,
}

/// Measures `bodies` at each of `args.conns`, printing a table row after each (and `column`
/// when given) once the server's idle SQL rate is known; fails at the first measurement with an
/// error.
pub async fn table(
    server: &Server,
    bodies: Vec<Bytes>,
    args: &LoadArgs,
    column: Option<&Column<'_>>,
) -> anyhow::Result<()> {
    let idle = idle_sql_rate(server, IDLE_SQL_OVER).await?;
    println!(
        "{} s per measurement after {} s of warm-up; server idle SQL rate {idle:.1} statements/s (taken off SQL/req)",
        args.seconds, args.warmup
    );
    println!(
        "{}{}",
        Measurement::header(),
        column.map_or(String::new(), |c| format!(" {}", c.header))
    );
    for &conns in &args.conns {
        let plan = Plan {
            bodies: bodies.clone(),
            conns,
            warmup: Duration::from_secs(args.warmup),
            window: Duration::from_secs(args.seconds),
        };
        let m = measure(server, &plan, idle, column.map(|c| c.counter)).await?;
        println!(
            "{}{}",
            m.row(),
            column.map_or(String::new(), |c| format!(" {}", (c.cell)(&m)))
        );
        m.ensure_no_errors()?;
    }
    Ok(())
}

/// How long the server's background SQL rate is measured, idle.
const IDLE_SQL_OVER: Duration = Duration::from_secs(5);

/// What one measurement runs.
pub struct Plan {
    /// Request bodies (JSON); connection `i` sends them in turn, starting at `i`.
    pub bodies: Vec<Bytes>,
    /// Concurrent connections.
    pub conns: usize,
    /// Requests before the window, not counted.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
}

/// What one measurement found.
pub struct Measurement {
    /// Concurrent connections.
    pub conns: usize,
    /// Answers completed within the window (errors included).
    pub requests: u64,
    /// Failed requests, during the warm-up or the window.
    pub errors: u64,
    /// The first failure's text.
    pub first_error: Option<String>,
    /// The window as measured.
    pub elapsed: Duration,
    /// Latencies of the window's answers.
    pub latency: Histogram,
    /// Server CPU time (user + system) over the window.
    pub cpu: Duration,
    /// SQL statements over the window, the idle background rate taken off.
    pub sql: f64,
    /// The server's largest resident memory seen during the window, KiB.
    pub rss_kib: u64,
    /// The delta of the extra counter over the window (0 without one).
    pub extra: u64,
}

impl Measurement {
    /// Answers per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU time per answer, µs.
    pub fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    /// SQL statements per answer.
    pub fn sql_per_request(&self) -> f64 {
        self.sql / self.requests.max(1) as f64
    }

    /// The header of [`Self::row`].
    pub fn header() -> String {
        format!(
            "{:>6} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "conns", "req/s", "CPU-µs/req", "p50 ms", "p99 ms", "RSS MiB", "SQL/req", "errors"
        )
    }

    /// One table row.
    pub fn row(&self) -> String {
        format!(
            "{:>6} {:>9.0} {:>11.0} {:>8.2} {:>8.2} {:>8.1} {:>8.1} {:>7}",
            self.conns,
            self.rps(),
            self.cpu_us_per_request(),
            self.latency.percentile(0.50) as f64 / 1000.0,
            self.latency.percentile(0.99) as f64 / 1000.0,
            self.rss_kib as f64 / 1024.0,
            self.sql_per_request(),
            self.errors
        )
    }

    /// An error when any request failed, with the first failure.
    pub fn ensure_no_errors(&self) -> anyhow::Result<()> {
        if self.errors > 0 {
            bail!(
                "{} of the requests at {} connections failed; the first: {}",
                self.errors,
                self.conns,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        Ok(())
    }
}

/// The server's SQL statements per second while no request runs (its background workers), over
/// `over`.
pub async fn idle_sql_rate(server: &Server, over: Duration) -> anyhow::Result<f64> {
    let (before, t0) = (server.sql_statements().await?, Instant::now());
    tokio::time::sleep(over).await;
    let (after, t1) = (server.sql_statements().await?, Instant::now());
    Ok((after - before) / t1.duration_since(t0).as_secs_f64())
}

/// What a connection reports when it stops.
struct Tally {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    latency: Histogram,
}

/// Runs `plan` against `server`'s `/graphql` with its OWNER's token; `idle_sql` is the server's
/// background statement rate per second ([`idle_sql_rate`]); `counter`, when given, is read at
/// the window's edges.
pub async fn measure(
    server: &Server,
    plan: &Plan,
    idle_sql: f64,
    counter: Option<&dyn Fn() -> u64>,
) -> anyhow::Result<Measurement> {
    let read = || counter.map_or(0, |c| c());
    if plan.conns == 0 || plan.bodies.is_empty() {
        bail!("a load needs connections and a request");
    }
    let url: Arc<str> = format!("{}/graphql", server.base).into();
    let auth = HeaderValue::from_str(&format!("Bearer {}", server.token))?;
    let bodies: Arc<[Bytes]> = plan.bodies.clone().into();
    let start = Instant::now() + plan.warmup;
    let end = start + plan.window;
    let mut workers = Vec::with_capacity(plan.conns);
    for i in 0..plan.conns {
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        workers.push(tokio::spawn(connection(
            client,
            Arc::clone(&url),
            auth.clone(),
            Arc::clone(&bodies),
            i,
            start,
            end,
        )));
    }
    tokio::time::sleep_until(start.into()).await;
    let (cpu0, extra0) = (server.cpu()?, read());
    let (sql0, t0) = (server.sql_statements().await?, Instant::now());
    let mut rss_kib = 0;
    while Instant::now() + RSS_EVERY < end {
        tokio::time::sleep(RSS_EVERY).await;
        rss_kib = rss_kib.max(server.rss_kib()?);
    }
    tokio::time::sleep_until(end.into()).await;
    let (cpu1, extra1) = (server.cpu()?, read());
    let (sql1, t1) = (server.sql_statements().await?, Instant::now());
    rss_kib = rss_kib.max(server.rss_kib()?);
    let mut total = Tally {
        requests: 0,
        errors: 0,
        first_error: None,
        latency: Histogram::new(),
    };
    for worker in workers {
        let tally = worker.await.context("a load connection panicked")?;
        total.requests += tally.requests;
        total.errors += tally.errors;
        total.first_error = total.first_error.or(tally.first_error);
        total.latency.merge(&tally.latency);
    }
    let elapsed = t1.duration_since(t0);
    Ok(Measurement {
        conns: plan.conns,
        requests: total.requests,
        errors: total.errors,
        first_error: total.first_error,
        elapsed,
        latency: total.latency,
        cpu: cpu1.saturating_sub(cpu0),
        sql: (sql1 - sql0 - idle_sql * elapsed.as_secs_f64()).max(0.0),
        rss_kib,
        extra: extra1.saturating_sub(extra0),
    })
}

/// One keep-alive connection: sends back to back until `end`; counts what completes between
/// `start` and `end`, and every failure.
async fn connection(
    client: reqwest::Client,
    url: Arc<str>,
    auth: HeaderValue,
    bodies: Arc<[Bytes]>,
    first: usize,
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally {
        requests: 0,
        errors: 0,
        first_error: None,
        latency: Histogram::new(),
    };
    let mut next = first;
    loop {
        let sent = Instant::now();
        if sent >= end {
            return tally;
        }
        let body = bodies[next % bodies.len()].clone();
        next = next.wrapping_add(1);
        let outcome = send(&client, &url, &auth, body).await;
        let done = Instant::now();
        if let Err(why) = outcome {
            tally.errors += 1;
            if tally.first_error.is_none() {
                let mut text = format!("{why:#}");
                text.truncate(text.floor_char_boundary(ERROR_TEXT_MAX));
                tally.first_error = Some(text);
            }
            // A refused connection fails at once: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if done >= start && done <= end {
            tally.requests += 1;
            tally.latency.record(done.duration_since(sent));
        }
    }
}

/// The top level of a GraphQL answer, its members skipped over without being built.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Option<IgnoredAny>,
    #[serde(default)]
    errors: Option<IgnoredAny>,
}

/// One request; an error unless the answer is 200 with `data` and without `errors`.
async fn send(
    client: &reqwest::Client,
    url: &str,
    auth: &HeaderValue,
    body: Bytes,
) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(AUTHORIZATION, auth.clone())
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    let answer: Result<Answer, _> = serde_json::from_slice(&bytes);
    match answer {
        Ok(Answer {
            data: Some(_),
            errors: None,
        }) if status.is_success() => Ok(()),
        _ => bail!("{status}: {}", String::from_utf8_lossy(&bytes)),
    }
}

/// Sub-buckets per power of two: values are kept to 1/128 of their size.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// The largest value kept, µs (about 19 hours); larger ones count as this.
const MAX_BITS: u32 = 36;
const BUCKETS: usize = ((MAX_BITS - SUB_BITS + 1) as u64 * SUB) as usize;

/// Latencies in µs, in log-linear buckets: exact below 256 µs, within 1/128 above.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    /// The bucket of `us`.
    fn index(us: u64) -> usize {
        let v = us.min((1 << MAX_BITS) - 1);
        if v < 2 * SUB {
            return v as usize;
        }
        let shift = 63 - v.leading_zeros() - SUB_BITS;
        ((u64::from(shift) + 1) * SUB + ((v >> shift) - SUB)) as usize
    }

    /// The middle of bucket `index`, µs.
    fn value(index: usize) -> u64 {
        let i = index as u64;
        if i < 2 * SUB {
            return i;
        }
        let shift = i / SUB - 1;
        ((SUB + i % SUB) << shift) + (1 << shift) / 2
    }

    /// Counts one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(us)] += 1;
        self.total += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// The latency that a share `p` (0 to 1) of the values do not exceed, µs (0 when empty).
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::value(i);
            }
        }
        Self::value(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_middle_is_within_one_percent_of_it() {
        let mut v = 1u64;
        while v < (1 << MAX_BITS) {
            let middle = Histogram::value(Histogram::index(v));
            let error = middle.abs_diff(v) as f64 / v as f64;
            assert!(error <= 1.0 / 128.0, "{v} -> {middle}");
            v = v * 21 / 20 + 1;
        }
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_where_they_should_be() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.percentile(0.5) as f64;
        let p99 = h.percentile(0.99) as f64;
        assert!((p50 - 5_000.0).abs() / 5_000.0 < 0.01, "{p50}");
        assert!((p99 - 9_900.0).abs() / 9_900.0 < 0.01, "{p99}");
        assert!(h.percentile(1.0).abs_diff(10_000) <= 100);
    }
}
