//! caregraph's integration tests: one binary, each test boots the real app (`App::build`) on
//! port 0 with its own database (a SQLite file, or a fresh PostgreSQL database when
//! `CAREGRAPH_TEST_POSTGRES_URL` is set).

mod appointments;
mod audit;
mod audit_hardening;
mod audit_nested;
mod audit_query;
mod audit_sealing;
mod auth;
mod browser;
mod care;
mod cases;
mod chat_access;
mod chat_authz;
mod chat_events;
mod chat_providers;
mod chat_rules;
mod chat_sessions;
mod cli;
mod colleagues;
mod compliance_groups;
mod configuration;
mod crash;
mod fakes;
mod hardening;
mod health;
mod helpers;
mod metrics;
mod organizations;
mod outbox;
mod provider_errors;
mod provider_ethora;
mod provider_local;
mod provider_sendbird;
mod provider_stream;
mod realtime;
mod replicas;
mod revocation;
mod security;
mod storm;
mod sweep;
mod traces;
mod transport;
mod trusted_documents;
mod webhooks;
mod websocket;
