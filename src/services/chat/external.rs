//! People outside caregraph in care-team and case chats, reached by SMS: staff of the chat's
//! organisation add them by phone number (with the patient's `MESSAGING` consent, as for any
//! outside party) and remove them; every message posted in the chat is relayed to them through
//! the outbox; their replies arrive through Twilio's webhook and are posted as their chat user;
//! STOP and START opt their number out and in again.

use sea_orm::DatabaseTransaction;

use super::{ChatService, channel_of};
use crate::{
    audit::{AuditAction, AuditActor, AuditEntity, AuditEntry, AuditScope},
    auth::Viewer,
    crypto::hmac_hex,
    db,
    domain::{
        CareTeamMemberId, ChatSessionId, ExternalMemberId, User, UserId,
        care::{CareTeam, ConsentScope, phone_number},
        chat::{ChatCategory, ChatSession, ChatStatus, SessionKey},
        people::required_text,
        sms::{ExternalChatMember, Keyword, chat_label, keyword, relayed_body},
    },
    error::{AppError, AppResult},
    events::ChangeKind,
    outbox::{Entry, Operation},
    providers::chat::{ChatMessage, ChatUser, UserMessage},
    services::access::{Readable, member_of_unrecorded},
};

/// The longest inbound SMS posted, in characters (a longer one is cut).
const INBOUND_TEXT_MAX: usize = 4000;

/// The webhook actor of inbound SMS.
const TWILIO: AuditActor = AuditActor::Webhook("twilio");

/// One inbound SMS as Twilio's webhook posts it (form parameters by name).
#[derive(Clone, Debug, Default)]
pub struct InboundSms {
    /// `MessageSid`.
    pub message_sid: String,
    /// `From`: the sender's number.
    pub from: String,
    /// `Body`.
    pub body: String,
}

impl InboundSms {
    /// Reads the parameters caregraph uses from a webhook's form.
    pub fn from_form(params: &[(String, String)]) -> Self {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let message_sid = match get("MessageSid") {
            sid if sid.is_empty() => get("SmsSid"),
            sid => sid,
        };
        Self {
            message_sid,
            from: get("From"),
            body: get("Body"),
        }
    }
}

/// The kind of chat as relayed messages name it (`None`: no external members there).
fn kind_label(category: ChatCategory) -> Option<&'static str> {
    match category {
        ChatCategory::CareTeam => Some("Care team"),
        ChatCategory::Case => Some("Case"),
        _ => None,
    }
}

/// Whether people outside caregraph may take part in `session` now: a care-team chat, or a case
/// chat, while the patient it is about (if any) holds an active `MESSAGING` consent; evaluated
/// on current facts at every add, relay and reply, so a revoked consent stops them at once.
pub(crate) async fn outsiders_allowed(
    c: &impl db::Source,
    session: &ChatSession,
    now: chrono::DateTime<chrono::Utc>,
) -> AppResult<bool> {
    if kind_label(session.category).is_none() {
        return Ok(false);
    }
    let keys = db::chat_sessions::keys_of(c, std::slice::from_ref(&session.id)).await?;
    let patient = match keys.first().map(|(_, k)| k) {
        Some(SessionKey::CareTeam(team)) => db::care_teams::find(c, *team)
            .await?
            .map(|t| Some(t.patient_id)),
        Some(SessionKey::Case(case)) => db::cases::find(c, *case).await?.map(|c| c.patient_id),
        _ => None,
    };
    let Some(patient) = patient else {
        return Ok(false);
    };
    let Some(patient) = patient else {
        // A case about no patient.
        return Ok(true);
    };
    Ok(db::consents::unrevoked(c, patient, ConsentScope::Messaging)
        .await?
        .iter()
        .any(|consent| consent.is_active(now)))
}

