//! GraphQL for invitations: `inviteOrganizationMember`, `inviteGuardian`, `invitations`,
//! `revokeInvitation`, and the anonymous `acceptInvitation`.

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::{
    accounts::AuthPayload,
    context::{loader, services, viewer},
    enums::GuardianRelationship,
    errors::GqlResult,
    organizations::{OrgRole, User},
    pagination::{self, Conn},
};
use crate::{
    domain::{
        self, InvitationId, OrgId, PatientId,
        invitation::{InvitationKind as Kind, InvitationStatus as Status},
    },
    services::invitations::{GuardianInvite, InvitationView, MemberInvite},
};

/// Where an invitation stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum InvitationStatus {
    /// Waiting to be accepted.
    Pending,
    /// Accepted (a token works once).
    Accepted,
    /// Withdrawn by staff.
    Revoked,
    /// Not accepted in time.
    Expired,
}

impl From<Status> for InvitationStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => Self::Pending,
            Status::Accepted => Self::Accepted,
            Status::Revoked => Self::Revoked,
            Status::Expired => Self::Expired,
        }
    }
}

/// What accepting an invitation makes of the invitee.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum InvitationKind {
    /// A member of the organisation.
    Member,
    /// A guardian of one of its patients.
    Guardian,
}

/// An invitation of a staff member or a guardian.
pub struct Invitation(pub InvitationView);

#[Object]
impl Invitation {
    /// The invitation's id (for `revokeInvitation`).
    async fn id(&self) -> ID {
        ID(self.0.invitation.id.to_string())
    }
    /// The invitee's email (lowercase).
    async fn email(&self) -> &str {
        &self.0.invitation.email
    }
    /// When the invitation stops working (`CAREGRAPH_INVITATION_TTL_HOURS` after it was made).
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.invitation.expires_at
    }
    /// The URL that accepts the invitation: `CAREGRAPH_PUBLIC_URL` + `/accept-invitation#token=…`.
    /// Only in the answer of the mutation that made it (the token is stored hashed, so it
    /// cannot be shown again); give it to the invitee if no mail server is configured.
    async fn accept_url(&self) -> Option<&str> {
        self.0.accept_url.as_deref()
    }
    /// Where it stands now.
    async fn status(&self) -> InvitationStatus {
        self.0.status.into()
    }
    /// Member or guardian.
    async fn kind(&self) -> InvitationKind {
        match self.0.invitation.kind {
            Kind::Member { .. } => InvitationKind::Member,
            Kind::Guardian { .. } => InvitationKind::Guardian,
        }
    }
    /// The invitee's given name.
    async fn given_name(&self) -> &str {
        &self.0.invitation.given_name
    }
    /// The invitee's family name.
    async fn family_name(&self) -> &str {
        &self.0.invitation.family_name
    }
    /// The inviting organisation's id.
    async fn organization_id(&self) -> ID {
        ID(self.0.invitation.org_id.to_string())
    }
    /// The role granted (member invitations).
    async fn role(&self) -> Option<OrgRole> {
        match &self.0.invitation.kind {
            Kind::Member { role, .. } => Some((*role).into()),
            Kind::Guardian { .. } => None,
        }
    }
    /// The job title granted (member invitations).
    async fn title(&self) -> Option<&str> {
        match &self.0.invitation.kind {
            Kind::Member { title, .. } => title.as_deref(),
            Kind::Guardian { .. } => None,
        }
    }
    /// The patient's id (guardian invitations).
    async fn patient_id(&self) -> Option<ID> {
        self.0
            .invitation
            .kind
            .patient_id()
            .map(|p| ID(p.to_string()))
    }
    /// How the guardian relates to the patient (guardian invitations).
    async fn relationship(&self) -> Option<GuardianRelationship> {
        match &self.0.invitation.kind {
            Kind::Guardian { relationship, .. } => Some((*relationship).into()),
            Kind::Member { .. } => None,
        }
    }
    /// Whether the co-guardian takes part in client chats (guardian invitations).
    async fn can_chat(&self) -> Option<bool> {
        match &self.0.invitation.kind {
            Kind::Guardian { can_chat, .. } => Some(*can_chat),
            Kind::Member { .. } => None,
        }
    }
    /// Who invited.
    async fn invited_by(&self, ctx: &Context<'_>) -> GqlResult<Option<User>> {
        match self.0.invitation.invited_by {
            Some(id) => Ok(loader(ctx).load_one(id).await?.map(User)),
            None => Ok(None),
        }
    }
    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.invitation.created_at
    }
    /// When it was accepted.
    async fn accepted_at(&self) -> Option<DateTime<Utc>> {
        self.0.invitation.accepted_at
    }
    /// When it was revoked.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.invitation.revoked_at
    }
}

