//! Consent and compliance groups, and the compliance rule every feature calls before it puts
//! another organisation's staff into a patient's conversation or meeting:
//!
//! a chat or meeting about a patient may include staff of an organisation other than the
//! patient's own only while that organisation holds an active consent of the right scope,
//! directly or through a compliance group; otherwise `CONSENT_REQUIRED`.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;

use super::{
    access::{PatientReader, manager_of, patient_reader, record_change},
    chat::{AfterCommit, ChatService},
};
use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    auth::Viewer,
    clock::SharedClock,
    db::{self, consents::NewConsent},
    domain::{
        ComplianceGroupId, ConsentId, Membership, OrgId, UserId,
        care::{
            ComplianceGroup, ComplianceGroupInvitation, Consent, ConsentScope,
            GuardianRelationship, Patient,
        },
        people::required_text,
    },
    error::{AppError, AppResult},
};

/// Proof that an organisation may take part in a patient's care in one scope.
#[derive(Clone, Copy, Debug)]
pub struct ConsentProof {
    /// The organisation.
    pub org_id: OrgId,
    /// The scope.
    pub scope: ConsentScope,
}

/// The compliance rule: `Ok` when `org` is the patient's own organisation or holds an active
/// consent of `scope` (directly or through a compliance group), else `CONSENT_REQUIRED`.
pub async fn require(
    db: &impl db::Source,
    patient: &Patient,
    org: OrgId,
    scope: ConsentScope,
    now: DateTime<Utc>,
) -> AppResult<ConsentProof> {
    if org == patient.org_id {
        return Ok(ConsentProof { org_id: org, scope });
    }
    let consents = db::consents::unrevoked(db, patient.id, scope).await?;
    let active: Vec<&Consent> = consents.iter().filter(|c| c.is_active(now)).collect();
    if active.iter().any(|c| c.granted_to == Some(org)) {
        return Ok(ConsentProof { org_id: org, scope });
    }
    if active.iter().any(|c| c.compliance_group.is_some()) {
        let groups = db::consents::groups_of_org(db, org).await?;
        if active
            .iter()
            .any(|c| c.compliance_group.is_some_and(|g| groups.contains(&g)))
        {
            return Ok(ConsentProof { org_id: org, scope });
        }
    }
    Err(AppError::ConsentRequired(format!(
        "the patient has no active {} consent for that organization",
        scope.as_str()
    )))
}

/// Input of `recordConsent`.
#[derive(Clone, Debug)]
pub struct ConsentInput {
    /// What it allows.
    pub scope: ConsentScope,
    /// Granted to an organisation…
    pub granted_to: Option<OrgId>,
    /// …or to a compliance group.
    pub compliance_group: Option<ComplianceGroupId>,
    /// When it lapses.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Consent records and compliance groups.
#[derive(Clone)]
pub struct ConsentService {
    db: db::Db,
    clock: SharedClock,
    chats: ChatService,
}

impl ConsentService {
    /// Builds the service.
    pub fn new(db: db::Db, clock: SharedClock, chats: ChatService) -> Self {
        Self { db, clock, chats }
    }

    /// Commits `txn` with the patient's chats brought in step in it (outside staff join or
    /// leave as the consent now says), then settles what it owes.
    async fn commit_with_chats(
        &self,
        txn: DatabaseTransaction,
        patient: crate::domain::PatientId,
    ) -> AppResult<()> {
        let mut fx = AfterCommit::default();
        self.chats.patient_changed(&txn, &mut fx, patient).await?;
        self.chats.commit(txn, fx).await?;
        Ok(())
    }

    /// Who may record or revoke: staff of the patient's organisation, or the patient themself /
    /// the primary guardian.
    async fn consent_manager(
        &self,
        viewer: &Viewer,
        patient: crate::domain::PatientId,
    ) -> AppResult<(Patient, UserId)> {
        let (patient, reader) = patient_reader(&self.db, viewer, patient).await?;
        let allowed = match &reader {
            PatientReader::Staff(_) => true,
            PatientReader::Guardian(g) => matches!(
                g.relationship,
                GuardianRelationship::SelfCare | GuardianRelationship::Primary
            ),
        };
        if !allowed {
            return Err(AppError::Forbidden(
                "only staff, the patient or the primary guardian manage consent".into(),
            ));
        }
        Ok((patient, viewer.user()?.id))
    }

