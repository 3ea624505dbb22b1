//! Domain events and the bus that carries them to subscribers.
//!
//! Services publish a [`DomainEvent`] after the change it reports has committed, and only the
//! caller whose conditional update won publishes (a window opened by two schedulers is announced
//! once). The bus is a bounded broadcast: a subscriber that falls behind loses the oldest events
//! and learns so (`Lagged`), and resynchronises from the database instead of growing memory.
//!
//! With `CAREGRAPH_REDIS_URL` set, a replica publishes only to a Redis pub/sub channel and
//! hears every event, its own included, from that channel once, so an event raised on any
//! replica reaches the subscribers of every replica exactly once. When the Redis subscription
//! drops, the replica reconnects and tells its subscribers to resynchronise
//! ([`DomainEvent::Resync`]); when publishing fails (or the relay is backed up), this replica's
//! subscribers are told to resynchronise, never handed the event directly (it may yet arrive
//! through Redis, and must not arrive twice), and the failure is logged.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::{
    domain::{
        AppointmentId, ChatSessionId, OrgId, UserId,
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
    /// Events may have been missed (the broker connection dropped): re-read the state.
    Resync,
}

/// A chat session's status as of one change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// The session (`None` for an appointment whose chat is not open yet).
    pub session_id: Option<ChatSessionId>,
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
            session_id: Some(session.id),
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
    pub session_id: ChatSessionId,
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
    /// Events on their way to Redis (when configured).
    relay: Option<mpsc::Sender<DomainEvent>>,
    /// Whether the Redis subscription is up (when configured).
    redis_up: Option<Arc<AtomicBool>>,
    /// Counts published events (when set).
    published: Option<prometheus_client::metrics::counter::Counter>,
}

/// How often the Redis subscription is pinged (and how long a ping may take).
const HEARTBEAT: Duration = Duration::from_secs(5);

impl EventBus {
    /// An in-process bus keeping at most `capacity` events per subscriber.
    pub fn in_process(capacity: usize) -> Self {
        let (local, _) = broadcast::channel(capacity.max(16));
        Self {
            local,
            relay: None,
            redis_up: None,
            published: None,
        }
    }

    /// The bus, counting each published event in `published`.
    pub fn counting(mut self, published: prometheus_client::metrics::counter::Counter) -> Self {
        self.published = Some(published);
        self
    }

    /// A bus shared by every replica through Redis pub/sub at `url`. Returns once this replica
    /// is subscribed (so it hears its own first event); the relay tasks stop with `stop`.
    pub async fn redis(
        url: &str,
        channel: &str,
        capacity: usize,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("CAREGRAPH_REDIS_URL is not a Redis URL")?;
        let (local, _) = broadcast::channel(capacity.max(16));
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .context("cannot connect to Redis for events")?;
        pubsub
            .subscribe(channel)
            .await
            .context("cannot subscribe to the Redis event channel")?;
        let publisher = client
            .get_connection_manager()
            .await
            .context("cannot connect to Redis for publishing")?;
        let (relay, outgoing) = mpsc::channel(capacity.max(16) * 4);
        let channel: Arc<str> = channel.into();
        let redis_up = Arc::new(AtomicBool::new(true));
        tokio::spawn(listen(
            Subscription {
                client,
                channel: channel.clone(),
                up: redis_up.clone(),
            },
            pubsub,
            local.clone(),
            stop.clone(),
        ));
        tokio::spawn(forward(
            publisher,
            channel.clone(),
            outgoing,
            local.clone(),
            stop,
        ));
        tracing::info!(%channel, "domain events go through Redis");
        Ok(Self {
            local,
            relay: Some(relay),
            redis_up: Some(redis_up),
            published: None,
        })
    }

