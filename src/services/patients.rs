//! Patients and their guardians. Staff of the patient's organisation read and edit; a guardian
//! reads their own patients; anyone else learns nothing (`NOT_FOUND`).

use chrono::NaiveDate;

use super::{
    access::{member_of, patient_reader, patient_staff, record_change, record_patient_read},
    chat::{AfterCommit, ChatService},
};
use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    auth::Viewer,
    db::{self, patients::PatientFields, users::NewUser},
    domain::{
        Email, OrgId, PatientId, User, UserId,
        care::{Guardian, GuardianRelationship, Patient, RiskLevel},
        pagination::{Page, PageRequest},
        people::{optional_text, required_text},
    },
    error::{AppError, AppResult},
};

/// A guardian to add: an existing user by email, or a new client account.
#[derive(Clone, Debug)]
pub struct GuardianInput {
    /// Email (a new email creates the user, without a password).
    pub email: String,
    /// Given name of a new user.
    pub given_name: String,
    /// Family name of a new user.
    pub family_name: String,
    /// Relationship.
    pub relationship: GuardianRelationship,
    /// Whether a co-guardian takes part in client chats.
    pub can_chat: bool,
}

/// Input of `createPatient`.
#[derive(Clone, Debug)]
pub struct NewPatient {
    /// Name.
    pub name: String,
    /// Species, for animals.
    pub species: Option<String>,
    /// Risk level (default LOW).
    pub risk_level: Option<RiskLevel>,
    /// Date of birth.
    pub date_of_birth: Option<NaiveDate>,
    /// Guardians.
    pub guardians: Vec<GuardianInput>,
}

/// Input of `updatePatient`: `None` leaves a field; `Some(None)` clears an optional one.
#[derive(Clone, Debug, Default)]
pub struct PatientChange {
    /// New name.
    pub name: Option<String>,
    /// New species.
    pub species: Option<Option<String>>,
    /// New risk level.
    pub risk_level: Option<RiskLevel>,
    /// New date of birth.
    pub date_of_birth: Option<Option<NaiveDate>>,
}

/// Patients and guardians.
#[derive(Clone)]
pub struct PatientService {
    db: db::Db,
    chats: ChatService,
}

fn check_birth(date: Option<NaiveDate>) -> AppResult<()> {
    if date.is_some_and(|d| d > chrono::Utc::now().date_naive()) {
        return Err(AppError::bad_input(
            "input.dateOfBirth",
            "must not be in the future",
        ));
    }
    Ok(())
}

/// Finds the user with this email or creates a client account (no password) for them.
pub async fn find_or_create_user(
    db: &impl db::Source,
    email: &str,
    given: &str,
    family: &str,
    field: &str,
) -> AppResult<User> {
    let email = Email::parse(email, &format!("{field}.email"))?;
    if let Some((user, _)) = db::users::find_by_email(db, &email).await? {
        return Ok(user);
    }
    let given = required_text(given, &format!("{field}.givenName"), 200)?;
    let family = required_text(family, &format!("{field}.familyName"), 200)?;
    db::users::insert(
        db,
        NewUser {
            email,
            given_name: given,
            family_name: family,
            password_hash: None,
        },
    )
    .await
}

/// Makes the user of `g` (found by email, or created) a guardian of the patient; `field` names
/// the input. Returns the guardian's user id.
async fn put_guardian(
    db: &impl db::Source,
    patient_id: PatientId,
    g: &GuardianInput,
    field: &str,
) -> AppResult<UserId> {
    let user = find_or_create_user(db, &g.email, &g.given_name, &g.family_name, field).await?;
    db::patients::upsert_guardian(
        db,
        &Guardian {
            patient_id,
            user_id: user.id,
            relationship: g.relationship,
            can_chat: g.can_chat,
        },
    )
    .await?;
    Ok(user.id)
}

impl PatientService {
    /// Builds the service.
    pub fn new(db: db::Db, chats: ChatService) -> Self {
        Self { db, chats }
    }

