//! What a status subscription watches, and its state now.

use super::ChatService;
use crate::{
    auth::Viewer,
    db,
    domain::{
        AppointmentId, ChatSessionId,
        chat::{ChatStatus, SessionKey, StatusReason, status_at},
    },
    error::{AppError, AppResult},
    events::StatusEvent,
};

/// What a status subscription watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    /// A session.
    Session(ChatSessionId),
    /// An appointment's chat, whether or not it is open yet.
    Appointment(AppointmentId),
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
            Watch::Session(id) => Some(self.session(viewer, *id).await?.0),
            Watch::Appointment(id) => {
                let (appointment, _) = self.appointments.read(viewer, *id).await?;
                match db::chat_sessions::find_by_key(&self.db, &SessionKey::Appointment(*id))
                    .await?
                {
                    Some(s) => Some(self.session(viewer, s.id).await?.0),
                    None => {
                        let (_, from, until) = self.window_of(&appointment).await?;
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
}
