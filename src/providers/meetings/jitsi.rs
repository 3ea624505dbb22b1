//! Jitsi Meet links. Room names are `<prefix>_<appointment id>_<16 hex of an HMAC of the id>`,
//! lowercase `[a-z0-9_-]`. On a secured deployment (`JITSI_APP_ID` and `JITSI_APP_SECRET`), each
//! participant's link carries an HS256 token (`?jwt=`) as prosody's token auth expects: `typ:
//! JWT`, `iss` = app id, `aud` = `jitsi`, `sub` = domain, `room`, `nbf`/`exp` = the window and
//! `context.user` with string fields (`moderator` for the practitioner).

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{MeetingLinks, Participant};
use crate::{
    config::JitsiConfig,
    domain::AppointmentId,
    error::{AppError, AppResult},
};

/// Jitsi Meet.
pub struct Jitsi {
    domain: String,
    prefix: String,
    room_key: SecretString,
    app: Option<(String, SecretString)>,
}

impl Jitsi {
    /// Builds the link maker; `room_key` keys the room-name HMAC.
    pub fn new(config: &JitsiConfig, room_key: SecretString) -> Self {
        Self {
            domain: config.domain.to_lowercase(),
            prefix: config.room_prefix.clone(),
            room_key,
            app: config.app_id.clone().zip(config.app_secret.clone()),
        }
    }
}

impl MeetingLinks for Jitsi {
    fn provider(&self) -> &'static str {
        "jitsi"
    }

    fn room_name(&self, appointment: AppointmentId) -> String {
        let id = appointment.to_string();
        let digest = crate::crypto::hmac_hex(
            self.room_key.expose_secret().as_bytes(),
            format!("jitsi-room:{id}").as_bytes(),
        );
        format!("{}_{}_{}", self.prefix, id, &digest[..16]).to_lowercase()
    }

    fn join_url(
        &self,
        room: &str,
        participant: &Participant,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> AppResult<String> {
        let base = format!("https://{}/{}", self.domain, room);
        let Some((app_id, secret)) = &self.app else {
            return Ok(base);
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".into());
        let claims = json!({
            "iss": app_id,
            "aud": "jitsi",
            "sub": self.domain,
            "room": room.to_lowercase(),
            "nbf": from.timestamp(),
            "exp": until.timestamp(),
            "iat": Utc::now().timestamp(),
            "context": {
                "user": {
                    "id": participant.id,
                    "name": participant.name,
                    "email": participant.email,
                    "avatar": participant.avatar.clone().unwrap_or_default(),
                    "moderator": if participant.moderator { "true" } else { "false" },
                }
            }
        });
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        )
        .map_err(|e| AppError::internal(anyhow::anyhow!("signing a Jitsi token: {e}")))?;
        Ok(format!("{base}?jwt={token}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jitsi() -> Jitsi {
        Jitsi::new(
            &JitsiConfig {
                domain: "Meet.Example.com".into(),
                room_prefix: "caregraph".into(),
                app_id: None,
                app_secret: None,
                allow_early_minutes: 15,
                max_late_minutes: 120,
            },
            SecretString::from("room-key"),
        )
    }

    #[test]
    fn room_names_are_fixed_lowercase_and_keyed() {
        let j = jitsi();
        let id = AppointmentId::new();
        let room = j.room_name(id);
        assert_eq!(room, j.room_name(id));
        assert!(room.starts_with(&format!("caregraph_{id}_")));
        assert_eq!(room.rsplit('_').next().map(str::len), Some(16));
        assert!(room.len() <= 64);
        assert!(
            room.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        );
        let other = Jitsi::new(
            &JitsiConfig {
                domain: "meet.example.com".into(),
                room_prefix: "caregraph".into(),
                app_id: None,
                app_secret: None,
                allow_early_minutes: 15,
                max_late_minutes: 120,
            },
            SecretString::from("another-key"),
        );
        assert_ne!(
            room,
            other.room_name(id),
            "the suffix depends on the server secret"
        );
    }
}
