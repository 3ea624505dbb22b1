//! The window scheduler: one timer for the next due window, read from the database (restarts
//! lose nothing), opening and ending windows with the provider channel frozen outside them.

use std::time::Duration;

use super::{ChatService, channel_of, status_metadata};
use crate::{
    db,
    domain::chat::{ChatStatus, StatusReason, status_at},
    error::AppResult,
    outbox::{Entry, Operation},
};

impl ChatService {
    /// Opens and ends due windows (mirroring the freeze at the provider); returns how many
    /// sessions changed.
    pub async fn tick(&self) -> AppResult<usize> {
        let now = self.clock.now();
        let mut changed = 0;
        for session in db::chat_sessions::due(&self.db, now, 200).await? {
            let target = status_at(false, session.allowed_from, session.allowed_until, now);
            if target == session.status {
                continue;
            }
            if target == ChatStatus::Closed {
                if self
                    .close_for(&session, None, StatusReason::WindowEnded)
                    .await?
                {
                    changed += 1;
                }
                continue;
            }
            let channel = channel_of(&session);
            let org = Some(session.org_id.to_string());
            // Unique per opening: a moved window opens again (only the winner of the
            // conditional update below enqueues).
            let opening = uuid::Uuid::now_v7().simple();
            let entries = vec![
                Entry::new(
                    format!("chat:{}:open:{opening}:metadata", session.id),
                    org.clone(),
                    Operation::UpdateMetadata {
                        channel: channel.clone(),
                        set: status_metadata(ChatStatus::Active),
                        unset: Vec::new(),
                    },
                ),
                Entry::new(
                    format!("chat:{}:open:{opening}:unfreeze", session.id),
                    org,
                    Operation::SetFrozen {
                        channel,
                        frozen: false,
                    },
                ),
            ];
            let txn = db::begin(&self.db).await?;
            let won = db::chat_sessions::transition(&txn, &session, target, now).await?;
            if won {
                crate::outbox::enqueue(&txn, &entries, now).await?;
                changed += 1;
            }
            txn.commit().await?;
            // Only the scheduler whose conditional update won announces the change.
            if won {
                let reason = if target == ChatStatus::Active {
                    StatusReason::WindowOpened
                } else {
                    StatusReason::Rescheduled
                };
                self.announce_status(&session, target, reason);
            }
        }
        if changed > 0 {
            self.outbox.wake();
        }
        Ok(changed)
    }

    /// Runs the scheduler until `stop`: one timer for the next window change, read from the
    /// database (so restarts lose nothing), and a poll as a safety net.
    pub async fn run_scheduler(self, stop: tokio_util::sync::CancellationToken, poll: Duration) {
        loop {
            if let Err(e) = self.tick().await {
                e.log_cause();
            }
            let nap = match db::chat_sessions::next_due(&self.db).await {
                Ok(Some(due)) => (due - self.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(poll),
                _ => poll,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(nap.max(Duration::from_millis(50))) => {}
            }
        }
    }
}
