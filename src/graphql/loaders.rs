//! Per-request dataloaders: every per-row lookup in a list goes through here, so the number of
//! SQL statements for a page does not grow with the page size.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};

use crate::{
    domain::{OrgId, Organization, User, UserId},
    services::Services,
};

/// The loader behind every per-request `DataLoader`; one `Loader` impl per key type.
pub struct AppLoader {
    services: Services,
}

/// Builds the loaders for one request (their caches must never outlive it: they hold what this
/// viewer may see).
pub fn per_request(services: &Services) -> DataLoader<AppLoader> {
    DataLoader::new(
        AppLoader {
            services: services.clone(),
        },
        tokio::spawn,
    )
    .max_batch_size(500)
}

impl Loader<UserId> for AppLoader {
    type Value = User;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[UserId]) -> Result<HashMap<UserId, User>, Self::Error> {
        let users = self.services.organizations.users(keys).await?;
        Ok(users.into_iter().map(|u| (u.id, u)).collect())
    }
}

impl Loader<OrgId> for AppLoader {
    type Value = Organization;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[OrgId]) -> Result<HashMap<OrgId, Organization>, Self::Error> {
        let orgs = self.services.organizations.organizations(keys).await?;
        Ok(orgs.into_iter().map(|o| (o.id, o)).collect())
    }
}
