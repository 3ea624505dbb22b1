//! Closing sessions (one system message, a frozen channel), the latest messages for previews,
//! and chat tokens.

use sea_orm::DatabaseTransaction;

use super::{AfterCommit, ChatService, channel_of, chat_user, status_metadata};
use crate::{
    audit::{AuditAction, AuditActor, AuditEntity, AuditEntry},
    auth::Viewer,
    db,
    domain::{
        ChatSessionId, User,
        chat::{ChatRole, ChatSession, ChatStatus, StatusReason},
    },
    error::{AppError, AppResult},
    events::ChangeKind,
    outbox::{Entry, Operation},
    providers::chat::{ChatCredentials, ChatMessage, SystemMessage},
};

impl ChatService {
    /// Issues the viewer's chat token (rate limited per user).
    pub async fn issue_token(&self, viewer: &Viewer) -> AppResult<ChatCredentials> {
        let me = viewer.user()?;
        self.token_limit.check(&me.id)?;
        // Someone active nowhere (deactivated everywhere, no guardian link) has no chat to open.
        let active = db::organizations::memberships_of_users(&self.db, &[me.id])
            .await?
            .iter()
            .any(|m| m.active)
            || !db::patients::of_guardian(&self.db, me.id).await?.is_empty();
        if !active {
            return Err(AppError::Forbidden(
                "only active members and guardians get chat tokens".into(),
            ));
        }
        let credentials = self
            .stack
            .provider
            .issue_token(&chat_user(me), self.token_ttl)
            .await
            .map_err(|e| e.into_app(self.stack.provider.name()))?;
        // A token opens every chat of the user: recorded on the system chain, for the user.
        viewer
            .audit
            .record_in(
                &self.db,
                AuditEntry::new(AuditAction::IssueToken, AuditEntity::ChatToken, me.id),
            )
            .await?;
        Ok(credentials)
    }

    /// Closes a session once: a staff member of it or an org admin may (a client gets
    /// FORBIDDEN); closing a closed session changes and posts nothing.
    pub async fn close(&self, viewer: &Viewer, id: ChatSessionId) -> AppResult<ChatSession> {
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

    /// Closes a session for a reason, in a transaction of its own (see [`Self::close_in`]).
    pub(super) async fn close_for(
        &self,
        session: &ChatSession,
        by: Option<&User>,
        reason: StatusReason,
    ) -> AppResult<bool> {
        let txn = db::begin(&self.db).await?;
        let mut fx = AfterCommit::default();
        let closed = self.close_in(&txn, &mut fx, session, by, reason).await?;
        txn.commit().await?;
        self.finish(fx).await?;
        Ok(closed)
    }

    /// Closes a session once for a reason in the transaction `txn`, posting one system message
    /// and freezing the channel; `false` if it was closed already.
    pub(super) async fn close_in(
        &self,
        txn: &DatabaseTransaction,
        fx: &mut AfterCommit,
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
        if !db::chat_sessions::close(txn, session.id, by.map(|u| u.id), reason, now).await? {
            return Ok(false);
        }
        // The close is recorded with the change: by the user who closed it, else by what did.
        let actor = match (reason, by) {
            (_, Some(u)) => AuditActor::User(u.id),
            (StatusReason::WindowEnded, None) => AuditActor::Scheduler,
            (StatusReason::ProviderFrozen | StatusReason::ProviderDeleted, None) => {
                AuditActor::Webhook(self.stack.provider.name())
            }
            _ => AuditActor::System,
        };
        self.audit
            .scope(actor, None, None)
            .record_in(
                txn,
                AuditEntry::new(AuditAction::Update, AuditEntity::ChatSession, session.id)
                    .org(session.org_id),
            )
            .await?;
        fx.deliver(crate::outbox::enqueue(txn, &entries, now).await?);
        let closed = ChatSession {
            status: ChatStatus::Closed,
            closed_at: Some(now),
            closed_by: by.map(|u| u.id),
            close_reason: Some(reason),
            ..session.clone()
        };
        self.owe_status(fx, &closed, ChatStatus::Closed, reason);
        self.owe_change(txn, fx, &closed, ChangeKind::Closed, None, &[])
            .await?;
        Ok(true)
    }

    /// The latest messages of a session the viewer may read; one READ per message returned.
    pub async fn recent_messages(
        &self,
        viewer: &Viewer,
        s: &crate::services::access::Readable<ChatSession>,
        limit: u32,
    ) -> AppResult<Vec<ChatMessage>> {
        let messages = self
            .stack
            .provider
            .recent_messages(&channel_of(s), limit)
            .await
            .map_err(|e| e.into_app(self.stack.provider.name()))?;
        viewer.audit.record_all(
            messages
                .iter()
                .map(|m| AuditEntry::read(AuditEntity::ChatMessage, &m.id).org(s.org_id)),
        );
        Ok(messages)
    }
}
