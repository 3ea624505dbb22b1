//! Invitations of staff (`inviteOrganizationMember`) and guardians (`inviteGuardian`), accepted
//! anonymously with the token of the invitation's URL (`acceptInvitation`).
//!
//! The invitation is the pending member or guardian: no user, membership or guardian link
//! exists for them until it is accepted, so a pending invitee can neither sign in nor count as
//! a member or guardian anywhere. The token (32 random bytes, base64url) is shown once, in the
//! `acceptUrl` returned to the inviting staff member and in the mail; only its SHA-256 is
//! stored. It works once, until `CAREGRAPH_INVITATION_TTL_HOURS` after the invitation.
//!
//! An invitee whose email already has an account keeps it: accepting attaches the membership or
//! guardian link to it, and the password given must be that account's password (an account
//! without a password, e.g. a guardian staff added, gets this one). Accepting is rate limited
//! like `login`: per client address, and per invitation.

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};

use super::{
    access::{manager_of, member_of, patient_staff},
    accounts::{AccessToken, AccountService},
    chat::{AfterCommit, ChatService},
    organizations::check_may_grant,
};
use crate::{
    audit::{AuditAction, AuditActor, AuditEntity, AuditEntry, AuditScope},
    auth::{Viewer, passwords, rate_limit::KeyedLimit},
    clock::SharedClock,
    config::Config,
    db::{self, users::NewUser},
    domain::{
        Email, InvitationId, OrgId, OrgRole, PatientId, User,
        care::{Guardian, GuardianRelationship},
        invitation::{Invitation, InvitationKind, InvitationStatus, InvitationToken},
        pagination::{Page, PageRequest},
        people::{optional_text, required_text},
    },
    error::{AppError, AppResult},
    mail::{self, Mail, MailQueue, NewMail},
};

/// The path of the accept page under `CAREGRAPH_PUBLIC_URL`; the token follows in the URL's
/// fragment (`#token=…`), which browsers never send to a server nor in a `Referer`.
pub const ACCEPT_PATH: &str = "/accept-invitation";

/// Input of `inviteOrganizationMember`.
#[derive(Clone, Debug)]
pub struct MemberInvite {
    /// The invitee's email.
    pub email: String,
    /// Given name (for a new account).
    pub given_name: String,
    /// Family name (for a new account).
    pub family_name: String,
    /// The role granted on acceptance.
    pub role: OrgRole,
    /// Job title.
    pub title: Option<String>,
}

/// Input of `inviteGuardian`.
#[derive(Clone, Debug)]
pub struct GuardianInvite {
    /// The invitee's email.
    pub email: String,
    /// Given name (for a new account).
    pub given_name: String,
    /// Family name (for a new account).
    pub family_name: String,
    /// How they relate (default co-guardian).
    pub relationship: GuardianRelationship,
    /// Whether a co-guardian takes part in client chats.
    pub can_chat: bool,
}

/// An invitation with its state; `accept_url` only right after it was made (the token is not
/// stored, so it cannot be shown again). `Debug` leaves the URL out.
#[derive(Clone)]
pub struct InvitationView {
    /// The invitation.
    pub invitation: Invitation,
    /// Its state now.
    pub status: InvitationStatus,
    /// The URL that accepts it (carries the token).
    pub accept_url: Option<String>,
}

