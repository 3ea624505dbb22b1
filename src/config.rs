//! Typed configuration, read once at start from the environment (and an optional `.env`).
//!
//! Every variable is listed in the README's configuration table and in `.env.example`.
//! Secrets are [`SecretString`]s: they never appear in `Debug` output or logs.
//!
//! Over 700 lines on purpose: each section's struct, its variables' parsing and its
//! cross-variable checks (production rules, per-provider requirements) read best side by side;
//! a section with rules of its own lives in a submodule (`security`).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};

mod security;
pub use security::SecurityConfig;

/// The JWT secret used when none is configured outside production. Production refuses it.
pub const DEV_JWT_SECRET: &str = "caregraph-insecure-development-secret-do-not-deploy";

/// The embedded default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://caregraph.db?mode=rwc";

/// Where the service runs: a developer machine or production.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// Anything but production: demo data allowed, the development JWT secret allowed.
    Development,
    /// `CAREGRAPH_ENV=production`: strict secrets, no demo data, introspection off by default.
    Production,
}

/// The whole configuration of one caregraph process.
#[derive(Clone, Debug)]
pub struct Config {
    /// `CAREGRAPH_ENV`.
    pub env: Environment,
    /// `CAREGRAPH_BIND` (`host:port`, default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// `CAREGRAPH_LISTEN_BACKLOG` (default 4096, 1 to 65535): connections the kernel holds for
    /// the accept loop, so a reconnect storm is queued rather than dropped (Linux caps it at
    /// `net.core.somaxconn`, 4096 by default since 5.4).
    pub listen_backlog: u32,
    /// `CAREGRAPH_PUBLIC_URL`: the URL printed for GraphiQL (default derived from the bind address).
    pub public_url: Option<String>,
    /// Database settings.
    pub database: DatabaseConfig,
    /// Authentication settings.
    pub auth: AuthConfig,
    /// GraphQL limits and switches.
    pub graphql: GraphqlConfig,
    /// `CAREGRAPH_DEMO`: `Some(true)` forces demo data into an empty database, `Some(false)` forbids it.
    pub demo: Option<bool>,
    /// `CAREGRAPH_OPEN_SIGNUP` (default true): any signed-in user may create an organisation.
    pub open_signup: bool,
    /// `CAREGRAPH_ALLOW_OVERBOOKING` (default false): staff may schedule, move or staff a person
    /// into overlapping appointments (a guardian's request still needs a free slot).
    pub allow_overbooking: bool,
    /// `CAREGRAPH_HUGE_PAGES` (default false): whether `serve` lets the kernel back the heap
    /// with transparent huge pages (see [`crate::process::huge_pages`]).
    pub huge_pages: bool,
    /// `CAREGRAPH_SHUTDOWN_GRACE_SECONDS` (default 20): how long in-flight work may finish on shutdown.
    pub shutdown_grace: Duration,
    /// `CAREGRAPH_LOG_FORMAT` (`pretty` | `json`; default pretty, json in production).
    pub log_json: bool,
    /// `CAREGRAPH_METRICS_TOKEN`: when set, `/metrics` needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<SecretString>,
    /// Video meeting links.
    pub jitsi: JitsiConfig,
    /// The chat provider.
    pub chat: ChatConfig,
    /// The SMS gateway of external chat members.
    pub sms: SmsConfig,
    /// Events and subscriptions.
    pub realtime: RealtimeConfig,
    /// Hardening limits.
    pub security: SecurityConfig,
    /// OpenTelemetry trace export (`None`: off).
    pub otel: Option<OtelConfig>,
    /// The audit trail.
    pub audit: AuditConfig,
    /// Invitations and the mail that carries them.
    pub mail: MailConfig,
}

/// Invitations and outgoing mail.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// `CAREGRAPH_INVITATION_TTL_HOURS` (default 72, 1 to 720): how long an invitation can be
    /// accepted.
    pub invitation_ttl: Duration,
    /// `CAREGRAPH_SMTP_URL`: `smtp://user:pass@host:port` (plain), `…?tls=required` (STARTTLS)
    /// or `smtps://…` (TLS). Unset: mails stay in the local outbox table `outbound_mails`.
    pub smtp_url: Option<SecretString>,
    /// `CAREGRAPH_MAIL_FROM`: the sender of mails (`Name <address>` or an address); required
    /// with `CAREGRAPH_SMTP_URL`.
    pub from: Option<String>,
}

impl MailConfig {
    fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let hours: u64 = vars.parse("CAREGRAPH_INVITATION_TTL_HOURS", 72)?;
        if !(1..=720).contains(&hours) {
            bail!("CAREGRAPH_INVITATION_TTL_HOURS: hours between 1 and 720, got {hours}");
        }
        let smtp_url = vars.get("CAREGRAPH_SMTP_URL").map(|u| u.trim().to_owned());
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            // The value is not repeated: it may hold a password.
            bail!("CAREGRAPH_SMTP_URL: expected an smtp:// or smtps:// URL");
        }
        let from = vars.get("CAREGRAPH_MAIL_FROM").map(|f| f.trim().to_owned());
        if smtp_url.is_some() && from.is_none() {
            bail!("CAREGRAPH_MAIL_FROM: required with CAREGRAPH_SMTP_URL (the sender of mails)");
        }
        Ok(Self {
            invitation_ttl: Duration::from_secs(hours * 3600),
            smtp_url: smtp_url.map(SecretString::from),
            from,
        })
    }
}

/// The audit trail.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// `CAREGRAPH_AUDIT` (default true): record reads, denials and changes of patient-linked
    /// data. Off, nothing is recorded (the sealer still seals what an earlier run recorded).
    pub enabled: bool,
    /// `CAREGRAPH_AUDIT_QUEUE` (default 10000, 100 to 1000000): records waiting for the writer;
    /// when it is full, a request's flush waits for room (nothing is dropped).
    pub queue: usize,
    /// `CAREGRAPH_AUDIT_RETENTION_DAYS` (default 2190 = 6 years, at least 1): sealed records
    /// older than this are pruned behind a signed checkpoint.
    pub retention_days: u32,
    /// `CAREGRAPH_AUDIT_KEY`: the key that signs checkpoints and chain heads (default: derived
    /// from `CAREGRAPH_JWT_SECRET`).
    pub key: Option<SecretString>,
    /// `CAREGRAPH_AUDIT_READ_WINDOW_SECONDS` (default 60, 0 to 3600): an allowed read (or the
    /// join a read records) identical to one this process accepted less than this ago is not
    /// recorded again (0: every read is).
    pub read_window: Duration,
}

