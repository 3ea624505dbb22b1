//! The local chat provider: channels, members and messages in caregraph's own database, with
//! HS256 user tokens, so every chat feature works end to end without an account anywhere. It
//! behaves like the real providers: creating is idempotent, a frozen channel refuses messages,
//! a repeated system-message id posts nothing, deleting what is gone succeeds.
//!
//! Its user tokens open nothing by themselves: local chat is reached through caregraph's own
//! API (`sendChatMessage`, the chat reads), which checks the caller's caregraph session and
//! membership on every request. So `revoke_tokens` has nothing to revoke and succeeds at once;
//! a deactivated user loses local chat with their caregraph access.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sea_orm::DbErr;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::{
    Capabilities, ChannelRef, ChannelSpec, ChannelState, ChatCredentials, ChatMessage,
    ChatProvider, ChatUser, ProviderError, Sent, SystemMessage, UserMessage,
};
use crate::db::{self, local_chat};

/// The audience of local chat tokens.
pub const TOKEN_AUDIENCE: &str = "caregraph-local-chat";

/// The local chat provider.
#[derive(Clone)]
pub struct LocalChat {
    db: db::Db,
    token_key: SecretString,
}

fn store(e: DbErr) -> ProviderError {
    ProviderError::Unavailable(format!("local chat storage: {e}"))
}

fn to_message(m: local_chat::MessageRow) -> ChatMessage {
    ChatMessage {
        id: m.id,
        text: m.text,
        sent_at: m.created_at,
        author: m.user_id,
        system: m.system,
    }
}

impl LocalChat {
    /// Stores chat in `db`; tokens are signed with `token_key`.
    pub fn new(db: db::Db, token_key: SecretString) -> Self {
        Self { db, token_key }
    }

    async fn existing(
        &self,
        channel: &ChannelRef,
    ) -> Result<local_chat::ChannelRow, ProviderError> {
        local_chat::find_channel(&self.db, &channel.cid())
            .await
            .map_err(store)?
            .ok_or(ProviderError::NotFound)
    }

    /// Adds (`add`) or removes members, then posts the optional system `message`.
    async fn change_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
        add: bool,
    ) -> Result<(), ProviderError> {
        let row = self.existing(channel).await?;
        let changed = if add {
            local_chat::add_members(&self.db, &row.cid, user_ids).await
        } else {
            local_chat::remove_members(&self.db, &row.cid, user_ids).await
        };
        changed.map_err(store)?;
        if let Some(m) = message {
            self.post_system(channel, m).await?;
        }
        Ok(())
    }

    /// A member posts a message (the local stand-in for a client SDK). Refused when the channel
    /// is frozen or the user is no member.
    pub async fn post_user_message(
        &self,
        channel: &ChannelRef,
        user_id: &str,
        text: &str,
    ) -> Result<ChatMessage, ProviderError> {
        let message = UserMessage {
            id: uuid::Uuid::now_v7().to_string(),
            author: user_id.to_owned(),
            text: text.to_owned(),
        };
        self.post_once(channel, &message).await.map(|s| s.message)
    }

    /// Posts `message` unless its id was posted in the channel (then answers that one);
    /// refused when the channel is frozen or the author is no member.
    async fn post_once(
        &self,
        channel: &ChannelRef,
        message: &UserMessage,
    ) -> Result<Sent, ProviderError> {
        let row = self.existing(channel).await?;
        let cid = channel.cid();
        if let Some(posted) = local_chat::find_message(&self.db, &cid, &message.id)
            .await
            .map_err(store)?
        {
            return Ok(Sent {
                message: to_message(posted),
                fresh: false,
            });
        }
        if row.frozen {
            return Err(ProviderError::Rejected {
                status: 403,
                message: "the channel is frozen".into(),
            });
        }
        let members = local_chat::members(&self.db, &cid).await.map_err(store)?;
        if !members.contains(&message.author) {
            return Err(ProviderError::Rejected {
                status: 403,
                message: "not a member of the channel".into(),
            });
        }
        let txn = db::begin(&self.db).await.map_err(store)?;
        let posted = local_chat::post(
            &txn,
            &cid,
            &message.id,
            Some(&message.author),
            &message.text,
            false,
            Utc::now(),
        )
        .await
        .map_err(store)?;
        local_chat::mark_read(&txn, &cid, &message.author, posted.seq)
            .await
            .map_err(store)?;
        txn.commit().await.map_err(store)?;
        Ok(Sent {
            message: to_message(posted),
            fresh: true,
        })
    }

    /// The channel's custom data and members (for tests and support tooling).
    pub async fn inspect(
        &self,
        channel: &ChannelRef,
    ) -> Result<Option<(Map<String, Value>, Vec<String>, bool)>, ProviderError> {
        let Some(row) = local_chat::find_channel(&self.db, &channel.cid())
            .await
            .map_err(store)?
        else {
            return Ok(None);
        };
        let metadata =
            serde_json::from_str::<Map<String, Value>>(&row.metadata).unwrap_or_default();
        let members = local_chat::members(&self.db, &row.cid)
            .await
            .map_err(store)?;
        Ok(Some((metadata, members, row.frozen)))
    }

    async fn post_system(
        &self,
        channel: &ChannelRef,
        message: &SystemMessage,
    ) -> Result<(), ProviderError> {
        local_chat::post(
            &self.db,
            &channel.cid(),
            &message.id,
            None,
            &message.text,
            true,
            Utc::now(),
        )
        .await
        .map_err(store)?;
        Ok(())
    }
}

