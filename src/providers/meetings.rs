//! Video meeting links: the [`MeetingLinks`] trait and the Jitsi implementation.

pub mod jitsi;

use chrono::{DateTime, Utc};

use crate::{domain::AppointmentId, error::AppResult};

/// Who joins a meeting, as the link needs them.
#[derive(Clone, Debug)]
pub struct Participant {
    /// The user id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Avatar URL.
    pub avatar: Option<String>,
    /// Whether they moderate (the practitioner).
    pub moderator: bool,
}

/// Makes room names and join links.
pub trait MeetingLinks: Send + Sync + 'static {
    /// The provider's name (`jitsi`).
    fn provider(&self) -> &'static str;
    /// The room of an appointment: fixed, unique, unguessable, lowercase.
    fn room_name(&self, appointment: AppointmentId) -> String;
    /// A participant's link to a room, valid from `from` until `until`.
    fn join_url(
        &self,
        room: &str,
        participant: &Participant,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> AppResult<String>;
}
