//! Cases (claims, encounters): create-or-get on `(orgId, reference)`, participants, close.
//! Staff of the organisation manage cases; participants may read their own.

use sea_orm::DatabaseTransaction;

use super::{
    access::member_of,
    chat::{AfterCommit, ChatService},
};
use crate::{
    audit::{AuditAction, AuditEntity, AuditEntry},
    auth::Viewer,
    db::{self, cases::NewCase},
    domain::{
        CaseId, OrgId, PatientId, UserId,
        care::{Case, CaseKind, CaseParticipant, CaseRole, CaseStatus},
        pagination::{Page, PageRequest},
        people::required_text,
    },
    error::{AppError, AppResult},
};

/// Input of `createCase`.
#[derive(Clone, Debug)]
pub struct NewCaseInput {
    /// The caller's own id of the case, claim or encounter.
    pub reference: String,
    /// Kind.
    pub kind: CaseKind,
    /// Title.
    pub title: String,
    /// Patient.
    pub patient_id: Option<PatientId>,
    /// Participants.
    pub participants: Vec<(UserId, CaseRole)>,
}

/// Cases.
#[derive(Clone)]
pub struct CaseService {
    db: db::Db,
    chats: ChatService,
}

impl CaseService {
    /// Builds the service.
    pub fn new(db: db::Db, chats: ChatService) -> Self {
        Self { db, chats }
    }

    /// Commits `txn` with the case's room brought in step in it, then settles what it owes.
    async fn commit_with_room(
        &self,
        txn: DatabaseTransaction,
        case: &Case,
        viewer: &Viewer,
    ) -> AppResult<()> {
        let mut fx = AfterCommit::default();
        self.chats
            .case_changed(&txn, &mut fx, case, viewer.user()?)
            .await?;
        self.chats.commit(txn, fx).await?;
        Ok(())
    }

