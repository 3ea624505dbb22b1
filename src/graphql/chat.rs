//! GraphQL for chat sessions: appointment chats, tokens, closing, lists, and messaging through
//! caregraph (`sendChatMessage`, `messages`, `markChatRead`, the provider's capabilities).

use async_graphql::{
    Context, ID, Json, Object, SimpleObject,
    connection::{Connection, Edge, EmptyFields},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};

use super::{
    appointments::Appointment,
    args::parse_ids,
    batch::DataLoader,
    cases::Case,
    context::{loader, my_memberships, services, viewer},
    errors::GqlResult,
    loaders::{
        CaseParticipantsOf, ChannelReads, ChatMembersOf, ExternalMembersOf, GuardianshipsOf,
        ProvisioningOf, RoomKeyOf, SessionAccess,
    },
    organizations::{Organization, User},
    pagination::{self, Conn},
    patients::{CareTeam, Patient},
    related::{org_of, patient_of, user_of},
    sms::ExternalChatMember,
};
use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    domain::{self, AppointmentId, ChatSessionId, OrgId, PatientId, chat::SessionKey},
    error::AppError,
    providers::chat::{Capabilities, ChannelState, ChatMessage as ProviderMessage},
    services::{
        access::{Readable, sees_case, sees_patient},
        cases::case_entry,
        chat::{HISTORY_PAGE_MAX, channel_of},
    },
};

/// Whether a chat session's channel exists at the provider yet.
#[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ProvisioningState {
    /// The channel exists: the client may open it.
    Ready,
    /// Its creation is queued or under way.
    Pending,
    /// Its creation failed; it is tried again at `provisioningRetryAt` (null: failed for good,
    /// an admin may queue it again with `retryProviderOperation`).
    Failed,
}

macro_rules! chat_enum {
    ($(#[$doc:meta])* $name:ident => $domain:ty { $($(#[$vdoc:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(async_graphql::Enum, Copy, Clone, Eq, PartialEq, Debug)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }
        impl From<$domain> for $name {
            fn from(v: $domain) -> Self {
                match v { $(<$domain>::$variant => Self::$variant),+ }
            }
        }
        impl From<$name> for $domain {
            fn from(v: $name) -> Self {
                match v { $($name::$variant => <$domain>::$variant),+ }
            }
        }
    };
}

chat_enum!(
    /// The audience of a chat (the PMS's pills).
    ChatCategory => domain::chat::ChatCategory {
        /// Appointment chats with a client.
        Client,
        /// 1:1 staff chats.
        Colleague,
        /// Group channels.
        Group,
        /// A case's room.
        Case,
        /// A care team's staff conversation.
        CareTeam,
    }
);
chat_enum!(
    /// Where a chat is in its life.
    ChatStatus => domain::chat::ChatStatus {
        /// Before its window opens (the channel is frozen).
        Pending,
        /// Open.
        Active,
        /// Closed for good (the channel is frozen).
        Closed,
    }
);
chat_enum!(
    /// Why a chat's status changed.
    ChatStatusReason => domain::chat::StatusReason {
        /// The state as it is.
        Current,
        /// The window opened.
        WindowOpened,
        /// A person closed it.
        ClosedByUser,
        /// The window ended.
        WindowEnded,
        /// The appointment was cancelled.
        AppointmentCancelled,
        /// The appointment moved.
        Rescheduled,
        /// Frozen at the provider by someone outside caregraph.
        ProviderFrozen,
        /// Deleted at the provider.
        ProviderDeleted,
    }
);
chat_enum!(
    /// A member's part in a chat.
    ChatRole => domain::chat::ChatRole {
        /// Owns a group.
        Owner,
        /// Staff.
        Staff,
        /// A client.
        Client,
    }
);

/// A chat member.
pub struct ChatMember(domain::UserId, domain::chat::ChatRole);

#[Object]
impl ChatMember {
    /// The member.
    async fn user(&self, ctx: &Context<'_>) -> GqlResult<User> {
        user_of(ctx, self.0).await
    }
    /// Their part.
    async fn role(&self) -> ChatRole {
        self.1.into()
    }
}

/// A message as previews show it.
#[derive(SimpleObject)]
pub struct ChatMessage {
    /// The provider's id.
    pub id: ID,
    /// Text.
    pub text: String,
    /// Sent.
    pub sent_at: DateTime<Utc>,
    /// The author's user id (null for the system).
    pub author: Option<ID>,
    /// Whether it is a system message.
    pub system: bool,
}

impl From<ProviderMessage> for ChatMessage {
    fn from(m: ProviderMessage) -> Self {
        Self {
            id: ID(m.id),
            text: m.text,
            sent_at: m.sent_at,
            author: m.author.map(ID),
            system: m.system,
        }
    }
}

/// A page of a chat's history, newest first (`after` in Relay terms is `before` here: the
/// next page holds older messages).
pub type ChatMessageConnection = Connection<String, ChatMessage, EmptyFields, EmptyFields>;

/// The cursor of a message in a history page.
fn message_cursor(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("m:{id}"))
}

