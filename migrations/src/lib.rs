//! caregraph's database migrations.
//!
//! Each migration is self-contained: it names its tables and columns itself and never imports
//! the application's entities, so old migrations keep meaning what they meant. Every migration
//! runs on both SQLite (the embedded default) and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_people;
mod m20261121_000002_care;
mod m20261121_000003_chat;
mod m20261121_000004_chat_sessions;
mod m20261121_000005_org_chat_settings;
mod m20261121_000006_webhook_deliveries;
mod m20261206_000001_consent_lapses;
mod m20261206_000002_compliance_invitations;
mod m20261206_000003_audit;
mod m20261207_000001_audit_hardening;
mod m20261207_000002_availability;
mod m20261207_000003_audit_unsealed_partial;
mod m20261207_000004_sms_members;
mod m20261207_000005_invitations;

/// The ordered list of caregraph migrations.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_people::Migration),
            Box::new(m20261121_000002_care::Migration),
            Box::new(m20261121_000003_chat::Migration),
            Box::new(m20261121_000004_chat_sessions::Migration),
            Box::new(m20261121_000005_org_chat_settings::Migration),
            Box::new(m20261121_000006_webhook_deliveries::Migration),
            Box::new(m20261206_000001_consent_lapses::Migration),
            Box::new(m20261206_000002_compliance_invitations::Migration),
            Box::new(m20261206_000003_audit::Migration),
            Box::new(m20261207_000001_audit_hardening::Migration),
            Box::new(m20261207_000002_availability::Migration),
            Box::new(m20261207_000003_audit_unsealed_partial::Migration),
            Box::new(m20261207_000004_sms_members::Migration),
            Box::new(m20261207_000005_invitations::Migration),
        ]
    }
}
