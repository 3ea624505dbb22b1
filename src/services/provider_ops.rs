//! What admins see of the provider side effects their organisation caused: failed (dead)
//! outbox rows, and putting one back in the queue.

use super::access::manager_of;
use crate::{
    auth::Viewer,
    domain::OrgId,
    error::{AppError, AppResult},
    outbox::{Outbox, Row, status},
};

/// Admin view of the outbox.
#[derive(Clone)]
pub struct ProviderOpsService {
    db: crate::db::Db,
    outbox: Outbox,
}

impl ProviderOpsService {
    /// Builds the service.
    pub fn new(db: crate::db::Db, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// The organisation's operations the provider never accepted (OWNER/ADMIN), newest first.
    pub async fn failed(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        limit: Option<i32>,
    ) -> AppResult<Vec<Row>> {
        manager_of(&self.db, viewer, org_id).await?;
        let limit = match limit {
            None => 50,
            Some(n @ 1..=200) => n as u64,
            Some(_) => return Err(AppError::bad_input("limit", "must be between 1 and 200")),
        };
        Ok(self
            .outbox
            .rows(&org_id.to_string(), status::DEAD, limit)
            .await?)
    }

    /// Queues a failed operation again (OWNER/ADMIN).
    pub async fn retry(&self, viewer: &Viewer, org_id: OrgId, id: &str) -> AppResult<Row> {
        manager_of(&self.db, viewer, org_id).await?;
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(AppError::bad_input("id", "not a valid operation id"));
        }
        self.outbox
            .retry(&org_id.to_string(), id)
            .await?
            .ok_or(AppError::NotFound("failed provider operation"))
    }
}
