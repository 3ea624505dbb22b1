//! GraphQL for cases: create-or-get, participants, close, queries.

use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::{
    args::check_len,
    context::{loader, my_memberships, services, viewer},
    enums::{CaseKind, CaseRole, CaseStatus},
    errors::GqlResult,
    loaders::{GuardianshipsOf, ParticipantsOf},
    organizations::{Organization, User},
    pagination::{self, Conn},
    patients::Patient,
    related::{org_of, patient_of, user_of},
};
use crate::{
    domain::{self, CaseId, OrgId, PatientId, UserId},
    services::cases::NewCaseInput,
};

/// A case, claim or encounter: a unit of work with its own chat room.
pub struct Case(pub domain::care::Case);

#[Object]
impl Case {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The organisation.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Organization> {
        org_of(ctx, self.0.org_id).await
    }
    /// The caller's own id of the case, unique per organisation.
    async fn reference(&self) -> &str {
        &self.0.reference
    }
    /// Kind.
    async fn kind(&self) -> CaseKind {
        self.0.kind.into()
    }
    /// Title.
    async fn title(&self) -> &str {
        &self.0.title
    }
    /// Status.
    async fn status(&self) -> CaseStatus {
        self.0.status.into()
    }
    /// The patient, when there is one and the caller may see the patient's record (staff of the
    /// organisation, or a guardian): other participants see the case without it.
    async fn patient(&self, ctx: &Context<'_>) -> GqlResult<Option<Patient>> {
        let Some(patient) = self.0.patient_id else {
            return Ok(None);
        };
        let me = viewer(ctx).user()?.id;
        let (memberships, guardianships) = futures_util::try_join!(
            my_memberships(ctx),
            loader(ctx).load_one(GuardianshipsOf(me)),
        )?;
        if !crate::services::access::sees_patient(
            &memberships.unwrap_or_default(),
            &guardianships.unwrap_or_default(),
            self.0.org_id,
            patient,
        ) {
            return Ok(None);
        }
        patient_of(ctx, patient).await.map(Some)
    }
    /// Participants.
    async fn participants(&self, ctx: &Context<'_>) -> GqlResult<Vec<CaseParticipant>> {
        let list = loader(ctx)
            .load_one(ParticipantsOf(self.0.id, self.0.patient_id, self.0.org_id))
            .await?
            .unwrap_or_default();
        Ok(list.into_iter().map(CaseParticipant).collect())
    }
    /// The case's chat room, for its members and the organisation's OWNER/ADMIN.
    async fn chat(&self, ctx: &Context<'_>) -> GqlResult<Option<super::chat::ChatSession>> {
        let session = services(ctx).chats.case_room(&self.0.id).await?;
        super::chat::ChatSession::visible(ctx, session).await
    }
    /// Created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Closed.
    async fn closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.closed_at
    }
}

/// A case participant.
pub struct CaseParticipant(pub domain::care::CaseParticipant);

#[Object]
impl CaseParticipant {
    /// The participant.
    async fn user(&self, ctx: &Context<'_>) -> GqlResult<User> {
        user_of(ctx, self.0.user_id).await
    }
    /// Role.
    async fn role(&self) -> CaseRole {
        self.0.role.into()
    }
}

/// A participant to add.
#[derive(InputObject)]
pub struct CaseParticipantInput {
    /// The user.
    pub user_id: ID,
    /// Role: ADMIN and PRACTITIONER must be active members; PATIENT a member or a guardian of the case's patient (of one of the organisation's patients when the case has none).
    pub role: CaseRole,
}

/// Input of `createCase`.
#[derive(InputObject)]
pub struct CreateCaseInput {
    /// Your own id of the case, claim or encounter (unique per organisation).
    pub reference: String,
    /// Kind (default CASE).
    #[graphql(default_with = "CaseKind::Case")]
    pub kind: CaseKind,
    /// Title.
    pub title: String,
    /// The patient.
    pub patient_id: Option<ID>,
    /// Participants.
    #[graphql(default)]
    pub participants: Vec<CaseParticipantInput>,
}

/// Case queries.
#[derive(Default)]
pub struct CaseQuery;

#[Object]
impl CaseQuery {
    /// A case: staff of its organisation and its participants.
    async fn case(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Case> {
        let id = CaseId::parse(&id, "id")?;
        Ok(Case(services(ctx).cases.case(viewer(ctx), id).await?))
    }

    /// A case by your reference (staff).
    async fn case_by_reference(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        reference: String,
    ) -> GqlResult<Case> {
        let org = OrgId::parse(&org_id, "orgId")?;
        Ok(Case(
            services(ctx)
                .cases
                .by_reference(viewer(ctx), org, &reference)
                .await?,
        ))
    }

    /// The organisation's cases, newest first (staff).
    async fn cases(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        status: Option<CaseStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Conn<Case>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .cases
            .list(viewer(ctx), org, status.map(Into::into), &request)
            .await?;
        Ok(pagination::connection(page, has_previous, Case))
    }
}

/// Case mutations.
#[derive(Default)]
pub struct CaseMutation;

#[Object]
impl CaseMutation {
    /// Creates a case, or returns the one with the same reference after adding the participants
    /// it misses (staff).
    async fn create_case(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: CreateCaseInput,
    ) -> GqlResult<Case> {
        let org = OrgId::parse(&org_id, "orgId")?;
        check_len(input.participants.len(), "input.participants")?;
        let participants = input
            .participants
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok((
                    UserId::parse(&p.user_id, &format!("input.participants.{i}.userId"))?,
                    p.role.into(),
                ))
            })
            .collect::<Result<Vec<_>, crate::error::AppError>>()?;
        let args = NewCaseInput {
            reference: input.reference,
            kind: input.kind.into(),
            title: input.title,
            patient_id: input
                .patient_id
                .as_deref()
                .map(|p| PatientId::parse(p, "input.patientId"))
                .transpose()?,
            participants,
        };
        let (case, _) = services(ctx).cases.create(viewer(ctx), org, args).await?;
        Ok(Case(case))
    }

    /// Adds a participant or changes their role (staff).
    async fn add_case_participant(
        &self,
        ctx: &Context<'_>,
        case_id: ID,
        input: CaseParticipantInput,
    ) -> GqlResult<Case> {
        let id = CaseId::parse(&case_id, "caseId")?;
        let user = UserId::parse(&input.user_id, "input.userId")?;
        Ok(Case(
            services(ctx)
                .cases
                .add_participant(viewer(ctx), id, user, input.role.into())
                .await?,
        ))
    }

    /// Removes a participant (staff).
    async fn remove_case_participant(
        &self,
        ctx: &Context<'_>,
        case_id: ID,
        user_id: ID,
    ) -> GqlResult<Case> {
        let id = CaseId::parse(&case_id, "caseId")?;
        let user = UserId::parse(&user_id, "userId")?;
        Ok(Case(
            services(ctx)
                .cases
                .remove_participant(viewer(ctx), id, user)
                .await?,
        ))
    }

    /// Closes a case and its chat room (staff); with `deleteRoom` the room is removed at the
    /// provider. Closing a closed case changes nothing.
    async fn close_case(
        &self,
        ctx: &Context<'_>,
        case_id: ID,
        #[graphql(default_with = "Some(false)")] delete_room: Option<bool>,
    ) -> GqlResult<Case> {
        let id = CaseId::parse(&case_id, "caseId")?;
        Ok(Case(
            services(ctx)
                .cases
                .close(viewer(ctx), id, delete_room.unwrap_or(false))
                .await?,
        ))
    }
}
