//! The window scheduler: one timer for the next due window or consent lapse, read from the
//! database (restarts lose nothing), opening and ending windows with the provider channel frozen
//! outside them, and applying lapsed consents to the chats they carried.

use std::time::Duration;

use super::{AfterCommit, ChatService, channel_of, status_metadata};
use crate::{
    db,
    domain::chat::{ChatStatus, StatusReason, status_at},
    error::AppResult,
    outbox::{Entry, Operation},
};

impl ChatService {
    /// Opens and ends due windows (mirroring the freeze at the provider) and applies lapsed
    /// consents; returns how many sessions and consents changed.
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
        Ok(changed + self.apply_lapses().await?)
    }

    /// Applies consents that reached `expiresAt`: the chats about their patients follow, once
    /// per consent (outside staff the consent carried leave), in one transaction each.
    async fn apply_lapses(&self) -> AppResult<usize> {
        let now = self.clock.now();
        let mut applied = 0;
        for consent in db::consents::lapsed_unapplied(&self.db, now, 100).await? {
            // One consent that fails (logged, tried again next time) holds back no other.
            match self.apply_lapse(consent.id, consent.patient_id, now).await {
                Ok(true) => applied += 1,
                Ok(false) => {}
                Err(e) => e.log_cause(),
            }
        }
        Ok(applied)
    }

    /// Applies one consent's lapse in a transaction; whether this call did.
    async fn apply_lapse(
        &self,
        consent: crate::domain::ConsentId,
        patient: crate::domain::PatientId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<bool> {
        let txn = db::begin(&self.db).await?;
        if !db::consents::mark_lapse_applied(&txn, consent, now).await? {
            return Ok(false);
        }
        let mut fx = AfterCommit::default();
        self.patient_changed(&txn, &mut fx, patient).await?;
        self.commit(txn, fx).await?;
        Ok(true)
    }

    /// When the scheduler has work next: a window to open or end, or a consent to lapse.
    async fn next_wake(&self) -> AppResult<Option<chrono::DateTime<chrono::Utc>>> {
        let window = db::chat_sessions::next_due(&self.db).await?;
        let lapse = db::consents::next_lapse(&self.db).await?;
        Ok(window.into_iter().chain(lapse).min())
    }

    /// Runs the scheduler until `stop`: one timer for the next window change, read from the
    /// database (so restarts lose nothing), and a poll as a safety net. `lag` shows how late
    /// each tick ran after its timer was due, in seconds.
    pub async fn run_scheduler(
        self,
        stop: tokio_util::sync::CancellationToken,
        poll: Duration,
        lag: crate::telemetry::metrics::FloatGauge,
    ) {
        loop {
            let failed = match self.tick().await {
                Ok(_) => false,
                Err(e) => {
                    e.log_cause();
                    true
                }
            };
            let nap = match self.next_wake().await {
                Ok(Some(due)) => (due - self.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(poll),
                _ => poll,
            };
            // After a failure the due work is still due: wait a second, not a tight loop.
            let floor = if failed {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(50)
            };
            let due = tokio::time::Instant::now() + nap.max(floor);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(due) => {}
            }
            lag.set(due.elapsed().as_secs_f64());
        }
    }
}
