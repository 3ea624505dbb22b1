//! [`App::build`]: wires configuration, database, services, schema and router. Production and the
//! tests boot exactly this.

use std::{io::Write, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use secrecy::ExposeSecret;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::Authenticator,
    backoff::Backoff,
    clock::{SharedClock, SystemClock},
    config::Config,
    db,
    events::EventBus,
    graphql,
    graphql::persisted::PersistedQueries,
    http::{self, AppState},
    mail::{LocalOutbox, MailQueue, MailSettings, Mailer, smtp::SmtpMailer},
    outbox::{Outbox, Settings as OutboxSettings},
    providers::meetings::{MeetingLinks, jitsi::Jitsi},
    services::{self, Parts, Services},
};

/// Parts of the app that tests replace.
#[derive(Default)]
pub struct Overrides {
    /// The clock (default: the system clock).
    pub clock: Option<SharedClock>,
}

/// A built, bound, not yet serving caregraph.
pub struct App {
    /// The shared state (services, schema, configuration).
    pub state: AppState,
    router: Router,
    listener: TcpListener,
    /// What the demo seed created on this start, if it ran.
    pub demo: Option<services::demo::DemoSeed>,
}

impl App {
    /// Connects and migrates the database, seeds demo data when configured, builds everything
    /// and binds the listener (`CAREGRAPH_BIND`; port 0 picks a free port) with a listen queue
    /// of `CAREGRAPH_LISTEN_BACKLOG`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Overrides::default()).await
    }

    /// [`App::build`] with parts replaced (tests use a manual clock).
    pub async fn build_with(config: Config, overrides: Overrides) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        warn_of_the_development_secret(&config);
        let trusted = load_trusted_documents(&config)?;
        let (db, stats) = db::connect_counted(&config.database).await?;
        let metrics = crate::telemetry::metrics::Metrics::new(stats.counter());
        db::migrate(&db).await?;
        let http_client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let auth = Authenticator::new(&config.auth, db.clone(), http_client.clone())
            .with_leeway(config.security.jwt_leeway);
        let clock: SharedClock = overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        // The room-name key is derived from the JWT secret, apart from it by domain separation.
        let room_key =
            crate::auth::derive_key(&config.auth.jwt_secret, "caregraph meeting room names");
        if config.is_production() && config.jitsi.app_id.is_none() {
            tracing::warn!(
                domain = %config.jitsi.domain,
                "JITSI_APP_ID/JITSI_APP_SECRET are unset: meeting links are plain room URLs that anyone holding one can open at any time"
            );
        }
        let meetings: Arc<dyn MeetingLinks> = Arc::new(Jitsi::new(&config.jitsi, room_key));
        let chat =
            crate::providers::chat::build(&config, db.clone(), http_client.clone(), &metrics)?;
        let sms = crate::providers::sms::build(&config, db.clone(), http_client.clone(), &metrics);
        let outbox = Outbox::new(
            db.clone(),
            chat.provider.clone(),
            clock.clone(),
            OutboxSettings {
                max_attempts: config.chat.outbox_max_attempts,
                backoff: Backoff::new(config.chat.outbox_backoff, config.chat.outbox_max_backoff),
                poll: config.chat.outbox_poll,
                lease: config.chat.outbox_lease,
                ..OutboxSettings::default()
            },
        );
        let shutdown = CancellationToken::new();
        let events = match &config.realtime.redis_url {
            Some(url) => {
                EventBus::redis(
                    url.expose_secret(),
                    &config.realtime.redis_channel,
                    config.realtime.event_buffer,
                    shutdown.clone(),
                )
                .await?
            }
            None => EventBus::in_process(config.realtime.event_buffer),
        }
        .counting(metrics.events_published.clone());
        // The audit writer and sealer have a small pool of their own: their batches never take a
        // request's connection, and the request pool's statement counts stay the requests' own.
        let mut audit_db_config = config.database.clone();
        audit_db_config.max_connections = 2;
        let audit_db = db::connect(&audit_db_config).await?;
        let audit = crate::audit::AuditLog::new(
            audit_db,
            config.audit.enabled.then_some(config.audit.queue),
            clock.clone(),
            crate::audit::retention::checkpoint_key(&config),
            config.audit.retention_days,
        )
        .coalescing_reads(
            config.audit.read_window,
            metrics.audit_records_coalesced.clone(),
        );
        // Bound before the services are built: the URLs they hand out (invitations) fall back
        // to the bound address when CAREGRAPH_PUBLIC_URL is unset.
        let listener = listen(config.bind, config.listen_backlog)
            .with_context(|| format!("cannot bind {}", config.bind))?;
        let public_url = config.public_base_url(listener.local_addr().unwrap_or(config.bind));
        let mail = MailQueue::new(
            db.clone(),
            build_mailer(&config)?,
            clock.clone(),
            MailSettings {
                max_attempts: config.chat.outbox_max_attempts,
                backoff: Backoff::new(config.chat.outbox_backoff, config.chat.outbox_max_backoff),
                poll: config.chat.outbox_poll,
            },
        );
        let services = Services::new(Parts {
            config: config.clone(),
            db: db.clone(),
            stats,
            auth,
            clock,
            meetings,
            chat,
            outbox,
            events: events.clone(),
            metrics,
            audit,
            mail,
            public_url,
            sms,
        });
        let demo = if config.seeds_demo() {
            // Boxed: the seed's many service calls would make every caller's future large.
            Box::pin(services::demo::seed_if_empty(&services))
                .await
                .map_err(|e| anyhow::anyhow!("seeding demo data failed: {e:?}"))?
        } else {
            None
        };
        let cost = graphql::cost::CostLimits {
            max_selections: config.security.max_selections,
            max_directives: config.security.max_directives,
            max_text_bytes: config.security.max_text_bytes,
        };
        let services = Arc::new(services);
        let graphql = Arc::new(graphql::build(services.clone(), &config.graphql, cost));
        let state = AppState::new(http::Shared {
            graphql,
            services,
            persisted: Arc::new(
                PersistedQueries::new(config.graphql.apq_cache_size)
                    .with_trusted(trusted, config.graphql.trusted_documents_only),
            ),
            config: config.clone(),
            shutdown,
            sockets: TaskTracker::new(),
        });
        let router = http::router(state.clone());
        Ok(Self {
            state,
            router,
            listener,
            demo,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.bind)
    }

    /// Serves until `shutdown` resolves; then stops accepting, closes WebSockets with 1001 and
    /// lets in-flight requests finish (up to `CAREGRAPH_SHUTDOWN_GRACE_SECONDS`).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = self.state.shutdown.clone();
        let sockets = self.state.sockets.clone();
        let scheduler = tokio::spawn(self.state.services.chats.clone().run_scheduler(
            token.clone(),
            self.state.config.chat.scheduler_poll,
            self.state.services.metrics.scheduler_lag.clone(),
        ));
        let webhooks = tokio::spawn(self.state.services.webhooks.clone().run(token.clone()));
        let announcer = tokio::spawn(
            self.state
                .services
                .chats
                .clone()
                .run_announcer(token.clone()),
        );
        let mail = tokio::spawn(
            self.state
                .services
                .invitations
                .mail()
                .clone()
                .run(token.clone()),
        );
        let outbox = self.state.services.outbox.clone();
        let worker_stop = token.clone();
        let worker = tokio::spawn(async move {
            // A panic in the worker is logged at once, not only at shutdown.
            if let Err(e) = tokio::spawn(outbox.run(worker_stop)).await {
                tracing::error!(error = %e, "the outbox worker stopped unexpectedly");
            }
        });
        // The audit writer stops last: after the requests and tasks that hand it records.
        let audit_stop = CancellationToken::new();
        let audit = self.state.services.audit.clone();
        let audit_writer = tokio::spawn(audit.clone().run_writer(audit_stop.clone()));
        let sealer = tokio::spawn(audit.run_sealer(token.clone()));
        let grace = self.state.config.shutdown_grace;
        let signal_token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            signal_token.cancel();
        });
        let security = &self.state.config.security;
        let limits = http::connections::Limits {
            max_connections: security.max_connections,
            max_per_address: security.max_connections_per_address,
            header_read_timeout: security.header_read_timeout,
            idle_timeout: security.http_idle_timeout,
        };
        let server = http::connections::serve(self.listener, self.router, limits, token.clone());
        let serving = tokio::spawn(async move {
            server.await;
            anyhow::Ok(())
        });
        token.cancelled().await;
        sockets.close();
        let drained = tokio::time::timeout(grace, async {
            sockets.wait().await;
            let _ = worker.await;
            let _ = mail.await;
            let _ = scheduler.await;
            let _ = webhooks.await;
            let _ = announcer.await;
            let _ = sealer.await;
            let served = serving.await;
            audit_stop.cancel();
            let _ = audit_writer.await;
            served
        })
        .await;
        match drained {
            Ok(Ok(result)) => result.context("server error"),
            Ok(Err(join)) => Err(anyhow::anyhow!("server task failed: {join}")),
            Err(_) => {
                tracing::warn!(?grace, "grace period over; exiting with requests in flight");
                Ok(())
            }
        }
    }
}

