//! Group channels: create-or-get, edits, member changes with a system message, deletion.

use serde_json::{Map, json};

use super::{AfterCommit, ChatService, base_metadata, channel_of, delete_entry};
use crate::{
    auth::Viewer,
    db,
    domain::{
        ChatSessionId, OrgId, UserId,
        chat::{self, ChatCategory, ChatRole, ChatSession, SessionKey},
    },
    error::{AppError, AppResult},
    events::ChangeKind,
    outbox::{Entry, Operation},
    providers::chat::CHANNEL_TYPE,
    services::access::member_of,
};

/// Input of `createGroupChat`.
#[derive(Clone, Debug)]
pub struct GroupInput {
    /// Title.
    pub title: String,
    /// Members besides the creator.
    pub member_ids: Vec<UserId>,
    /// Broadcast mode.
    pub read_only: bool,
    /// Image.
    pub image_url: Option<String>,
    /// The channel id to use (else the slug of the title).
    pub channel_id: Option<String>,
}

/// Input of `updateGroupChat`: `None` leaves a field.
#[derive(Clone, Debug, Default)]
pub struct GroupChange {
    /// Title.
    pub title: Option<String>,
    /// Image (`Some(None)` clears it).
    pub image_url: Option<Option<String>>,
    /// Broadcast mode.
    pub read_only: Option<bool>,
}

