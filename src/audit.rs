//! The audit trail's vocabulary and its request scope: who did what to which entity, recorded
//! by the service layer (ids and codes only, never names, message text or other PHI).
//!
//! A [`Viewer`](crate::auth::Viewer) carries an [`AuditScope`]: reads and denials are buffered
//! in it with [`AuditScope::record`] and written after the response in one batch (less the
//! allowed reads that repeat one written within the read window: [`coalesce`]); a change
//! writes its record with [`AuditScope::record_in`] in the change's own transaction.

pub mod chain;
pub mod coalesce;
pub mod retention;
pub mod verify;
pub mod writer;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel};

use crate::{
    db::entities::audit_event,
    domain::{OrgId, PatientId, UserId},
    error::AppResult,
};

pub use writer::AuditLog;

/// The chain of records that belong to no organisation (sign-ins).
pub const SYSTEM_CHAIN: &str = "system";

/// The longest operation name stored.
pub const MAX_OPERATION_NAME: usize = 100;

/// Whether `name` is a GraphQL name of at most [`MAX_OPERATION_NAME`] characters.
pub fn is_operation_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_OPERATION_NAME
        && bytes
            .next()
            .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// Read.
    Read,
    /// Created.
    Create,
    /// Changed.
    Update,
    /// Deleted or removed.
    Delete,
    /// Joined a meeting.
    Join,
    /// Exported.
    Export,
    /// Signed in.
    Login,
    /// A failed sign-in.
    LoginFailed,
    /// A chat token was issued.
    IssueToken,
    /// Sent a message.
    Send,
}

/// What kind of entity it was done to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditEntity {
    /// A patient's record.
    Patient,
    /// A guardian of a patient.
    Guardian,
    /// A consent.
    Consent,
    /// A care team.
    CareTeam,
    /// A member of a care team (by the member's id).
    CareTeamMember,
    /// A case.
    Case,
    /// A participant of a case (by the participant's user id).
    CaseParticipant,
    /// An appointment.
    Appointment,
    /// A support staff member of an appointment (by their user id).
    SupportStaff,
    /// An appointment's video meeting.
    Meeting,
    /// A chat session.
    ChatSession,
    /// A chat session's messages.
    ChatMessage,
    /// A chat provider token.
    ChatToken,
    /// An invitation.
    Invitation,
    /// A membership of an organisation.
    Membership,
    /// A user account (sign-ins).
    User,
    /// The audit trail itself (queries and exports).
    AuditTrail,
    /// A practitioner's weekly availability (the entity id is the practitioner's user id).
    Availability,
    /// A person outside caregraph in a chat, reached by SMS (by the external member's id).
    ExternalChatMember,
    /// An SMS relayed to an external chat member (by the gateway's message id).
    Sms,
}

