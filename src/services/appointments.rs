//! Appointments and their video meetings. Staff of the organisation schedule and manage them;
//! the client, guardians with chat rights, the practitioner and support staff may read them and,
//! inside the meeting window, join the meeting.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use sea_orm::DatabaseTransaction;

use super::{
    access::{member_of, record_change},
    chat::{AfterCommit, ChatService},
    consent,
};
use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    auth::Viewer,
    clock::SharedClock,
    config::JitsiConfig,
    db,
    domain::{
        AppointmentId, Membership, OrgId, PatientId, User, UserId,
        care::{self, Appointment, AppointmentStatus, ConsentScope, Guardian, SessionType},
        pagination::{Page, PageRequest},
        people::optional_text,
    },
    error::{AppError, AppResult},
    providers::meetings::{MeetingLinks, Participant},
};

pub use crate::db::appointments::AppointmentFilter;

pub mod booking;

/// The arguments a double-booking `CONFLICT` names: the one that brought in the practitioner and
/// the one that brought in the support staff (the same one when the time moved).
#[derive(Clone, Copy, Debug)]
struct ConflictFields {
    practitioner: &'static str,
    support: &'static str,
    /// Staff chose the people and the practice allows overbooking: no overlap check.
    overbooking: bool,
}

/// Input of `scheduleAppointment`.
#[derive(Clone, Debug)]
pub struct ScheduleInput {
    /// The patient.
    pub patient_id: PatientId,
    /// The client: a guardian of the patient.
    pub client_id: UserId,
    /// The practitioner: an active member.
    pub practitioner_id: UserId,
    /// Support staff: active members, or staff of another organisation with VIDEO consent.
    pub support_staff_ids: Vec<UserId>,
    /// Start.
    pub starts_at: DateTime<Utc>,
    /// Length in minutes (5 to 480).
    pub duration_minutes: i32,
    /// In person or by video.
    pub session_type: SessionType,
    /// Why.
    pub reason: Option<String>,
    /// The PMS's own id.
    pub external_ref: Option<String>,
    /// Minutes before the start that the chat opens (0 to 240).
    pub activation_minutes: Option<i32>,
    /// REQUESTED or UPCOMING (default).
    pub status: Option<AppointmentStatus>,
}

/// Whether a meeting can be joined now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeetingState {
    /// Before the window.
    NotYetOpen,
    /// Inside the window.
    Open,
    /// After the window, or the appointment is over or called off.
    Closed,
}

/// An appointment's meeting as one viewer sees it.
#[derive(Clone, Debug)]
pub struct MeetingView {
    /// `jitsi`.
    pub provider: &'static str,
    /// The room.
    pub room_name: String,
    /// Window start.
    pub joinable_from: DateTime<Utc>,
    /// Window end.
    pub joinable_until: DateTime<Utc>,
    /// State now.
    pub state: MeetingState,
    /// The viewer's own link: participants only, while open.
    pub join_url: Option<String>,
}

/// Appointments.
#[derive(Clone)]
pub struct AppointmentService {
    chats: ChatService,
    db: db::Db,
    clock: SharedClock,
    meetings: Arc<dyn MeetingLinks>,
    early: Duration,
    late: Duration,
    overbooking: bool,
}

impl AppointmentService {
    /// Builds the service.
    pub fn new(
        db: db::Db,
        clock: SharedClock,
        meetings: Arc<dyn MeetingLinks>,
        jitsi: &JitsiConfig,
        chats: ChatService,
        overbooking: bool,
    ) -> Self {
        Self {
            chats,
            db,
            clock,
            meetings,
            early: Duration::minutes(jitsi.allow_early_minutes),
            late: Duration::minutes(jitsi.max_late_minutes),
            overbooking,
        }
    }

    /// Commits `txn` (holding an appointment's change from `before` to `after`) with its chat
    /// brought in step in it, then settles what the chat side owes.
    async fn commit_with_chat(
        &self,
        txn: DatabaseTransaction,
        before: &Appointment,
        after: &Appointment,
    ) -> AppResult<()> {
        let mut fx = AfterCommit::default();
        self.chats
            .appointment_changed(&txn, &mut fx, before, after)
            .await?;
        self.chats.commit(txn, fx).await?;
        Ok(())
    }

