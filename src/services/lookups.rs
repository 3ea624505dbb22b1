//! Batch lookups behind the per-request dataloaders. They check nothing: a resolver only asks
//! for rows hanging off a parent the viewer was already allowed to read.

use crate::{
    db,
    domain::{
        AppointmentId, CareTeamId, CaseId, ComplianceGroupId, IdMap, Membership, OrgId,
        Organization, PatientId, User, UserId,
        care::{
            CareTeam, CareTeamMember, CaseParticipant, ComplianceGroup, Consent, Guardian, Patient,
        },
    },
    error::AppResult,
};

/// Groups rows by a key, keeping every requested key (with an empty list when nothing matched).
fn group<K: std::hash::Hash + Eq + Copy, V>(
    keys: &[K],
    rows: Vec<V>,
    key: impl Fn(&V) -> K,
) -> IdMap<K, Vec<V>> {
    let mut map: IdMap<K, Vec<V>> = keys.iter().map(|k| (*k, Vec::new())).collect();
    for row in rows {
        map.entry(key(&row)).or_default().push(row);
    }
    map
}

/// Batch lookups.
#[derive(Clone)]
pub struct Lookups {
    db: db::Db,
}

impl Lookups {
    /// Builds the lookups.
    pub fn new(db: db::Db) -> Self {
        Self { db }
    }

    /// Users by id.
    pub async fn users(&self, ids: &[UserId]) -> AppResult<IdMap<UserId, User>> {
        Ok(db::users::find_many(&self.db, ids)
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect())
    }

    /// Organisations by id.
    pub async fn organizations(&self, ids: &[OrgId]) -> AppResult<IdMap<OrgId, Organization>> {
        Ok(db::organizations::find_many(&self.db, ids)
            .await?
            .into_iter()
            .map(|o| (o.id, o))
            .collect())
    }

    /// Appointments by id.
    pub async fn appointments(
        &self,
        ids: &[AppointmentId],
    ) -> AppResult<IdMap<AppointmentId, crate::domain::care::Appointment>> {
        Ok(db::appointments::find_many(&self.db, ids)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect())
    }

    /// Cases by id.
    pub async fn cases(
        &self,
        ids: &[CaseId],
    ) -> AppResult<IdMap<CaseId, crate::domain::care::Case>> {
        Ok(db::cases::find_many(&self.db, ids)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect())
    }

    /// Care teams by id.
    pub async fn care_teams_by_id(
        &self,
        ids: &[CareTeamId],
    ) -> AppResult<IdMap<CareTeamId, CareTeam>> {
        Ok(db::care_teams::find_many(&self.db, ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect())
    }

    /// Patients by id.
    pub async fn patients(&self, ids: &[PatientId]) -> AppResult<IdMap<PatientId, Patient>> {
        Ok(db::patients::find_many(&self.db, ids)
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect())
    }

    /// Guardians of patients, each with their user, so that a page never waits on a later
    /// wave of user lookups (keeping the statements per page constant).
    pub async fn guardians(
        &self,
        ids: &[PatientId],
    ) -> AppResult<IdMap<PatientId, Vec<(Guardian, User)>>> {
        let guardians = db::patients::guardians_of(&self.db, ids).await?;
        let user_ids: Vec<UserId> = guardians.iter().map(|g| g.user_id).collect();
        let users = self.users(&user_ids).await?;
        let pairs = guardians
            .into_iter()
            .filter_map(|g| users.get(&g.user_id).cloned().map(|u| (g, u)))
            .collect();
        Ok(group(ids, pairs, |(g, _)| g.patient_id))
    }

    /// Consents of patients.
    pub async fn consents(&self, ids: &[PatientId]) -> AppResult<IdMap<PatientId, Vec<Consent>>> {
        Ok(group(
            ids,
            db::consents::of_patients(&self.db, ids).await?,
            |c| c.patient_id,
        ))
    }

    /// Care teams of patients.
    pub async fn care_teams(
        &self,
        ids: &[PatientId],
    ) -> AppResult<IdMap<PatientId, Vec<CareTeam>>> {
        Ok(group(
            ids,
            db::care_teams::of_patients(&self.db, ids).await?,
            |t| t.patient_id,
        ))
    }

    /// Members of care teams.
    pub async fn care_team_members(
        &self,
        ids: &[CareTeamId],
    ) -> AppResult<IdMap<CareTeamId, Vec<CareTeamMember>>> {
        Ok(group(
            ids,
            db::care_teams::members_of(&self.db, ids).await?,
            |m| m.care_team_id,
        ))
    }

    /// Participants of cases.
    pub async fn case_participants(
        &self,
        ids: &[CaseId],
    ) -> AppResult<IdMap<CaseId, Vec<CaseParticipant>>> {
        Ok(group(
            ids,
            db::cases::participants_of(&self.db, ids).await?,
            |p| p.case_id,
        ))
    }

    /// The support staff of appointments, as user ids (one statement; for checks that need
    /// no user rows, such as who may join a meeting).
    pub async fn support_staff_ids(
        &self,
        ids: &[AppointmentId],
    ) -> AppResult<IdMap<AppointmentId, Vec<UserId>>> {
        let mut map: IdMap<AppointmentId, Vec<UserId>> =
            ids.iter().map(|k| (*k, Vec::new())).collect();
        for (a, u) in db::appointments::support_staff_of(&self.db, ids).await? {
            map.entry(a).or_default().push(u);
        }
        Ok(map)
    }

    /// Support staff of appointments, with their users.
    pub async fn support_staff(
        &self,
        ids: &[AppointmentId],
    ) -> AppResult<IdMap<AppointmentId, Vec<User>>> {
        let rows = db::appointments::support_staff_of(&self.db, ids).await?;
        let user_ids: Vec<UserId> = rows.iter().map(|(_, u)| *u).collect();
        let users = self.users(&user_ids).await?;
        let mut map: IdMap<AppointmentId, Vec<User>> =
            ids.iter().map(|k| (*k, Vec::new())).collect();
        for (a, u) in rows {
            if let Some(user) = users.get(&u) {
                map.entry(a).or_default().push(user.clone());
            }
        }
        Ok(map)
    }

    /// The guardian links of users (which patients each is guardian of).
    pub async fn guardianships(&self, ids: &[UserId]) -> AppResult<IdMap<UserId, Vec<Guardian>>> {
        Ok(group(
            ids,
            db::patients::guardianships_of(&self.db, ids).await?,
            |g| g.user_id,
        ))
    }

    /// Memberships of users.
    pub async fn memberships(&self, ids: &[UserId]) -> AppResult<IdMap<UserId, Vec<Membership>>> {
        Ok(group(
            ids,
            db::organizations::memberships_of_users(&self.db, ids).await?,
            |m| m.user_id,
        ))
    }

    /// Compliance groups by id.
    pub async fn compliance_groups(
        &self,
        ids: &[ComplianceGroupId],
    ) -> AppResult<IdMap<ComplianceGroupId, ComplianceGroup>> {
        Ok(db::consents::find_groups(&self.db, ids)
            .await?
            .into_iter()
            .map(|g| (g.id, g))
            .collect())
    }
}
