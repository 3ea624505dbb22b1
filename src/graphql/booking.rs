//! GraphQL for booking: practitioners' weekly availability, free slots, and guardians'
//! appointment requests.

use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::{
    appointments::Appointment,
    context::{services, viewer},
    enums::{SessionType, Weekday},
    errors::GqlResult,
    organizations::{Organization, User},
    related::{org_of, user_of},
};
use crate::{
    domain::{
        self, OrgId, PatientId, UserId,
        availability::{Availability, WeeklyInterval},
    },
    services::appointments::booking::{AvailabilityInput, IntervalInput, RequestInput},
};

/// A practitioner's weekly availability in an organisation.
pub struct PractitionerAvailability(pub Availability);

#[Object]
impl PractitionerAvailability {
    /// The organisation.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Organization> {
        org_of(ctx, self.0.org_id).await
    }
    /// The practitioner.
    async fn practitioner(&self, ctx: &Context<'_>) -> GqlResult<User> {
        user_of(ctx, self.0.practitioner_id).await
    }
    /// The intervals in which the practitioner takes appointments, by weekday and start.
    async fn weekly(&self) -> Vec<AvailabilityInterval> {
        self.0
            .weekly
            .iter()
            .copied()
            .map(AvailabilityInterval)
            .collect()
    }
    /// The IANA timezone of the intervals (`Europe/Berlin`).
    async fn timezone(&self) -> &str {
        self.0.timezone.name()
    }
    /// The length of each slot in minutes.
    async fn slot_minutes(&self) -> i32 {
        self.0.slot_minutes
    }
    /// When it was last set.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

/// One weekly interval, in the availability's local time.
pub struct AvailabilityInterval(pub WeeklyInterval);

#[Object(name = "WeeklyInterval")]
impl AvailabilityInterval {
    /// The day of the week.
    async fn weekday(&self) -> Weekday {
        self.0.weekday.into()
    }
    /// Local start, `HH:MM`.
    async fn start(&self) -> String {
        self.0.start.format("%H:%M").to_string()
    }
    /// Local end, `HH:MM`.
    async fn end(&self) -> String {
        self.0.end.format("%H:%M").to_string()
    }
}

/// A free slot of a practitioner.
pub struct Slot {
    slot: domain::availability::Slot,
    session_type: SessionType,
}

#[Object]
impl Slot {
    /// Start (pass it as `requestAppointment`'s `startsAt`).
    async fn starts_at(&self) -> DateTime<Utc> {
        self.slot.starts_at
    }
    /// End.
    async fn ends_at(&self) -> DateTime<Utc> {
        self.slot.ends_at
    }
    /// Length in minutes.
    async fn duration_minutes(&self) -> i32 {
        i32::try_from((self.slot.ends_at - self.slot.starts_at).num_minutes()).unwrap_or(i32::MAX)
    }
    /// The session type asked for.
    async fn session_type(&self) -> SessionType {
        self.session_type
    }
}

/// One interval of `setPractitionerAvailability`'s input.
#[derive(InputObject)]
#[graphql(name = "WeeklyIntervalInput")]
pub struct WeeklyIntervalInput {
    /// The day of the week.
    pub weekday: Weekday,
    /// Local start, `HH:MM` (24-hour).
    pub start: String,
    /// Local end, `HH:MM`, after `start` on the same day.
    pub end: String,
}

/// Input of `setPractitionerAvailability`.
#[derive(InputObject)]
pub struct PractitionerAvailabilityInput {
    /// The intervals (at most 70; none overlapping another of its weekday). Empty: no slots.
    pub weekly: Vec<WeeklyIntervalInput>,
    /// An IANA timezone (`Europe/Berlin`); slots keep their local time across DST changes.
    pub timezone: String,
    /// The length of each slot in minutes (5 to 480).
    pub slot_minutes: i32,
}

/// Input of `requestAppointment`.
#[derive(InputObject)]
pub struct RequestAppointmentInput {
    /// The patient (the caller is one of its guardians).
    pub patient_id: ID,
    /// The practitioner.
    pub practitioner_id: ID,
    /// The start of one of the practitioner's free slots (`availableSlots`).
    pub starts_at: DateTime<Utc>,
    /// In person or by video.
    pub session_type: SessionType,
    /// Why.
    pub reason: Option<String>,
}

/// Booking queries.
#[derive(Default)]
pub struct BookingQuery;

#[Object]
impl BookingQuery {
    /// A practitioner's weekly availability (null when never set): staff of the organisation
    /// and guardians of its patients.
    async fn practitioner_availability(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        practitioner_id: ID,
    ) -> GqlResult<Option<PractitionerAvailability>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let practitioner = UserId::parse(&practitioner_id, "practitionerId")?;
        Ok(services(ctx)
            .appointments
            .availability(viewer(ctx), org, practitioner)
            .await?
            .map(PractitionerAvailability))
    }

    /// A practitioner's free slots starting in `[from, to)` (at most 31 days; none in the
    /// past): staff of the organisation and guardians of its patients.
    async fn available_slots(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        practitioner_id: ID,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        session_type: SessionType,
    ) -> GqlResult<Vec<Slot>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let practitioner = UserId::parse(&practitioner_id, "practitionerId")?;
        Ok(services(ctx)
            .appointments
            .available_slots(viewer(ctx), org, practitioner, from, to)
            .await?
            .into_iter()
            .map(|slot| Slot { slot, session_type })
            .collect())
    }
}

/// Booking mutations.
#[derive(Default)]
pub struct BookingMutation;

#[Object]
impl BookingMutation {
    /// Sets a practitioner's weekly availability, replacing the one before (an OWNER or ADMIN of
    /// the organisation, or the practitioner themself).
    async fn set_practitioner_availability(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        practitioner_id: ID,
        input: PractitionerAvailabilityInput,
    ) -> GqlResult<PractitionerAvailability> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let practitioner = UserId::parse(&practitioner_id, "practitionerId")?;
        let input = AvailabilityInput {
            weekly: input
                .weekly
                .into_iter()
                .map(|w| IntervalInput {
                    weekday: w.weekday.into(),
                    start: w.start,
                    end: w.end,
                })
                .collect(),
            timezone: input.timezone,
            slot_minutes: input.slot_minutes,
        };
        Ok(PractitionerAvailability(
            services(ctx)
                .appointments
                .set_availability(viewer(ctx), org, practitioner, input)
                .await?,
        ))
    }

    /// Requests one of a practitioner's free slots for a patient (a guardian of the patient):
    /// the appointment starts REQUESTED and staff confirm it (`setAppointmentStatus`).
    async fn request_appointment(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: RequestAppointmentInput,
    ) -> GqlResult<Appointment> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let input = RequestInput {
            patient_id: PatientId::parse(&input.patient_id, "input.patientId")?,
            practitioner_id: UserId::parse(&input.practitioner_id, "input.practitionerId")?,
            starts_at: input.starts_at,
            session_type: input.session_type.into(),
            reason: input.reason,
        };
        Ok(Appointment(
            services(ctx)
                .appointments
                .request(viewer(ctx), org, input)
                .await?,
        ))
    }
}