/// The provider message id of an inbound SMS: the same SMS (Twilio retries) gives the same id.
fn inbound_message_id(session: ChatSessionId, message_sid: &str) -> String {
    let digest = hmac_hex(
        b"caregraph inbound sms",
        format!("{session}\n{message_sid}").as_bytes(),
    );
    format!("cg-{}", &digest[..32])
}

/// A new external member of `session`, added at `now` (following a care-team member or not).
fn new_member(
    session: &ChatSession,
    name: String,
    phone_number: String,
    care_team_member_id: Option<CareTeamMemberId>,
    now: chrono::DateTime<chrono::Utc>,
) -> ExternalChatMember {
    ExternalChatMember {
        id: ExternalMemberId::new(),
        session_id: session.id,
        name,
        phone_number,
        opted_out: false,
        care_team_member_id,
        last_relayed_at: None,
        created_at: crate::domain::care::stored_precision(now),
    }
}

/// Writes `member` in `txn` with its CREATE record (in `scope`); the outbox entry that adds
/// their chat user to the channel, or `None` when the number is in the chat already.
async fn join_in(
    txn: &DatabaseTransaction,
    scope: &AuditScope,
    session: &ChatSession,
    member: &ExternalChatMember,
) -> AppResult<Option<Entry>> {
    if !db::sms::insert(txn, member).await? {
        return Ok(None);
    }
    scope
        .record_in(
            txn,
            AuditEntry::new(
                AuditAction::Create,
                AuditEntity::ExternalChatMember,
                member.id,
            )
            .org(session.org_id),
        )
        .await?;
    Ok(Some(Entry::new(
        format!("chat:{}:external:{}:add", session.id, member.id),
        Some(session.org_id.to_string()),
        Operation::AddMembers {
            channel: channel_of(session),
            users: vec![ChatUser {
                id: member.id.to_string(),
                name: member.name.clone(),
                image: None,
            }],
            message: None,
        },
    )))
}

/// Removes external member `member` of `session` in `txn` with its DELETE record (in
/// `scope`); the outbox entry that removes their chat user from the channel, or `None` when
/// there was no such member.
async fn leave_in(
    txn: &DatabaseTransaction,
    scope: &AuditScope,
    session: &ChatSession,
    member: ExternalMemberId,
) -> AppResult<Option<Entry>> {
    if !db::sms::remove(txn, session.id, member).await? {
        return Ok(None);
    }
    scope
        .record_in(
            txn,
            AuditEntry::new(AuditAction::Delete, AuditEntity::ExternalChatMember, member)
                .org(session.org_id),
        )
        .await?;
    Ok(Some(Entry::new(
        format!("chat:{}:external:{member}:remove", session.id),
        Some(session.org_id.to_string()),
        Operation::RemoveMembers {
            channel: channel_of(session),
            user_ids: vec![member.to_string()],
            message: None,
        },
    )))
}

impl ChatService {
    /// The external members of many sessions (unchecked: for loaders behind a read check).
    pub async fn external_members_of(
        &self,
        ids: &[ChatSessionId],
    ) -> AppResult<Vec<ExternalChatMember>> {
        db::sms::of_sessions(&self.db, ids).await
    }

    /// The latest `limit` messages the local SMS gateway recorded for an external member
    /// (unchecked: reached only through a session the viewer may read).
    pub async fn local_sms_of(
        &self,
        member: ExternalMemberId,
        limit: u64,
    ) -> AppResult<Vec<crate::domain::sms::RecordedSms>> {
        db::sms::local_of(&self.db, &member.to_string(), limit).await
    }

