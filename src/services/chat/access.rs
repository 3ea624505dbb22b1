//! The one rule for who may read a chat session, evaluated on current facts (memberships,
//! guardianships, case participation, care-team entitlement), and every way a resolver reaches sessions:
//! by id, in batches (nested `chat` fields), and as the viewer's list. Each hands out
//! [`Readable`] sessions, which only this layer can make.

use std::collections::HashSet;

use super::ChatService;
use crate::{
    audit::{AuditEntity, AuditEntry},
    auth::Viewer,
    db,
    domain::{
        AppointmentId, CaseId, ChatSessionId, Membership, OrgId, PatientId, User, UserId,
        care::{CaseRole, ConsentScope},
        chat::{ChatCategory, ChatRole, ChatSession, SessionKey},
        pagination::{Page, PageRequest},
    },
    error::{AppError, AppResult},
    services::{
        access::Readable,
        appointments::{consent_covers, is_participant, outside_support},
        care_teams::chat_members,
    },
};

/// Whether `memberships` hold an active OWNER/ADMIN role in `org`.
pub(super) fn manages(memberships: &[Membership], org: OrgId) -> bool {
    memberships
        .iter()
        .any(|m| m.org_id == org && m.active && m.role.manages_organization())
}

/// The audit entry of a read of `session`.
fn session_read(session: &ChatSession) -> AuditEntry {
    AuditEntry::read(AuditEntity::ChatSession, session.id).org(session.org_id)
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
        let Some(session) = db::chat_sessions::find(&self.db, id).await? else {
            viewer
                .audit
                .record(AuditEntry::read(AuditEntity::ChatSession, id).denied());
            return Err(AppError::NotFound("chat session"));
        };
        let members =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id)).await?;
        let role = members
            .iter()
            .find(|(_, u, _)| *u == me.id)
            .map(|(_, _, r)| *r);
        let memberships = self.memberships_of(viewer).await?;
        if self
            .may_read(&session, me.id, role.is_some(), &memberships)
            .await?
        {
            viewer.audit.record(session_read(&session));
            Ok((Readable::granted(session), role))
        } else {
            viewer.audit.record(session_read(&session).denied());
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
        let is_member = !db::chat_sessions::joined_by(&self.db, &[session.id], me.id)
            .await?
            .is_empty();
        let memberships = self.memberships_of(viewer).await?;
        if self
            .may_read(&session, me.id, is_member, &memberships)
            .await?
        {
            Ok(Readable::granted(session))
        } else {
            viewer.audit.record(session_read(&session).denied());
            Err(AppError::NotFound("chat session"))
        }
    }

    /// The sessions among `ids` that the viewer may read, read in a few statements whatever
    /// their number (the sessions, the viewer's member rows among those of organisations they do
    /// not manage, then [`Self::standing`]'s facts; for nested `chat` fields, batched by the
    /// loaders); the others are left out.
    pub async fn readable(
        &self,
        viewer: &Viewer,
        ids: &[ChatSessionId],
    ) -> AppResult<Vec<Readable<ChatSession>>> {
        self.readable_among(viewer, Vec::new(), ids).await
    }

    /// [`Self::readable`] for `sessions` the caller has just read plus the sessions `ids`
    /// (which are read here): one statement fewer when every session is at hand.
    pub async fn readable_among(
        &self,
        viewer: &Viewer,
        mut sessions: Vec<ChatSession>,
        ids: &[ChatSessionId],
    ) -> AppResult<Vec<Readable<ChatSession>>> {
        let Some(me) = viewer.user_opt() else {
            return Ok(Vec::new());
        };
        if !ids.is_empty() {
            sessions.extend(db::chat_sessions::find_many(&self.db, ids).await?);
        }
        let memberships = self.memberships_of(viewer).await?;
        // Only a member who does not manage the organisation needs the facts behind their row.
        let (managed, rest): (Vec<ChatSession>, Vec<ChatSession>) = sessions
            .into_iter()
            .partition(|s| manages(&memberships, s.org_id));
        let others: Vec<ChatSessionId> = rest.iter().map(|s| s.id).collect();
        let member_of: HashSet<ChatSessionId> =
            db::chat_sessions::joined_by(&self.db, &others, me.id)
                .await?
                .into_iter()
                .collect();
        let rest: Vec<ChatSession> = rest
            .into_iter()
            .filter(|s| member_of.contains(&s.id))
            .collect();
        let standing = self.standing(&self.db, &rest, me.id, &memberships).await?;
        let granted: Vec<Readable<ChatSession>> = managed
            .into_iter()
            .chain(rest.into_iter().filter(|s| standing.contains(&s.id)))
            .map(Readable::granted)
            .collect();
        viewer
            .audit
            .record_all(granted.iter().map(|s| session_read(s)));
        Ok(granted)
    }

    /// The one read rule: an active OWNER/ADMIN of the session's organisation, or a member whose
    /// place in it still rests on current facts ([`Self::standing`]).
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
        Ok(is_member
            && self
                .standing(&self.db, std::slice::from_ref(session), user, memberships)
                .await?
                .contains(&session.id))
    }

    /// The sessions among `sessions` in which `user`'s place still rests on current facts,
    /// read in a few statements per kind of session, whatever their number: a colleague or group
    /// chat on an active membership of its organisation (either one, across two); an appointment
    /// chat on taking part in the appointment now (a guardian who still is one, staff who are
    /// still active, see [`is_participant`]; support staff from outside only while the
    /// patient's MESSAGING consent covers them); a case room on being a participant now (staff
    /// also active in the organisation); a care-team chat on being entitled to it now (active,
    /// and consented when outside). A member row alone proves nothing.
    pub(super) async fn standing(
        &self,
        c: &impl db::Source,
        sessions: &[ChatSession],
        user: UserId,
        memberships: &[Membership],
    ) -> AppResult<HashSet<ChatSessionId>> {
        let mut standing = HashSet::new();
        let of = |c: ChatCategory| sessions.iter().filter(move |s| s.category == c);
        for s in of(ChatCategory::Group).chain(of(ChatCategory::Colleague)) {
            let counterpart = s
                .counterpart_org_id
                .is_some_and(|o| active_in(memberships, o));
            if active_in(memberships, s.org_id) || counterpart {
                standing.insert(s.id);
            }
        }
        // Appointment chats: the appointments, their support staff and the patients' guardians.
        let ids: Vec<AppointmentId> = of(ChatCategory::Client)
            .filter_map(|s| s.appointment_id)
            .collect();
        let appointments = db::appointments::find_many(c, &ids).await?;
        let support = db::appointments::support_staff_of(c, &ids).await?;
        let patients: Vec<PatientId> = appointments.iter().map(|a| a.patient_id).collect();
        let guardians = db::patients::guardians_of(c, &patients).await?;
        for s in of(ChatCategory::Client) {
            let Some(a) = appointments.iter().find(|a| Some(a.id) == s.appointment_id) else {
                continue;
            };
            let staff = support.iter().filter(|(x, _)| *x == a.id).map(|(_, u)| *u);
            if !is_participant(a, user, staff, &guardians, memberships) {
                continue;
            }
            let covered = !outside_support(a, user, &guardians, memberships)
                || consent_covers(c, a, memberships, ConsentScope::Messaging, self.clock.now())
                    .await?;
            if covered {
                standing.insert(s.id);
            }
        }
        // Case rooms and care-team chats: their natural keys say which case or team.
        let rooms: Vec<ChatSessionId> = of(ChatCategory::Case)
            .chain(of(ChatCategory::CareTeam))
            .map(|s| s.id)
            .collect();
        let keys = db::chat_sessions::keys_of(c, &rooms).await?;
        let cases: Vec<CaseId> = keys
            .iter()
            .filter_map(|(_, k)| match k {
                SessionKey::Case(c) => Some(*c),
                _ => None,
            })
            .collect();
        let participants = db::cases::participants_of(c, &cases).await?;
        for (id, key) in &keys {
            let Some(s) = sessions.iter().find(|s| s.id == *id) else {
                continue;
            };
            let stands = match key {
                SessionKey::Case(case) => participants.iter().any(|p| {
                    p.case_id == *case
                        && p.user_id == user
                        && (p.role == CaseRole::Patient || active_in(memberships, s.org_id))
                }),
                // Entitlement reads its own facts per team (consent included).
                SessionKey::CareTeam(team) => match db::care_teams::find(c, *team).await? {
                    Some(team) => chat_members(c, self.clock.now(), &team)
                        .await?
                        .contains(&user),
                    None => false,
                },
                _ => false,
            };
            if stands {
                standing.insert(*id);
            }
        }
        Ok(standing)
    }

    /// The viewer's memberships (every organisation).
    async fn memberships_of(&self, viewer: &Viewer) -> AppResult<Vec<Membership>> {
        crate::services::access::memberships(&self.db, viewer).await
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
        let mut page = db::chat_sessions::list_for_member(
            &self.db,
            org,
            me.id,
            category,
            include_closed,
            page,
        )
        .await?;
        // Each row is one of the viewer's own sessions, listed while the rule lets them read it
        // (a stale row after a lost right is left out, so such a page may come up short).
        let memberships = self.memberships_of(viewer).await?;
        let sessions: Vec<ChatSession> = page.rows.iter().map(|(_, s)| s.clone()).collect();
        let standing = self
            .standing(&self.db, &sessions, me.id, &memberships)
            .await?;
        page.rows
            .retain(|(_, s)| manages(&memberships, s.org_id) || standing.contains(&s.id));
        viewer
            .audit
            .record_all(page.rows.iter().map(|(_, s)| session_read(s)));
        Ok(page.map(Readable::granted))
    }

    /// Who may list (and follow) their own sessions in an organisation: its active members, and
    /// the clients of its patients; anyone else gets `NOT_FOUND`.
    pub async fn lister(&self, viewer: &Viewer, org: OrgId) -> AppResult<User> {
        match crate::services::access::member_of_unrecorded(&self.db, viewer, org).await {
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
                    viewer.audit.record(
                        AuditEntry::read(AuditEntity::Membership, org)
                            .org(org)
                            .denied(),
                    );
                    Err(AppError::NotFound(what))
                }
            }
            Err(e) => Err(e),
        }
    }
}
