//! One behavioural suite run against every chat provider: the local provider (caregraph's own
//! database) and the real Stream, Sendbird and Ethora adapters talking HTTP to their fakes. The
//! same assertions hold for all four, so chat features tested on one mean the same on each.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use caregraph::providers::chat::{
    ChannelRef, ChannelSpec, ChatProvider, ChatUser, SystemMessage, local::LocalChat,
};
use serde_json::{Map, Value, json};

use crate::{
    fakes::{self, FakeProvider},
    helpers::TestDb,
};

/// What the suite drives.
#[async_trait]
pub trait Subject: Send + Sync {
    /// The adapter under test.
    fn provider(&self) -> Arc<dyn ChatProvider>;
    /// A member posts as a client SDK would.
    async fn user_posts(&self, channel: &ChannelRef, user: &str, text: &str) -> Result<(), String>;
    /// The channel's custom data.
    async fn metadata(&self, channel: &ChannelRef) -> Option<Map<String, Value>>;
    /// The channel's members.
    async fn members(&self, channel: &ChannelRef) -> Option<Vec<String>>;
}

/// A fake provider as a subject.
pub struct Fake<F: FakeProvider>(pub F);

#[async_trait]
impl<F: FakeProvider> Subject for Fake<F> {
    fn provider(&self) -> Arc<dyn ChatProvider> {
        self.0.adapter(crate::helpers::quick_resilience(3))
    }
    async fn user_posts(&self, channel: &ChannelRef, user: &str, text: &str) -> Result<(), String> {
        self.0.user_posts(channel, user, text)
    }
    async fn metadata(&self, channel: &ChannelRef) -> Option<Map<String, Value>> {
        self.0.metadata(channel)
    }
    async fn members(&self, channel: &ChannelRef) -> Option<Vec<String>> {
        self.0.members(channel).map(|mut m| {
            m.sort();
            m
        })
    }
}

/// The local provider over its own database.
pub struct Local {
    chat: LocalChat,
    _db: TestDb,
}

impl Local {
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
        caregraph::db::migrate(&conn).await.expect("migrate");
        Self {
            chat: LocalChat::new(
                caregraph::db::Db::pooled(conn),
                secrecy::SecretString::from("local-chat-test-key"),
            ),
            _db: db,
        }
    }
}

