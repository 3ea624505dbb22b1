//! The command line: `serve` (the default), `migrate`, `schema`, `documents check`, `bootstrap`,
//! `token`, `audit verify`, `mails`.

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::{app::App, config::Config, db, graphql, services::demo::DEMO_PASSWORD, telemetry};

/// caregraph: a GraphQL backend-for-frontend for care coordination.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service (migrates first; seeds demo data on the embedded default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL, or with --json the introspection result).
    Schema {
        /// Print the introspection result (`{"data": {"__schema": …}}`) that GraphQL Codegen
        /// and Apollo tooling read, instead of SDL.
        #[arg(long)]
        json: bool,
    },
    /// Work with trusted-documents manifests.
    Documents {
        /// What to do.
        #[command(subcommand)]
        command: DocumentsCommand,
    },
    /// Create an organisation and make a user (created when new) its OWNER.
    Bootstrap {
        /// The organisation's name.
        #[arg(long)]
        org: String,
        /// The owner's email.
        #[arg(long)]
        email: String,
        /// The owner's password (at least 10 characters).
        #[arg(long, env = "CAREGRAPH_BOOTSTRAP_PASSWORD", hide_env_values = true)]
        password: String,
        /// Given name of a new user.
        #[arg(long)]
        given_name: Option<String>,
        /// Family name of a new user.
        #[arg(long)]
        family_name: Option<String>,
    },
    /// Mint an access token for local use; the JWT is the last line printed.
    Token {
        /// Whose token.
        #[arg(long)]
        email: String,
        /// Lifetime, e.g. 30m, 1h, 2d (default 1h).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Print the most recent outgoing mails (the local outbox): what to hand over by hand when
    /// no SMTP server is configured. A body is shown while it is kept.
    Mails {
        /// How many, newest first (1 to 1000).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// The audit trail.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `caregraph audit ...`.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk each organisation's hash chain (or one), recompute every hash and check every link
    /// and checkpoint; exit non-zero at the first break.
    Verify {
        /// Only this organisation's chain (`system` for sign-ins).
        #[arg(long)]
        org: Option<String>,
    },
}

/// The `documents` commands.
#[derive(Subcommand, Debug)]
pub enum DocumentsCommand {
    /// Check a manifest (GraphQL Codegen persisted documents or an Apollo persisted query
    /// manifest): ids and hashes, and every document parses and validates against the schema
    /// with the configured limits, without executing. One line per problem; exit status 1 on
    /// any.
    Check {
        /// The manifest file.
        file: PathBuf,
    },
}

/// Parses `90s`, `30m`, `1h`, `2d` or plain seconds.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (digits, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {raw:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in {raw:?}; use s, m, h or d")),
    };
    if seconds == 0 || seconds > 30 * 86_400 {
        return Err("a token lives between 1 second and 30 days".into());
    }
    Ok(Duration::from_secs(seconds))
}

fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
}

