//! Chat sessions: one conversation per appointment, colleague pair, group, case or care team,
//! mirrored to one channel at the chat provider. Every provider side effect goes through the
//! outbox, written in the transaction of the change. The use cases live in submodules by
//! concern; this file holds the service, the helpers they share and session creation.

mod access;
mod appointment;
mod care_teams;
mod case_rooms;
mod direct;
mod effects;
mod external;
mod groups;
mod lifecycle;
mod membership;
mod messaging;
mod provider_events;
mod provisioning;
mod revocation;
mod scheduler;
mod watch;

pub use effects::AfterCommit;
pub use external::InboundSms;
pub(crate) use external::outsiders_allowed;
pub use groups::{GroupChange, GroupInput};
pub use messaging::{HISTORY_PAGE_MAX, HistoryPage};
pub use watch::{ListEvent, Watch};

use std::{sync::Arc, time::Duration};

use serde_json::{Map, Value, json};

use sea_orm::DatabaseTransaction;

use crate::{
    auth::rate_limit::KeyedLimit,
    clock::SharedClock,
    db,
    domain::{
        AppointmentId, ChatSessionId, OrgId, User, UserId,
        chat::{
            ChatCategory, ChatRole, ChatSession, ChatStatus, SessionKey, StatusReason, status_at,
        },
    },
    error::{AppError, AppResult},
    events::{ChangeKind, EventBus},
    outbox::{Entry, Operation, Outbox},
    providers::chat::{CHANNEL_TYPE, ChannelRef, ChannelSpec, ChatMessage, ChatStack, ChatUser},
};

/// Chat sessions.
#[derive(Clone)]
pub struct ChatService {
    db: db::Db,
    outbox: Outbox,
    stack: ChatStack,
    clock: SharedClock,
    events: EventBus,
    token_limit: Arc<KeyedLimit<UserId>>,
    token_ttl: Duration,
    default_activation_minutes: i64,
    after_end: chrono::Duration,
    /// Scopes for the changes no request makes (the scheduler's, a webhook's, the system's).
    audit: crate::audit::AuditLog,
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

/// The outbox entry that deletes a session's channel at the provider (once per session).
fn delete_entry(session: &ChatSession) -> Entry {
    Entry::new(
        format!("chat:{}:delete", session.id),
        Some(session.org_id.to_string()),
        Operation::DeleteChannel {
            channel: channel_of(session),
        },
    )
}

/// The outbox key of the row that creates a session's channel.
fn create_key(id: ChatSessionId) -> String {
    format!("chat:{id}:create")
}

/// A person as the chat provider knows them.
fn chat_user(u: &User) -> ChatUser {
    ChatUser {
        id: u.id.to_string(),
        name: u.display_name.clone(),
        image: u.avatar_url.clone(),
    }
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

/// The channel metadata that follows a status (`status`, `frozen`).
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
        db: db::Db,
        outbox: Outbox,
        chat: ChatStack,
        clock: SharedClock,
        events: EventBus,
        settings: ChatSettings,
        audit: crate::audit::AuditLog,
    ) -> Self {
        Self {
            db,
            outbox,
            stack: chat,
            clock,
            events,
            token_limit: Arc::new(KeyedLimit::per_minute(settings.tokens_per_minute)),
            token_ttl: settings.token_ttl,
            default_activation_minutes: settings.default_activation_minutes,
            after_end: chrono::Duration::minutes(settings.after_end_minutes),
            audit,
        }
    }

    /// Announces a session's new status (after the change committed).
    pub(super) fn announce_status(
        &self,
        session: &ChatSession,
        status: ChatStatus,
        reason: StatusReason,
    ) {
        let mut fx = AfterCommit::default();
        self.owe_status(&mut fx, session, status, reason);
        self.publish_now(fx);
    }

    /// Announces a change for session lists, to the members after it and to `also` (those who
    /// just left). A failure to read the members is logged: the change itself has committed.
    pub(super) async fn announce_change(
        &self,
        session: &ChatSession,
        kind: ChangeKind,
        last_message: Option<ChatMessage>,
        also: &[UserId],
    ) {
        let mut fx = AfterCommit::default();
        match self
            .owe_change(&self.db, &mut fx, session, kind, last_message, also)
            .await
        {
            Ok(()) => self.publish_now(fx),
            Err(e) => e.log_cause(),
        }
    }

    /// The provider state of channels (last message, the reader's unread count) in
    /// ceil(channels / [`Self::read_batch_limit`]) provider calls.
    pub async fn channel_states(
        &self,
        channels: &[ChannelRef],
        reader: &UserId,
    ) -> AppResult<Vec<crate::providers::chat::ChannelState>> {
        self.stack
            .provider
            .read_channels(channels, &reader.to_string())
            .await
            .map_err(|e| e.into_app(self.stack.provider.name()))
    }

    /// How many channels one provider read takes.
    pub fn read_batch_limit(&self) -> usize {
        self.stack.provider.read_batch_limit().max(1)
    }

