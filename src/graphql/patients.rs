//! GraphQL for patients, guardians, consent, compliance groups and care teams.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, NaiveDate, Utc};

use super::{
    args::{check_len, parse_ids},
    context::{loader, my_memberships, services, viewer},
    enums::{CareTeamRole, ConsentScope, GuardianRelationship, RiskLevel},
    errors::GqlResult,
    loaders::{CareTeamsOf, ConsentsOf, GuardiansOf, MembersOf},
    organizations::{Organization, User},
    pagination::{self, Conn},
    related::{org_of, patient_of, user_of},
};
use crate::{
    domain::{
        self, CareTeamId, CareTeamMemberId, ComplianceGroupId, ConsentId, OrgId, PatientId, UserId,
    },
    services::{
        care_teams::NewCareTeamMember,
        consent::{ConsentInput, invited_visible_to},
        patients::{GuardianInput as GuardianArgs, NewPatient, PatientChange},
    },
};

/// The subject of care: a person, or an animal (`species` set).
pub struct Patient(pub domain::care::Patient);

#[Object]
impl Patient {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The organisation caring for the patient.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Organization> {
        org_of(ctx, self.0.org_id).await
    }
    /// Name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Species, for animals (e.g. "Dog").
    async fn species(&self) -> Option<&str> {
        self.0.species.as_deref()
    }
    /// Risk level.
    async fn risk_level(&self) -> RiskLevel {
        self.0.risk_level.into()
    }
    /// Date of birth.
    async fn date_of_birth(&self) -> Option<NaiveDate> {
        self.0.date_of_birth
    }
    /// Guardians.
    async fn guardians(&self, ctx: &Context<'_>) -> GqlResult<Vec<Guardian>> {
        let list = loader(ctx)
            .load_one(GuardiansOf(self.0.id, self.0.org_id))
            .await?
            .unwrap_or_default();
        Ok(list.into_iter().map(|(g, u)| Guardian(g, u)).collect())
    }
    /// Care teams.
    async fn care_teams(&self, ctx: &Context<'_>) -> GqlResult<Vec<CareTeam>> {
        let list = loader(ctx)
            .load_one(CareTeamsOf(self.0.id, self.0.org_id))
            .await?
            .unwrap_or_default();
        Ok(list.into_iter().map(CareTeam).collect())
    }
    /// Consents, active or not.
    async fn consents(&self, ctx: &Context<'_>) -> GqlResult<Vec<Consent>> {
        let list = loader(ctx)
            .load_one(ConsentsOf(self.0.id, self.0.org_id))
            .await?
            .unwrap_or_default();
        Ok(list.into_iter().map(Consent).collect())
    }
}

/// A guardian of a patient, with their user.
pub struct Guardian(pub domain::care::Guardian, pub domain::User);

#[Object]
impl Guardian {
    /// The guardian.
    async fn user(&self) -> User {
        User(self.1.clone())
    }
    /// How they relate to the patient.
    async fn relationship(&self) -> GuardianRelationship {
        self.0.relationship.into()
    }
    /// Whether a co-guardian takes part in client chats.
    async fn can_chat(&self) -> bool {
        self.0.can_chat
    }
}

/// Consent to share a patient's care with another organisation or a compliance group.
pub struct Consent(pub domain::care::Consent);

#[Object]
impl Consent {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The patient.
    async fn patient(&self, ctx: &Context<'_>) -> GqlResult<Patient> {
        patient_of(ctx, self.0.patient_id).await
    }
    /// What it allows.
    async fn scope(&self) -> ConsentScope {
        self.0.scope.into()
    }
    /// The organisation it is granted to.
    async fn granted_to(&self, ctx: &Context<'_>) -> GqlResult<Option<Organization>> {
        match self.0.granted_to {
            Some(org) => org_of(ctx, org).await.map(Some),
            None => Ok(None),
        }
    }
    /// The compliance group it is granted to.
    async fn compliance_group(&self, ctx: &Context<'_>) -> GqlResult<Option<ComplianceGroup>> {
        match self.0.compliance_group {
            Some(g) => Ok(loader(ctx).load_one(g).await?.map(ComplianceGroup)),
            None => Ok(None),
        }
    }
    /// When it was granted.
    async fn granted_at(&self) -> DateTime<Utc> {
        self.0.granted_at
    }
    /// When it lapses.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    /// When it was revoked.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
    /// Whether it counts now (neither revoked nor expired).
    async fn active(&self, ctx: &Context<'_>) -> bool {
        self.0.is_active(services(ctx).clock.now())
    }
}

