//! Case rooms: one room per case, its members following the case's participants.

use serde_json::json;

use super::{ChatService, base_metadata, delete_entry};
use crate::{
    db,
    domain::{
        User, UserId,
        chat::{self, ChatCategory, ChatRole, ChatSession, SessionKey, StatusReason},
    },
    error::AppResult,
};

impl ChatService {
    /// A case's room, if provisioned.
    pub async fn case_room(&self, case: &crate::domain::CaseId) -> AppResult<Option<ChatSession>> {
        db::chat_sessions::find_by_key(&self.db, &SessionKey::Case(*case)).await
    }
}

#[async_trait::async_trait]
impl crate::services::cases::CaseHooks for ChatService {
    /// Provisions the case's room once (every participant granted) and keeps its members in
    /// step with the participants.
    async fn case_changed(&self, case: &crate::domain::care::Case, by: &User) -> AppResult<()> {
        use crate::domain::care::CaseRole;
        let participants = db::cases::participants_of(&self.db, &[case.id]).await?;
        let wanted: Vec<(UserId, ChatRole)> = participants
            .iter()
            .map(|p| {
                (
                    p.user_id,
                    if p.role == CaseRole::Patient {
                        ChatRole::Client
                    } else {
                        ChatRole::Staff
                    },
                )
            })
            .collect();
        // A closed case whose room was never made gets none now.
        if case.status == crate::domain::care::CaseStatus::Closed
            && self.case_room(&case.id).await?.is_none()
        {
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
        self.sync_room(&SessionKey::Case(case.id), room, metadata, &wanted, by)
            .await
    }

    /// Closes the case's room (one system message, frozen) and, when asked, deletes it.
    async fn case_closed(
        &self,
        case: &crate::domain::care::Case,
        by: &User,
        delete_room: bool,
    ) -> AppResult<()> {
        let Some(session) = self.case_room(&case.id).await? else {
            return Ok(());
        };
        self.close_for(&session, Some(by), StatusReason::ClosedByUser)
            .await?;
        if delete_room {
            let now = self.clock.now();
            let entry = delete_entry(&session);
            let txn = db::begin(&self.db).await?;
            let keys = crate::outbox::enqueue(&txn, &[entry], now).await?;
            txn.commit().await?;
            self.outbox.deliver_now(&keys).await?;
        }
        Ok(())
    }
}
