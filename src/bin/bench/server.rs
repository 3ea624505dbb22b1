//! The real `caregraph` binary (next to the benchmark's) on a fresh temporary SQLite file, with
//! the demo data, as the benchmarks that measure a server process start it: its address, the
//! demo OWNER's token, its memory and CPU time from `/proc`.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux reports them in `USER_HZ`, 100 on
/// every architecture it exports to user space.
const USER_HZ: u64 = 100;

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The demo OWNER's bearer token.
    pub token: String,
    /// The server's database URL (a SQLite file in its own temporary directory).
    pub database: String,
    dir: std::path::PathBuf,
    /// A client with keep-alive.
    pub http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// Starts the `caregraph` binary next to this one on a fresh temporary SQLite file with the
    /// demo data, `env` added to its environment; the token is the demo OWNER's.
    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin = exe.with_file_name("caregraph");
        let dir = std::env::temp_dir().join(format!(
            "caregraph-fanout-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let database = format!("sqlite://{}/caregraph.db?mode=rwc", dir.display());
        let mut child = Command::new(&bin);
        child
            .current_dir(&dir)
            .env_remove("CAREGRAPH_REDIS_URL")
            .env("CAREGRAPH_DATABASE_URL", &database)
            .env("CAREGRAPH_DEMO", "true")
            .env("CAREGRAPH_BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn");
        for (key, value) in env {
            child.env(key, value);
        }
        let mut child = child
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
            database,
            dir,
            http: reqwest::Client::new(),
        })
    }

    /// The server's resident memory (VmRSS), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")
    }

    /// The server's CPU time so far, user plus system, over all its threads.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // The fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, utime 14 and stime 15.
        let rest = &stat[stat.rfind(')').context("stat")? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i - 3)
                .context("stat field")?
                .parse()
                .context("stat field")
        };
        let ticks = ticks(14)? + ticks(15)?;
        Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
    }

    /// A GraphQL POST with the OWNER's token.
    pub fn request(&self, query: &str, variables: Value) -> anyhow::Result<reqwest::Request> {
        Ok(self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(&self.token)
            .json(&json!({"query": query, "variables": variables}))
            .build()?)
    }

    /// Sends `request`; its `data`, or an error with the body when it has `errors`.
    pub async fn execute(&self, request: reqwest::Request) -> anyhow::Result<Value> {
        let body: Value = self.http.execute(request).await?.json().await?;
        if !body["errors"].is_null() {
            bail!("{body}");
        }
        Ok(body["data"].clone())
    }

    /// Runs one GraphQL operation as the OWNER; its `data`.
    pub async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        self.execute(self.request(query, variables)?)
            .await
            .with_context(|| query.to_owned())
    }
}
