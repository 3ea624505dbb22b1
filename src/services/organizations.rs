//! Organisations and memberships: create, add and update members, settings.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use super::{
    access::{ManagerOf, manager_of, member_of},
    chat::{AfterCommit, ChatService},
};
use crate::{
    auth::{Viewer, passwords},
    config::Config,
    db::{self, users::NewUser},
    domain::{
        Email, Membership, OrgId, OrgRole, Organization, Slug, User, UserId,
        pagination::{Page, PageRequest},
        people::{optional_text, required_text},
    },
    error::{AppError, AppResult},
};

/// Input of `addOrganizationMember`.
#[derive(Clone, Debug)]
pub struct NewMember {
    /// The member's email; a new email creates the user.
    pub email: String,
    /// Given name (used when the user is created).
    pub given_name: String,
    /// Family name (used when the user is created).
    pub family_name: String,
    /// Role in the organisation.
    pub role: OrgRole,
    /// Job title.
    pub title: Option<String>,
    /// Initial password for a new built-in account.
    pub password: Option<String>,
}

/// Input of `updateOrganizationMember`: `None` leaves a value as it is.
#[derive(Clone, Debug, Default)]
pub struct MemberChange {
    /// New role.
    pub role: Option<OrgRole>,
    /// New title; `Some(None)` clears it.
    pub title: Option<Option<String>>,
    /// Activate or deactivate.
    pub active: Option<bool>,
    /// Grant or withdraw the auditor capability (OWNERs only).
    pub auditor: Option<bool>,
}

/// Organisations and their members.
#[derive(Clone)]
pub struct OrganizationService {
    config: Arc<Config>,
    db: db::Db,
    chats: ChatService,
}

impl OrganizationService {
    /// Builds the service.
    pub fn new(config: Arc<Config>, db: db::Db, chats: ChatService) -> Self {
        Self { config, db, chats }
    }

    /// The viewer's memberships (active and inactive), oldest first.
    pub async fn viewer_memberships(&self, viewer: &Viewer) -> AppResult<Vec<Membership>> {
        let user = viewer.user()?;
        db::organizations::memberships_of_user(&self.db, user.id).await
    }

    /// An organisation the viewer is an active member of.
    pub async fn organization(&self, viewer: &Viewer, org_id: OrgId) -> AppResult<Organization> {
        member_of(&self.db, viewer, org_id).await?;
        db::organizations::find(&self.db, org_id)
            .await?
            .ok_or(AppError::NotFound("organization"))
    }

    /// Creates an organisation with the viewer as its OWNER.
    pub async fn create_organization(
        &self,
        viewer: &Viewer,
        name: &str,
        slug: &str,
    ) -> AppResult<Organization> {
        let user = viewer.user()?.clone();
        if !self.config.open_signup {
            return Err(AppError::Forbidden(
                "organizations are created by the operator (caregraph bootstrap)".into(),
            ));
        }
        let name = required_text(name, "name", 200)?;
        let slug = Slug::parse(slug, "slug")?;
        create_with_owner(&self.db, name, &slug, &user).await
    }

    /// Changes an organisation's name, network-messaging switch or the minutes before an
    /// appointment that its chat opens (0 to 1440) (OWNER/ADMIN).
    pub async fn update_organization(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        name: Option<&str>,
        cross_org_messaging: Option<bool>,
        chat_activation_minutes: Option<i32>,
    ) -> AppResult<Organization> {
        manager_of(&self.db, viewer, org_id).await?;
        let name = name.map(|n| required_text(n, "name", 200)).transpose()?;
        if chat_activation_minutes.is_some_and(|m| !(0..=1440).contains(&m)) {
            return Err(AppError::bad_input(
                "input.chatActivationMinutes",
                "minutes between 0 and 1440",
            ));
        }
        db::organizations::update(
            &self.db,
            org_id,
            name,
            cross_org_messaging,
            chat_activation_minutes,
        )
        .await?;
        db::organizations::find(&self.db, org_id)
            .await?
            .ok_or(AppError::NotFound("organization"))
    }

    /// Adds a member, creating the user when the email is new (OWNER/ADMIN).
    pub async fn add_member(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        input: NewMember,
    ) -> AppResult<Membership> {
        let (_, manager) = manager_of(&self.db, viewer, org_id).await?;
        check_may_grant(&manager, input.role)?;
        let email = Email::parse(&input.email, "input.email")?;
        let given = required_text(&input.given_name, "input.givenName", 200)?;
        let family = required_text(&input.family_name, "input.familyName", 200)?;
        let title = optional_text(input.title.as_deref(), "input.title", 200)?;
        let password_hash = match input.password {
            Some(p) => {
                passwords::validate_new(&p, "input.password")?;
                Some(passwords::hash(p).await?)
            }
            None => None,
        };
        let txn = db::begin(&self.db).await?;
        let user = match db::users::find_by_email(&txn, &email).await? {
            Some((user, _)) => user,
            None => {
                db::users::insert(
                    &txn,
                    NewUser {
                        email,
                        given_name: given,
                        family_name: family,
                        password_hash,
                    },
                )
                .await?
            }
        };
        if db::organizations::find_membership(&txn, org_id, user.id)
            .await?
            .is_some()
        {
            return Err(AppError::Conflict(
                "this person is already a member; use updateOrganizationMember".into(),
            ));
        }
        let membership =
            db::organizations::insert_membership(&txn, org_id, &user, input.role, title).await?;
        viewer
            .audit
            .record_in(
                &txn,
                crate::audit::AuditEntry::new(
                    crate::audit::AuditAction::Create,
                    crate::audit::AuditEntity::Membership,
                    user.id,
                )
                .org(org_id),
            )
            .await?;
        txn.commit().await?;
        tracing::info!(org = %org_id, user = %user.id, role = input.role.as_str(), "member added");
        Ok(membership)
    }