    /// Checks participants: ADMIN and PRACTITIONER must be active members; PATIENT an active
    /// member or a guardian of the case's patient (of one of the organisation's patients when
    /// the case has none). A user who does not exist gets the same
    /// answer as one who is not eligible, so nobody learns who has an account. `field` names the
    /// input field of the i-th participant.
    async fn check_participants(
        &self,
        org: OrgId,
        patient: Option<PatientId>,
        list: &[(UserId, CaseRole)],
        field: impl Fn(usize) -> String,
    ) -> AppResult<()> {
        for (i, (user, role)) in list.iter().enumerate() {
            let field = field(i);
            match role {
                CaseRole::Admin | CaseRole::Practitioner => {
                    match db::organizations::find_membership(&self.db, org, *user).await? {
                        Some(m) if m.active => {}
                        _ => {
                            return Err(AppError::bad_input(
                                field,
                                "staff participants must be active members of the organization",
                            ));
                        }
                    }
                }
                CaseRole::Patient => {
                    let member = db::organizations::find_membership(&self.db, org, *user)
                        .await?
                        .is_some_and(|m| m.active);
                    let guardian = match patient {
                        Some(p) => db::patients::find_guardian(&self.db, p, *user)
                            .await?
                            .is_some(),
                        None => db::patients::of_guardian(&self.db, *user)
                            .await?
                            .iter()
                            .any(|p| p.org_id == org),
                    };
                    if !member && !guardian {
                        return Err(AppError::bad_input(
                            field,
                            "a PATIENT participant must be a member of the organization or a \
                             guardian of the case's patient (of one of its patients when the \
                             case has none)",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates a case, or returns the existing one with the same reference after adding the
    /// participants it misses (existing participants keep their roles).
    pub async fn create(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        input: NewCaseInput,
    ) -> AppResult<(Case, bool)> {
        let (me, _) = member_of(&self.db, viewer, org_id).await?;
        let reference = required_text(&input.reference, "input.reference", 200)?;
        let title = required_text(&input.title, "input.title", 300)?;
        if let Some(p) = input.patient_id {
            match db::patients::find(&self.db, p).await? {
                Some(patient) if patient.org_id == org_id => {}
                _ => {
                    return Err(AppError::bad_input(
                        "input.patientId",
                        "no such patient in this organization",
                    ));
                }
            }
        }
        self.check_participants(org_id, input.patient_id, &input.participants, |i| {
            format!("input.participants.{i}.userId")
        })
        .await?;
        let txn = db::begin(&self.db).await?;
        let (case, created) = match db::cases::find_by_reference(&txn, org_id, &reference).await? {
            Some(existing) => (existing, false),
            None => {
                let inserted = db::cases::insert(
                    &txn,
                    NewCase {
                        org_id,
                        reference: reference.clone(),
                        kind: input.kind,
                        title,
                        patient_id: input.patient_id,
                        created_by: me.id,
                    },
                )
                .await;
                match inserted {
                    Ok(case) => (case, true),
                    // A concurrent create won the unique (org, reference): use its case.
                    Err(AppError::Conflict(_)) => {
                        drop(txn);
                        return Box::pin(self.create(
                            viewer,
                            org_id,
                            NewCaseInput { reference, ..input },
                        ))
                        .await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let present: Vec<UserId> = db::cases::participants_of(&txn, &[case.id])
            .await?
            .into_iter()
            .map(|p| p.user_id)
            .collect();
        let missing = input
            .participants
            .iter()
            .any(|(user, _)| !present.contains(user));
        if missing && case.status == CaseStatus::Closed {
            return Err(AppError::Conflict(
                "the case is closed; it takes no new participants".into(),
            ));
        }
        for (user, role) in &input.participants {
            if !present.contains(user) {
                db::cases::upsert_participant(
                    &txn,
                    &CaseParticipant {
                        case_id: case.id,
                        user_id: *user,
                        role: *role,
                    },
                )
                .await?;
            }
        }
        let action = if created {
            AuditAction::Create
        } else {
            AuditAction::Update
        };
        viewer
            .audit
            .record_in(&txn, case_entry(action, &case))
            .await?;
        // The room is provisioned (or brought in step) on every call, with the case.
        self.commit_with_room(txn, &case, viewer).await?;
        Ok((case, created))
    }

    async fn staff_case(&self, viewer: &Viewer, id: CaseId) -> AppResult<Case> {
        viewer.user()?;
        let Some(case) = db::cases::find(&self.db, id).await? else {
            viewer
                .audit
                .record(AuditEntry::read(AuditEntity::Case, id).denied());
            return Err(AppError::NotFound("case"));
        };
        member_of(&self.db, viewer, case.org_id)
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::NotFound("case"),
                other => other,
            })?;
        Ok(case)
    }

    /// Adds a participant or changes their role (staff).
    pub async fn add_participant(
        &self,
        viewer: &Viewer,
        id: CaseId,
        user: UserId,
        role: CaseRole,
    ) -> AppResult<Case> {
        let case = self.staff_case(viewer, id).await?;
        if case.status == CaseStatus::Closed {
            return Err(AppError::Conflict("the case is closed".into()));
        }
        self.check_participants(case.org_id, case.patient_id, &[(user, role)], |_| {
            "input.userId".into()
        })
        .await?;
        let txn = db::begin(&self.db).await?;
        db::cases::upsert_participant(
            &txn,
            &CaseParticipant {
                case_id: id,
                user_id: user,
                role,
            },
        )
        .await?;
        // A participant change is an UPDATE of the case.
        viewer
            .audit
            .record_in(&txn, case_entry(AuditAction::Update, &case))
            .await?;
        self.commit_with_room(txn, &case, viewer).await?;
        Ok(case)
    }

    /// Removes a participant (staff).
    pub async fn remove_participant(
        &self,
        viewer: &Viewer,
        id: CaseId,
        user: UserId,
    ) -> AppResult<Case> {
        let case = self.staff_case(viewer, id).await?;
        let txn = db::begin(&self.db).await?;
        if !db::cases::remove_participant(&txn, id, user).await? {
            return Err(AppError::NotFound("case participant"));
        }
        viewer
            .audit
            .record_in(&txn, case_entry(AuditAction::Update, &case))
            .await?;
        self.commit_with_room(txn, &case, viewer).await?;
        Ok(case)
    }

    /// Closes a case (staff) and its room; with `delete_room` the room is removed at the
    /// provider too (a room already gone counts as removed). Closing again changes nothing more.
    pub async fn close(&self, viewer: &Viewer, id: CaseId, delete_room: bool) -> AppResult<Case> {
        self.staff_case(viewer, id).await?;
        let txn = db::begin(&self.db).await?;
        db::cases::close(&txn, id).await?;
        let case = db::cases::find(&txn, id)
            .await?
            .ok_or(AppError::NotFound("case"))?;
        viewer
            .audit
            .record_in(&txn, case_entry(AuditAction::Update, &case))
            .await?;
        let mut fx = AfterCommit::default();
        self.chats
            .case_closed(&txn, &mut fx, &case, viewer.user()?, delete_room)
            .await?;
        self.chats.commit(txn, fx).await?;
        Ok(case)
    }

    /// A case: active staff of its organisation, or its PATIENT participants. A staff participant
    /// reads it only while active there (a deactivated one loses it at once).
    pub async fn case(&self, viewer: &Viewer, id: CaseId) -> AppResult<Case> {
        let user = viewer.user()?;
        let Some(case) = db::cases::find(&self.db, id).await? else {
            viewer
                .audit
                .record(AuditEntry::read(AuditEntity::Case, id).denied());
            return Err(AppError::NotFound("case"));
        };
        let staff = db::organizations::find_membership(&self.db, case.org_id, user.id)
            .await?
            .is_some_and(|m| m.active);
        let allowed = staff
            || db::cases::participants_of(&self.db, &[id])
                .await?
                .iter()
                .any(|p| p.user_id == user.id && p.role == CaseRole::Patient);
        if allowed {
            viewer.audit.record(case_entry(AuditAction::Read, &case));
            Ok(case)
        } else {
            viewer
                .audit
                .record(case_entry(AuditAction::Read, &case).denied());
            Err(AppError::NotFound("case"))
        }
    }

    /// A case by reference (staff).
    pub async fn by_reference(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        reference: &str,
    ) -> AppResult<Case> {
        member_of(&self.db, viewer, org_id).await?;
        let case = db::cases::find_by_reference(&self.db, org_id, reference.trim())
            .await?
            .ok_or(AppError::NotFound("case"))?;
        viewer.audit.record(case_entry(AuditAction::Read, &case));
        Ok(case)
    }

    /// A page of cases, newest first (staff).
    pub async fn list(
        &self,
        viewer: &Viewer,
        org_id: OrgId,
        status: Option<CaseStatus>,
        page: &PageRequest,
    ) -> AppResult<Page<Case>> {
        member_of(&self.db, viewer, org_id).await?;
        let page = db::cases::list(&self.db, org_id, status, page).await?;
        viewer.audit.record_all(
            page.rows
                .iter()
                .map(|(_, c)| case_entry(AuditAction::Read, c)),
        );
        Ok(page)
    }
}

/// The audit entry of `action` on `case` (with its patient, when it has one).
pub(crate) fn case_entry(action: AuditAction, case: &Case) -> AuditEntry {
    let entry = AuditEntry::new(action, AuditEntity::Case, case.id).org(case.org_id);
    match case.patient_id {
        Some(p) => entry.patient(p),
        None => entry,
    }
}