/// Whether the read rule let it through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    /// Allowed.
    Allowed,
    /// Refused (`FORBIDDEN` or `NOT_FOUND` to the caller).
    Denied,
}

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuditActor {
    /// A signed-in user.
    User(UserId),
    /// A caller without credentials.
    Anonymous,
    /// The service itself (a command-line job, the outbox).
    System,
    /// The scheduler (chat windows, consent lapses, retention).
    Scheduler,
    /// A provider's webhook, by provider name.
    Webhook(&'static str),
}

macro_rules! codes {
    ($ty:ty { $($variant:ident => $code:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored code.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code),+ }
            }

            /// Reads a stored code.
            pub fn from_str_opt(code: &str) -> Option<Self> {
                match code { $($code => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

codes!(AuditAction {
    Read => "READ", Create => "CREATE", Update => "UPDATE", Delete => "DELETE", Join => "JOIN",
    Export => "EXPORT", Login => "LOGIN", LoginFailed => "LOGIN_FAILED",
    IssueToken => "ISSUE_TOKEN", Send => "SEND",
});
codes!(AuditEntity {
    Patient => "PATIENT", Guardian => "GUARDIAN", Consent => "CONSENT", CareTeam => "CARE_TEAM",
    CareTeamMember => "CARE_TEAM_MEMBER", Case => "CASE", CaseParticipant => "CASE_PARTICIPANT",
    Appointment => "APPOINTMENT", SupportStaff => "SUPPORT_STAFF", Meeting => "MEETING",
    ChatSession => "CHAT_SESSION", ChatMessage => "CHAT_MESSAGE", ChatToken => "CHAT_TOKEN",
    Invitation => "INVITATION", Membership => "MEMBERSHIP", User => "USER",
    AuditTrail => "AUDIT_TRAIL", Availability => "AVAILABILITY",
    ExternalChatMember => "EXTERNAL_CHAT_MEMBER", Sms => "SMS",
});
codes!(AuditOutcome { Allowed => "ALLOWED", Denied => "DENIED" });

impl AuditActor {
    /// The stored kind and id.
    pub fn to_db(&self) -> (&'static str, Option<String>) {
        match self {
            Self::User(id) => ("USER", Some(id.as_string())),
            Self::Anonymous => ("ANONYMOUS", None),
            Self::System => ("SYSTEM", None),
            Self::Scheduler => ("SCHEDULER", None),
            Self::Webhook(provider) => ("WEBHOOK", Some((*provider).to_owned())),
        }
    }
}

/// An audited entity's id: a caregraph id kept as its 16 bytes until its record is written (a
/// list's reads are mostly coalesced, and then never formatted), or any other text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EntityId {
    /// A caregraph id (or another UUID).
    Uuid(uuid::Uuid),
    /// Any other id (a provider's message id, say).
    Text(String),
}

/// Implements `From<id>` for [`EntityId`] for each id type.
macro_rules! uuid_entity_ids {
    ($($id:ty),+) => {
        $(
            impl From<$id> for EntityId {
                fn from(id: $id) -> Self {
                    Self::Uuid(id.into())
                }
            }
        )+
    };
}

uuid_entity_ids!(
    uuid::Uuid,
    crate::domain::AppointmentId,
    crate::domain::CareTeamId,
    crate::domain::CareTeamMemberId,
    crate::domain::CaseId,
    crate::domain::ChatSessionId,
    crate::domain::ComplianceGroupId,
    crate::domain::ConsentId,
    crate::domain::ExternalMemberId,
    crate::domain::InvitationId,
    OrgId,
    PatientId,
    UserId
);

impl From<&str> for EntityId {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<&String> for EntityId {
    fn from(text: &String) -> Self {
        Self::Text(text.clone())
    }
}

impl From<String> for EntityId {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

/// One thing to record, before the request's context is added.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditEntry {
    /// The organisation the entity belongs to, if any.
    pub org_id: Option<OrgId>,
    /// What was done.
    pub action: AuditAction,
    /// To what kind of entity.
    pub entity: AuditEntity,
    /// The entity's id.
    pub entity_id: Option<EntityId>,
    /// The patient the entity belongs to, if any.
    pub patient_id: Option<PatientId>,
    /// Allowed or denied.
    pub outcome: AuditOutcome,
}

impl AuditEntry {
    /// An allowed `action` on `entity` `entity_id`.
    pub fn new(action: AuditAction, entity: AuditEntity, entity_id: impl Into<EntityId>) -> Self {
        Self {
            org_id: None,
            action,
            entity,
            entity_id: Some(entity_id.into()),
            patient_id: None,
            outcome: AuditOutcome::Allowed,
        }
    }

    /// An allowed read of `entity` `entity_id`.
    pub fn read(entity: AuditEntity, entity_id: impl Into<EntityId>) -> Self {
        Self::new(AuditAction::Read, entity, entity_id)
    }

    /// In organisation `org_id`.
    pub fn org(mut self, org_id: OrgId) -> Self {
        self.org_id = Some(org_id);
        self
    }

    /// Belonging to patient `patient_id`.
    pub fn patient(mut self, patient_id: PatientId) -> Self {
        self.patient_id = Some(patient_id);
        self
    }

    /// Refused.
    pub fn denied(mut self) -> Self {
        self.outcome = AuditOutcome::Denied;
        self
    }
}

/// A complete record, ready to store (unsealed: the chain columns are filled later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// A UUIDv7.
    pub id: uuid::Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: AuditActor,
    /// What.
    pub entry: AuditEntry,
    /// The request's id (shared by the request's records: a clone is a count, not a copy).
    pub request_id: Option<Arc<str>>,
    /// The client's address.
    pub client_address: Option<Arc<str>>,
    /// The GraphQL operation's name.
    pub operation_name: Option<Arc<str>>,
}

impl AuditRecord {
    /// The row to insert, unsealed.
    pub fn to_row(&self) -> audit_event::ActiveModel {
        self.to_model().into_active_model().reset_all()
    }

    /// The row as stored, unsealed (the chain columns empty).
    pub fn to_model(&self) -> audit_event::Model {
        let (actor_kind, actor_id) = self.actor.to_db();
        audit_event::Model {
            id: self.id.to_string(),
            at: self.at,
            chain: self.chain(),
            org_id: self.entry.org_id.map(|org| org.as_string()),
            actor_kind: actor_kind.to_owned(),
            actor_id: actor_id.map(|a| within(&a, 64)),
            action: self.entry.action.as_str().to_owned(),
            entity_type: self.entry.entity.as_str().to_owned(),
            entity_id: self.entry.entity_id.as_ref().map(|e| match e {
                EntityId::Uuid(id) => crate::domain::ids::uuid_text(*id),
                EntityId::Text(text) => within(text, 128),
            }),
            patient_id: self.entry.patient_id.map(|p| p.as_string()),
            outcome: self.entry.outcome.as_str().to_owned(),
            request_id: self.request_id.as_deref().map(|r| within(r, 64)),
            client_address: self.client_address.as_deref().map(|a| within(a, 64)),
            operation_name: self.operation_name.as_deref().map(|o| within(o, 128)),
            chain_index: None,
            prev_hash: None,
            hash: None,
        }
    }

    /// The chain the record belongs to: its organisation's, or [`SYSTEM_CHAIN`].
    pub fn chain(&self) -> String {
        self.entry
            .org_id
            .map_or_else(|| SYSTEM_CHAIN.to_owned(), |org| org.as_string())
    }
}

/// A version-7 UUID for a record made at `at`, its random bits from the thread's generator
/// (no system call per record, unlike `Uuid::now_v7`).
fn record_id(at: DateTime<Utc>) -> uuid::Uuid {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or_default();
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid()
}

/// `text` cut to its column's width, `max` characters: PostgreSQL refuses a longer value, and
/// one refused row would hold back the whole batch it is written in.
fn within(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The request (or connection, or job) context every record of a caller shares, and the
/// buffer of its reads. Clones share the buffer. The default scope records nothing (library
/// callers and tests that build a `Viewer` by hand).
#[derive(Clone, Debug, Default)]
pub struct AuditScope {
    inner: Option<Arc<ScopeInner>>,
}

#[derive(Debug)]
struct ScopeInner {
    actor: AuditActor,
    request_id: Option<Arc<str>>,
    client_address: Option<Arc<str>>,
    operation_name: Mutex<Option<Arc<str>>>,
    buffer: Mutex<Vec<AuditRecord>>,
}

impl AuditScope {
    /// A recording scope for `actor`.
    pub fn new(
        actor: AuditActor,
        request_id: Option<String>,
        client_address: Option<String>,
    ) -> Self {
        Self {
            inner: Some(Arc::new(ScopeInner {
                actor,
                request_id: request_id.map(Arc::from),
                client_address: client_address.map(Arc::from),
                operation_name: Mutex::new(None),
                buffer: Mutex::new(Vec::new()),
            })),
        }
    }

    /// Whether this scope records anything.
    pub fn is_recording(&self) -> bool {
        self.inner.is_some()
    }

    /// Sets the GraphQL operation's name for the records that follow, if it is a valid GraphQL
    /// name (`[_A-Za-z][_0-9A-Za-z]*`) of at most [`MAX_OPERATION_NAME`] characters; anything
    /// else is not stored.
    pub fn set_operation_name(&self, name: Option<&str>) {
        if let Some(inner) = &self.inner
            && let Ok(mut slot) = inner.operation_name.lock()
        {
            *slot = name.filter(|n| is_operation_name(n)).map(Arc::from);
        }
    }

    /// The same context (request id, address, operation) for another actor, with a buffer of
    /// its own (a sign-in learns its user only when it succeeds).
    pub fn with_actor(&self, actor: AuditActor) -> Self {
        match &self.inner {
            None => Self::default(),
            Some(inner) => Self {
                inner: Some(Arc::new(ScopeInner {
                    actor,
                    request_id: inner.request_id.clone(),
                    client_address: inner.client_address.clone(),
                    operation_name: Mutex::new(
                        inner.operation_name.lock().ok().and_then(|n| n.clone()),
                    ),
                    buffer: Mutex::new(Vec::new()),
                })),
            },
        }
    }

    /// Whether an operation name is set.
    pub fn has_operation_name(&self) -> bool {
        self.inner
            .as_ref()
            .and_then(|i| i.operation_name.lock().ok().map(|n| n.is_some()))
            .unwrap_or(false)
    }

    /// The scope's actor, if it records.
    pub fn actor(&self) -> Option<&AuditActor> {
        self.inner.as_ref().map(|i| &i.actor)
    }

    fn complete(inner: &ScopeInner, entry: AuditEntry) -> AuditRecord {
        let operation_name = inner.operation_name.lock().ok().and_then(|n| n.clone());
        Self::complete_with(inner, entry, operation_name)
    }

    /// A record of `entry` in this context: the record is the only allocation (the shared
    /// strings are reference-counted).
    fn complete_with(
        inner: &ScopeInner,
        entry: AuditEntry,
        operation_name: Option<Arc<str>>,
    ) -> AuditRecord {
        // Microseconds: what both databases store, so the hash covers what is kept.
        let at = Utc::now().trunc_subsecs(6);
        AuditRecord {
            id: record_id(at),
            at,
            actor: inner.actor.clone(),
            entry,
            request_id: inner.request_id.clone(),
            client_address: inner.client_address.clone(),
            operation_name,
        }
    }

    /// Buffers a read or a denial; the buffer is written after the response.
    pub fn record(&self, entry: AuditEntry) {
        if let Some(inner) = &self.inner {
            let record = Self::complete(inner, entry);
            if let Ok(mut buffer) = inner.buffer.lock() {
                buffer.push(record);
            }
        }
    }

    /// Buffers one read per entry (a list's rows), taking the buffer's lock once.
    pub fn record_all(&self, entries: impl IntoIterator<Item = AuditEntry>) {
        if let Some(inner) = &self.inner {
            let operation_name = inner.operation_name.lock().ok().and_then(|n| n.clone());
            let records: Vec<AuditRecord> = entries
                .into_iter()
                .map(|e| Self::complete_with(inner, e, operation_name.clone()))
                .collect();
            if let Ok(mut buffer) = inner.buffer.lock() {
                buffer.extend(records);
            }
        }
    }

    /// Writes the record of a change in the change's transaction.
    pub async fn record_in(
        &self,
        txn: &impl crate::db::Source,
        entry: AuditEntry,
    ) -> AppResult<()> {
        if let Some(inner) = &self.inner {
            let record = Self::complete(inner, entry);
            audit_event::Entity::insert(record.to_row())
                .exec_without_returning(txn)
                .await?;
        }
        Ok(())
    }

    /// Takes the buffered records (to write them).
    pub fn take(&self) -> Vec<AuditRecord> {
        self.inner
            .as_ref()
            .and_then(|inner| {
                inner
                    .buffer
                    .lock()
                    .ok()
                    .map(|mut b| std::mem::take(&mut *b))
            })
            .unwrap_or_default()
    }

    /// How many records wait in the buffer.
    pub fn buffered(&self) -> usize {
        self.inner
            .as_ref()
            .and_then(|inner| inner.buffer.lock().ok().map(|b| b.len()))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(entry: AuditEntry) -> AuditRecord {
        AuditRecord {
            id: uuid::Uuid::now_v7(),
            at: Utc::now(),
            actor: AuditActor::System,
            entry,
            request_id: None,
            client_address: None,
            operation_name: None,
        }
    }

    #[test]
    fn an_id_is_stored_as_its_lowercase_hyphenated_text_and_other_text_cut_to_its_column() {
        let patient = PatientId::new();
        let row = record(AuditEntry::read(AuditEntity::Patient, patient)).to_model();
        assert_eq!(row.entity_id, Some(patient.to_string()));
        assert_eq!(row.entity_id, Some(patient.as_string()));
        let long = "x".repeat(200);
        let row = record(AuditEntry::read(AuditEntity::Sms, long.as_str())).to_model();
        assert_eq!(row.entity_id, Some("x".repeat(128)));
    }
}