#[async_trait]
impl Subject for Local {
    fn provider(&self) -> Arc<dyn ChatProvider> {
        Arc::new(self.chat.clone())
    }
    async fn user_posts(&self, channel: &ChannelRef, user: &str, text: &str) -> Result<(), String> {
        self.chat
            .post_user_message(channel, user, text)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    async fn metadata(&self, channel: &ChannelRef) -> Option<Map<String, Value>> {
        self.chat
            .inspect(channel)
            .await
            .expect("inspect")
            .map(|(m, _, _)| m)
    }
    async fn members(&self, channel: &ChannelRef) -> Option<Vec<String>> {
        self.chat
            .inspect(channel)
            .await
            .expect("inspect")
            .map(|(_, mut m, _)| {
                m.sort();
                m
            })
    }
}

fn users(ids: &[&str]) -> Vec<ChatUser> {
    ids.iter()
        .map(|id| ChatUser {
            id: (*id).to_owned(),
            name: format!("User {id}"),
            image: None,
        })
        .collect()
}

fn channel(id: &str) -> ChannelRef {
    ChannelRef {
        channel_type: "messaging".into(),
        channel_id: id.into(),
    }
}

fn spec(id: &str, members: &[&str]) -> ChannelSpec {
    let mut metadata = Map::new();
    metadata.insert("chatCategory".into(), json!("client"));
    metadata.insert("orgId".into(), json!("org-1"));
    metadata.insert("status".into(), json!("active"));
    ChannelSpec {
        channel: channel(id),
        created_by: members[0].to_owned(),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        name: Some(format!("Channel {id}")),
        image: None,
        metadata,
        frozen: false,
    }
}

/// The suite: every behaviour the chat features rely on.
pub async fn behaves_like_a_chat_provider(subject: &dyn Subject) {
    let p = subject.provider();
    let can = p.capabilities();
    p.upsert_users(&users(&["u-alice", "u-bob", "u-carol"]))
        .await
        .expect("upsert users");
    // Upserting again is fine.
    p.upsert_users(&users(&["u-alice"]))
        .await
        .expect("upsert again");

    // Create is idempotent: a second create of the same channel keeps one channel.
    let a = channel("appointment-suite-1");
    p.create_channel(&spec("appointment-suite-1", &["u-alice", "u-bob"]))
        .await
        .expect("create");
    p.create_channel(&spec("appointment-suite-1", &["u-alice", "u-bob"]))
        .await
        .expect("create again");
    assert_eq!(
        subject.members(&a).await.expect("exists"),
        vec!["u-alice", "u-bob"]
    );

    // Metadata: a partial update keeps the other keys.
    let mut set = Map::new();
    set.insert("status".into(), json!("ended"));
    set.insert("petName".into(), json!("Rex"));
    p.update_metadata(&a, &set, &["orgId".to_owned()])
        .await
        .expect("update metadata");
    let meta = subject.metadata(&a).await.expect("metadata");
    assert_eq!(meta.get("status"), Some(&json!("ended")));
    assert_eq!(
        meta.get("chatCategory"),
        Some(&json!("client")),
        "other keys survive"
    );
    assert!(!meta.contains_key("orgId"), "unset removes");

    // Messages: members post; a non-member cannot.
    subject
        .user_posts(&a, "u-alice", "Hello Bob")
        .await
        .expect("alice posts");
    assert!(
        subject
            .user_posts(&a, "u-carol", "let me in")
            .await
            .is_err(),
        "a non-member cannot post"
    );

    // Batched reads: last message, members, frozen, the user's unread count.
    let states = p
        .read_channels(&[a.clone(), channel("no-such-channel")], "u-bob")
        .await
        .expect("read");
    assert_eq!(states.len(), 1, "unknown channels are left out");
    let state = &states[0];
    assert_eq!(state.channel, a);
    assert_eq!(state.member_count, 2);
    assert!(!state.frozen);
    if can.message_history {
        let last = state.last_message.as_ref().expect("a last message");
        assert_eq!(last.text, "Hello Bob");
        assert_eq!(last.author.as_deref(), Some("u-alice"));
    } else {
        assert!(state.last_message.is_none(), "no invented history");
    }
    if can.unread_counts {
        assert_eq!(
            state.unread_count,
            Some(1),
            "bob has not read alice's message"
        );
        let alice = p
            .read_channels(std::slice::from_ref(&a), "u-alice")
            .await
            .expect("read");
        assert_eq!(alice[0].unread_count, Some(0), "one's own message is read");
    } else {
        assert_eq!(state.unread_count, None, "no made-up unread count");
    }

    // Members: adding twice and removing are idempotent.
    let note = SystemMessage {
        id: "sys-add-carol".into(),
        text: "Carol joined".into(),
    };
    p.add_members(&a, &["u-carol".to_owned()], Some(&note))
        .await
        .expect("add");
    p.add_members(&a, &["u-carol".to_owned()], None)
        .await
        .expect("add again");
    assert_eq!(
        subject.members(&a).await.expect("exists"),
        vec!["u-alice", "u-bob", "u-carol"]
    );
    p.remove_members(&a, &["u-carol".to_owned()], None)
        .await
        .expect("remove");
    assert_eq!(
        subject.members(&a).await.expect("exists"),
        vec!["u-alice", "u-bob"]
    );

    // Freezing: nobody may post until unfrozen.
    p.set_frozen(&a, true).await.expect("freeze");
    assert!(
        subject.user_posts(&a, "u-bob", "anyone?").await.is_err(),
        "a frozen channel refuses"
    );
    assert!(
        p.read_channels(std::slice::from_ref(&a), "u-bob")
            .await
            .expect("read")[0]
            .frozen
    );
    p.set_frozen(&a, false).await.expect("unfreeze");
    subject
        .user_posts(&a, "u-bob", "Hi Alice")
        .await
        .expect("bob posts after unfreeze");

    // System messages post once per id.
    let closing = SystemMessage {
        id: "sys-close-1".into(),
        text: "The chat was closed".into(),
    };
    p.send_system_message(&a, &closing)
        .await
        .expect("system message");
    p.send_system_message(&a, &closing).await.expect("repeat");
    let recent = p.recent_messages(&a, 20).await.expect("recent");
    if can.message_history {
        let closes = recent
            .iter()
            .filter(|m| m.text == "The chat was closed")
            .count();
        assert_eq!(closes, 1, "one system message per id: {recent:?}");
        assert!(recent.iter().any(|m| m.text == "Hi Alice" && !m.system));
        assert!(recent.last().is_some_and(|m| m.system), "newest last");
    } else {
        assert!(recent.is_empty(), "no invented history");
    }

    // Tokens carry what the client SDK needs.
    let creds = p
        .issue_token(&users(&["u-alice"])[0], Duration::from_secs(3600))
        .await
        .expect("token");
    assert_eq!(creds.provider, p.name());
    assert_eq!(creds.user_id, "u-alice");
    assert!(!creds.token.is_empty());
    let expires = creds.expires_at.expect("expiry");
    let ttl = expires - chrono::Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(55) && ttl <= chrono::Duration::minutes(61),
        "{ttl:?}"
    );

    // Deleting is idempotent and the channel is gone from reads.
    p.delete_channel(&a).await.expect("delete");
    p.delete_channel(&a).await.expect("delete again");
    assert!(
        p.read_channels(std::slice::from_ref(&a), "u-bob")
            .await
            .expect("read")
            .is_empty()
    );
    assert!(subject.members(&a).await.is_none());
    p.delete_users(&["u-carol".to_owned(), "u-nobody".to_owned()])
        .await
        .expect("delete users");
}

#[tokio::test]
async fn the_local_provider_behaves_like_a_chat_provider() {
    behaves_like_a_chat_provider(&Local::start().await).await;
}

#[tokio::test]
async fn the_stream_adapter_behaves_like_a_chat_provider() {
    behaves_like_a_chat_provider(&Fake(fakes::stream::start().await)).await;
}

#[tokio::test]
async fn the_sendbird_adapter_behaves_like_a_chat_provider() {
    behaves_like_a_chat_provider(&Fake(fakes::sendbird::start().await)).await;
}

#[tokio::test]
async fn the_ethora_adapter_behaves_like_a_chat_provider() {
    behaves_like_a_chat_provider(&Fake(fakes::ethora::start().await)).await;
}