/// Input of `inviteOrganizationMember`.
#[derive(InputObject)]
pub struct InviteOrganizationMemberInput {
    /// The invitee's email.
    pub email: String,
    /// Given name (of a new account).
    pub given_name: String,
    /// Family name (of a new account).
    pub family_name: String,
    /// The role granted on acceptance (at most the inviter's own).
    pub role: OrgRole,
    /// Job title.
    pub title: Option<String>,
}

/// Input of `inviteGuardian`.
#[derive(InputObject)]
pub struct InviteGuardianInput {
    /// The invitee's email.
    pub email: String,
    /// Given name (of a new account).
    pub given_name: String,
    /// Family name (of a new account).
    pub family_name: String,
    /// Whether the co-guardian takes part in client chats (default false).
    #[graphql(default)]
    pub can_chat: bool,
    /// How they relate to the patient (default CO_GUARDIAN).
    pub relationship: Option<GuardianRelationship>,
}

/// Invitation queries.
#[derive(Default)]
pub struct InvitationQuery;

#[Object]
impl InvitationQuery {
    /// The organisation's invitations, newest first (active members; staff other than
    /// OWNER/ADMIN see guardian invitations only); only pending ones unless `pendingOnly` is
    /// false.
    async fn invitations(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(default_with = "Some(true)")] pending_only: Option<bool>,
    ) -> GqlResult<Conn<Invitation>> {
        let pending_only = pending_only.unwrap_or(true);
        let org = OrgId::parse(&org_id, "orgId")?;
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .invitations
            .list(viewer(ctx), org, pending_only, &request)
            .await?;
        Ok(pagination::connection(page, has_previous, Invitation))
    }
}

/// Invitation mutations.
#[derive(Default)]
pub struct InvitationMutation;

#[Object]
impl InvitationMutation {
    /// Invites a staff member (OWNER/ADMIN; a role at most the inviter's own). The answer's
    /// `acceptUrl` is shown once; a mail carries it too when a mail server is configured.
    async fn invite_organization_member(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: InviteOrganizationMemberInput,
    ) -> GqlResult<Invitation> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let view = services(ctx)
            .invitations
            .invite_member(
                viewer(ctx),
                org,
                MemberInvite {
                    email: input.email,
                    given_name: input.given_name,
                    family_name: input.family_name,
                    role: input.role.into(),
                    title: input.title,
                },
            )
            .await?;
        Ok(Invitation(view))
    }

    /// Invites a guardian of a patient (staff of the patient's organisation). The answer's
    /// `acceptUrl` is shown once; a mail carries it too when a mail server is configured.
    async fn invite_guardian(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        input: InviteGuardianInput,
    ) -> GqlResult<Invitation> {
        let patient = PatientId::parse(&patient_id, "patientId")?;
        let view = services(ctx)
            .invitations
            .invite_guardian(
                viewer(ctx),
                patient,
                GuardianInvite {
                    email: input.email,
                    given_name: input.given_name,
                    family_name: input.family_name,
                    relationship: input
                        .relationship
                        .map_or(domain::care::GuardianRelationship::CoGuardian, Into::into),
                    can_chat: input.can_chat,
                },
            )
            .await?;
        Ok(Invitation(view))
    }

    /// Revokes a pending invitation (its link stops working; an unsent mail is not sent).
    async fn revoke_invitation(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Invitation> {
        let id = InvitationId::parse(&id, "id")?;
        let view = services(ctx).invitations.revoke(viewer(ctx), id).await?;
        Ok(Invitation(view))
    }

    /// Accepts an invitation (no sign-in needed): creates the account with this password, or,
    /// when the email has an account, takes that account's password; then signs in. Works
    /// once (`INVITATION_USED` after), until it expires (`INVITATION_EXPIRED`). Rate limited
    /// per client address and per invitation.
    async fn accept_invitation(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] token: String,
        #[graphql(secret)] password: String,
    ) -> GqlResult<AuthPayload> {
        let v = viewer(ctx);
        let token = services(ctx)
            .invitations
            .accept(&token, password, v.client_ip, &v.audit)
            .await?;
        Ok(AuthPayload {
            access_token: token.token,
            expires_at: token.expires_at,
            user: User(token.user),
        })
    }
}
