//! Authorization capabilities: values a service can only obtain after the check passed.
//!
//! A non-member learns nothing about an organisation: every failed membership check is
//! `NOT_FOUND`, whether or not the organisation exists.
//!
//! Every refusal here is recorded in the viewer's audit scope as a DENIED read of what was asked
//! (the id as given); the services record the READ of what they hand out right beside these
//! checks, and each change in the change's transaction ([`record_change`]).

use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    auth::Viewer,
    db,
    domain::{Membership, OrgId, User},
    error::{AppError, AppResult},
};

/// Proof that the viewer is an active member of an organisation.
#[derive(Clone, Debug)]
pub struct MemberOf {
    membership: Membership,
}

/// Proof that the viewer is an active OWNER or ADMIN of an organisation.
#[derive(Clone, Debug)]
pub struct ManagerOf {
    membership: Membership,
}

impl MemberOf {
    /// The organisation.
    pub fn org_id(&self) -> OrgId {
        self.membership.org_id
    }

    /// The viewer's membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
}

impl ManagerOf {
    /// The organisation.
    pub fn org_id(&self) -> OrgId {
        self.membership.org_id
    }

    /// The viewer's membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
}

/// Proof that the viewer may read and export an organisation's audit trail: an active OWNER, or
/// an active member with the `auditor` flag.
#[derive(Clone, Debug)]
pub struct AuditorOf {
    membership: Membership,
}

impl AuditorOf {
    /// The organisation.
    pub fn org_id(&self) -> OrgId {
        self.membership.org_id
    }

    /// The viewer's membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }
}

/// Whether a membership carries the auditor capability now: active, and OWNER or flagged.
pub fn is_auditor(membership: &Membership) -> bool {
    membership.active && (membership.role == crate::domain::OrgRole::Owner || membership.auditor)
}

/// Something the viewer may read: only the service layer makes one, after its read rule passed,
/// so a resolver holding one holds the proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readable<T>(T);

impl<T> Readable<T> {
    /// Grants the read (services only, after the check).
    pub(in crate::services) fn granted(value: T) -> Self {
        Self(value)
    }

    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Readable<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Checks that the viewer is an active member of `org_id`; a refusal is recorded as a DENIED
/// read of the organisation's membership, in that organisation's trail when it exists and in
/// the `system` trail when it does not (so made-up ids cannot start new chains).
pub async fn member_of(
    db: &impl db::Source,
    viewer: &Viewer,
    org_id: OrgId,
) -> AppResult<(User, MemberOf)> {
    let result = member_of_unrecorded(db, viewer, org_id).await;
    if matches!(result, Err(AppError::NotFound(_))) && viewer.audit.is_recording() {
        let denied = AuditEntry::read(AuditEntity::Membership, org_id).denied();
        let exists = db::organizations::find(db, org_id).await?.is_some();
        viewer
            .audit
            .record(if exists { denied.org(org_id) } else { denied });
    }
    result
}

/// [`member_of`] without recording a refusal (for callers that try another rule next).
pub(in crate::services) async fn member_of_unrecorded(
    db: &impl db::Source,
    viewer: &Viewer,
    org_id: OrgId,
) -> AppResult<(User, MemberOf)> {
    let user = viewer.user()?.clone();
    let found = match viewer.remembered_memberships() {
        Some(_) => memberships(db, viewer)
            .await?
            .into_iter()
            .find(|m| m.org_id == org_id),
        None => db::organizations::find_membership(db, org_id, user.id).await?,
    };
    match found {
        Some(membership) if membership.active => Ok((user, MemberOf { membership })),
        _ => Err(AppError::NotFound("organization")),
    }
}

/// The signed-in viewer's memberships (active or not), oldest first: read once per operation
/// when the viewer remembers them ([`Viewer::remembering_memberships`]), else every time.
pub async fn memberships(db: &impl db::Source, viewer: &Viewer) -> AppResult<Vec<Membership>> {
    let user = viewer.user()?.id;
    match viewer.remembered_memberships() {
        Some(memo) => Ok(memo
            .get_or_try_init(|| db::organizations::memberships_of_user(db, user))
            .await?
            .clone()),
        None => db::organizations::memberships_of_user(db, user).await,
    }
}

/// Records one READ of `patient` (the entity the viewer was given).
pub fn record_patient_read(viewer: &Viewer, patient: &crate::domain::care::Patient) {
    viewer.audit.record(
        AuditEntry::read(AuditEntity::Patient, patient.id)
            .org(patient.org_id)
            .patient(patient.id),
    );
}

/// Records a change (`action` on `entity` `id` of `patient` in `org`) in the change's
/// transaction.
pub async fn record_change(
    txn: &impl db::Source,
    viewer: &Viewer,
    action: AuditAction,
    entity: AuditEntity,
    id: impl Into<crate::audit::EntityId>,
    org: OrgId,
    patient: Option<crate::domain::PatientId>,
) -> AppResult<()> {
    let mut entry = AuditEntry::new(action, entity, id).org(org);
    if let Some(p) = patient {
        entry = entry.patient(p);
    }
    viewer.audit.record_in(txn, entry).await
}

/// Checks that the viewer is an active OWNER or ADMIN of `org_id`. A member without that role
/// gets `FORBIDDEN` (they already know the organisation exists).
pub async fn manager_of(
    db: &impl db::Source,
    viewer: &Viewer,
    org_id: OrgId,
) -> AppResult<(User, ManagerOf)> {
    let (user, member) = member_of(db, viewer, org_id).await?;
    if !member.membership.role.manages_organization() {
        return Err(AppError::Forbidden(
            "only an OWNER or ADMIN of the organization may do this".into(),
        ));
    }
    Ok((
        user,
        ManagerOf {
            membership: member.membership,
        },
    ))
}

/// Checks that the viewer may read `org_id`'s audit trail. A non-member (or an inactive one)
/// gets `NOT_FOUND`; a member who is neither OWNER nor auditor gets `FORBIDDEN`.
pub async fn auditor_of(
    db: &impl db::Source,
    viewer: &Viewer,
    org_id: OrgId,
) -> AppResult<(User, AuditorOf)> {
    let (user, member) = member_of(db, viewer, org_id).await?;
    if !is_auditor(&member.membership) {
        return Err(AppError::Forbidden(
            "only an OWNER or an auditor of the organization may read its audit trail".into(),
        ));
    }
    Ok((
        user,
        AuditorOf {
            membership: member.membership,
        },
    ))
}

/// How the viewer may see a patient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatientReader {
    /// An active member of the patient's organisation (may also edit).
    Staff(Membership),
    /// A guardian of the patient (reads only).
    Guardian(crate::domain::care::Guardian),
}