/// The message id a history cursor names.
fn cursor_message(cursor: &str) -> Result<String, AppError> {
    let bad = || AppError::bad_input("before", "not a cursor of this chat's messages");
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    match text.strip_prefix("m:") {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(bad()),
    }
}

/// The chat provider behind a session and what it can answer: a field it cannot answer is
/// `null` (never a made-up value), and the matching flag here is `false`.
#[derive(SimpleObject)]
pub struct ChatProviderInfo {
    /// `local`, `stream`, `sendbird` or `ethora`.
    pub name: &'static str,
    /// `unreadCount` and `markChatRead` work (else `unreadCount` is null).
    pub supports_unread_count: bool,
    /// `sendChatMessage` posts at the provider as the caller (else it is refused: post with the
    /// provider's client SDK).
    pub supports_server_send: bool,
    /// `messages`, `recentMessages` and `lastMessage` come from the provider (else `messages`
    /// is refused and `lastMessage` is null).
    pub supports_history: bool,
    /// The provider itself refuses posts in a closed or not yet open chat (else only
    /// caregraph and its apps enforce the window).
    pub enforces_freeze: bool,
    /// Deactivating a user cuts off their provider tokens at once.
    pub revokes_tokens: bool,
}

impl ChatProviderInfo {
    /// The info of provider `name` with capabilities `c`.
    pub fn new(name: &'static str, c: Capabilities) -> Self {
        Self {
            name,
            supports_unread_count: c.unread_counts && c.read_markers,
            supports_server_send: c.server_send,
            supports_history: c.history && c.message_history,
            enforces_freeze: c.enforces_freeze,
            revokes_tokens: c.revokes_tokens,
        }
    }
}

/// What a provider's client SDK needs to connect as the caller.
#[derive(SimpleObject)]
pub struct ChatCredentials {
    /// `local`, `stream`, `sendbird` or `ethora`.
    pub provider: String,
    /// The caller's user id at the provider.
    pub user_id: ID,
    /// The token.
    pub token: String,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Stream's API key.
    pub api_key: Option<String>,
    /// Sendbird's or Ethora's app id.
    pub app_id: Option<String>,
    /// Further connection settings (Ethora's XMPP service and conference host, …).
    pub connection: Json<serde_json::Value>,
}

/// A conversation mirrored to one provider channel. Built only from a [`Readable`] session:
/// the service's read rule passed.
pub struct ChatSession(Readable<domain::chat::ChatSession>);

impl From<Readable<domain::chat::ChatSession>> for ChatSession {
    fn from(session: Readable<domain::chat::ChatSession>) -> Self {
        Self(session)
    }
}

impl ChatSession {
    /// A session reached through its appointment, case or care team, if the viewer may read
    /// it; batched through the per-request session-access loader.
    pub async fn visible(
        ctx: &Context<'_>,
        session: Option<domain::chat::ChatSession>,
    ) -> GqlResult<Option<Self>> {
        let (Some(session), Some(access)) = (session, ctx.data_opt::<DataLoader<SessionAccess>>())
        else {
            return Ok(None);
        };
        let id = session.id;
        access.loader().at_hand(session);
        Ok(access.load_one(id).await?.map(Self::from))
    }

    /// A session the caller's own mutation returned, handed back through the read rule.
    async fn checked(ctx: &Context<'_>, session: domain::chat::ChatSession) -> GqlResult<Self> {
        let readable = services(ctx).chats.check(viewer(ctx), session).await?;
        Ok(Self::from(readable))
    }

