//! GraphQL for appointments and their meeting links.

use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::{
    args::parse_ids,
    context::{loader, my_memberships, services, viewer},
    enums::{AppointmentStatus, MeetingState, SessionType},
    errors::GqlResult,
    loaders::{GuardianshipsOf, StaffOf, SupportStaffOf},
    organizations::{Organization, User},
    pagination::{self, Conn},
    patients::Patient,
    related::{org_of, patient_of, user_of},
};
use crate::{
    domain::{self, AppointmentId, OrgId, PatientId, UserId},
    services::appointments::{AppointmentFilter, MeetingView, ScheduleInput},
};

/// An appointment.
pub struct Appointment(pub domain::care::Appointment);

#[Object]
impl Appointment {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The organisation.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Organization> {
        org_of(ctx, self.0.org_id).await
    }
    /// The patient.
    async fn patient(&self, ctx: &Context<'_>) -> GqlResult<Patient> {
        patient_of(ctx, self.0.patient_id).await
    }
    /// The client (a guardian of the patient).
    async fn client(&self, ctx: &Context<'_>) -> GqlResult<User> {
        user_of(ctx, self.0.client_id).await
    }
    /// The practitioner.
    async fn practitioner(&self, ctx: &Context<'_>) -> GqlResult<User> {
        user_of(ctx, self.0.practitioner_id).await
    }
    /// Support staff.
    async fn support_staff(&self, ctx: &Context<'_>) -> GqlResult<Vec<User>> {
        let users = loader(ctx)
            .load_one(StaffOf(self.0.id, Some(self.0.patient_id), self.0.org_id))
            .await?
            .unwrap_or_default();
        Ok(users.into_iter().map(User).collect())
    }
    /// Start.
    async fn starts_at(&self) -> DateTime<Utc> {
        self.0.starts_at
    }
    /// End.
    async fn ends_at(&self) -> DateTime<Utc> {
        self.0.ends_at
    }
    /// Length in minutes.
    async fn duration_minutes(&self) -> i32 {
        self.0.duration_minutes
    }
    /// In person or by video.
    async fn session_type(&self) -> SessionType {
        self.0.session_type.into()
    }
    /// Status.
    async fn status(&self) -> AppointmentStatus {
        self.0.status.into()
    }
    /// Why.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// The PMS's own id.
    async fn external_ref(&self) -> Option<&str> {
        self.0.external_ref.as_deref()
    }
    /// Minutes before the start that the appointment chat opens (null: the organisation's default).
    async fn activation_minutes(&self) -> Option<i32> {
        self.0.activation_minutes
    }
    /// The video meeting (null unless a teleconference); `joinUrl` is the caller's own link,
    /// given to participants only while the meeting is open.
    async fn meeting(&self, ctx: &Context<'_>) -> GqlResult<Option<MeetingLink>> {
        if self.0.room_name.is_none() {
            return Ok(None);
        }
        // Boxed, as the chat below: async-graphql boxes every field of a row with room for its
        // largest resolver (boxing these two took the dashboard query from 6.70 to 6.61 million
        // instructions per request, callgrind).
        Box::pin(self.meeting_link(ctx)).await
    }
    /// The appointment's chat, once opened (`openAppointmentChat`), for its members and the
    /// organisation's OWNER/ADMIN (null for anyone else).
    async fn chat(&self, ctx: &Context<'_>) -> GqlResult<Option<super::chat::ChatSession>> {
        Box::pin(async {
            let session = loader(ctx)
                .load_one(super::loaders::ChatOfAppointment(self.0.id))
                .await?;
            super::chat::ChatSession::visible(ctx, session).await
        })
        .await
    }
}

impl Appointment {
    /// The meeting link of a teleconference, as the viewer may see it.
    async fn meeting_link(&self, ctx: &Context<'_>) -> GqlResult<Option<MeetingLink>> {
        let viewer = viewer(ctx);
        let me = viewer.user()?.id;
        // Only per-viewer and per-row keys that the list itself triggers, so that every loader
        // runs once per page (the viewer's own guardian links stand in for the patient's).
        let (support, guardianships, memberships) = futures_util::try_join!(
            loader(ctx).load_one(SupportStaffOf(self.0.id)),
            loader(ctx).load_one(GuardianshipsOf(me)),
            my_memberships(ctx),
        )?;
        let support = support.unwrap_or_default();
        let guardians = guardianships.unwrap_or_default();
        let view = services(ctx)
            .appointments
            .meeting(
                viewer,
                &self.0,
                &support,
                &guardians,
                &memberships.unwrap_or_default(),
            )
            .await?;
        Ok(view.map(MeetingLink))
    }
}

/// A video meeting link.
pub struct MeetingLink(pub MeetingView);

#[Object]
impl MeetingLink {
    /// The provider (`jitsi`).
    async fn provider(&self) -> &str {
        self.0.provider
    }
    /// The room, fixed at scheduling.
    async fn room_name(&self) -> &str {
        &self.0.room_name
    }
    /// When the room opens.
    async fn joinable_from(&self) -> DateTime<Utc> {
        self.0.joinable_from
    }
    /// When the room closes.
    async fn joinable_until(&self) -> DateTime<Utc> {
        self.0.joinable_until
    }
    /// Whether it can be joined now.
    async fn state(&self) -> MeetingState {
        self.0.state.into()
    }
    /// The caller's own link (participants only, while open; signed on a secured deployment).
    async fn join_url(&self) -> Option<&str> {
        self.0.join_url.as_deref()
    }
}

