//! Who may read a chat session, and the lists of sessions a viewer may see.

use super::ChatService;
use crate::{
    auth::Viewer,
    db,
    domain::{
        ChatSessionId, OrgId, User,
        chat::{ChatCategory, ChatRole, ChatSession},
        pagination::{Page, PageRequest},
    },
    error::{AppError, AppResult},
    services::access::member_of,
};

/// Who may read a session: its members, and the active OWNER/ADMIN of its organisation (given
/// whether the viewer is a member and the viewer's memberships).
pub fn may_read(
    session: &ChatSession,
    is_member: bool,
    memberships: &[crate::domain::Membership],
) -> bool {
    is_member
        || memberships
            .iter()
            .any(|m| m.org_id == session.org_id && m.active && m.role.manages_organization())
}

impl ChatService {
    /// A session the viewer may read: a member, or an OWNER/ADMIN of its organisation.
    pub async fn session(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
    ) -> AppResult<(ChatSession, Option<ChatRole>)> {
        let me = viewer.user()?;
        let session = db::chat_sessions::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("chat session"))?;
        let members =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id)).await?;
        let role = members
            .iter()
            .find(|(_, u, _)| *u == me.id)
            .map(|(_, _, r)| *r);
        if role.is_some() {
            return Ok((session, role));
        }
        let memberships: Vec<_> =
            db::organizations::find_membership(&self.db, session.org_id, me.id)
                .await?
                .into_iter()
                .collect();
        if may_read(&session, false, &memberships) {
            Ok((session, None))
        } else {
            Err(AppError::NotFound("chat session"))
        }
    }

    /// The viewer's sessions in an organisation, newest activity first (staff, or a client of
    /// one of its patients).
    pub async fn list(
        &self,
        viewer: &Viewer,
        org: OrgId,
        category: Option<ChatCategory>,
        include_closed: bool,
        page: &PageRequest,
    ) -> AppResult<Page<ChatSession>> {
        let me = self.lister(viewer, org).await?;
        db::chat_sessions::list_for_member(&self.db, org, me.id, category, include_closed, page)
            .await
    }

    /// Who may list (and follow) their own sessions in an organisation: its active members, and
    /// the clients of its patients; anyone else gets `NOT_FOUND`.
    pub async fn lister(&self, viewer: &Viewer, org: OrgId) -> AppResult<User> {
        match member_of(&self.db, viewer, org).await {
            Ok((me, _)) => Ok(me),
            Err(AppError::NotFound(what)) => {
                let me = viewer.user()?;
                let client = db::patients::of_guardian(&self.db, me.id)
                    .await?
                    .iter()
                    .any(|p| p.org_id == org);
                if client {
                    Ok(me.clone())
                } else {
                    Err(AppError::NotFound(what))
                }
            }
            Err(e) => Err(e),
        }
    }
}
