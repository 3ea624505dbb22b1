//! The one rule for who may read a chat session, evaluated on current facts (memberships,
//! guardianships, case participation, care-team entitlement), and every way a resolver reaches sessions:
//! by id, in batches (nested `chat` fields), and as the viewer's list. Each hands out
//! [`Readable`] sessions, which only this layer can make.

use std::collections::HashSet;

use super::ChatService;
use crate::{
    auth::Viewer,
    db,
    domain::{
        ChatSessionId, Membership, OrgId, User, UserId,
        care::{CaseRole, ConsentScope},
        chat::{ChatCategory, ChatRole, ChatSession, SessionKey},
        pagination::{Page, PageRequest},
    },
    error::{AppError, AppResult},
    services::{
        access::{Readable, member_of},
        appointments::{consent_covers, is_participant, outside_support},
    },
};

/// Whether `memberships` hold an active OWNER/ADMIN role in `org`.
fn manages(memberships: &[Membership], org: OrgId) -> bool {
    memberships
        .iter()
        .any(|m| m.org_id == org && m.active && m.role.manages_organization())
}

/// Whether `memberships` hold an active membership of `org`.
fn active_in(memberships: &[Membership], org: OrgId) -> bool {
    memberships.iter().any(|m| m.org_id == org && m.active)
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
        let memberships = self.memberships_of(me.id).await?;
        if self
            .may_read(&session, me.id, role.is_some(), &memberships)
            .await?
        {
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
        let memberships = self.memberships_of(me.id).await?;
        if self
            .may_read(&session, me.id, is_member, &memberships)
            .await?
        {
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
        let mut readable = Vec::with_capacity(sessions.len());
        for s in sessions {
            if self
                .may_read(&s, me.id, member_of.contains(&s.id), &memberships)
                .await?
            {
                readable.push(Readable::granted(s));
            }
        }
        Ok(readable)
    }

    /// The one read rule: an active OWNER/ADMIN of the session's organisation, or a member whose
    /// place in it still rests on current facts ([`Self::stands_in`]).
    async fn may_read(
        &self,
        session: &ChatSession,
        user: UserId,
        is_member: bool,
        memberships: &[Membership],
    ) -> AppResult<bool> {
        if manages(memberships, session.org_id) {
            return Ok(true);
        }
        Ok(is_member && self.stands_in(session, user, memberships).await?)
    }

    /// Whether a member's place in a session still rests on current facts: a colleague or
    /// group chat on an active membership of its organisation (either one, across two); an
    /// appointment chat on taking part in the appointment now (a guardian who still is one, staff
    /// who are still active, see [`is_participant`]); a case room on being a participant now
    /// (staff also active in the organisation); a care-team chat on being entitled to it now
    /// (active, and consented when outside). A member row alone proves nothing.
    async fn stands_in(
        &self,
        session: &ChatSession,
        user: UserId,
        memberships: &[Membership],
    ) -> AppResult<bool> {
        let staff = active_in(memberships, session.org_id);
        Ok(match session.category {
            ChatCategory::Group => staff,
            ChatCategory::Colleague => {
                staff
                    || session
                        .counterpart_org_id
                        .is_some_and(|o| active_in(memberships, o))
            }
            ChatCategory::Client => {
                let Some(id) = session.appointment_id else {
                    return Ok(false);
                };
                let Some(a) = db::appointments::find(&self.db, id).await? else {
                    return Ok(false);
                };
                let support = db::appointments::support_staff_of(&self.db, &[id]).await?;
                let guardians = db::patients::guardians_of(&self.db, &[a.patient_id]).await?;
                is_participant(
                    &a,
                    user,
                    support.iter().map(|(_, u)| *u),
                    &guardians,
                    memberships,
                ) && (!outside_support(&a, user, &guardians, memberships)
                    || consent_covers(
                        &self.db,
                        &a,
                        memberships,
                        ConsentScope::Messaging,
                        self.clock.now(),
                    )
                    .await?)
            }
            ChatCategory::Case | ChatCategory::CareTeam => {
                match db::chat_sessions::keys_of(&self.db, &[session.id])
                    .await?
                    .pop()
                    .map(|(_, k)| k)
                {
                    Some(SessionKey::Case(case)) => db::cases::participants_of(&self.db, &[case])
                        .await?
                        .iter()
                        .any(|p| p.user_id == user && (p.role == CaseRole::Patient || staff)),
                    Some(SessionKey::CareTeam(team)) => {
                        match db::care_teams::find(&self.db, team).await? {
                            Some(team) => self.teams.chat_members(&team).await?.contains(&user),
                            None => false,
                        }
                    }
                    _ => false,
                }
            }
        })
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