/// Input of `scheduleAppointment`.
#[derive(InputObject)]
pub struct ScheduleAppointmentInput {
    /// The patient.
    pub patient_id: ID,
    /// The client: a guardian of the patient.
    pub client_id: ID,
    /// The practitioner: an active member.
    pub practitioner_id: ID,
    /// Support staff.
    #[graphql(default)]
    pub support_staff_ids: Vec<ID>,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// Length in minutes (5 to 480).
    pub duration_minutes: i32,
    /// In person or by video.
    pub session_type: SessionType,
    /// Why.
    pub reason: Option<String>,
    /// Your own id of the appointment.
    pub external_ref: Option<String>,
    /// Minutes before the start that the chat opens (0 to 240; default: the organisation's).
    pub activation_minutes: Option<i32>,
    /// REQUESTED or UPCOMING (default).
    pub status: Option<AppointmentStatus>,
}

/// Appointment queries.
#[derive(Default)]
pub struct AppointmentQuery;

#[Object]
impl AppointmentQuery {
    /// An appointment: staff of its organisation and its participants.
    async fn appointment(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Appointment> {
        let id = AppointmentId::parse(&id, "id")?;
        Ok(Appointment(
            services(ctx).appointments.read(viewer(ctx), id).await?.0,
        ))
    }

    /// The organisation's appointments by start time (staff).
    #[allow(clippy::too_many_arguments)]
    async fn appointments(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        practitioner_id: Option<ID>,
        status: Option<AppointmentStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Conn<Appointment>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let filter = AppointmentFilter {
            from,
            to,
            practitioner: practitioner_id
                .as_deref()
                .map(|p| UserId::parse(p, "practitionerId"))
                .transpose()?,
            status: status.map(Into::into),
        };
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .appointments
            .list(viewer(ctx), org, &filter, &request)
            .await?;
        Ok(pagination::connection(page, has_previous, Appointment))
    }
}

/// Appointment mutations.
#[derive(Default)]
pub struct AppointmentMutation;

#[Object]
impl AppointmentMutation {
    /// Schedules an appointment (staff); a teleconference gets its meeting room.
    async fn schedule_appointment(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: ScheduleAppointmentInput,
    ) -> GqlResult<Appointment> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let args = ScheduleInput {
            patient_id: PatientId::parse(&input.patient_id, "input.patientId")?,
            client_id: UserId::parse(&input.client_id, "input.clientId")?,
            practitioner_id: UserId::parse(&input.practitioner_id, "input.practitionerId")?,
            support_staff_ids: parse_ids(
                &input.support_staff_ids,
                "input.supportStaffIds",
                UserId::parse,
            )?,
            starts_at: input.starts_at,
            duration_minutes: input.duration_minutes,
            session_type: input.session_type.into(),
            reason: input.reason,
            external_ref: input.external_ref,
            activation_minutes: input.activation_minutes,
            status: input.status.map(Into::into),
        };
        Ok(Appointment(
            services(ctx)
                .appointments
                .schedule(viewer(ctx), org, args)
                .await?,
        ))
    }

    /// Moves an appointment (staff).
    async fn reschedule_appointment(
        &self,
        ctx: &Context<'_>,
        id: ID,
        starts_at: DateTime<Utc>,
        duration_minutes: i32,
    ) -> GqlResult<Appointment> {
        let id = AppointmentId::parse(&id, "id")?;
        Ok(Appointment(
            services(ctx)
                .appointments
                .reschedule(viewer(ctx), id, starts_at, duration_minutes)
                .await?,
        ))
    }

    /// Assigns the practitioner and support staff (staff); the appointment's chat members follow.
    async fn assign_appointment_staff(
        &self,
        ctx: &Context<'_>,
        id: ID,
        practitioner_id: ID,
        support_staff_ids: Vec<ID>,
    ) -> GqlResult<Appointment> {
        let id = AppointmentId::parse(&id, "id")?;
        let practitioner = UserId::parse(&practitioner_id, "practitionerId")?;
        let support = parse_ids(&support_staff_ids, "supportStaffIds", UserId::parse)?;
        Ok(Appointment(
            services(ctx)
                .appointments
                .assign_staff(viewer(ctx), id, practitioner, &support)
                .await?,
        ))
    }

    /// Changes the status along a legal transition (staff); an illegal one is BAD_USER_INPUT.
    async fn set_appointment_status(
        &self,
        ctx: &Context<'_>,
        id: ID,
        status: AppointmentStatus,
    ) -> GqlResult<Appointment> {
        let id = AppointmentId::parse(&id, "id")?;
        Ok(Appointment(
            services(ctx)
                .appointments
                .set_status(viewer(ctx), id, status.into())
                .await?,
        ))
    }

    /// Cancels an appointment (staff).
    async fn cancel_appointment(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Appointment> {
        let id = AppointmentId::parse(&id, "id")?;
        Ok(Appointment(
            services(ctx).appointments.cancel(viewer(ctx), id).await?,
        ))
    }

    /// The caller's meeting link; MEETING_NOT_OPEN (with `opensAt`) outside the window.
    async fn join_meeting(&self, ctx: &Context<'_>, appointment_id: ID) -> GqlResult<MeetingLink> {
        let id = AppointmentId::parse(&appointment_id, "appointmentId")?;
        Ok(MeetingLink(
            services(ctx).appointments.join(viewer(ctx), id).await?,
        ))
    }
}