    /// Checks the support staff: active members of `org`, or of another organisation holding
    /// the patient's VIDEO consent.
    async fn check_practitioner(&self, org: OrgId, id: UserId, field: &str) -> AppResult<()> {
        match db::organizations::find_membership(&self.db, org, id).await? {
            Some(m) if m.active => Ok(()),
            _ => Err(AppError::bad_input(
                field,
                "the practitioner must be an active member of the organization",
            )),
        }
    }

    async fn check_support(
        &self,
        org: OrgId,
        patient: &care::Patient,
        practitioner: UserId,
        ids: &[UserId],
        field: &str,
    ) -> AppResult<Vec<UserId>> {
        let mut out: Vec<UserId> = Vec::new();
        for id in ids {
            if *id == practitioner || out.contains(id) {
                continue;
            }
            match db::organizations::find_membership(&self.db, org, *id).await? {
                Some(m) if m.active => {}
                _ => {
                    let other = db::organizations::memberships_of_user(&self.db, *id)
                        .await?
                        .into_iter()
                        .find(|m| m.active)
                        .ok_or_else(|| {
                            AppError::bad_input(
                                field,
                                "support staff must be active staff of an organization",
                            )
                        })?;
                    consent::require(
                        &self.db,
                        patient,
                        other.org_id,
                        ConsentScope::Video,
                        self.clock.now(),
                    )
                    .await?;
                }
            }
            out.push(*id);
        }
        Ok(out)
    }

    /// Schedules an appointment (staff). A teleconference gets its room name now. A practitioner
    /// or support staff member who already has an overlapping appointment (not cancelled) is
    /// `CONFLICT` naming `input.practitionerId` or `input.supportStaffIds`.
    pub async fn schedule(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        input: ScheduleInput,
    ) -> AppResult<Appointment> {
        member_of(&self.db, viewer, org_id).await?;
        self.create(
            viewer,
            org_id,
            input,
            ConflictFields {
                practitioner: "input.practitionerId",
                support: "input.supportStaffIds",
                overbooking: self.overbooking,
            },
        )
        .await
    }

