//! Membership changes: the difference between wanted and current members, recorded here and
//! queued for the provider in one transaction; bulk deletion of chat users.

use sea_orm::DatabaseTransaction;

use super::{AfterCommit, ChatService, channel_of, chat_user};
use crate::{
    auth::Viewer,
    db,
    domain::{
        OrgId, User, UserId,
        chat::{ChatRole, ChatSession, StatusReason},
    },
    error::{AppError, AppResult},
    events::ChangeKind,
    outbox::{Entry, Operation},
    providers::chat::SystemMessage,
};

impl ChatService {
    /// Brings a room's members to `wanted` in the transaction `txn`: missing ones join, others
    /// leave (except `keep`).
    pub(super) async fn sync_members_in(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        session: &ChatSession,
        wanted: &[(UserId, ChatRole)],
        keep: Option<UserId>,
    ) -> AppResult<()> {
        let current = db::chat_sessions::members_of(txn, std::slice::from_ref(&session.id)).await?;
        let added: Vec<(UserId, ChatRole)> = wanted
            .iter()
            .filter(|(u, _)| !current.iter().any(|(_, m, _)| m == u))
            .copied()
            .collect();
        let removed: Vec<UserId> = current
            .iter()
            .map(|(_, u, _)| *u)
            .filter(|u| Some(*u) != keep && !wanted.iter().any(|(w, _)| w == u))
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let users =
            db::users::find_many(txn, &added.iter().map(|(u, _)| *u).collect::<Vec<_>>()).await?;
        self.change_members_in(txn, fx, session, &added, &removed, &users, [None, None])
            .await
    }

    /// Records a membership change and queues it for the provider in the transaction `txn`;
    /// `users` holds at least the added members, `notes` the optional system messages for the
    /// addition and the removal.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn change_members_in(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        session: &ChatSession,
        added: &[(UserId, ChatRole)],
        removed: &[UserId],
        users: &[User],
        notes: [Option<String>; 2],
    ) -> AppResult<()> {
        let now = self.clock.now();
        // Unique per change (two changes in one clock tick stay two).
        let stamp = uuid::Uuid::now_v7().simple();
        let channel = channel_of(session);
        let org = Some(session.org_id.to_string());
        let [add_note, remove_note] = notes;
        let message = |what: &str, text: Option<String>| {
            text.map(|text| SystemMessage {
                id: format!("members-{}-{stamp}-{what}", session.id),
                text,
            })
        };
        let mut entries = Vec::new();
        if !added.is_empty() {
            entries.push(Entry::new(
                format!("chat:{}:members:{stamp}:add", session.id),
                org.clone(),
                Operation::AddMembers {
                    channel: channel.clone(),
                    users: users
                        .iter()
                        .filter(|u| added.iter().any(|(a, _)| *a == u.id))
                        .map(chat_user)
                        .collect(),
                    message: message("add", add_note),
                },
            ));
        }
        if !removed.is_empty() {
            entries.push(Entry::new(
                format!("chat:{}:members:{stamp}:remove", session.id),
                org,
                Operation::RemoveMembers {
                    channel,
                    user_ids: removed.iter().map(UserId::to_string).collect(),
                    message: message("remove", remove_note),
                },
            ));
        }
        // A channel deleted at the provider has no members left to change there.
        if session.close_reason == Some(StatusReason::ProviderDeleted) {
            entries.clear();
        }
        db::chat_sessions::add_members(txn, session.id, added, now).await?;
        db::chat_sessions::remove_members(txn, session.id, removed).await?;
        fx.deliver(crate::outbox::enqueue(txn, &entries, now).await?);
        self.owe_change(txn, fx, session, ChangeKind::MembersChanged, None, removed)
            .await
    }

    /// Deletes users at the chat provider in bulk, for a retention policy (an OWNER/ADMIN of
    /// `org_id`). Each user must be known to the organisation (a membership, or a place in one
    /// of its chats) and active nowhere: no active membership in any organisation and no
    /// guardian link, so nobody still at work loses their chats. They leave every session here
    /// too. Returns how many were queued for deletion.
    pub async fn delete_chat_users(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        user_ids: &[UserId],
    ) -> AppResult<usize> {
        let (me, _) = crate::services::access::manager_of(&self.db, viewer, org_id).await?;
        let mut ids: Vec<UserId> = Vec::new();
        for id in user_ids {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        if ids.is_empty() || ids.len() > 100 {
            return Err(AppError::bad_input("userIds", "give 1 to 100 users"));
        }
        if ids.contains(&me.id) {
            return Err(AppError::bad_input(
                "userIds",
                "you cannot delete your own chat user",
            ));
        }
        let memberships = db::organizations::memberships_of_users(&self.db, &ids).await?;
        let guardianships = db::patients::guardianships_of(&self.db, &ids).await?;
        let in_chats = db::chat_sessions::users_in_org_sessions(&self.db, org_id, &ids).await?;
        for id in &ids {
            let mine = memberships.iter().filter(|m| m.user_id == *id);
            let known = in_chats.contains(id) || mine.clone().any(|m| m.org_id == org_id);
            if !known {
                return Err(AppError::bad_input(
                    "userIds",
                    format!("{id} is not a user of this organization"),
                ));
            }
            if mine.clone().any(|m| m.active) || guardianships.iter().any(|g| g.user_id == *id) {
                return Err(AppError::bad_input(
                    "userIds",
                    format!("{id} is still active (a member or a guardian); deactivate them first"),
                ));
            }
        }
        let now = self.clock.now();
        let mut sorted: Vec<String> = ids.iter().map(UserId::to_string).collect();
        sorted.sort();
        // Deleting users already gone is harmless at every provider, so each call is its own
        // operation (a later deletion of the same set is never mistaken for a retry).
        let entry = Entry::new(
            format!("users:delete:{}", uuid::Uuid::now_v7().simple()),
            None,
            Operation::DeleteUsers { user_ids: sorted },
        );
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::remove_users_everywhere(&txn, &ids).await?;
        let keys = crate::outbox::enqueue(&txn, &[entry], now).await?;
        txn.commit().await?;
        tracing::info!(org = %org_id, users = ids.len(), by = %me.id, "chat users queued for deletion");
        self.outbox.deliver_now(&keys).await?;
        Ok(ids.len())
    }
}
