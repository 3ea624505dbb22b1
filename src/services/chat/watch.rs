//! What subscriptions hear: what a status subscription watches, its state now, and which bus
//! events reach which subscriber (the read rule decides, here, not in the resolvers).

use std::sync::Arc;

use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::ChatService;
use crate::{
    auth::Viewer,
    db,
    domain::{
        AppointmentId, ChatSessionId, OrgId,
        chat::{ChatStatus, SessionKey, StatusReason, status_at},
    },
    error::{AppError, AppResult},
    events::{ChangeKind, DomainEvent, SessionChange, StatusEvent},
};

/// What a status subscription watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    /// A session.
    Session(ChatSessionId),
    /// An appointment's chat, whether or not it is open yet.
    Appointment(AppointmentId),
}

/// What a list subscriber hears next.
#[derive(Clone, Debug, PartialEq)]
pub enum ListEvent {
    /// A change to one of its sessions.
    Change(SessionChange),
    /// Events were missed: reload the list.
    Resync,
    /// The last change the subscriber hears: it may no longer follow the organisation's
    /// sessions (deactivated there, or no longer a client of its patients); the stream ends.
    Last(SessionChange),
}

impl Watch {
    /// Whether a status event is about what is watched.
    pub fn matches(&self, event: &StatusEvent) -> bool {
        match self {
            Self::Session(id) => event.session_id == Some(*id),
            Self::Appointment(id) => event.appointment_id == Some(*id),
        }
    }
}

impl ChatService {
    /// The status of what a subscription watches, as it is now (reason `CURRENT`), if the
    /// viewer may watch it: a session, by who may read it; an appointment, by who may read its
    /// chat once it exists, and before that by who may read the appointment (the first event is
    /// then the window the chat will have).
    pub async fn current_status(&self, viewer: &Viewer, watch: &Watch) -> AppResult<StatusEvent> {
        let session = match watch {
            Watch::Session(id) => Some(self.session(viewer, *id).await?.0.into_inner()),
            Watch::Appointment(id) => {
                let (appointment, _) =
                    crate::services::appointments::read(&self.db, self.clock.now(), viewer, *id)
                        .await?;
                match db::chat_sessions::find_by_key(&self.db, &SessionKey::Appointment(*id))
                    .await?
                {
                    Some(s) => Some(self.session(viewer, s.id).await?.0.into_inner()),
                    None => {
                        let (_, from, until) = self.window_of(&self.db, &appointment).await?;
                        let status = if appointment.status.is_terminal() {
                            ChatStatus::Closed
                        } else {
                            status_at(false, Some(from), Some(until), self.clock.now())
                        };
                        return Ok(StatusEvent {
                            session_id: None,
                            appointment_id: Some(*id),
                            status,
                            reason: StatusReason::Current,
                            allowed_from: Some(from),
                            allowed_until: Some(until),
                            at: self.clock.now(),
                        });
                    }
                }
            }
        };
        let session = session.ok_or(AppError::NotFound("chat session"))?;
        Ok(StatusEvent::of(
            &session,
            self.status_now(&session),
            StatusReason::Current,
            self.clock.now(),
        ))
    }

    /// The next event a watcher should hear: a matching status event, or the state now after a
    /// lag or a membership change; `None` ends the stream (the bus closed or access was lost).
    /// What it reads is boxed, so that waiting for an event takes little room (a subscription
    /// waits in it for its whole life).
    pub async fn next_status(
        &self,
        rx: &mut Receiver<Arc<DomainEvent>>,
        viewer: &Viewer,
        watch: &Watch,
    ) -> Option<StatusEvent> {
        loop {
            let event = match rx.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a status subscriber fell behind; resynchronising");
                    return Box::pin(self.current_status(viewer, watch)).await.ok();
                }
                Err(RecvError::Closed) => return None,
            };
            match &*event {
                // Access by appointment was checked before its chat existed: the chat's own
                // rule decides from then on (staff not in it and not admins stop here).
                DomainEvent::ChatStatus(s) if watch.matches(s) => {
                    if matches!(watch, Watch::Appointment(_)) && s.session_id.is_some() {
                        Box::pin(self.current_status(viewer, watch)).await.ok()?;
                    }
                    return Some(s.clone());
                }
                DomainEvent::Resync => {
                    return Box::pin(self.current_status(viewer, watch)).await.ok();
                }
                // A member who leaves a session stops watching it.
                DomainEvent::ChatChanged(c)
                    if c.kind == ChangeKind::MembersChanged
                        && matches!(watch, Watch::Session(id) if *id == c.session_id) =>
                {
                    Box::pin(self.current_status(viewer, watch)).await.ok()?;
                }
                _ => {}
            }
        }
    }

    /// The next change a list subscriber of `org` should hear: changes to its own sessions
    /// there (a message only while the read rule still lets it read the session, as the change
    /// carries the text), or a `Resync` after a lag; `None` ends the stream. Its reads are boxed,
    /// as [`Self::next_status`]'s.
    pub async fn next_change(
        &self,
        rx: &mut Receiver<Arc<DomainEvent>>,
        viewer: &Viewer,
        org: OrgId,
    ) -> Option<ListEvent> {
        let me = viewer.user().ok()?.id;
        loop {
            match rx.recv().await {
                Ok(event) => match &*event {
                    DomainEvent::Resync => return Some(ListEvent::Resync),
                    DomainEvent::ChatChanged(c)
                        if c.org_ids.contains(&org) && c.member_ids.contains(&me) =>
                    {
                        // Losing a place may end the right to follow the organisation at all.
                        if c.kind == ChangeKind::MembersChanged
                            && Box::pin(self.lister(viewer, org)).await.is_err()
                        {
                            return Some(ListEvent::Last(c.clone()));
                        }
                        let readable = c.kind != ChangeKind::Message
                            || Box::pin(self.session(viewer, c.session_id)).await.is_ok();
                        if readable {
                            return Some(ListEvent::Change(c.clone()));
                        }
                    }
                    _ => {}
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a list subscriber fell behind; asking it to reload");
                    return Some(ListEvent::Resync);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
