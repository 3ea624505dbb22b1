//! Case rooms: one room per case, its members following the case's participants.

use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::{AfterCommit, ChatService, base_metadata, delete_entry};
use crate::{
    db,
    domain::{
        CaseId, User, UserId,
        care::{Case, CaseRole, CaseStatus},
        chat::{self, ChatCategory, ChatRole, ChatSession, SessionKey, StatusReason},
    },
    error::AppResult,
};

/// A case's room as `c` sees it.
async fn room_of(c: &impl db::Source, case: &CaseId) -> AppResult<Option<ChatSession>> {
    db::chat_sessions::find_by_key(c, &SessionKey::Case(*case)).await
}

impl ChatService {
    /// A case's room, if provisioned.
    pub async fn case_room(&self, case: &CaseId) -> AppResult<Option<ChatSession>> {
        room_of(&self.db, case).await
    }

    /// The chat side of a case's change, in its transaction `txn`: the room is provisioned once
    /// (every participant granted) and its members follow the participants.
    pub async fn case_changed(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        case: &Case,
        by: &User,
    ) -> AppResult<()> {
        let participants = db::cases::participants_of(txn, &[case.id]).await?;
        // Staff take part while active in the organisation (as the read rule says).
        let staff: Vec<UserId> = participants.iter().map(|p| p.user_id).collect();
        let memberships = db::organizations::memberships_of_users(txn, &staff).await?;
        let wanted: Vec<(UserId, ChatRole)> = participants
            .iter()
            .filter(|p| {
                p.role == CaseRole::Patient
                    || memberships
                        .iter()
                        .any(|m| m.user_id == p.user_id && m.active && m.org_id == case.org_id)
            })
            .map(|p| {
                let role = if p.role == CaseRole::Patient {
                    ChatRole::Client
                } else {
                    ChatRole::Staff
                };
                (p.user_id, role)
            })
            .collect();
        // A closed case whose room was never made gets none now.
        if case.status == CaseStatus::Closed && room_of(txn, &case.id).await?.is_none() {
            return Ok(());
        }
        let room = self.room(
            case.org_id,
            ChatCategory::Case,
            chat::channel_id("case", &case.id.to_string()),
            case.title.clone(),
            by,
        );
        let mut metadata = base_metadata(&room);
        metadata.insert("caseId".into(), json!(case.id.to_string()));
        metadata.insert("caseReference".into(), json!(case.reference));
        self.sync_room_in(
            txn,
            fx,
            &SessionKey::Case(case.id),
            room,
            metadata,
            &wanted,
            by,
        )
        .await
    }

    /// Closes the case's room in the case's transaction `txn` (one system message, frozen) and,
    /// when asked, deletes it at the provider.
    pub async fn case_closed(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        case: &Case,
        by: &User,
        delete_room: bool,
    ) -> AppResult<()> {
        let Some(session) = room_of(txn, &case.id).await? else {
            return Ok(());
        };
        self.close_in(txn, fx, &session, Some(by), StatusReason::ClosedByUser)
            .await?;
        if delete_room {
            let entry = delete_entry(&session);
            fx.deliver(crate::outbox::enqueue(txn, &[entry], self.clock.now()).await?);
        }
        Ok(())
    }
}
