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
    providers::chat::CHANNEL_TYPE,
};

impl ChatService {
    /// A case's room, if provisioned.
    pub async fn case_room(&self, case: &crate::domain::CaseId) -> AppResult<Option<ChatSession>> {
        db::chat_sessions::find_by_key(&self.db, &SessionKey::Case(*case)).await
    }
}

#[async_trait::async_trait]
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
        let key = SessionKey::Case(case.id);
        let Some(session) = db::chat_sessions::find_by_key(&self.db, &key).await? else {
            if case.status == crate::domain::care::CaseStatus::Closed {
                return Ok(());
            }
            let mut members = wanted.clone();
            if !members.iter().any(|(u, _)| *u == by.id) {
                members.push((by.id, ChatRole::Staff));
            }
            let users = db::users::find_many(
                &self.db,
                &members.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
            )
            .await?;
            let now = self.clock.now();
            let session = ChatSession::new_open(
                case.org_id,
                ChatCategory::Case,
                CHANNEL_TYPE,
                chat::channel_id("case", &case.id.to_string()),
                Some(case.title.clone()),
                by.id,
                now,
            );
            let mut metadata = base_metadata(&session);
            metadata.insert("caseId".into(), json!(case.id.to_string()));
            metadata.insert("caseReference".into(), json!(case.reference));
            self.create(session, &key, &members, metadata, &users, by)
                .await?;
            return Ok(());
        };
        if session.closed_at.is_some() {
            return Ok(());
        }
        self.sync_members(&session, &wanted, Some(session.created_by))
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
