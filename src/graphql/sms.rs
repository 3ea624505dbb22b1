//! GraphQL for people outside caregraph in care-team and case chats, reached by SMS:
//! `ExternalChatMember`, `addExternalChatMember` and `removeExternalChatMember`.

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::{
    chat::ChatSession,
    context::{services, viewer},
    errors::GqlResult,
};
use crate::{
    audit::{AuditEntity, AuditEntry},
    domain::{
        ChatSessionId, ExternalMemberId,
        sms::{self, RecordedSms},
    },
};

/// The most recorded messages `localSmsMessages` returns.
const LOCAL_SMS_MAX: u64 = 100;

/// A person outside caregraph in a chat, reached by SMS at their phone number: every message
/// posted in the chat is relayed to them, and their replies are posted as them.
pub struct ExternalChatMember(pub sms::ExternalChatMember);

#[Object]
impl ExternalChatMember {
    /// Id (also their user id at the chat provider).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Name shown in the chat.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// E.164 phone number.
    async fn phone_number(&self) -> &str {
        &self.0.phone_number
    }
    /// Whether the number sent STOP: nothing is relayed to it, and its replies are not posted,
    /// until it sends START.
    async fn opted_out(&self) -> bool {
        self.0.opted_out
    }
    /// When they were added.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// The latest messages (at most 100, oldest first) the local SMS gateway recorded for them
    /// instead of sending (`CAREGRAPH_SMS_PROVIDER=local`, for demos and tests); empty with
    /// Twilio.
    async fn local_sms_messages(&self, ctx: &Context<'_>) -> GqlResult<Vec<LocalSmsMessage>> {
        let rows = services(ctx)
            .chats
            .local_sms_of(self.0.id, LOCAL_SMS_MAX)
            .await?;
        viewer(ctx).audit.record_all(
            rows.iter()
                .map(|r| AuditEntry::read(AuditEntity::Sms, &r.id)),
        );
        Ok(rows.into_iter().map(LocalSmsMessage).collect())
    }
}

/// An SMS the local gateway recorded instead of sending.
pub struct LocalSmsMessage(RecordedSms);

#[Object]
impl LocalSmsMessage {
    /// The gateway's id of it.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The recipient's number.
    async fn to(&self) -> &str {
        &self.0.to
    }
    /// The sender (`CAREGRAPH_SMS_FROM`).
    async fn from(&self) -> &str {
        &self.0.from
    }
    /// The text, with its prefix naming the author and the chat.
    async fn body(&self) -> &str {
        &self.0.body
    }
    /// When it was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// Input of `addExternalChatMember`.
#[derive(async_graphql::InputObject)]
pub struct ExternalChatMemberInput {
    /// Name shown in the chat (1 to 200 characters).
    pub name: String,
    /// E.164 phone number, e.g. `+447700900123` (spaces, dashes and brackets are ignored).
    pub phone_number: String,
}

/// SMS mutations.
#[derive(Default)]
pub struct SmsMutation;

#[Object]
impl SmsMutation {
    /// Adds a person outside caregraph to a care-team or case chat by phone number: staff of
    /// the chat's organisation, while the chat is open and the patient holds an active
    /// `MESSAGING` consent (`CONSENT_REQUIRED` otherwise). Messages posted in the chat are
    /// relayed to them by SMS; their replies are posted as them. A number already in the chat
    /// is a `CONFLICT`.
    async fn add_external_chat_member(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        input: ExternalChatMemberInput,
    ) -> GqlResult<ExternalChatMember> {
        let member = services(ctx)
            .chats
            .add_external_member(
                viewer(ctx),
                ChatSessionId::parse(&session_id, "sessionId")?,
                &input.name,
                &input.phone_number,
            )
            .await?;
        Ok(ExternalChatMember(member))
    }

    /// Removes an external member (staff of the chat's organisation): nothing more is relayed
    /// to them, messages still queued included.
    async fn remove_external_chat_member(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        external_member_id: ID,
    ) -> GqlResult<ChatSession> {
        let session = services(ctx)
            .chats
            .remove_external_member(
                viewer(ctx),
                ChatSessionId::parse(&session_id, "sessionId")?,
                ExternalMemberId::parse(&external_member_id, "externalMemberId")?,
            )
            .await?;
        Ok(ChatSession::from(session))
    }
}
