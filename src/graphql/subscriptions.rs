//! Subscriptions: `chatSessionStatus` for the mobile app (the current state first, then every
//! transition) and `chatSessionsChanged` for the PMS's list. Both read the event bus through a
//! bounded buffer: a subscriber that falls behind gets the current state again (`CURRENT`, or a
//! `RESYNC` change) instead of a silent gap. A stream ends with the socket when the access token
//! expires (the WebSocket handler closes it with 4403).

use std::time::Duration;

use async_graphql::{Context, Enum, ID, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, stream};
use tokio_stream::wrappers::IntervalStream;

use super::{
    chat::{ChatMessage, ChatSession, ChatStatus, ChatStatusReason},
    context::{services, viewer},
};
use crate::{
    auth::Viewer,
    domain::{AppointmentId, ChatSessionId, OrgId},
    error::AppError,
    events::{ChangeKind, SessionChange, StatusEvent},
    services::chat::{ListEvent, Watch},
};

/// Subscription roots.
#[derive(Default)]
pub struct Subscription;

/// A chat session's status: the current one first, then one per change.
#[derive(SimpleObject, Clone, Debug)]
pub struct ChatSessionStatusEvent {
    /// The session (null while an appointment's chat is not open yet).
    pub session_id: Option<ID>,
    /// Its appointment (client chats).
    pub appointment_id: Option<ID>,
    /// The status.
    pub status: ChatStatus,
    /// Why this event.
    pub reason: ChatStatusReason,
    /// The window's start (client chats).
    pub allowed_from: Option<DateTime<Utc>>,
    /// The window's end (client chats).
    pub allowed_until: Option<DateTime<Utc>>,
    /// When it changed.
    pub at: DateTime<Utc>,
}

impl From<StatusEvent> for ChatSessionStatusEvent {
    fn from(e: StatusEvent) -> Self {
        Self {
            session_id: e.session_id.map(|s| ID(s.to_string())),
            appointment_id: e.appointment_id.map(|a| ID(a.to_string())),
            status: e.status.into(),
            reason: e.reason.into(),
            allowed_from: e.allowed_from,
            allowed_until: e.allowed_until,
            at: e.at,
        }
    }
}

/// What changed about a session in the list.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ChatSessionChangeKind {
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
    /// It got a message (`lastMessage`).
    Message,
    /// Events were missed (the subscriber fell behind): reload the list.
    Resync,
}

impl From<ChangeKind> for ChatSessionChangeKind {
    fn from(k: ChangeKind) -> Self {
        match k {
            ChangeKind::Created => Self::Created,
            ChangeKind::Updated => Self::Updated,
            ChangeKind::MembersChanged => Self::MembersChanged,
            ChangeKind::Closed => Self::Closed,
            ChangeKind::Deleted => Self::Deleted,
            ChangeKind::Message => Self::Message,
        }
    }
}

/// A change to one of the caller's sessions.
pub struct ChatSessionChange {
    kind: ChatSessionChangeKind,
    change: Option<SessionChange>,
    viewer: Viewer,
}

impl ChatSessionChange {
    fn new(event: ListEvent, viewer: Viewer) -> Self {
        match event {
            ListEvent::Change(c) | ListEvent::Last(c) => Self {
                kind: c.kind.into(),
                change: Some(c),
                viewer,
            },
            ListEvent::Resync => Self {
                kind: ChatSessionChangeKind::Resync,
                change: None,
                viewer,
            },
        }
    }
}

#[Object]
impl ChatSessionChange {
    /// What changed.
    async fn kind(&self) -> ChatSessionChangeKind {
        self.kind
    }
    /// The session (null for `RESYNC`).
    async fn session_id(&self) -> Option<ID> {
        self.change.as_ref().map(|c| ID(c.session_id.to_string()))
    }
    /// The session as it is now (null when deleted, when the caller left it, or for `RESYNC`).
    async fn session(&self, ctx: &Context<'_>) -> Option<ChatSession> {
        let change = self.change.as_ref()?;
        services(ctx)
            .chats
            .session(&self.viewer, change.session_id)
            .await
            .ok()
            .map(|(s, _)| ChatSession::from(s))
    }
    /// The new message (`MESSAGE`).
    async fn last_message(&self) -> Option<ChatMessage> {
        self.change
            .as_ref()
            .and_then(|c| c.last_message.clone())
            .map(Into::into)
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.change.as_ref().map_or_else(Utc::now, |c| c.at)
    }
}