    /// Creates an appointment once the caller may (staff scheduling, or a guardian's request of
    /// a free slot): the one path every new appointment takes, with its checks, its room, the
    /// booking locks and overlap check, and its audit record in one transaction.
    async fn create(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        input: ScheduleInput,
        fields: ConflictFields,
    ) -> AppResult<Appointment> {
        let patient = match db::patients::find(&self.db, input.patient_id).await? {
            Some(p) if p.org_id == org_id => p,
            _ => {
                return Err(AppError::bad_input(
                    "input.patientId",
                    "no such patient in this organization",
                ));
            }
        };
        if db::patients::find_guardian(&self.db, patient.id, input.client_id)
            .await?
            .is_none()
        {
            return Err(AppError::bad_input(
                "input.clientId",
                "the client must be a guardian of the patient",
            ));
        }
        self.check_practitioner(org_id, input.practitioner_id, "input.practitionerId")
            .await?;
        let support = self
            .check_support(
                org_id,
                &patient,
                input.practitioner_id,
                &input.support_staff_ids,
                "input.supportStaffIds",
            )
            .await?;
        let length = care::duration(input.duration_minutes).map_err(|_| {
            AppError::bad_input("input.durationMinutes", "must be between 5 and 480")
        })?;
        if input.starts_at < self.clock.now() - Duration::hours(24) {
            return Err(AppError::bad_input(
                "input.startsAt",
                "must not be more than a day in the past",
            ));
        }
        if input
            .activation_minutes
            .is_some_and(|m| !(0..=240).contains(&m))
        {
            return Err(AppError::bad_input(
                "input.activationMinutes",
                "must be between 0 and 240",
            ));
        }
        let status = input.status.unwrap_or(AppointmentStatus::Upcoming);
        if !matches!(
            status,
            AppointmentStatus::Requested | AppointmentStatus::Upcoming
        ) {
            return Err(AppError::bad_input(
                "input.status",
                "a new appointment is REQUESTED or UPCOMING",
            ));
        }
        let id = AppointmentId::new();
        let starts_at = care::stored_precision(input.starts_at);
        let appointment = Appointment {
            id,
            org_id,
            patient_id: patient.id,
            client_id: input.client_id,
            practitioner_id: input.practitioner_id,
            starts_at,
            ends_at: starts_at + length,
            duration_minutes: input.duration_minutes,
            session_type: input.session_type,
            status,
            reason: optional_text(input.reason.as_deref(), "input.reason", 1000)?,
            external_ref: optional_text(input.external_ref.as_deref(), "input.externalRef", 200)?,
            activation_minutes: input.activation_minutes,
            room_name: (input.session_type == SessionType::Teleconference)
                .then(|| self.meetings.room_name(id)),
        };
        let txn = db::begin(&self.db).await?;
        claim(&txn, &appointment, &support, fields).await?;
        db::appointments::insert(&txn, &appointment, &support).await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Create,
            AuditEntity::Appointment,
            appointment.id,
            appointment.org_id,
            Some(appointment.patient_id),
        )
        .await?;
        txn.commit().await?;
        Ok(appointment)
    }

    async fn staff_appointment(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
    ) -> AppResult<Appointment> {
        let (appointment, reader) = read(&self.db, self.clock.now(), viewer, id).await?;
        if !reader.staff {
            viewer
                .audit
                .record(appointment_entry(AuditAction::Read, &appointment).denied());
            return Err(AppError::Forbidden(
                "only staff of the organization may change appointments".into(),
            ));
        }
        Ok(appointment)
    }

    /// An appointment staff may still change: not cancelled, completed or a no-show (else
    /// `BAD_USER_INPUT` saying that such an appointment `what`).
    async fn open_appointment(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
        what: &str,
    ) -> AppResult<Appointment> {
        let appointment = self.staff_appointment(viewer, id).await?;
        if appointment.status.is_terminal() {
            return Err(AppError::bad_input(
                "id",
                format!("a {} appointment {what}", appointment.status.as_str()),
            ));
        }
        Ok(appointment)
    }

    /// Moves an appointment (staff); finished or cancelled ones cannot move.
    pub async fn reschedule(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
        starts_at: DateTime<Utc>,
        duration_minutes: i32,
    ) -> AppResult<Appointment> {
        let mut appointment = self
            .open_appointment(viewer, id, "cannot be rescheduled")
            .await?;
        let before = appointment.clone();
        let length = care::duration(duration_minutes)?;
        if starts_at < self.clock.now() - Duration::hours(24) {
            return Err(AppError::bad_input(
                "startsAt",
                "must not be more than a day in the past",
            ));
        }
        let starts_at = care::stored_precision(starts_at);
        appointment.starts_at = starts_at;
        appointment.ends_at = starts_at + length;
        appointment.duration_minutes = duration_minutes;
        let txn = db::begin(&self.db).await?;
        // The staff as they are now (a concurrent reassignment waits for this row, or came first).
        let (practitioner, support) = staff_for_update(&txn, id).await?;
        appointment.practitioner_id = practitioner;
        claim(
            &txn,
            &appointment,
            &support,
            ConflictFields {
                practitioner: "startsAt",
                support: "startsAt",
                overbooking: self.overbooking,
            },
        )
        .await?;
        db::appointments::update_schedule(&txn, &appointment).await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Update,
            AuditEntity::Appointment,
            appointment.id,
            appointment.org_id,
            Some(appointment.patient_id),
        )
        .await?;
        self.commit_with_chat(txn, &before, &appointment).await?;
        Ok(appointment)
    }

    /// Assigns the practitioner and support staff (staff); the appointment's chat follows.
    pub async fn assign_staff(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
        practitioner_id: UserId,
        support_staff_ids: &[UserId],
    ) -> AppResult<Appointment> {
        let mut appointment = self.open_appointment(viewer, id, "keeps its staff").await?;
        let before = appointment.clone();
        self.check_practitioner(appointment.org_id, practitioner_id, "practitionerId")
            .await?;
        let patient = db::patients::find(&self.db, appointment.patient_id)
            .await?
            .ok_or(AppError::NotFound("patient"))?;
        let support = self
            .check_support(
                appointment.org_id,
                &patient,
                practitioner_id,
                support_staff_ids,
                "supportStaffIds",
            )
            .await?;
        appointment.practitioner_id = practitioner_id;
        let txn = db::begin(&self.db).await?;
        // The times as they are now (a concurrent move waits for this row, or came first).
        let current = db::appointments::find_for_update(&txn, id)
            .await?
            .ok_or(AppError::NotFound("appointment"))?;
        appointment.starts_at = current.starts_at;
        appointment.ends_at = current.ends_at;
        appointment.duration_minutes = current.duration_minutes;
        claim(
            &txn,
            &appointment,
            &support,
            ConflictFields {
                practitioner: "practitionerId",
                support: "supportStaffIds",
                overbooking: self.overbooking,
            },
        )
        .await?;
        db::appointments::set_practitioner(&txn, id, practitioner_id).await?;
        db::appointments::set_support_staff(&txn, id, &support).await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Update,
            AuditEntity::Appointment,
            appointment.id,
            appointment.org_id,
            Some(appointment.patient_id),
        )
        .await?;
        self.commit_with_chat(txn, &before, &appointment).await?;
        Ok(appointment)
    }

    /// Changes the status along a legal transition (staff).
    pub async fn set_status(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
        status: AppointmentStatus,
    ) -> AppResult<Appointment> {
        let mut appointment = self.staff_appointment(viewer, id).await?;
        let before = appointment.clone();
        appointment.status = appointment.status.transition(status)?;
        let txn = db::begin(&self.db).await?;
        db::appointments::update_schedule(&txn, &appointment).await?;
        // A cancellation is an UPDATE too (the appointment is kept, with its status).
        record_change(
            &txn,
            viewer,
            AuditAction::Update,
            AuditEntity::Appointment,
            appointment.id,
            appointment.org_id,
            Some(appointment.patient_id),
        )
        .await?;
        self.commit_with_chat(txn, &before, &appointment).await?;
        Ok(appointment)
    }

    /// Cancels (staff).
    pub async fn cancel(&self, viewer: &Viewer, id: AppointmentId) -> AppResult<Appointment> {
        self.set_status(viewer, id, AppointmentStatus::Cancelled)
            .await
    }

    /// An appointment with how the viewer relates to it (recorded as one READ); `NOT_FOUND` for
    /// anyone else.
    pub async fn read(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
    ) -> AppResult<(Appointment, AppointmentReader)> {
        let found = read(&self.db, self.clock.now(), viewer, id).await?;
        viewer
            .audit
            .record(appointment_entry(AuditAction::Read, &found.0));
        Ok(found)
    }

    /// A page of appointments by start time (staff).
    pub async fn list(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        filter: &AppointmentFilter,
        page: &PageRequest,
    ) -> AppResult<Page<Appointment>> {
        member_of(&self.db, viewer, org_id).await?;
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && to <= from
        {
            return Err(AppError::bad_input("to", "must be after from"));
        }
        let page = db::appointments::list(&self.db, org_id, filter, page).await?;
        viewer.audit.record_all(
            page.rows
                .iter()
                .map(|(_, a)| appointment_entry(AuditAction::Read, a)),
        );
        Ok(page)
    }

    /// The meeting window of an appointment.
    pub fn window(&self, appointment: &Appointment) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            appointment.starts_at - self.early,
            appointment.starts_at + self.late,
        )
    }

    fn state(&self, appointment: &Appointment, now: DateTime<Utc>) -> MeetingState {
        let (from, until) = self.window(appointment);
        if appointment.status.is_terminal() || now >= until {
            MeetingState::Closed
        } else if now < from {
            MeetingState::NotYetOpen
        } else {
            MeetingState::Open
        }
    }

    /// The meeting as `viewer` sees it (the caller already may read the appointment; support
    /// staff and guardians come from the per-request loaders). `None` unless a teleconference.
    /// Recorded: a `JOIN` of the `MEETING` when the caller's join link is handed out; without
    /// the link, the room and its state are the appointment's own data, read under its `READ`.
    pub async fn meeting(
        &self,
        viewer: &Viewer,
        appointment: &Appointment,
        support: &[UserId],
        guardians: &[Guardian],
        viewer_memberships: &[Membership],
    ) -> AppResult<Option<MeetingView>> {
        let view = self
            .meeting_view(viewer, appointment, support, guardians, viewer_memberships)
            .await?;
        if let Some(view) = &view
            && view.join_url.is_some()
        {
            viewer.audit.record(
                AuditEntry::new(AuditAction::Join, AuditEntity::Meeting, appointment.id)
                    .org(appointment.org_id)
                    .patient(appointment.patient_id),
            );
        }
        Ok(view)
    }

    /// [`Self::meeting`] without recording it (`joinMeeting` records its own `JOIN`).
    async fn meeting_view(
        &self,
        viewer: &Viewer,
        appointment: &Appointment,
        support: &[UserId],
        guardians: &[Guardian],
        viewer_memberships: &[Membership],
    ) -> AppResult<Option<MeetingView>> {
        let Some(room) = appointment.room_name.clone() else {
            return Ok(None);
        };
        let now = self.clock.now();
        let (from, until) = self.window(appointment);
        let state = self.state(appointment, now);
        let user = viewer.user()?;
        let join_url = if state == MeetingState::Open
            && is_participant(
                appointment,
                user.id,
                support.iter().copied(),
                guardians,
                viewer_memberships,
            )
            // Boxed: its read is rare (staff of another organisation), and an inline one
            // would make every row's fields larger (see `graphql::context::my_memberships`).
            && Box::pin(self.consent_for(user, appointment, viewer_memberships))
                .await?
                .is_ok()
        {
            Some(
                self.meetings
                    .join_url(&room, &participant(user, appointment), from, until)?,
            )
        } else {
            None
        };
        Ok(Some(MeetingView {
            provider: self.meetings.provider(),
            room_name: room,
            joinable_from: from,
            joinable_until: until,
            state,
            join_url,
        }))
    }

    /// Staff of another organisation need the patient's VIDEO consent (only they cost a query).
    async fn consent_for(
        &self,
        user: &User,
        appointment: &Appointment,
        memberships: &[Membership],
    ) -> AppResult<AppResult<()>> {
        if appointment.client_id == user.id || appointment.practitioner_id == user.id {
            return Ok(Ok(()));
        }
        let active: Vec<&Membership> = memberships.iter().filter(|m| m.active).collect();
        if active.iter().any(|m| m.org_id == appointment.org_id) {
            return Ok(Ok(()));
        }
        // Without a staff role only a guardian takes part (`is_participant` checked which).
        let Some(other) = active.first() else {
            return Ok(Ok(()));
        };
        let patient = db::patients::find(&self.db, appointment.patient_id)
            .await?
            .ok_or(AppError::NotFound("patient"))?;
        Ok(consent::require(
            &self.db,
            &patient,
            other.org_id,
            ConsentScope::Video,
            self.clock.now(),
        )
        .await
        .map(|_| ()))
    }

    /// `joinMeeting`: the viewer's link, or why not now.
    pub async fn join(&self, viewer: &Viewer, id: AppointmentId) -> AppResult<MeetingView> {
        let (appointment, reader) = read(&self.db, self.clock.now(), viewer, id).await?;
        if appointment.session_type != SessionType::Teleconference
            || appointment.room_name.is_none()
        {
            return Err(AppError::bad_input(
                "appointmentId",
                "this appointment is not a teleconference",
            ));
        }
        if !reader.participant {
            return Err(AppError::Forbidden(
                "only the appointment's participants join its meeting".into(),
            ));
        }
        let user = viewer.user()?;
        let memberships = db::organizations::memberships_of_user(&self.db, user.id).await?;
        self.consent_for(user, &appointment, &memberships).await??;
        let now = self.clock.now();
        let (from, _) = self.window(&appointment);
        match self.state(&appointment, now) {
            MeetingState::Open => {}
            MeetingState::NotYetOpen => {
                return Err(AppError::MeetingNotOpen {
                    message: format!("the meeting opens at {}", from.to_rfc3339()),
                    opens_at: Some(from),
                });
            }
            MeetingState::Closed => {
                return Err(AppError::MeetingNotOpen {
                    message: if appointment.status.is_terminal() {
                        format!("the appointment is {}", appointment.status.as_str())
                    } else {
                        "the meeting window has ended".into()
                    },
                    opens_at: None,
                });
            }
        }
        let support: Vec<UserId> = db::appointments::support_staff_of(&self.db, &[id])
            .await?
            .into_iter()
            .map(|(_, u)| u)
            .collect();
        let guardians = db::patients::guardians_of(&self.db, &[appointment.patient_id]).await?;
        let view = self
            .meeting_view(viewer, &appointment, &support, &guardians, &memberships)
            .await?
            .ok_or(AppError::NotFound("meeting"))?;
        // The link handed out is the join.
        viewer
            .audit
            .record_in(
                &self.db,
                AuditEntry::new(AuditAction::Join, AuditEntity::Meeting, appointment.id)
                    .org(appointment.org_id)
                    .patient(appointment.patient_id),
            )
            .await?;
        Ok(view)
    }
}

