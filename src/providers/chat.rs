//! The chat provider behind one object-safe trait, [`ChatProvider`], with four adapters: `local`
//! (caregraph's own database, the embedded default), Stream, Sendbird and Ethora.
//!
//! Every method is batch-friendly (many users in one call, many channels read in one call) and
//! idempotent where the outbox may repeat it: creating an existing channel, adding a member who
//! is in, deleting what is gone, and posting a system message whose id was used all succeed.

pub mod ethora;
pub mod local;
pub mod sendbird;
pub mod stream;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::error::ProviderError;

/// A person as the chat provider knows them (the id is caregraph's user id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUser {
    /// caregraph's user id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    pub image: Option<String>,
}

/// The channel type of every caregraph channel (Stream's type, Sendbird's `custom_type`).
pub const CHANNEL_TYPE: &str = "messaging";

/// Which channel: the provider's channel type and id (`cid` = `type:id`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelRef {
    /// The channel type (Stream's type, Sendbird's `custom_type`; Ethora ignores it).
    pub channel_type: String,
    /// The channel id: at most 64 characters of `a-z 0-9 _ -`.
    pub channel_id: String,
}

impl ChannelRef {
    /// `type:id`.
    pub fn cid(&self) -> String {
        format!("{}:{}", self.channel_type, self.channel_id)
    }
}

/// A channel to create (or get, when it exists).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// Which channel.
    pub channel: ChannelRef,
    /// Who creates it (a caregraph user id, upserted first).
    pub created_by: String,
    /// Its members' user ids.
    pub members: Vec<String>,
    /// Channel name shown in clients.
    pub name: Option<String>,
    /// Channel image.
    pub image: Option<String>,
    /// Custom data (`chatCategory`, `orgId`, …), flattened or stored as the provider does.
    pub metadata: Map<String, Value>,
    /// Whether it starts frozen.
    pub frozen: bool,
}

/// A system message: `id` makes posting it idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemMessage {
    /// A deterministic id (a repeat with the same id posts nothing new).
    pub id: String,
    /// The text.
    pub text: String,
}

/// A member's message posted through caregraph: `id` makes posting it idempotent (a repeat with
/// the same id posts nothing new and answers the message posted first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMessage {
    /// A deterministic id (derived from the session, the author and the client's message id).
    pub id: String,
    /// The author's user id (a member of the channel).
    pub author: String,
    /// The text.
    pub text: String,
}

/// A message as the provider answered a send: new, or the one a repeated id posted before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// The message.
    pub message: ChatMessage,
    /// Whether this call posted it (`false`: its id was posted before).
    pub fresh: bool,
}

/// A message as previews show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The provider's message id.
    pub id: String,
    /// Text.
    pub text: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// The author's user id (`None` for the system).
    pub author: Option<String>,
    /// Whether it is a system message.
    pub system: bool,
}

/// A channel's state, read in batches for lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// Which channel.
    pub channel: ChannelRef,
    /// The latest message.
    pub last_message: Option<ChatMessage>,
    /// Members.
    pub member_count: u32,
    /// Whether it is frozen.
    pub frozen: bool,
    /// Unread messages of the user the read was made for (`None` where the provider keeps no
    /// read state: see [`Capabilities::unread_counts`]).
    pub unread_count: Option<u32>,
}

/// What a client SDK needs to connect as one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatCredentials {
    /// `local`, `stream`, `sendbird` or `ethora`.
    pub provider: &'static str,
    /// The user id at the provider.
    pub user_id: String,
    /// The token.
    pub token: String,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Stream's API key.
    pub api_key: Option<String>,
    /// Sendbird's or Ethora's app id.
    pub app_id: Option<String>,
    /// Further connection settings (Ethora's XMPP host and conference domain, …).
    pub connection: Value,
}

/// What a provider can do beyond the common core (every provider creates channels, manages
/// members, keeps custom data and the frozen flag, posts system messages and issues tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `recent_messages` and `ChannelState::last_message` come from the provider.
    pub message_history: bool,
    /// `ChannelState::unread_count` comes from the provider.
    pub unread_counts: bool,
    /// The provider itself refuses messages in a frozen channel (not only caregraph's apps).
    pub enforces_freeze: bool,
    /// A repeated system-message id posts nothing even after a restart.
    pub durable_message_dedup: bool,
    /// `revoke_tokens` makes tokens the provider accepted stop working before they expire.
    pub revokes_tokens: bool,
    /// `send_message` posts as a member through the server API.
    pub server_send: bool,
    /// `history` pages through a channel's messages.
    pub history: bool,
    /// `mark_read` keeps a member's read marker at the provider.
    pub read_markers: bool,
}