    /// The provider's name.
    pub fn provider_name(&self) -> &'static str {
        self.stack.provider.name()
    }

    /// The Ethora room JID of a session's channel (`None` elsewhere).
    pub fn room_jid(&self, s: &ChatSession) -> Option<String> {
        self.stack.provider.room_jid(&channel_of(s))
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

    /// Creates a session with its provider channel (create-or-get on `key`: a concurrent twin
    /// returns the winner's session), delivering the channel before it returns when it can.
    pub(super) async fn create(
        &self,
        session: ChatSession,
        key: &SessionKey,
        members: &[(UserId, ChatRole)],
        metadata: Map<String, Value>,
        users: &[User],
        me: &User,
    ) -> AppResult<ChatSession> {
        let txn = db::begin(&self.db).await?;
        let mut fx = AfterCommit::default();
        match self
            .create_in(&txn, &mut fx, &session, key, members, metadata, users, me)
            .await
        {
            Ok(()) => {}
            // A concurrent open won the natural key: its session is the one.
            Err(AppError::Conflict(_)) => {
                drop(txn);
                let winner = db::chat_sessions::find_by_key(&self.db, key)
                    .await?
                    .ok_or(AppError::NotFound("chat session"))?;
                return self.ready(winner).await;
            }
            Err(e) => return Err(e),
        }
        txn.commit().await?;
        // The client is about to open the channel: deliver now (the worker retries if down).
        self.finish(fx).await?;
        Ok(session)
    }

    /// Records a new session and queues its channel in the transaction `txn` (a twin on `key`
    /// fails with CONFLICT).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_in(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        session: &ChatSession,
        key: &SessionKey,
        members: &[(UserId, ChatRole)],
        metadata: Map<String, Value>,
        users: &[User],
        me: &User,
    ) -> AppResult<()> {
        let now = session.created_at;
        let spec = ChannelSpec {
            channel: channel_of(session),
            created_by: me.id.to_string(),
            members: members.iter().map(|(u, _)| u.to_string()).collect(),
            name: session.title.clone(),
            image: session.image_url.clone(),
            metadata,
            frozen: session.status != ChatStatus::Active,
        };
        let create = Entry::new(
            create_key(session.id),
            Some(session.org_id.to_string()),
            Operation::CreateChannel {
                spec,
                users: users.iter().map(chat_user).collect(),
            },
        );
        db::chat_sessions::insert(txn, session, key, members).await?;
        fx.deliver(crate::outbox::enqueue(txn, &[create], now).await?);
        fx.publish(self.change_event(
            session,
            ChangeKind::Created,
            None,
            members.iter().map(|(u, _)| *u).collect(),
        ));
        // Those following an appointment learn its chat's id (and state) as it is created.
        if session.appointment_id.is_some() {
            self.owe_status(fx, session, session.status, StatusReason::Current);
        }
        Ok(())
    }

    /// `session` (found existing by a create-or-get) once its channel's pending creation, if
    /// any, was delivered now: the caller opens the channel next. If the provider is down the
    /// answer comes at once and `provisioning` says `PENDING` or `FAILED`.
    async fn ready(&self, session: ChatSession) -> AppResult<ChatSession> {
        self.outbox.deliver_now(&[create_key(session.id)]).await?;
        Ok(session)
    }

    /// A room (case or care team) about to be made now by `by`.
    fn room(
        &self,
        org: OrgId,
        category: ChatCategory,
        channel_id: String,
        title: String,
        by: &User,
    ) -> ChatSession {
        ChatSession::new_open(
            org,
            category,
            CHANNEL_TYPE,
            channel_id,
            Some(title),
            by.id,
            self.clock.now(),
        )
    }

    /// Creates a room (`key`, from `template`; `by` takes part) or brings an open one's members
    /// to `wanted` (its creator stays), in the transaction `txn`.
    #[allow(clippy::too_many_arguments)]
    async fn sync_room_in(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
        key: &SessionKey,
        template: ChatSession,
        metadata: Map<String, Value>,
        wanted: &[(UserId, ChatRole)],
        by: &User,
    ) -> AppResult<()> {
        let Some(session) = db::chat_sessions::find_by_key(txn, key).await? else {
            let mut members = wanted.to_vec();
            if !members.iter().any(|(u, _)| *u == by.id) {
                members.push((by.id, ChatRole::Staff));
            }
            let users =
                db::users::find_many(txn, &members.iter().map(|(u, _)| *u).collect::<Vec<_>>())
                    .await?;
            return self
                .create_in(txn, fx, &template, key, &members, metadata, &users, by)
                .await;
        };
        if session.closed_at.is_some() {
            return Ok(());
        }
        // A room whose channel is still pending is delivered with this call too.
        fx.deliver(vec![create_key(session.id)]);
        self.sync_members_in(txn, fx, &session, wanted, Some(session.created_by))
            .await
    }

    /// Sessions of appointments (for loaders).
    pub async fn of_appointments(&self, ids: &[AppointmentId]) -> AppResult<Vec<ChatSession>> {
        db::chat_sessions::of_appointments(&self.db, ids).await
    }

    /// The natural keys of sessions (for loaders: which case or care team a room belongs to).
    pub async fn keys_of(
        &self,
        ids: &[ChatSessionId],
    ) -> AppResult<Vec<(ChatSessionId, SessionKey)>> {
        db::chat_sessions::keys_of(&self.db, ids).await
    }

    /// What the configured provider can do beyond the common core.
    pub fn capabilities(&self) -> crate::providers::chat::Capabilities {
        self.stack.provider.capabilities()
    }

    /// Members of sessions (for loaders).
    pub async fn members_of(
        &self,
        ids: &[ChatSessionId],
    ) -> AppResult<Vec<(ChatSessionId, UserId, ChatRole)>> {
        db::chat_sessions::members_of(&self.db, ids).await
    }
}