    /// Creates a patient with its guardians (staff of the organisation).
    pub async fn create(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        input: NewPatient,
    ) -> AppResult<Patient> {
        member_of(&self.db, viewer, org_id).await?;
        let name = required_text(&input.name, "input.name", 200)?;
        let species = optional_text(input.species.as_deref(), "input.species", 100)?;
        check_birth(input.date_of_birth)?;
        let txn = db::begin(&self.db).await?;
        let patient = db::patients::insert(
            &txn,
            org_id,
            PatientFields {
                name,
                species,
                risk_level: input.risk_level.unwrap_or(RiskLevel::Low),
                date_of_birth: input.date_of_birth,
            },
        )
        .await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Create,
            AuditEntity::Patient,
            patient.id,
            org_id,
            Some(patient.id),
        )
        .await?;
        for (i, g) in input.guardians.iter().enumerate() {
            let user = put_guardian(&txn, patient.id, g, &format!("input.guardians.{i}")).await?;
            record_change(
                &txn,
                viewer,
                AuditAction::Create,
                AuditEntity::Guardian,
                user,
                org_id,
                Some(patient.id),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(patient)
    }

    /// Changes a patient (staff).
    pub async fn update(
        &self,
        viewer: &Viewer,
        id: PatientId,
        change: PatientChange,
    ) -> AppResult<Patient> {
        let (mut patient, _, _) = patient_staff(&self.db, viewer, id).await?;
        if let Some(name) = change.name {
            patient.name = required_text(&name, "input.name", 200)?;
        }
        if let Some(species) = change.species {
            patient.species = optional_text(species.as_deref(), "input.species", 100)?;
        }
        if let Some(risk) = change.risk_level {
            patient.risk_level = risk;
        }
        if let Some(dob) = change.date_of_birth {
            check_birth(dob)?;
            patient.date_of_birth = dob;
        }
        let txn = db::begin(&self.db).await?;
        db::patients::update(&txn, &patient).await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Update,
            AuditEntity::Patient,
            patient.id,
            patient.org_id,
            Some(patient.id),
        )
        .await?;
        txn.commit().await?;
        Ok(patient)
    }

    /// Adds (or changes) a guardian (staff).
    pub async fn add_guardian(
        &self,
        viewer: &Viewer,
        id: PatientId,
        g: GuardianInput,
    ) -> AppResult<Patient> {
        let (patient, _, _) = patient_staff(&self.db, viewer, id).await?;
        let txn = db::begin(&self.db).await?;
        let user = put_guardian(&txn, patient.id, &g, "input").await?;
        record_change(
            &txn,
            viewer,
            AuditAction::Create,
            AuditEntity::Guardian,
            user,
            patient.org_id,
            Some(patient.id),
        )
        .await?;
        // A changed chat right takes effect in the patient's chats with the change.
        let mut fx = AfterCommit::default();
        self.chats
            .patient_changed(&txn, &mut fx, patient.id)
            .await?;
        self.chats.commit(txn, fx).await?;
        Ok(patient)
    }

    /// Removes a guardian (staff).
    pub async fn remove_guardian(
        &self,
        viewer: &Viewer,
        id: PatientId,
        user: UserId,
    ) -> AppResult<Patient> {
        let (patient, _, _) = patient_staff(&self.db, viewer, id).await?;
        let txn = db::begin(&self.db).await?;
        if !db::patients::remove_guardian(&txn, id, user).await? {
            return Err(AppError::NotFound("guardian"));
        }
        record_change(
            &txn,
            viewer,
            AuditAction::Delete,
            AuditEntity::Guardian,
            user,
            patient.org_id,
            Some(patient.id),
        )
        .await?;
        // The former guardian leaves the patient's chats with the change.
        let mut fx = AfterCommit::default();
        self.chats
            .patient_changed(&txn, &mut fx, patient.id)
            .await?;
        self.chats.user_changed(&txn, &mut fx, user).await?;
        self.chats.commit(txn, fx).await?;
        Ok(patient)
    }

    /// One patient (staff or guardian).
    pub async fn patient(&self, viewer: &Viewer, id: PatientId) -> AppResult<Patient> {
        let patient = patient_reader(&self.db, viewer, id).await?.0;
        record_patient_read(viewer, &patient);
        Ok(patient)
    }

    /// A page of an organisation's patients, optionally those whose name contains `search`.
    pub async fn list(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        search: Option<&str>,
        page: &PageRequest,
    ) -> AppResult<Page<Patient>> {
        member_of(&self.db, viewer, org_id).await?;
        let search = search
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
        if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
            return Err(AppError::bad_input("search", "at most 200 characters"));
        }
        let page = db::patients::list(&self.db, org_id, search.as_deref(), page).await?;
        viewer.audit.record_all(page.rows.iter().map(|(_, p)| {
            AuditEntry::read(AuditEntity::Patient, p.id)
                .org(p.org_id)
                .patient(p.id)
        }));
        Ok(page)
    }

    /// The patients the viewer is guardian of.
    pub async fn of_viewer(&self, viewer: &Viewer) -> AppResult<Vec<Patient>> {
        let patients = db::patients::of_guardian(&self.db, viewer.user()?.id).await?;
        viewer.audit.record_all(patients.iter().map(|p| {
            AuditEntry::read(AuditEntity::Patient, p.id)
                .org(p.org_id)
                .patient(p.id)
        }));
        Ok(patients)
    }
}