    /// Publishes an event to every subscriber (none listening is fine).
    pub fn publish(&self, event: DomainEvent) {
        if let Some(published) = &self.published {
            published.inc();
        }
        // Ids and kinds only: an event can carry message text and names (PHI).
        match &event {
            DomainEvent::ChatStatus(e) => {
                tracing::debug!(session = ?e.session_id, status = ?e.status, reason = ?e.reason, "domain event: chat status");
            }
            DomainEvent::ChatChanged(c) => {
                tracing::debug!(session = %c.session_id, kind = ?c.kind, "domain event: chat changed");
            }
            DomainEvent::Resync => tracing::debug!("domain event: resync"),
        }
        if let Some(relay) = &self.relay {
            match relay.try_send(event) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => {
                    tracing::warn!("the Redis relay is backed up; subscribers here resynchronise");
                    let _ = self.local.send(Arc::new(DomainEvent::Resync));
                    return;
                }
            }
        }
        // An error only means that nobody is subscribed.
        let _ = self.local.send(Arc::new(event));
    }

    /// A new subscription, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DomainEvent>> {
        self.local.subscribe()
    }

    /// Whether the Redis subscription is up: `None` without Redis.
    pub fn redis_up(&self) -> Option<bool> {
        self.redis_up.as_ref().map(|up| up.load(Ordering::Relaxed))
    }

    /// How many subscriptions are listening.
    pub fn subscribers(&self) -> usize {
        self.local.receiver_count()
    }
}

/// The Redis subscription's connection details and health flag.
struct Subscription {
    client: redis::Client,
    channel: Arc<str>,
    /// Cleared while the subscription is down (`/readyz` reports it).
    up: Arc<AtomicBool>,
}

/// Hands events from Redis to this replica's subscribers; reconnects (and asks subscribers to
/// resynchronise) when the subscription drops.
async fn listen(
    Subscription {
        client,
        channel,
        up,
    }: Subscription,
    mut pubsub: redis::aio::PubSub,
    local: broadcast::Sender<Arc<DomainEvent>>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let (mut sink, mut messages) = pubsub.split();
        // A half-open connection delivers nothing and reports nothing: a ping that goes
        // unanswered ends it.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = heartbeat.tick() => {
                    let pong = tokio::time::timeout(HEARTBEAT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("the Redis event subscription stopped answering");
                        break;
                    }
                }
                message = messages.next() => {
                    let Some(message) = message else { break };
                    match serde_json::from_slice::<DomainEvent>(message.get_payload_bytes()) {
                        Ok(event) => {
                            let _ = local.send(Arc::new(event));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "an unreadable event on the Redis channel");
                        }
                    }
                }
            }
        }
        tracing::warn!("the Redis event subscription dropped; reconnecting");
        up.store(false, Ordering::Relaxed);
        pubsub = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let attempt = async {
                let mut p = client.get_async_pubsub().await?;
                p.subscribe(&*channel).await?;
                Ok::<_, redis::RedisError>(p)
            };
            match attempt.await {
                Ok(p) => break p,
                Err(e) => tracing::warn!(error = %e, "Redis is still unreachable"),
            }
        };
        tracing::info!("the Redis event subscription is back; subscribers resynchronise");
        up.store(true, Ordering::Relaxed);
        let _ = local.send(Arc::new(DomainEvent::Resync));
    }
}

/// Publishes this replica's events to Redis; one that cannot be published is delivered here.
async fn forward(
    mut publisher: redis::aio::ConnectionManager,
    channel: Arc<str>,
    mut outgoing: mpsc::Receiver<DomainEvent>,
    local: broadcast::Sender<Arc<DomainEvent>>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            e = outgoing.recv() => e,
        };
        let Some(event) = event else { return };
        let payload = match serde_json::to_vec(&event) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "an event could not be serialised");
                continue;
            }
        };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(&*channel)
            .arg(payload)
            .query_async(&mut publisher)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, ?event, "publishing an event to Redis failed; subscribers here resynchronise");
            let _ = local.send(Arc::new(DomainEvent::Resync));
        }
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
            session_id: ChatSessionId::from_db(&format!("00000000-0000-7000-8000-{n:012}"))
                .expect("a valid id"),
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