impl ChatService {
    /// Creates (or gets, by channel id or the slug of the title) a group: the creator owns it and
    /// every member is active in the organisation; at least two members in all.
    pub async fn create_group(
        &self,
        viewer: &Viewer,
        org: OrgId,
        input: GroupInput,
    ) -> AppResult<ChatSession> {
        let (me, _) = member_of(&self.db, viewer, org).await?;
        let title = crate::domain::people::required_text(&input.title, "input.title", 200)?;
        let slug = match input.channel_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => {
                let valid = id.len() <= 48
                    && id.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    });
                if !valid {
                    return Err(AppError::bad_input(
                        "input.channelId",
                        "1 to 48 characters of a-z, 0-9, '-' and '_'",
                    ));
                }
                id.to_owned()
            }
            _ => crate::services::accounts::slugify(&title),
        };
        if slug.is_empty() {
            return Err(AppError::bad_input(
                "input.title",
                "the title needs letters or digits (or give a channelId)",
            ));
        }
        let mut members: Vec<(UserId, ChatRole)> = vec![(me.id, ChatRole::Owner)];
        for (i, u) in input.member_ids.iter().enumerate() {
            if members.iter().any(|(m, _)| m == u) {
                continue;
            }
            match db::organizations::find_membership(&self.db, org, *u).await? {
                Some(m) if m.active => members.push((*u, ChatRole::Staff)),
                _ => {
                    return Err(AppError::bad_input(
                        format!("input.memberIds.{i}"),
                        "not an active member of the organization",
                    ));
                }
            }
        }
        if members.len() < 2 {
            return Err(AppError::bad_input(
                "input.memberIds",
                "a group has at least 2 members",
            ));
        }
        let key = SessionKey::Group {
            org,
            slug: slug.clone(),
        };
        if let Some(existing) = db::chat_sessions::find_by_key(&self.db, &key).await? {
            // Create-or-get hands an existing group only to those who may read it.
            return match self.check(viewer, existing).await {
                Ok(readable) => self.ready(readable.into_inner()).await,
                Err(AppError::NotFound(_)) => Err(AppError::ConflictOn {
                    message: "a group with this channel id already exists".into(),
                    field: if input.channel_id.is_some() {
                        "input.channelId".into()
                    } else {
                        "input.title".into()
                    },
                }),
                Err(e) => Err(e),
            };
        }
        let image = crate::domain::people::optional_text(
            input.image_url.as_deref(),
            "input.imageUrl",
            2048,
        )?;
        let users = db::users::find_many(
            &self.db,
            &members.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        )
        .await?;
        let now = self.clock.now();
        let session = ChatSession {
            read_only: input.read_only,
            image_url: image,
            ..ChatSession::new_open(
                org,
                ChatCategory::Group,
                CHANNEL_TYPE,
                chat::group_channel_id(org, &slug),
                Some(title),
                me.id,
                now,
            )
        };
        let mut metadata = base_metadata(&session);
        metadata.insert("readOnly".into(), json!(input.read_only));
        self.create(session, &key, &members, metadata, &users, &me)
            .await
    }

    /// A group the viewer may manage: its owner or an OWNER/ADMIN of the organisation.
    async fn managed_group(&self, viewer: &Viewer, id: ChatSessionId) -> AppResult<ChatSession> {
        let (session, role) = self.session(viewer, id).await?;
        let session = session.into_inner();
        if !session.is_group {
            return Err(AppError::NotFound("group chat"));
        }
        let me = viewer.user()?;
        let admin = db::organizations::find_membership(&self.db, session.org_id, me.id)
            .await?
            .is_some_and(|m| m.active && m.role.manages_organization());
        if role != Some(ChatRole::Owner) && !admin {
            return Err(AppError::Forbidden(
                "only the group's owner or an organization admin may".into(),
            ));
        }
        Ok(session)
    }

    /// Changes a group's title, image or broadcast mode.
    pub async fn update_group(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
        change: GroupChange,
    ) -> AppResult<ChatSession> {
        let session = self.managed_group(viewer, id).await?;
        if session.closed_at.is_some() {
            return Err(AppError::ChatNotOpen("the group is closed".into()));
        }
        let title = match change.title {
            Some(t) => Some(crate::domain::people::required_text(
                &t,
                "input.title",
                200,
            )?),
            None => session.title.clone(),
        };
        let image = match change.image_url {
            Some(i) => crate::domain::people::optional_text(i.as_deref(), "input.imageUrl", 2048)?,
            None => session.image_url.clone(),
        };
        let read_only = change.read_only.unwrap_or(session.read_only);
        let now = self.clock.now();
        let mut set = Map::new();
        set.insert("name".into(), json!(title));
        set.insert("image".into(), json!(image));
        set.insert("readOnly".into(), json!(read_only));
        let entry = Entry::new(
            format!(
                "chat:{}:update:{}",
                session.id,
                uuid::Uuid::now_v7().simple()
            ),
            Some(session.org_id.to_string()),
            Operation::UpdateMetadata {
                channel: channel_of(&session),
                set,
                unset: Vec::new(),
            },
        );
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::update_group(&txn, session.id, title, image, read_only, now).await?;
        crate::outbox::enqueue(&txn, &[entry], now).await?;
        txn.commit().await?;
        self.outbox.wake();
        let updated = db::chat_sessions::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("group chat"))?;
        self.announce_change(&updated, ChangeKind::Updated, None, &[])
            .await;
        Ok(updated)
    }

    /// Adds and removes group members: new ones active in the organisation, never the owner
    /// removed, at least two left; a system message says who changed what.
    pub async fn update_group_members(
        &self,
        viewer: &Viewer,
        id: ChatSessionId,
        add: &[UserId],
        remove: &[UserId],
    ) -> AppResult<ChatSession> {
        let session = self.managed_group(viewer, id).await?;
        if session.closed_at.is_some() {
            return Err(AppError::ChatNotOpen("the group is closed".into()));
        }
        let current =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id)).await?;
        if remove.iter().any(|u| {
            current
                .iter()
                .any(|(_, m, r)| m == u && *r == ChatRole::Owner)
        }) {
            return Err(AppError::bad_input("remove", "the owner cannot be removed"));
        }
        for (i, u) in add.iter().enumerate() {
            match db::organizations::find_membership(&self.db, session.org_id, *u).await? {
                Some(m) if m.active => {}
                _ => {
                    return Err(AppError::bad_input(
                        format!("add.{i}"),
                        "not an active member of the organization",
                    ));
                }
            }
        }
        let after: Vec<UserId> = current
            .iter()
            .map(|(_, u, _)| *u)
            .chain(add.iter().copied())
            .filter(|u| !remove.contains(u))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if after.len() < 2 {
            return Err(AppError::bad_input(
                "remove",
                "a group keeps at least 2 members",
            ));
        }
        let added: Vec<UserId> = add
            .iter()
            .copied()
            .filter(|u| !current.iter().any(|(_, m, _)| m == u))
            .collect();
        let removed: Vec<UserId> = remove
            .iter()
            .copied()
            .filter(|u| current.iter().any(|(_, m, _)| m == u))
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(session);
        }
        let me = viewer.user()?;
        let names = db::users::find_many(
            &self.db,
            &added
                .iter()
                .chain(removed.iter())
                .copied()
                .collect::<Vec<_>>(),
        )
        .await?;
        let name = |u: &UserId| {
            names
                .iter()
                .find(|n| n.id == *u)
                .map_or_else(|| u.to_string(), |n| n.display_name.clone())
        };
        let text = |verb: &str, who: &[UserId]| {
            let list: Vec<String> = who.iter().map(name).collect();
            format!("{} {verb} {}.", me.display_name, list.join(", "))
        };
        let notes = [
            (!added.is_empty()).then(|| text("added", &added)),
            (!removed.is_empty()).then(|| text("removed", &removed)),
        ];
        let new_rows: Vec<(UserId, ChatRole)> =
            added.iter().map(|u| (*u, ChatRole::Staff)).collect();
        let txn = db::begin(&self.db).await?;
        let mut fx = AfterCommit::default();
        self.change_members_in(&txn, &mut fx, &session, &new_rows, &removed, &names, notes)
            .await?;
        txn.commit().await?;
        self.finish(fx).await?;
        Ok(session)
    }

    /// Deletes a group here and at the provider; it is NOT_FOUND afterwards.
    pub async fn delete_group(&self, viewer: &Viewer, id: ChatSessionId) -> AppResult<()> {
        let session = self.managed_group(viewer, id).await?;
        let now = self.clock.now();
        let entry = delete_entry(&session);
        let members: Vec<UserId> =
            db::chat_sessions::members_of(&self.db, std::slice::from_ref(&session.id))
                .await?
                .into_iter()
                .map(|(_, u, _)| u)
                .collect();
        let txn = db::begin(&self.db).await?;
        db::chat_sessions::delete(&txn, session.id).await?;
        crate::outbox::enqueue(&txn, &[entry], now).await?;
        txn.commit().await?;
        self.outbox.wake();
        self.events
            .publish(self.change_event(&session, ChangeKind::Deleted, None, members));
        Ok(())
    }
}