impl AuditConfig {
    fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let queue: usize = vars.parse("CAREGRAPH_AUDIT_QUEUE", 10_000)?;
        if !(100..=1_000_000).contains(&queue) {
            bail!("CAREGRAPH_AUDIT_QUEUE: records between 100 and 1000000, got {queue}");
        }
        let retention_days: u32 = vars.parse("CAREGRAPH_AUDIT_RETENTION_DAYS", 2190)?;
        if !(1..=36_500).contains(&retention_days) {
            bail!("CAREGRAPH_AUDIT_RETENTION_DAYS: days between 1 and 36500, got {retention_days}");
        }
        let read_window: u64 = vars.parse("CAREGRAPH_AUDIT_READ_WINDOW_SECONDS", 60)?;
        if read_window > 3600 {
            bail!(
                "CAREGRAPH_AUDIT_READ_WINDOW_SECONDS: seconds between 0 and 3600, got {read_window}"
            );
        }
        let key = vars.get("CAREGRAPH_AUDIT_KEY");
        if key.as_ref().is_some_and(|k| k.len() < 32) {
            bail!("CAREGRAPH_AUDIT_KEY: at least 32 characters (e.g. `openssl rand -hex 32`)");
        }
        Ok(Self {
            enabled: vars.flag("CAREGRAPH_AUDIT")?.unwrap_or(true),
            queue,
            retention_days,
            key: key.map(SecretString::from),
            read_window: Duration::from_secs(read_window),
        })
    }
}

/// OpenTelemetry trace export over OTLP/HTTP (protobuf).
#[derive(Clone, Debug)]
pub struct OtelConfig {
    /// The traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` followed by `/v1/traces`.
    pub endpoint: String,
    /// `OTEL_SERVICE_NAME` (default `caregraph`).
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER_ARG` (0 to 1, default 1): the share of traces started here that are
    /// kept; a client's `traceparent` decides for its own trace.
    pub sample_ratio: f64,
}

impl OtelConfig {
    fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Option<Self>> {
        let endpoint = match (
            vars.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            vars.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => (
                traces.trim().to_owned(),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (None, Some(base)) => (
                format!("{}/v1/traces", base.trim().trim_end_matches('/')),
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (None, None) => return Ok(None),
        };
        let (endpoint, name) = endpoint;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!("{name}: expected an http:// or https:// URL, got {endpoint:?}");
        }
        let sample_ratio: f64 = vars.parse("OTEL_TRACES_SAMPLER_ARG", 1.0)?;
        if !(0.0..=1.0).contains(&sample_ratio) {
            bail!("OTEL_TRACES_SAMPLER_ARG: a ratio between 0 and 1, got {sample_ratio}");
        }
        Ok(Some(Self {
            endpoint,
            service_name: vars
                .get("OTEL_SERVICE_NAME")
                .map_or_else(|| "caregraph".to_owned(), |s| s.trim().to_owned()),
            sample_ratio,
        }))
    }
}

/// Events and subscriptions.
#[derive(Clone, Debug)]
pub struct RealtimeConfig {
    /// `CAREGRAPH_EVENT_BUFFER` (default 1024, 16 to 65536): events kept per subscriber; one that
    /// falls further behind is resynchronised with the current state.
    pub event_buffer: usize,
    /// `CAREGRAPH_REDIS_URL` (`redis://…`): when set, events go through Redis pub/sub so that
    /// subscribers on every replica hear them (else they stay in this process).
    pub redis_url: Option<SecretString>,
    /// `CAREGRAPH_REDIS_CHANNEL` (default `caregraph:events`): the pub/sub channel; deployments
    /// sharing one Redis use one channel each.
    pub redis_channel: String,
}

impl RealtimeConfig {
    fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let event_buffer: usize = vars.parse("CAREGRAPH_EVENT_BUFFER", 1024)?;
        if !(16..=65_536).contains(&event_buffer) {
            bail!("CAREGRAPH_EVENT_BUFFER: between 16 and 65536");
        }
        let redis_url = vars
            .get("CAREGRAPH_REDIS_URL")
            .filter(|u| !u.trim().is_empty());
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            bail!("CAREGRAPH_REDIS_URL: expected redis://host:port");
        }
        let redis_channel = vars
            .get("CAREGRAPH_REDIS_CHANNEL")
            .unwrap_or_else(|| "caregraph:events".to_owned());
        if redis_channel.is_empty() || redis_channel.len() > 200 {
            bail!("CAREGRAPH_REDIS_CHANNEL: 1 to 200 characters");
        }
        Ok(Self {
            event_buffer,
            redis_url: redis_url.map(SecretString::from),
            redis_channel,
        })
    }
}

/// Which chat provider, and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatProviderKind {
    /// caregraph's own database (the embedded default).
    Local,
    /// Stream Chat.
    Stream,
    /// Sendbird.
    Sendbird,
    /// Ethora.
    Ethora,
}

/// Chat settings.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// `CAREGRAPH_CHAT_PROVIDER` = `local` (default) | `stream` | `sendbird` | `ethora`.
    pub provider: ChatProviderKind,
    /// Stream settings (required when the provider is `stream`).
    pub stream: Option<StreamConfig>,
    /// Sendbird settings (required when the provider is `sendbird`).
    pub sendbird: Option<SendbirdConfig>,
    /// Ethora settings (required when the provider is `ethora`).
    pub ethora: Option<EthoraConfig>,
    /// `CAREGRAPH_CHAT_TOKEN_TTL_SECONDS` (default 3600): lifetime of chat user tokens
    /// (`STREAM_TOKEN_TTL` is read too, for Stream).
    pub token_ttl: Duration,
    /// `CAREGRAPH_PROVIDER_TIMEOUT_SECONDS` (default 10): one provider call's timeout.
    pub timeout: Duration,
    /// `CAREGRAPH_PROVIDER_RETRIES` (default 2): retries of a failing call within a request.
    pub retries: u32,
    /// `CAREGRAPH_PROVIDER_BREAKER_THRESHOLD` (default 5): failed calls in a row that open the
    /// circuit breaker.
    pub breaker_threshold: u32,
    /// `CAREGRAPH_PROVIDER_BREAKER_COOLDOWN_SECONDS` (default 15): the longest an open breaker
    /// fails calls fast (an outage's first cooldown is short and doubles per failed probe).
    pub breaker_cooldown: Duration,
    /// `CAREGRAPH_OUTBOX_MAX_ATTEMPTS` (default 12): deliveries tried before a row is dead.
    pub outbox_max_attempts: i32,
    /// `CAREGRAPH_CHAT_TOKENS_PER_MINUTE` (default 10): chat tokens a user may get per minute.
    pub tokens_per_minute: u32,
    /// `CAREGRAPH_CHAT_ACTIVATION_MINUTES` (default 5): how long before an appointment its chat
    /// opens, unless the appointment says otherwise.
    pub default_activation_minutes: i64,
    /// `CAREGRAPH_CHAT_AFTER_END_MINUTES` (default 120): how long after an appointment its chat
    /// stays open.
    pub after_end_minutes: i64,
    /// `CAREGRAPH_CHAT_SCHEDULER_POLL_MS` (default 30000): the scheduler's safety-net poll.
    pub scheduler_poll: Duration,
    /// `CAREGRAPH_OUTBOX_BACKOFF_MS` (default 500): first retry delay, doubling per attempt.
    pub outbox_backoff: Duration,
    /// `CAREGRAPH_OUTBOX_MAX_BACKOFF_SECONDS` (default 300): longest retry delay.
    pub outbox_max_backoff: Duration,
    /// `CAREGRAPH_OUTBOX_POLL_MS` (default 1000): how often the worker looks for due rows.
    pub outbox_poll: Duration,
    /// `CAREGRAPH_OUTBOX_LEASE_SECONDS` (default 10, 2 to 300): how long a claim on a row holds
    /// without a heartbeat; a live worker renews it every third of that, so a dead one's rows
    /// are taken over within this time.
    pub outbox_lease: Duration,
}

