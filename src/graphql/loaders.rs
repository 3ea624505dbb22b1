//! Per-request dataloaders: every per-row lookup in a list goes through here, so the number of
//! SQL statements for a page does not grow with the page size.

use std::sync::{Arc, Mutex};

use tracing::Instrument;

use super::batch::{Batches, DataLoader, Loader, Map, lock};
use crate::{
    audit::{AuditEntity, AuditEntry},
    domain::{
        AppointmentId, CareTeamId, CaseId, ChatSessionId, ComplianceGroupId, Membership, OrgId,
        Organization, PatientId, User, UserId,
        care::{
            CareTeam, CareTeamMember, CaseParticipant, ComplianceGroup, Consent, Guardian, Patient,
        },
        chat::ChatSession,
    },
    providers::chat::{ChannelRef, ChannelState},
    services::{Services, access::Readable},
};

/// The loader behind every per-request `DataLoader`; one `Loader` impl per key type.
pub struct AppLoader {
    services: Arc<Services>,
    /// The viewer's audit scope: the patient-linked rows loaded are recorded here (once per
    /// request in a query, whose loaders keep what they loaded).
    audit: crate::audit::AuditScope,
}

/// Builds the loaders for one request (what they keep must never outlive it: it is what this
/// viewer may see).
pub fn per_request(
    services: &Arc<Services>,
    audit: crate::audit::AuditScope,
    batches: &Batches,
) -> DataLoader<AppLoader> {
    DataLoader::new(
        AppLoader {
            services: services.clone(),
            audit,
        },
        batches,
    )
    .max_batch_size(500)
}

/// The span of one database batch: the lookup and how many keys (never their values).
macro_rules! batch_span {
    ($key:ty, $keys:expr) => {
        tracing::debug_span!(
            target: crate::telemetry::otel::TARGET,
            "db.batch",
            otel.name = concat!("load ", stringify!($key)),
            otel.kind = "client",
            db.operation.name = stringify!($key),
            db.operation.batch.size = $keys.len(),
        )
    };
}

