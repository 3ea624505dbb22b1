//! The [`Viewer`]: who is calling, resolved the same way from an HTTP bearer header and from a
//! WebSocket `connection_init` payload.

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::{
    domain::{Membership, User},
    error::{AppError, AppResult},
};

/// The caller of one request or WebSocket connection.
#[derive(Clone, Debug, Default)]
pub struct Viewer {
    user: Option<User>,
    /// When the caller's access token expires (subscriptions end then).
    pub token_expires_at: Option<DateTime<Utc>>,
    /// The client's network address, for rate limits.
    pub client_ip: Option<IpAddr>,
    /// Where the service layer records what this caller reads and changes.
    pub audit: crate::audit::AuditScope,
    /// The caller's memberships, once read, for an operation that may remember them.
    memberships: Option<Arc<OnceCell<Vec<Membership>>>>,
}

impl Viewer {
    /// A caller without credentials.
    pub fn anonymous(client_ip: Option<IpAddr>) -> Self {
        Self {
            user: None,
            token_expires_at: None,
            client_ip,
            audit: crate::audit::AuditScope::default(),
            memberships: None,
        }
    }

    /// A signed-in caller.
    pub fn signed_in(
        user: User,
        token_expires_at: DateTime<Utc>,
        client_ip: Option<IpAddr>,
    ) -> Self {
        Self {
            user: Some(user),
            token_expires_at: Some(token_expires_at),
            client_ip,
            audit: crate::audit::AuditScope::default(),
            memberships: None,
        }
    }

    /// The signed-in user, or `UNAUTHENTICATED`.
    pub fn user(&self) -> AppResult<&User> {
        self.user
            .as_ref()
            .ok_or_else(|| AppError::Unauthenticated("sign in first".into()))
    }

    /// The same caller, recording into `audit`.
    pub fn with_audit(mut self, audit: crate::audit::AuditScope) -> Self {
        self.audit = audit;
        self
    }

    /// The signed-in user, if any.
    pub fn user_opt(&self) -> Option<&User> {
        self.user.as_ref()
    }

    /// The same caller, whose memberships are read at most once from now on: for one query,
    /// which changes nothing it reads. Never for a connection or a subscription, which must see
    /// a lost right at its next operation or event.
    pub fn remembering_memberships(mut self) -> Self {
        self.memberships = Some(Arc::default());
        self
    }

    /// Where the caller's memberships are remembered, if they are.
    pub fn remembered_memberships(&self) -> Option<&OnceCell<Vec<Membership>>> {
        self.memberships.as_deref()
    }
}
