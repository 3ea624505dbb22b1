//! Provisioning: whether each session's channel exists at the provider yet, and a last word to
//! subscribers when one that waited (an outage, a crash) comes to exist.

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{ChatService, create_key};
use crate::{
    db,
    domain::{
        ChatSessionId,
        chat::{Provisioning, StatusReason},
    },
    error::AppResult,
    events::ChangeKind,
    outbox::RowState,
};

/// The session whose channel the outbox row `key` creates, if it is such a row.
fn session_of(key: &str) -> Option<ChatSessionId> {
    let id = key.strip_prefix("chat:")?.strip_suffix(":create")?;
    ChatSessionId::from_db(id).ok()
}

impl ChatService {
    /// Where the channels of `ids` stand at the provider, in one statement.
    pub async fn provisioning(
        &self,
        ids: &[ChatSessionId],
    ) -> AppResult<Vec<(ChatSessionId, Provisioning)>> {
        let keys: Vec<String> = ids.iter().map(|id| create_key(*id)).collect();
        let states = self.outbox.states(&keys).await?;
        Ok(ids
            .iter()
            .zip(states)
            .map(|(id, (_, state))| {
                let p = match state {
                    RowState::Done => Provisioning::Ready,
                    RowState::Pending => Provisioning::Pending,
                    RowState::Retrying { retry_at } => Provisioning::Failed {
                        retry_at: Some(retry_at),
                    },
                    RowState::Dead => Provisioning::Failed { retry_at: None },
                };
                (*id, p)
            })
            .collect())
    }

    /// Tells subscribers of each session whose channel this process's outbox delivers late
    /// (after a failed attempt, or after a restart) that it changed (`UPDATED` on `chatSessionsChanged`, its state with reason `CURRENT` on
    /// `chatSessionStatus`), until `stop`: a client that saw `PENDING` hears `READY`.
    pub async fn run_announcer(self, stop: CancellationToken) {
        let mut delivered = self.outbox.delivered_late();
        loop {
            let key = tokio::select! {
                () = stop.cancelled() => break,
                key = delivered.recv() => key,
            };
            match key {
                Ok(key) => {
                    let Some(id) = session_of(&key) else {
                        continue;
                    };
                    if let Err(e) = self.announce_ready(id).await {
                        e.log_cause();
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the provisioning announcer fell behind");
                }
                Err(RecvError::Closed) => break,
            }
        }
    }

    /// Announces that a session's channel exists now.
    async fn announce_ready(&self, id: ChatSessionId) -> AppResult<()> {
        let Some(session) = db::chat_sessions::find(&self.db, id).await? else {
            return Ok(());
        };
        self.announce_change(&session, ChangeKind::Updated, None, &[])
            .await;
        self.announce_status(&session, self.status_now(&session), StatusReason::Current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_channel_creation_rows_name_a_session() {
        let id = ChatSessionId::new();
        assert_eq!(session_of(&create_key(id)), Some(id));
        assert_eq!(session_of(&format!("chat:{id}:close:freeze")), None);
        assert_eq!(session_of("users:delete:abc"), None);
        assert_eq!(session_of("chat:not-a-uuid:create"), None);
    }
}