    /// Where the session's channel stands at the provider, and the next try when it failed.
    async fn provisioning_of(
        &self,
        ctx: &Context<'_>,
    ) -> GqlResult<(ProvisioningState, Option<DateTime<Utc>>)> {
        use domain::chat::Provisioning;
        let state = loader(ctx)
            .load_one(ProvisioningOf(self.0.id))
            .await?
            .unwrap_or(Provisioning::Ready);
        Ok(match state {
            Provisioning::Ready => (ProvisioningState::Ready, None),
            Provisioning::Pending => (ProvisioningState::Pending, None),
            Provisioning::Failed { retry_at } => (ProvisioningState::Failed, retry_at),
        })
    }

    /// The case of a case room, through the loaders (unchecked: the caller checks).
    async fn case_of(&self, ctx: &Context<'_>) -> GqlResult<Option<domain::care::Case>> {
        if self.0.category != domain::chat::ChatCategory::Case {
            return Ok(None);
        }
        match loader(ctx).load_one(RoomKeyOf(self.0.id)).await? {
            Some(SessionKey::Case(id)) => Ok(loader(ctx).load_one(id).await?),
            _ => Ok(None),
        }
    }

    /// The care team of a care-team chat, through the loaders.
    async fn care_team_of(&self, ctx: &Context<'_>) -> GqlResult<Option<domain::care::CareTeam>> {
        if self.0.category != domain::chat::ChatCategory::CareTeam {
            return Ok(None);
        }
        match loader(ctx).load_one(RoomKeyOf(self.0.id)).await? {
            Some(SessionKey::CareTeam(id)) => Ok(loader(ctx).load_one(id).await?),
            _ => Ok(None),
        }
    }

    /// The channel's state at the provider, through the per-request channel reads: its
    /// `lastMessage` and `unreadCount` ask for it while the same level resolves, so one key of
    /// that level's batch serves both (no cell of its own: a `tokio::sync::OnceCell` woke the
    /// sibling field while the engine polled it, which ended the request's poll early).
    async fn state(&self, ctx: &Context<'_>) -> GqlResult<Option<ChannelState>> {
        let Some(reads) = ctx.data_opt::<DataLoader<ChannelReads>>() else {
            return Ok(None);
        };
        reads.load_one(channel_of(&self.0)).await
    }
}