impl std::fmt::Debug for InvitationView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationView")
            .field("invitation", &self.invitation.id)
            .field("status", &self.status)
            .field(
                "accept_url",
                &self.accept_url.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Invitations: make, list, revoke, accept.
#[derive(Clone)]
pub struct InvitationService {
    db: db::Db,
    clock: SharedClock,
    chats: ChatService,
    accounts: AccountService,
    mail: MailQueue,
    ttl: chrono::Duration,
    base_url: String,
    per_address: Arc<KeyedLimit<IpAddr>>,
    per_invitation: Arc<KeyedLimit<String>>,
}

impl InvitationService {
    /// Builds the service; accept URLs start with `base_url` (`CAREGRAPH_PUBLIC_URL`).
    pub fn new(
        config: &Config,
        db: db::Db,
        clock: SharedClock,
        chats: ChatService,
        accounts: AccountService,
        mail: MailQueue,
        base_url: String,
    ) -> Self {
        Self {
            db,
            clock,
            chats,
            accounts,
            mail,
            ttl: chrono::Duration::from_std(config.mail.invitation_ttl)
                .unwrap_or(chrono::Duration::hours(72)),
            base_url: base_url.trim_end_matches('/').to_owned(),
            per_address: Arc::new(KeyedLimit::per_minute(
                config.auth.login_per_address_per_minute,
            )),
            per_invitation: Arc::new(KeyedLimit::per_minute(
                config.auth.login_per_email_per_minute,
            )),
        }
    }

    fn accept_url(&self, token: &InvitationToken) -> String {
        format!("{}{ACCEPT_PATH}#token={}", self.base_url, token.expose())
    }

    fn view(&self, invitation: Invitation, accept_url: Option<String>) -> InvitationView {
        InvitationView {
            status: invitation.status(self.clock.now()),
            invitation,
            accept_url,
        }
    }

    /// Invites a member (OWNER/ADMIN; nobody invites a role above their own, so only an OWNER
    /// invites an OWNER). Refused with `CONFLICT` when the email is a member already (active or
    /// not) or has a pending invitation to the organisation.
    pub async fn invite_member(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        input: MemberInvite,
    ) -> AppResult<InvitationView> {
        let (inviter, manager) = manager_of(&self.db, viewer, org_id).await?;
        check_may_grant(&manager, input.role)?;
        let email = Email::parse(&input.email, "input.email")?;
        let given = required_text(&input.given_name, "input.givenName", 200)?;
        let family = required_text(&input.family_name, "input.familyName", 200)?;
        let title = optional_text(input.title.as_deref(), "input.title", 200)?;
        let now = self.clock.now();
        let txn = db::begin(&self.db).await?;
        if let Some((user, _)) = db::users::find_by_email(&txn, &email).await?
            && db::organizations::find_membership(&txn, org_id, user.id)
                .await?
                .is_some()
        {
            return Err(AppError::ConflictOn {
                message: "this person is already a member; use updateOrganizationMember".into(),
                field: "input.email".into(),
            });
        }
        if db::invitations::pending_exists(&txn, org_id, email.as_str(), None, now).await? {
            return Err(pending_conflict());
        }
        let invitation = self.new_invitation(
            org_id,
            &email,
            given,
            family,
            InvitationKind::Member {
                role: input.role,
                title,
            },
            &inviter,
            now,
        );
        let view = self.store(&txn, viewer, invitation, &inviter).await?;
        txn.commit().await?;
        self.mail.wake();
        tracing::info!(org = %org_id, invitation = %view.invitation.id, role = input.role.as_str(), "member invited");
        Ok(view)
    }

    /// Invites a guardian of a patient (staff of the patient's organisation, by the one read
    /// rule). Refused with `CONFLICT` when the email is a guardian of the patient already or has
    /// a pending invitation for the patient.
    pub async fn invite_guardian(
        &self,
        viewer: &Viewer,
        patient_id: PatientId,
        input: GuardianInvite,
    ) -> AppResult<InvitationView> {
        let (patient, inviter, _) = patient_staff(&self.db, viewer, patient_id).await?;
        let email = Email::parse(&input.email, "input.email")?;
        let given = required_text(&input.given_name, "input.givenName", 200)?;
        let family = required_text(&input.family_name, "input.familyName", 200)?;
        let now = self.clock.now();
        let txn = db::begin(&self.db).await?;
        if let Some((user, _)) = db::users::find_by_email(&txn, &email).await?
            && db::patients::find_guardian(&txn, patient.id, user.id)
                .await?
                .is_some()
        {
            return Err(AppError::ConflictOn {
                message: "this person is already a guardian of the patient".into(),
                field: "input.email".into(),
            });
        }
        if db::invitations::pending_exists(
            &txn,
            patient.org_id,
            email.as_str(),
            Some(patient.id),
            now,
        )
        .await?
        {
            return Err(pending_conflict());
        }
        let invitation = self.new_invitation(
            patient.org_id,
            &email,
            given,
            family,
            InvitationKind::Guardian {
                patient_id: patient.id,
                relationship: input.relationship,
                can_chat: input.can_chat,
            },
            &inviter,
            now,
        );
        let view = self.store(&txn, viewer, invitation, &inviter).await?;
        txn.commit().await?;
        self.mail.wake();
        tracing::info!(org = %patient.org_id, invitation = %view.invitation.id, "guardian invited");
        Ok(view)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of an invitation, each validated by the caller"
    )]
    fn new_invitation(
        &self,
        org_id: OrgId,
        email: &Email,
        given_name: String,
        family_name: String,
        kind: InvitationKind,
        inviter: &User,
        now: DateTime<Utc>,
    ) -> Invitation {
        Invitation {
            id: InvitationId::new(),
            org_id,
            email: email.as_str().to_owned(),
            given_name,
            family_name,
            kind,
            invited_by: Some(inviter.id),
            created_at: crate::domain::care::stored_precision(now),
            expires_at: crate::domain::care::stored_precision(now + self.ttl),
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        }
    }

    /// Writes the invitation (its token's hash), its mail and its CREATE record in `txn`.
    async fn store(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        viewer: &Viewer,
        invitation: Invitation,
        inviter: &User,
    ) -> AppResult<InvitationView> {
        let token = InvitationToken::generate();
        let url = self.accept_url(&token);
        db::invitations::insert(txn, &invitation, token.hash()).await?;
        let org = db::organizations::find(txn, invitation.org_id)
            .await?
            .ok_or(AppError::NotFound("organization"))?;
        mail::enqueue(
            txn,
            NewMail {
                mail: invitation_mail(&invitation, &org.name, inviter, &url),
                org_id: Some(invitation.org_id.as_string()),
                invitation_id: Some(invitation.id.as_string()),
            },
            self.clock.now(),
        )
        .await?;
        viewer
            .audit
            .record_in(txn, entry(AuditAction::Create, &invitation))
            .await?;
        Ok(self.view(invitation, Some(url)))
    }

    /// A page of an organisation's invitations, newest first (active members; other staff than
    /// OWNER/ADMIN see guardian invitations only); only pending ones unless `pending_only` is
    /// false.
    pub async fn list(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        pending_only: bool,
        page: &PageRequest,
    ) -> AppResult<Page<InvitationView>> {
        let (_, member) = member_of(&self.db, viewer, org_id).await?;
        let members_too = member.membership().role.manages_organization();
        let now = self.clock.now();
        let page =
            db::invitations::page_of_org(&self.db, org_id, pending_only, members_too, now, page)
                .await?;
        Ok(page.map(|i| self.view(i, None)))
    }

    /// Revokes a pending invitation: a member invitation by an OWNER/ADMIN who may grant its
    /// role, a guardian invitation by staff of the patient's organisation. Revoking a revoked
    /// or expired one changes nothing more; an accepted one is `INVITATION_USED`.
    pub async fn revoke(&self, viewer: &Viewer, id: InvitationId) -> AppResult<InvitationView> {
        let invitation = db::invitations::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("invitation"))?;
        let allowed = match &invitation.kind {
            InvitationKind::Member { role, .. } => {
                match manager_of(&self.db, viewer, invitation.org_id).await {
                    Ok((_, manager)) => check_may_grant(&manager, *role),
                    Err(e) => Err(e),
                }
            }
            InvitationKind::Guardian { patient_id, .. } => {
                patient_staff(&self.db, viewer, *patient_id)
                    .await
                    .map(|_| ())
            }
        };
        match allowed {
            Ok(()) => {}
            Err(AppError::NotFound(_)) => return Err(AppError::NotFound("invitation")),
            Err(e) => return Err(e),
        }
        if invitation.accepted_at.is_some() {
            return Err(AppError::InvitationUsed(
                "this invitation was accepted; remove the member or guardian instead".into(),
            ));
        }
        let now = self.clock.now();
        let txn = db::begin(&self.db).await?;
        if db::invitations::mark_revoked(&txn, id, now).await? {
            mail::withdraw_for_invitation(&txn, &id.as_string(), now).await?;
            viewer
                .audit
                .record_in(&txn, entry(AuditAction::Delete, &invitation))
                .await?;
            tracing::info!(invitation = %id, "invitation revoked");
        }
        txn.commit().await?;
        let invitation = db::invitations::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("invitation"))?;
        Ok(self.view(invitation, None))
    }

    /// Accepts an invitation with its token and a password (anonymous): creates the account
    /// (or checks the existing account's password), attaches the membership or guardian link,
    /// marks the invitation used, and signs the invitee in.
    pub async fn accept(
        &self,
        token: &str,
        password: String,
        client_ip: Option<IpAddr>,
        audit: &AuditScope,
    ) -> AppResult<AccessToken> {
        if rand::random::<u8>() == 0 {
            self.per_address.forget_idle();
            self.per_invitation.forget_idle();
        }
        if let Some(ip) = client_ip {
            self.per_address.check(&ip)?;
        }
        let token = InvitationToken::parse(token, "token")?;
        let hash = token.hash();
        self.per_invitation.check(&hash)?;
        let invitation = db::invitations::find_by_token_hash(&self.db, &hash)
            .await?
            .ok_or(AppError::NotFound("invitation"))?;
        usable(&invitation, self.clock.now())?;
        let email = Email::parse(&invitation.email, "token")?;
        // The password is checked or hashed before the transaction (argon2 takes a while).
        let (existing, new_hash) = match db::users::find_by_email(&self.db, &email).await? {
            Some((user, Some(stored))) => {
                if !passwords::verify(password, Some(stored)).await? {
                    tracing::info!(invitation = %invitation.id, "invitation not accepted: wrong password for the existing account");
                    return Err(AppError::Unauthenticated(
                        "an account with this email exists: enter its password".into(),
                    ));
                }
                (Some(user), None)
            }
            found => {
                passwords::validate_new(&password, "password")?;
                (
                    found.map(|(u, _)| u),
                    Some(passwords::hash(password).await?),
                )
            }
        };
        let now = self.clock.now();
        let txn = db::begin(&self.db).await?;
        // The invitation is taken first: a concurrent accept of the same token waits here, then
        // finds it used, before either creates anything.
        if !db::invitations::mark_accepted(&txn, invitation.id, now).await? {
            drop(txn);
            let current = db::invitations::find(&self.db, invitation.id)
                .await?
                .ok_or(AppError::NotFound("invitation"))?;
            usable(&current, self.clock.now())?;
            return Err(AppError::InvitationUsed(
                "this invitation is no longer valid".into(),
            ));
        }
        let user = match (existing, new_hash) {
            (Some(user), Some(hash)) => {
                db::users::set_password_hash(&txn, user.id, hash).await?;
                user
            }
            (Some(user), None) => user,
            (None, hash) => {
                db::users::insert(
                    &txn,
                    NewUser {
                        email,
                        given_name: invitation.given_name.clone(),
                        family_name: invitation.family_name.clone(),
                        password_hash: hash,
                    },
                )
                .await?
            }
        };
        db::invitations::set_accepted_by(&txn, invitation.id, user.id).await?;
        mail::withdraw_for_invitation(&txn, &invitation.id.as_string(), now).await?;
        let audit = audit.with_actor(AuditActor::User(user.id));
        audit
            .record_in(&txn, entry(AuditAction::Update, &invitation))
            .await?;
        let mut fx = AfterCommit::default();
        match &invitation.kind {
            InvitationKind::Member { role, title } => {
                if db::organizations::find_membership(&txn, invitation.org_id, user.id)
                    .await?
                    .is_some()
                {
                    return Err(AppError::Conflict(
                        "this account is already a member of the organization".into(),
                    ));
                }
                db::organizations::insert_membership(
                    &txn,
                    invitation.org_id,
                    &user,
                    *role,
                    title.clone(),
                )
                .await?;
                audit
                    .record_in(
                        &txn,
                        AuditEntry::new(AuditAction::Create, AuditEntity::Membership, user.id)
                            .org(invitation.org_id),
                    )
                    .await?;
            }
            InvitationKind::Guardian {
                patient_id,
                relationship,
                can_chat,
            } => {
                db::patients::upsert_guardian(
                    &txn,
                    &Guardian {
                        patient_id: *patient_id,
                        user_id: user.id,
                        relationship: *relationship,
                        can_chat: *can_chat,
                    },
                )
                .await?;
                audit
                    .record_in(
                        &txn,
                        AuditEntry::new(AuditAction::Create, AuditEntity::Guardian, user.id)
                            .org(invitation.org_id)
                            .patient(*patient_id),
                    )
                    .await?;
                // The new guardian joins the patient's chats that their right allows.
                self.chats
                    .patient_changed(&txn, &mut fx, *patient_id)
                    .await?;
            }
        }
        self.chats.commit(txn, fx).await?;
        tracing::info!(invitation = %invitation.id, user = %user.id, "invitation accepted");
        self.accounts
            .mint(user, self.accounts.authenticator().access_token_ttl())
    }

    /// The mail queue (for the operator's view and tests).
    pub fn mail(&self) -> &MailQueue {
        &self.mail
    }
}

