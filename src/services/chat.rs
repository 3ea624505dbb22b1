//! Chat sessions. This part covers appointment chats (create-or-get, a window from
//! `startsAt - activationMinutes` to `endsAt + 120 min`), tokens, closing, lists,
//! `sendChatMessage` on the local provider, and the scheduler that opens and ends windows. Every
//! provider side effect goes through the outbox.

use std::{sync::Arc, time::Duration};

use serde_json::{Map, Value, json};

use super::{access::member_of, appointments::AppointmentService};
use crate::{
    auth::{Viewer, rate_limit::KeyedLimit},
    clock::SharedClock,
    db,
    domain::{
        AppointmentId, OrgId, User, UserId,
        chat::{self, ChatCategory, ChatRole, ChatSession, ChatStatus, StatusReason, status_at},
        pagination::{Page, PageRequest},
    },
    error::{AppError, AppResult},
    events::{ChangeKind, DomainEvent, EventBus, SessionChange, StatusEvent},
    outbox::{Entry, Operation, Outbox},
    providers::chat::{
        ChannelRef, ChannelSpec, ChatCredentials, ChatMessage, ChatStack, ChatUser, SystemMessage,
    },
};

/// The channel type of every caregraph channel.
pub const CHANNEL_TYPE: &str = "messaging";

/// Chat sessions.
#[derive(Clone)]
pub struct ChatService {
    db: sea_orm::DatabaseConnection,
    outbox: Outbox,
    chat: ChatStack,
    clock: SharedClock,
    appointments: AppointmentService,
    events: EventBus,
    token_limit: Arc<KeyedLimit<UserId>>,
    token_ttl: Duration,
    default_activation_minutes: i64,
    after_end: chrono::Duration,
}

/// What a status subscription watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    /// A session.
    Session(String),
    /// An appointment's chat, whether or not it is open yet.
    Appointment(AppointmentId),
}

impl Watch {
    /// Whether a status event is about what is watched.
    pub fn matches(&self, event: &StatusEvent) -> bool {
        match self {
            Self::Session(id) => event.session_id.as_deref() == Some(id.as_str()),
            Self::Appointment(id) => event.appointment_id == Some(*id),
        }
    }
}

/// Input of `createGroupChat`.
#[derive(Clone, Debug)]
pub struct GroupInput {
    /// Title.
    pub title: String,
    /// Members besides the creator.
    pub member_ids: Vec<UserId>,
    /// Broadcast mode.
    pub read_only: bool,
    /// Image.
    pub image_url: Option<String>,
    /// The channel id to use (else the slug of the title).
    pub channel_id: Option<String>,
}

/// Input of `updateGroupChat`: `None` leaves a field.
#[derive(Clone, Debug, Default)]
pub struct GroupChange {
    /// Title.
    pub title: Option<String>,
    /// Image (`Some(None)` clears it).
    pub image_url: Option<Option<String>>,
    /// Broadcast mode.
    pub read_only: Option<bool>,
}

/// Settings of chat sessions.
#[derive(Clone, Copy, Debug)]
pub struct ChatSettings {
    /// Lifetime of chat tokens.
    pub token_ttl: Duration,
    /// Tokens per user per minute.
    pub tokens_per_minute: u32,
    /// Minutes before the start that an appointment chat opens (when the appointment says none).
    pub default_activation_minutes: i64,
    /// Minutes after the end that an appointment chat stays open.
    pub after_end_minutes: i64,
}

fn chat_user(u: &User) -> ChatUser {
    ChatUser {
        id: u.id.to_string(),
        name: u.display_name.clone(),
        image: u.avatar_url.clone(),
    }
}

/// Who may read a session: its members, and the active OWNER/ADMIN of its organisation (given
/// whether the viewer is a member and the viewer's memberships).
pub fn may_read(
    session: &ChatSession,
    is_member: bool,
    memberships: &[crate::domain::Membership],
) -> bool {
    is_member
        || memberships
            .iter()
            .any(|m| m.org_id == session.org_id && m.active && m.role.manages_organization())
}

/// The channel of a session.
pub fn channel_of(s: &ChatSession) -> ChannelRef {
    ChannelRef {
        channel_type: s.channel_type.clone(),
        channel_id: s.channel_id.clone(),
    }
}

/// The channel metadata every session carries: status, category, organisations, group flag.
fn base_metadata(session: &ChatSession) -> Map<String, Value> {
    let mut metadata = status_metadata(session.status);
    metadata.insert(
        "chatCategory".into(),
        json!(session.category.metadata_value()),
    );
    metadata.insert("orgId".into(), json!(session.org_id.to_string()));
    let orgs: Vec<String> = std::iter::once(session.org_id)
        .chain(session.counterpart_org_id)
        .map(|o| o.to_string())
        .collect();
    metadata.insert("organisationIds".into(), json!(orgs));
    metadata.insert("isGroup".into(), json!(session.is_group));
    metadata
}

fn status_metadata(status: ChatStatus) -> Map<String, Value> {
    let mut set = Map::new();
    set.insert(
        "status".into(),
        json!(if status == ChatStatus::Closed {
            "ended"
        } else {
            "active"
        }),
    );
    set.insert("frozen".into(), json!(status != ChatStatus::Active));
    set
}

impl ChatService {
    /// Builds the service.
    pub fn new(
        db: sea_orm::DatabaseConnection,
        outbox: Outbox,
        chat: ChatStack,
        clock: SharedClock,
        appointments: AppointmentService,
        events: EventBus,
        settings: ChatSettings,
    ) -> Self {
        Self {
            db,
            outbox,
            chat,
            clock,
            appointments,
            events,
            token_limit: Arc::new(KeyedLimit::per_minute(settings.tokens_per_minute)),
            token_ttl: settings.token_ttl,
            default_activation_minutes: settings.default_activation_minutes,
            after_end: chrono::Duration::minutes(settings.after_end_minutes),
        }
    }

    /// Announces a session's new status (after the change committed).
    fn announce_status(&self, session: &ChatSession, status: ChatStatus, reason: StatusReason) {
        self.events.publish(DomainEvent::ChatStatus(StatusEvent::of(
            session,
            status,
            reason,
            self.clock.now(),
        )));
    }

    /// Announces a change for session lists, to the members after it and to `also` (those who
    /// just left). A failure to read the members is logged: the change itself has committed.
    async fn announce_change(
        &self,
        session: &ChatSession,
        kind: ChangeKind,
        last_message: Option<ChatMessage>,
        also: &[UserId],
    ) {
        let mut member_ids: Vec<UserId> = match db::chat_sessions::members_of(
            &self.db,
            std::slice::from_ref(&session.id),
        )
        .await
        {
            Ok(members) => members.into_iter().map(|(_, u, _)| u).collect(),
            Err(e) => {
                e.log_cause();
                return;
            }
        };
        member_ids.extend(
            also.iter()
                .filter(|u| !member_ids.contains(u))
                .collect::<Vec<_>>(),
        );
        self.publish_change(session, kind, last_message, member_ids);
    }