#[Object]
impl ChatSession {
    /// Id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Category.
    async fn category(&self) -> ChatCategory {
        self.0.category.into()
    }
    /// Status now.
    async fn status(&self, ctx: &Context<'_>) -> ChatStatus {
        services(ctx).chats.status_now(&self.0).into()
    }
    /// The organisation.
    async fn organization(&self, ctx: &Context<'_>) -> GqlResult<Organization> {
        org_of(ctx, self.0.org_id).await
    }
    /// Title.
    async fn title(&self) -> Option<&str> {
        self.0.title.as_deref()
    }
    /// The other organisation of a network chat.
    async fn counterpart_organization(&self, ctx: &Context<'_>) -> GqlResult<Option<Organization>> {
        match self.0.counterpart_org_id {
            Some(o) => org_of(ctx, o).await.map(Some),
            None => Ok(None),
        }
    }
    /// Whether it is a group.
    async fn is_group(&self) -> bool {
        self.0.is_group
    }
    /// Broadcast mode: only the owner and admins post.
    async fn read_only(&self) -> bool {
        self.0.read_only
    }
    /// Image.
    async fn image_url(&self) -> Option<&str> {
        self.0.image_url.as_deref()
    }
    /// Members.
    async fn members(&self, ctx: &Context<'_>) -> GqlResult<Vec<ChatMember>> {
        let list = loader(ctx)
            .load_one(ChatMembersOf(self.0.id))
            .await?
            .unwrap_or_default();
        Ok(list.into_iter().map(|(u, r)| ChatMember(u, r)).collect())
    }
    /// How many members: caregraph's members and the external (SMS) members.
    async fn member_count(&self, ctx: &Context<'_>) -> GqlResult<i32> {
        let list = loader(ctx)
            .load_one(ChatMembersOf(self.0.id))
            .await?
            .unwrap_or_default();
        let external = loader(ctx)
            .load_one(ExternalMembersOf(self.0.id))
            .await?
            .unwrap_or_default();
        Ok(i32::try_from(list.len() + external.len()).unwrap_or(i32::MAX))
    }
    /// The people outside caregraph in this chat, reached by SMS (care-team and case chats),
    /// oldest first.
    async fn external_members(&self, ctx: &Context<'_>) -> GqlResult<Vec<ExternalChatMember>> {
        let list = loader(ctx)
            .load_one(ExternalMembersOf(self.0.id))
            .await?
            .unwrap_or_default();
        viewer(ctx).audit.record_all(
            list.iter().map(|m| {
                AuditEntry::read(AuditEntity::ExternalChatMember, m.id).org(self.0.org_id)
            }),
        );
        Ok(list.into_iter().map(ExternalChatMember).collect())
    }
    /// Who opened it.
    async fn created_by(&self, ctx: &Context<'_>) -> GqlResult<User> {
        user_of(ctx, self.0.created_by).await
    }
    /// The appointment of a client chat (whoever may read the chat is one of its participants
    /// or an admin of its organisation, so may read the appointment too).
    async fn appointment(&self, ctx: &Context<'_>) -> GqlResult<Option<Appointment>> {
        match self.0.appointment_id {
            Some(id) => Ok(loader(ctx).load_one(id).await?.map(Appointment)),
            None => Ok(None),
        }
    }
    /// When the window opens (client chats).
    async fn allowed_from(&self) -> Option<DateTime<Utc>> {
        self.0.allowed_from
    }
    /// When the window ends (client chats).
    async fn allowed_until(&self) -> Option<DateTime<Utc>> {
        self.0.allowed_until
    }
    /// When it closed.
    async fn closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.closed_at
    }
    /// Why it closed.
    async fn close_reason(&self) -> Option<ChatStatusReason> {
        self.0.close_reason.map(Into::into)
    }
    /// Who closed it.
    async fn closed_by(&self, ctx: &Context<'_>) -> GqlResult<Option<User>> {
        match self.0.closed_by {
            Some(u) => user_of(ctx, u).await.map(Some),
            None => Ok(None),
        }
    }
    /// The chat provider and what it can answer.
    async fn provider(&self, ctx: &Context<'_>) -> ChatProviderInfo {
        let chats = &services(ctx).chats;
        ChatProviderInfo::new(chats.provider_name(), chats.capabilities())
    }
    /// The provider's channel type.
    async fn channel_type(&self) -> &str {
        &self.0.channel_type
    }
    /// The provider's channel id.
    async fn channel_id(&self) -> &str {
        &self.0.channel_id
    }
    /// `type:id`.
    async fn cid(&self) -> String {
        channel_of(&self.0).cid()
    }
    /// The Ethora room JID (null elsewhere).
    async fn room_jid(&self, ctx: &Context<'_>) -> Option<String> {
        services(ctx).chats.room_jid(&self.0)
    }
    /// The latest message (read from the provider, batched per page).
    async fn last_message(&self, ctx: &Context<'_>) -> GqlResult<Option<ChatMessage>> {
        Ok(self
            .state(ctx)
            .await?
            .and_then(|s| s.last_message)
            .map(Into::into))
    }
    /// Whether the provider's channel exists yet: `READY`, `PENDING` (queued), or `FAILED`
    /// (tried and failed; see `provisioningRetryAt`). A client that gets `PENDING` or `FAILED`
    /// waits for the `UPDATED` change (or `CURRENT` status event) that follows `READY`.
    async fn provisioning(&self, ctx: &Context<'_>) -> GqlResult<ProvisioningState> {
        Ok(self.provisioning_of(ctx).await?.0)
    }
    /// When a `FAILED` channel creation is tried next (null when it failed for good, or is not
    /// failed).
    async fn provisioning_retry_at(&self, ctx: &Context<'_>) -> GqlResult<Option<DateTime<Utc>>> {
        Ok(self.provisioning_of(ctx).await?.1)
    }
    /// The caller's unread messages (read from the provider, batched per page; 0 after
    /// `markChatRead`). Null where the provider keeps no read state
    /// (`provider.supportsUnreadCount` is false).
    async fn unread_count(&self, ctx: &Context<'_>) -> GqlResult<Option<i32>> {
        if !services(ctx).chats.capabilities().unread_counts {
            return Ok(None);
        }
        Ok(match self.state(ctx).await? {
            Some(state) => state
                .unread_count
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            // No channel at the provider yet: nothing to read.
            None => Some(0),
        })
    }
    /// The chat's history from the provider, newest first: `first` (1 to 100) messages older
    /// than the `before` cursor (an edge's cursor of the previous page); `pageInfo.hasNextPage`
    /// says whether older ones follow. Refused where the provider has no history API
    /// (`provider.supportsHistory` is false).
    async fn messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<ChatMessageConnection> {
        let first = first.unwrap_or(20);
        let max = i32::try_from(HISTORY_PAGE_MAX).unwrap_or(100);
        if !(1..=max).contains(&first) {
            return Err(
                AppError::bad_input("first", format!("must be between 1 and {max}")).into(),
            );
        }
        let before = before.as_deref().map(cursor_message).transpose()?;
        let page = services(ctx)
            .chats
            .history(
                viewer(ctx),
                &self.0,
                u32::try_from(first).unwrap_or(20),
                before.as_deref(),
            )
            .await?;
        let mut conn = Connection::new(before.is_some(), page.has_more);
        conn.edges.extend(
            page.messages
                .into_iter()
                .map(|m| Edge::new(message_cursor(&m.id), ChatMessage::from(m))),
        );
        Ok(conn)
    }
    /// The case of a case room (null for other chats, and for a caller who may not read the
    /// case).
    async fn case(&self, ctx: &Context<'_>) -> GqlResult<Option<Case>> {
        let Some(case) = self.case_of(ctx).await? else {
            return Ok(None);
        };
        let me = viewer(ctx).user()?.id;
        let (memberships, participants) = futures_util::try_join!(
            my_memberships(ctx),
            loader(ctx).load_one(CaseParticipantsOf(case.id)),
        )?;
        if !sees_case(
            &memberships.unwrap_or_default(),
            &participants.unwrap_or_default(),
            me,
            &case,
        ) {
            return Ok(None);
        }
        viewer(ctx)
            .audit
            .record(case_entry(AuditAction::Read, &case));
        Ok(Some(Case(case)))
    }
    /// The care team of a care-team chat (null for other chats). Whoever may read the chat
    /// (an OWNER/ADMIN of the organisation, or a member entitled to the team's chat now) may
    /// read the team.
    async fn care_team(&self, ctx: &Context<'_>) -> GqlResult<Option<CareTeam>> {
        Ok(self.care_team_of(ctx).await?.map(CareTeam))
    }
    /// The patient the chat is about: an appointment's, a case's or a care team's (null for
    /// other chats, and for a caller who may not see the patient's record: only staff of the
    /// patient's organisation and its guardians may).
    async fn patient(&self, ctx: &Context<'_>) -> GqlResult<Option<Patient>> {
        use domain::chat::ChatCategory as C;
        let subject: Option<(PatientId, OrgId)> = match self.0.category {
            C::Client => match self.0.appointment_id {
                Some(id) => loader(ctx)
                    .load_one(id)
                    .await?
                    .map(|a| (a.patient_id, a.org_id)),
                None => None,
            },
            C::Case => self
                .case_of(ctx)
                .await?
                .and_then(|c| c.patient_id.map(|p| (p, c.org_id))),
            C::CareTeam => self
                .care_team_of(ctx)
                .await?
                .map(|t| (t.patient_id, t.org_id)),
            C::Colleague | C::Group => None,
        };
        let Some((patient, org)) = subject else {
            return Ok(None);
        };
        let me = viewer(ctx).user()?.id;
        let (memberships, guardianships) = futures_util::try_join!(
            my_memberships(ctx),
            loader(ctx).load_one(GuardianshipsOf(me)),
        )?;
        if !sees_patient(
            &memberships.unwrap_or_default(),
            &guardianships.unwrap_or_default(),
            org,
            patient,
        ) {
            return Ok(None);
        }
        patient_of(ctx, patient).await.map(Some)
    }
    /// The latest messages, newest last (limit 1 to 100).
    async fn recent_messages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: i32,
    ) -> GqlResult<Vec<ChatMessage>> {
        if !(1..=100).contains(&limit) {
            return Err(AppError::bad_input("limit", "must be between 1 and 100").into());
        }
        let list = services(ctx)
            .chats
            .recent_messages(viewer(ctx), &self.0, u32::try_from(limit).unwrap_or(20))
            .await?;
        Ok(list.into_iter().map(Into::into).collect())
    }
}