impl Capabilities {
    /// Everything.
    pub const FULL: Self = Self {
        message_history: true,
        unread_counts: true,
        enforces_freeze: true,
        durable_message_dedup: true,
        revokes_tokens: true,
        server_send: true,
        history: true,
        read_markers: true,
    };
}

/// A chat provider.
#[async_trait]
pub trait ChatProvider: Send + Sync + 'static {
    /// `local`, `stream`, `sendbird` or `ethora`.
    fn name(&self) -> &'static str;

    /// What this provider can do beyond the common core.
    fn capabilities(&self) -> Capabilities {
        Capabilities::FULL
    }

    /// How many channels one `read_channels` call may ask for.
    fn read_batch_limit(&self) -> usize;

    /// The Ethora room JID of a channel (`None` elsewhere).
    fn room_jid(&self, _channel: &ChannelRef) -> Option<String> {
        None
    }

    /// Creates or updates many users in as few calls as the provider allows.
    async fn upsert_users(&self, users: &[ChatUser]) -> Result<(), ProviderError>;

    /// Deletes many users (retention); unknown users count as deleted.
    async fn delete_users(&self, user_ids: &[String]) -> Result<(), ProviderError>;

    /// Creates a channel, or leaves an existing one as it is (members are added).
    async fn create_channel(&self, spec: &ChannelSpec) -> Result<(), ProviderError>;

    /// Sets and unsets custom data without touching other keys.
    async fn update_metadata(
        &self,
        channel: &ChannelRef,
        set: &Map<String, Value>,
        unset: &[String],
    ) -> Result<(), ProviderError>;

    /// Adds members, optionally with a system message.
    async fn add_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError>;

    /// Removes members, optionally with a system message.
    async fn remove_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError>;

    /// Freezes (nobody may post) or unfreezes a channel.
    async fn set_frozen(&self, channel: &ChannelRef, frozen: bool) -> Result<(), ProviderError>;

    /// Posts a system message once (a repeated id posts nothing).
    async fn send_system_message(
        &self,
        channel: &ChannelRef,
        message: &SystemMessage,
    ) -> Result<(), ProviderError>;

    /// Deletes a channel; one that is gone already counts as deleted.
    async fn delete_channel(&self, channel: &ChannelRef) -> Result<(), ProviderError>;

    /// Revokes the user's tokens issued before `issued_before` where the provider can (see
    /// [`Capabilities::revokes_tokens`]); a user the provider does not know counts as done.
    /// Tokens are per user, not per organisation: apps of a user who is still active elsewhere
    /// reconnect with a fresh token.
    async fn revoke_tokens(
        &self,
        user_id: &str,
        issued_before: DateTime<Utc>,
    ) -> Result<(), ProviderError>;

    /// Issues a user token valid for `ttl`.
    async fn issue_token(
        &self,
        user: &ChatUser,
        ttl: Duration,
    ) -> Result<ChatCredentials, ProviderError>;

    /// Reads many channels' state for one user, in one logical call (at most
    /// `read_batch_limit` channels). Channels the provider does not know are left out.
    async fn read_channels(
        &self,
        channels: &[ChannelRef],
        for_user: &str,
    ) -> Result<Vec<ChannelState>, ProviderError>;

    /// The latest messages of a channel, newest last.
    async fn recent_messages(
        &self,
        channel: &ChannelRef,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, ProviderError>;

    /// Posts a member's message once (a repeated id posts nothing and answers the first one);
    /// providers without [`Capabilities::server_send`] refuse.
    async fn send_message(
        &self,
        _channel: &ChannelRef,
        _message: &UserMessage,
    ) -> Result<Sent, ProviderError> {
        Err(unsupported(self.name(), "posting as a member"))
    }

    /// At most `limit` messages of a channel older than the message `before` (the newest when
    /// `None`), newest first; providers without [`Capabilities::history`] refuse.
    async fn history(
        &self,
        _channel: &ChannelRef,
        _limit: u32,
        _before: Option<&str>,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        Err(unsupported(self.name(), "message history"))
    }

    /// Moves a member's read marker to the channel's latest message; providers without
    /// [`Capabilities::read_markers`] keep none and succeed without a call.
    async fn mark_read(&self, _channel: &ChannelRef, _user_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// The refusal of an operation `provider`'s API does not offer (not retried, nothing sent).
pub fn unsupported(provider: &str, what: &str) -> ProviderError {
    ProviderError::Rejected {
        status: 501,
        message: format!("{provider} offers no server API for {what}"),
    }
}

/// Percent-encodes one URL path segment (everything but RFC 3986 unreserved characters), for
/// the adapters that put ids in paths (Sendbird, Ethora).
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads `channels` with `read_batch`, at most `limit` channels per call, one call after another
/// (the adapters whose provider caps a channel query: Stream and Sendbird).
async fn read_in_batches<'a, F, Fut>(
    channels: &'a [ChannelRef],
    limit: usize,
    mut read_batch: F,
) -> Result<Vec<ChannelState>, ProviderError>
where
    F: FnMut(&'a [ChannelRef]) -> Fut,
    Fut: Future<Output = Result<Vec<ChannelState>, ProviderError>>,
{
    let mut out = Vec::with_capacity(channels.len());
    for chunk in channels.chunks(limit) {
        out.extend(read_batch(chunk).await?);
    }
    Ok(out)
}

/// Posts the system message of a membership change, if it has one (for the adapters that send
/// it apart from the change).
async fn send_note(
    provider: &impl ChatProvider,
    channel: &ChannelRef,
    message: Option<&SystemMessage>,
) -> Result<(), ProviderError> {
    match message {
        Some(message) => provider.send_system_message(channel, message).await,
        None => Ok(()),
    }
}

/// The configured provider, and the local one when that is it (it also serves
/// `sendChatMessage`).
#[derive(Clone)]
pub struct ChatStack {
    /// The provider.
    pub provider: Arc<dyn ChatProvider>,
    /// The local provider, when configured.
    pub local: Option<local::LocalChat>,
}

/// Builds the provider `CAREGRAPH_CHAT_PROVIDER` names.
pub fn build(
    config: &crate::config::Config,
    db: crate::db::Db,
    client: reqwest::Client,
    metrics: &Arc<crate::telemetry::metrics::Metrics>,
) -> anyhow::Result<ChatStack> {
    use super::http::{ProviderHttp, Resilience};
    use crate::config::ChatProviderKind;
    let chat = &config.chat;
    let resilience = Resilience {
        timeout: chat.timeout,
        attempts: chat.retries + 1,
        breaker_threshold: chat.breaker_threshold.max(1),
        breaker_cooldown: chat.breaker_cooldown,
        ..Resilience::default()
    };
    let missing = |what: &str| anyhow::anyhow!("{what} settings are missing");
    Ok(match chat.provider {
        ChatProviderKind::Local => {
            let local = local::LocalChat::new(
                db,
                crate::auth::derive_key(&config.auth.jwt_secret, "caregraph local chat tokens"),
            );
            ChatStack {
                provider: Arc::new(local.clone()),
                local: Some(local),
            }
        }
        ChatProviderKind::Stream => ChatStack {
            provider: Arc::new(stream::StreamChat::new(
                chat.stream.as_ref().ok_or_else(|| missing("Stream"))?,
                chat.token_ttl,
                ProviderHttp::new("stream", client, resilience).with_metrics(metrics.clone()),
            )),
            local: None,
        },
        ChatProviderKind::Sendbird => ChatStack {
            provider: Arc::new(sendbird::Sendbird::new(
                chat.sendbird.as_ref().ok_or_else(|| missing("Sendbird"))?,
                chat.token_ttl,
                ProviderHttp::new("sendbird", client, resilience).with_metrics(metrics.clone()),
            )),
            local: None,
        },
        ChatProviderKind::Ethora => ChatStack {
            provider: Arc::new(ethora::Ethora::new(
                chat.ethora.as_ref().ok_or_else(|| missing("Ethora"))?,
                chat.token_ttl,
                ProviderHttp::new("ethora", client, resilience).with_metrics(metrics.clone()),
            )),
            local: None,
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_keep_unreserved_characters_and_escape_the_rest() {
        assert_eq!(super::path_segment("a_b-c.d~"), "a_b-c.d~");
        assert_eq!(super::path_segment("a/b c"), "a%2Fb%20c");
    }
}