/// Stream Chat.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// `STREAM_API_KEY`.
    pub api_key: String,
    /// `STREAM_API_SECRET` (secret).
    pub api_secret: SecretString,
    /// `STREAM_BASE_URL` (default `https://chat.stream-io-api.com`).
    pub base_url: String,
}

/// Sendbird.
#[derive(Clone, Debug)]
pub struct SendbirdConfig {
    /// `SENDBIRD_APP_ID`.
    pub app_id: String,
    /// `SENDBIRD_API_TOKEN` (secret).
    pub api_token: SecretString,
    /// `SENDBIRD_BASE_URL` (default `https://api-{APP_ID}.sendbird.com`).
    pub base_url: String,
}

/// Ethora.
#[derive(Clone, Debug)]
pub struct EthoraConfig {
    /// `ETHORA_CHAT_API_URL`.
    pub api_url: String,
    /// `ETHORA_CHAT_APP_ID`.
    pub app_id: String,
    /// `ETHORA_CHAT_APP_SECRET` (secret).
    pub app_secret: SecretString,
    /// `ETHORA_CONFERENCE_HOST` (default `conference.xmpp.ethoradev.com`): the MUC host of room JIDs.
    pub conference_host: String,
    /// `ETHORA_XMPP_SERVICE` (default `wss://xmpp.ethoradev.com:5443/ws`): what client SDKs connect to.
    pub xmpp_service: String,
}

fn required(vars: &Vars<'_>, key: &str, provider: &str) -> anyhow::Result<String> {
    vars.get(key)
        .ok_or_else(|| anyhow::anyhow!("{key}: required when CAREGRAPH_CHAT_PROVIDER={provider}"))
}

fn base_url(raw: String, key: &str) -> anyhow::Result<String> {
    let url = raw.trim().trim_end_matches('/').to_owned();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("{key}: expected an http(s) URL");
    }
    Ok(url)
}

impl ChatConfig {
    fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let provider = match vars
            .get("CAREGRAPH_CHAT_PROVIDER")
            .map(|p| p.trim().to_lowercase())
            .as_deref()
        {
            None | Some("local") => ChatProviderKind::Local,
            Some("stream") => ChatProviderKind::Stream,
            Some("sendbird") => ChatProviderKind::Sendbird,
            Some("ethora") => ChatProviderKind::Ethora,
            Some(other) => bail!(
                "CAREGRAPH_CHAT_PROVIDER: expected local, stream, sendbird or ethora, got {other:?}"
            ),
        };
        let stream = match provider {
            ChatProviderKind::Stream => Some(StreamConfig {
                api_key: required(vars, "STREAM_API_KEY", "stream")?,
                api_secret: SecretString::from(required(vars, "STREAM_API_SECRET", "stream")?),
                base_url: base_url(
                    vars.get("STREAM_BASE_URL")
                        .unwrap_or_else(|| "https://chat.stream-io-api.com".into()),
                    "STREAM_BASE_URL",
                )?,
            }),
            _ => None,
        };
        let sendbird = match provider {
            ChatProviderKind::Sendbird => {
                let app_id = required(vars, "SENDBIRD_APP_ID", "sendbird")?;
                Some(SendbirdConfig {
                    api_token: SecretString::from(required(
                        vars,
                        "SENDBIRD_API_TOKEN",
                        "sendbird",
                    )?),
                    base_url: base_url(
                        vars.get("SENDBIRD_BASE_URL")
                            .unwrap_or_else(|| format!("https://api-{app_id}.sendbird.com")),
                        "SENDBIRD_BASE_URL",
                    )?,
                    app_id,
                })
            }
            _ => None,
        };
        let ethora = match provider {
            ChatProviderKind::Ethora => Some(EthoraConfig {
                api_url: base_url(
                    required(vars, "ETHORA_CHAT_API_URL", "ethora")?,
                    "ETHORA_CHAT_API_URL",
                )?,
                app_id: required(vars, "ETHORA_CHAT_APP_ID", "ethora")?,
                app_secret: SecretString::from(required(vars, "ETHORA_CHAT_APP_SECRET", "ethora")?),
                conference_host: vars
                    .get("ETHORA_CONFERENCE_HOST")
                    .unwrap_or_else(|| "conference.xmpp.ethoradev.com".into()),
                xmpp_service: vars
                    .get("ETHORA_XMPP_SERVICE")
                    .unwrap_or_else(|| "wss://xmpp.ethoradev.com:5443/ws".into()),
            }),
            _ => None,
        };
        let ttl_default = vars.parse("STREAM_TOKEN_TTL", 3600u64)?;
        Ok(Self {
            provider,
            stream,
            sendbird,
            ethora,
            token_ttl: Duration::from_secs(
                vars.parse("CAREGRAPH_CHAT_TOKEN_TTL_SECONDS", ttl_default)?,
            ),
            timeout: vars.seconds("CAREGRAPH_PROVIDER_TIMEOUT_SECONDS", 10)?,
            retries: vars.parse("CAREGRAPH_PROVIDER_RETRIES", 2)?,
            breaker_threshold: vars.parse("CAREGRAPH_PROVIDER_BREAKER_THRESHOLD", 5)?,
            breaker_cooldown: Duration::from_millis(
                (vars.parse::<f64>("CAREGRAPH_PROVIDER_BREAKER_COOLDOWN_SECONDS", 15.0)? * 1000.0)
                    as u64,
            ),
            outbox_max_attempts: vars.parse("CAREGRAPH_OUTBOX_MAX_ATTEMPTS", 12)?,
            tokens_per_minute: vars.parse("CAREGRAPH_CHAT_TOKENS_PER_MINUTE", 10)?,
            default_activation_minutes: vars.parse("CAREGRAPH_CHAT_ACTIVATION_MINUTES", 5)?,
            after_end_minutes: vars.parse("CAREGRAPH_CHAT_AFTER_END_MINUTES", 120)?,
            scheduler_poll: Duration::from_millis(
                vars.parse("CAREGRAPH_CHAT_SCHEDULER_POLL_MS", 30_000)?,
            ),
            outbox_backoff: Duration::from_millis(vars.parse("CAREGRAPH_OUTBOX_BACKOFF_MS", 500)?),
            outbox_max_backoff: vars.seconds("CAREGRAPH_OUTBOX_MAX_BACKOFF_SECONDS", 300)?,
            outbox_poll: Duration::from_millis(vars.parse("CAREGRAPH_OUTBOX_POLL_MS", 1000)?),
            outbox_lease: {
                let lease = vars.seconds("CAREGRAPH_OUTBOX_LEASE_SECONDS", 10)?;
                if !(2..=300).contains(&lease.as_secs()) {
                    bail!("CAREGRAPH_OUTBOX_LEASE_SECONDS: give 2 to 300 seconds");
                }
                lease
            },
        })
    }
}

