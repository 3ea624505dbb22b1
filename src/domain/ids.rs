//! Identifier newtypes. Raw strings become these at the edge (`parse`); only these travel inward.

use std::fmt;

use uuid::Uuid;

use crate::error::AppError;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses an identifier sent by a client; `field` names the argument for the error.
            pub fn parse(raw: &str, field: &str) -> Result<Self, AppError> {
                Uuid::parse_str(raw.trim())
                    .map(Self)
                    .map_err(|_| AppError::bad_input(field, concat!("not a valid ", $what, " id")))
            }

            /// Reads an identifier stored by caregraph itself.
            pub fn from_db(raw: &str) -> Result<Self, AppError> {
                Uuid::parse_str(raw)
                    .map(Self)
                    .map_err(|e| AppError::internal(anyhow::anyhow!("corrupt {} id {raw:?}: {e}", $what)))
            }

            /// The canonical lowercase hyphenated form, as stored and sent.
            pub fn as_string(&self) -> String {
                uuid_text(self.0)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

/// The canonical lowercase hyphenated form of `id`, as stored and sent (without `fmt`).
pub fn uuid_text(id: Uuid) -> String {
    id.hyphenated().encode_lower(&mut [0; 36]).to_owned()
}

/// A map keyed by ids, hashed with foldhash (seeded at random per process) rather than SipHash:
/// the keys are ids, a map holds at most what a request's limits let it ask for, and SipHash in
/// the per-request batch maps was about 3% of the dashboard query's instructions (callgrind).
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

id_type!(
    /// A person's id; the same id is the person's user id at the chat provider.
    UserId,
    "user"
);
id_type!(
    /// An organisation's id.
    OrgId,
    "organization"
);

id_type!(
    /// A patient's id (a person or an animal).
    PatientId,
    "patient"
);
id_type!(
    /// A consent record's id.
    ConsentId,
    "consent"
);
id_type!(
    /// A compliance group's id.
    ComplianceGroupId,
    "compliance group"
);
id_type!(
    /// A care team's id.
    CareTeamId,
    "care team"
);
id_type!(
    /// A care team membership's id.
    CareTeamMemberId,
    "care team member"
);
id_type!(
    /// A case's id.
    CaseId,
    "case"
);
id_type!(
    /// A chat session's id.
    ChatSessionId,
    "chat session"
);
id_type!(
    /// An external (SMS) member's id; the same id is their user id at the chat provider.
    ExternalMemberId,
    "external chat member"
);
id_type!(
    /// An appointment's id.
    AppointmentId,
    "appointment"
);
id_type!(
    /// An invitation's id.
    InvitationId,
    "invitation"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_rejects_garbage_and_names_the_field() {
        let err = UserId::parse("x'; drop table users", "userId").expect_err("garbage");
        match err {
            AppError::BadUserInput { field, .. } => assert_eq!(field.as_deref(), Some("userId")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ids_round_trip_in_lowercase() {
        let id = OrgId::new();
        let text = id.to_string();
        assert_eq!(text, text.to_lowercase());
        assert_eq!(OrgId::parse(&text.to_uppercase(), "id").expect("parse"), id);
    }
}