/// Whether an invitation can still be accepted; the error says why not.
fn usable(invitation: &Invitation, now: DateTime<Utc>) -> AppResult<()> {
    match invitation.status(now) {
        InvitationStatus::Pending => Ok(()),
        InvitationStatus::Accepted => Err(AppError::InvitationUsed(
            "this invitation has been accepted already; sign in instead".into(),
        )),
        InvitationStatus::Revoked => Err(AppError::InvitationUsed(
            "this invitation was revoked".into(),
        )),
        InvitationStatus::Expired => Err(AppError::InvitationExpired(
            "this invitation has expired; ask for a new one".into(),
        )),
    }
}

fn pending_conflict() -> AppError {
    AppError::ConflictOn {
        message: "a pending invitation for this email exists; revoke it first to send a new one"
            .into(),
        field: "input.email".into(),
    }
}

/// The audit entry of `action` on an invitation: ids only (never the email or token).
fn entry(action: AuditAction, invitation: &Invitation) -> AuditEntry {
    let entry =
        AuditEntry::new(action, AuditEntity::Invitation, invitation.id).org(invitation.org_id);
    match invitation.kind.patient_id() {
        Some(p) => entry.patient(p),
        None => entry,
    }
}

/// The invitation mail: who invites to what, the URL, and when it expires (no patient data).
fn invitation_mail(invitation: &Invitation, org_name: &str, inviter: &User, url: &str) -> Mail {
    let what = match &invitation.kind {
        InvitationKind::Member { role, .. } => format!(
            "to join {org_name} as {}",
            match role {
                OrgRole::Owner => "an owner",
                OrgRole::Admin => "an administrator",
                OrgRole::Practitioner => "a practitioner",
                OrgRole::Staff => "a staff member",
            }
        ),
        InvitationKind::Guardian { .. } => {
            format!("to follow a patient's care at {org_name} as a guardian")
        }
    };
    let body = format!(
        "Hello {given},\r\n\r\n{inviter} invited you {what}.\r\n\r\nAccept the invitation here:\r\n{url}\r\n\r\nThe link works once and expires on {expires} (UTC). If you did not expect this mail, ignore it.\r\n",
        given = invitation.given_name,
        inviter = inviter.display_name,
        expires = invitation.expires_at.format("%Y-%m-%d %H:%M"),
    );
    Mail {
        to: invitation.email.clone(),
        subject: format!("Invitation to {org_name}"),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_views_debug_output_leaves_out_the_accept_url() {
        let now = Utc::now();
        let view = InvitationView {
            invitation: Invitation {
                id: InvitationId::new(),
                org_id: OrgId::new(),
                email: "planted@example.org".into(),
                given_name: "A".into(),
                family_name: "B".into(),
                kind: InvitationKind::Member {
                    role: OrgRole::Staff,
                    title: None,
                },
                invited_by: None,
                created_at: now,
                expires_at: now,
                accepted_at: None,
                accepted_by: None,
                revoked_at: None,
            },
            status: InvitationStatus::Pending,
            accept_url: Some("https://x.example/accept-invitation#token=planted".into()),
        };
        let debug = format!("{view:?}");
        assert!(!debug.contains("planted"), "{debug}");
    }
}
