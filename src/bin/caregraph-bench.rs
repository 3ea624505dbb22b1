//! Benchmarks that print figures: `search` seeds one organisation with many members and times
//! `searchColleagues` through the service layer, on SQLite and (given a URL) PostgreSQL;
//! `fanout` fans one chat-session status change out to N WebSocket subscribers of one process;
//! `audit` times `auditEvents` for one patient over 1,000,000 audit records (SQLite, and
//! PostgreSQL given a URL); `export` samples the server's memory while it streams an audit
//! export of 1,000,000 records.
//!
//! Three GraphQL workloads load the real `caregraph` binary over HTTP with a closed-loop driver
//! (`bench/load.rs`) on the dashboard's dataset (`bench/seed.rs`, as `../shared/bench/seed.mjs`
//! writes it through the API), on SQLite and (given a URL) PostgreSQL, and print req/s, server
//! CPU per request, p50/p99, server memory under load, SQL statements per request and errors
//! per concurrency: `dashboard` sends `../shared/bench/dashboard.graphql`; `chats` the PMS chat
//! list (`chatSessions(first: 50)` with `lastMessage`, `unreadCount` and members) with the
//! Stream provider pointed at a fake this benchmark runs (`bench/stream_fake.rs`), with the
//! provider reads per page; `appointment` the single `appointment(id)` with the dashboard's
//! fields.
//!
//! `cargo run --release --features bench --bin caregraph-bench -- search --members 100000 [--postgres URL]`
//! `cargo build --release --features bench && cargo run --release --features bench --bin caregraph-bench -- fanout --subscribers 1000,10000`
//! `cargo run --release --features bench --bin caregraph-bench -- audit [--postgres URL]`
//! `cargo build --release --features bench && cargo run --release --features bench --bin caregraph-bench -- export --records 1000000`
//! `cargo build --release --features bench && cargo run --release --features bench --bin caregraph-bench -- dashboard [--postgres URL] [--conns 16,64] [--seconds 10]`
//! `cargo build --release --features bench && cargo run --release --features bench --bin caregraph-bench -- chats [--postgres URL] [--conns 16,64] [--seconds 10]`
//! `cargo build --release --features bench && cargo run --release --features bench --bin caregraph-bench -- appointment [--postgres URL] [--conns 16,64] [--seconds 10]`

#![expect(clippy::print_stdout, reason = "a benchmark's figures are its output")]

use std::{sync::Arc, time::Instant};

use anyhow::Context;
use caregraph::{
    app::App,
    auth::Viewer,
    config::{Config, Vars},
    db::{
        self,
        entities::{membership, user},
        users::NewUser,
    },
    domain::{Email, OrgRole, Slug},
    services::organizations::create_with_owner,
};
use clap::{Parser, Subcommand};

#[path = "bench/appointment.rs"]
mod appointment;
#[path = "bench/audit.rs"]
mod audit;
#[path = "bench/chats.rs"]
mod chats;
#[path = "bench/dashboard.rs"]
mod dashboard;
#[path = "bench/export.rs"]
mod export;
#[path = "bench/fanout.rs"]
mod fanout;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/seed.rs"]
mod seed;
#[path = "bench/server.rs"]
mod server;
#[path = "bench/stream_fake.rs"]
mod stream_fake;
use sea_orm::{ConnectionTrait, EntityTrait};