fn id_arg(raw: &Option<ID>) -> Option<&str> {
    raw.as_ref().map(|i| i.as_str())
}

#[Subscription]
impl Subscription {
    /// A chat session's status, by `sessionId` or by `appointmentId` (exactly one): the current
    /// state first (`CURRENT`; for an appointment whose chat is not open yet, the window it will
    /// have), then one event per change. Only those who may read the session may subscribe.
    async fn chat_session_status(
        &self,
        ctx: &Context<'_>,
        session_id: Option<ID>,
        appointment_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = ChatSessionStatusEvent> + use<>> {
        let viewer = viewer(ctx).clone();
        viewer.user()?;
        let watch = match (id_arg(&session_id), id_arg(&appointment_id)) {
            (Some(id), None) => Watch::Session(ChatSessionId::parse(id, "sessionId")?),
            (None, Some(id)) => Watch::Appointment(AppointmentId::parse(id, "appointmentId")?),
            _ => {
                return Err(AppError::bad_input(
                    "sessionId",
                    "give exactly one of sessionId and appointmentId",
                )
                .into());
            }
        };
        let services = services(ctx).clone();
        // Subscribe before reading the state: a change in between is seen twice, never missed.
        let rx = services.events.subscribe();
        // Boxed, here and in what the stream awaits: a stream lives as long as its socket, and
        // would otherwise keep room for the largest future it ever awaited (the database
        // reads), ten thousand times over.
        let first = Box::pin(services.chats.current_status(&viewer, &watch)).await?;
        let rest = stream::unfold(
            (rx, services, viewer, watch),
            |(mut rx, services, viewer, watch)| async move {
                let next = services.chats.next_status(&mut rx, &viewer, &watch).await?;
                Some((next.into(), (rx, services, viewer, watch)))
            },
        );
        Ok(stream::once(async move { first.into() }).chain(rest))
    }

    /// Changes to the caller's sessions in an organisation, for the PMS list: created, members
    /// changed, updated, closed, deleted, or a new message (`lastMessage`). Staff of the
    /// organisation and clients of its patients.
    async fn chat_sessions_changed(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = ChatSessionChange> + use<>> {
        let viewer = viewer(ctx).clone();
        let org = OrgId::parse(&org_id, "orgId")?;
        let services = services(ctx).clone();
        Box::pin(services.chats.lister(&viewer, org)).await?;
        let rx = services.events.subscribe();
        // After a `Last` change the stream completes.
        Ok(stream::unfold(
            Some((rx, viewer, services)),
            move |state| async move {
                let (mut rx, viewer, services) = state?;
                let next = services.chats.next_change(&mut rx, &viewer, org).await?;
                let last = matches!(next, ListEvent::Last(_));
                let change = ChatSessionChange::new(next, viewer.clone());
                Some((change, (!last).then_some((rx, viewer, services))))
            },
        ))
    }

    /// The server's clock, every `everyMs` milliseconds (100 to 60000). Signed-in callers only;
    /// a probe for the transport.
    async fn server_time(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1000)] every_ms: i32,
    ) -> async_graphql::Result<impl Stream<Item = DateTime<Utc>> + use<>> {
        viewer(ctx).user()?;
        if !(100..=60_000).contains(&every_ms) {
            return Err(AppError::bad_input("everyMs", "must be between 100 and 60000").into());
        }
        let period = Duration::from_millis(u64::try_from(every_ms).unwrap_or(1000));
        Ok(IntervalStream::new(tokio::time::interval(period)).map(|_| Utc::now()))
    }
}
