//! Messaging through caregraph on every provider that has a server API for it: posting as the
//! caller's provider user (idempotent on the client's message id, the session rules checked
//! here before the provider is called), paging through the history, and the caller's read
//! marker. What a provider cannot do is refused with a clear error and said by its
//! [`crate::providers::chat::Capabilities`], never faked.

use super::{ChatService, channel_of};
use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    auth::Viewer,
    crypto::hmac_hex,
    db,
    domain::{
        ChatSessionId,
        chat::{ChatRole, ChatSession, ChatStatus},
    },
    error::{AppError, AppResult},
    events::ChangeKind,
    providers::chat::{ChatMessage, ProviderError, UserMessage},
    services::access::Readable,
};

/// The largest history page (`first`).
pub const HISTORY_PAGE_MAX: u32 = 100;

/// The longest client message id, in characters.
const CLIENT_MESSAGE_ID_MAX: usize = 100;

/// The longest message, in characters.
const TEXT_MAX: usize = 4000;

/// One page of a session's history, newest first.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    /// The messages, newest first.
    pub messages: Vec<ChatMessage>,
    /// Whether older messages follow.
    pub has_more: bool,
}

/// The provider message id of a client's message: the same session, author and client id give
/// the same id, so a repeated send is recognised by the provider (`cg-` and 32 hex digits,
/// valid at every provider).
fn message_id(session: ChatSessionId, author: &str, client_id: &str) -> String {
    let digest = hmac_hex(
        b"caregraph chat message id",
        format!("{session}\n{author}\n{client_id}").as_bytes(),
    );
    format!("cg-{}", &digest[..32])
}

/// The record of a message posted in a chat of `org` (its id only, never its text).
pub(super) fn sent_record(message_id: &str, org: crate::domain::OrgId) -> AuditEntry {
    AuditEntry::new(AuditAction::Send, AuditEntity::ChatMessage, message_id).org(org)
}

/// The refusal of an operation the configured provider has no server API for.
pub(super) fn not_offered(provider: &str, field: &str, what: &str, flag: &str) -> AppError {
    AppError::bad_input(
        field,
        format!(
            "the {provider} chat provider has no server API for {what}: use its client SDK \
             (provider.{flag} is false)"
        ),
    )
}