/// Whether a user with `memberships` and guardian links `guardianships` may see the record of
/// `patient` (of organisation `org`): active staff of that organisation, or one of its guardians
/// ([`patient_reader`]'s rule, on facts a loader already read).
pub fn sees_patient(
    memberships: &[Membership],
    guardianships: &[crate::domain::care::Guardian],
    org: OrgId,
    patient: crate::domain::PatientId,
) -> bool {
    memberships.iter().any(|m| m.active && m.org_id == org)
        || guardianships.iter().any(|g| g.patient_id == patient)
}

/// Whether `user` (with `memberships`) may read `case`, whose participants are `participants`:
/// active staff of its organisation, or one of its PATIENT participants (the rule of
/// `CaseService::case`, on facts a loader already read).
pub fn sees_case(
    memberships: &[Membership],
    participants: &[crate::domain::care::CaseParticipant],
    user: crate::domain::UserId,
    case: &crate::domain::care::Case,
) -> bool {
    memberships
        .iter()
        .any(|m| m.active && m.org_id == case.org_id)
        || participants.iter().any(|p| {
            p.case_id == case.id
                && p.user_id == user
                && p.role == crate::domain::care::CaseRole::Patient
        })
}

/// Checks that the viewer is staff of the patient's organisation or a guardian of the patient;
/// anyone else gets `NOT_FOUND`.
pub async fn patient_reader(
    db: &impl db::Source,
    viewer: &Viewer,
    patient_id: crate::domain::PatientId,
) -> AppResult<(crate::domain::care::Patient, PatientReader)> {
    let user = viewer.user()?;
    let Some(patient) = db::patients::find(db, patient_id).await? else {
        // Asked for an id that names no patient: recorded on the system chain.
        viewer
            .audit
            .record(AuditEntry::read(AuditEntity::Patient, patient_id).denied());
        return Err(AppError::NotFound("patient"));
    };
    if let Some(m) = db::organizations::find_membership(db, patient.org_id, user.id).await?
        && m.active
    {
        return Ok((patient, PatientReader::Staff(m)));
    }
    match db::patients::find_guardian(db, patient_id, user.id).await? {
        Some(g) => Ok((patient, PatientReader::Guardian(g))),
        None => {
            viewer.audit.record(
                AuditEntry::read(AuditEntity::Patient, patient_id)
                    .org(patient.org_id)
                    .patient(patient_id)
                    .denied(),
            );
            Err(AppError::NotFound("patient"))
        }
    }
}

/// Checks that the viewer is staff of the patient's organisation. A guardian gets `FORBIDDEN`
/// (they know the patient); anyone else `NOT_FOUND`.
pub async fn patient_staff(
    db: &impl db::Source,
    viewer: &Viewer,
    patient_id: crate::domain::PatientId,
) -> AppResult<(crate::domain::care::Patient, User, MemberOf)> {
    let (patient, reader) = patient_reader(db, viewer, patient_id).await?;
    match reader {
        PatientReader::Staff(membership) => {
            Ok((patient, viewer.user()?.clone(), MemberOf { membership }))
        }
        PatientReader::Guardian(_) => {
            viewer.audit.record(
                AuditEntry::read(AuditEntity::Patient, patient_id)
                    .org(patient.org_id)
                    .patient(patient_id)
                    .denied(),
            );
            Err(AppError::Forbidden(
                "only staff of the patient's organization may do this".into(),
            ))
        }
    }
}

/// How the viewer may see an organisation's booking calendar (its practitioners' free slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BookingReader {
    /// An active member of the organisation.
    Staff(Membership),
    /// A guardian of at least one of the organisation's patients.
    Guardian,
}

/// Checks that the viewer may read `org_id`'s free slots: active staff of the organisation, or
/// a guardian of one of its patients. Anyone else gets `NOT_FOUND` (recorded as
/// [`member_of`] records it).
pub async fn booking_reader(
    db: &impl db::Source,
    viewer: &Viewer,
    org_id: OrgId,
) -> AppResult<BookingReader> {
    match member_of_unrecorded(db, viewer, org_id).await {
        Ok((_, member)) => return Ok(BookingReader::Staff(member.membership)),
        Err(AppError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let user = viewer.user()?;
    if db::patients::of_guardian(db, user.id)
        .await?
        .iter()
        .any(|p| p.org_id == org_id)
    {
        return Ok(BookingReader::Guardian);
    }
    // Neither: refused (and recorded) the way every failed membership check is.
    let (_, member) = member_of(db, viewer, org_id).await?;
    Ok(BookingReader::Staff(member.membership))
}
