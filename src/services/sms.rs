//! The SMS relay's delivery side: the outbox hands it each queued SMS, and it sends it through
//! the configured [`SmsGateway`] only if the recipient is still an external member of the chat,
//! has not opted out, and outsiders may still take part there (so a removal, a STOP or a
//! revoked consent stops messages already queued). A send is recorded (SEND of `SMS`, by the
//! gateway's message id: never the number or the text).

use std::sync::Arc;

use super::chat::outsiders_allowed;
use crate::{
    audit::{AuditAction, AuditActor, AuditEntity, AuditEntry, AuditLog},
    clock::SharedClock,
    db,
    domain::{ChatSessionId, ExternalMemberId, sms::ExternalChatMember},
    error::AppResult,
    outbox::SmsRelay,
    providers::sms::{OutboundSms, ProviderError, SmsGateway},
};

/// Sends relayed chat messages to external members.
#[derive(Clone)]
pub struct SmsDelivery {
    db: db::Db,
    gateway: Arc<dyn SmsGateway>,
    clock: SharedClock,
    audit: AuditLog,
}

impl SmsDelivery {
    /// Builds the delivery over `gateway`.
    pub fn new(
        db: db::Db,
        gateway: Arc<dyn SmsGateway>,
        clock: SharedClock,
        audit: AuditLog,
    ) -> Self {
        Self {
            db,
            gateway,
            clock,
            audit,
        }
    }

    /// The gateway's name (`local` or `twilio`).
    pub fn gateway_name(&self) -> &'static str {
        self.gateway.name()
    }

    /// The member a queued SMS is for, if it should still be sent.
    async fn recipient(
        &self,
        member_id: &str,
        session_id: &str,
    ) -> AppResult<Option<(ExternalChatMember, crate::domain::OrgId)>> {
        let (Ok(member_id), Ok(session_id)) = (
            ExternalMemberId::parse(member_id, "member_id"),
            ChatSessionId::parse(session_id, "session_id"),
        ) else {
            return Ok(None);
        };
        let Some(member) = db::sms::find(&self.db, member_id).await? else {
            return Ok(None);
        };
        if member.opted_out || member.session_id != session_id {
            return Ok(None);
        }
        let Some(session) = db::chat_sessions::find(&self.db, session_id).await? else {
            return Ok(None);
        };
        if !outsiders_allowed(&self.db, &session, self.clock.now()).await? {
            return Ok(None);
        }
        Ok(Some((member, session.org_id)))
    }

    /// Records a send that happened (its failure is logged: the SMS is gone, a retry would send
    /// it twice).
    async fn record_sent(
        &self,
        member: &ExternalChatMember,
        org: crate::domain::OrgId,
        sid: &str,
    ) -> AppResult<()> {
        let txn = db::begin(&self.db).await?;
        db::sms::relayed(&txn, member.id, self.clock.now()).await?;
        self.audit
            .scope(AuditActor::System, None, None)
            .record_in(
                &txn,
                AuditEntry::new(AuditAction::Send, AuditEntity::Sms, sid).org(org),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl SmsRelay for SmsDelivery {
    async fn relay(
        &self,
        member_id: &str,
        session_id: &str,
        _message_id: &str,
        body: &str,
    ) -> Result<(), ProviderError> {
        let recipient = self.recipient(member_id, session_id).await.map_err(|e| {
            e.log_cause();
            ProviderError::Unavailable("reading the SMS recipient failed".into())
        })?;
        let Some((member, org)) = recipient else {
            tracing::debug!(
                member = member_id,
                "an SMS for a member who may no longer receive it was dropped"
            );
            return Ok(());
        };
        let sid = self
            .gateway
            .send(&OutboundSms {
                to: member.phone_number.clone(),
                body: body.to_owned(),
                reference: member.id.to_string(),
            })
            .await?;
        if let Err(e) = self.record_sent(&member, org, &sid).await {
            tracing::warn!(
                member = member_id,
                "an SMS was sent but recording it failed"
            );
            e.log_cause();
        }
        Ok(())
    }
}