/// Which SMS gateway relays chat messages to external members.
#[derive(Clone, Debug)]
pub enum SmsConfig {
    /// `CAREGRAPH_SMS_PROVIDER=local` (the default): messages are recorded in the database and
    /// shown through the API; nothing is sent.
    Local {
        /// `CAREGRAPH_SMS_FROM` (default `caregraph`): the sender the local records show.
        from: String,
    },
    /// `CAREGRAPH_SMS_PROVIDER=twilio`: Twilio's Messages API.
    Twilio(TwilioConfig),
}

/// Twilio's Messages API.
#[derive(Clone, Debug)]
pub struct TwilioConfig {
    /// `TWILIO_ACCOUNT_SID`.
    pub account_sid: String,
    /// `TWILIO_AUTH_TOKEN` (secret): basic auth of API calls, and the key of webhook signatures.
    pub auth_token: SecretString,
    /// `TWILIO_FROM_NUMBER`: the E.164 number messages come from (or a messaging service).
    pub from_number: Option<String>,
    /// `TWILIO_MESSAGING_SERVICE_SID`: sends through a messaging service instead of one number.
    pub messaging_service_sid: Option<String>,
    /// `TWILIO_BASE_URL` (default `https://api.twilio.com`).
    pub base_url: String,
    /// `TWILIO_WEBHOOK_URL`: the URL Twilio is configured to call for inbound messages, as it
    /// signs it (default `CAREGRAPH_PUBLIC_URL` + `/webhooks/twilio`, else the request's host).
    pub webhook_url: Option<String>,
}

impl SmsConfig {
    fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let twilio = |key: &str| {
            vars.get(key).map(|v| v.trim().to_owned()).ok_or_else(|| {
                anyhow::anyhow!("{key}: required when CAREGRAPH_SMS_PROVIDER=twilio")
            })
        };
        match vars
            .get("CAREGRAPH_SMS_PROVIDER")
            .map(|p| p.trim().to_lowercase())
            .as_deref()
        {
            None | Some("local") => Ok(Self::Local {
                from: vars
                    .get("CAREGRAPH_SMS_FROM")
                    .map_or_else(|| "caregraph".to_owned(), |f| f.trim().to_owned()),
            }),
            Some("twilio") => {
                let from_number = vars.get("TWILIO_FROM_NUMBER").map(|v| v.trim().to_owned());
                let messaging_service_sid = vars
                    .get("TWILIO_MESSAGING_SERVICE_SID")
                    .map(|v| v.trim().to_owned());
                if from_number.is_none() && messaging_service_sid.is_none() {
                    bail!(
                        "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID: one is required when CAREGRAPH_SMS_PROVIDER=twilio"
                    );
                }
                if let Some(n) = &from_number
                    && crate::domain::care::phone_number(n, "TWILIO_FROM_NUMBER").is_err()
                {
                    bail!("TWILIO_FROM_NUMBER: expected an E.164 number such as +15005550006");
                }
                Ok(Self::Twilio(TwilioConfig {
                    account_sid: twilio("TWILIO_ACCOUNT_SID")?,
                    auth_token: SecretString::from(twilio("TWILIO_AUTH_TOKEN")?),
                    from_number,
                    messaging_service_sid,
                    base_url: base_url(
                        vars.get("TWILIO_BASE_URL")
                            .unwrap_or_else(|| "https://api.twilio.com".into()),
                        "TWILIO_BASE_URL",
                    )?,
                    webhook_url: vars
                        .get("TWILIO_WEBHOOK_URL")
                        .map(|u| base_url(u, "TWILIO_WEBHOOK_URL"))
                        .transpose()?,
                }))
            }
            Some(other) => {
                bail!("CAREGRAPH_SMS_PROVIDER: expected local or twilio, got {other:?}")
            }
        }
    }

    /// Twilio's settings, when Twilio is the gateway.
    pub fn twilio(&self) -> Option<&TwilioConfig> {
        match self {
            Self::Twilio(t) => Some(t),
            Self::Local { .. } => None,
        }
    }
}

/// Jitsi meeting links.
#[derive(Clone, Debug)]
pub struct JitsiConfig {
    /// `JITSI_DOMAIN` (default `meet.jit.si`).
    pub domain: String,
    /// `JITSI_ROOM_PREFIX` (default `caregraph`; `a-z 0-9 -`).
    pub room_prefix: String,
    /// `JITSI_APP_ID`: with the secret, links carry a signed token.
    pub app_id: Option<String>,
    /// `JITSI_APP_SECRET`.
    pub app_secret: Option<SecretString>,
    /// `JITSI_ALLOW_EARLY_MINUTES` (default 15): the room opens this long before the start.
    pub allow_early_minutes: i64,
    /// `JITSI_MAX_LATE_MINUTES` (default 120): the room closes this long after the start.
    pub max_late_minutes: i64,
}

