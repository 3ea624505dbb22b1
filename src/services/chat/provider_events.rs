//! What a provider reports about caregraph's channels (through webhooks), applied here; a new
//! message is also relayed by SMS to the chat's external members.

use super::ChatService;
use crate::{
    db,
    domain::{
        UserId,
        chat::{ChatStatus, StatusReason},
    },
    error::AppResult,
    events::ChangeKind,
    outbox::{Entry, Operation},
};

impl ChatService {
    /// Applies what a provider reported about one of caregraph's channels (others are ignored):
    /// a message updates the list and is announced; a freeze of an open chat by someone else
    /// closes it (`PROVIDER_FROZEN`), an unfreeze outside the window is undone; a deleted channel
    /// closes its session (`PROVIDER_DELETED`); members who joined or left there are recorded
    /// here. Applying the same report twice changes nothing the second time.
    pub async fn provider_event(
        &self,
        event: crate::providers::webhooks::ProviderEvent,
    ) -> AppResult<()> {
        use crate::providers::webhooks::ProviderEvent as E;
        let channel = match &event {
            E::Message { channel, .. }
            | E::Frozen { channel, .. }
            | E::Deleted { channel, .. }
            | E::MembersAdded { channel, .. }
            | E::MembersRemoved { channel, .. } => channel.clone(),
        };
        let Some(session) = db::chat_sessions::find_by_channel(
            &self.db,
            &channel.channel_type,
            &channel.channel_id,
        )
        .await?
        else {
            tracing::debug!(cid = %channel.cid(), "a provider event about a channel caregraph did not make");
            return Ok(());
        };
        match event {
            E::Message { message, .. } => {
                if message.sent_at > session.last_activity_at {
                    db::chat_sessions::touch(&self.db, session.id, message.sent_at).await?;
                }
                self.relay_reported(&session, &message).await?;
                self.announce_change(&session, ChangeKind::Message, Some(message), &[])
                    .await;
            }
            E::Frozen {
                frozen: true, at, ..
            } => {
                // A freeze reported from before the window opened is caregraph's own, late.
                let stale = session.allowed_from.is_some_and(|from| at < from);
                if !stale && self.status_now(&session) == ChatStatus::Active {
                    tracing::info!(session = %session.id, "frozen at the provider: closing");
                    self.close_for(&session, None, StatusReason::ProviderFrozen)
                        .await?;
                }
            }
            E::Frozen { frozen: false, .. } => {
                if self.status_now(&session) != ChatStatus::Active {
                    tracing::info!(session = %session.id, "unfrozen outside its window: freezing again");
                    let entry = Entry::new(
                        format!(
                            "chat:{}:refreeze:{}",
                            session.id,
                            uuid::Uuid::now_v7().simple()
                        ),
                        Some(session.org_id.to_string()),
                        Operation::SetFrozen {
                            channel,
                            frozen: true,
                        },
                    );
                    crate::outbox::enqueue(&self.db, &[entry], self.clock.now()).await?;
                    self.outbox.wake();
                }
            }
            E::Deleted { at, .. } => {
                // A report from before this session existed is about an older channel.
                if at >= session.created_at {
                    self.close_for(&session, None, StatusReason::ProviderDeleted)
                        .await?;
                }
            }
            E::MembersAdded { user_ids, .. } => {
                // caregraph decides who takes part: a member added at the provider behind its
                // back (a client SDK's invite, a channel owner's add) is taken out again.
                let current = self.members_of(std::slice::from_ref(&session.id)).await?;
                let externals =
                    db::sms::of_sessions(&self.db, std::slice::from_ref(&session.id)).await?;
                let intruders: Vec<String> = user_ids
                    .into_iter()
                    .filter(|u| !current.iter().any(|(_, m, _)| m.to_string() == *u))
                    .filter(|u| !externals.iter().any(|m| m.id.to_string() == *u))
                    .filter(|u| u.as_str() != crate::providers::chat::stream::SYSTEM_USER_ID)
                    .collect();
                if intruders.is_empty() {
                    return Ok(());
                }
                tracing::warn!(session = %session.id, users = ?intruders, "members added at the provider without caregraph: removing them there");
                let entry = Entry::new(
                    format!(
                        "chat:{}:revert-add:{}",
                        session.id,
                        uuid::Uuid::now_v7().simple()
                    ),
                    Some(session.org_id.to_string()),
                    Operation::RemoveMembers {
                        channel,
                        user_ids: intruders,
                        message: None,
                    },
                );
                crate::outbox::enqueue(&self.db, &[entry], self.clock.now()).await?;
                self.outbox.wake();
            }
            E::MembersRemoved { user_ids, at, .. } => {
                // Someone left at the provider: they leave here too, unless they joined (again)
                // after the report was made.
                let joined = db::chat_sessions::members_joined(&self.db, session.id).await?;
                let gone: Vec<UserId> = joined
                    .iter()
                    .filter(|(u, since)| user_ids.contains(&u.to_string()) && *since <= at)
                    .map(|(u, _)| *u)
                    .collect();
                if gone.is_empty() {
                    return Ok(());
                }
                db::chat_sessions::remove_members(&self.db, session.id, &gone).await?;
                self.announce_change(&session, ChangeKind::MembersChanged, None, &gone)
                    .await;
            }
        }
        Ok(())
    }
}