/// Organisations that may share a patient's care under one consent.
pub struct ComplianceGroup(pub domain::care::ComplianceGroup);

#[Object]
impl ComplianceGroup {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Its member organisations: the one that made it and those that accepted their invitation.
    async fn organizations(&self, ctx: &Context<'_>) -> GqlResult<Vec<Organization>> {
        let found = loader(ctx)
            .load_many(self.0.org_ids.iter().copied())
            .await?;
        Ok(self
            .0
            .org_ids
            .iter()
            .filter_map(|id| found.get(id).cloned().map(Organization))
            .collect())
    }
    /// Ids of the organisations invited that have not accepted yet, for OWNERs and ADMINs of
    /// member organisations (empty for anyone else).
    async fn invited_organization_ids(&self, ctx: &Context<'_>) -> GqlResult<Vec<ID>> {
        if viewer(ctx).user_opt().is_none() {
            return Ok(Vec::new());
        }
        let memberships = my_memberships(ctx).await?.unwrap_or_default();
        Ok(invited_visible_to(&self.0, &memberships)
            .iter()
            .map(|o| ID(o.to_string()))
            .collect())
    }
}

/// An organisation's pending invitation to a compliance group.
pub struct ComplianceGroupInvitation(pub domain::care::ComplianceGroupInvitation);

#[Object]
impl ComplianceGroupInvitation {
    /// The group (for `acceptComplianceGroupInvitation` and `declineComplianceGroupInvitation`).
    async fn group_id(&self) -> ID {
        ID(self.0.group_id.to_string())
    }
    /// The group's name.
    async fn group_name(&self) -> &str {
        &self.0.group_name
    }
    /// The invited organisation.
    async fn organization_id(&self) -> ID {
        ID(self.0.org_id.to_string())
    }
    /// The organisation that made the group and sent the invitation.
    async fn invited_by_organization_id(&self) -> ID {
        ID(self.0.invited_by.to_string())
    }
    /// That organisation's name.
    async fn invited_by_organization_name(&self) -> &str {
        &self.0.invited_by_name
    }
    /// When it was sent.
    async fn invited_at(&self) -> DateTime<Utc> {
        self.0.invited_at
    }
}

/// A care team around a patient.
pub struct CareTeam(pub domain::care::CareTeam);

#[Object]
impl CareTeam {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The patient.
    async fn patient(&self, ctx: &Context<'_>) -> GqlResult<Patient> {
        patient_of(ctx, self.0.patient_id).await
    }
    /// The patient's organisation.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Organization> {
        org_of(ctx, self.0.org_id).await
    }
    /// Name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The team's staff-only conversation about its patient, for its members and the
    /// organisation's OWNER/ADMIN.
    async fn chat(&self, ctx: &Context<'_>) -> GqlResult<Option<super::chat::ChatSession>> {
        let session = services(ctx).chats.care_team_chat(&self.0.id).await?;
        super::chat::ChatSession::visible(ctx, session).await
    }
    /// Members.
    async fn members(&self, ctx: &Context<'_>) -> GqlResult<Vec<CareTeamMember>> {
        let list = loader(ctx)
            .load_one(MembersOf(self.0.id, Some(self.0.patient_id), self.0.org_id))
            .await?
            .unwrap_or_default();
        Ok(list.into_iter().map(CareTeamMember).collect())
    }
}

/// A care team member: a user, or an outside clinician reached by phone.
pub struct CareTeamMember(pub domain::care::CareTeamMember);