/// Database settings.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `CAREGRAPH_DATABASE_URL` (`sqlite://…` or `postgres://…`); may hold a password.
    pub url: SecretString,
    /// Whether the URL was left unset (the embedded default).
    pub embedded_default: bool,
    /// `CAREGRAPH_DATABASE_MAX_CONNECTIONS` (default 10).
    pub max_connections: u32,
    /// `CAREGRAPH_SQLITE_DIRECT_READS` (default true): on a SQLite file, the batch lookups and
    /// paged lists read on the request's own thread instead of through the pool (`db::direct`).
    pub direct_reads: bool,
}

/// Authentication settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `CAREGRAPH_JWT_SECRET`: the HS256 secret for caregraph's own tokens.
    pub jwt_secret: SecretString,
    /// `CAREGRAPH_JWKS_URL`: verify RS256/ES256 tokens of an identity provider against this key set.
    pub jwks_url: Option<String>,
    /// `CAREGRAPH_JWT_ISSUER`: required `iss` when set (also written into tokens caregraph mints).
    pub issuer: Option<String>,
    /// `CAREGRAPH_JWT_AUDIENCE`: required `aud` when set (also written into tokens caregraph mints).
    pub audience: Option<String>,
    /// `CAREGRAPH_ACCESS_TOKEN_TTL_SECONDS` (default 3600): lifetime of tokens from `login`.
    pub access_token_ttl: Duration,
    /// `CAREGRAPH_JWKS_CACHE_SECONDS` (default 300): how long a fetched key set is trusted.
    pub jwks_cache_ttl: Duration,
    /// `CAREGRAPH_LOGIN_PER_EMAIL_PER_MINUTE` (default 5).
    pub login_per_email_per_minute: u32,
    /// `CAREGRAPH_LOGIN_PER_ADDRESS_PER_MINUTE` (default 20).
    pub login_per_address_per_minute: u32,
}

/// GraphQL limits and switches.
#[derive(Clone, Debug)]
pub struct GraphqlConfig {
    /// `CAREGRAPH_MAX_DEPTH` (default 12). Introspection fields are measured separately (depth 20)
    /// so that GraphiQL's schema query passes.
    pub max_depth: usize,
    /// `CAREGRAPH_MAX_COMPLEXITY` (default 2000).
    pub max_complexity: usize,
    /// `CAREGRAPH_MAX_BODY_BYTES` (default 1 MiB).
    pub max_body_bytes: usize,
    /// `CAREGRAPH_INTROSPECTION`: introspection and field suggestions (default on, off in production).
    pub introspection: bool,
    /// `CAREGRAPH_APQ_CACHE_SIZE` (default 1024): how many persisted queries are remembered.
    pub apq_cache_size: usize,
    /// `CAREGRAPH_WS_INIT_TIMEOUT_SECONDS` (default 10): time allowed for `connection_init`.
    pub ws_init_timeout: Duration,
    /// `CAREGRAPH_WS_KEEPALIVE_SECONDS` (default 15): interval of server pings / `ka` messages.
    pub ws_keepalive: Duration,
    /// `CAREGRAPH_WS_IDLE_TIMEOUT_SECONDS` (default 60): a socket silent this long is closed.
    pub ws_idle_timeout: Duration,
    /// `CAREGRAPH_TRUSTED_DOCUMENTS`: the trusted-documents manifest file (GraphQL Codegen
    /// persisted documents or an Apollo persisted query manifest), loaded at start.
    pub trusted_documents: Option<std::path::PathBuf>,
    /// `CAREGRAPH_TRUSTED_DOCUMENTS_ONLY` (default false): refuse every document that is not in
    /// the manifest (needs `CAREGRAPH_TRUSTED_DOCUMENTS`).
    pub trusted_documents_only: bool,
}

/// Reads variables from a lookup function, so tests can configure without touching the process
/// environment.
pub struct Vars<'a>(Box<Lookup<'a>>);

/// A function from a variable's name to its value.
type Lookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

impl<'a> Vars<'a> {
    /// Variables from a lookup function.
    pub fn new(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self(Box::new(lookup))
    }

    /// Variables from the process environment.
    pub fn from_env() -> Vars<'static> {
        Vars::new(|k| std::env::var(k).ok())
    }

    fn get(&self, key: &str) -> Option<String> {
        (self.0)(key).filter(|v| !v.trim().is_empty())
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{key}: cannot parse {raw:?}: {e}")),
        }
    }

    fn flag(&self, key: &str) -> anyhow::Result<Option<bool>> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(Some(true)),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(Some(false)),
            Some(v) => bail!("{key}: expected true or false, got {v:?}"),
        }
    }

    fn seconds(&self, key: &str, default: u64) -> anyhow::Result<Duration> {
        Ok(Duration::from_secs(self.parse(key, default)?))
    }
}

