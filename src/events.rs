//! Domain events and the bus that carries them to subscribers.
//!
//! Services publish a [`DomainEvent`] after the change it reports has committed, and only the
//! caller whose conditional update won publishes (a window opened by two schedulers is announced
//! once). The bus is a bounded broadcast: a subscriber that falls behind loses the oldest events
//! and learns so (`Lagged`), and resynchronises from the database instead of growing memory.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{
    domain::{
        AppointmentId, OrgId, UserId,
        chat::{ChatSession, ChatStatus, StatusReason},
    },
    providers::chat::ChatMessage,
};

/// Something that happened, as subscribers learn it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DomainEvent {
    /// A chat session's status changed or its window moved.
    ChatStatus(StatusEvent),
    /// A chat session was created, changed, closed, deleted or got a message.
    ChatChanged(SessionChange),
}

/// A chat session's status as of one change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The session (`None` for an appointment whose chat is not open yet).
    pub session_id: Option<String>,
    /// Its appointment (client chats).
    pub appointment_id: Option<AppointmentId>,
    /// The status after the change.
    pub status: ChatStatus,
    /// Why it changed.
    pub reason: StatusReason,
    /// The window's start.
    pub allowed_from: Option<DateTime<Utc>>,
    /// The window's end.
    pub allowed_until: Option<DateTime<Utc>>,
    /// When.
    pub at: DateTime<Utc>,
}

impl StatusEvent {
    /// The event for `session` as it is now.
    pub fn of(
        session: &ChatSession,
        status: ChatStatus,
        reason: StatusReason,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            session_id: Some(session.id.clone()),
            appointment_id: session.appointment_id,
            status,
            reason,
            allowed_from: session.allowed_from,
            allowed_until: session.allowed_until,
            at,
        }
    }
}

/// What changed about a session in a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeKind {
    /// It was created.
    Created,
    /// Its title, image or mode changed.
    Updated,
    /// Members joined or left.
    MembersChanged,
    /// It closed.
    Closed,
    /// It was deleted.
    Deleted,
    /// It got a message.
    Message,
}

/// A change to a session, for `chatSessionsChanged`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionChange {
    /// The session.
    pub session_id: String,
    /// Its organisations (the owner and a network chat's counterpart).
    pub org_ids: Vec<OrgId>,
    /// Its members after the change (and, for a membership change, those who left).
    pub member_ids: Vec<UserId>,
    /// What changed.
    pub kind: ChangeKind,
    /// The message, for `Message`.
    pub last_message: Option<ChatMessage>,
    /// When.
    pub at: DateTime<Utc>,
}

/// The bus: cheap to clone; every clone publishes to the same subscribers.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<DomainEvent>>,
}

impl EventBus {
    /// An in-process bus keeping at most `capacity` events per subscriber.
    pub fn in_process(capacity: usize) -> Self {
        let (local, _) = broadcast::channel(capacity.max(16));
        Self { local }
    }

    /// Publishes an event to every subscriber (none listening is fine).
    pub fn publish(&self, event: DomainEvent) {
        tracing::debug!(?event, "domain event");
        // An error only means that nobody is subscribed.
        let _ = self.local.send(Arc::new(event));
    }

    /// A new subscription, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DomainEvent>> {
        self.local.subscribe()
    }

    /// How many subscriptions are listening.
    pub fn subscribers(&self) -> usize {
        self.local.receiver_count()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::in_process(1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: usize) -> DomainEvent {
        DomainEvent::ChatChanged(SessionChange {
            session_id: format!("s{n}"),
            org_ids: vec![],
            member_ids: vec![],
            kind: ChangeKind::Message,
            last_message: None,
            at: Utc::now(),
        })
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_learns_how_much_it_missed_and_memory_stays_bounded() {
        let bus = EventBus::in_process(16);
        let mut slow = bus.subscribe();
        for n in 0..100 {
            bus.publish(change(n));
        }
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(missed)) => assert_eq!(missed, 84),
            other => panic!("expected a lag, got {other:?}"),
        }
        let next = slow.recv().await.expect("the newest events are kept");
        assert_eq!(*next, change_with_time(84, &next));
    }

    fn change_with_time(n: usize, like: &DomainEvent) -> DomainEvent {
        let DomainEvent::ChatChanged(c) = like else {
            panic!("not a change")
        };
        let DomainEvent::ChatChanged(mut expected) = change(n) else {
            unreachable!()
        };
        expected.at = c.at;
        DomainEvent::ChatChanged(expected)
    }

    #[test]
    fn events_round_trip_through_json_for_other_replicas() {
        let event = change(1);
        let wire = serde_json::to_string(&event).expect("json");
        assert!(wire.contains(r#""type":"chat_changed""#), "{wire}");
        assert_eq!(
            serde_json::from_str::<DomainEvent>(&wire).expect("back"),
            event
        );
    }
}