/// Takes the booking locks of an appointment's practitioner and support staff in `txn` and
/// checks that none of them takes part in another appointment (not cancelled, any organisation)
/// that overlaps it; else `CONFLICT` naming the argument that brought them in. Nothing is checked
/// when staff chose the people and `CAREGRAPH_ALLOW_OVERBOOKING` is on.
///
/// No double booking rests on this lock, not on timing: every path that puts a person into an
/// appointment's time (scheduling, a guardian's request, a move, a change of staff) runs it in
/// the transaction that writes the change, after [`db::begin`]. On PostgreSQL each person's
/// `booking_locks` row is upserted first, which holds its row lock until the transaction ends:
/// a second booking of the same person waits, then sees the first one's appointment in its
/// overlap check. On SQLite [`db::begin`] takes the database's write lock before anything is
/// read, so booking transactions run one after another. An exclusion constraint would do on
/// PostgreSQL alone; the lock row works on both, and also covers support staff (another
/// table) and appointments of other organisations.
async fn claim(
    txn: &DatabaseTransaction,
    appointment: &Appointment,
    support: &[UserId],
    fields: ConflictFields,
) -> AppResult<()> {
    if appointment.status == AppointmentStatus::Cancelled || fields.overbooking {
        return Ok(());
    }
    let mut people = vec![appointment.practitioner_id];
    people.extend(support.iter().copied());
    db::availability::lock_people(txn, &people).await?;
    let busy = db::availability::busy_people(
        txn,
        &people,
        appointment.starts_at,
        appointment.ends_at,
        Some(appointment.id),
    )
    .await?;
    if busy.contains(&appointment.practitioner_id) {
        return Err(AppError::ConflictOn {
            message: "the practitioner has another appointment at that time".into(),
            field: fields.practitioner.into(),
        });
    }
    if !busy.is_empty() {
        return Err(AppError::ConflictOn {
            message: "a support staff member has another appointment at that time".into(),
            field: fields.support.into(),
        });
    }
    Ok(())
}

