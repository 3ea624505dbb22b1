//! Invitations: who is invited as what, the states an invitation goes through, and its token
//! (random, shown once, stored only as a SHA-256 hash).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{InvitationId, OrgId, OrgRole, PatientId, UserId, care::GuardianRelationship};
use crate::error::{AppError, AppResult};

/// What accepting the invitation makes of the invitee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvitationKind {
    /// A member of the organisation.
    Member {
        /// The role granted.
        role: OrgRole,
        /// Job title.
        title: Option<String>,
    },
    /// A guardian of one of the organisation's patients.
    Guardian {
        /// The patient.
        patient_id: PatientId,
        /// How they relate.
        relationship: GuardianRelationship,
        /// Whether a co-guardian takes part in client chats.
        can_chat: bool,
    },
}

impl InvitationKind {
    /// The stored form of the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Member { .. } => "MEMBER",
            Self::Guardian { .. } => "GUARDIAN",
        }
    }

    /// The patient of a guardian invitation.
    pub fn patient_id(&self) -> Option<PatientId> {
        match self {
            Self::Member { .. } => None,
            Self::Guardian { patient_id, .. } => Some(*patient_id),
        }
    }
}

/// Where an invitation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvitationStatus {
    /// Waiting to be accepted.
    Pending,
    /// Accepted (used; a token works once).
    Accepted,
    /// Withdrawn by staff.
    Revoked,
    /// Not accepted in time.
    Expired,
}

/// An invitation as the services see it (never its token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    /// Its id.
    pub id: InvitationId,
    /// The inviting organisation.
    pub org_id: OrgId,
    /// The invitee's normalised email.
    pub email: String,
    /// The invitee's given name (for a new account).
    pub given_name: String,
    /// The invitee's family name (for a new account).
    pub family_name: String,
    /// Member or guardian, and of what.
    pub kind: InvitationKind,
    /// Who invited.
    pub invited_by: Option<UserId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// When it was accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Whose account accepted it.
    pub accepted_by: Option<UserId>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Invitation {
    /// Its state at `now`: accepted and revoked are final; a pending one expires at `expires_at`.
    pub fn status(&self, now: DateTime<Utc>) -> InvitationStatus {
        if self.accepted_at.is_some() {
            InvitationStatus::Accepted
        } else if self.revoked_at.is_some() {
            InvitationStatus::Revoked
        } else if now >= self.expires_at {
            InvitationStatus::Expired
        } else {
            InvitationStatus::Pending
        }
    }
}

/// An invitation token: 32 random bytes, base64url without padding (43 characters). Its
/// `Debug` leaves the token out; only [`InvitationToken::hash`] is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationToken(String);

impl std::fmt::Debug for InvitationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InvitationToken(<redacted>)")
    }
}

impl InvitationToken {
    /// A new random token.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token sent by a client: anything but 43 base64url characters is refused.
    pub fn parse(raw: &str, field: &str) -> AppResult<Self> {
        let raw = raw.trim();
        match URL_SAFE_NO_PAD.decode(raw) {
            Ok(bytes) if bytes.len() == 32 && raw.len() == 43 => Ok(Self(raw.to_owned())),
            _ => Err(AppError::bad_input(field, "not an invitation token")),
        }
    }

    /// The token, for the accept URL only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored form: lowercase hex of SHA-256 of the token.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_43_base64url_characters_that_parse_back_and_hash_to_64_hex() {
        let token = InvitationToken::generate();
        assert_eq!(token.expose().len(), 43);
        assert!(
            token
                .expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let parsed = InvitationToken::parse(token.expose(), "token").expect("parses");
        assert_eq!(parsed.hash(), token.hash());
        assert_eq!(token.hash().len(), 64);
        assert_ne!(InvitationToken::generate().hash(), token.hash());
        assert!(!format!("{token:?}").contains(token.expose()));
        for bad in [
            "",
            "short",
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
            &"A".repeat(44),
        ] {
            assert!(InvitationToken::parse(bad, "token").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn accepted_and_revoked_are_final_and_a_pending_invitation_expires_at_its_time() {
        let now = Utc::now();
        let mut invitation = Invitation {
            id: InvitationId::new(),
            org_id: OrgId::new(),
            email: "a@example.org".into(),
            given_name: "A".into(),
            family_name: "B".into(),
            kind: InvitationKind::Member {
                role: OrgRole::Staff,
                title: None,
            },
            invited_by: None,
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        };
        assert_eq!(invitation.status(now), InvitationStatus::Pending);
        assert_eq!(
            invitation.status(now + chrono::Duration::hours(1)),
            InvitationStatus::Expired
        );
        invitation.revoked_at = Some(now);
        assert_eq!(invitation.status(now), InvitationStatus::Revoked);
        invitation.accepted_at = Some(now);
        assert_eq!(
            invitation.status(now + chrono::Duration::hours(2)),
            InvitationStatus::Accepted
        );
    }
}
