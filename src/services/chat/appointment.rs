//! Appointment chats: create-or-get, who takes part, the window an appointment gives its chat,
//! and how the chat follows its appointment (cancellation, moves, staff changes).

use sea_orm::DatabaseTransaction;
use serde_json::json;

use super::{AfterCommit, ChatService, base_metadata, channel_of, status_metadata};
use crate::domain::care::ConsentScope;
use crate::services::appointments::{consent_covers, outside_support};
use crate::{
    auth::Viewer,
    db,
    domain::{
        AppointmentId, User, UserId,
        chat::{
            self, ChatCategory, ChatRole, ChatSession, ChatStatus, SessionKey, StatusReason,
            status_at,
        },
    },
    error::{AppError, AppResult},
    events::{DomainEvent, StatusEvent},
    outbox::{Entry, Operation},
    providers::chat::CHANNEL_TYPE,
};

impl ChatService {
    /// Who takes part in an appointment's chat now (as `c` sees it): the client while a guardian
    /// and guardians with chat rights, the practitioner and support staff (outside ones while
    /// consented).
    pub(super) async fn appointment_members(
        &self,
        c: &impl db::Source,
        appointment: &crate::domain::care::Appointment,
    ) -> AppResult<Vec<(UserId, ChatRole)>> {
        let guardians = db::patients::guardians_of(c, &[appointment.patient_id]).await?;
        let support = db::appointments::support_staff_of(c, &[appointment.id]).await?;
        let mut members: Vec<(UserId, ChatRole)> = Vec::new();
        // The client while still a guardian; other guardians while they have chat rights.
        if guardians.iter().any(|g| g.user_id == appointment.client_id) {
            members.push((appointment.client_id, ChatRole::Client));
        }
        for g in guardians.iter().filter(|g| g.may_chat()) {
            if !members.iter().any(|(u, _)| *u == g.user_id) {
                members.push((g.user_id, ChatRole::Client));
            }
        }
        for u in std::iter::once(appointment.practitioner_id).chain(support.iter().map(|(_, u)| *u))
        {
            if !members.iter().any(|(m, _)| *m == u) && self.may_join(c, appointment, u).await? {
                members.push((u, ChatRole::Staff));
            }
        }
        Ok(members)
    }

    /// Whether a staff participant may be in the appointment's chat: anyone but support staff
    /// from outside, and those only while the patient's MESSAGING consent covers them.
    async fn may_join(
        &self,
        c: &impl db::Source,
        appointment: &crate::domain::care::Appointment,
        user: UserId,
    ) -> AppResult<bool> {
        let memberships = db::organizations::memberships_of_users(c, &[user]).await?;
        // The practitioner takes part while active in the organisation (as the read rule says).
        if user == appointment.practitioner_id {
            return Ok(memberships
                .iter()
                .any(|m| m.active && m.org_id == appointment.org_id));
        }
        if !outside_support(appointment, user, &[], &memberships) {
            return Ok(true);
        }
        consent_covers(
            c,
            appointment,
            &memberships,
            ConsentScope::Messaging,
            self.clock.now(),
        )
        .await
    }

    /// Opens (creates or gets) an appointment's chat: its client and guardians with chat rights,
    /// practitioner and support staff, or an OWNER/ADMIN of the organisation may.
    pub async fn open_appointment_chat(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
    ) -> AppResult<ChatSession> {
        let (appointment, reader) =
            crate::services::appointments::read(&self.db, self.clock.now(), viewer, id).await?;
        let me = viewer.user()?.clone();
        if !reader.participant {
            let membership =
                db::organizations::find_membership(&self.db, appointment.org_id, me.id).await?;
            if !membership.is_some_and(|m| m.active && m.role.manages_organization()) {
                return Err(AppError::Forbidden(
                    "only the appointment's participants or an organization admin open its chat"
                        .into(),
                ));
            }
        }
        let key = SessionKey::Appointment(id);
        if let Some(existing) = db::chat_sessions::find_by_key(&self.db, &key).await? {
            return self.ready(existing).await;
        }
        if appointment.status.is_terminal() {
            return Err(AppError::ChatNotOpen(format!(
                "the appointment is {}",
                appointment.status.as_str()
            )));
        }
        let mut members = self.appointment_members(&self.db, &appointment).await?;
        // An admin who opens the chat takes part in it.
        if !members.iter().any(|(m, _)| *m == me.id) {
            members.push((me.id, ChatRole::Staff));
        }
        let users = db::users::find_many(
            &self.db,
            &members.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        )
        .await?;
        let patient = db::patients::find(&self.db, appointment.patient_id)
            .await?
            .ok_or(AppError::NotFound("patient"))?;
        let client = users.iter().find(|u| u.id == appointment.client_id);
        let (activation, from, until) = self.window_of(&self.db, &appointment).await?;
        let now = self.clock.now();
        let status = status_at(false, Some(from), Some(until), now);
        let session = ChatSession {
            appointment_id: Some(id),
            allowed_from: Some(from),
            allowed_until: Some(until),
            status,
            ..ChatSession::new_open(
                appointment.org_id,
                ChatCategory::Client,
                CHANNEL_TYPE,
                chat::channel_id("appointment", &id.to_string()),
                Some(format!("Appointment: {}", patient.name)),
                me.id,
                now,
            )
        };
        let mut metadata = base_metadata(&session);
        metadata.insert("appointmentId".into(), json!(id.to_string()));
        metadata.insert("activationMinutes".into(), json!(activation));
        if patient.species.is_some() {
            metadata.insert("petName".into(), json!(patient.name));
            metadata.insert(
                "petOwnerName".into(),
                json!(client.map(|c| c.display_name.clone())),
            );
        } else {
            metadata.insert("patientName".into(), json!(patient.name));
        }
        let mut chat_users: Vec<User> = users;
        if !chat_users.iter().any(|u| u.id == me.id) {
            chat_users.push(me.clone());
        }
        self.create(session, &key, &members, metadata, &chat_users, &me)
            .await
    }

