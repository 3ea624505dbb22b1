//! Use cases. Every authorization decision is made here, never in resolvers: a service method
//! takes the [`Viewer`](crate::auth::Viewer) and checks it before it reads or changes anything.

pub mod access;
pub mod accounts;
pub mod appointments;
pub mod audit_export;
pub mod audit_trail;
pub mod care_teams;
pub mod cases;
pub mod chat;
pub mod consent;
pub mod demo;
pub mod invitations;
pub mod lookups;
pub mod organizations;
pub mod patients;
pub mod provider_ops;
pub mod sms;
pub mod webhooks;

use std::sync::Arc;

use secrecy::ExposeSecret;

use crate::{
    auth::Authenticator,
    clock::SharedClock,
    config::Config,
    db::QueryStats,
    events::EventBus,
    outbox::Outbox,
    providers::{chat::ChatStack, meetings::MeetingLinks, sms::SmsGateway},
    telemetry::metrics::Metrics,
};

/// Every service, cheap to clone; built once by `App::build`.
#[derive(Clone)]
pub struct Services {
    /// Sign-in, tokens and account bootstrap.
    pub accounts: accounts::AccountService,
    /// Organisations, memberships and colleague search.
    pub organizations: organizations::OrganizationService,
    /// Patients and guardians.
    pub patients: patients::PatientService,
    /// Consent and compliance groups.
    pub consent: consent::ConsentService,
    /// Invitations of staff and guardians.
    pub invitations: Arc<invitations::InvitationService>,
    /// Care teams.
    pub care_teams: care_teams::CareTeamService,
    /// Cases.
    pub cases: cases::CaseService,
    /// Appointments and meetings.
    pub appointments: appointments::AppointmentService,
    /// Chat sessions: the use cases.
    pub chats: chat::ChatService,
    /// The audit trail's queries, exports and access logs.
    pub audit_trail: audit_trail::AuditTrailService,
    /// Batch lookups for the dataloaders.
    pub lookups: lookups::Lookups,
    /// The clock.
    pub clock: SharedClock,
    /// The chat provider port (and the local provider, when configured).
    pub chat_provider: ChatStack,
    /// The outbox of provider side effects, and its worker.
    pub outbox: Outbox,
    /// Domain events for subscriptions.
    pub events: EventBus,
    /// Provider webhook deliveries.
    pub webhooks: webhooks::WebhookService,
    /// Admins' view of failed provider operations.
    pub provider_ops: provider_ops::ProviderOpsService,
    /// The database, for readiness checks.
    pub db: crate::db::Db,
    /// SQL statement counts.
    pub stats: QueryStats,
    /// The app's metrics.
    pub metrics: Arc<Metrics>,
    /// The audit trail's queue, writer and sealer.
    pub audit: crate::audit::AuditLog,
}

/// What the services are built from.
pub struct Parts {
    /// Configuration.
    pub config: Arc<Config>,
    /// The database.
    pub db: crate::db::Db,
    /// Its statement counter.
    pub stats: QueryStats,
    /// Token verification and minting.
    pub auth: Authenticator,
    /// The clock.
    pub clock: SharedClock,
    /// Meeting links.
    pub meetings: Arc<dyn MeetingLinks>,
    /// The chat provider.
    pub chat: ChatStack,
    /// The outbox of provider side effects.
    pub outbox: Outbox,
    /// The event bus.
    pub events: EventBus,
    /// The app's metrics.
    pub metrics: Arc<Metrics>,
    /// The audit trail.
    pub audit: crate::audit::AuditLog,
    /// The mail queue (invitation mails).
    pub mail: crate::mail::MailQueue,
    /// The base URL people reach this service at (`CAREGRAPH_PUBLIC_URL`, else the bound
    /// address), for the URLs caregraph hands out.
    pub public_url: String,
    /// The SMS gateway of external chat members.
    pub sms: Arc<dyn SmsGateway>,
}

impl Services {
    /// Wires the services.
    pub fn new(parts: Parts) -> Self {
        let Parts {
            config,
            db,
            stats,
            auth,
            clock,
            meetings,
            chat,
            outbox,
            events,
            metrics,
            audit,
            mail,
            public_url,
            sms,
        } = parts;
        // The outbox delivers relayed SMS through it.
        outbox.set_sms_relay(Arc::new(sms::SmsDelivery::new(
            db.clone(),
            sms,
            clock.clone(),
            audit.clone(),
        )));
        let chats = chat::ChatService::new(
            db.clone(),
            outbox.clone(),
            chat.clone(),
            clock.clone(),
            events.clone(),
            chat::ChatSettings {
                token_ttl: config.chat.token_ttl,
                tokens_per_minute: config.chat.tokens_per_minute,
                default_activation_minutes: config.chat.default_activation_minutes,
                after_end_minutes: config.chat.after_end_minutes,
            },
            audit.clone(),
        );
        let appointments = appointments::AppointmentService::new(
            db.clone(),
            clock.clone(),
            meetings,
            &config.jitsi,
            chats.clone(),
            config.allow_overbooking,
        );
        let accounts = accounts::AccountService::new(config.clone(), db.clone(), auth);
        Self {
            invitations: Arc::new(invitations::InvitationService::new(
                &config,
                db.clone(),
                clock.clone(),
                chats.clone(),
                accounts.clone(),
                mail,
                public_url,
            )),
            accounts,
            organizations: organizations::OrganizationService::new(
                config.clone(),
                db.clone(),
                chats.clone(),
            ),
            patients: patients::PatientService::new(db.clone(), chats.clone()),
            consent: consent::ConsentService::new(db.clone(), clock.clone(), chats.clone()),
            care_teams: care_teams::CareTeamService::new(db.clone(), clock.clone(), chats.clone()),
            cases: cases::CaseService::new(db.clone(), chats.clone()),
            appointments,
            webhooks: webhooks::WebhookService::new(db.clone(), chats.clone(), clock.clone()),
            chats,
            lookups: lookups::Lookups::new(db.clone()),
            audit_trail: audit_trail::AuditTrailService::new(
                db.clone(),
                clock.clone(),
                config.auth.jwt_secret.expose_secret().as_bytes(),
                config.public_url.clone(),
                audit.clone(),
            ),
            clock,
            chat_provider: chat,
            provider_ops: provider_ops::ProviderOpsService::new(db.clone(), outbox.clone()),
            outbox,
            events,
            db,
            stats,
            metrics,
            audit,
        }
    }
}