/// Keys of "rows belonging to a parent" lookups.
macro_rules! of_key {
    ($($(#[$doc:meta])* $name:ident($inner:ty);)+) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub struct $name(pub $inner);
        )+
    };
}

/// Keys of a patient's own rows: the patient and its organisation (which the audit record of
/// each row names).
macro_rules! patient_key {
    ($($(#[$doc:meta])* $name:ident;)+) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub struct $name(pub PatientId, pub OrgId);
        )+
    };
}

patient_key! {
    /// The guardians of a patient.
    GuardiansOf;
    /// The consents of a patient.
    ConsentsOf;
    /// The care teams of a patient.
    CareTeamsOf;
}

/// Keys of rows under a patient-linked parent: the parent, its patient (when it has one) and its
/// organisation (which the audit record of each row names).
macro_rules! owned_key {
    ($($(#[$doc:meta])* $name:ident($parent:ty);)+) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub struct $name(pub $parent, pub Option<PatientId>, pub OrgId);
        )+
    };
}

owned_key! {
    /// The members of a care team, as handed out (one READ each).
    MembersOf(CareTeamId);
    /// The participants of a case, as handed out (one READ each).
    ParticipantsOf(CaseId);
    /// The support staff of an appointment, as handed out (one READ each).
    StaffOf(AppointmentId);
}

of_key! {
    /// The support staff of an appointment, as user ids, for a check (not recorded: nothing is
    /// handed out).
    SupportStaffOf(AppointmentId);
    /// The participants of a case, for a check (not recorded: nothing is handed out).
    CaseParticipantsOf(CaseId);
    /// The memberships of a user.
    MembershipsOf(UserId);
    /// The guardian links of a user (the patients they are guardian of).
    GuardianshipsOf(UserId);
    /// The chat session of an appointment.
    ChatOfAppointment(AppointmentId);
}

/// Implements `Loader<K>` by calling one batch lookup.
macro_rules! loader {
    ($key:ty => $value:ty, |$services:ident, $keys:ident| $body:expr) => {
        impl Loader<$key> for AppLoader {
            type Value = $value;
            type Error = async_graphql::Error;

            async fn load(&self, $keys: &[$key]) -> Result<Map<$key, $value>, Self::Error> {
                let span = batch_span!($key, $keys);
                async {
                    let $services = &self.services;
                    Ok($body)
                }
                .instrument(span)
                .await
            }
        }
    };
    (of $key:ident($inner:ty) => $value:ty, $method:ident) => {
        impl Loader<$key> for AppLoader {
            type Value = $value;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> Result<Map<$key, $value>, Self::Error> {
                let inner: Vec<$inner> = keys.iter().map(|k| k.0).collect();
                let found = self
                    .services
                    .lookups
                    .$method(&inner)
                    .instrument(batch_span!($key, keys))
                    .await?;
                Ok(found.into_iter().map(|(k, v)| ($key(k), v)).collect())
            }
        }
    };
}

/// Implements `Loader<K>` for a patient's rows, recording one READ of `$entity` per row.
macro_rules! patient_rows {
    ($key:ident => $value:ty, $method:ident, $entity:ident, |$row:ident| $id:expr) => {
        impl Loader<$key> for AppLoader {
            type Value = Vec<$value>;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> Result<Map<$key, Vec<$value>>, Self::Error> {
                let patients: Vec<PatientId> = keys.iter().map(|k| k.0).collect();
                let mut found = self
                    .services
                    .lookups
                    .$method(&patients)
                    .instrument(batch_span!($key, keys))
                    .await?;
                let mut out = Map::with_capacity_and_hasher(keys.len(), Default::default());
                for key in keys {
                    let rows = found.remove(&key.0).unwrap_or_default();
                    self.audit.record_all(rows.iter().map(|$row| {
                        AuditEntry::read(AuditEntity::$entity, $id)
                            .org(key.1)
                            .patient(key.0)
                    }));
                    out.insert(*key, rows);
                }
                Ok(out)
            }
        }
    };
}

loader!(UserId => User, |s, keys| s.lookups.users(keys).await?);
loader!(OrgId => Organization, |s, keys| s.lookups.organizations(keys).await?);
loader!(ComplianceGroupId => ComplianceGroup, |s, keys| s.lookups.compliance_groups(keys).await?);
patient_rows!(GuardiansOf => (Guardian, User), guardians, Guardian, |g| g.0.user_id);
patient_rows!(ConsentsOf => Consent, consents, Consent, |c| c.id);
patient_rows!(CareTeamsOf => CareTeam, care_teams, CareTeam, |t| t.id);

impl Loader<PatientId> for AppLoader {
    type Value = Patient;
    type Error = async_graphql::Error;

    /// Patients reached through a parent (an appointment's, a case's): one READ each.
    async fn load(&self, keys: &[PatientId]) -> Result<Map<PatientId, Patient>, Self::Error> {
        let found = self
            .services
            .lookups
            .patients(keys)
            .instrument(batch_span!(PatientId, keys))
            .await?;
        self.audit.record_all(found.values().map(|p| {
            AuditEntry::read(AuditEntity::Patient, p.id)
                .org(p.org_id)
                .patient(p.id)
        }));
        Ok(found)
    }
}

impl Loader<AppointmentId> for AppLoader {
    type Value = crate::domain::care::Appointment;
    type Error = async_graphql::Error;

    /// Appointments reached through a parent (a chat's): one READ each.
    async fn load(
        &self,
        keys: &[AppointmentId],
    ) -> Result<Map<AppointmentId, Self::Value>, Self::Error> {
        let found = self
            .services
            .lookups
            .appointments(keys)
            .instrument(batch_span!(AppointmentId, keys))
            .await?;
        self.audit.record_all(found.values().map(|a| {
            crate::services::appointments::appointment_entry(crate::audit::AuditAction::Read, a)
        }));
        Ok(found)
    }
}
/// Implements `Loader<K>` for the rows under a patient-linked parent, recording one READ of
/// `$entity` per row.
macro_rules! owned_rows {
    ($key:ident($parent:ty) => $value:ty, $method:ident, $entity:ident, |$row:ident| $id:expr) => {
        impl Loader<$key> for AppLoader {
            type Value = Vec<$value>;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> Result<Map<$key, Vec<$value>>, Self::Error> {
                let parents: Vec<$parent> = keys.iter().map(|k| k.0).collect();
                let mut found = self
                    .services
                    .lookups
                    .$method(&parents)
                    .instrument(batch_span!($key, keys))
                    .await?;
                let mut out = Map::with_capacity_and_hasher(keys.len(), Default::default());
                for key in keys {
                    let rows = found.remove(&key.0).unwrap_or_default();
                    self.audit.record_all(rows.iter().map(|$row| {
                        let entry = AuditEntry::read(AuditEntity::$entity, $id).org(key.2);
                        match key.1 {
                            Some(patient) => entry.patient(patient),
                            None => entry,
                        }
                    }));
                    out.insert(*key, rows);
                }
                Ok(out)
            }
        }
    };
}

owned_rows!(MembersOf(CareTeamId) => CareTeamMember, care_team_members, CareTeamMember, |m| m.id);
owned_rows!(ParticipantsOf(CaseId) => CaseParticipant, case_participants, CaseParticipant, |p| p.user_id);
owned_rows!(StaffOf(AppointmentId) => User, support_staff, SupportStaff, |u| u.id);
loader!(of SupportStaffOf(AppointmentId) => Vec<UserId>, support_staff_ids);
loader!(of CaseParticipantsOf(CaseId) => Vec<CaseParticipant>, case_participants);
loader!(of MembershipsOf(UserId) => Vec<Membership>, memberships);
loader!(of GuardianshipsOf(UserId) => Vec<Guardian>, guardianships);

impl Loader<ChatOfAppointment> for AppLoader {
    type Value = ChatSession;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ChatOfAppointment],
    ) -> Result<Map<ChatOfAppointment, Self::Value>, Self::Error> {
        let ids: Vec<_> = keys.iter().map(|k| k.0).collect();
        let sessions = self.services.chats.of_appointments(&ids).await?;
        Ok(sessions
            .into_iter()
            .filter_map(|s| s.appointment_id.map(|a| (ChatOfAppointment(a), s)))
            .collect())
    }
}

impl Loader<CaseId> for AppLoader {
    type Value = crate::domain::care::Case;
    type Error = async_graphql::Error;

    /// Cases reached through a parent (a chat's); the field that shows one checks the read rule
    /// and records the READ.
    async fn load(&self, keys: &[CaseId]) -> Result<Map<CaseId, Self::Value>, Self::Error> {
        let found = self
            .services
            .lookups
            .cases(keys)
            .instrument(batch_span!(CaseId, keys))
            .await?;
        Ok(found)
    }
}

impl Loader<CareTeamId> for AppLoader {
    type Value = CareTeam;
    type Error = async_graphql::Error;

    /// Care teams reached through a parent (a chat's): one READ each.
    async fn load(&self, keys: &[CareTeamId]) -> Result<Map<CareTeamId, CareTeam>, Self::Error> {
        let found = self
            .services
            .lookups
            .care_teams_by_id(keys)
            .instrument(batch_span!(CareTeamId, keys))
            .await?;
        self.audit.record_all(found.values().map(|t| {
            AuditEntry::read(AuditEntity::CareTeam, t.id)
                .org(t.org_id)
                .patient(t.patient_id)
        }));
        Ok(found)
    }
}

/// The natural key of a chat session (which case or care team a room belongs to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomKeyOf(pub ChatSessionId);

impl Loader<RoomKeyOf> for AppLoader {
    type Value = crate::domain::chat::SessionKey;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[RoomKeyOf]) -> Result<Map<RoomKeyOf, Self::Value>, Self::Error> {
        let ids: Vec<ChatSessionId> = keys.iter().map(|k| k.0).collect();
        let found = self
            .services
            .chats
            .keys_of(&ids)
            .instrument(batch_span!(RoomKeyOf, keys))
            .await?;
        Ok(found
            .into_iter()
            .map(|(id, key)| (RoomKeyOf(id), key))
            .collect())
    }
}