impl Config {
    /// Reads `.env` (when present) and the process environment.
    pub fn from_env() -> anyhow::Result<Self> {
        // A missing .env is normal; a malformed one is an error worth stopping for.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e).context("reading .env"),
        }
        Self::from_vars(&Vars::from_env())
    }

    /// Builds the configuration from a set of variables, validating it.
    pub fn from_vars(vars: &Vars<'_>) -> anyhow::Result<Self> {
        let env = match vars.get("CAREGRAPH_ENV").as_deref().map(str::trim) {
            Some("production") => Environment::Production,
            None | Some("development") | Some("dev") | Some("test") => Environment::Development,
            Some(other) => bail!("CAREGRAPH_ENV: expected `production` or unset, got {other:?}"),
        };
        let production = env == Environment::Production;

        let jwt_secret = match vars.get("CAREGRAPH_JWT_SECRET") {
            Some(s) if production && (s == DEV_JWT_SECRET || s.len() < 32) => {
                bail!(
                    "CAREGRAPH_JWT_SECRET: production needs a secret of at least 32 characters that is not the development default"
                )
            }
            Some(s) if production && security::low_entropy(&s) => bail!(
                "CAREGRAPH_JWT_SECRET: too predictable for production (a repeated character or few distinct ones); use e.g. `openssl rand -hex 32`"
            ),
            Some(s) => SecretString::from(s),
            None if production => bail!("CAREGRAPH_JWT_SECRET: required in production"),
            None => SecretString::from(DEV_JWT_SECRET),
        };

        let db_url = vars.get("CAREGRAPH_DATABASE_URL");
        let database = DatabaseConfig {
            embedded_default: db_url.is_none(),
            url: SecretString::from(db_url.unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())),
            max_connections: vars.parse("CAREGRAPH_DATABASE_MAX_CONNECTIONS", 10)?,
            direct_reads: vars.flag("CAREGRAPH_SQLITE_DIRECT_READS")?.unwrap_or(true),
        };
        let scheme = database.url.expose_secret();
        if !(scheme.starts_with("sqlite:") || scheme.starts_with("postgres")) {
            bail!("CAREGRAPH_DATABASE_URL: expected a sqlite:// or postgres:// URL");
        }

        let graphql = GraphqlConfig {
            max_depth: vars.parse("CAREGRAPH_MAX_DEPTH", 12)?,
            max_complexity: vars.parse("CAREGRAPH_MAX_COMPLEXITY", 2000)?,
            max_body_bytes: vars.parse("CAREGRAPH_MAX_BODY_BYTES", 1024 * 1024)?,
            introspection: vars.flag("CAREGRAPH_INTROSPECTION")?.unwrap_or(!production),
            apq_cache_size: vars.parse("CAREGRAPH_APQ_CACHE_SIZE", 1024)?,
            ws_init_timeout: vars.seconds("CAREGRAPH_WS_INIT_TIMEOUT_SECONDS", 10)?,
            ws_keepalive: vars.seconds("CAREGRAPH_WS_KEEPALIVE_SECONDS", 15)?,
            ws_idle_timeout: vars.seconds("CAREGRAPH_WS_IDLE_TIMEOUT_SECONDS", 60)?,
            trusted_documents: vars
                .get("CAREGRAPH_TRUSTED_DOCUMENTS")
                .map(|p| std::path::PathBuf::from(p.trim())),
            trusted_documents_only: vars
                .flag("CAREGRAPH_TRUSTED_DOCUMENTS_ONLY")?
                .unwrap_or(false),
        };
        if graphql.trusted_documents_only && graphql.trusted_documents.is_none() {
            bail!(
                "CAREGRAPH_TRUSTED_DOCUMENTS_ONLY: needs CAREGRAPH_TRUSTED_DOCUMENTS (the manifest file of the trusted documents)"
            );
        }
        if graphql.apq_cache_size == 0 {
            bail!("CAREGRAPH_APQ_CACHE_SIZE: must be at least 1");
        }

        let auth = AuthConfig {
            jwt_secret,
            jwks_url: vars.get("CAREGRAPH_JWKS_URL"),
            issuer: vars.get("CAREGRAPH_JWT_ISSUER"),
            audience: vars.get("CAREGRAPH_JWT_AUDIENCE"),
            access_token_ttl: vars.seconds("CAREGRAPH_ACCESS_TOKEN_TTL_SECONDS", 3600)?,
            jwks_cache_ttl: vars.seconds("CAREGRAPH_JWKS_CACHE_SECONDS", 300)?,
            login_per_email_per_minute: vars.parse("CAREGRAPH_LOGIN_PER_EMAIL_PER_MINUTE", 5)?,
            login_per_address_per_minute: vars
                .parse("CAREGRAPH_LOGIN_PER_ADDRESS_PER_MINUTE", 20)?,
        };
        if auth.login_per_email_per_minute == 0 || auth.login_per_address_per_minute == 0 {
            bail!("CAREGRAPH_LOGIN_PER_*_PER_MINUTE: must be at least 1");
        }

        if production && auth.jwks_url.is_some() {
            if auth.issuer.is_none() || auth.audience.is_none() {
                bail!(
                    "CAREGRAPH_JWT_ISSUER and CAREGRAPH_JWT_AUDIENCE: required in production with CAREGRAPH_JWKS_URL, or tokens the identity provider issued for other applications would be accepted"
                );
            }
            if !auth
                .jwks_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
            {
                bail!("CAREGRAPH_JWKS_URL: production needs an https URL");
            }
        }
        let demo = vars.flag("CAREGRAPH_DEMO")?;
        if production && demo == Some(true) {
            bail!("CAREGRAPH_DEMO: demo data is never seeded in production");
        }

        let jitsi = JitsiConfig {
            domain: vars
                .get("JITSI_DOMAIN")
                .unwrap_or_else(|| "meet.jit.si".into())
                .trim()
                .to_lowercase(),
            room_prefix: vars
                .get("JITSI_ROOM_PREFIX")
                .unwrap_or_else(|| "caregraph".into())
                .trim()
                .to_owned(),
            app_id: vars.get("JITSI_APP_ID"),
            app_secret: vars.get("JITSI_APP_SECRET").map(SecretString::from),
            allow_early_minutes: vars.parse("JITSI_ALLOW_EARLY_MINUTES", 15)?,
            max_late_minutes: vars.parse("JITSI_MAX_LATE_MINUTES", 120)?,
        };
        if jitsi.domain.is_empty()
            || !jitsi
                .domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
        {
            bail!("JITSI_DOMAIN: expected a host name such as meet.jit.si");
        }
        if !(1..=20).contains(&jitsi.room_prefix.len())
            || !jitsi
                .room_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("JITSI_ROOM_PREFIX: 1 to 20 characters of a-z, 0-9 and '-'");
        }
        if jitsi.app_id.is_some() != jitsi.app_secret.is_some() {
            bail!("JITSI_APP_ID and JITSI_APP_SECRET: set both or neither");
        }
        if !(0..=1440).contains(&jitsi.allow_early_minutes)
            || !(1..=1440).contains(&jitsi.max_late_minutes)
        {
            bail!("JITSI_ALLOW_EARLY_MINUTES / JITSI_MAX_LATE_MINUTES: minutes between 0 and 1440");
        }

        let listen_backlog = vars.parse("CAREGRAPH_LISTEN_BACKLOG", 4096u32)?;
        if !(1..=65_535).contains(&listen_backlog) {
            bail!(
                "CAREGRAPH_LISTEN_BACKLOG: connections between 1 and 65535, got {listen_backlog}"
            );
        }

        let chat = ChatConfig::from_vars(vars)?;
        let sms = SmsConfig::from_vars(vars)?;
        let realtime = RealtimeConfig::from_vars(vars)?;
        let security = SecurityConfig::from_vars(vars)?;
        let audit = AuditConfig::from_vars(vars)?;
        let mail = MailConfig::from_vars(vars)?;
        security::check_retry_budget(&security, chat.timeout, chat.retries)?;

        Ok(Self {
            env,
            security,
            audit,
            mail,
            jitsi,
            chat,
            sms,
            realtime,
            bind: vars.parse("CAREGRAPH_BIND", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            listen_backlog,
            public_url: vars.get("CAREGRAPH_PUBLIC_URL"),
            database,
            auth,
            graphql,
            demo,
            open_signup: vars.flag("CAREGRAPH_OPEN_SIGNUP")?.unwrap_or(true),
            allow_overbooking: vars.flag("CAREGRAPH_ALLOW_OVERBOOKING")?.unwrap_or(false),
            huge_pages: vars.flag("CAREGRAPH_HUGE_PAGES")?.unwrap_or(false),
            metrics_token: vars.get("CAREGRAPH_METRICS_TOKEN").map(SecretString::from),
            otel: OtelConfig::from_vars(vars)?,
            shutdown_grace: vars.seconds("CAREGRAPH_SHUTDOWN_GRACE_SECONDS", 20)?,
            log_json: match vars.get("CAREGRAPH_LOG_FORMAT").as_deref() {
                Some("json") => true,
                Some("pretty") => false,
                None => production,
                Some(other) => {
                    bail!("CAREGRAPH_LOG_FORMAT: expected pretty or json, got {other:?}")
                }
            },
        })
    }

    /// Whether this is a production deployment.
    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// Whether demo data should be seeded into an empty database.
    pub fn seeds_demo(&self) -> bool {
        !self.is_production() && self.demo.unwrap_or(self.database.embedded_default)
    }

    /// The base URL people use to reach this service.
    pub fn public_base_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
            .trim_end_matches('/')
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_vars(&Vars::new(move |k| map.get(k).cloned()))
    }

    #[test]
    fn sms_is_local_by_default_and_twilio_needs_its_credentials_and_a_sender() {
        assert!(matches!(
            config(&[]).expect("defaults").sms,
            SmsConfig::Local { ref from } if from == "caregraph"
        ));
        let twilio = [
            ("CAREGRAPH_SMS_PROVIDER", "twilio"),
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_FROM_NUMBER", "+15005550006"),
        ];
        let on = config(&twilio).expect("valid");
        let t = on.sms.twilio().expect("twilio");
        assert_eq!(t.base_url, "https://api.twilio.com");
        assert_eq!(t.from_number.as_deref(), Some("+15005550006"));
        let service = config(&[
            ("CAREGRAPH_SMS_PROVIDER", "twilio"),
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_MESSAGING_SERVICE_SID", "MG1"),
        ])
        .expect("a messaging service instead of a number");
        assert!(service.sms.twilio().expect("twilio").from_number.is_none());
        for (drop, variable) in [
            ("TWILIO_ACCOUNT_SID", "TWILIO_ACCOUNT_SID"),
            ("TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN"),
            ("TWILIO_FROM_NUMBER", "TWILIO_FROM_NUMBER"),
        ] {
            let pairs: Vec<(&str, &str)> =
                twilio.iter().copied().filter(|(k, _)| *k != drop).collect();
            let error = config(&pairs).expect_err("refused").to_string();
            assert!(error.contains(variable), "{error}");
        }
        let bad_from = config(&[
            ("CAREGRAPH_SMS_PROVIDER", "twilio"),
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_FROM_NUMBER", "5550006"),
        ])
        .expect_err("not E.164")
        .to_string();
        assert!(bad_from.contains("TWILIO_FROM_NUMBER"), "{bad_from}");
        let other = config(&[("CAREGRAPH_SMS_PROVIDER", "pigeon")])
            .expect_err("unknown")
            .to_string();
        assert!(other.contains("CAREGRAPH_SMS_PROVIDER"), "{other}");
    }

    #[test]
    fn traces_are_off_without_an_endpoint_and_bad_otel_values_name_their_variable() {
        assert!(config(&[]).expect("defaults").otel.is_none());
        let on = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .expect("valid")
            .otel
            .expect("on");
        assert_eq!(on.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(on.service_name, "caregraph");
        assert!((on.sample_ratio - 1.0).abs() < f64::EPSILON);
        let traces = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector/traces",
            ),
            ("OTEL_SERVICE_NAME", "bff"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .expect("valid")
        .otel
        .expect("on");
        assert_eq!(traces.endpoint, "https://collector/traces");
        assert_eq!(traces.service_name, "bff");
        assert!((traces.sample_ratio - 0.25).abs() < f64::EPSILON);
        for (pairs, variable) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_SAMPLER_ARG", "half"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
        ] {
            let error = config(&pairs).expect_err("refused").to_string();
            assert!(error.contains(variable), "{error}");
        }
    }

    #[test]
    fn production_refuses_a_missing_or_default_secret() {
        assert!(config(&[("CAREGRAPH_ENV", "production")]).is_err());
        assert!(
            config(&[
                ("CAREGRAPH_ENV", "production"),
                ("CAREGRAPH_JWT_SECRET", DEV_JWT_SECRET)
            ])
            .is_err()
        );
        let ok = config(&[
            ("CAREGRAPH_ENV", "production"),
            (
                "CAREGRAPH_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-prod",
            ),
        ])
        .expect("a strong secret is accepted");
        assert!(!ok.seeds_demo());
        assert!(!ok.graphql.introspection);
    }

    #[test]
    fn production_never_seeds_demo_data() {
        let err = config(&[
            ("CAREGRAPH_ENV", "production"),
            (
                "CAREGRAPH_JWT_SECRET",
                "0123456789abcdef0123456789abcdef-prod",
            ),
            ("CAREGRAPH_DEMO", "true"),
        ]);
        assert!(err.is_err());
    }

    #[test]
    fn demo_follows_the_embedded_default_unless_told() {
        assert!(config(&[]).expect("defaults").seeds_demo());
        assert!(
            !config(&[("CAREGRAPH_DATABASE_URL", "postgres://localhost/x")])
                .expect("pg")
                .seeds_demo()
        );
        assert!(
            config(&[
                ("CAREGRAPH_DATABASE_URL", "postgres://localhost/x"),
                ("CAREGRAPH_DEMO", "true")
            ])
            .expect("pg demo")
            .seeds_demo()
        );
        assert!(
            !config(&[("CAREGRAPH_DEMO", "false")])
                .expect("off")
                .seeds_demo()
        );
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let c = config(&[
            ("CAREGRAPH_JWT_SECRET", "super-secret-value-1234567890"),
            (
                "CAREGRAPH_DATABASE_URL",
                "postgres://u:hunter2@localhost/db",
            ),
        ])
        .expect("config");
        let debug = format!("{c:?}");
        assert!(!debug.contains("super-secret-value"));
        assert!(!debug.contains("hunter2"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("CAREGRAPH_BIND", "nonsense")]).expect_err("bad bind");
        assert!(err.to_string().contains("CAREGRAPH_BIND"));
        let err = config(&[("CAREGRAPH_DEMO", "maybe")]).expect_err("bad flag");
        assert!(err.to_string().contains("CAREGRAPH_DEMO"));
    }

    #[test]
    fn trusted_documents_only_needs_a_manifest_and_a_real_flag() {
        let off = config(&[]).expect("default");
        assert!(off.graphql.trusted_documents.is_none());
        assert!(!off.graphql.trusted_documents_only);
        let err = config(&[("CAREGRAPH_TRUSTED_DOCUMENTS_ONLY", "true")]).expect_err("no file");
        assert!(
            err.to_string().contains("CAREGRAPH_TRUSTED_DOCUMENTS"),
            "{err}"
        );
        let err = config(&[
            ("CAREGRAPH_TRUSTED_DOCUMENTS", "docs.json"),
            ("CAREGRAPH_TRUSTED_DOCUMENTS_ONLY", "sometimes"),
        ])
        .expect_err("bad flag");
        assert!(
            err.to_string().contains("CAREGRAPH_TRUSTED_DOCUMENTS_ONLY"),
            "{err}"
        );
        let on = config(&[
            ("CAREGRAPH_TRUSTED_DOCUMENTS", "docs.json"),
            ("CAREGRAPH_TRUSTED_DOCUMENTS_ONLY", "true"),
        ])
        .expect("both");
        assert_eq!(
            on.graphql.trusted_documents.as_deref(),
            Some(std::path::Path::new("docs.json"))
        );
        assert!(on.graphql.trusted_documents_only);
    }

    #[test]
    fn audit_settings_default_to_on_10000_records_6_years_a_60_second_read_window_and_name_bad_values()
     {
        let c = config(&[]).expect("defaults");
        assert!(c.audit.enabled);
        assert_eq!(c.audit.queue, 10_000);
        assert_eq!(c.audit.retention_days, 2190);
        assert!(c.audit.key.is_none());
        assert_eq!(c.audit.read_window, Duration::from_secs(60));
        for (value, seconds) in [("0", 0), ("3600", 3600)] {
            let c = config(&[("CAREGRAPH_AUDIT_READ_WINDOW_SECONDS", value)]).expect(value);
            assert_eq!(c.audit.read_window, Duration::from_secs(seconds));
        }
        assert!(
            !config(&[("CAREGRAPH_AUDIT", "false")])
                .expect("off")
                .audit
                .enabled
        );
        for (key, value) in [
            ("CAREGRAPH_AUDIT_RETENTION_DAYS", "0"),
            ("CAREGRAPH_AUDIT_QUEUE", "lots"),
            ("CAREGRAPH_AUDIT_READ_WINDOW_SECONDS", "3601"),
            ("CAREGRAPH_AUDIT_READ_WINDOW_SECONDS", "-1"),
            ("CAREGRAPH_AUDIT_READ_WINDOW_SECONDS", "a minute"),
            ("CAREGRAPH_AUDIT_KEY", "short"),
            ("CAREGRAPH_AUDIT", "maybe"),
        ] {
            let err = config(&[(key, value)]).expect_err(key);
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn invitations_last_72_hours_by_default_and_smtp_needs_a_sender_and_an_smtp_url() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.mail.invitation_ttl, Duration::from_secs(72 * 3600));
        assert!(c.mail.smtp_url.is_none());
        let on = config(&[
            (
                "CAREGRAPH_SMTP_URL",
                "smtp://u:hunter2@mail.example.org:587?tls=required",
            ),
            ("CAREGRAPH_MAIL_FROM", "Clinic <noreply@example.org>"),
            ("CAREGRAPH_INVITATION_TTL_HOURS", "24"),
        ])
        .expect("valid");
        assert_eq!(on.mail.invitation_ttl, Duration::from_secs(24 * 3600));
        assert!(!format!("{on:?}").contains("hunter2"));
        for (pairs, variable) in [
            (
                vec![("CAREGRAPH_INVITATION_TTL_HOURS", "0")],
                "CAREGRAPH_INVITATION_TTL_HOURS",
            ),
            (
                vec![("CAREGRAPH_INVITATION_TTL_HOURS", "721")],
                "CAREGRAPH_INVITATION_TTL_HOURS",
            ),
            (
                vec![("CAREGRAPH_SMTP_URL", "smtp://mail.example.org")],
                "CAREGRAPH_MAIL_FROM",
            ),
            (
                vec![
                    ("CAREGRAPH_SMTP_URL", "http://u:hunter2@mail.example.org"),
                    ("CAREGRAPH_MAIL_FROM", "noreply@example.org"),
                ],
                "CAREGRAPH_SMTP_URL",
            ),
        ] {
            let error = config(&pairs).expect_err(variable).to_string();
            assert!(error.contains(variable), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn huge_pages_are_off_unless_asked_for() {
        assert!(!config(&[]).expect("default").huge_pages);
        let set = config(&[("CAREGRAPH_HUGE_PAGES", "true")]).expect("a flag");
        assert!(set.huge_pages);
        let err = config(&[("CAREGRAPH_HUGE_PAGES", "big")]).expect_err("not a flag");
        assert!(err.to_string().contains("CAREGRAPH_HUGE_PAGES"), "{err}");
    }

    #[test]
    fn the_listen_backlog_defaults_to_4096_and_refuses_values_out_of_range() {
        assert_eq!(config(&[]).expect("default").listen_backlog, 4096);
        let set = config(&[("CAREGRAPH_LISTEN_BACKLOG", "1024")]).expect("in range");
        assert_eq!(set.listen_backlog, 1024);
        for bad in ["0", "65536", "-1", "many"] {
            let err = config(&[("CAREGRAPH_LISTEN_BACKLOG", bad)]).expect_err(bad);
            assert!(
                err.to_string().contains("CAREGRAPH_LISTEN_BACKLOG"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_outbox_lease_defaults_to_10_seconds_and_refuses_values_out_of_range() {
        assert_eq!(
            config(&[]).expect("default").chat.outbox_lease,
            Duration::from_secs(10)
        );
        let set = config(&[("CAREGRAPH_OUTBOX_LEASE_SECONDS", "2")]).expect("in range");
        assert_eq!(set.chat.outbox_lease, Duration::from_secs(2));
        for bad in ["0", "1", "301", "-3", "soon"] {
            let err = config(&[("CAREGRAPH_OUTBOX_LEASE_SECONDS", bad)]).expect_err(bad);
            assert!(
                format!("{err:#}").contains("CAREGRAPH_OUTBOX_LEASE_SECONDS"),
                "{bad}: {err:#}"
            );
        }
    }
}
