//! Stream's answers as serde types (`docs/providers.md` §1): the channel-query and
//! channel-list shapes, read leniently (`null` lists are empty, unknown fields ignored).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use super::{
    super::{ChannelRef, ChatMessage},
    SYSTEM_USER_ID,
};

/// Deserializes `null` as the default value.
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The answer of `POST /channels`.
#[derive(Debug, Deserialize)]
pub(super) struct QueryChannelsResponse {
    /// One state per channel found.
    #[serde(default, deserialize_with = "null_default")]
    pub(super) channels: Vec<ChannelStateWire>,
}

/// A channel with its state (`POST /channels` entries and the channel query's answer).
#[derive(Debug, Deserialize)]
pub(super) struct ChannelStateWire {
    /// The channel object.
    #[serde(default)]
    pub(super) channel: Option<ChannelWire>,
    /// Members (at most 100), when Stream sends them.
    #[serde(default)]
    pub(super) members: Option<Vec<MemberWire>>,
    /// The latest messages, oldest first.
    #[serde(default, deserialize_with = "null_default")]
    pub(super) messages: Vec<MessageWire>,
    /// Read states of the members.
    #[serde(default, deserialize_with = "null_default")]
    pub(super) read: Vec<ReadWire>,
}

/// The fields of a channel object that are read.
#[derive(Debug, Deserialize)]
pub(super) struct ChannelWire {
    /// `type:id`.
    #[serde(default)]
    pub(super) cid: Option<String>,
    /// The channel type.
    #[serde(rename = "type", default)]
    pub(super) channel_type: Option<String>,
    /// The channel id.
    #[serde(default)]
    pub(super) id: Option<String>,
    /// Whether it is frozen.
    #[serde(default, deserialize_with = "null_default")]
    pub(super) frozen: bool,
    /// How many members it has.
    #[serde(default)]
    pub(super) member_count: Option<u32>,
}

impl ChannelWire {
    /// The channel reference, from `type`/`id` or else from `cid`.
    pub(super) fn reference(&self) -> Option<ChannelRef> {
        match (&self.channel_type, &self.id) {
            (Some(t), Some(id)) => Some(ChannelRef {
                channel_type: t.clone(),
                channel_id: id.clone(),
            }),
            _ => {
                let (t, id) = self.cid.as_deref()?.split_once(':')?;
                Some(ChannelRef {
                    channel_type: t.to_owned(),
                    channel_id: id.to_owned(),
                })
            }
        }
    }
}

/// A channel member.
#[derive(Debug, Deserialize)]
pub(super) struct MemberWire {
    /// The member's user id.
    #[serde(default)]
    pub(super) user_id: Option<String>,
    /// The member's user.
    #[serde(default)]
    pub(super) user: Option<UserWire>,
}

impl MemberWire {
    /// The member's user id, from `user_id` or `user.id`.
    pub(super) fn id(&self) -> Option<&str> {
        self.user_id
            .as_deref()
            .or_else(|| self.user.as_ref().map(|u| u.id.as_str()))
    }
}

/// A user reference.
#[derive(Debug, Deserialize)]
pub(super) struct UserWire {
    /// The user id.
    pub(super) id: String,
}

/// A message.
#[derive(Debug, Deserialize)]
pub(super) struct MessageWire {
    /// Stream's message id.
    pub(super) id: String,
    /// The text.
    #[serde(default, deserialize_with = "null_default")]
    pub(super) text: String,
    /// `regular`, `system`, `deleted`, …
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub(super) kind: String,
    /// When it was sent.
    pub(super) created_at: DateTime<Utc>,
    /// Its author.
    #[serde(default)]
    pub(super) user: Option<UserWire>,
}

impl MessageWire {
    /// The message as previews show it; system messages have no author.
    pub(super) fn into_chat(self) -> ChatMessage {
        let system = self.kind == "system";
        let author = self
            .user
            .map(|u| u.id)
            .filter(|id| !system && id != SYSTEM_USER_ID);
        ChatMessage {
            id: self.id,
            text: self.text,
            sent_at: self.created_at,
            author,
            system,
        }
    }
}

/// A member's read state.
#[derive(Debug, Deserialize)]
pub(super) struct ReadWire {
    /// Whose.
    #[serde(default)]
    pub(super) user: Option<UserWire>,
    /// Messages after their last read.
    #[serde(default, deserialize_with = "null_default")]
    pub(super) unread_messages: u32,
}

/// The answer of a message send or read (`POST …/message`, `GET /messages/{id}`).
#[derive(Debug, Deserialize)]
pub(super) struct MessageResponse {
    /// The message.
    pub(super) message: MessageWire,
}