/// The members of a chat session (by session id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChatMembersOf(pub ChatSessionId);

impl Loader<ChatMembersOf> for AppLoader {
    type Value = Vec<(UserId, crate::domain::chat::ChatRole)>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ChatMembersOf],
    ) -> Result<Map<ChatMembersOf, Self::Value>, Self::Error> {
        let ids: Vec<ChatSessionId> = keys.iter().map(|k| k.0).collect();
        let rows = self.services.chats.members_of(&ids).await?;
        let mut map: Map<ChatMembersOf, Self::Value> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for (session, user, role) in rows {
            map.entry(ChatMembersOf(session))
                .or_default()
                .push((user, role));
        }
        Ok(map)
    }
}

/// The external (SMS) members of a chat session (by session id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExternalMembersOf(pub ChatSessionId);

impl Loader<ExternalMembersOf> for AppLoader {
    type Value = Vec<crate::domain::sms::ExternalChatMember>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ExternalMembersOf],
    ) -> Result<Map<ExternalMembersOf, Self::Value>, Self::Error> {
        let ids: Vec<ChatSessionId> = keys.iter().map(|k| k.0).collect();
        let rows = self.services.chats.external_members_of(&ids).await?;
        let mut map: Map<ExternalMembersOf, Self::Value> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for member in rows {
            map.entry(ExternalMembersOf(member.session_id))
                .or_default()
                .push(member);
        }
        Ok(map)
    }
}

