//! Care teams around a patient. Staff of the patient's organisation manage them; a member of
//! another organisation joins only with the patient's MESSAGING consent for that organisation
//! (the team has a staff-only conversation), and an outside clinician without an account joins
//! by phone number.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;

use super::{
    access::{PatientReader, patient_reader, patient_staff, record_change},
    chat::{AfterCommit, ChatService},
    consent,
};
use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    auth::Viewer,
    clock::SharedClock,
    db,
    domain::{
        CareTeamId, CareTeamMemberId, OrgId, UserId,
        care::{CareTeam, CareTeamMember, CareTeamRole, ConsentScope, Patient, phone_number},
        people::{optional_text, required_text},
    },
    error::{AppError, AppResult},
};

/// Input of `addCareTeamMember`: a user, or an external clinician by phone.
#[derive(Clone, Debug)]
pub struct NewCareTeamMember {
    /// The member's account.
    pub user_id: Option<UserId>,
    /// Phone number (E.164) of an external member without an account.
    pub phone: Option<String>,
    /// Name of an external member without an account.
    pub display_name: Option<String>,
    /// Role.
    pub role: CareTeamRole,
    /// The organisation a member from outside acts for (needed when they belong to several).
    pub organization_id: Option<OrgId>,
}

/// Care teams.
#[derive(Clone)]
pub struct CareTeamService {
    db: db::Db,
    clock: SharedClock,
    chats: ChatService,
}

/// The members of a team who may take part in its conversation now (as `c` sees them): staff
/// of the patient's organisation while active, outside staff while active and consented
/// (phone-only members are reached outside the chat).
pub async fn chat_members(
    c: &impl db::Source,
    now: DateTime<Utc>,
    team: &CareTeam,
) -> AppResult<Vec<UserId>> {
    let members = db::care_teams::members_of(c, &[team.id]).await?;
    let mut out = Vec::new();
    for m in &members {
        if m.user_id.is_some() && still_entitled(c, now, team, m).await? {
            out.extend(m.user_id);
        }
    }
    Ok(out)
}

/// Whether a listed member may still see the team: staff of the patient's organisation while
/// active there; a member of another organisation while active there and while that
/// organisation holds the patient's MESSAGING consent.
async fn still_entitled(
    c: &impl db::Source,
    now: DateTime<Utc>,
    team: &CareTeam,
    member: &CareTeamMember,
) -> AppResult<bool> {
    let Some(user) = member.user_id else {
        return Ok(false);
    };
    let org = member.member_org_id.unwrap_or(team.org_id);
    let active = matches!(
        db::organizations::find_membership(c, org, user).await?,
        Some(m) if m.active
    );
    if !active {
        return Ok(false);
    }
    if member.member_org_id.is_none() {
        return Ok(true);
    }
    let patient = db::patients::find(c, team.patient_id)
        .await?
        .ok_or(AppError::NotFound("care team"))?;
    Ok(
        consent::require(c, &patient, org, ConsentScope::Messaging, now)
            .await
            .is_ok(),
    )
}

impl CareTeamService {
    /// Builds the service.
    pub fn new(db: db::Db, clock: SharedClock, chats: ChatService) -> Self {
        Self { db, clock, chats }
    }

    /// Commits `txn` with the team's chat brought in step in it, then settles what it owes.
    async fn commit_with_chat(
        &self,
        txn: DatabaseTransaction,
        team: &CareTeam,
        viewer: &Viewer,
    ) -> AppResult<()> {
        let mut fx = AfterCommit::default();
        self.chats
            .care_team_changed(&txn, &mut fx, team, viewer.user()?)
            .await?;
        self.chats.commit(txn, fx).await?;
        Ok(())
    }

