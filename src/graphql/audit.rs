//! GraphQL for the audit trail: `auditEvents` and `exportAuditEvents` for an organisation's
//! auditors, and `accessLog` for a patient's guardians and staff. Names are resolved when the
//! trail is read (through the loaders), never stored in it.

use async_graphql::{
    Context, Enum, ID, InputObject, Object, OutputType, SimpleObject,
    connection::{Connection, ConnectionNameType, EdgeNameType, EmptyFields},
};
use chrono::{DateTime, Utc};

use super::{
    context::{loader, services, viewer},
    errors::GqlResult,
    organizations::User,
    pagination::{self, Conn},
};
use crate::{
    audit,
    domain::{
        self, OrgId, PatientId, UserId,
        audit::{AccessLogEntry, ActorKind, AuditFilter},
    },
    error::AppError,
    services::audit_export::ExportFormat,
};

/// Declares a GraphQL enum with the variants (and so the codes) of a domain enum, both ways.
macro_rules! mirror {
    ($(#[$doc:meta])* $name:ident($gql:literal) => $domain:ty { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
        #[graphql(name = $gql)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl From<$name> for $domain {
            fn from(v: $name) -> Self {
                match v { $($name::$variant => <$domain>::$variant),+ }
            }
        }

        impl From<$domain> for $name {
            fn from(v: $domain) -> Self {
                match v { $(<$domain>::$variant => $name::$variant),+ }
            }
        }
    };
}