/// caregraph benchmarks.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Colleague typeahead over one large organisation.
    Search {
        /// Members to seed.
        #[arg(long, default_value_t = 100_000)]
        members: usize,
        /// Searches per query (after 20 warm-up runs).
        #[arg(long, default_value_t = 300)]
        runs: usize,
        /// Also run on this PostgreSQL server (a fresh database is created and dropped).
        #[arg(long, env = "CAREGRAPH_BENCH_POSTGRES_URL")]
        postgres: Option<String>,
    },
    /// `auditEvents` for one patient over a year of a busy clinic's audit trail.
    Audit {
        /// Records to load.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
        /// Queries per filter (after 10 warm-up runs).
        #[arg(long, default_value_t = 300)]
        runs: usize,
        /// Also run on this PostgreSQL server (a fresh database is created and dropped).
        #[arg(long, env = "CAREGRAPH_BENCH_POSTGRES_URL")]
        postgres: Option<String>,
    },
    /// The server's memory while it streams an audit export of N records (CSV).
    Export {
        /// Records to load and export.
        #[arg(long, default_value_t = 1_000_000)]
        records: usize,
    },
    /// One chat-session close fanned out to N WebSocket subscribers of one process.
    Fanout {
        /// Subscriber counts, one fresh server each.
        #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
        subscribers: Vec<usize>,
    },
    /// The PMS dashboard query (`../shared/bench/dashboard.graphql`) under load.
    Dashboard(load::LoadArgs),
    /// The PMS chat list (`chatSessions(first: 50)`) under load, Stream provider (a fake).
    Chats(load::LoadArgs),
    /// The single `appointment(id)` query under load.
    Appointment(load::LoadArgs),
}

const GIVEN: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Nancy",
    "Daniel",
    "Lisa",
    "Matthew",
    "Margaret",
    "Anthony",
    "Betty",
    "Mark",
    "Sandra",
    "Donald",
    "Ashley",
    "Steven",
    "Dorothy",
    "Paul",
    "Kimberly",
    "Andrew",
    "Emily",
    "Joshua",
    "Donna",
    "Amara",
    "Tomás",
    "Priya",
    "Olivia",
    "Noah",
    "Chen",
    "Fatima",
    "Mateo",
    "Aisha",
    "Lars",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Okafor",
    "Lindqvist",
    "Shah",
    "Hart",
    "Kim",
    "Patel",
    "Morgan",
    "Rivera",
    "Chen",
    "Novak",
];

/// Small deterministic generator (xorshift), so every run seeds the same names.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as usize
    }
}

fn config(url: &str) -> anyhow::Result<Config> {
    let url = url.to_owned();
    Config::from_vars(&Vars::new(move |k| match k {
        "CAREGRAPH_DATABASE_URL" => Some(url.clone()),
        "CAREGRAPH_DEMO" => Some("false".into()),
        "CAREGRAPH_BIND" => Some("127.0.0.1:0".into()),
        _ => None,
    }))
}