    fn publish_change(
        &self,
        session: &ChatSession,
        kind: ChangeKind,
        last_message: Option<ChatMessage>,
        member_ids: Vec<UserId>,
    ) {
        self.events.publish(DomainEvent::ChatChanged(SessionChange {
            session_id: session.id.clone(),
            org_ids: std::iter::once(session.org_id)
                .chain(session.counterpart_org_id)
                .collect(),
            member_ids,
            kind,
            last_message,
            at: self.clock.now(),
        }));
    }

    /// The provider's name.
    pub fn provider_name(&self) -> &'static str {
        self.chat.provider.name()
    }

    /// The Ethora room JID of a session's channel (`None` elsewhere).
    pub fn room_jid(&self, s: &ChatSession) -> Option<String> {
        self.chat.provider.room_jid(&channel_of(s))
    }

    /// A session's status now (the window decides between scheduler ticks).
    pub fn status_now(&self, s: &ChatSession) -> ChatStatus {
        status_at(
            s.closed_at.is_some(),
            s.allowed_from,
            s.allowed_until,
            self.clock.now(),
        )
    }

    /// Who takes part in an appointment's chat: the client and guardians with chat rights, the
    /// practitioner and support staff.
    async fn appointment_members(
        &self,
        appointment: &crate::domain::care::Appointment,
    ) -> AppResult<Vec<(UserId, ChatRole)>> {
        let guardians = db::patients::guardians_of(&self.db, &[appointment.patient_id]).await?;
        let support = db::appointments::support_staff_of(&self.db, &[appointment.id]).await?;
        let mut members: Vec<(UserId, ChatRole)> = vec![(appointment.client_id, ChatRole::Client)];
        for g in guardians.iter().filter(|g| g.may_chat()) {
            if !members.iter().any(|(u, _)| *u == g.user_id) {
                members.push((g.user_id, ChatRole::Client));
            }
        }
        for u in std::iter::once(appointment.practitioner_id).chain(support.iter().map(|(_, u)| *u))
        {
            if !members.iter().any(|(m, _)| *m == u) {
                members.push((u, ChatRole::Staff));
            }
        }
        Ok(members)
    }

    /// Opens (creates or gets) an appointment's chat: its client and guardians with chat rights,
    /// practitioner and support staff, or an OWNER/ADMIN of the organisation may.
    pub async fn open_appointment_chat(
        &self,
        viewer: &Viewer,
        id: AppointmentId,
    ) -> AppResult<ChatSession> {
        let (appointment, reader) = self.appointments.read(viewer, id).await?;
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
        let key = format!("appointment:{id}");
        if let Some(existing) = db::chat_sessions::find_by_key(&self.db, &key).await? {
            return Ok(existing);
        }
        if appointment.status.is_terminal() {
            return Err(AppError::ChatNotOpen(format!(
                "the appointment is {}",
                appointment.status.as_str()
            )));
        }
        let mut members = self.appointment_members(&appointment).await?;
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
        let (activation, from, until) = self.window_of(&appointment).await?;
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

    /// Creates a session with its provider channel (create-or-get on `key`: a concurrent twin
    /// returns the winner's session), delivering the channel before it returns when it can.
    async fn create(
        &self,
        session: ChatSession,
        key: &str,
        members: &[(UserId, ChatRole)],
        metadata: Map<String, Value>,
        users: &[User],
        me: &User,
    ) -> AppResult<ChatSession> {
        let now = session.created_at;
        let spec = ChannelSpec {
            channel: channel_of(&session),
            created_by: me.id.to_string(),
            members: members.iter().map(|(u, _)| u.to_string()).collect(),
            name: session.title.clone(),
            image: session.image_url.clone(),
            metadata,
            frozen: session.status != ChatStatus::Active,
        };
        let create = Entry::new(
            format!("chat:{}:create", session.id),
            Some(session.org_id.to_string()),
            Operation::CreateChannel {
                spec,
                users: users.iter().map(chat_user).collect(),
            },
        );
        let txn = db::begin(&self.db).await?;
        match db::chat_sessions::insert(&txn, &session, key, members).await {
            Ok(()) => {}
            // A concurrent open won the natural key: its session is the one.
            Err(AppError::Conflict(_)) => {
                drop(txn);
                return db::chat_sessions::find_by_key(&self.db, key)
                    .await?
                    .ok_or(AppError::NotFound("chat session"));
            }
            Err(e) => return Err(e),
        }
        let keys = crate::outbox::enqueue(&txn, &[create], now).await?;
        txn.commit().await?;
        self.publish_change(
            &session,
            ChangeKind::Created,
            None,
            members.iter().map(|(u, _)| *u).collect(),
        );
        // Those following an appointment learn its chat's id (and state) as it is created.
        if session.appointment_id.is_some() {
            self.announce_status(&session, session.status, StatusReason::Current);
        }
        // The client is about to open the channel: deliver now (the worker retries if down).
        self.outbox.deliver_now(&keys).await?;
        Ok(session)
    }

    /// Opens (creates or gets) the 1:1 chat of two active members of an organisation.
    pub async fn open_direct_chat(
        &self,
        viewer: &Viewer,
        org: OrgId,
        colleague: UserId,
    ) -> AppResult<ChatSession> {
        let (me, _) = member_of(&self.db, viewer, org)
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::Forbidden(
                    "only active members of the organization open colleague chats".into(),
                ),
                other => other,
            })?;
        if colleague == me.id {
            return Err(AppError::bad_input(
                "colleagueId",
                "a chat needs someone else",
            ));
        }
        match db::organizations::find_membership(&self.db, org, colleague).await? {
            Some(m) if m.active => {}
            _ => {
                return Err(AppError::bad_input(
                    "colleagueId",
                    "not an active member of the organization",
                ));
            }
        }
        self.direct(org, None, &me, colleague).await
    }

    /// Opens (creates or gets) a 1:1 chat across two organisations that both allow network
    /// messaging; it shows in both organisations' lists.
    pub async fn open_network_direct_chat(
        &self,
        viewer: &Viewer,
        org: OrgId,
        colleague: UserId,
        colleague_org: OrgId,
    ) -> AppResult<ChatSession> {
        let (me, _) = member_of(&self.db, viewer, org).await?;
        if colleague == me.id {
            return Err(AppError::bad_input(
                "colleagueId",
                "a chat needs someone else",
            ));
        }
        match db::organizations::find_membership(&self.db, colleague_org, colleague).await? {
            Some(m) if m.active => {}
            _ => {
                return Err(AppError::bad_input(
                    "colleagueId",
                    "not an active member of that organization",
                ));
            }
        }
        for o in [org, colleague_org] {
            let allowed = db::organizations::find(&self.db, o)
                .await?
                .is_some_and(|x| x.cross_org_messaging);
            if !allowed {
                return Err(AppError::Forbidden(
                    "both organizations must allow network messaging (crossOrgMessaging)".into(),
                ));
            }
        }
        let counterpart = (colleague_org != org).then_some(colleague_org);
        self.direct(org, counterpart, &me, colleague).await
    }

    /// Creates (or gets, by channel id or the slug of the title) a group: the creator owns it and
    /// every member is active in the organisation; at least two members in all.
    pub async fn create_group(
        &self,
        viewer: &Viewer,
        org: OrgId,
        input: GroupInput,
    ) -> AppResult<ChatSession> {
        let (me, _) = member_of(&self.db, viewer, org).await?;
        let title = crate::domain::people::required_text(&input.title, "input.title", 200)?;
        let slug = match input.channel_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => {
                let valid = id.len() <= 48
                    && id.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if !valid {
                    return Err(AppError::bad_input(
                        "input.channelId",
                        "1 to 48 characters of a-z, 0-9, '-' and '_'",
                    ));
                }
                id.to_owned()
            }
            _ => super::accounts::slugify(&title),
        };
        if slug.is_empty() {
            return Err(AppError::bad_input(
                "input.title",
                "the title needs letters or digits (or give a channelId)",
            ));
        }
        let mut members: Vec<(UserId, ChatRole)> = vec![(me.id, ChatRole::Owner)];
        for (i, u) in input.member_ids.iter().enumerate() {
            if members.iter().any(|(m, _)| m == u) {
                continue;
            }
            match db::organizations::find_membership(&self.db, org, *u).await? {
                Some(m) if m.active => members.push((*u, ChatRole::Staff)),
                _ => {
                    return Err(AppError::bad_input(
                        format!("input.memberIds.{i}"),
                        "not an active member of the organization",
                    ));
                }
            }
        }
        if members.len() < 2 {
            return Err(AppError::bad_input(
                "input.memberIds",
                "a group has at least 2 members",
            ));
        }
        let key = format!("group:{org}:{slug}");
        if let Some(existing) = db::chat_sessions::find_by_key(&self.db, &key).await? {
            return Ok(existing);
        }
        let image = crate::domain::people::optional_text(
            input.image_url.as_deref(),
            "input.imageUrl",
            2048,
        )?;
        let users = db::users::find_many(
            &self.db,
            &members.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        )
        .await?;
        let now = self.clock.now();
        let session = ChatSession {
            read_only: input.read_only,
            image_url: image,
            ..ChatSession::new_open(
                org,
                ChatCategory::Group,
                CHANNEL_TYPE,
                chat::channel_id("group", &format!("{}-{slug}", &org.to_string()[..8])),
                Some(title),
                me.id,
                now,
            )
        };
        let mut metadata = base_metadata(&session);
        metadata.insert("readOnly".into(), json!(input.read_only));
        self.create(session, &key, &members, metadata, &users, &me)
            .await
    }

    /// A group the viewer may manage: its owner or an OWNER/ADMIN of the organisation.
    async fn managed_group(&self, viewer: &Viewer, id: &str) -> AppResult<ChatSession> {
        let (session, role) = self.session(viewer, id).await?;
        if !session.is_group {
            return Err(AppError::NotFound("group chat"));
        }
        let me = viewer.user()?;
        let admin = db::organizations::find_membership(&self.db, session.org_id, me.id)
            .await?
            .is_some_and(|m| m.active && m.role.manages_organization());
        if role != Some(ChatRole::Owner) && !admin {
            return Err(AppError::Forbidden(
                "only the group's owner or an organization admin may".into(),
            ));
        }
        Ok(session)
    }

    /// Changes a group's title, image or broadcast mode.
    pub async fn update_group(
        &self,
        viewer: &Viewer,
        id: &str,
        change: GroupChange,
    ) -> AppResult<ChatSession> {
        let session = self.managed_group(viewer, id).await?;
        if session.closed_at.is_some() {
            return Err(AppError::ChatNotOpen("the group is closed".into()));
        }
        let title = match change.title {
            Some(t) => Some(crate::domain::people::required_text(
                &t,
                "input.title",
                200,
            )?),
            None => session.title.clone(),
        };
        let image = match change.image_url {
            Some(i) => crate::domain::people::optional_text(i.as_deref(), "input.imageUrl", 2048)?,
            None => session.image_url.clone(),
        };
        let read_only = change.read_only.unwrap_or(session.read_only);
        let now = self.clock.now();
        let mut set = Map::new();
        set.insert("name".into(), json!(title));
        set.insert("image".into(), json!(image));
        set.insert("readOnly".into(), json!(read_only));
        let entry = Entry::new(
            format!(
                "chat:{}:update:{}",
                session.id,
                uuid::Uuid::now_v7().simple()
            ),
            Some(session.org_id.to_string()),
            Operation::UpdateMetadata {
                channel: channel_of(&session),
                set,
                unset: Vec::new(),
            },
        );
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::update_group(&txn, &session.id, title, image, read_only, now).await?;
        crate::outbox::enqueue(&txn, &[entry], now).await?;
        txn.commit().await?;
        self.outbox.wake();
        let updated = db::chat_sessions::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("group chat"))?;
        self.announce_change(&updated, ChangeKind::Updated, None, &[])
            .await;
        Ok(updated)
    }

    /// Adds and removes group members: new ones active in the organisation, never the owner
    /// removed, at least two left; a system message says who changed what.
    pub async fn update_group_members(
        &self,
        viewer: &Viewer,
        id: &str,
        add: &[UserId],
        remove: &[UserId],
    ) -> AppResult<ChatSession> {
        let session = self.managed_group(viewer, id).await?;
        if session.closed_at.is_some() {
            return Err(AppError::ChatNotOpen("the group is closed".into()));
        }
        let current =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id)).await?;
        if remove.iter().any(|u| {
            current
                .iter()
                .any(|(_, m, r)| m == u && *r == ChatRole::Owner)
        }) {
            return Err(AppError::bad_input("remove", "the owner cannot be removed"));
        }
        for (i, u) in add.iter().enumerate() {
            match db::organizations::find_membership(&self.db, session.org_id, *u).await? {
                Some(m) if m.active => {}
                _ => {
                    return Err(AppError::bad_input(
                        format!("add.{i}"),
                        "not an active member of the organization",
                    ));
                }
            }
        }
        let after: Vec<UserId> = current
            .iter()
            .map(|(_, u, _)| *u)
            .chain(add.iter().copied())
            .filter(|u| !remove.contains(u))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if after.len() < 2 {
            return Err(AppError::bad_input(
                "remove",
                "a group keeps at least 2 members",
            ));
        }
        let added: Vec<UserId> = add
            .iter()
            .copied()
            .filter(|u| !current.iter().any(|(_, m, _)| m == u))
            .collect();
        let removed: Vec<UserId> = remove
            .iter()
            .copied()
            .filter(|u| current.iter().any(|(_, m, _)| m == u))
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(session);
        }
        let me = viewer.user()?;
        let names = db::users::find_many(
            &self.db,
            &added
                .iter()
                .chain(removed.iter())
                .copied()
                .collect::<Vec<_>>(),
        )
        .await?;
        let name = |u: &UserId| {
            names
                .iter()
                .find(|n| n.id == *u)
                .map_or_else(|| u.to_string(), |n| n.display_name.clone())
        };
        let text = |verb: &str, who: &[UserId]| {
            let list: Vec<String> = who.iter().map(name).collect();
            format!("{} {verb} {}.", me.display_name, list.join(", "))
        };
        let notes = [
            (!added.is_empty()).then(|| text("added", &added)),
            (!removed.is_empty()).then(|| text("removed", &removed)),
        ];
        let new_rows: Vec<(UserId, ChatRole)> =
            added.iter().map(|u| (*u, ChatRole::Staff)).collect();
        self.change_members(&session, &new_rows, &removed, &names, notes)
            .await?;
        self.outbox.wake();
        Ok(session)
    }

    /// Brings a room's members to `wanted`: missing ones join, others leave (except `keep`),
    /// recorded here and delivered to the provider now.
    async fn sync_members(
        &self,
        session: &ChatSession,
        wanted: &[(UserId, ChatRole)],
        keep: Option<UserId>,
    ) -> AppResult<()> {
        let current =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id)).await?;
        let added: Vec<(UserId, ChatRole)> = wanted
            .iter()
            .filter(|(u, _)| !current.iter().any(|(_, m, _)| m == u))
            .copied()
            .collect();
        let removed: Vec<UserId> = current
            .iter()
            .map(|(_, u, _)| *u)
            .filter(|u| Some(*u) != keep && !wanted.iter().any(|(w, _)| w == u))
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let users =
            db::users::find_many(&self.db, &added.iter().map(|(u, _)| *u).collect::<Vec<_>>())
                .await?;
        let keys = self
            .change_members(session, &added, &removed, &users, [None, None])
            .await?;
        self.outbox.deliver_now(&keys).await?;
        Ok(())
    }

    /// Records a membership change here and queues it for the provider in one transaction;
    /// `users` holds at least the added members, `notes` the optional system messages for
    /// the addition and the removal. Returns the outbox keys to deliver.
    async fn change_members(
        &self,
        session: &ChatSession,
        added: &[(UserId, ChatRole)],
        removed: &[UserId],
        users: &[User],
        notes: [Option<String>; 2],
    ) -> AppResult<Vec<String>> {
        let now = self.clock.now();
        // Unique per change (two changes in one clock tick stay two).
        let stamp = uuid::Uuid::now_v7().simple();
        let channel = channel_of(session);
        let org = Some(session.org_id.to_string());
        let [add_note, remove_note] = notes;
        let message = |what: &str, text: Option<String>| {
            text.map(|text| SystemMessage {
                id: format!("members-{}-{stamp}-{what}", session.id),
                text,
            })
        };
        let mut entries = Vec::new();
        if !added.is_empty() {
            entries.push(Entry::new(
                format!("chat:{}:members:{stamp}:add", session.id),
                org.clone(),
                Operation::AddMembers {
                    channel: channel.clone(),
                    users: users
                        .iter()
                        .filter(|u| added.iter().any(|(a, _)| *a == u.id))
                        .map(chat_user)
                        .collect(),
                    message: message("add", add_note),
                },
            ));
        }
        if !removed.is_empty() {
            entries.push(Entry::new(
                format!("chat:{}:members:{stamp}:remove", session.id),
                org,
                Operation::RemoveMembers {
                    channel,
                    user_ids: removed.iter().map(UserId::to_string).collect(),
                    message: message("remove", remove_note),
                },
            ));
        }
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::add_members(&txn, &session.id, added, now).await?;
        db::chat_sessions::remove_members(&txn, &session.id, removed).await?;
        let keys = crate::outbox::enqueue(&txn, &entries, now).await?;
        txn.commit().await?;
        self.announce_change(session, ChangeKind::MembersChanged, None, removed)
            .await;
        Ok(keys)
    }

    /// Deletes users at the chat provider in bulk, for a retention policy (an OWNER/ADMIN of
    /// `org_id`). Each user must be known to the organisation (a membership, or a place in one
    /// of its chats) and active nowhere: no active membership in any organisation and no
    /// guardian link, so nobody still at work loses their chats. They leave every session here
    /// too. Returns how many were queued for deletion.
    pub async fn delete_chat_users(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        user_ids: &[UserId],
    ) -> AppResult<usize> {
        let (me, _) = super::access::manager_of(&self.db, viewer, org_id).await?;
        let mut ids: Vec<UserId> = Vec::new();
        for id in user_ids {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
        if ids.is_empty() || ids.len() > 100 {
            return Err(AppError::bad_input("userIds", "give 1 to 100 users"));
        }
        if ids.contains(&me.id) {
            return Err(AppError::bad_input(
                "userIds",
                "you cannot delete your own chat user",
            ));
        }
        let memberships = db::organizations::memberships_of_users(&self.db, &ids).await?;
        let guardianships = db::patients::guardianships_of(&self.db, &ids).await?;
        let in_chats = db::chat_sessions::users_in_org_sessions(&self.db, org_id, &ids).await?;
        for id in &ids {
            let mine = memberships.iter().filter(|m| m.user_id == *id);
            let known = in_chats.contains(id) || mine.clone().any(|m| m.org_id == org_id);
            if !known {
                return Err(AppError::bad_input(
                    "userIds",
                    format!("{id} is not a user of this organization"),
                ));
            }
            if mine.clone().any(|m| m.active) || guardianships.iter().any(|g| g.user_id == *id) {
                return Err(AppError::bad_input(
                    "userIds",
                    format!("{id} is still active (a member or a guardian); deactivate them first"),
                ));
            }
        }
        let now = self.clock.now();
        let mut sorted: Vec<String> = ids.iter().map(UserId::to_string).collect();
        sorted.sort();
        // Deleting users already gone is harmless at every provider, so each call is its own
        // operation (a later deletion of the same set is never mistaken for a retry).
        let entry = Entry::new(
            format!("users:delete:{}", uuid::Uuid::now_v7().simple()),
            None,
            Operation::DeleteUsers { user_ids: sorted },
        );
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::remove_users_everywhere(&txn, &ids).await?;
        let keys = crate::outbox::enqueue(&txn, &[entry], now).await?;
        txn.commit().await?;
        tracing::info!(org = %org_id, users = ids.len(), by = %me.id, "chat users queued for deletion");
        self.outbox.deliver_now(&keys).await?;
        Ok(ids.len())
    }

    /// Deletes a group here and at the provider; it is NOT_FOUND afterwards.
    pub async fn delete_group(&self, viewer: &Viewer, id: &str) -> AppResult<()> {
        let session = self.managed_group(viewer, id).await?;
        let now = self.clock.now();
        let entry = Entry::new(
            format!("chat:{}:delete", session.id),
            Some(session.org_id.to_string()),
            Operation::DeleteChannel {
                channel: channel_of(&session),
            },
        );
        let members: Vec<UserId> =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id))
                .await?
                .into_iter()
                .map(|(_, u, _)| u)
                .collect();
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::delete(&txn, &session.id).await?;
        crate::outbox::enqueue(&txn, &[entry], now).await?;
        txn.commit().await?;
        self.outbox.wake();
        self.publish_change(&session, ChangeKind::Deleted, None, members);
        Ok(())
    }

    /// The 1:1 session of an unordered pair (in either order the same).
    async fn direct(
        &self,
        org: OrgId,
        counterpart: Option<OrgId>,
        me: &User,
        colleague: UserId,
    ) -> AppResult<ChatSession> {
        let (a, b) = if me.id < colleague {
            (me.id, colleague)
        } else {
            (colleague, me.id)
        };
        let (o1, o2) = match counterpart {
            Some(c) if c < org => (c, Some(org)),
            Some(c) => (org, Some(c)),
            None => (org, None),
        };
        let key = match o2 {
            Some(o2) => format!("dm:{o1}:{o2}:{a}:{b}"),
            None => format!("dm:{o1}:{a}:{b}"),
        };
        if let Some(existing) = db::chat_sessions::find_by_key(&self.db, &key).await? {
            return Ok(existing);
        }
        let users = db::users::find_many(&self.db, &[a, b]).await?;
        let now = self.clock.now();
        let session = ChatSession {
            counterpart_org_id: o2,
            ..ChatSession::new_open(
                o1,
                ChatCategory::Colleague,
                CHANNEL_TYPE,
                chat::channel_id("dm", &key),
                None,
                me.id,
                now,
            )
        };
        let metadata = base_metadata(&session);
        let members = [(a, ChatRole::Staff), (b, ChatRole::Staff)];
        self.create(session, &key, &members, metadata, &users, me)
            .await
    }

    /// A session the viewer may read: a member, or an OWNER/ADMIN of its organisation.
    pub async fn session(
        &self,
        viewer: &Viewer,
        id: &str,
    ) -> AppResult<(ChatSession, Option<ChatRole>)> {
        let me = viewer.user()?;
        let session = db::chat_sessions::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("chat session"))?;
        let members =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id)).await?;
        let role = members
            .iter()
            .find(|(_, u, _)| *u == me.id)
            .map(|(_, _, r)| *r);
        if role.is_some() {
            return Ok((session, role));
        }
        let memberships: Vec<_> =
            db::organizations::find_membership(&self.db, session.org_id, me.id)
                .await?
                .into_iter()
                .collect();
        if may_read(&session, false, &memberships) {
            Ok((session, None))
        } else {
            Err(AppError::NotFound("chat session"))
        }
    }

    /// The status of what a subscription watches, as it is now (reason `CURRENT`), if the
    /// viewer may watch it: a session, by who may read it; an appointment, by who may read its
    /// chat once it exists, and before that by who may read the appointment (the first event is
    /// then the window the chat will have).
    pub async fn current_status(&self, viewer: &Viewer, watch: &Watch) -> AppResult<StatusEvent> {
        let session = match watch {
            Watch::Session(id) => Some(self.session(viewer, id).await?.0),
            Watch::Appointment(id) => {
                let (appointment, _) = self.appointments.read(viewer, *id).await?;
                match db::chat_sessions::find_by_key(&self.db, &format!("appointment:{id}")).await?
                {
                    Some(s) => Some(self.session(viewer, &s.id).await?.0),
                    None => {
                        let (_, from, until) = self.window_of(&appointment).await?;
                        let status = if appointment.status.is_terminal() {
                            ChatStatus::Closed
                        } else {
                            status_at(false, Some(from), Some(until), self.clock.now())
                        };
                        return Ok(StatusEvent {
                            session_id: None,
                            appointment_id: Some(*id),
                            status,
                            reason: StatusReason::Current,
                            allowed_from: Some(from),
                            allowed_until: Some(until),
                            at: self.clock.now(),
                        });
                    }
                }
            }
        };
        let session = session.ok_or(AppError::NotFound("chat session"))?;
        Ok(StatusEvent::of(
            &session,
            self.status_now(&session),
            StatusReason::Current,
            self.clock.now(),
        ))
    }

    /// The viewer's sessions in an organisation, newest activity first (staff, or a client of
    /// one of its patients).
    pub async fn list(
        &self,
        viewer: &Viewer,
        org: OrgId,
        category: Option<ChatCategory>,
        include_closed: bool,
        page: &PageRequest,
    ) -> AppResult<Page<ChatSession>> {
        let me = self.lister(viewer, org).await?;
        db::chat_sessions::list_for_member(&self.db, org, me.id, category, include_closed, page)
            .await
    }

    /// Who may list (and follow) their own sessions in an organisation: its active members, and
    /// the clients of its patients; anyone else gets `NOT_FOUND`.
    pub async fn lister(&self, viewer: &Viewer, org: OrgId) -> AppResult<User> {
        match member_of(&self.db, viewer, org).await {
            Ok((me, _)) => Ok(me),
            Err(AppError::NotFound(what)) => {
                let me = viewer.user()?;
                let client = db::patients::of_guardian(&self.db, me.id)
                    .await?
                    .iter()
                    .any(|p| p.org_id == org);
                if client {
                    Ok(me.clone())
                } else {
                    Err(AppError::NotFound(what))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Issues the viewer's chat token (rate limited per user).
    pub async fn issue_token(&self, viewer: &Viewer) -> AppResult<ChatCredentials> {
        let me = viewer.user()?;
        self.token_limit.check(&me.id)?;
        self.chat
            .provider
            .issue_token(&chat_user(me), self.token_ttl)
            .await
            .map_err(|e| e.into_app(self.chat.provider.name()))
    }

    /// Closes a session once: a staff member of it or an org admin may (a client gets
    /// FORBIDDEN); closing a closed session changes and posts nothing.
    pub async fn close(&self, viewer: &Viewer, id: &str) -> AppResult<ChatSession> {
        let (session, role) = self.session(viewer, id).await?;
        if role == Some(ChatRole::Client) {
            return Err(AppError::Forbidden("clients cannot close a chat".into()));
        }
        let me = viewer.user()?.clone();
        self.close_for(&session, Some(&me), StatusReason::ClosedByUser)
            .await?;
        db::chat_sessions::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("chat session"))
    }

    /// Closes a session for a reason, posting one system message and freezing the channel.
    async fn close_for(
        &self,
        session: &ChatSession,
        by: Option<&User>,
        reason: StatusReason,
    ) -> AppResult<bool> {
        let now = self.clock.now();
        let text = match (reason, by) {
            (StatusReason::ClosedByUser, Some(u)) => {
                format!("This chat was closed by {}.", u.display_name)
            }
            (StatusReason::WindowEnded, _) => "This chat has ended.".to_owned(),
            (StatusReason::AppointmentCancelled, _) => {
                "The appointment was cancelled; this chat is closed.".to_owned()
            }
            _ => "This chat is closed.".to_owned(),
        };
        let channel = channel_of(session);
        let org = Some(session.org_id.to_string());
        let mut entries = vec![
            Entry::new(
                format!("chat:{}:close:message", session.id),
                org.clone(),
                Operation::SystemMessage {
                    channel: channel.clone(),
                    message: SystemMessage {
                        id: format!("close-{}", session.id),
                        text,
                    },
                },
            ),
            Entry::new(
                format!("chat:{}:close:metadata", session.id),
                org.clone(),
                Operation::UpdateMetadata {
                    channel: channel.clone(),
                    set: status_metadata(ChatStatus::Closed),
                    unset: Vec::new(),
                },
            ),
            Entry::new(
                format!("chat:{}:close:freeze", session.id),
                org,
                Operation::SetFrozen {
                    channel,
                    frozen: true,
                },
            ),
        ];
        match reason {
            // Frozen by someone else: the channel is frozen; it only learns that it ended.
            StatusReason::ProviderFrozen => entries.retain(|e| e.key.ends_with(":metadata")),
            // Deleted at the provider: nothing is left there to change.
            StatusReason::ProviderDeleted => entries.clear(),
            _ => {}
        }
        let txn = db::begin(&self.db).await?;
        if !db::chat_sessions::close(&txn, &session.id, by.map(|u| u.id), reason, now).await? {
            return Ok(false);
        }
        let keys = crate::outbox::enqueue(&txn, &entries, now).await?;
        txn.commit().await?;
        let closed = ChatSession {
            status: ChatStatus::Closed,
            closed_at: Some(now),
            closed_by: by.map(|u| u.id),
            close_reason: Some(reason),
            ..session.clone()
        };
        self.announce_status(&closed, ChatStatus::Closed, reason);
        self.announce_change(&closed, ChangeKind::Closed, None, &[])
            .await;
        self.outbox.deliver_now(&keys).await?;
        Ok(true)
    }

    /// Posts a message as the viewer (the local provider only; other providers' messages go
    /// through their own SDKs). The session must be ACTIVE.
    pub async fn send_message(
        &self,
        viewer: &Viewer,
        id: &str,
        text: &str,
    ) -> AppResult<ChatMessage> {
        let Some(local) = &self.chat.local else {
            return Err(AppError::bad_input(
                "sessionId",
                "messages are sent through the chat provider's SDK",
            ));
        };
        let (session, role) = self.session(viewer, id).await?;
        if role.is_none() {
            return Err(AppError::Forbidden("only members post in a chat".into()));
        }
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 4000 {
            return Err(AppError::bad_input(
                "text",
                "a message has 1 to 4000 characters",
            ));
        }
        let status = self.status_now(&session);
        if status != ChatStatus::Active {
            return Err(AppError::ChatNotOpen(format!(
                "the chat is {}",
                status.as_str()
            )));
        }
        let me = viewer.user()?;
        let message = local
            .post_user_message(&channel_of(&session), &me.id.to_string(), text)
            .await
            .map_err(|e| match e {
                crate::providers::chat::ProviderError::Rejected { message, .. } => {
                    AppError::ChatNotOpen(message)
                }
                other => other.into_app("local"),
            })?;
        db::chat_sessions::touch(&self.db, &session.id, message.sent_at).await?;
        self.announce_change(&session, ChangeKind::Message, Some(message.clone()), &[])
            .await;
        Ok(message)
    }

    /// Opens and ends due windows (mirroring the freeze at the provider); returns how many
    /// sessions changed.
    pub async fn tick(&self) -> AppResult<usize> {
        let now = self.clock.now();
        let mut changed = 0;
        for session in db::chat_sessions::due(&self.db, now, 200).await? {
            let target = status_at(false, session.allowed_from, session.allowed_until, now);
            if target == session.status {
                continue;
            }
            if target == ChatStatus::Closed {
                if self
                    .close_for(&session, None, StatusReason::WindowEnded)
                    .await?
                {
                    changed += 1;
                }
                continue;
            }
            let channel = channel_of(&session);
            let org = Some(session.org_id.to_string());
            // Unique per opening: a moved window opens again (only the winner of the
            // conditional update below enqueues).
            let opening = uuid::Uuid::now_v7().simple();
            let entries = vec![
                Entry::new(
                    format!("chat:{}:open:{opening}:metadata", session.id),
                    org.clone(),
                    Operation::UpdateMetadata {
                        channel: channel.clone(),
                        set: status_metadata(ChatStatus::Active),
                        unset: Vec::new(),
                    },
                ),
                Entry::new(
                    format!("chat:{}:open:{opening}:unfreeze", session.id),
                    org,
                    Operation::SetFrozen {
                        channel,
                        frozen: false,
                    },
                ),
            ];
            let txn = db::begin(&self.db).await?;
            let won = db::chat_sessions::transition(&txn, &session, target, now).await?;
            if won {
                crate::outbox::enqueue(&txn, &entries, now).await?;
                changed += 1;
            }
            txn.commit().await?;
            // Only the scheduler whose conditional update won announces the change.
            if won {
                let reason = if target == ChatStatus::Active {
                    StatusReason::WindowOpened
                } else {
                    StatusReason::Rescheduled
                };
                self.announce_status(&session, target, reason);
            }
        }
        if changed > 0 {
            self.outbox.wake();
        }
        Ok(changed)
    }

    /// Runs the scheduler until `stop`: one timer for the next window change, read from the
    /// database (so restarts lose nothing), and a poll as a safety net.
    pub async fn run_scheduler(self, stop: tokio_util::sync::CancellationToken, poll: Duration) {
        loop {
            if let Err(e) = self.tick().await {
                e.log_cause();
            }
            let nap = match db::chat_sessions::next_due(&self.db).await {
                Ok(Some(due)) => (due - self.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(poll),
                _ => poll,
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(nap.max(Duration::from_millis(50))) => {}
            }
        }
    }

    /// The window an appointment gives its chat, and the activation minutes that made it: the
    /// appointment's own, else its organisation's, else the deployment's default.
    pub async fn window_of(
        &self,
        a: &crate::domain::care::Appointment,
    ) -> AppResult<(
        i64,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> {
        let activation = match a.activation_minutes {
            Some(m) => i64::from(m),
            None => db::organizations::find(&self.db, a.org_id)
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

    /// Sessions of appointments (for loaders).
    pub async fn of_appointments(&self, ids: &[AppointmentId]) -> AppResult<Vec<ChatSession>> {
        db::chat_sessions::of_appointments(&self.db, ids).await
    }

    /// Members of sessions (for loaders).
    pub async fn members_of(&self, ids: &[String]) -> AppResult<Vec<(String, UserId, ChatRole)>> {
        db::chat_sessions::members_of(&self.db, ids).await
    }

    /// The latest messages of a session the viewer may read.
    pub async fn recent_messages(
        &self,
        s: &ChatSession,
        limit: u32,
    ) -> AppResult<Vec<ChatMessage>> {
        self.chat
            .provider
            .recent_messages(&channel_of(s), limit)
            .await
            .map_err(|e| e.into_app(self.chat.provider.name()))
    }
}

impl ChatService {
    /// Announces a cancellation or a move of an appointment whose chat is not open yet.
    async fn announce_unopened(
        &self,
        before: &crate::domain::care::Appointment,
        a: &crate::domain::care::Appointment,
    ) -> AppResult<()> {
        let cancelled = a.status == crate::domain::care::AppointmentStatus::Cancelled
            && before.status != a.status;
        let moved = before.starts_at != a.starts_at || before.ends_at != a.ends_at;
        if !cancelled && !moved {
            return Ok(());
        }
        let (_, from, until) = self.window_of(a).await?;
        let now = self.clock.now();
        let (status, reason) = if cancelled {
            (ChatStatus::Closed, StatusReason::AppointmentCancelled)
        } else {
            (
                status_at(false, Some(from), Some(until), now),
                StatusReason::Rescheduled,
            )
        };
        self.events.publish(DomainEvent::ChatStatus(StatusEvent {
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

    /// Applies what a provider reported about one of caregraph's channels (others are ignored):
    /// a message updates the list and is announced; a freeze of an open chat by someone else
    /// closes it (`PROVIDER_FROZEN`), an unfreeze outside the window is undone; a deleted channel
    /// closes its session (`PROVIDER_DELETED`); members who joined or left there are recorded
    /// here. Applying the same report twice changes nothing the second time.
    pub async fn provider_event(
        &self,
        event: crate::providers::webhooks::ProviderEvent,
    ) -> AppResult<()> {
        use crate::providers::webhooks::ProviderEvent as E;
        let channel = match &event {
            E::Message { channel, .. }
            | E::Frozen { channel, .. }
            | E::Deleted { channel, .. }
            | E::MembersAdded { channel, .. }
            | E::MembersRemoved { channel, .. } => channel.clone(),
        };
        let Some(session) = db::chat_sessions::find_by_channel(
            &self.db,
            &channel.channel_type,
            &channel.channel_id,
        )
        .await?
        else {
            tracing::debug!(cid = %channel.cid(), "a provider event about a channel caregraph did not make");
            return Ok(());
        };
        match event {
            E::Message { message, .. } => {
                if message.sent_at > session.last_activity_at {
                    db::chat_sessions::touch(&self.db, &session.id, message.sent_at).await?;
                }
                self.announce_change(&session, ChangeKind::Message, Some(message), &[])
                    .await;
            }
            E::Frozen {
                frozen: true, at, ..
            } => {
                // A freeze reported from before the window opened is caregraph's own, late.
                let stale = session.allowed_from.is_some_and(|from| at < from);
                if !stale && self.status_now(&session) == ChatStatus::Active {
                    tracing::info!(session = %session.id, "frozen at the provider: closing");
                    self.close_for(&session, None, StatusReason::ProviderFrozen)
                        .await?;
                }
            }
            E::Frozen { frozen: false, .. } => {
                if self.status_now(&session) != ChatStatus::Active {
                    tracing::info!(session = %session.id, "unfrozen outside its window: freezing again");
                    let entry = Entry::new(
                        format!(
                            "chat:{}:refreeze:{}",
                            session.id,
                            uuid::Uuid::now_v7().simple()
                        ),
                        Some(session.org_id.to_string()),
                        Operation::SetFrozen {
                            channel,
                            frozen: true,
                        },
                    );
                    crate::outbox::enqueue(&self.db, &[entry], self.clock.now()).await?;
                    self.outbox.wake();
                }
            }
            E::Deleted { at, .. } => {
                // A report from before this session existed is about an older channel.
                if at >= session.created_at {
                    self.close_for(&session, None, StatusReason::ProviderDeleted)
                        .await?;
                }
            }
            E::MembersAdded { user_ids, .. } => {
                // caregraph decides who takes part: a member added at the provider behind its
                // back (a client SDK's invite, a channel owner's add) is taken out again.
                let current = self.members_of(std::slice::from_ref(&session.id)).await?;
                let intruders: Vec<String> = user_ids
                    .into_iter()
                    .filter(|u| !current.iter().any(|(_, m, _)| m.to_string() == *u))
                    .filter(|u| u.as_str() != crate::providers::chat::stream::SYSTEM_USER_ID)
                    .collect();
                if intruders.is_empty() {
                    return Ok(());
                }
                tracing::warn!(session = %session.id, users = ?intruders, "members added at the provider without caregraph: removing them there");
                let entry = Entry::new(
                    format!(
                        "chat:{}:revert-add:{}",
                        session.id,
                        uuid::Uuid::now_v7().simple()
                    ),
                    Some(session.org_id.to_string()),
                    Operation::RemoveMembers {
                        channel,
                        user_ids: intruders,
                        message: None,
                    },
                );
                crate::outbox::enqueue(&self.db, &[entry], self.clock.now()).await?;
                self.outbox.wake();
            }
            E::MembersRemoved { user_ids, at, .. } => {
                // Someone left at the provider: they leave here too, unless they joined (again)
                // after the report was made.
                let joined = db::chat_sessions::members_joined(&self.db, &session.id).await?;
                let gone: Vec<UserId> = joined
                    .iter()
                    .filter(|(u, since)| user_ids.contains(&u.to_string()) && *since <= at)
                    .map(|(u, _)| *u)
                    .collect();
                if gone.is_empty() {
                    return Ok(());
                }
                db::chat_sessions::remove_members(&self.db, &session.id, &gone).await?;
                self.announce_change(&session, ChangeKind::MembersChanged, None, &gone)
                    .await;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::appointments::AppointmentHooks for ChatService {
    /// A cancelled appointment closes its chat; a moved one moves the chat's window (a chat
    /// closed by a person stays closed), refreezing or unfreezing the channel as the window says.
    async fn appointment_changed(
        &self,
        before: &crate::domain::care::Appointment,
        a: &crate::domain::care::Appointment,
    ) -> AppResult<()> {
        let Some(session) =
            db::chat_sessions::find_by_key(&self.db, &format!("appointment:{}", a.id)).await?
        else {
            // No chat yet: those following the appointment hear of the window it will have.
            return self.announce_unopened(before, a).await;
        };
        if session.closed_at.is_some() {
            return Ok(());
        }
        if a.status == crate::domain::care::AppointmentStatus::Cancelled {
            self.close_for(&session, None, StatusReason::AppointmentCancelled)
                .await?;
            return Ok(());
        }
        // A new practitioner or support staff: members follow (an admin who opened it stays).
        let wanted = self.appointment_members(a).await?;
        let creator_manages =
            db::organizations::find_membership(&self.db, a.org_id, session.created_by)
                .await?
                .is_some_and(|m| m.active && m.role.manages_organization());
        self.sync_members(
            &session,
            &wanted,
            creator_manages.then_some(session.created_by),
        )
        .await?;
        let (_, from, until) = self.window_of(a).await?;
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
            db::chat_sessions::set_window(&self.db, &session.id, from, until, session.status, now)
                .await?;
            self.close_for(&moved, None, StatusReason::WindowEnded)
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
        let txn = db::begin(&self.db).await?;
        let won =
            db::chat_sessions::set_window(&txn, &session.id, from, until, status, now).await?;
        if won {
            crate::outbox::enqueue(&txn, &entries, now).await?;
        }
        txn.commit().await?;
        if won {
            self.announce_status(&moved, status, StatusReason::Rescheduled);
        }
        self.outbox.wake();
        Ok(())
    }
}

impl ChatService {
    /// A case's room, if provisioned.
    pub async fn case_room(&self, case: &crate::domain::CaseId) -> AppResult<Option<ChatSession>> {
        db::chat_sessions::find_by_key(&self.db, &format!("case:{case}")).await
    }
}

#[async_trait::async_trait]
impl super::cases::CaseHooks for ChatService {
    /// Provisions the case's room once (every participant granted) and keeps its members in
    /// step with the participants.
    async fn case_changed(&self, case: &crate::domain::care::Case, by: &User) -> AppResult<()> {
        use crate::domain::care::CaseRole;
        let participants = db::cases::participants_of(&self.db, &[case.id]).await?;
        let wanted: Vec<(UserId, ChatRole)> = participants
            .iter()
            .map(|p| {
                (
                    p.user_id,
                    if p.role == CaseRole::Patient {
                        ChatRole::Client
                    } else {
                        ChatRole::Staff
                    },
                )
            })
            .collect();
        let key = format!("case:{}", case.id);
        let Some(session) = db::chat_sessions::find_by_key(&self.db, &key).await? else {
            if case.status == crate::domain::care::CaseStatus::Closed {
                return Ok(());
            }
            let mut members = wanted.clone();
            if !members.iter().any(|(u, _)| *u == by.id) {
                members.push((by.id, ChatRole::Staff));
            }
            let users = db::users::find_many(
                &self.db,
                &members.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
            )
            .await?;
            let now = self.clock.now();
            let session = ChatSession::new_open(
                case.org_id,
                ChatCategory::Case,
                CHANNEL_TYPE,
                chat::channel_id("case", &case.id.to_string()),
                Some(case.title.clone()),
                by.id,
                now,
            );
            let mut metadata = base_metadata(&session);
            metadata.insert("caseId".into(), json!(case.id.to_string()));
            metadata.insert("caseReference".into(), json!(case.reference));
            self.create(session, &key, &members, metadata, &users, by)
                .await?;
            return Ok(());
        };
        if session.closed_at.is_some() {
            return Ok(());
        }
        self.sync_members(&session, &wanted, Some(session.created_by))
            .await
    }

    /// Closes the case's room (one system message, frozen) and, when asked, deletes it.
    async fn case_closed(
        &self,
        case: &crate::domain::care::Case,
        by: &User,
        delete_room: bool,
    ) -> AppResult<()> {
        let Some(session) = self.case_room(&case.id).await? else {
            return Ok(());
        };
        self.close_for(&session, Some(by), StatusReason::ClosedByUser)
            .await?;
        if delete_room {
            let now = self.clock.now();
            let entry = Entry::new(
                format!("chat:{}:delete", session.id),
                Some(session.org_id.to_string()),
                Operation::DeleteChannel {
                    channel: channel_of(&session),
                },
            );
            let txn = db::begin(&self.db).await?;
            let keys = crate::outbox::enqueue(&txn, &[entry], now).await?;
            txn.commit().await?;
            self.outbox.deliver_now(&keys).await?;
        }
        Ok(())
    }
}

impl ChatService {
    /// A care team's conversation, if provisioned.
    pub async fn care_team_chat(
        &self,
        team: &crate::domain::CareTeamId,
    ) -> AppResult<Option<ChatSession>> {
        db::chat_sessions::find_by_key(&self.db, &format!("care_team:{team}")).await
    }

    /// Creates or updates a staff-only room (`key`) so that its members are `wanted`.
    async fn sync_room(
        &self,
        key: &str,
        template: ChatSession,
        metadata: Map<String, Value>,
        wanted: &[UserId],
        by: &User,
    ) -> AppResult<()> {
        let Some(session) = db::chat_sessions::find_by_key(&self.db, key).await? else {
            let mut members: Vec<(UserId, ChatRole)> =
                wanted.iter().map(|u| (*u, ChatRole::Staff)).collect();
            if !members.iter().any(|(u, _)| *u == by.id) {
                members.push((by.id, ChatRole::Staff));
            }
            let users = db::users::find_many(
                &self.db,
                &members.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
            )
            .await?;
            self.create(template, key, &members, metadata, &users, by)
                .await?;
            return Ok(());
        };
        if session.closed_at.is_some() {
            return Ok(());
        }
        let wanted: Vec<(UserId, ChatRole)> =
            wanted.iter().map(|u| (*u, ChatRole::Staff)).collect();
        self.sync_members(&session, &wanted, Some(session.created_by))
            .await
    }
}

/// Keeps a care team's staff-only conversation in step with the team (category `CARE_TEAM`).
#[derive(Clone)]
pub struct CareTeamChats {
    /// The chat service.
    pub chat: ChatService,
    /// The care-team service (who may take part).
    pub teams: super::care_teams::CareTeamService,
}

#[async_trait::async_trait]
impl super::consent::ConsentHooks for CareTeamChats {
    /// Outside staff take part in a patient's care-team chats only while consented: each
    /// existing chat of the patient's teams is brought in step.
    async fn consent_changed(&self, patient: crate::domain::PatientId) -> AppResult<()> {
        for team in db::care_teams::of_patients(&self.chat.db, &[patient]).await? {
            let Some(session) = self.chat.care_team_chat(&team.id).await? else {
                continue;
            };
            if session.closed_at.is_some() {
                continue;
            }
            let wanted: Vec<(UserId, ChatRole)> = self
                .teams
                .chat_members(&team)
                .await?
                .into_iter()
                .map(|u| (u, ChatRole::Staff))
                .collect();
            self.chat
                .sync_members(&session, &wanted, Some(session.created_by))
                .await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::care_teams::CareTeamHooks for CareTeamChats {
    async fn care_team_changed(
        &self,
        team: &crate::domain::care::CareTeam,
        by: &User,
    ) -> AppResult<()> {
        let wanted = self.teams.chat_members(team).await?;
        let now = self.chat.clock.now();
        let template = ChatSession::new_open(
            team.org_id,
            ChatCategory::CareTeam,
            CHANNEL_TYPE,
            chat::channel_id("careteam", &team.id.to_string()),
            Some(team.name.clone()),
            by.id,
            now,
        );
        let mut metadata = base_metadata(&template);
        metadata.insert("careTeamId".into(), json!(team.id.to_string()));
        self.chat
            .sync_room(
                &format!("care_team:{}", team.id),
                template,
                metadata,
                &wanted,
                by,
            )
            .await
    }
}
