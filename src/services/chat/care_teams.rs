//! Care-team chats: a staff-only room per team; outside members take part only while consented.

use serde_json::json;

use super::{ChatService, base_metadata};
use crate::{
    db,
    domain::{
        User, UserId,
        chat::{self, ChatCategory, ChatRole, ChatSession, SessionKey},
    },
    error::AppResult,
};

/// Keeps a care team's staff-only conversation in step with the team (category `CARE_TEAM`).
#[derive(Clone)]
pub struct CareTeamChats {
    /// The chat service.
    pub chat: ChatService,
    /// The care-team service (who may take part).
    pub teams: crate::services::care_teams::CareTeamService,
}

impl ChatService {
    /// A care team's conversation, if provisioned.
    pub async fn care_team_chat(
        &self,
        team: &crate::domain::CareTeamId,
    ) -> AppResult<Option<ChatSession>> {
        db::chat_sessions::find_by_key(&self.db, &SessionKey::CareTeam(*team)).await
    }
}

#[async_trait::async_trait]
impl crate::services::consent::ConsentHooks for CareTeamChats {
    /// Outside staff take part in a patient's care-team chats only while consented: each
    /// existing chat of the patient's teams is brought in step.
    async fn consent_changed(&self, patient: crate::domain::PatientId) -> AppResult<()> {
        for team in db::care_teams::of_patients(&self.chat.db, &[patient]).await? {
            let Some(session) = self.chat.care_team_chat(&team.id).await? else {
                continue;
            };
            if session.closed_at.is_some() {
                continue;
            }
            let wanted: Vec<(UserId, ChatRole)> = self
                .teams
                .chat_members(&team)
                .await?
                .into_iter()
                .map(|u| (u, ChatRole::Staff))
                .collect();
            self.chat
                .sync_members(&session, &wanted, Some(session.created_by))
                .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::services::care_teams::CareTeamHooks for CareTeamChats {
    async fn care_team_changed(
        &self,
        team: &crate::domain::care::CareTeam,
        by: &User,
    ) -> AppResult<()> {
        let wanted: Vec<(UserId, ChatRole)> = self
            .teams
            .chat_members(team)
            .await?
            .into_iter()
            .map(|u| (u, ChatRole::Staff))
            .collect();
        let room = self.chat.room(
            team.org_id,
            ChatCategory::CareTeam,
            chat::channel_id("careteam", &team.id.to_string()),
            team.name.clone(),
            by,
        );
        let mut metadata = base_metadata(&room);
        metadata.insert("careTeamId".into(), json!(team.id.to_string()));
        self.chat
            .sync_room(&SessionKey::CareTeam(team.id), room, metadata, &wanted, by)
            .await
    }
}