async fn run(label: &str, url: &str, members: usize, runs: usize) -> anyhow::Result<()> {
    let config = Arc::new(config(url)?);
    let conn = db::connect(&config.database).await?;
    db::migrate(&conn).await?;
    let started = Instant::now();
    let owner = db::users::insert(
        &conn,
        NewUser {
            email: Email::parse("bench.owner@example.org", "email")?,
            given_name: "Bench".into(),
            family_name: "Owner".into(),
            password_hash: None,
        },
    )
    .await?;
    let org = create_with_owner(
        &conn,
        "Bench Clinic".into(),
        &Slug::parse("bench-clinic", "slug")?,
        &owner,
    )
    .await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let batch = 1000;
    for start in (0..members).step_by(batch) {
        let txn = db::begin(&conn).await?;
        let mut users = Vec::with_capacity(batch);
        let mut rows = Vec::with_capacity(batch);
        for i in start..(start + batch).min(members) {
            let given = GIVEN[rng.next() % GIVEN.len()];
            let family = FAMILY[rng.next() % FAMILY.len()];
            let (row, u) = db::users::user_row(NewUser {
                email: Email::parse(
                    &format!(
                        "{}.{}.{i}@bench.example",
                        given.to_lowercase(),
                        family.to_lowercase()
                    ),
                    "email",
                )?,
                given_name: given.into(),
                family_name: family.into(),
                password_hash: None,
            });
            rows.push(db::organizations::membership_row(
                org.id,
                &u,
                OrgRole::Staff,
                None,
            ));
            users.push(row);
        }
        user::Entity::insert_many(users).exec(&txn).await?;
        membership::Entity::insert_many(rows).exec(&txn).await?;
        txn.commit().await?;
        if (start / batch) % 20 == 0 {
            eprintln!(
                "[{label}] seeded {} / {members} members",
                (start + batch).min(members)
            );
        }
    }
    // Fresh statistics, as a production database would have.
    conn.execute_unprepared("ANALYZE").await?;
    eprintln!(
        "[{label}] seeded {members} members in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The same wiring as production (its listener is never served).
    let app = App::build(config.as_ref().clone()).await?;
    let services = app.state.services.clone();
    let viewer = Viewer::signed_in(owner, chrono::Utc::now() + chrono::Duration::hours(1), None);
    println!(
        "{label}: {members} members, {runs} searches per query (limit 10), through the service layer"
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>8}",
        "query", "p50 ms", "p99 ms", "max ms", "results"
    );
    for query in [
        "ma", "sa", "joh", "smi", "will", "ok", "lindq", "arr", "son.", "zzz",
    ] {
        let mut found = 0;
        for _ in 0..20 {
            found = services
                .organizations
                .search_colleagues(&viewer, org.id, query, None)
                .await?
                .len();
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let r = services
                .organizations
                .search_colleagues(&viewer, org.id, query, None)
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            found = r.len();
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "{query:<10} {:>9.2} {:>9.2} {:>9.2} {found:>8}",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Search {
            members,
            runs,
            postgres,
        } => {
            on_each_database(postgres.as_deref(), async |label, url| {
                Box::pin(run(label, url, members, runs)).await
            })
            .await?;
        }
        Bench::Audit {
            records,
            runs,
            postgres,
        } => {
            on_each_database(postgres.as_deref(), async |label, url| {
                Box::pin(audit::run(label, config(url)?, records, runs)).await
            })
            .await?;
        }
        Bench::Export { records } => export::run(records).await?,
        Bench::Fanout { subscribers } => fanout::run(&subscribers).await?,
        Bench::Dashboard(args) => Box::pin(dashboard::run(&args)).await?,
        Bench::Chats(args) => Box::pin(chats::run(&args)).await?,
        Bench::Appointment(args) => Box::pin(appointment::run(&args)).await?,
    }
    Ok(())
}

/// Runs `work` with the label `sqlite` on a fresh SQLite file (in a temporary directory removed
/// after), then, given the URL of a PostgreSQL server, with the label `postgres` on a fresh
/// database there (created before and dropped after).
async fn on_each_database(
    postgres: Option<&str>,
    work: impl AsyncFn(&str, &str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir =
        std::env::temp_dir().join(format!("caregraph-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = format!("sqlite://{}/bench.db?mode=rwc", dir.display());
    let result = work("sqlite", &sqlite).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    if let Some(admin) = postgres {
        let name = format!("cg_bench_{}", uuid::Uuid::new_v4().simple());
        let conn = sea_orm::Database::connect(admin)
            .await
            .context("connect to PostgreSQL")?;
        conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        let result = work("postgres", &format!("{base}/{name}")).await;
        conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use caregraph::graphql::{self, cost::CostLimits, offline::check_document};

    #[tokio::test]
    async fn the_workload_queries_validate_against_the_schema_within_the_servers_limits() {
        let config = super::config("sqlite::memory:").expect("the default configuration");
        let cost = CostLimits {
            max_selections: config.security.max_selections,
            max_directives: config.security.max_directives,
            max_text_bytes: config.security.max_text_bytes,
        };
        let validator = graphql::validator(&config.graphql, cost);
        let appointment = super::appointment::query().expect("the appointment query");
        for (name, document) in [
            ("dashboard", super::dashboard::QUERY),
            ("chats", super::chats::QUERY),
            ("appointment", appointment.as_str()),
        ] {
            let problems = check_document(&validator, document).await;
            assert!(problems.is_empty(), "{name}: {problems:?}");
        }
    }
}
