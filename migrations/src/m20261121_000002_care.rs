//! The care domain: colleague search columns, patients and guardians, consent and compliance
//! groups, care teams, cases and appointments.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

/// Creates the care-domain tables and the colleague search columns.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261121_000002_care"
    }
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    SearchId,
    SearchGiven,
    SearchFamily,
    SearchDisplay,
    SearchText,
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
    OrgId,
    Name,
    Species,
    RiskLevel,
    DateOfBirth,
    SearchName,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Guardians {
    Table,
    PatientId,
    UserId,
    Relationship,
    CanChat,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ComplianceGroups {
    Table,
    Id,
    Name,
    OwnerOrgId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ComplianceGroupMembers {
    Table,
    GroupId,
    OrgId,
}

#[derive(DeriveIden)]
enum Consents {
    Table,
    Id,
    PatientId,
    Scope,
    GrantedToOrgId,
    ComplianceGroupId,
    GrantedAt,
    ExpiresAt,
    RevokedAt,
    RecordedBy,
}

#[derive(DeriveIden)]
enum CareTeams {
    Table,
    Id,
    PatientId,
    OrgId,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum CareTeamMembers {
    Table,
    Id,
    CareTeamId,
    UserId,
    Phone,
    DisplayName,
    Role,
    MemberOrgId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Cases {
    Table,
    Id,
    OrgId,
    Reference,
    Kind,
    Title,
    Status,
    PatientId,
    CreatedBy,
    CreatedAt,
    ClosedAt,
}

#[derive(DeriveIden)]
enum CaseParticipants {
    Table,
    CaseId,
    UserId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Appointments {
    Table,
    Id,
    OrgId,
    PatientId,
    ClientId,
    PractitionerId,
    StartsAt,
    EndsAt,
    DurationMinutes,
    SessionType,
    Status,
    Reason,
    ExternalRef,
    ActivationMinutes,
    RoomName,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AppointmentSupportStaff {
    Table,
    AppointmentId,
    UserId,
}

#[derive(DeriveIden)]
enum WriteLock {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(36).not_null().to_owned()
}

fn at(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn fk(
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    cols: &[&'static str],
    unique: bool,
) -> Result<(), DbErr> {
    let mut stmt = Index::create().name(name).table(table).to_owned();
    for col in cols {
        stmt.col(Alias::new(*col));
    }
    if unique {
        stmt.unique();
    }
    manager.create_index(stmt).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An empty table that SQLite transactions touch first to take the write lock at once
        // (see `db::begin`).
        manager
            .create_table(
                Table::create()
                    .table(WriteLock::Table)
                    .col(
                        ColumnDef::new(WriteLock::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .to_owned(),
            )
            .await?;
        let backend = manager.get_database_backend();
        let postgres = backend == DatabaseBackend::Postgres;
        // Byte-order comparison so that prefix ranges (`>= q AND < q || U+10FFFF`) are exact on
        // PostgreSQL too; SQLite compares bytes already.
        let search_col = |col: Memberships| {
            let mut def = ColumnDef::new(col)
                .string_len(400)
                .not_null()
                .default("")
                .to_owned();
            if postgres {
                def.extra("COLLATE \"C\"");
            }
            def
        };
        for col in [
            Memberships::SearchGiven,
            Memberships::SearchFamily,
            Memberships::SearchDisplay,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Memberships::Table)
                        .add_column(search_col(col))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Memberships::Table)
                    .add_column(
                        ColumnDef::new(Memberships::SearchText)
                            .string_len(1400)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        // Existing members (ASCII lowercasing is enough for rows made before this column).
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE memberships SET \
                 search_given = (SELECT lower(given_name) FROM users WHERE users.id = memberships.user_id), \
                 search_family = (SELECT lower(family_name) FROM users WHERE users.id = memberships.user_id), \
                 search_display = (SELECT lower(display_name) FROM users WHERE users.id = memberships.user_id), \
                 search_text = (SELECT lower(given_name || ' ' || family_name || ' ' || display_name || ' ' || email) FROM users WHERE users.id = memberships.user_id)",
            )
            .await?;
        index(
            manager,
            "idx_memberships_search_family",
            Memberships::Table,
            &["org_id", "search_family", "search_display", "user_id"],
            false,
        )
        .await?;
        index(
            manager,
            "idx_memberships_search_display",
            Memberships::Table,
            &["org_id", "search_display", "user_id"],
            false,
        )
        .await?;
        // Substring search, index-backed: a trigram GIN index on PostgreSQL; on SQLite an FTS5
        // trigram table keyed by `search_id` (a stable integer, unlike SQLite's rowid), kept in
        // step by triggers.
        manager
            .alter_table(
                Table::alter()
                    .table(Memberships::Table)
                    .add_column(
                        ColumnDef::new(Memberships::SearchId)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        let conn = manager.get_connection();
        if postgres {
            conn.execute_unprepared(
                "UPDATE memberships SET search_id = (random() * 9.2e18)::bigint",
            )
            .await?;
        } else {
            conn.execute_unprepared("UPDATE memberships SET search_id = rowid")
                .await?;
        }
        index(
            manager,
            "uq_memberships_search_id",
            Memberships::Table,
            &["search_id"],
            true,
        )
        .await?;
        if postgres {
            conn.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                .await?;
            conn.execute_unprepared(
                "CREATE INDEX idx_memberships_search_text ON memberships USING gin (search_text gin_trgm_ops)",
            )
            .await?;
        } else {
            for sql in [
                "CREATE VIRTUAL TABLE member_search USING fts5(search_text, tokenize = 'trigram')",
                "INSERT INTO member_search (rowid, search_text) SELECT search_id, search_text FROM memberships",
                "CREATE TRIGGER member_search_insert AFTER INSERT ON memberships BEGIN \
                 INSERT INTO member_search (rowid, search_text) VALUES (new.search_id, new.search_text); END",
                "CREATE TRIGGER member_search_delete AFTER DELETE ON memberships BEGIN \
                 DELETE FROM member_search WHERE rowid = old.search_id; END",
                "CREATE TRIGGER member_search_update AFTER UPDATE OF search_text, search_id ON memberships BEGIN \
                 DELETE FROM member_search WHERE rowid = old.search_id; \
                 INSERT INTO member_search (rowid, search_text) VALUES (new.search_id, new.search_text); END",
            ] {
                conn.execute_unprepared(sql).await?;
            }
        }

        manager
            .create_table(
                Table::create()
                    .table(Patients::Table)
                    .col(id(Patients::Id).primary_key())
                    .col(id(Patients::OrgId))
                    .col(ColumnDef::new(Patients::Name).string_len(200).not_null())
                    .col(ColumnDef::new(Patients::Species).string_len(100).null())
                    .col(
                        ColumnDef::new(Patients::RiskLevel)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Patients::DateOfBirth).date().null())
                    .col(
                        ColumnDef::new(Patients::SearchName)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(at(Patients::CreatedAt))
                    .col(at(Patients::UpdatedAt))
                    .foreign_key(&mut fk(
                        (Patients::Table, Patients::OrgId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_patients_org_name",
            Patients::Table,
            &["org_id", "search_name", "id"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Guardians::Table)
                    .col(id(Guardians::PatientId))
                    .col(id(Guardians::UserId))
                    .col(
                        ColumnDef::new(Guardians::Relationship)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Guardians::CanChat).boolean().not_null())
                    .col(at(Guardians::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Guardians::PatientId)
                            .col(Guardians::UserId),
                    )
                    .foreign_key(&mut fk(
                        (Guardians::Table, Guardians::PatientId),
                        (Patients::Table, Patients::Id),
                    ))
                    .foreign_key(&mut fk(
                        (Guardians::Table, Guardians::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_guardians_user",
            Guardians::Table,
            &["user_id"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(ComplianceGroups::Table)
                    .col(id(ComplianceGroups::Id).primary_key())
                    .col(
                        ColumnDef::new(ComplianceGroups::Name)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(id(ComplianceGroups::OwnerOrgId))
                    .col(at(ComplianceGroups::CreatedAt))
                    .foreign_key(&mut fk(
                        (ComplianceGroups::Table, ComplianceGroups::OwnerOrgId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ComplianceGroupMembers::Table)
                    .col(id(ComplianceGroupMembers::GroupId))
                    .col(id(ComplianceGroupMembers::OrgId))
                    .primary_key(
                        Index::create()
                            .col(ComplianceGroupMembers::GroupId)
                            .col(ComplianceGroupMembers::OrgId),
                    )
                    .foreign_key(&mut fk(
                        (
                            ComplianceGroupMembers::Table,
                            ComplianceGroupMembers::GroupId,
                        ),
                        (ComplianceGroups::Table, ComplianceGroups::Id),
                    ))
                    .foreign_key(&mut fk(
                        (ComplianceGroupMembers::Table, ComplianceGroupMembers::OrgId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_compliance_group_members_org",
            ComplianceGroupMembers::Table,
            &["org_id"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Consents::Table)
                    .col(id(Consents::Id).primary_key())
                    .col(id(Consents::PatientId))
                    .col(ColumnDef::new(Consents::Scope).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Consents::GrantedToOrgId)
                            .string_len(36)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Consents::ComplianceGroupId)
                            .string_len(36)
                            .null(),
                    )
                    .col(at(Consents::GrantedAt))
                    .col(
                        ColumnDef::new(Consents::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Consents::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(id(Consents::RecordedBy))
                    .foreign_key(&mut fk(
                        (Consents::Table, Consents::PatientId),
                        (Patients::Table, Patients::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_consents_patient",
            Consents::Table,
            &["patient_id", "scope"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(CareTeams::Table)
                    .col(id(CareTeams::Id).primary_key())
                    .col(id(CareTeams::PatientId))
                    .col(id(CareTeams::OrgId))
                    .col(ColumnDef::new(CareTeams::Name).string_len(200).not_null())
                    .col(at(CareTeams::CreatedAt))
                    .foreign_key(&mut fk(
                        (CareTeams::Table, CareTeams::PatientId),
                        (Patients::Table, Patients::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_care_teams_patient",
            CareTeams::Table,
            &["patient_id"],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(CareTeamMembers::Table)
                    .col(id(CareTeamMembers::Id).primary_key())
                    .col(id(CareTeamMembers::CareTeamId))
                    .col(
                        ColumnDef::new(CareTeamMembers::UserId)
                            .string_len(36)
                            .null(),
                    )
                    .col(ColumnDef::new(CareTeamMembers::Phone).string_len(16).null())
                    .col(
                        ColumnDef::new(CareTeamMembers::DisplayName)
                            .string_len(200)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(CareTeamMembers::Role)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CareTeamMembers::MemberOrgId)
                            .string_len(36)
                            .null(),
                    )
                    .col(at(CareTeamMembers::CreatedAt))
                    .foreign_key(&mut fk(
                        (CareTeamMembers::Table, CareTeamMembers::CareTeamId),
                        (CareTeams::Table, CareTeams::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "uq_care_team_members_user",
            CareTeamMembers::Table,
            &["care_team_id", "user_id"],
            true,
        )
        .await?;
        index(
            manager,
            "uq_care_team_members_phone",
            CareTeamMembers::Table,
            &["care_team_id", "phone"],
            true,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Cases::Table)
                    .col(id(Cases::Id).primary_key())
                    .col(id(Cases::OrgId))
                    .col(ColumnDef::new(Cases::Reference).string_len(200).not_null())
                    .col(ColumnDef::new(Cases::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Cases::Title).string_len(300).not_null())
                    .col(ColumnDef::new(Cases::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Cases::PatientId).string_len(36).null())
                    .col(id(Cases::CreatedBy))
                    .col(at(Cases::CreatedAt))
                    .col(
                        ColumnDef::new(Cases::ClosedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(&mut fk(
                        (Cases::Table, Cases::OrgId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "uq_cases_org_reference",
            Cases::Table,
            &["org_id", "reference"],
            true,
        )
        .await?;
        index(
            manager,
            "idx_cases_org_created",
            Cases::Table,
            &["org_id", "created_at", "id"],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(CaseParticipants::Table)
                    .col(id(CaseParticipants::CaseId))
                    .col(id(CaseParticipants::UserId))
                    .col(
                        ColumnDef::new(CaseParticipants::Role)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(at(CaseParticipants::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(CaseParticipants::CaseId)
                            .col(CaseParticipants::UserId),
                    )
                    .foreign_key(&mut fk(
                        (CaseParticipants::Table, CaseParticipants::CaseId),
                        (Cases::Table, Cases::Id),
                    ))
                    .foreign_key(&mut fk(
                        (CaseParticipants::Table, CaseParticipants::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_case_participants_user",
            CaseParticipants::Table,
            &["user_id"],
            false,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Appointments::Table)
                    .col(id(Appointments::Id).primary_key())
                    .col(id(Appointments::OrgId))
                    .col(id(Appointments::PatientId))
                    .col(id(Appointments::ClientId))
                    .col(id(Appointments::PractitionerId))
                    .col(at(Appointments::StartsAt))
                    .col(at(Appointments::EndsAt))
                    .col(
                        ColumnDef::new(Appointments::DurationMinutes)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Appointments::SessionType)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Appointments::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Appointments::Reason).string_len(1000).null())
                    .col(
                        ColumnDef::new(Appointments::ExternalRef)
                            .string_len(200)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Appointments::ActivationMinutes)
                            .integer()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Appointments::RoomName)
                            .string_len(64)
                            .null()
                            .unique_key(),
                    )
                    .col(at(Appointments::CreatedAt))
                    .col(at(Appointments::UpdatedAt))
                    .foreign_key(&mut fk(
                        (Appointments::Table, Appointments::OrgId),
                        (Organizations::Table, Organizations::Id),
                    ))
                    .foreign_key(&mut fk(
                        (Appointments::Table, Appointments::PatientId),
                        (Patients::Table, Patients::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_appointments_org_starts",
            Appointments::Table,
            &["org_id", "starts_at", "id"],
            false,
        )
        .await?;
        index(
            manager,
            "idx_appointments_practitioner",
            Appointments::Table,
            &["practitioner_id", "starts_at"],
            false,
        )
        .await?;
        index(
            manager,
            "idx_appointments_client",
            Appointments::Table,
            &["client_id"],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(AppointmentSupportStaff::Table)
                    .col(id(AppointmentSupportStaff::AppointmentId))
                    .col(id(AppointmentSupportStaff::UserId))
                    .primary_key(
                        Index::create()
                            .col(AppointmentSupportStaff::AppointmentId)
                            .col(AppointmentSupportStaff::UserId),
                    )
                    .foreign_key(&mut fk(
                        (
                            AppointmentSupportStaff::Table,
                            AppointmentSupportStaff::AppointmentId,
                        ),
                        (Appointments::Table, Appointments::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_appointment_support_user",
            AppointmentSupportStaff::Table,
            &["user_id"],
            false,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Sqlite {
            for sql in [
                "DROP TRIGGER IF EXISTS member_search_insert",
                "DROP TRIGGER IF EXISTS member_search_delete",
                "DROP TRIGGER IF EXISTS member_search_update",
                "DROP TABLE IF EXISTS member_search",
            ] {
                manager.get_connection().execute_unprepared(sql).await?;
            }
        }
        // SQLite refuses to drop an indexed column: the search indexes go first.
        for name in [
            "uq_memberships_search_id",
            "idx_memberships_search_family",
            "idx_memberships_search_display",
        ] {
            manager
                .drop_index(
                    Index::drop()
                        .name(name)
                        .table(Memberships::Table)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            AppointmentSupportStaff::Table.into_iden(),
            Appointments::Table.into_iden(),
            CaseParticipants::Table.into_iden(),
            Cases::Table.into_iden(),
            CareTeamMembers::Table.into_iden(),
            CareTeams::Table.into_iden(),
            Consents::Table.into_iden(),
            ComplianceGroupMembers::Table.into_iden(),
            ComplianceGroups::Table.into_iden(),
            Guardians::Table.into_iden(),
            Patients::Table.into_iden(),
            WriteLock::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        for col in [
            Memberships::SearchId,
            Memberships::SearchGiven,
            Memberships::SearchFamily,
            Memberships::SearchDisplay,
            Memberships::SearchText,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Memberships::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
