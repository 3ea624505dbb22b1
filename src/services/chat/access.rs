//! The one rule for who may read a chat session, and every way a resolver reaches sessions:
//! by id, in batches (nested `chat` fields), and as the viewer's list. Each hands out
//! [`Readable`] sessions, which only this layer can make.

use std::collections::HashSet;

use super::ChatService;
use crate::{
    auth::Viewer,
    db,
    domain::{
        ChatSessionId, Membership, OrgId, User, UserId,
        chat::{ChatCategory, ChatRole, ChatSession},
        pagination::{Page, PageRequest},
    },
    error::{AppError, AppResult},
    services::access::{Readable, member_of},
};

/// Who may read a session: its members, and the active OWNER/ADMIN of its organisation (given
/// whether the viewer is a member and the viewer's memberships).
fn may_read(session: &ChatSession, is_member: bool, memberships: &[Membership]) -> bool {
    is_member
        || memberships
            .iter()
            .any(|m| m.org_id == session.org_id && m.active && m.role.manages_organization())
}

impl ChatService {
    /// A session the viewer may read (a member, or an OWNER/ADMIN of its organisation), with
    /// the viewer's part in it; anyone else gets `NOT_FOUND`.
    pub async fn session(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
    ) -> AppResult<(Readable<ChatSession>, Option<ChatRole>)> {
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
        let memberships: Vec<_> = match role {
            Some(_) => Vec::new(),
            None => db::organizations::find_membership(&self.db, session.org_id, me.id)
                .await?
                .into_iter()
                .collect(),
        };
        if may_read(&session, role.is_some(), &memberships) {
            Ok((Readable::granted(session), role))
        } else {
            Err(AppError::NotFound("chat session"))
        }
    }

    /// `session` (just read or changed by the viewer's own call) if the viewer may read it;
    /// `NOT_FOUND` otherwise.
    pub async fn check(
        &self,
        viewer: &Viewer,
        session: ChatSession,
    ) -> AppResult<Readable<ChatSession>> {
        let me = viewer.user()?;
        let is_member = db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id))
            .await?
            .iter()
            .any(|(_, u, _)| *u == me.id);
        let memberships = match is_member {
            true => Vec::new(),
            false => self.memberships_of(me.id).await?,
        };
        if may_read(&session, is_member, &memberships) {
            Ok(Readable::granted(session))
        } else {
            Err(AppError::NotFound("chat session"))
        }
    }

    /// The sessions among `ids` that the viewer may read, in three statements whatever their
    /// number (for nested `chat` fields, batched by the loaders); the others are left out.
    pub async fn readable(
        &self,
        viewer: &Viewer,
        ids: &[ChatSessionId],
    ) -> AppResult<Vec<Readable<ChatSession>>> {
        let Some(me) = viewer.user_opt() else {
            return Ok(Vec::new());
        };
        let sessions = db::chat_sessions::find_many(&self.db, ids).await?;
        let member_of: HashSet<ChatSessionId> = db::chat_sessions::members_of(&self.db, ids)
            .await?
            .into_iter()
            .filter(|(_, u, _)| *u == me.id)
            .map(|(s, _, _)| s)
            .collect();
        let memberships = self.memberships_of(me.id).await?;
        Ok(sessions
            .into_iter()
            .filter(|s| may_read(s, member_of.contains(&s.id), &memberships))
            .map(Readable::granted)
            .collect())
    }

    /// The viewer's memberships (every organisation).
    async fn memberships_of(&self, user: UserId) -> AppResult<Vec<Membership>> {
        db::organizations::memberships_of_users(&self.db, &[user]).await
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
    ) -> AppResult<Page<Readable<ChatSession>>> {
        let me = self.lister(viewer, org).await?;
        let page = db::chat_sessions::list_for_member(
            &self.db,
            org,
            me.id,
            category,
            include_closed,
            page,
        )
        .await?;
        // Each row is one of the viewer's own sessions: a member may read it.
        Ok(page.map(Readable::granted))
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