    /// Records a consent for a patient.
    pub async fn record(
        &self,
        viewer: &Viewer,
        patient_id: crate::domain::PatientId,
        input: ConsentInput,
    ) -> AppResult<Consent> {
        let (patient, by) = self.consent_manager(viewer, patient_id).await?;
        match (input.granted_to, input.compliance_group) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(AppError::bad_input(
                    "input.grantedToOrgId",
                    "give exactly one of grantedToOrgId and complianceGroupId",
                ));
            }
            (Some(org), None) => {
                if org == patient.org_id {
                    return Err(AppError::bad_input(
                        "input.grantedToOrgId",
                        "the patient's own organization needs no consent",
                    ));
                }
                if db::organizations::find(&self.db, org).await?.is_none() {
                    return Err(AppError::bad_input(
                        "input.grantedToOrgId",
                        "no such organization",
                    ));
                }
            }
            (None, Some(group)) => {
                if db::consents::find_groups(&self.db, &[group])
                    .await?
                    .is_empty()
                {
                    return Err(AppError::bad_input(
                        "input.complianceGroupId",
                        "no such compliance group",
                    ));
                }
            }
        }
        if input.expires_at.is_some_and(|e| e <= self.clock.now()) {
            return Err(AppError::bad_input(
                "input.expiresAt",
                "must be in the future",
            ));
        }
        let txn = db::begin(&self.db).await?;
        let consent = db::consents::insert(
            &txn,
            NewConsent {
                patient_id: patient.id,
                scope: input.scope,
                granted_to: input.granted_to,
                compliance_group: input.compliance_group,
                expires_at: input.expires_at.map(crate::domain::care::stored_precision),
                recorded_by: by,
            },
        )
        .await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Create,
            AuditEntity::Consent,
            consent.id,
            patient.org_id,
            Some(patient.id),
        )
        .await?;
        self.commit_with_chats(txn, patient.id).await?;
        Ok(consent)
    }

    /// Revokes a consent (revoking twice keeps the first time).
    pub async fn revoke(&self, viewer: &Viewer, consent_id: ConsentId) -> AppResult<Consent> {
        viewer.user()?;
        let consent = db::consents::find(&self.db, consent_id)
            .await?
            .ok_or(AppError::NotFound("consent"))?;
        let (patient, _) = self
            .consent_manager(viewer, consent.patient_id)
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::NotFound("consent"),
                other => other,
            })?;
        let txn = db::begin(&self.db).await?;
        db::consents::revoke(&txn, consent_id, self.clock.now()).await?;
        // A revocation is an UPDATE: the consent is kept, with when it was revoked.
        record_change(
            &txn,
            viewer,
            AuditAction::Update,
            AuditEntity::Consent,
            consent_id,
            patient.org_id,
            Some(patient.id),
        )
        .await?;
        self.commit_with_chats(txn, consent.patient_id).await?;
        db::consents::find(&self.db, consent_id)
            .await?
            .ok_or(AppError::NotFound("consent"))
    }

    /// Creates a compliance group of `org_id` (OWNER/ADMIN) and invites the other organisations.
    ///
    /// `org_id` is a member at once; the others count only once they accept. The answer is the
    /// same whether or not an invited id names an organisation (nothing about the others is
    /// looked up), so the group's creator learns nothing about organisations that are not theirs.
    pub async fn create_group(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        name: &str,
        others: &[OrgId],
    ) -> AppResult<ComplianceGroup> {
        manager_of(&self.db, viewer, org_id).await?;
        let name = required_text(name, "input.name", 200)?;
        let mut invited: Vec<OrgId> = Vec::new();
        for o in others {
            if *o != org_id && !invited.contains(o) {
                invited.push(*o);
            }
        }
        if invited.is_empty() {
            return Err(AppError::bad_input(
                "input.organizationIds",
                "a compliance group joins at least one other organization",
            ));
        }
        let txn = db::begin(&self.db).await?;
        let group =
            db::consents::insert_group(&txn, name, org_id, &invited, self.clock.now()).await?;
        txn.commit().await?;
        Ok(group)
    }

    /// The pending compliance group invitations of `org_id` (its OWNERs and ADMINs).
    pub async fn invitations(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
    ) -> AppResult<Vec<ComplianceGroupInvitation>> {
        manager_of(&self.db, viewer, org_id).await?;
        let invitations = db::consents::invitations_of_org(&self.db, org_id).await?;
        viewer.audit.record_all(
            invitations
                .iter()
                .map(|i| AuditEntry::read(AuditEntity::Invitation, i.group_id).org(org_id)),
        );
        Ok(invitations)
    }

    /// Accepts `org_id`'s invitation to a compliance group (its OWNERs and ADMINs).
    ///
    /// From then on the group's consents count for the organisation. Anyone else, and an unknown
    /// group or invitation, gets the same `NOT_FOUND`.
    pub async fn accept_invitation(
        &self,
        viewer: &Viewer,
        group: ComplianceGroupId,
        org_id: OrgId,
    ) -> AppResult<ComplianceGroup> {
        self.invitee(viewer, org_id).await?;
        let txn = db::begin(&self.db).await?;
        if !db::consents::remove_invitation(&txn, group, org_id).await? {
            return Err(INVITATION_NOT_FOUND);
        }
        db::consents::add_member(&txn, group, org_id).await?;
        viewer
            .audit
            .record_in(
                &txn,
                AuditEntry::new(AuditAction::Update, AuditEntity::Invitation, group).org(org_id),
            )
            .await?;
        txn.commit().await?;
        db::consents::find_groups(&self.db, &[group])
            .await?
            .pop()
            .ok_or(INVITATION_NOT_FOUND)
    }

    /// Declines `org_id`'s invitation to a compliance group (its OWNERs and ADMINs).
    ///
    /// Anyone else gets what [`Self::accept_invitation`] answers them.
    pub async fn decline_invitation(
        &self,
        viewer: &Viewer,
        group: ComplianceGroupId,
        org_id: OrgId,
    ) -> AppResult<()> {
        self.invitee(viewer, org_id).await?;
        let txn = db::begin(&self.db).await?;
        if !db::consents::remove_invitation(&txn, group, org_id).await? {
            return Err(INVITATION_NOT_FOUND);
        }
        viewer
            .audit
            .record_in(
                &txn,
                AuditEntry::new(AuditAction::Delete, AuditEntity::Invitation, group).org(org_id),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Checks that the viewer manages the invited organisation.
    ///
    /// Any other signed-in caller (a plain member included) gets what an unknown invitation gets.
    async fn invitee(&self, viewer: &Viewer, org_id: OrgId) -> AppResult<()> {
        viewer.user()?;
        match manager_of(&self.db, viewer, org_id).await {
            Ok(_) => Ok(()),
            Err(AppError::NotFound(_) | AppError::Forbidden(_)) => Err(INVITATION_NOT_FOUND),
            Err(other) => Err(other),
        }
    }
}

/// What every refused or unknown invitation answers.
const INVITATION_NOT_FOUND: AppError = AppError::NotFound("compliance group invitation");

/// The invited organisations of `group` that a caller with these `memberships` may see.
///
/// All of them for an active OWNER or ADMIN of a member organisation, none for anyone else; only
/// ids, as an invited organisation's name stays with it until it accepts.
pub fn invited_visible_to<'g>(
    group: &'g ComplianceGroup,
    memberships: &[Membership],
) -> &'g [OrgId] {
    let manages_member = memberships
        .iter()
        .any(|m| m.active && m.role.manages_organization() && group.org_ids.contains(&m.org_id));
    if manages_member {
        &group.invited_org_ids
    } else {
        &[]
    }
}