impl ChatService {
    /// Posts `text` as the viewer, a member of the session, at the provider as the viewer's
    /// provider user. With `client_message_id` the send is idempotent: the same id again posts
    /// nothing and answers the message posted first. The session must be `ACTIVE`, and a
    /// read-only group takes posts from its owner and the organisation's admins only; all of it
    /// is checked here, before the provider is called.
    pub async fn send_message(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
        text: &str,
        client_message_id: Option<&str>,
    ) -> AppResult<ChatMessage> {
        let provider = self.stack.provider.name();
        if !self.capabilities().server_send {
            return Err(not_offered(
                provider,
                "sessionId",
                "posting as a member",
                "supportsServerSend",
            ));
        }
        let (session, role) = self.session(viewer, id).await?;
        let me = viewer.user()?;
        if role.is_none() {
            return Err(AppError::Forbidden("only members post in a chat".into()));
        }
        if session.read_only && role != Some(ChatRole::Owner) {
            let admin = db::organizations::find_membership(&self.db, session.org_id, me.id)
                .await?
                .is_some_and(|m| m.active && m.role.manages_organization());
            if !admin {
                return Err(AppError::Forbidden(
                    "only the owner and organization admins post in a read-only group".into(),
                ));
            }
        }
        let client_id = match client_message_id.map(str::trim) {
            Some(c) if c.is_empty() || c.chars().count() > CLIENT_MESSAGE_ID_MAX => {
                return Err(AppError::bad_input(
                    "clientMessageId",
                    format!("a client message id has 1 to {CLIENT_MESSAGE_ID_MAX} characters"),
                ));
            }
            other => other,
        };
        let text = text.trim();
        if text.is_empty() || text.chars().count() > TEXT_MAX {
            return Err(AppError::bad_input(
                "text",
                format!("a message has 1 to {TEXT_MAX} characters"),
            ));
        }
        let status = self.status_now(&session);
        if status != ChatStatus::Active {
            return Err(AppError::ChatNotOpen(format!(
                "the chat is {}",
                status.as_str()
            )));
        }
        let author = me.id.to_string();
        let message = UserMessage {
            id: match client_id {
                Some(c) => message_id(session.id, &author, c),
                None => format!("cg-{}", uuid::Uuid::now_v7().simple()),
            },
            author,
            text: text.to_owned(),
        };
        let sent = self
            .stack
            .provider
            .send_message(&channel_of(&session), &message)
            .await
            .map_err(|e| match e {
                // The local provider's own refusals (frozen, no member) say the chat is closed
                // to the caller; caregraph's checks above make them rare.
                ProviderError::Rejected {
                    status: 403,
                    message,
                } => AppError::ChatNotOpen(message),
                other => other.into_app(provider),
            })?;
        // Relayed by SMS to the chat's external members through the outbox, keyed by message
        // and member: a repeat queues nothing new but recovers a relay its first try lost.
        let relays = self
            .relay_entries(
                &self.db,
                &session,
                &sent.message.id,
                &me.display_name,
                &message.text,
                None,
            )
            .await?;
        if !sent.fresh {
            // A repeat: the first send recorded and announced it.
            if !relays.is_empty() {
                crate::outbox::enqueue(&self.db, &relays, self.clock.now()).await?;
                self.outbox.wake();
            }
            return Ok(sent.message);
        }
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::touch(&txn, session.id, sent.message.sent_at).await?;
        crate::outbox::enqueue(&txn, &relays, self.clock.now()).await?;
        viewer
            .audit
            .record_in(&txn, sent_record(&sent.message.id, session.org_id))
            .await?;
        txn.commit().await?;
        if !relays.is_empty() {
            self.outbox.wake();
        }
        self.announce_change(
            &session,
            ChangeKind::Message,
            Some(sent.message.clone()),
            &[],
        )
        .await;
        Ok(sent.message)
    }

    /// A page of at most `first` messages of a session the viewer may read, older than the
    /// message `before` (the newest when `None`), newest first; one READ per message returned.
    pub async fn history(
        &self,
        viewer: &Viewer,
        s: &Readable<ChatSession>,
        first: u32,
        before: Option<&str>,
    ) -> AppResult<HistoryPage> {
        let provider = self.stack.provider.name();
        if !self.capabilities().history {
            return Err(not_offered(
                provider,
                "messages",
                "message history",
                "supportsHistory",
            ));
        }
        let first = first.clamp(1, HISTORY_PAGE_MAX);
        let mut messages = self
            .stack
            .provider
            .history(&channel_of(s), first + 1, before)
            .await
            .map_err(|e| match (e, before) {
                // A cursor naming no message of this chat.
                (
                    ProviderError::NotFound | ProviderError::Rejected { status: 400, .. },
                    Some(_),
                ) => AppError::bad_input("before", "not a cursor of this chat's messages"),
                (e, _) => e.into_app(provider),
            })?;
        let has_more = messages.len() > first as usize;
        messages.truncate(first as usize);
        viewer.audit.record_all(
            messages
                .iter()
                .map(|m| AuditEntry::read(AuditEntity::ChatMessage, &m.id).org(s.org_id)),
        );
        Ok(HistoryPage { messages, has_more })
    }

    /// Moves the viewer's read marker in a session they may read to its latest message, so that
    /// their `unreadCount` is 0 (a reader who is no member has no marker: nothing changes). A
    /// provider without read markers keeps none and is not called.
    pub async fn mark_read(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
    ) -> AppResult<Readable<ChatSession>> {
        let (session, role) = self.session(viewer, id).await?;
        if role.is_some() && self.capabilities().read_markers {
            let me = viewer.user()?;
            self.stack
                .provider
                .mark_read(&channel_of(&session), &me.id.to_string())
                .await
                .map_err(|e| e.into_app(self.stack.provider.name()))?;
        }
        Ok(session)
    }
}