/// The practitioner and support staff of appointment `id` as stored now, its row locked for the
/// rest of `txn` on PostgreSQL (SQLite's transaction already holds the write lock).
async fn staff_for_update(
    txn: &DatabaseTransaction,
    id: AppointmentId,
) -> AppResult<(UserId, Vec<UserId>)> {
    let current = db::appointments::find_for_update(txn, id)
        .await?
        .ok_or(AppError::NotFound("appointment"))?;
    let support = db::appointments::support_staff_of(txn, &[id])
        .await?
        .into_iter()
        .map(|(_, u)| u)
        .collect();
    Ok((current.practitioner_id, support))
}

/// The audit entry of `action` on `appointment`.
pub(crate) fn appointment_entry(action: AuditAction, appointment: &Appointment) -> AuditEntry {
    AuditEntry::new(action, AuditEntity::Appointment, appointment.id)
        .org(appointment.org_id)
        .patient(appointment.patient_id)
}

/// How the viewer relates to an appointment.
#[derive(Clone, Copy, Debug)]
pub struct AppointmentReader {
    /// An active member of its organisation.
    pub staff: bool,
    /// A participant: client, guardian with chat rights, practitioner, support staff.
    pub participant: bool,
}

/// An appointment with how the viewer relates to it; `NOT_FOUND` for anyone else.
pub async fn read(
    conn: &impl db::Source,
    now: DateTime<Utc>,
    viewer: &Viewer,
    id: AppointmentId,
) -> AppResult<(Appointment, AppointmentReader)> {
    let user = viewer.user()?;
    let Some(appointment) = db::appointments::find(conn, id).await? else {
        viewer
            .audit
            .record(AuditEntry::read(AuditEntity::Appointment, id).denied());
        return Err(AppError::NotFound("appointment"));
    };
    let memberships = db::organizations::memberships_of_user(conn, user.id).await?;
    let staff = memberships
        .iter()
        .any(|m| m.active && m.org_id == appointment.org_id);
    let support = db::appointments::support_staff_of(conn, &[id]).await?;
    let guardians = db::patients::guardians_of(conn, &[appointment.patient_id]).await?;
    let participant = is_participant(
        &appointment,
        user.id,
        support.iter().map(|(_, u)| *u),
        &guardians,
        &memberships,
    );
    if !staff && !participant {
        viewer
            .audit
            .record(appointment_entry(AuditAction::Read, &appointment).denied());
        return Err(AppError::NotFound("appointment"));
    }
    // Support staff from outside see it only while the patient's consent covers them.
    if !staff
        && outside_support(&appointment, user.id, &guardians, &memberships)
        && !consent_covers(conn, &appointment, &memberships, ConsentScope::Video, now).await?
    {
        viewer
            .audit
            .record(appointment_entry(AuditAction::Read, &appointment).denied());
        return Err(AppError::NotFound("appointment"));
    }
    Ok((appointment, AppointmentReader { staff, participant }))
}