    /// Creates a care team; the creator leads it, the listed users join as members.
    pub async fn create(
        &self,
        viewer: &Viewer,
        patient_id: crate::domain::PatientId,
        name: &str,
        member_ids: &[UserId],
    ) -> AppResult<CareTeam> {
        let (patient, me, _) = patient_staff(&self.db, viewer, patient_id).await?;
        let name = required_text(name, "input.name", 200)?;
        // Check every member before creating anything.
        let mut planned = vec![CareTeamMember {
            id: CareTeamMemberId::new(),
            care_team_id: CareTeamId::new(),
            user_id: Some(me.id),
            phone: None,
            display_name: None,
            role: CareTeamRole::Lead,
            member_org_id: None,
        }];
        for user in member_ids {
            if planned.iter().any(|m| m.user_id == Some(*user)) {
                continue;
            }
            let org = self
                .member_org(&patient, *user, None, "input.memberIds")
                .await?;
            planned.push(CareTeamMember {
                id: CareTeamMemberId::new(),
                care_team_id: CareTeamId::new(),
                user_id: Some(*user),
                phone: None,
                display_name: None,
                role: if org.is_some() {
                    CareTeamRole::External
                } else {
                    CareTeamRole::Member
                },
                member_org_id: org,
            });
        }
        let txn = db::begin(&self.db).await?;
        let team = db::care_teams::insert(&txn, patient.id, patient.org_id, name).await?;
        for mut m in planned {
            m.care_team_id = team.id;
            db::care_teams::insert_member(&txn, &m).await?;
        }
        record_change(
            &txn,
            viewer,
            AuditAction::Create,
            AuditEntity::CareTeam,
            team.id,
            team.org_id,
            Some(team.patient_id),
        )
        .await?;
        self.commit_with_chat(txn, &team, viewer).await?;
        Ok(team)
    }

    /// `None` for staff of the patient's organisation; the other organisation (after its
    /// consent is checked) for anyone else.
    async fn member_org(
        &self,
        patient: &Patient,
        user: UserId,
        named: Option<OrgId>,
        field: &str,
    ) -> AppResult<Option<OrgId>> {
        if db::users::find(&self.db, user).await?.is_none() {
            return Err(AppError::bad_input(field, "no such user"));
        }
        if let Some(m) = db::organizations::find_membership(&self.db, patient.org_id, user).await?
            && m.active
        {
            return Ok(None);
        }
        let active: Vec<OrgId> = db::organizations::memberships_of_user(&self.db, user)
            .await?
            .into_iter()
            .filter(|m| m.active)
            .map(|m| m.org_id)
            .collect();
        let org = match named {
            Some(o) if active.contains(&o) => o,
            Some(_) => {
                return Err(AppError::bad_input(
                    "input.organizationId",
                    "the user is not an active member of that organization",
                ));
            }
            None => match active.as_slice() {
                [only] => *only,
                [] => {
                    return Err(AppError::bad_input(
                        field,
                        "the user is staff of no organization",
                    ));
                }
                _ => {
                    return Err(AppError::bad_input(
                        "input.organizationId",
                        "the user belongs to several organizations: name the one they act for",
                    ));
                }
            },
        };
        consent::require(
            &self.db,
            patient,
            org,
            ConsentScope::Messaging,
            self.clock.now(),
        )
        .await?;
        Ok(Some(org))
    }

