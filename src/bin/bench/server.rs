//! The real `caregraph` binary (next to the benchmark's) as the benchmarks that measure a server
//! process start it: on a fresh temporary SQLite file or a given database URL, with the demo
//! data or with one bootstrapped organisation and nothing else; its address, an OWNER's token,
//! its memory and CPU time from `/proc`, and its SQL statement counter from `/metrics`. Its
//! output (stdout and stderr) goes to a log file in its temporary directory.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux reports them in `USER_HZ`, 100 on
/// every architecture it exports to user space.
const USER_HZ: u64 = 100;

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Log lines shown when the server does not start.
const LOG_TAIL: usize = 20;

/// The HS256 secret of the bench's own tokens (the server and `caregraph token` share it).
const JWT_SECRET: &str = "bench-only-hs256-secret-0123456789abcdef";

/// The bootstrapped organisation and its OWNER (what `../shared/bench/run.sh` bootstraps).
pub const ORG_NAME: &str = "Bench Veterinary Practice";
/// The bootstrapped OWNER's email.
pub const OWNER_EMAIL: &str = "owner@bench-vets.example";
const OWNER_PASSWORD: &str = "bench-owner-password";

/// How to start a server.
pub struct Launch<'a> {
    /// The database URL; `None` for a fresh SQLite file in the server's temporary directory.
    pub database: Option<&'a str>,
    /// The demo data and the demo OWNER's token; else an empty database with one organisation
    /// bootstrapped by `caregraph bootstrap` ([`ORG_NAME`], [`OWNER_EMAIL`]) and its OWNER's
    /// token from `caregraph token`.
    pub demo: bool,
    /// `RUST_LOG`; `None` leaves the server's default filter.
    pub log: Option<&'a str>,
    /// More environment, applied last.
    pub env: &'a [(&'a str, &'a str)],
}

pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The OWNER's bearer token.
    pub token: String,
    /// The server's database URL.
    pub database: String,
    dir: PathBuf,
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
    /// demo data and `RUST_LOG=warn`, `env` added to its environment; the token is the demo
    /// OWNER's.
    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::launch(&Launch {
            database: None,
            demo: true,
            log: Some("warn"),
            env,
        })
    }

    /// Starts the `caregraph` binary next to this one as `launch` says.
    pub fn launch(launch: &Launch<'_>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let bin = exe.with_file_name("caregraph");
        let dir = std::env::temp_dir().join(format!(
            "caregraph-bench-server-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let database = launch.database.map_or_else(
            || format!("sqlite://{}/caregraph.db?mode=rwc", dir.display()),
            str::to_owned,
        );
        let command = |args: &[&str]| {
            let mut c = Command::new(&bin);
            c.args(args)
                .current_dir(&dir)
                .env_remove("CAREGRAPH_REDIS_URL")
                .env_remove("CAREGRAPH_METRICS_TOKEN")
                .env("CAREGRAPH_DATABASE_URL", &database)
                .env("CAREGRAPH_DEMO", if launch.demo { "true" } else { "false" })
                .env("CAREGRAPH_JWT_SECRET", JWT_SECRET)
                .env("CAREGRAPH_BIND", "127.0.0.1:0");
            match launch.log {
                Some(filter) => c.env("RUST_LOG", filter),
                None => c.env_remove("RUST_LOG"),
            };
            for (key, value) in launch.env {
                c.env(key, value);
            }
            c
        };
        let token = if launch.demo {
            None
        } else {
            Some(bootstrap(&command, &bin)?)
        };
        let log = dir.join("caregraph.log");
        let out = std::fs::File::create(&log)?;
        let child = command(&[])
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} (build it with --release)", bin.display()))?;
        // From here on, dropping `server` stops the child and removes the directory.
        let mut server = Self {
            child,
            base: String::new(),
            token: String::new(),
            database,
            dir,
            http: reqwest::Client::new(),
        };
        let marker = if launch.demo {
            "/graphiql#token="
        } else {
            "caregraph is listening on "
        };
        let line = server.wait_for_line(&log, marker)?;
        if let Some(token) = token {
            let start = line.find("http").context("no URL on the listening line")?;
            let url = line[start..]
                .split_whitespace()
                .next()
                .context("listening line")?;
            server.base = url.trim_end_matches("/graphql").to_owned();
            server.token = token;
        } else {
            let (base, token) = line.split_once("/graphiql#token=").context("link")?;
            server.base = base[base.find("http").context("url")?..].to_owned();
            server.token = token.trim().to_owned();
        }
        Ok(server)
    }

    /// The first line of the server's log that contains `marker`, waiting for it.
    fn wait_for_line(&mut self, log: &Path, marker: &str) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            if let Some(line) = std::fs::read_to_string(log)?
                .lines()
                .find(|l| l.contains(marker))
            {
                return Ok(line.trim().to_owned());
            }
            let failed = if let Some(status) = self.child.try_wait()? {
                format!("the server exited ({status}) before it listened")
            } else if started.elapsed() > START_TIMEOUT {
                format!("the server printed no {marker:?} within {START_TIMEOUT:?}")
            } else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let text = std::fs::read_to_string(log)?;
            let tail: Vec<&str> = text.lines().rev().take(LOG_TAIL).collect();
            bail!(
                "{failed}; the end of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
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

    /// The SQL statements the server has run so far (`caregraph_sql_statements_total` on
    /// `/metrics`).
    pub async fn sql_statements(&self) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix("caregraph_sql_statements_total "))
            .and_then(|v| v.trim().parse().ok())
            .context("no caregraph_sql_statements_total on /metrics")
    }

    /// A GraphQL POST with the OWNER's token.
    pub fn request(&self, query: &str, variables: Value) -> anyhow::Result<reqwest::Request> {
        self.request_as(&self.token, query, variables)
    }

    /// A GraphQL POST with `token`.
    pub fn request_as(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<reqwest::Request> {
        Ok(self
            .http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
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
        self.gql_as(&self.token, query, variables).await
    }

    /// Runs one GraphQL operation with `token`; its `data`.
    pub async fn gql_as(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> anyhow::Result<Value> {
        self.execute(self.request_as(token, query, variables)?)
            .await
            .with_context(|| query.to_owned())
    }
}

/// `caregraph migrate`, `caregraph bootstrap` and `caregraph token` on the server's database, as
/// `../shared/bench/run.sh` does; the OWNER's token (the last line `token` prints).
fn bootstrap(command: &dyn Fn(&[&str]) -> Command, bin: &Path) -> anyhow::Result<String> {
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let output = command(args)
            .env("CAREGRAPH_BOOTSTRAP_PASSWORD", OWNER_PASSWORD)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} (build it with --release)", bin.display()))?;
        if !output.status.success() {
            bail!(
                "caregraph {} failed ({}): {}",
                args.first().copied().unwrap_or_default(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    run(&["migrate"])?;
    run(&[
        "bootstrap",
        "--org",
        ORG_NAME,
        "--email",
        OWNER_EMAIL,
        "--given-name",
        "Olivia",
        "--family-name",
        "Hart",
    ])?;
    let printed = run(&["token", "--email", OWNER_EMAIL, "--ttl", "12h"])?;
    printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .context("caregraph token printed nothing")
}