#[async_trait]
impl ChatProvider for LocalChat {
    fn name(&self) -> &'static str {
        "local"
    }

    fn read_batch_limit(&self) -> usize {
        100
    }

    /// Everything but token revocation: local tokens grant no access to revoke.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            revokes_tokens: false,
            ..Capabilities::FULL
        }
    }

    async fn upsert_users(&self, users: &[ChatUser]) -> Result<(), ProviderError> {
        let rows: Vec<(String, String, Option<String>)> = users
            .iter()
            .map(|u| (u.id.clone(), u.name.clone(), u.image.clone()))
            .collect();
        local_chat::upsert_users(&self.db, &rows)
            .await
            .map_err(store)
    }

    async fn delete_users(&self, user_ids: &[String]) -> Result<(), ProviderError> {
        local_chat::delete_users(&self.db, user_ids)
            .await
            .map_err(store)
    }

    async fn create_channel(&self, spec: &ChannelSpec) -> Result<(), ProviderError> {
        let cid = spec.channel.cid();
        let txn = db::begin(&self.db).await.map_err(store)?;
        local_chat::create_channel(
            &txn,
            local_chat::NewChannel {
                cid: cid.clone(),
                channel_type: &spec.channel.channel_type,
                channel_id: &spec.channel.channel_id,
                created_by: &spec.created_by,
                name: spec.name.clone(),
                image: spec.image.clone(),
                metadata: &spec.metadata,
                frozen: spec.frozen,
            },
        )
        .await
        .map_err(store)?;
        local_chat::add_members(&txn, &cid, &spec.members)
            .await
            .map_err(store)?;
        txn.commit().await.map_err(store)
    }

    async fn update_metadata(
        &self,
        channel: &ChannelRef,
        set: &Map<String, Value>,
        unset: &[String],
    ) -> Result<(), ProviderError> {
        let txn = db::begin(&self.db).await.map_err(store)?;
        let row = local_chat::find_channel(&txn, &channel.cid())
            .await
            .map_err(store)?
            .ok_or(ProviderError::NotFound)?;
        let mut metadata =
            serde_json::from_str::<Map<String, Value>>(&row.metadata).unwrap_or_default();
        for key in unset {
            metadata.remove(key);
        }
        for (k, v) in set {
            metadata.insert(k.clone(), v.clone());
        }
        local_chat::set_metadata(&txn, &row.cid, &metadata)
            .await
            .map_err(store)?;
        txn.commit().await.map_err(store)
    }

    async fn add_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        self.change_members(channel, user_ids, message, true).await
    }

    async fn remove_members(
        &self,
        channel: &ChannelRef,
        user_ids: &[String],
        message: Option<&SystemMessage>,
    ) -> Result<(), ProviderError> {
        self.change_members(channel, user_ids, message, false).await
    }

    async fn set_frozen(&self, channel: &ChannelRef, frozen: bool) -> Result<(), ProviderError> {
        let row = self.existing(channel).await?;
        local_chat::set_frozen(&self.db, &row.cid, frozen)
            .await
            .map_err(store)
    }

    async fn send_system_message(
        &self,
        channel: &ChannelRef,
        message: &SystemMessage,
    ) -> Result<(), ProviderError> {
        self.existing(channel).await?;
        self.post_system(channel, message).await
    }

    async fn delete_channel(&self, channel: &ChannelRef) -> Result<(), ProviderError> {
        let txn = db::begin(&self.db).await.map_err(store)?;
        local_chat::delete_channel(&txn, &channel.cid())
            .await
            .map_err(store)?;
        txn.commit().await.map_err(store)
    }

    /// Nothing to revoke: local tokens open nothing by themselves (see the module documentation).
    async fn revoke_tokens(
        &self,
        _user_id: &str,
        _issued_before: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn issue_token(
        &self,
        user: &ChatUser,
        ttl: Duration,
    ) -> Result<ChatCredentials, ProviderError> {
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::hours(1));
        let claims = json!({
            "sub": user.id,
            "aud": TOKEN_AUDIENCE,
            "iat": now.timestamp(),
            "exp": expires.timestamp(),
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.token_key.expose_secret().as_bytes()),
        )
        .map_err(|e| ProviderError::Unavailable(format!("signing a chat token: {e}")))?;
        Ok(ChatCredentials {
            provider: "local",
            user_id: user.id.clone(),
            token,
            expires_at: Some(expires),
            api_key: None,
            app_id: None,
            connection: json!({ "transport": "graphql", "endpoint": "/graphql" }),
        })
    }

    async fn read_channels(
        &self,
        channels: &[ChannelRef],
        for_user: &str,
    ) -> Result<Vec<ChannelState>, ProviderError> {
        let cids: Vec<String> = channels.iter().map(ChannelRef::cid).collect();
        let rows = local_chat::read(&self.db, &cids, for_user)
            .await
            .map_err(store)?;
        Ok(rows
            .into_iter()
            .map(|(c, members, last, unread)| ChannelState {
                channel: ChannelRef {
                    channel_type: c.channel_type,
                    channel_id: c.channel_id,
                },
                last_message: last.map(to_message),
                member_count: members,
                frozen: c.frozen,
                unread_count: Some(unread),
            })
            .collect())
    }

    async fn recent_messages(
        &self,
        channel: &ChannelRef,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        self.existing(channel).await?;
        Ok(
            local_chat::recent(&self.db, &channel.cid(), u64::from(limit))
                .await
                .map_err(store)?
                .into_iter()
                .map(to_message)
                .collect(),
        )
    }

    /// Posts once per id: a repeat answers the message posted first.
    async fn send_message(
        &self,
        channel: &ChannelRef,
        message: &UserMessage,
    ) -> Result<Sent, ProviderError> {
        self.post_once(channel, message).await
    }

    /// Messages older than `before` (a message of this channel), newest first.
    async fn history(
        &self,
        channel: &ChannelRef,
        limit: u32,
        before: Option<&str>,
    ) -> Result<Vec<ChatMessage>, ProviderError> {
        self.existing(channel).await?;
        let cid = channel.cid();
        let before_seq = match before {
            Some(id) => Some(
                local_chat::find_message(&self.db, &cid, id)
                    .await
                    .map_err(store)?
                    .ok_or(ProviderError::NotFound)?
                    .seq,
            ),
            None => None,
        };
        Ok(
            local_chat::page(&self.db, &cid, u64::from(limit), before_seq)
                .await
                .map_err(store)?
                .into_iter()
                .map(to_message)
                .collect(),
        )
    }

    /// Moves the member's read marker to the channel's latest message.
    async fn mark_read(&self, channel: &ChannelRef, user_id: &str) -> Result<(), ProviderError> {
        let cid = channel.cid();
        let last = local_chat::recent(&self.db, &cid, 1).await.map_err(store)?;
        if let Some(m) = last.last() {
            local_chat::mark_read(&self.db, &cid, user_id, m.seq)
                .await
                .map_err(store)?;
        }
        Ok(())
    }
}