/// A listener on `addr` whose kernel accept queue holds `backlog` connections.
///
/// `TcpListener::bind` always asks for 128 (mio's fixed backlog, the standard library's), and
/// the kernel caps what it is given at `net.core.somaxconn`. A reconnect storm past the queue
/// has its SYNs dropped, and each such client waits a second to retry. As `TcpListener::bind` does, `SO_REUSEADDR` is set
/// outside Windows, so a restart binds while the last run's connections linger in `TIME_WAIT`.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(not(windows))]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The mailer `CAREGRAPH_SMTP_URL` asks for, else the local outbox (mails stay in the
/// `outbound_mails` table for the operator).
fn build_mailer(config: &Config) -> anyhow::Result<Arc<dyn Mailer>> {
    match (&config.mail.smtp_url, &config.mail.from) {
        (Some(url), Some(from)) => Ok(Arc::new(SmtpMailer::new(url.expose_secret(), from)?)),
        _ => {
            if config.is_production() {
                tracing::warn!(
                    "CAREGRAPH_SMTP_URL is unset: invitation mails stay in the outbound_mails table (staff get each invitation's URL in the API response)"
                );
            }
            Ok(Arc::new(LocalOutbox))
        }
    }
}

/// Outside production, starting with the public development JWT secret says so loudly on
/// stderr (whatever `RUST_LOG` filters) and in the log: anyone can mint tokens with it.
fn warn_of_the_development_secret(config: &Config) {
    if config.is_production()
        || config.auth.jwt_secret.expose_secret() != crate::config::DEV_JWT_SECRET
    {
        return;
    }
    let banner = "WARNING: CAREGRAPH_JWT_SECRET is unset, so caregraph signs and accepts tokens with the PUBLIC development secret: anyone can sign in as anyone. Set CAREGRAPH_JWT_SECRET (e.g. `openssl rand -hex 32`) for anything but local development.";
    let _ = writeln!(std::io::stderr(), "\n{banner}\n");
    tracing::warn!("{banner}");
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Loads `CAREGRAPH_TRUSTED_DOCUMENTS` when set; a bad file stops the start, naming the variable.
fn load_trusted_documents(
    config: &Config,
) -> anyhow::Result<Option<Arc<graphql::trusted::TrustedDocuments>>> {
    let Some(path) = &config.graphql.trusted_documents else {
        return Ok(None);
    };
    let trusted = graphql::trusted::TrustedDocuments::load(path).map_err(|problem| {
        anyhow::anyhow!(
            "CAREGRAPH_TRUSTED_DOCUMENTS ({}): {problem}",
            path.display()
        )
    })?;
    tracing::info!(
        documents = trusted.len(),
        only = config.graphql.trusted_documents_only,
        "trusted documents loaded"
    );
    Ok(Some(Arc::new(trusted)))
}