    async fn staff_team(&self, viewer: &Viewer, id: CareTeamId) -> AppResult<(CareTeam, Patient)> {
        viewer.user()?;
        let team = db::care_teams::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("care team"))?;
        let (patient, _, _) = patient_staff(&self.db, viewer, team.patient_id)
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::NotFound("care team"),
                other => other,
            })?;
        Ok((team, patient))
    }

    /// Adds a member (staff of the patient's organisation).
    pub async fn add_member(
        &self,
        viewer: &Viewer,
        id: CareTeamId,
        input: NewCareTeamMember,
    ) -> AppResult<CareTeamMember> {
        let (team, patient) = self.staff_team(viewer, id).await?;
        let existing = db::care_teams::members_of(&self.db, &[team.id]).await?;
        let member = match (input.user_id, input.phone.as_deref()) {
            (Some(user), None) => {
                if existing.iter().any(|m| m.user_id == Some(user)) {
                    return Err(AppError::Conflict(
                        "already a member of this care team".into(),
                    ));
                }
                let org = self
                    .member_org(&patient, user, input.organization_id, "input.userId")
                    .await?;
                CareTeamMember {
                    id: CareTeamMemberId::new(),
                    care_team_id: team.id,
                    user_id: Some(user),
                    phone: None,
                    display_name: None,
                    role: if org.is_some() {
                        CareTeamRole::External
                    } else {
                        input.role
                    },
                    member_org_id: org,
                }
            }
            (None, Some(raw)) => {
                let phone = phone_number(raw, "input.phone")?;
                if existing
                    .iter()
                    .any(|m| m.phone.as_deref() == Some(phone.as_str()))
                {
                    return Err(AppError::Conflict(
                        "already a member of this care team".into(),
                    ));
                }
                let name = optional_text(input.display_name.as_deref(), "input.displayName", 200)?
                    .ok_or_else(|| {
                        AppError::bad_input("input.displayName", "an external member needs a name")
                    })?;
                CareTeamMember {
                    id: CareTeamMemberId::new(),
                    care_team_id: team.id,
                    user_id: None,
                    phone: Some(phone),
                    display_name: Some(name),
                    role: CareTeamRole::External,
                    member_org_id: None,
                }
            }
            _ => {
                return Err(AppError::bad_input(
                    "input.userId",
                    "give exactly one of userId and phone",
                ));
            }
        };
        let txn = db::begin(&self.db).await?;
        db::care_teams::insert_member(&txn, &member).await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Update,
            AuditEntity::CareTeam,
            team.id,
            team.org_id,
            Some(team.patient_id),
        )
        .await?;
        self.commit_with_chat(txn, &team, viewer).await?;
        Ok(member)
    }

    /// Removes a member (staff of the patient's organisation).
    pub async fn remove_member(
        &self,
        viewer: &Viewer,
        id: CareTeamId,
        member: CareTeamMemberId,
    ) -> AppResult<CareTeam> {
        let (team, _) = self.staff_team(viewer, id).await?;
        let txn = db::begin(&self.db).await?;
        if !db::care_teams::remove_member(&txn, team.id, member).await? {
            return Err(AppError::NotFound("care team member"));
        }
        record_change(
            &txn,
            viewer,
            AuditAction::Update,
            AuditEntity::CareTeam,
            team.id,
            team.org_id,
            Some(team.patient_id),
        )
        .await?;
        self.commit_with_chat(txn, &team, viewer).await?;
        Ok(team)
    }

    /// A care team: staff of the patient's organisation, the patient's guardians, and the team's
    /// own members while still entitled may read it.
    pub async fn team(&self, viewer: &Viewer, id: CareTeamId) -> AppResult<CareTeam> {
        viewer.user()?;
        let team = db::care_teams::find(&self.db, id)
            .await?
            .ok_or(AppError::NotFound("care team"))?;
        let user = viewer.user()?;
        let members = db::care_teams::members_of(&self.db, &[team.id]).await?;
        if let Some(me) = members.iter().find(|m| m.user_id == Some(user.id))
            && still_entitled(&self.db, self.clock.now(), &team, me).await?
        {
            viewer.audit.record(
                AuditEntry::read(AuditEntity::CareTeam, team.id)
                    .org(team.org_id)
                    .patient(team.patient_id),
            );
            return Ok(team);
        }
        match patient_reader(&self.db, viewer, team.patient_id).await {
            Ok((_, PatientReader::Staff(_) | PatientReader::Guardian(_))) => {
                viewer.audit.record(
                    AuditEntry::read(AuditEntity::CareTeam, team.id)
                        .org(team.org_id)
                        .patient(team.patient_id),
                );
                Ok(team)
            }
            Err(AppError::NotFound(_)) => Err(AppError::NotFound("care team")),
            Err(e) => Err(e),
        }
    }
}