/// Runs the command line on a new multi-threaded runtime (what `#[tokio::main]` builds).
pub fn main(cli: Cli) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("the async runtime")?
        .block_on(Box::pin(run(cli)))
}

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Schema { json: false }) => {
            out(graphql::sdl().trim_end());
            return Ok(());
        }
        Some(Command::Schema { json: true }) => {
            out(&graphql::introspection_json().await?);
            return Ok(());
        }
        Some(Command::Documents {
            command: DocumentsCommand::Check { file },
        }) => return check_documents(file).await,
        _ => {}
    }
    let config = Config::from_env()?;
    let _tracing = telemetry::init(config.log_json, config.otel.as_ref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => Box::pin(serve(config)).await,
        Command::Migrate => {
            let conn = db::connect(&config.database).await?;
            db::migrate(&conn).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Schema { .. } | Command::Documents { .. } => Ok(()),
        Command::Bootstrap {
            org,
            email,
            password,
            given_name,
            family_name,
        } => {
            let app = build_offline(config).await?;
            let (org, user) = app
                .state
                .services
                .accounts
                .bootstrap(
                    &org,
                    &email,
                    password,
                    given_name.as_deref(),
                    family_name.as_deref(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            out(&format!(
                "organization {} ({}) created; {} is its OWNER (user id {})",
                org.name, org.id, user.email, user.id
            ));
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { org },
        } => audit_verify(&config, org.as_deref()).await,
        Command::Mails { limit } => {
            let conn = db::connect(&config.database).await?;
            for mail in crate::mail::recent(&conn, limit).await? {
                out(&format!(
                    "mail {} {} {} attempts={}\nTo: {}\nSubject: {}\n\n{}\n",
                    mail.id,
                    mail.status,
                    mail.created_at.to_rfc3339(),
                    mail.attempts,
                    mail.to,
                    mail.subject,
                    mail.body.as_deref().unwrap_or(
                        "(body cleared: sent, or its invitation was accepted or revoked)"
                    ),
                ));
            }
            Ok(())
        }
        Command::Token { email, ttl } => {
            let app = build_offline(config).await?;
            let token = app
                .state
                .services
                .accounts
                .token_for_email(&email, ttl)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            out(&token.token);
            Ok(())
        }
    }
}

/// `caregraph documents check FILE`: prints one line per problem (`<entry id>: <problem>`) and
/// fails on any, or prints a summary line.
async fn check_documents(file: &std::path::Path) -> anyhow::Result<()> {
    // The limits the server would apply (defaults unless the environment sets them).
    let config = Config::from_env()?;
    let manifest = match graphql::trusted::Manifest::read(file) {
        Ok(m) => m,
        Err(problem) => bail!("{}: {problem}", file.display()),
    };
    let cost = graphql::cost::CostLimits {
        max_selections: config.security.max_selections,
        max_directives: config.security.max_directives,
        max_text_bytes: config.security.max_text_bytes,
    };
    let validator = graphql::validator(&config.graphql, cost);
    let problems = graphql::offline::check_manifest(&validator, &manifest).await;
    if !problems.is_empty() {
        for problem in &problems {
            out(&problem.to_string());
        }
        bail!(
            "{}: {} problem(s) in {} documents",
            file.display(),
            problems.len(),
            manifest.entries.len()
        );
    }
    out(&format!(
        "{}: {} documents ({}) parse, validate and match their ids",
        file.display(),
        manifest.entries.len(),
        manifest.format
    ));
    Ok(())
}

/// `caregraph audit verify`: walks the sealed chains (records not yet sealed are not covered).
async fn audit_verify(config: &Config, org: Option<&str>) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let conn = db::connect(&config.database).await?;
    db::migrate(&conn).await?;
    let key = crate::audit::retention::checkpoint_key(config);
    let started = std::time::Instant::now();
    let result =
        crate::audit::verify::verify(&conn, key.expose_secret().as_bytes(), org, |chain, n| {
            out(&format!("  chain {chain}: {n} records checked..."))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    match result {
        Ok(summary) => {
            out(&format!(
                "audit trail intact: {} chain(s), {} record(s) verified ({} from a signed checkpoint) in {:.1} s",
                summary.chains,
                summary.records,
                summary.from_checkpoint,
                started.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Err(broken) => {
            out(&format!("AUDIT TRAIL BROKEN: {broken}"));
            bail!("the audit trail does not verify: {broken}")
        }
    }
}

/// Builds the app for a one-off command: no demo seeding, any free port.
async fn build_offline(mut config: Config) -> anyhow::Result<App> {
    config.demo = Some(false);
    config.bind = "127.0.0.1:0".parse().context("loopback address")?;
    App::build(config).await
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if !crate::process::huge_pages(config.huge_pages) {
        if config.huge_pages {
            tracing::warn!("CAREGRAPH_HUGE_PAGES: the kernel kept its own setting");
        } else {
            tracing::debug!("transparent huge pages: the kernel kept its own setting");
        }
    }
    let demo_mode = config.seeds_demo();
    let app = App::build(config).await?;
    let addr = app.local_addr();
    let base = app.state.config.public_base_url(addr);
    tracing::info!(%addr, "caregraph listening");
    if demo_mode {
        print_demo_banner(&app, &base).await?;
    } else {
        out(&format!(
            "caregraph is listening on {base}/graphql (GraphiQL: {base}/graphiql)"
        ));
    }
    app.serve(crate::app::shutdown_signal()).await
}

async fn print_demo_banner(app: &App, base: &str) -> anyhow::Result<()> {
    let owner_email = match &app.demo {
        Some(seed) => seed.owner.email.clone(),
        None => crate::services::demo::OWNER_EMAIL.to_owned(),
    };
    let token = match app
        .state
        .services
        .accounts
        .token_for_email(&owner_email, Duration::from_secs(12 * 3600))
        .await
    {
        Ok(t) => t,
        Err(_) => {
            out(&format!(
                "caregraph is listening on {base}/graphql (GraphiQL: {base}/graphiql)"
            ));
            return Ok(());
        }
    };
    if token.token.is_empty() {
        bail!("empty token");
    }
    out("");
    if app.state.config.database.embedded_default {
        out("  caregraph is running on its embedded default (SQLite file, demo data).");
    } else {
        out("  caregraph is running with demo data.");
    }
    out("");
    out(&format!(
        "  GraphiQL (signed in as {owner_email}, valid 12 h):"
    ));
    out(&format!("    {base}/graphiql#token={}", token.token));
    out("");
    out(&format!("  GraphQL endpoint: {base}/graphql"));
    out(&format!("  Authorization: Bearer {}", token.token));
    out(&format!(
        "  Demo accounts use the password {DEMO_PASSWORD:?} (Mutation.login)."
    ));
    out("");
    Ok(())
}
