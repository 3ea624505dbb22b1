//! Care-team chats: a staff-only room per team; outside members take part only while consented,
//! and phone-only members take part by SMS as external members.

use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::{AfterCommit, ChatService, base_metadata};
use crate::{
    db,
    domain::{
        CareTeamId, User, UserId,
        care::CareTeam,
        chat::{self, ChatCategory, ChatRole, ChatSession, SessionKey},
    },
    error::AppResult,
    services::care_teams::chat_members,
};

/// A care team's conversation as `c` sees it.
pub(super) async fn team_chat_of(
    c: &impl db::Source,
    team: &CareTeamId,
) -> AppResult<Option<ChatSession>> {
    db::chat_sessions::find_by_key(c, &SessionKey::CareTeam(*team)).await
}

impl ChatService {
    /// A care team's conversation, if provisioned.
    pub async fn care_team_chat(&self, team: &CareTeamId) -> AppResult<Option<ChatSession>> {
        team_chat_of(&self.db, team).await
    }

    /// The chat side of a care team's creation or member change, in its transaction `txn`: the
    /// team's room is provisioned once and its members follow who is entitled now.
    pub async fn care_team_changed(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        team: &CareTeam,
        by: &User,
    ) -> AppResult<()> {
        let wanted: Vec<(UserId, ChatRole)> = chat_members(txn, self.clock.now(), team)
            .await?
            .into_iter()
            .map(|u| (u, ChatRole::Staff))
            .collect();
        let room = self.room(
            team.org_id,
            ChatCategory::CareTeam,
            chat::channel_id("careteam", &team.id.to_string()),
            team.name.clone(),
            by,
        );
        let mut metadata = base_metadata(&room);
        metadata.insert("careTeamId".into(), json!(team.id.to_string()));
        self.sync_room_in(
            txn,
            fx,
            &SessionKey::CareTeam(team.id),
            room,
            metadata,
            &wanted,
            by,
        )
        .await?;
        // Phone-only members take part by SMS.
        self.sync_care_team_externals(txn, fx, team, by).await
    }
}