/// Where a chat session's channel stands at the provider (by session id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProvisioningOf(pub ChatSessionId);

impl Loader<ProvisioningOf> for AppLoader {
    type Value = crate::domain::chat::Provisioning;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ProvisioningOf],
    ) -> Result<Map<ProvisioningOf, Self::Value>, Self::Error> {
        let ids: Vec<ChatSessionId> = keys.iter().map(|k| k.0).collect();
        let found = self.services.chats.provisioning(&ids).await?;
        Ok(found
            .into_iter()
            .map(|(id, p)| (ProvisioningOf(id), p))
            .collect())
    }
}

/// Adds the per-request loaders to a request, batching with `batches`: the database loader
/// always, the viewer's session access and provider reads for a signed-in viewer.
pub fn attach(
    request: async_graphql::Request,
    services: &Arc<Services>,
    viewer: &crate::auth::Viewer,
    batches: &Batches,
) -> async_graphql::Request {
    let request = request.data(per_request(services, viewer.audit.clone(), batches));
    match viewer.user_opt() {
        Some(user) => request
            .data(DataLoader::new(
                SessionAccess {
                    services: services.clone(),
                    viewer: viewer.clone(),
                    at_hand: Mutex::default(),
                },
                batches,
            ))
            .data(channel_reads(services, &user.id, batches)),
        None => request,
    }
}

/// The chat sessions the viewer may read, by id, batched (the rule is the service's).
pub struct SessionAccess {
    services: Arc<Services>,
    viewer: crate::auth::Viewer,
    /// Sessions this request has read already (through their appointment, case or care team),
    /// which the rule then need not read again; taken by the batch that checks them.
    at_hand: Mutex<Map<ChatSessionId, ChatSession>>,
}

impl SessionAccess {
    /// Hands over a session the request has just read, before asking for it by id.
    pub fn at_hand(&self, session: ChatSession) {
        lock(&self.at_hand).insert(session.id, session);
    }
}

impl Loader<ChatSessionId> for SessionAccess {
    type Value = Readable<ChatSession>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ChatSessionId],
    ) -> Result<Map<ChatSessionId, Self::Value>, Self::Error> {
        let (read, missing): (Vec<ChatSession>, Vec<ChatSessionId>) = {
            let mut at_hand = lock(&self.at_hand);
            let mut read = Vec::new();
            let mut missing = Vec::new();
            for id in keys {
                match at_hand.remove(id) {
                    Some(session) => read.push(session),
                    None => missing.push(*id),
                }
            }
            (read, missing)
        };
        let sessions = self
            .services
            .chats
            .readable_among(&self.viewer, read, &missing)
            .await?;
        Ok(sessions.into_iter().map(|s| (s.id, s)).collect())
    }
}

/// Reads channel state at the chat provider for one user, batched to the provider's own limit:
/// a page of N chat sessions costs ceil(N / limit) provider calls (one for the local provider).
pub struct ChannelReads {
    services: Arc<Services>,
    reader: UserId,
}

/// Builds the per-request channel-state loader for `reader`.
pub fn channel_reads(
    services: &Arc<Services>,
    reader: &UserId,
    batches: &Batches,
) -> DataLoader<ChannelReads> {
    let limit = services.chats.read_batch_limit();
    DataLoader::new(
        ChannelReads {
            services: services.clone(),
            reader: *reader,
        },
        batches,
    )
    .max_batch_size(limit)
}

impl Loader<ChannelRef> for ChannelReads {
    type Value = ChannelState;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[ChannelRef]) -> Result<Map<ChannelRef, Self::Value>, Self::Error> {
        let states = self
            .services
            .chats
            .channel_states(keys, &self.reader)
            .await?;
        Ok(states.into_iter().map(|s| (s.channel.clone(), s)).collect())
    }
}