mirror!(
    /// What was done.
    AuditActionKind("AuditAction") => audit::AuditAction {
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
);
mirror!(
    /// What kind of entity it was done to.
    AuditEntityType("AuditEntityType") => audit::AuditEntity {
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
);
mirror!(
    /// Whether the read rule let it through.
    AuditOutcome("AuditOutcome") => audit::AuditOutcome {
        /// Allowed.
        Allowed,
        /// Refused (`FORBIDDEN` or `NOT_FOUND` to the caller).
        Denied,
    }
);
mirror!(
    /// Who acted.
    AuditActorKind("AuditActorKind") => ActorKind {
        /// A signed-in user.
        User,
        /// A caller without credentials.
        Anonymous,
        /// The service itself (a command-line job, the outbox).
        System,
        /// The scheduler (chat windows, consent lapses, retention).
        Scheduler,
        /// A provider's webhook.
        Webhook,
    }
);
mirror!(
    /// The file format of an audit export.
    AuditExportFormat("AuditExportFormat") => ExportFormat {
        /// One JSON object per line (`application/x-ndjson`), with this schema's field names.
        Ndjson,
        /// Comma-separated values with a header row (`text/csv`, RFC 4180 quoting).
        Csv,
    }
);

/// Which audit records to read; every given field must match.
#[derive(InputObject, Default)]
pub struct AuditEventFilter {
    /// Records about this patient.
    pub patient_id: Option<ID>,
    /// Records by this actor (a user id, or a webhook's provider name).
    pub actor_id: Option<ID>,
    /// Records about this kind of entity.
    pub entity_type: Option<AuditEntityType>,
    /// Records of this action.
    pub action: Option<AuditActionKind>,
    /// Records with this outcome.
    pub outcome: Option<AuditOutcome>,
    /// At or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Before this time.
    pub to: Option<DateTime<Utc>>,
}

impl AuditEventFilter {
    fn into_domain(self) -> Result<AuditFilter, AppError> {
        Ok(AuditFilter {
            patient_id: self
                .patient_id
                .map(|p| PatientId::parse(&p, "filter.patientId"))
                .transpose()?,
            actor_id: self.actor_id.map(|a| a.0),
            entity: self.entity_type.map(Into::into),
            action: self.action.map(Into::into),
            outcome: self.outcome.map(Into::into),
            from: self.from,
            to: self.to,
        })
    }
}

/// Who acted: a user (resolved now), or the system, the scheduler, a webhook, an anonymous
/// caller.
pub struct AuditActor {
    kind: ActorKind,
    id: Option<String>,
    user: Option<UserId>,
}

#[Object]
impl AuditActor {
    /// The kind of actor.
    async fn kind(&self) -> AuditActorKind {
        self.kind.into()
    }
    /// The user's id, or the webhook's provider; null for the system, the scheduler and
    /// anonymous callers.
    async fn id(&self) -> Option<ID> {
        self.id.clone().map(ID)
    }
    /// The user as they are now (null for other actors, or a user that no longer exists).
    async fn user(&self, ctx: &Context<'_>) -> GqlResult<Option<User>> {
        match self.user {
            Some(id) => Ok(loader(ctx).load_one(id).await?.map(User)),
            None => Ok(None),
        }
    }
}

/// One audit record: who did what to which entity, when, from where. Ids and codes only.
pub struct AuditEvent(pub domain::audit::AuditEvent);

#[Object]
impl AuditEvent {
    /// The record's id.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// When it happened.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// Who did it.
    async fn actor(&self) -> AuditActor {
        AuditActor {
            kind: self.0.actor_kind,
            id: self.0.actor_id.clone(),
            user: self.0.actor_user(),
        }
    }
    /// The organisation it happened in.
    async fn organization_id(&self) -> Option<ID> {
        self.0.org_id.map(|o| ID(o.to_string()))
    }
    /// What was done.
    async fn action(&self) -> AuditActionKind {
        self.0.action.into()
    }
    /// To which kind of entity.
    async fn entity_type(&self) -> AuditEntityType {
        self.0.entity.into()
    }
    /// The entity's id.
    async fn entity_id(&self) -> Option<ID> {
        self.0.entity_id.clone().map(ID)
    }
    /// The patient the entity belongs to.
    async fn patient_id(&self) -> Option<ID> {
        self.0.patient_id.clone().map(ID)
    }
    /// Allowed or denied.
    async fn outcome(&self) -> AuditOutcome {
        self.0.outcome.into()
    }
    /// The request's id.
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
    /// The client's network address.
    async fn client_address(&self) -> Option<&str> {
        self.0.client_address.as_deref()
    }
    /// The GraphQL operation's name.
    async fn operation_name(&self) -> Option<&str> {
        self.0.operation_name.as_deref()
    }
}

/// A download link for an audit export.
#[derive(SimpleObject)]
pub struct AuditExport {
    /// Where to download it (a path on this server, or a full URL with
    /// `CAREGRAPH_PUBLIC_URL`); it works once, without credentials, until `expiresAt`.
    pub url: String,
    /// When the link stops working (five minutes after it was made).
    pub expires_at: DateTime<Utc>,
}

/// The organisation a patient's record was read in.
pub struct AccessLogOrganization(OrgId);

#[Object]
impl AccessLogOrganization {
    /// The organisation's id.
    async fn id(&self) -> ID {
        ID(self.0.to_string())
    }
    /// Its name as it is now.
    async fn name(&self, ctx: &Context<'_>) -> GqlResult<String> {
        loader(ctx)
            .load_one(self.0)
            .await?
            .map(|o| o.name)
            .ok_or_else(|| AppError::NotFound("organization").into())
    }
}

/// The staff member who read a patient's record.
pub struct AccessLogReader(UserId);

#[Object]
impl AccessLogReader {
    /// The user's id.
    async fn id(&self) -> ID {
        ID(self.0.to_string())
    }
    /// Their name as it is now.
    async fn display_name(&self, ctx: &Context<'_>) -> GqlResult<String> {
        loader(ctx)
            .load_one(self.0)
            .await?
            .map(|u| u.display_name)
            .ok_or_else(|| AppError::NotFound("user").into())
    }
}

/// One read of a patient's record by staff of an organisation.
pub struct AccessLogItem(AccessLogEntry);

#[Object(name = "AccessLogEntry")]
impl AccessLogItem {
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The organisation the reader read it in.
    async fn organization(&self) -> AccessLogOrganization {
        AccessLogOrganization(self.0.org_id)
    }
    /// Who read it.
    async fn reader(&self) -> AccessLogReader {
        AccessLogReader(self.0.reader)
    }
    /// What they did.
    async fn action(&self) -> AuditActionKind {
        self.0.action.into()
    }
}

/// Names the access log's connection `AccessLogConnection`.
pub struct AccessLogConnectionName;

impl ConnectionNameType for AccessLogConnectionName {
    fn type_name<T: OutputType>() -> String {
        "AccessLogConnection".into()
    }
}

/// Names the access log's edges `AccessLogEdge`.
pub struct AccessLogEdgeName;

impl EdgeNameType for AccessLogEdgeName {
    fn type_name<T: OutputType>() -> String {
        "AccessLogEdge".into()
    }
}

/// A page of a patient's access log.
pub type AccessLogConnection = Connection<
    pagination::PageCursor,
    AccessLogItem,
    pagination::ConnectionTotal,
    EmptyFields,
    AccessLogConnectionName,
    AccessLogEdgeName,
>;

/// Audit trail queries.
#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The organisation's audit trail, newest first (an OWNER, or a member an OWNER made an
    /// auditor; other members get FORBIDDEN, non-members NOT_FOUND). Reading it is recorded.
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        filter: Option<AuditEventFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Conn<AuditEvent>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let filter = filter.unwrap_or_default().into_domain()?;
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .audit_trail
            .events(viewer(ctx), org, filter, &request)
            .await?;
        Ok(pagination::connection(page, has_previous, AuditEvent))
    }

    /// Who read a patient's record: reads by staff of an organisation, newest first, with names
    /// as they are now (a guardian of the patient, or staff of its organisation; anyone else
    /// gets NOT_FOUND).
    async fn access_log(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<AccessLogConnection> {
        let patient = PatientId::parse(&patient_id, "patientId")?;
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .audit_trail
            .access_log(viewer(ctx), patient, &request)
            .await?;
        Ok(pagination::connection_named(
            page,
            has_previous,
            AccessLogItem,
        ))
    }
}

/// Audit trail mutations.
#[derive(Default)]
pub struct AuditMutation;

#[Object]
impl AuditMutation {
    /// A five-minute, single-use download link for the organisation's audit trail matching
    /// `filter`, newest first (OWNER or auditor). The download streams; it is recorded as an
    /// EXPORT when it starts.
    async fn export_audit_events(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        filter: Option<AuditEventFilter>,
        format: AuditExportFormat,
    ) -> GqlResult<AuditExport> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let filter = filter.unwrap_or_default().into_domain()?;
        let link = services(ctx)
            .audit_trail
            .export(viewer(ctx), org, filter, format.into())
            .await?;
        Ok(AuditExport {
            url: link.url,
            expires_at: link.expires_at,
        })
    }
}
