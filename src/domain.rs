//! Domain types: identifiers, roles and values with their rules. Nothing here does I/O.

pub mod audit;
pub mod availability;
pub mod care;
pub mod chat;
pub mod ids;
pub mod invitation;
pub mod pagination;
pub mod people;
pub mod sms;

pub use ids::{
    AppointmentId, CareTeamId, CareTeamMemberId, CaseId, ChatSessionId, ComplianceGroupId,
    ConsentId, ExternalMemberId, IdMap, InvitationId, OrgId, PatientId, UserId,
};
pub use people::{Email, Membership, OrgRole, Organization, Slug, User};
