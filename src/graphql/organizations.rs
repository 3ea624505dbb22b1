//! GraphQL for people and organisations: `viewer`, `organization`, the organisation mutations.

use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};

use super::{
    context::{loader, services, viewer},
    errors::GqlResult,
    pagination::{self, Conn},
    patients::Patient,
};
use crate::{
    domain::{self, Membership, OrgId, UserId},
    error::AppError,
    services::organizations::{MemberChange, NewMember},
};

/// A member's role in an organisation.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(name = "OrgRole")]
pub enum OrgRole {
    /// Owns the organisation.
    Owner,
    /// Manages members and settings.
    Admin,
    /// Vet, doctor or nurse practitioner.
    Practitioner,
    /// Technician, receptionist, peer-support specialist, …; `title` says which.
    Staff,
}

impl From<OrgRole> for domain::OrgRole {
    fn from(r: OrgRole) -> Self {
        match r {
            OrgRole::Owner => Self::Owner,
            OrgRole::Admin => Self::Admin,
            OrgRole::Practitioner => Self::Practitioner,
            OrgRole::Staff => Self::Staff,
        }
    }
}

impl From<domain::OrgRole> for OrgRole {
    fn from(r: domain::OrgRole) -> Self {
        match r {
            domain::OrgRole::Owner => Self::Owner,
            domain::OrgRole::Admin => Self::Admin,
            domain::OrgRole::Practitioner => Self::Practitioner,
            domain::OrgRole::Staff => Self::Staff,
        }
    }
}

/// One person.
pub struct User(pub domain::User);

#[Object]
impl User {
    /// The user's id; also their user id at the chat provider.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Email address (lowercase).
    async fn email(&self) -> &str {
        &self.0.email
    }
    /// Given name.
    async fn given_name(&self) -> &str {
        &self.0.given_name
    }
    /// Family name.
    async fn family_name(&self) -> &str {
        &self.0.family_name
    }
    /// Name shown to others.
    async fn display_name(&self) -> &str {
        &self.0.display_name
    }
    /// Avatar image URL.
    async fn avatar_url(&self) -> Option<&str> {
        self.0.avatar_url.as_deref()
    }
}

/// A clinic, practice or case team.
pub struct Organization(pub domain::Organization);

#[Object]
impl Organization {
    /// The organisation's id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Unique slug.
    async fn slug(&self) -> &str {
        &self.0.slug
    }
    /// Whether members may open network chats with other organisations.
    async fn cross_org_messaging(&self) -> bool {
        self.0.cross_org_messaging
    }
    /// Minutes before an appointment that its chat opens (null: the deployment's default).
    async fn chat_activation_minutes(&self) -> Option<i32> {
        self.0.chat_activation_minutes
    }
    /// When the organisation was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// A user's membership of an organisation.
pub struct Colleague(pub Membership);

#[Object]
impl Colleague {
    /// The member.
    async fn user(&self, ctx: &Context<'_>) -> GqlResult<User> {
        loader(ctx)
            .load_one(self.0.user_id)
            .await?
            .map(User)
            .ok_or_else(|| AppError::NotFound("user").into())
    }
    /// Their role.
    async fn role(&self) -> OrgRole {
        self.0.role.into()
    }
    /// Job title, e.g. "Veterinary technician".
    async fn title(&self) -> Option<&str> {
        self.0.title.as_deref()
    }
    /// Inactive members keep their history but take part in nothing new.
    async fn active(&self) -> bool {
        self.0.active
    }
    /// Whether the member may read and export the organisation's audit trail now: an active
    /// OWNER, or an active member an OWNER made an auditor.
    async fn auditor(&self) -> bool {
        crate::services::access::is_auditor(&self.0)
    }
    /// The organisation.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Organization> {
        loader(ctx)
            .load_one(self.0.org_id)
            .await?
            .map(Organization)
            .ok_or_else(|| AppError::NotFound("organization").into())
    }
}

/// The caller.
pub struct Viewer;

#[Object]
impl Viewer {
    /// The signed-in user.
    async fn user(&self, ctx: &Context<'_>) -> GqlResult<User> {
        Ok(User(viewer(ctx).user()?.clone()))
    }
    /// The caller's memberships, active and inactive.
    async fn memberships(&self, ctx: &Context<'_>) -> GqlResult<Vec<Colleague>> {
        let list = services(ctx)
            .organizations
            .viewer_memberships(viewer(ctx))
            .await?;
        Ok(list.into_iter().map(Colleague).collect())
    }
    /// The patients the caller is a guardian of (for the mobile app).
    async fn patients(&self, ctx: &Context<'_>) -> GqlResult<Vec<Patient>> {
        let list = services(ctx).patients.of_viewer(viewer(ctx)).await?;
        Ok(list.into_iter().map(Patient).collect())
    }
}

/// Organisation queries.
#[derive(Default)]
pub struct OrganizationQuery;

#[Object]
impl OrganizationQuery {
    /// The caller (UNAUTHENTICATED without a valid token).
    async fn viewer(&self, ctx: &Context<'_>) -> GqlResult<Viewer> {
        viewer(ctx).user()?;
        Ok(Viewer)
    }

