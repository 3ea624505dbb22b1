//! The chat side of a change, written in the change's own transaction: membership rows, status
//! and outbox rows go in with it, and [`AfterCommit`] carries what may only happen once it has
//! committed (events for subscribers, delivering the outbox rows now).

use super::ChatService;
use crate::{db, domain::UserId, error::AppResult, events::DomainEvent};
use crate::{
    domain::chat::{ChatSession, ChatStatus, StatusReason},
    events::{ChangeKind, SessionChange, StatusEvent},
    providers::chat::ChatMessage,
};

/// What a committed change still owes: events to publish and outbox rows to deliver now.
#[derive(Debug, Default)]
#[must_use = "hand it to ChatService::finish or ChatService::settle once the transaction commits"]
pub struct AfterCommit {
    keys: Vec<String>,
    events: Vec<DomainEvent>,
}

impl AfterCommit {
    /// Outbox rows (by key) to deliver once committed.
    pub(super) fn deliver(&mut self, keys: Vec<String>) {
        self.keys.extend(keys);
    }

    /// An event to publish once committed.
    pub(super) fn publish(&mut self, event: DomainEvent) {
        self.events.push(event);
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.events.is_empty()
    }
}

impl ChatService {
    /// Publishes what a committed change owes and delivers its outbox rows now; what cannot be
    /// delivered now stays for the worker (the answer's `provisioning` says so), and only a
    /// database error is an error.
    pub async fn finish(&self, fx: AfterCommit) -> AppResult<()> {
        for event in fx.events {
            self.events.publish(event);
        }
        if fx.keys.is_empty() {
            return Ok(());
        }
        self.outbox.deliver_now(&fx.keys).await?;
        Ok(())
    }

    /// Publishes the events of `fx` now (it must owe no deliveries).
    pub(super) fn publish_now(&self, fx: AfterCommit) {
        debug_assert!(fx.keys.is_empty(), "publish_now drops deliveries");
        for event in fx.events {
            self.events.publish(event);
        }
    }

    /// Commits a change's transaction and then settles what its chat side owes (see
    /// [`Self::settle`]): the one way a feature ends a change with chat effects.
    pub async fn commit(
        &self,
        txn: sea_orm::DatabaseTransaction,
        fx: AfterCommit,
    ) -> AppResult<()> {
        txn.commit().await?;
        self.settle(fx).await;
        Ok(())
    }

    /// Like [`Self::finish`], for a change another feature made: the change has committed, so a
    /// delivery problem is logged (the outbox keeps the rows) rather than failing the request.
    pub async fn settle(&self, fx: AfterCommit) {
        if let Err(e) = self.finish(fx).await {
            e.log_cause();
        }
    }

    /// Owes a status event for `session`.
    pub(super) fn owe_status(
        &self,
        fx: &mut AfterCommit,
        session: &ChatSession,
        status: ChatStatus,
        reason: StatusReason,
    ) {
        fx.publish(DomainEvent::ChatStatus(StatusEvent::of(
            session,
            status,
            reason,
            self.clock.now(),
        )));
    }

    /// Owes a list change for `session`, to its members as `c` sees them (inside the change's
    /// transaction: after the change) and to `also` (those who just left).
    pub(super) async fn owe_change(
        &self,
        c: &impl db::Source,
        fx: &mut AfterCommit,
        session: &ChatSession,
        kind: ChangeKind,
        last_message: Option<ChatMessage>,
        also: &[UserId],
    ) -> AppResult<()> {
        let mut member_ids: Vec<UserId> =
            db::chat_sessions::members_of(c, std::slice::from_ref(&session.id))
                .await?
                .into_iter()
                .map(|(_, u, _)| u)
                .collect();
        for u in also {
            if !member_ids.contains(u) {
                member_ids.push(*u);
            }
        }
        fx.publish(self.change_event(session, kind, last_message, member_ids));
        Ok(())
    }

    /// The list event of a change to `session`, for `member_ids`.
    pub(super) fn change_event(
        &self,
        session: &ChatSession,
        kind: ChangeKind,
        last_message: Option<ChatMessage>,
        member_ids: Vec<UserId>,
    ) -> DomainEvent {
        DomainEvent::ChatChanged(SessionChange {
            session_id: session.id,
            org_ids: std::iter::once(session.org_id)
                .chain(session.counterpart_org_id)
                .collect(),
            member_ids,
            kind,
            last_message,
            at: self.clock.now(),
        })
    }
}
