//! caregraph: a GraphQL backend-for-frontend for care coordination.
//!
//! Requests enter through [`http`], resolve a [`auth::Viewer`], and run the [`graphql`] schema,
//! whose thin resolvers call [`services`]. Services hold the use cases over [`domain`] types and
//! read and write through [`db`]. [`app::App::build`] wires it all, for production and tests alike.

pub mod app;
pub mod audit;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod mail;
pub mod outbox;
pub mod process;
pub mod providers;
pub mod services;
pub mod telemetry;