    /// The window an appointment gives its chat, and the activation minutes that made it: the
    /// appointment's own, else its organisation's, else the deployment's default.
    pub async fn window_of(
        &self,
        c: &impl db::Source,
        a: &crate::domain::care::Appointment,
    ) -> AppResult<(
        i64,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> {
        let activation = match a.activation_minutes {
            Some(m) => i64::from(m),
            None => db::organizations::find(c, a.org_id)
                .await?
                .and_then(|o| o.chat_activation_minutes)
                .map_or(self.default_activation_minutes, i64::from),
        };
        Ok((
            activation,
            a.starts_at - chrono::Duration::minutes(activation),
            a.ends_at + self.after_end,
        ))
    }

    /// Owes the news of a cancellation or a move of an appointment whose chat is not open yet.
    async fn owe_unopened(
        &self,
        c: &impl db::Source,
        fx: &mut AfterCommit,
        before: &crate::domain::care::Appointment,
        a: &crate::domain::care::Appointment,
    ) -> AppResult<()> {
        let cancelled = a.status == crate::domain::care::AppointmentStatus::Cancelled
            && before.status != a.status;
        let moved = before.starts_at != a.starts_at || before.ends_at != a.ends_at;
        if !cancelled && !moved {
            return Ok(());
        }
        let (_, from, until) = self.window_of(c, a).await?;
        let now = self.clock.now();
        let (status, reason) = if cancelled {
            (ChatStatus::Closed, StatusReason::AppointmentCancelled)
        } else {
            (
                status_at(false, Some(from), Some(until), now),
                StatusReason::Rescheduled,
            )
        };
        fx.publish(DomainEvent::ChatStatus(StatusEvent {
            session_id: None,
            appointment_id: Some(a.id),
            status,
            reason,
            allowed_from: Some(from),
            allowed_until: Some(until),
            at: now,
        }));
        Ok(())
    }

    /// The chat side of an appointment's change, in the change's transaction `txn`: a
    /// cancelled appointment closes its chat; a moved one moves the chat's window (a chat closed
    /// by a person stays closed), refreezing or unfreezing the channel as the window says; new
    /// staff join and replaced staff leave (an admin who opened it stays).
    pub async fn appointment_changed(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        before: &crate::domain::care::Appointment,
        a: &crate::domain::care::Appointment,
    ) -> AppResult<()> {
        let Some(session) =
            db::chat_sessions::find_by_key(txn, &SessionKey::Appointment(a.id)).await?
        else {
            // No chat yet: those following the appointment hear of the window it will have.
            return self.owe_unopened(txn, fx, before, a).await;
        };
        if session.closed_at.is_some() {
            return Ok(());
        }
        if a.status == crate::domain::care::AppointmentStatus::Cancelled {
            self.close_in(txn, fx, &session, None, StatusReason::AppointmentCancelled)
                .await?;
            return Ok(());
        }
        let wanted = self.appointment_members(txn, a).await?;
        let creator_manages = db::organizations::find_membership(txn, a.org_id, session.created_by)
            .await?
            .is_some_and(|m| m.active && m.role.manages_organization());
        self.sync_members_in(
            txn,
            fx,
            &session,
            &wanted,
            creator_manages.then_some(session.created_by),
        )
        .await?;
        let (_, from, until) = self.window_of(txn, a).await?;
        if session.allowed_from == Some(from) && session.allowed_until == Some(until) {
            return Ok(());
        }
        let now = self.clock.now();
        let status = status_at(false, Some(from), Some(until), now);
        let moved = ChatSession {
            allowed_from: Some(from),
            allowed_until: Some(until),
            status,
            ..session.clone()
        };
        if status == ChatStatus::Closed {
            db::chat_sessions::set_window(txn, session.id, from, until, session.status, now)
                .await?;
            self.close_in(txn, fx, &moved, None, StatusReason::WindowEnded)
                .await?;
            return Ok(());
        }
        let channel = channel_of(&session);
        let org = Some(session.org_id.to_string());
        let stamp = uuid::Uuid::now_v7().simple();
        let mut entries = vec![Entry::new(
            format!("chat:{}:window:{stamp}:metadata", session.id),
            org.clone(),
            Operation::UpdateMetadata {
                channel: channel.clone(),
                set: status_metadata(status),
                unset: Vec::new(),
            },
        )];
        if status != session.status {
            entries.push(Entry::new(
                format!("chat:{}:window:{stamp}:freeze", session.id),
                org,
                Operation::SetFrozen {
                    channel,
                    frozen: status != ChatStatus::Active,
                },
            ));
        }
        if db::chat_sessions::set_window(txn, session.id, from, until, status, now).await? {
            fx.deliver(crate::outbox::enqueue(txn, &entries, now).await?);
            self.owe_status(fx, &moved, status, StatusReason::Rescheduled);
        }
        Ok(())
    }
}
