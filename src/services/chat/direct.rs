//! Colleague chats: one 1:1 session per unordered pair, inside an organisation or across two
//! organisations that both allow network messaging.

use super::{ChatService, base_metadata};
use crate::{
    auth::Viewer,
    db,
    domain::{
        OrgId, User, UserId,
        chat::{self, ChatCategory, ChatRole, ChatSession, DirectPair, SessionKey},
    },
    error::{AppError, AppResult},
    providers::chat::CHANNEL_TYPE,
    services::access::member_of,
};

impl ChatService {
    /// Opens (creates or gets) the 1:1 chat of two active members of an organisation.
    pub async fn open_direct_chat(
        &self,
        viewer: &Viewer,
        org: OrgId,
        colleague: UserId,
    ) -> AppResult<ChatSession> {
        let (me, _) = member_of(&self.db, viewer, org)
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::Forbidden(
                    "only active members of the organization open colleague chats".into(),
                ),
                other => other,
            })?;
        self.check_colleague(&me, colleague, org, "the organization")
            .await?;
        self.direct(org, None, &me, colleague).await
    }

    /// Opens (creates or gets) a 1:1 chat across two organisations that both allow network
    /// messaging; it shows in both organisations' lists. A colleague of the same organisation
    /// is refused on `colleagueOrgId` (that is [`Self::open_direct_chat`]'s job).
    pub async fn open_network_direct_chat(
        &self,
        viewer: &Viewer,
        org: OrgId,
        colleague: UserId,
        colleague_org: OrgId,
    ) -> AppResult<ChatSession> {
        let (me, _) = member_of(&self.db, viewer, org).await?;
        if colleague_org == org {
            return Err(AppError::bad_input(
                "colleagueOrgId",
                "a colleague of your own organization: use openDirectChat",
            ));
        }
        self.check_colleague(&me, colleague, colleague_org, "that organization")
            .await?;
        for o in [org, colleague_org] {
            let allowed = db::organizations::find(&self.db, o)
                .await?
                .is_some_and(|x| x.cross_org_messaging);
            if !allowed {
                return Err(AppError::Forbidden(
                    "both organizations must allow network messaging (crossOrgMessaging)".into(),
                ));
            }
        }
        self.direct(org, Some(colleague_org), &me, colleague).await
    }

    /// Checks that `colleague` is someone else and an active member of `org` (named `org_name`
    /// in the error on `colleagueId`).
    async fn check_colleague(
        &self,
        me: &User,
        colleague: UserId,
        org: OrgId,
        org_name: &str,
    ) -> AppResult<()> {
        if colleague == me.id {
            return Err(AppError::bad_input(
                "colleagueId",
                "a chat needs someone else",
            ));
        }
        match db::organizations::find_membership(&self.db, org, colleague).await? {
            Some(m) if m.active => Ok(()),
            _ => Err(AppError::bad_input(
                "colleagueId",
                format!("not an active member of {org_name}"),
            )),
        }
    }

    /// The 1:1 session of an unordered pair (in either order the same).
    async fn direct(
        &self,
        org: OrgId,
        counterpart: Option<OrgId>,
        me: &User,
        colleague: UserId,
    ) -> AppResult<ChatSession> {
        let pair = DirectPair::new(org, counterpart, me.id, colleague);
        let (o1, o2) = pair.orgs;
        let (a, b) = pair.users;
        let key = SessionKey::Direct(pair);
        if let Some(existing) = db::chat_sessions::find_by_key(&self.db, &key).await? {
            return self.ready(existing).await;
        }
        let users = db::users::find_many(&self.db, &[a, b]).await?;
        let now = self.clock.now();
        let session = ChatSession {
            counterpart_org_id: o2,
            ..ChatSession::new_open(
                o1,
                ChatCategory::Colleague,
                CHANNEL_TYPE,
                chat::channel_id("dm", &key.to_string()),
                None,
                me.id,
                now,
            )
        };
        let metadata = base_metadata(&session);
        let members = [(a, ChatRole::Staff), (b, ChatRole::Staff)];
        self.create(session, &key, &members, metadata, &users, me)
            .await
    }
}