#[Object]
impl CareTeamMember {
    /// Id (for `removeCareTeamMember`).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The member's account (null for a phone-only external member).
    async fn user(&self, ctx: &Context<'_>) -> GqlResult<Option<User>> {
        match self.0.user_id {
            Some(u) => user_of(ctx, u).await.map(Some),
            None => Ok(None),
        }
    }
    /// Role.
    async fn role(&self) -> CareTeamRole {
        self.0.role.into()
    }
    /// Whether the member is outside the patient's organisation.
    async fn external(&self) -> bool {
        self.0.is_external()
    }
    /// Phone number (E.164) of a phone-only member.
    async fn phone(&self) -> Option<&str> {
        self.0.phone.as_deref()
    }
    /// Name of a phone-only member.
    async fn display_name(&self) -> Option<&str> {
        self.0.display_name.as_deref()
    }
    /// The other organisation a member acts for.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Option<Organization>> {
        match self.0.member_org_id {
            Some(o) => org_of(ctx, o).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Patient queries.
#[derive(Default)]
pub struct PatientQuery;

#[Object]
impl PatientQuery {
    /// A patient: staff of its organisation and its guardians may read it.
    async fn patient(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Patient> {
        let id = PatientId::parse(&id, "id")?;
        Ok(Patient(
            services(ctx).patients.patient(viewer(ctx), id).await?,
        ))
    }

    /// The organisation's patients by name (staff), optionally whose name contains `search`.
    async fn patients(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Conn<Patient>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .patients
            .list(viewer(ctx), org, search.as_deref(), &request)
            .await?;
        Ok(pagination::connection(page, has_previous, Patient))
    }

    /// A care team: staff of the patient's organisation, its guardians and the team's members.
    async fn care_team(&self, ctx: &Context<'_>, id: ID) -> GqlResult<CareTeam> {
        let id = CareTeamId::parse(&id, "id")?;
        Ok(CareTeam(
            services(ctx).care_teams.team(viewer(ctx), id).await?,
        ))
    }

    /// The organisation's pending compliance group invitations, oldest first (OWNER/ADMIN).
    async fn compliance_group_invitations(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
    ) -> GqlResult<Vec<ComplianceGroupInvitation>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        Ok(services(ctx)
            .consent
            .invitations(viewer(ctx), org)
            .await?
            .into_iter()
            .map(ComplianceGroupInvitation)
            .collect())
    }
}

/// A guardian to add.
#[derive(InputObject)]
pub struct GuardianInput {
    /// Email; a new email creates a client account.
    pub email: String,
    /// Given name of a new user.
    pub given_name: String,
    /// Family name of a new user.
    pub family_name: String,
    /// How they relate to the patient.
    pub relationship: GuardianRelationship,
    /// Whether a co-guardian takes part in client chats (default false).
    #[graphql(default)]
    pub can_chat: bool,
}

impl From<GuardianInput> for GuardianArgs {
    fn from(g: GuardianInput) -> Self {
        Self {
            email: g.email,
            given_name: g.given_name,
            family_name: g.family_name,
            relationship: g.relationship.into(),
            can_chat: g.can_chat,
        }
    }
}

/// Input of `createPatient`.
#[derive(InputObject)]
pub struct CreatePatientInput {
    /// Name.
    pub name: String,
    /// Species, for animals.
    pub species: Option<String>,
    /// Risk level (default LOW).
    pub risk_level: Option<RiskLevel>,
    /// Date of birth.
    pub date_of_birth: Option<NaiveDate>,
    /// Guardians.
    #[graphql(default)]
    pub guardians: Vec<GuardianInput>,
}

/// Input of `updatePatient`; omitted fields stay, `null` clears optional ones.
#[derive(InputObject)]
pub struct UpdatePatientInput {
    /// Name.
    pub name: Option<String>,
    /// Species.
    pub species: MaybeUndefined<String>,
    /// Risk level.
    pub risk_level: Option<RiskLevel>,
    /// Date of birth.
    pub date_of_birth: MaybeUndefined<NaiveDate>,
}

/// Input of `recordConsent`: exactly one of `grantedToOrgId` and `complianceGroupId`.
#[derive(InputObject)]
pub struct RecordConsentInput {
    /// What it allows.
    pub scope: ConsentScope,
    /// The organisation it is granted to.
    pub granted_to_org_id: Option<ID>,
    /// The compliance group it is granted to.
    pub compliance_group_id: Option<ID>,
    /// When it lapses.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Input of `createComplianceGroup`.
#[derive(InputObject)]
pub struct CreateComplianceGroupInput {
    /// Name.
    pub name: String,
    /// The organisations to invite (yours is a member anyway).
    pub organization_ids: Vec<ID>,
}

/// Input of `createCareTeam`.
#[derive(InputObject)]
pub struct CreateCareTeamInput {
    /// Name.
    pub name: String,
    /// Members besides the creator, who leads the team.
    #[graphql(default)]
    pub member_ids: Vec<ID>,
}

/// Input of `addCareTeamMember`: exactly one of `userId` and `phone`.
#[derive(InputObject)]
pub struct AddCareTeamMemberInput {
    /// The member's account.
    pub user_id: Option<ID>,
    /// E.164 phone number of an outside clinician without an account.
    pub phone: Option<String>,
    /// Name of a phone-only member.
    pub display_name: Option<String>,
    /// Role (members from outside the organisation are EXTERNAL).
    #[graphql(default_with = "CareTeamRole::Member")]
    pub role: CareTeamRole,
    /// The organisation a member from outside acts for, when they belong to several.
    pub organization_id: Option<ID>,
}

fn maybe<T>(m: MaybeUndefined<T>) -> Option<Option<T>> {
    match m {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

/// Patient mutations.
#[derive(Default)]
pub struct PatientMutation;

#[Object]
impl PatientMutation {
    /// Creates a patient with its guardians (staff).
    async fn create_patient(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: CreatePatientInput,
    ) -> GqlResult<Patient> {
        let org = OrgId::parse(&org_id, "orgId")?;
        check_len(input.guardians.len(), "input.guardians")?;
        let patient = services(ctx)
            .patients
            .create(
                viewer(ctx),
                org,
                NewPatient {
                    name: input.name,
                    species: input.species,
                    risk_level: input.risk_level.map(Into::into),
                    date_of_birth: input.date_of_birth,
                    guardians: input.guardians.into_iter().map(Into::into).collect(),
                },
            )
            .await?;
        Ok(Patient(patient))
    }

    /// Changes a patient (staff).
    async fn update_patient(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePatientInput,
    ) -> GqlResult<Patient> {
        let id = PatientId::parse(&id, "id")?;
        let change = PatientChange {
            name: input.name,
            species: maybe(input.species),
            risk_level: input.risk_level.map(Into::into),
            date_of_birth: maybe(input.date_of_birth),
        };
        Ok(Patient(
            services(ctx)
                .patients
                .update(viewer(ctx), id, change)
                .await?,
        ))
    }

    /// Adds or changes a guardian (staff); a new email creates a client account.
    async fn add_guardian(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        input: GuardianInput,
    ) -> GqlResult<Patient> {
        let id = PatientId::parse(&patient_id, "patientId")?;
        Ok(Patient(
            services(ctx)
                .patients
                .add_guardian(viewer(ctx), id, input.into())
                .await?,
        ))
    }

    /// Removes a guardian (staff).
    async fn remove_guardian(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        user_id: ID,
    ) -> GqlResult<Patient> {
        let id = PatientId::parse(&patient_id, "patientId")?;
        let user = UserId::parse(&user_id, "userId")?;
        Ok(Patient(
            services(ctx)
                .patients
                .remove_guardian(viewer(ctx), id, user)
                .await?,
        ))
    }

    /// Records a consent (staff, the patient, or the primary guardian).
    async fn record_consent(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        input: RecordConsentInput,
    ) -> GqlResult<Consent> {
        let id = PatientId::parse(&patient_id, "patientId")?;
        let input = ConsentInput {
            scope: input.scope.into(),
            granted_to: input
                .granted_to_org_id
                .as_deref()
                .map(|o| OrgId::parse(o, "input.grantedToOrgId"))
                .transpose()?,
            compliance_group: input
                .compliance_group_id
                .as_deref()
                .map(|g| ComplianceGroupId::parse(g, "input.complianceGroupId"))
                .transpose()?,
            expires_at: input.expires_at,
        };
        Ok(Consent(
            services(ctx).consent.record(viewer(ctx), id, input).await?,
        ))
    }

    /// Revokes a consent.
    async fn revoke_consent(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Consent> {
        let id = ConsentId::parse(&id, "id")?;
        Ok(Consent(
            services(ctx).consent.revoke(viewer(ctx), id).await?,
        ))
    }

    /// Creates a compliance group of your organisation (OWNER/ADMIN): yours is a member at once,
    /// the others listed are invited and join when one of their OWNERs or ADMINs accepts.
    async fn create_compliance_group(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: CreateComplianceGroupInput,
    ) -> GqlResult<ComplianceGroup> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let others = parse_ids(
            &input.organization_ids,
            "input.organizationIds",
            OrgId::parse,
        )?;
        Ok(ComplianceGroup(
            services(ctx)
                .consent
                .create_group(viewer(ctx), org, &input.name, &others)
                .await?,
        ))
    }

    /// Accepts the organisation's invitation to a compliance group (its OWNER/ADMIN); from then
    /// on consents granted to the group count for it.
    async fn accept_compliance_group_invitation(
        &self,
        ctx: &Context<'_>,
        group_id: ID,
        org_id: ID,
    ) -> GqlResult<ComplianceGroup> {
        let group = ComplianceGroupId::parse(&group_id, "groupId")?;
        let org = OrgId::parse(&org_id, "orgId")?;
        Ok(ComplianceGroup(
            services(ctx)
                .consent
                .accept_invitation(viewer(ctx), group, org)
                .await?,
        ))
    }

    /// Declines the organisation's invitation to a compliance group (its OWNER/ADMIN).
    async fn decline_compliance_group_invitation(
        &self,
        ctx: &Context<'_>,
        group_id: ID,
        org_id: ID,
    ) -> GqlResult<bool> {
        let group = ComplianceGroupId::parse(&group_id, "groupId")?;
        let org = OrgId::parse(&org_id, "orgId")?;
        services(ctx)
            .consent
            .decline_invitation(viewer(ctx), group, org)
            .await?;
        Ok(true)
    }

    /// Creates a care team (staff); the creator leads it.
    async fn create_care_team(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
        input: CreateCareTeamInput,
    ) -> GqlResult<CareTeam> {
        let id = PatientId::parse(&patient_id, "patientId")?;
        let members = parse_ids(&input.member_ids, "input.memberIds", UserId::parse)?;
        Ok(CareTeam(
            services(ctx)
                .care_teams
                .create(viewer(ctx), id, &input.name, &members)
                .await?,
        ))
    }

    /// Adds a care team member (staff): a colleague, staff of another organisation holding the
    /// patient's MESSAGING consent, or an outside clinician by phone.
    async fn add_care_team_member(
        &self,
        ctx: &Context<'_>,
        care_team_id: ID,
        input: AddCareTeamMemberInput,
    ) -> GqlResult<CareTeamMember> {
        let id = CareTeamId::parse(&care_team_id, "careTeamId")?;
        let member = NewCareTeamMember {
            user_id: input
                .user_id
                .as_deref()
                .map(|u| UserId::parse(u, "input.userId"))
                .transpose()?,
            phone: input.phone,
            display_name: input.display_name,
            role: input.role.into(),
            organization_id: input
                .organization_id
                .as_deref()
                .map(|o| OrgId::parse(o, "input.organizationId"))
                .transpose()?,
        };
        Ok(CareTeamMember(
            services(ctx)
                .care_teams
                .add_member(viewer(ctx), id, member)
                .await?,
        ))
    }

    /// Removes a care team member (staff).
    async fn remove_care_team_member(
        &self,
        ctx: &Context<'_>,
        care_team_id: ID,
        member_id: ID,
    ) -> GqlResult<CareTeam> {
        let id = CareTeamId::parse(&care_team_id, "careTeamId")?;
        let member = CareTeamMemberId::parse(&member_id, "memberId")?;
        Ok(CareTeam(
            services(ctx)
                .care_teams
                .remove_member(viewer(ctx), id, member)
                .await?,
        ))
    }
}
