//! Self-service booking: practitioners' weekly availability, the free slots it gives, and a
//! guardian's request of one slot, which becomes a `REQUESTED` appointment through the one path
//! every appointment takes (staff confirm it with `setAppointmentStatus(UPCOMING)`).
//!
//! Who may do what: an OWNER or ADMIN of the organisation, or the practitioner themself, sets a
//! practitioner's availability; active staff of the organisation and guardians of its patients
//! read availability and free slots ([`access::booking_reader`]); a guardian of the patient
//! requests a slot.

use chrono::{DateTime, Duration, NaiveTime, Utc, Weekday};

use super::{AppointmentService, ConflictFields, ScheduleInput};
use crate::{
    audit::{AuditAction, AuditEntity},
    auth::Viewer,
    db,
    domain::{
        OrgId, PatientId, UserId,
        availability::{self, Availability, MAX_RANGE_DAYS, Slot, WeeklyInterval},
        care::{self, Appointment, AppointmentStatus, SessionType},
    },
    error::{AppError, AppResult},
    services::access::{self, member_of, record_change},
};

/// One interval of `setPractitionerAvailability`'s input, as given.
#[derive(Clone, Debug)]
pub struct IntervalInput {
    /// The day of the week.
    pub weekday: Weekday,
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM`.
    pub end: String,
}

/// Input of `setPractitionerAvailability`, as given.
#[derive(Clone, Debug)]
pub struct AvailabilityInput {
    /// The weekly intervals.
    pub weekly: Vec<IntervalInput>,
    /// An IANA timezone name.
    pub timezone: String,
    /// Length of each slot in minutes.
    pub slot_minutes: i32,
}

/// Input of `requestAppointment`.
#[derive(Clone, Debug)]
pub struct RequestInput {
    /// The patient.
    pub patient_id: PatientId,
    /// The practitioner.
    pub practitioner_id: UserId,
    /// The start of one of the practitioner's free slots.
    pub starts_at: DateTime<Utc>,
    /// In person or by video.
    pub session_type: SessionType,
    /// Why.
    pub reason: Option<String>,
}

impl AppointmentService {
    /// Sets a practitioner's weekly availability in an organisation (an OWNER or ADMIN, or the
    /// practitioner themself), replacing the one before; recorded as a change.
    pub async fn set_availability(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        practitioner_id: UserId,
        input: AvailabilityInput,
    ) -> AppResult<Availability> {
        let (user, member) = member_of(&self.db, viewer, org_id).await?;
        if user.id != practitioner_id && !member.membership().role.manages_organization() {
            return Err(AppError::Forbidden(
                "only an OWNER or ADMIN of the organization, or the practitioner themself, sets availability"
                    .into(),
            ));
        }
        self.check_practitioner(org_id, practitioner_id, "practitionerId")
            .await?;
        let timezone = availability::timezone(&input.timezone, "input.timezone")?;
        let slot_minutes = availability::slot_minutes(input.slot_minutes, "input.slotMinutes")?;
        if input.weekly.len() > availability::MAX_INTERVALS {
            return Err(AppError::bad_input(
                "input.weekly",
                format!("at most {} intervals", availability::MAX_INTERVALS),
            ));
        }
        let mut weekly = Vec::with_capacity(input.weekly.len());
        for (i, interval) in input.weekly.iter().enumerate() {
            let start: NaiveTime =
                availability::local_time(&interval.start, &format!("input.weekly[{i}].start"))?;
            let end: NaiveTime =
                availability::local_time(&interval.end, &format!("input.weekly[{i}].end"))?;
            weekly.push(WeeklyInterval {
                weekday: interval.weekday,
                start,
                end,
            });
        }
        let weekly = availability::weekly(weekly, "input.weekly")?;
        let value = Availability {
            org_id,
            practitioner_id,
            weekly,
            timezone,
            slot_minutes,
            updated_at: care::stored_precision(self.clock.now()),
        };
        let txn = db::begin(&self.db).await?;
        let existed = db::availability::find(&txn, org_id, practitioner_id)
            .await?
            .is_some();
        db::availability::upsert(&txn, &value).await?;
        record_change(
            &txn,
            viewer,
            if existed {
                AuditAction::Update
            } else {
                AuditAction::Create
            },
            AuditEntity::Availability,
            practitioner_id,
            org_id,
            None,
        )
        .await?;
        txn.commit().await?;
        Ok(value)
    }

    /// A practitioner's weekly availability in an organisation (`None` when never set), for
    /// staff of the organisation and guardians of its patients.
    pub async fn availability(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        practitioner_id: UserId,
    ) -> AppResult<Option<Availability>> {
        access::booking_reader(&self.db, viewer, org_id).await?;
        db::availability::find(&self.db, org_id, practitioner_id).await
    }

    /// The practitioner's free slots starting in `[from, to)` (at most [`MAX_RANGE_DAYS`] days,
    /// none in the past), for staff of the organisation and guardians of its patients: the
    /// weekly availability in its timezone less the times of the practitioner's appointments
    /// (not cancelled, as practitioner or support staff, in any organisation). No availability
    /// set gives no slots.
    pub async fn available_slots(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        practitioner_id: UserId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> AppResult<Vec<Slot>> {
        access::booking_reader(&self.db, viewer, org_id).await?;
        if to <= from {
            return Err(AppError::bad_input("to", "must be after from"));
        }
        if to - from > Duration::days(MAX_RANGE_DAYS) {
            return Err(AppError::bad_input(
                "to",
                format!("must be at most {MAX_RANGE_DAYS} days after from"),
            ));
        }
        self.check_practitioner(org_id, practitioner_id, "practitionerId")
            .await?;
        let Some(schedule) = db::availability::find(&self.db, org_id, practitioner_id).await?
        else {
            return Ok(Vec::new());
        };
        self.free_slots(&schedule, from.max(self.clock.now()), to)
            .await
    }

    /// `schedule`'s slots starting in `[from, to)` that no appointment of its practitioner
    /// overlaps.
    async fn free_slots(
        &self,
        schedule: &Availability,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> AppResult<Vec<Slot>> {
        let slots = schedule.slots(from, to);
        let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
            return Ok(slots);
        };
        let busy = db::availability::busy_times(
            &self.db,
            schedule.practitioner_id,
            first.starts_at,
            last.ends_at,
        )
        .await?;
        Ok(slots
            .into_iter()
            .filter(|s| {
                !busy
                    .iter()
                    .any(|(b_from, b_until)| s.overlaps(*b_from, *b_until))
            })
            .collect())
    }

    /// Requests one of a practitioner's free slots for a patient (a guardian of the patient,
    /// who becomes the client): a `REQUESTED` appointment as long as the slot, through the same
    /// path as `scheduleAppointment` (its room, its chat when opened, its audit record). A time
    /// that is no slot of the weekly availability is `BAD_USER_INPUT` on `input.startsAt`; a
    /// slot taken meanwhile is `CONFLICT` on `input.startsAt`.
    pub async fn request(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        input: RequestInput,
    ) -> AppResult<Appointment> {
        let (patient, _) = access::patient_reader(&self.db, viewer, input.patient_id).await?;
        let user = viewer.user()?.clone();
        if db::patients::find_guardian(&self.db, patient.id, user.id)
            .await?
            .is_none()
        {
            return Err(AppError::Forbidden(
                "only a guardian of the patient requests appointments (staff schedule them)".into(),
            ));
        }
        if patient.org_id != org_id {
            return Err(AppError::bad_input(
                "input.patientId",
                "no such patient in this organization",
            ));
        }
        self.check_practitioner(org_id, input.practitioner_id, "input.practitionerId")
            .await?;
        let Some(schedule) =
            db::availability::find(&self.db, org_id, input.practitioner_id).await?
        else {
            return Err(AppError::bad_input(
                "input.practitionerId",
                "the practitioner has no availability set",
            ));
        };
        let starts_at = care::stored_precision(input.starts_at);
        if starts_at < self.clock.now() {
            return Err(AppError::bad_input(
                "input.startsAt",
                "must be in the future",
            ));
        }
        let slot = schedule
            .slots(starts_at, starts_at + Duration::seconds(1))
            .into_iter()
            .find(|s| s.starts_at == starts_at)
            .ok_or_else(|| {
                AppError::bad_input(
                    "input.startsAt",
                    "is not the start of a slot of the practitioner's availability",
                )
            })?;
        // Whether the slot is still free is decided under the booking lock, in `create`.
        self.create(
            viewer,
            org_id,
            ScheduleInput {
                patient_id: patient.id,
                client_id: user.id,
                practitioner_id: input.practitioner_id,
                support_staff_ids: Vec::new(),
                starts_at: slot.starts_at,
                duration_minutes: schedule.slot_minutes,
                session_type: input.session_type,
                reason: input.reason,
                external_ref: None,
                activation_minutes: None,
                status: Some(AppointmentStatus::Requested),
            },
            ConflictFields {
                practitioner: "input.startsAt",
                support: "input.startsAt",
                overbooking: false,
            },
        )
        .await
    }
}
