//! Use cases. Every authorization decision is made here, never in resolvers: a service method
//! takes the [`Viewer`](crate::auth::Viewer) and checks it before it reads or changes anything.

pub mod access;
pub mod accounts;
pub mod demo;
pub mod organizations;

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{auth::Authenticator, config::Config};

/// Every service, cheap to clone; built once by `App::build`.
#[derive(Clone)]
pub struct Services {
    /// Sign-in, tokens and account bootstrap.
    pub accounts: accounts::AccountService,
    /// Organisations and memberships.
    pub organizations: organizations::OrganizationService,
    /// The database, for readiness checks and loaders.
    pub db: DatabaseConnection,
}

impl Services {
    /// Wires the services.
    pub fn new(config: Arc<Config>, db: DatabaseConnection, auth: Authenticator) -> Self {
        Self {
            accounts: accounts::AccountService::new(config.clone(), db.clone(), auth),
            organizations: organizations::OrganizationService::new(config, db.clone()),
            db,
        }
    }
}