/// Whether `user` takes part now: the client or a guardian with chat rights while still a
/// guardian of the patient, the practitioner while an active member of the organisation, support
/// staff while active staff somewhere (outside staff also need consent, checked apart).
/// `guardians` holds guardian links (of the patient, or the user's own); `memberships` are the
/// user's.
pub fn is_participant(
    appointment: &Appointment,
    user: UserId,
    mut support: impl Iterator<Item = UserId>,
    guardians: &[Guardian],
    memberships: &[Membership],
) -> bool {
    let guardian = guardians
        .iter()
        .find(|g| g.patient_id == appointment.patient_id && g.user_id == user);
    let active_here = memberships
        .iter()
        .any(|m| m.active && m.user_id == user && m.org_id == appointment.org_id);
    let active_anywhere = memberships.iter().any(|m| m.active && m.user_id == user);
    (appointment.client_id == user && guardian.is_some())
        || guardian.is_some_and(Guardian::may_chat)
        || (appointment.practitioner_id == user && active_here)
        || (support.any(|s| s == user) && active_anywhere)
}

/// Whether someone takes part in an appointment only as support staff from outside its
/// organisation (not its client, a guardian, its practitioner, or active staff there).
pub fn outside_support(
    appointment: &Appointment,
    user: UserId,
    guardians: &[Guardian],
    memberships: &[Membership],
) -> bool {
    appointment.client_id != user
        && appointment.practitioner_id != user
        && !guardians
            .iter()
            .any(|g| g.patient_id == appointment.patient_id && g.user_id == user)
        && !memberships
            .iter()
            .any(|m| m.active && m.user_id == user && m.org_id == appointment.org_id)
}

/// Whether the patient's consent of `scope` covers one of the organisations the holder of
/// `memberships` is active in now (an expired or revoked consent covers nothing).
pub async fn consent_covers(
    db: &impl db::Source,
    appointment: &Appointment,
    memberships: &[Membership],
    scope: ConsentScope,
    now: DateTime<Utc>,
) -> AppResult<bool> {
    let Some(patient) = db::patients::find(db, appointment.patient_id).await? else {
        return Ok(false);
    };
    for m in memberships.iter().filter(|m| m.active) {
        if consent::require(db, &patient, m.org_id, scope, now)
            .await
            .is_ok()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn participant(user: &User, appointment: &Appointment) -> Participant {
    Participant {
        id: user.id.to_string(),
        name: user.display_name.clone(),
        email: user.email.clone(),
        avatar: user.avatar_url.clone(),
        moderator: appointment.practitioner_id == user.id,
    }
}