    /// Checks that the viewer may manage the external members of session `id`: they may read
    /// it, it is a care-team or case chat, and they are active staff of its organisation.
    async fn external_manager(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
    ) -> AppResult<Readable<ChatSession>> {
        let (session, _) = self.session(viewer, id).await?;
        if kind_label(session.category).is_none() {
            return Err(AppError::bad_input(
                "sessionId",
                "external members take part in care-team and case chats only",
            ));
        }
        match member_of_unrecorded(&self.db, viewer, session.org_id).await {
            Ok(_) => Ok(session),
            Err(AppError::NotFound(_)) => Err(AppError::Forbidden(
                "only staff of the chat's organization manage its external members".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Adds a person outside caregraph to a care-team or case chat by phone number (E.164):
    /// staff of the chat's organisation, while the chat is open and the patient holds an
    /// active `MESSAGING` consent. They join the channel at the provider as a chat user of
    /// their own (through the outbox), and count among the chat's members.
    pub async fn add_external_member(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
        name: &str,
        phone: &str,
    ) -> AppResult<ExternalChatMember> {
        if !self.capabilities().server_send {
            // Their replies could not be posted as them.
            return Err(super::messaging::not_offered(
                self.stack.provider.name(),
                "sessionId",
                "posting as a member",
                "supportsServerSend",
            ));
        }
        let session = self.external_manager(viewer, id).await?;
        let name = required_text(name, "input.name", 200)?;
        let phone = phone_number(phone, "input.phoneNumber")?;
        if self.status_now(&session) == ChatStatus::Closed {
            return Err(AppError::ChatNotOpen("the chat is CLOSED".into()));
        }
        let now = self.clock.now();
        if !outsiders_allowed(&self.db, &session, now).await? {
            return Err(AppError::ConsentRequired(
                "the patient has no active MESSAGING consent: people outside the organization join their chats only with one".into(),
            ));
        }
        let member = new_member(&session, name, phone, None, now);
        let txn = db::begin(&self.db).await?;
        let Some(entry) = join_in(&txn, &viewer.audit, &session, &member).await? else {
            return Err(AppError::Conflict(
                "that phone number is in this chat already".into(),
            ));
        };
        let mut fx = super::AfterCommit::default();
        fx.deliver(crate::outbox::enqueue(&txn, &[entry], now).await?);
        self.owe_change(
            &txn,
            &mut fx,
            &session,
            ChangeKind::MembersChanged,
            None,
            &[],
        )
        .await?;
        self.commit(txn, fx).await?;
        Ok(member)
    }

    /// Removes an external member (staff of the chat's organisation): nothing more is relayed to
    /// them from now on, messages still queued for them included, and they leave the channel at
    /// the provider (through the outbox).
    pub async fn remove_external_member(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
        member: ExternalMemberId,
    ) -> AppResult<Readable<ChatSession>> {
        let session = self.external_manager(viewer, id).await?;
        if db::sms::find(&self.db, member)
            .await?
            .is_some_and(|m| m.session_id == session.id && m.care_team_member_id.is_some())
        {
            return Err(AppError::Conflict(
                "a phone-only member of the care team: remove them from the care team".into(),
            ));
        }
        let txn = db::begin(&self.db).await?;
        let Some(entry) = leave_in(&txn, &viewer.audit, &session, member).await? else {
            return Err(AppError::NotFound("external chat member"));
        };
        let mut fx = super::AfterCommit::default();
        fx.deliver(crate::outbox::enqueue(&txn, &[entry], self.clock.now()).await?);
        self.owe_change(
            &txn,
            &mut fx,
            &session,
            ChangeKind::MembersChanged,
            None,
            &[],
        )
        .await?;
        self.commit(txn, fx).await?;
        Ok(session)
    }

    /// Brings a care team's phone-only members into its chat as external members (in the team
    /// change's transaction `txn`): one who joined the team joins the chat, one who left it
    /// leaves. A number added to the chat by hand already stays as it is.
    pub(super) async fn sync_care_team_externals(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut super::AfterCommit,
        team: &CareTeam,
        by: &User,
    ) -> AppResult<()> {
        let Some(session) = super::care_teams::team_chat_of(txn, &team.id).await? else {
            return Ok(());
        };
        let phone_only: Vec<(CareTeamMemberId, String, String)> =
            db::care_teams::members_of(txn, &[team.id])
                .await?
                .into_iter()
                .filter(|m| m.user_id.is_none())
                .filter_map(|m| {
                    let name = m
                        .display_name
                        .unwrap_or_else(|| "Outside clinician".to_owned());
                    m.phone.map(|p| (m.id, name, p))
                })
                .collect();
        let current = db::sms::of_sessions(txn, std::slice::from_ref(&session.id)).await?;
        let now = self.clock.now();
        let scope = self.audit.scope(AuditActor::User(by.id), None, None);
        let mut entries = Vec::new();
        for (member_id, name, phone) in phone_only.iter().filter(|(id, _, phone)| {
            !current
                .iter()
                .any(|e| e.care_team_member_id == Some(*id) || e.phone_number == *phone)
        }) {
            let external = new_member(&session, name.clone(), phone.clone(), Some(*member_id), now);
            entries.extend(join_in(txn, &scope, &session, &external).await?);
        }
        for gone in current.iter().filter(|e| {
            e.care_team_member_id
                .is_some_and(|id| !phone_only.iter().any(|(m, _, _)| *m == id))
        }) {
            entries.extend(leave_in(txn, &scope, &session, gone.id).await?);
        }
        if !entries.is_empty() {
            fx.deliver(crate::outbox::enqueue(txn, &entries, now).await?);
        }
        Ok(())
    }

    /// The outbox rows that relay message `message_id` by `author` to the session's external
    /// members who have not opted out (all but `except`, its author when they are one); none
    /// while outsiders may not take part. Keyed by message and member, so a message reported
    /// twice (sent through caregraph, then by the provider's webhook) is relayed once.
    pub(super) async fn relay_entries(
        &self,
        c: &impl db::Source,
        session: &ChatSession,
        message_id: &str,
        author: &str,
        text: &str,
        except: Option<ExternalMemberId>,
    ) -> AppResult<Vec<Entry>> {
        let Some(kind) = kind_label(session.category) else {
            return Ok(Vec::new());
        };
        let recipients: Vec<ExternalChatMember> =
            db::sms::of_sessions(c, std::slice::from_ref(&session.id))
                .await?
                .into_iter()
                .filter(|m| !m.opted_out && Some(m.id) != except)
                .collect();
        if recipients.is_empty() || !outsiders_allowed(c, session, self.clock.now()).await? {
            return Ok(Vec::new());
        }
        let body = relayed_body(author, &chat_label(kind, session.id), text);
        Ok(recipients
            .into_iter()
            .map(|m| {
                Entry::new(
                    format!("sms:{message_id}:{}", m.id),
                    Some(session.org_id.to_string()),
                    Operation::SendSms {
                        member_id: m.id.to_string(),
                        session_id: session.id.to_string(),
                        message_id: message_id.to_owned(),
                        body: body.clone(),
                    },
                )
            })
            .collect())
    }

    /// Queues the relay of a message the provider reported (posted through a client SDK, or
    /// through caregraph: then its rows exist and nothing is added). System messages are not
    /// relayed.
    pub(super) async fn relay_reported(
        &self,
        session: &ChatSession,
        message: &ChatMessage,
    ) -> AppResult<()> {
        if message.system {
            return Ok(());
        }
        let Some(author) = message.author.as_deref() else {
            return Ok(());
        };
        let externals = db::sms::of_sessions(&self.db, std::slice::from_ref(&session.id)).await?;
        if externals.is_empty() {
            return Ok(());
        }
        let (name, except) = match externals.iter().find(|m| m.id.to_string() == author) {
            Some(m) => (m.name.clone(), Some(m.id)),
            None => {
                let user = match UserId::parse(author, "author") {
                    Ok(u) => db::users::find(&self.db, u).await?,
                    Err(_) => None,
                };
                match user {
                    Some(u) => (u.display_name, None),
                    // Not a person caregraph knows: not relayed.
                    None => return Ok(()),
                }
            }
        };
        let entries = self
            .relay_entries(&self.db, session, &message.id, &name, &message.text, except)
            .await?;
        if !entries.is_empty() {
            crate::outbox::enqueue(&self.db, &entries, self.clock.now()).await?;
            self.outbox.wake();
        }
        Ok(())
    }

    /// Applies an inbound SMS (verified by the webhook): STOP and START opt the number out of
    /// and back into every chat it is in; any other text is posted, as the external member's
    /// chat user, in the open chat that last relayed a message to them (and relayed to the
    /// chat's other external members). A number caregraph does not know, one that opted out,
    /// or a chat outsiders may no longer take part in posts nothing. A provider failure is an
    /// error: the delivery stays unprocessed and the sweep tries again.
    pub async fn sms_inbound(&self, sms: &InboundSms) -> AppResult<()> {
        let Ok(phone) = phone_number(&sms.from, "From") else {
            return Ok(());
        };
        let now = self.clock.now();
        match keyword(&sms.body) {
            Some(k @ (Keyword::OptOut | Keyword::OptIn)) => {
                let opted_out = k == Keyword::OptOut;
                let members = db::sms::by_phone(&self.db, &phone).await?;
                let txn = db::begin(&self.db).await?;
                db::sms::set_opted_out(&txn, &phone, opted_out).await?;
                let scope = self.audit.scope(TWILIO, None, None);
                for m in members.iter().filter(|m| m.opted_out != opted_out) {
                    let org = db::chat_sessions::find(&txn, m.session_id)
                        .await?
                        .map(|s| s.org_id);
                    let mut entry =
                        AuditEntry::new(AuditAction::Update, AuditEntity::ExternalChatMember, m.id);
                    if let Some(org) = org {
                        entry = entry.org(org);
                    }
                    scope.record_in(&txn, entry).await?;
                }
                txn.commit().await?;
                return Ok(());
            }
            Some(Keyword::Help) => return Ok(()),
            None => {}
        }
        let text: String = sms.body.trim().chars().take(INBOUND_TEXT_MAX).collect();
        if text.is_empty() || sms.message_sid.is_empty() {
            return Ok(());
        }
        let mut target = None;
        for member in db::sms::by_phone(&self.db, &phone).await? {
            if member.opted_out {
                continue;
            }
            let Some(session) = db::chat_sessions::find(&self.db, member.session_id).await? else {
                continue;
            };
            if self.status_now(&session) == ChatStatus::Active
                && outsiders_allowed(&self.db, &session, now).await?
            {
                target = Some((member, session));
                break;
            }
        }
        if !self.capabilities().server_send {
            tracing::info!("an inbound SMS cannot be posted: the chat provider has no server send");
            return Ok(());
        }
        let Some((member, session)) = target else {
            tracing::info!("an inbound SMS matched no open chat of an external member; not posted");
            return Ok(());
        };
        let message = UserMessage {
            id: inbound_message_id(session.id, &sms.message_sid),
            author: member.id.to_string(),
            text,
        };
        let provider = self.stack.provider.name();
        let sent = self
            .stack
            .provider
            .send_message(&channel_of(&session), &message)
            .await
            .map_err(|e| e.into_app(provider))?;
        let txn = db::begin(&self.db).await?;
        if sent.fresh {
            db::chat_sessions::touch(&txn, session.id, sent.message.sent_at).await?;
            self.audit
                .scope(TWILIO, None, None)
                .record_in(
                    &txn,
                    super::messaging::sent_record(&sent.message.id, session.org_id),
                )
                .await?;
        }
        // Queued again on a repeat: the keys make it once.
        let entries = self
            .relay_entries(
                &txn,
                &session,
                &sent.message.id,
                &member.name,
                &message.text,
                Some(member.id),
            )
            .await?;
        crate::outbox::enqueue(&txn, &entries, now).await?;
        txn.commit().await?;
        self.outbox.wake();
        if sent.fresh {
            self.announce_change(&session, ChangeKind::Message, Some(sent.message), &[])
                .await;
        }
        Ok(())
    }
}
