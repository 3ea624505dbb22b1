//! The audit trail as read back: a stored record, the filter of `auditEvents` and its export,
//! and one line of a patient's access log.

use chrono::{DateTime, Utc};

use crate::{
    audit::{AuditAction, AuditEntity, AuditOutcome},
    domain::{OrgId, PatientId, UserId},
    error::{AppError, AppResult},
};

/// The longest actor id a filter accepts (the column's width).
pub const MAX_ACTOR_ID: usize = 64;

/// What kind of actor a stored record names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// A signed-in user (the id is their user id).
    User,
    /// A caller without credentials.
    Anonymous,
    /// The service itself.
    System,
    /// The scheduler.
    Scheduler,
    /// A provider's webhook (the id is the provider's name).
    Webhook,
}

impl ActorKind {
    /// The stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Anonymous => "ANONYMOUS",
            Self::System => "SYSTEM",
            Self::Scheduler => "SCHEDULER",
            Self::Webhook => "WEBHOOK",
        }
    }

    /// Reads a stored code.
    pub fn from_db(code: &str) -> AppResult<Self> {
        Ok(match code {
            "USER" => Self::User,
            "ANONYMOUS" => Self::Anonymous,
            "SYSTEM" => Self::System,
            "SCHEDULER" => Self::Scheduler,
            "WEBHOOK" => Self::Webhook,
            other => return Err(corrupt("actor kind", other)),
        })
    }
}

fn corrupt(what: &str, code: &str) -> AppError {
    AppError::internal(anyhow::anyhow!("unknown audit {what} code {code:?}"))
}

/// Reads a stored action code.
pub fn action_from_db(code: &str) -> AppResult<AuditAction> {
    AuditAction::from_str_opt(code).ok_or_else(|| corrupt("action", code))
}

/// Reads a stored entity type code.
pub fn entity_from_db(code: &str) -> AppResult<AuditEntity> {
    AuditEntity::from_str_opt(code).ok_or_else(|| corrupt("entity type", code))
}

/// Reads a stored outcome code.
pub fn outcome_from_db(code: &str) -> AppResult<AuditOutcome> {
    AuditOutcome::from_str_opt(code).ok_or_else(|| corrupt("outcome", code))
}

/// One stored audit record, as an auditor reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The record's id (a UUIDv7).
    pub id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The actor's kind.
    pub actor_kind: ActorKind,
    /// The actor's id: a user id, a webhook's provider, or none.
    pub actor_id: Option<String>,
    /// The organisation, if any.
    pub org_id: Option<OrgId>,
    /// What was done.
    pub action: AuditAction,
    /// To which kind of entity.
    pub entity: AuditEntity,
    /// The entity's id.
    pub entity_id: Option<String>,
    /// The patient the entity belongs to.
    pub patient_id: Option<String>,
    /// Allowed or denied.
    pub outcome: AuditOutcome,
    /// The request's id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_address: Option<String>,
    /// The GraphQL operation's name.
    pub operation_name: Option<String>,
}

impl AuditEvent {
    /// The acting user, when the actor is one.
    pub fn actor_user(&self) -> Option<UserId> {
        match (self.actor_kind, &self.actor_id) {
            (ActorKind::User, Some(id)) => UserId::from_db(id).ok(),
            _ => None,
        }
    }
}

/// Which records of one organisation to read: every given field must match; `from` is
/// inclusive and `to` exclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Records about this patient.
    pub patient_id: Option<PatientId>,
    /// Records by this actor (a user id, or a webhook's provider name), compared as text.
    pub actor_id: Option<String>,
    /// Records about this kind of entity.
    pub entity: Option<AuditEntity>,
    /// Records of this action.
    pub action: Option<AuditAction>,
    /// Records with this outcome.
    pub outcome: Option<AuditOutcome>,
    /// At or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Before this time.
    pub to: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// Checks the filter: an actor id of at most 64 characters, `from` before `to`.
    pub fn validate(self) -> AppResult<Self> {
        if let Some(actor) = &self.actor_id
            && (actor.trim().is_empty() || actor.chars().count() > MAX_ACTOR_ID)
        {
            return Err(AppError::bad_input(
                "filter.actorId",
                format!("an id of 1 to {MAX_ACTOR_ID} characters"),
            ));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(AppError::bad_input(
                "filter.to",
                "must be after filter.from",
            ));
        }
        Ok(Self {
            actor_id: self.actor_id.map(|a| a.trim().to_owned()),
            ..self
        })
    }
}

/// One line of a patient's access log: a staff member's read of the patient's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// The record's id.
    pub id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The reader's organisation.
    pub org_id: OrgId,
    /// The reader.
    pub reader: UserId,
    /// What they did (a read).
    pub action: AuditAction,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_with_to_before_from_or_an_overlong_actor_is_refused() {
        let now = Utc::now();
        let bad = AuditFilter {
            from: Some(now),
            to: Some(now),
            ..AuditFilter::default()
        };
        match bad.validate() {
            Err(AppError::BadUserInput { field, .. }) => {
                assert_eq!(field.as_deref(), Some("filter.to"))
            }
            other => panic!("{other:?}"),
        }
        let long = AuditFilter {
            actor_id: Some("x".repeat(65)),
            ..AuditFilter::default()
        };
        assert!(long.validate().is_err());
        let fine = AuditFilter {
            actor_id: Some(" abc ".into()),
            ..AuditFilter::default()
        };
        assert_eq!(
            fine.validate().expect("valid").actor_id.as_deref(),
            Some("abc")
        );
    }
}