    /// Changes a member's role, title, active flag or auditor flag (OWNER/ADMIN; the auditor
    /// flag OWNER only). The last active OWNER can be
    /// neither demoted nor deactivated; only an OWNER changes an OWNER or grants OWNER.
    pub async fn update_member(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        user_id: UserId,
        change: MemberChange,
    ) -> AppResult<Membership> {
        let (_, manager) = manager_of(&self.db, viewer, org_id).await?;
        let txn = db::begin(&self.db).await?;
        let mut member = db::organizations::find_membership(&txn, org_id, user_id)
            .await?
            .ok_or(AppError::NotFound("member"))?;
        if member.role == OrgRole::Owner {
            check_may_grant(&manager, OrgRole::Owner)?;
        }
        if let Some(role) = change.role {
            check_may_grant(&manager, role)?;
        }
        if change.auditor.is_some() && manager.membership().role != OrgRole::Owner {
            return Err(AppError::Forbidden(
                "only an OWNER may grant or withdraw the auditor capability".into(),
            ));
        }
        let was_active = member.active;
        let was_active_owner = member.active && member.role == OrgRole::Owner;
        if let Some(role) = change.role {
            member.role = role;
        }
        if let Some(title) = change.title {
            member.title = optional_text(title.as_deref(), "input.title", 200)?;
        }
        if let Some(active) = change.active {
            member.active = active;
        }
        if let Some(auditor) = change.auditor {
            member.auditor = auditor;
        }
        let still_active_owner = member.active && member.role == OrgRole::Owner;
        if was_active_owner
            && !still_active_owner
            && db::organizations::active_owner_count(&txn, org_id).await? <= 1
        {
            return Err(AppError::Conflict(
                "an organization keeps at least one active OWNER".into(),
            ));
        }
        db::organizations::update_membership(&txn, &member).await?;
        viewer
            .audit
            .record_in(
                &txn,
                crate::audit::AuditEntry::new(
                    crate::audit::AuditAction::Update,
                    crate::audit::AuditEntity::Membership,
                    user_id,
                )
                .org(org_id),
            )
            .await?;
        // A member who lost their standing (deactivated, or no longer managing) leaves the
        // chats it carried, in this transaction.
        let mut fx = AfterCommit::default();
        if was_active && !member.active {
            self.chats
                .revoke_tokens(&txn, &mut fx, user_id, org_id)
                .await?;
        }
        if change.active.is_some() || change.role.is_some() {
            let left = self.chats.user_changed(&txn, &mut fx, user_id).await?;
            if left > 0 {
                tracing::info!(org = %org_id, user = %user_id, sessions = left, "member left chats");
            }
        }
        self.chats.commit(txn, fx).await?;
        Ok(member)
    }

    /// A page of the organisation's members by display name (members only).
    pub async fn colleagues(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        include_inactive: bool,
        page: &PageRequest,
    ) -> AppResult<Page<Membership>> {
        member_of(&self.db, viewer, org_id).await?;
        db::organizations::list_members(&self.db, org_id, include_inactive, page).await
    }

    /// Typeahead over active colleagues' names and email (members only; the caller excluded):
    /// name prefixes first, then other matches, each by name. The query is data, never a pattern.
    pub async fn search_colleagues(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        query: &str,
        limit: Option<i32>,
    ) -> AppResult<Vec<Membership>> {
        let (me, _) = member_of(&self.db, viewer, org_id).await?;
        let query = query.trim().to_lowercase();
        if query.chars().count() < 2 {
            return Err(AppError::bad_input("query", "type at least 2 characters"));
        }
        if query.chars().count() > 100 {
            return Err(AppError::bad_input("query", "at most 100 characters"));
        }
        let limit = match limit {
            None => 10,
            Some(n @ 1..=50) => n as u64,
            Some(_) => return Err(AppError::bad_input("limit", "must be between 1 and 50")),
        };
        db::organizations::search_members(&self.db, org_id, me.id, &query, limit).await
    }
}

/// Only an OWNER may grant or change the OWNER role (so nobody grants a role above their own:
/// only OWNERs and ADMINs manage members).
pub(super) fn check_may_grant(manager: &ManagerOf, role: OrgRole) -> AppResult<()> {
    if role == OrgRole::Owner && manager.membership().role != OrgRole::Owner {
        return Err(AppError::Forbidden(
            "only an OWNER may grant or change OWNER".into(),
        ));
    }
    Ok(())
}

/// Creates an organisation and makes `owner` its OWNER, in one transaction.
pub async fn create_with_owner(
    db: &DatabaseConnection,
    name: String,
    slug: &Slug,
    owner: &User,
) -> AppResult<Organization> {
    let txn = db::begin(db).await?;
    if db::organizations::slug_taken(&txn, slug).await? {
        return Err(AppError::Conflict(format!(
            "the slug {:?} is taken",
            slug.as_str()
        )));
    }
    let org = db::organizations::insert(&txn, name, slug).await?;
    db::organizations::insert_membership(&txn, org.id, owner, OrgRole::Owner, None).await?;
    txn.commit().await?;
    tracing::info!(org = %org.id, slug = %org.slug, "organization created");
    Ok(org)
}