/// Chat queries.
#[derive(Default)]
pub struct ChatQuery;

#[Object]
impl ChatQuery {
    /// A chat session: its members and the OWNER/ADMIN of its organisation may read it.
    async fn chat_session(&self, ctx: &Context<'_>, id: ID) -> GqlResult<ChatSession> {
        let (session, _) = services(ctx)
            .chats
            .session(viewer(ctx), ChatSessionId::parse(&id, "id")?)
            .await?;
        Ok(ChatSession::from(session))
    }

    /// The caller's chat sessions in an organisation, newest activity first (staff, or a
    /// client of one of its patients).
    async fn chat_sessions(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        category: Option<ChatCategory>,
        #[graphql(default_with = "Some(false)")] include_closed: Option<bool>,
        first: Option<i32>,
        after: Option<String>,
    ) -> GqlResult<Conn<ChatSession>> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let request = pagination::request(first, after)?;
        let has_previous = request.after.is_some();
        let page = services(ctx)
            .chats
            .list(
                viewer(ctx),
                org,
                category.map(Into::into),
                include_closed.unwrap_or(false),
                &request,
            )
            .await?;
        Ok(pagination::connection(
            page,
            has_previous,
            ChatSession::from,
        ))
    }
}

/// Input of `createGroupChat`.
#[derive(async_graphql::InputObject)]
pub struct CreateGroupChatInput {
    /// Title.
    pub title: String,
    /// Members besides the caller (who owns the group).
    pub member_ids: Vec<ID>,
    /// Broadcast mode: only the owner and admins post.
    #[graphql(default)]
    pub read_only: bool,
    /// Image.
    pub image_url: Option<String>,
    /// The channel id to use (else the slug of the title); create-or-get on it.
    pub channel_id: Option<String>,
}

