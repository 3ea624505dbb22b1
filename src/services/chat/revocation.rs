//! Revocation: when a fact a member's place rests on changes (a membership deactivated, a
//! guardian removed or their chat right changed, a consent recorded, revoked or lapsed), the
//! sessions it carried follow in the transaction of the change: those who lost their place
//! leave here and at the provider (through the outbox), `MEMBERS_CHANGED` reaches them last, and
//! their open streams on those sessions end.

use std::collections::HashMap;

use sea_orm::DatabaseTransaction;

use super::{AfterCommit, ChatService, access::manages};
use crate::{
    db,
    domain::{
        ChatSessionId, OrgId, PatientId, UserId,
        chat::{ChatRole, ChatSession},
    },
    error::AppResult,
    services::care_teams::chat_members,
};

/// How many sessions one walk over a member's sessions reads at a time.
const PAGE: u64 = 200;

impl ChatService {
    /// Removes `user` from each of their sessions (closed ones too: their history stays theirs
    /// only while the right lasts) where their place no longer rests on current facts (read in
    /// `txn`, so the change is seen); returns how many they left.
    pub async fn user_changed(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        user: UserId,
    ) -> AppResult<usize> {
        let mut left = 0;
        let mut after = None;
        loop {
            let page = db::chat_sessions::of_member(txn, user, after, PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(left);
            };
            after = Some(last.id);
            left += self.drop_unentitled(txn, fx, &page, Some(user)).await?;
            if (page.len() as u64) < PAGE {
                return Ok(left);
            }
        }
    }

    /// Queues the revocation of `user`'s provider tokens issued until now, in `txn` (a
    /// deactivation in `org`; providers that cannot revoke tokens take it as done, see the
    /// README). Their app fetches a fresh token wherever they are still active.
    pub async fn revoke_tokens(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        user: UserId,
        org: OrgId,
    ) -> AppResult<()> {
        let now = self.clock.now();
        let entry =
            crate::outbox::revoke_tokens_entry(user.to_string(), Some(org.to_string()), now);
        fx.deliver(crate::outbox::enqueue(txn, &[entry], now).await?);
        Ok(())
    }

    /// Brings the chats about a patient in step with current facts (guardians and their chat
    /// rights, consent of outside organisations): open appointment and care-team chats take in
    /// whoever now qualifies, and every one of them, closed ones too, loses whoever no longer
    /// does.
    pub async fn patient_changed(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        patient: PatientId,
    ) -> AppResult<()> {
        let now = self.clock.now();
        for session in db::chat_sessions::of_patient_appointments(txn, patient).await? {
            if session.closed_at.is_some() {
                self.drop_unentitled(txn, fx, std::slice::from_ref(&session), None)
                    .await?;
                continue;
            }
            let Some(appointment) = (match session.appointment_id {
                Some(id) => db::appointments::find(txn, id).await?,
                None => None,
            }) else {
                continue;
            };
            let wanted = self.appointment_members(txn, &appointment).await?;
            let creator =
                db::organizations::memberships_of_users(txn, &[session.created_by]).await?;
            let keep = manages(&creator, session.org_id).then_some(session.created_by);
            self.sync_members_in(txn, fx, &session, &wanted, keep)
                .await?;
        }
        for team in db::care_teams::of_patients(txn, &[patient]).await? {
            let Some(session) = super::care_teams::team_chat_of(txn, &team.id).await? else {
                continue;
            };
            if session.closed_at.is_some() {
                self.drop_unentitled(txn, fx, std::slice::from_ref(&session), None)
                    .await?;
                continue;
            }
            let wanted: Vec<(UserId, ChatRole)> = chat_members(txn, now, &team)
                .await?
                .into_iter()
                .map(|u| (u, ChatRole::Staff))
                .collect();
            self.sync_members_in(txn, fx, &session, &wanted, Some(session.created_by))
                .await?;
        }
        Ok(())
    }

    /// Removes from `sessions` the members (only `only`, when given) whose place no longer
    /// rests on current facts: the read rule's [`Self::standing`], or managing the
    /// organisation. Returns how many memberships ended.
    async fn drop_unentitled(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        sessions: &[ChatSession],
        only: Option<UserId>,
    ) -> AppResult<usize> {
        let ids: Vec<ChatSessionId> = sessions.iter().map(|s| s.id).collect();
        let members: Vec<(ChatSessionId, UserId)> = db::chat_sessions::members_of(txn, &ids)
            .await?
            .into_iter()
            .filter(|(_, u, _)| only.is_none_or(|o| o == *u))
            .map(|(s, u, _)| (s, u))
            .collect();
        let mut users: Vec<UserId> = members.iter().map(|(_, u)| *u).collect();
        users.sort_unstable();
        users.dedup();
        let memberships = db::organizations::memberships_of_users(txn, &users).await?;
        let mut gone: HashMap<ChatSessionId, Vec<UserId>> = HashMap::new();
        for user in users {
            let theirs: Vec<ChatSession> = sessions
                .iter()
                .filter(|s| members.contains(&(s.id, user)))
                .cloned()
                .collect();
            let mine: Vec<_> = memberships
                .iter()
                .filter(|m| m.user_id == user)
                .cloned()
                .collect();
            let standing = self.standing(txn, &theirs, user, &mine).await?;
            for s in theirs {
                if !manages(&mine, s.org_id) && !standing.contains(&s.id) {
                    gone.entry(s.id).or_default().push(user);
                }
            }
        }
        let mut ended = 0;
        for s in sessions {
            if let Some(left) = gone.get(&s.id) {
                ended += left.len();
                self.change_members_in(txn, fx, s, &[], left, &[], [None, None])
                    .await?;
            }
        }
        Ok(ended)
    }
}