    /// An organisation the caller is an active member of.
    async fn organization(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Organization> {
        let id = OrgId::parse(&id, "id")?;
        let org = services(ctx)
            .organizations
            .organization(viewer(ctx), id)
            .await?;
        Ok(Organization(org))
    }

    /// The organisation's members by name (members only); inactive ones on request.
    async fn colleagues(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        first: Option<i32>,
        after: Option<String>,
        #[graphql(default_with = "Some(false)")] include_inactive: Option<bool>,
    ) -> GqlResult<Conn<Colleague>> {
        let include_inactive = include_inactive.unwrap_or(false);
        let org = OrgId::parse(&org_id, "orgId")?;
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .organizations
            .colleagues(viewer(ctx), org, include_inactive, &request)
            .await?;
        Ok(pagination::connection(page, has_previous, Colleague))
    }

    /// Typeahead over active colleagues (at least 2 characters; limit 1 to 50, default 10):
    /// full names starting with the text first, then family names starting with it, then names
    /// or email containing it. The caller is left out; the query is matched as plain text.
    async fn search_colleagues(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        query: String,
        #[graphql(default_with = "Some(10)")] limit: Option<i32>,
    ) -> GqlResult<Vec<Colleague>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let found = services(ctx)
            .organizations
            .search_colleagues(viewer(ctx), org, &query, limit)
            .await?;
        Ok(found.into_iter().map(Colleague).collect())
    }
}

/// Input of `createOrganization`.
#[derive(InputObject)]
pub struct CreateOrganizationInput {
    /// Display name.
    pub name: String,
    /// Unique slug: 2 to 64 characters of a-z, 0-9 and '-'.
    pub slug: String,
}

/// Input of `addOrganizationMember`.
#[derive(InputObject)]
pub struct AddOrganizationMemberInput {
    /// Email; a new email creates the user.
    pub email: String,
    /// Given name.
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Role in the organisation.
    pub role: OrgRole,
    /// Job title.
    pub title: Option<String>,
    /// Initial password of a new built-in account (at least 10 characters).
    #[graphql(secret)]
    pub password: Option<String>,
}

/// Input of `updateOrganizationMember`; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateOrganizationMemberInput {
    /// New role.
    pub role: Option<OrgRole>,
    /// New title; `null` clears it.
    pub title: MaybeUndefined<String>,
    /// Activate or deactivate the membership.
    pub active: Option<bool>,
    /// Grant or withdraw reading and exporting the organisation's audit trail (OWNER only).
    pub auditor: Option<bool>,
}

/// Input of `updateOrganization`; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateOrganizationInput {
    /// New display name.
    pub name: Option<String>,
    /// Allow network chats with other organisations.
    pub cross_org_messaging: Option<bool>,
    /// Minutes before an appointment that its chat opens (0 to 1440), unless the appointment
    /// says otherwise.
    pub chat_activation_minutes: Option<i32>,
}

/// Organisation mutations.
#[derive(Default)]
pub struct OrganizationMutation;

#[Object]
impl OrganizationMutation {
    /// Creates an organisation; the caller becomes its OWNER.
    async fn create_organization(
        &self,
        ctx: &Context<'_>,
        input: CreateOrganizationInput,
    ) -> GqlResult<Organization> {
        let org = services(ctx)
            .organizations
            .create_organization(viewer(ctx), &input.name, &input.slug)
            .await?;
        Ok(Organization(org))
    }

    /// Adds a member (OWNER/ADMIN), creating the user when the email is new.
    async fn add_organization_member(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: AddOrganizationMemberInput,
    ) -> GqlResult<Colleague> {
        let org_id = OrgId::parse(&org_id, "orgId")?;
        let membership = services(ctx)
            .organizations
            .add_member(
                viewer(ctx),
                org_id,
                NewMember {
                    email: input.email,
                    given_name: input.given_name,
                    family_name: input.family_name,
                    role: input.role.into(),
                    title: input.title,
                    password: input.password,
                },
            )
            .await?;
        Ok(Colleague(membership))
    }

    /// Changes a member's role, title or active flag (OWNER/ADMIN), or their auditor flag
    /// (OWNER only).
    async fn update_organization_member(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        user_id: ID,
        input: UpdateOrganizationMemberInput,
    ) -> GqlResult<Colleague> {
        let org_id = OrgId::parse(&org_id, "orgId")?;
        let user_id = UserId::parse(&user_id, "userId")?;
        let change = MemberChange {
            role: input.role.map(Into::into),
            title: match input.title {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(t) => Some(Some(t)),
            },
            active: input.active,
            auditor: input.auditor,
        };
        let membership = services(ctx)
            .organizations
            .update_member(viewer(ctx), org_id, user_id, change)
            .await?;
        Ok(Colleague(membership))
    }

    /// Changes an organisation's name or network-messaging switch (OWNER/ADMIN).
    async fn update_organization(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: UpdateOrganizationInput,
    ) -> GqlResult<Organization> {
        let org_id = OrgId::parse(&org_id, "orgId")?;
        let org = services(ctx)
            .organizations
            .update_organization(
                viewer(ctx),
                org_id,
                input.name.as_deref(),
                input.cross_org_messaging,
                input.chat_activation_minutes,
            )
            .await?;
        Ok(Organization(org))
    }
}