/// Input of `updateGroupChat`; omitted fields stay, `imageUrl: null` clears.
#[derive(async_graphql::InputObject)]
pub struct UpdateGroupChatInput {
    /// Title.
    pub title: Option<String>,
    /// Image.
    pub image_url: async_graphql::MaybeUndefined<String>,
    /// Broadcast mode.
    pub read_only: Option<bool>,
}

/// Chat mutations.
#[derive(Default)]
pub struct ChatMutation;

#[Object]
impl ChatMutation {
    /// Opens (creates or gets) an appointment's chat.
    async fn open_appointment_chat(
        &self,
        ctx: &Context<'_>,
        appointment_id: ID,
    ) -> GqlResult<ChatSession> {
        let id = AppointmentId::parse(&appointment_id, "appointmentId")?;
        ChatSession::checked(
            ctx,
            services(ctx)
                .chats
                .open_appointment_chat(viewer(ctx), id)
                .await?,
        )
        .await
    }

    /// Opens (creates or gets) the 1:1 chat with a colleague of the same organisation.
    async fn open_direct_chat(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        colleague_id: ID,
    ) -> GqlResult<ChatSession> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let colleague = domain::UserId::parse(&colleague_id, "colleagueId")?;
        ChatSession::checked(
            ctx,
            services(ctx)
                .chats
                .open_direct_chat(viewer(ctx), org, colleague)
                .await?,
        )
        .await
    }

    /// Opens (creates or gets) a 1:1 chat with staff of another organisation; both organisations
    /// must allow network messaging.
    async fn open_network_direct_chat(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        colleague_id: ID,
        colleague_org_id: ID,
    ) -> GqlResult<ChatSession> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let colleague = domain::UserId::parse(&colleague_id, "colleagueId")?;
        let other = OrgId::parse(&colleague_org_id, "colleagueOrgId")?;
        ChatSession::checked(
            ctx,
            services(ctx)
                .chats
                .open_network_direct_chat(viewer(ctx), org, colleague, other)
                .await?,
        )
        .await
    }

    /// Creates (or gets, by channel id or the title's slug) a group; the caller owns it.
    async fn create_group_chat(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        input: CreateGroupChatInput,
    ) -> GqlResult<ChatSession> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let member_ids = parse_ids(&input.member_ids, "input.memberIds", domain::UserId::parse)?;
        let group = crate::services::chat::GroupInput {
            title: input.title,
            member_ids,
            read_only: input.read_only,
            image_url: input.image_url,
            channel_id: input.channel_id,
        };
        ChatSession::checked(
            ctx,
            services(ctx)
                .chats
                .create_group(viewer(ctx), org, group)
                .await?,
        )
        .await
    }

    /// Changes a group's title, image or broadcast mode (owner or org admin).
    async fn update_group_chat(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        input: UpdateGroupChatInput,
    ) -> GqlResult<ChatSession> {
        let change = crate::services::chat::GroupChange {
            title: input.title,
            image_url: match input.image_url {
                async_graphql::MaybeUndefined::Undefined => None,
                async_graphql::MaybeUndefined::Null => Some(None),
                async_graphql::MaybeUndefined::Value(v) => Some(Some(v)),
            },
            read_only: input.read_only,
        };
        ChatSession::checked(
            ctx,
            services(ctx)
                .chats
                .update_group(
                    viewer(ctx),
                    ChatSessionId::parse(&session_id, "sessionId")?,
                    change,
                )
                .await?,
        )
        .await
    }

    /// Adds and removes group members (owner or org admin); a system message records it.
    async fn update_group_members(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        add: Option<Vec<ID>>,
        remove: Option<Vec<ID>>,
    ) -> GqlResult<ChatSession> {
        let add = parse_ids(&add.unwrap_or_default(), "add", domain::UserId::parse)?;
        let remove = parse_ids(&remove.unwrap_or_default(), "remove", domain::UserId::parse)?;
        ChatSession::checked(
            ctx,
            services(ctx)
                .chats
                .update_group_members(
                    viewer(ctx),
                    ChatSessionId::parse(&session_id, "sessionId")?,
                    &add,
                    &remove,
                )
                .await?,
        )
        .await
    }

    /// Deletes a group here and at the provider (owner or org admin).
    async fn delete_group_chat(&self, ctx: &Context<'_>, session_id: ID) -> GqlResult<bool> {
        services(ctx)
            .chats
            .delete_group(viewer(ctx), ChatSessionId::parse(&session_id, "sessionId")?)
            .await?;
        Ok(true)
    }

    /// Deletes users at the chat provider in bulk (an OWNER/ADMIN; users who are active
    /// nowhere any more: no active membership, no guardian link). Returns how many were queued.
    async fn delete_chat_users(
        &self,
        ctx: &Context<'_>,
        org_id: ID,
        user_ids: Vec<ID>,
    ) -> GqlResult<i32> {
        let org = OrgId::parse(&org_id, "orgId")?;
        let ids = parse_ids(&user_ids, "userIds", domain::UserId::parse)?;
        let n = services(ctx)
            .chats
            .delete_chat_users(viewer(ctx), org, &ids)
            .await?;
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// The caller's chat token and what the provider SDK needs (rate limited per user).
    async fn issue_chat_token(&self, ctx: &Context<'_>) -> GqlResult<ChatCredentials> {
        let c = services(ctx).chats.issue_token(viewer(ctx)).await?;
        Ok(ChatCredentials {
            provider: c.provider.to_owned(),
            user_id: ID(c.user_id),
            token: c.token,
            expires_at: c.expires_at,
            api_key: c.api_key,
            app_id: c.app_id,
            connection: Json(c.connection),
        })
    }

    /// Closes a chat once (staff member of it or an org admin; a client gets FORBIDDEN).
    async fn close_chat_session(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
    ) -> GqlResult<ChatSession> {
        ChatSession::checked(
            ctx,
            services(ctx)
                .chats
                .close(viewer(ctx), ChatSessionId::parse(&session_id, "sessionId")?)
                .await?,
        )
        .await
    }

    /// Posts a message as the caller, a member of the chat, at the provider as the caller's
    /// provider user. The chat must be ACTIVE (a read-only group: its owner and the
    /// organisation's admins only). With `clientMessageId` (1 to 100 characters, unique per
    /// message in the caller's app) a retry posts nothing new and answers the message sent
    /// first. Refused where the provider has no server API for it
    /// (`provider.supportsServerSend` is false).
    async fn send_chat_message(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        text: String,
        client_message_id: Option<String>,
    ) -> GqlResult<ChatMessage> {
        Ok(services(ctx)
            .chats
            .send_message(
                viewer(ctx),
                ChatSessionId::parse(&session_id, "sessionId")?,
                &text,
                client_message_id.as_deref(),
            )
            .await?
            .into())
    }

    /// Marks the chat read for the caller up to its latest message (their read marker at the
    /// provider; the local provider keeps it): `unreadCount` is 0 afterwards. Changes nothing
    /// for a reader who is no member, or where the provider keeps no read state.
    async fn mark_chat_read(&self, ctx: &Context<'_>, session_id: ID) -> GqlResult<ChatSession> {
        let session = services(ctx)
            .chats
            .mark_read(viewer(ctx), ChatSessionId::parse(&session_id, "sessionId")?)
            .await?;
        Ok(ChatSession::from(session))
    }
}
