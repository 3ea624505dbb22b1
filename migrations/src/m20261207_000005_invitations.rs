//! Invitations of staff and guardians (`invitations`, tokens stored as SHA-256 hashes only) and
//! the mails that carry them (`outbound_mails`: the mail queue, and the local outbox an operator
//! reads when no SMTP server is configured). Not the compliance groups' organisation
//! invitations (`compliance_group_invitations`).

use sea_orm_migration::prelude::*;

/// Adds `invitations` and `outbound_mails`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000005_invitations"
    }
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Patients {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    Kind,
    OrgId,
    PatientId,
    Email,
    GivenName,
    FamilyName,
    Role,
    Title,
    Relationship,
    CanChat,
    TokenHash,
    InvitedBy,
    CreatedAt,
    ExpiresAt,
    AcceptedAt,
    AcceptedBy,
    RevokedAt,
}

#[derive(DeriveIden)]
enum OutboundMails {
    Table,
    Id,
    OrgId,
    InvitationId,
    ToAddress,
    Subject,
    Body,
    Status,
    Attempts,
    NextAttemptAt,
    LockedUntil,
    LastError,
    CreatedAt,
    UpdatedAt,
    SentAt,
}

fn id_col(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name).string_len(36).not_null().to_owned()
}

fn time_col(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn optional_time_col(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // An invitation is the pending member or guardian: nothing else exists for them until
        // it is accepted (no user, membership or guardian link), so a pending invitee can
        // neither sign in nor count anywhere.
        manager
            .create_table(
                Table::create()
                    .table(Invitations::Table)
                    .col(id_col(Invitations::Id).primary_key())
                    .col(ColumnDef::new(Invitations::Kind).string_len(16).not_null())
                    .col(id_col(Invitations::OrgId))
                    .col(ColumnDef::new(Invitations::PatientId).string_len(36).null())
                    .col(
                        ColumnDef::new(Invitations::Email)
                            .string_len(320)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Invitations::GivenName)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Invitations::FamilyName)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Invitations::Role).string_len(16).null())
                    .col(ColumnDef::new(Invitations::Title).string_len(200).null())
                    .col(
                        ColumnDef::new(Invitations::Relationship)
                            .string_len(16)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Invitations::CanChat)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(Invitations::TokenHash)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Invitations::InvitedBy).string_len(36).null())
                    .col(time_col(Invitations::CreatedAt))
                    .col(time_col(Invitations::ExpiresAt))
                    .col(optional_time_col(Invitations::AcceptedAt))
                    .col(
                        ColumnDef::new(Invitations::AcceptedBy)
                            .string_len(36)
                            .null(),
                    )
                    .col(optional_time_col(Invitations::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Invitations::Table, Invitations::OrgId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Invitations::Table, Invitations::PatientId)
                            .to(Patients::Table, Patients::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The organisation's list, newest first.
        manager
            .create_index(
                Index::create()
                    .name("idx_invitations_org_created")
                    .table(Invitations::Table)
                    .col(Invitations::OrgId)
                    .col(Invitations::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // The pending-invitation check of a new invitation.
        manager
            .create_index(
                Index::create()
                    .name("idx_invitations_org_email")
                    .table(Invitations::Table)
                    .col(Invitations::OrgId)
                    .col(Invitations::Email)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OutboundMails::Table)
                    .col(id_col(OutboundMails::Id).primary_key())
                    .col(ColumnDef::new(OutboundMails::OrgId).string_len(36).null())
                    .col(
                        ColumnDef::new(OutboundMails::InvitationId)
                            .string_len(36)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(OutboundMails::ToAddress)
                            .string_len(320)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OutboundMails::Subject)
                            .string_len(300)
                            .not_null(),
                    )
                    .col(ColumnDef::new(OutboundMails::Body).text().null())
                    .col(
                        ColumnDef::new(OutboundMails::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OutboundMails::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(time_col(OutboundMails::NextAttemptAt))
                    .col(optional_time_col(OutboundMails::LockedUntil))
                    .col(ColumnDef::new(OutboundMails::LastError).text().null())
                    .col(time_col(OutboundMails::CreatedAt))
                    .col(time_col(OutboundMails::UpdatedAt))
                    .col(optional_time_col(OutboundMails::SentAt))
                    .to_owned(),
            )
            .await?;
        // The worker's scan for due mails.
        manager
            .create_index(
                Index::create()
                    .name("idx_outbound_mails_status_due")
                    .table(OutboundMails::Table)
                    .col(OutboundMails::Status)
                    .col(OutboundMails::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbound_mails_invitation")
                    .table(OutboundMails::Table)
                    .col(OutboundMails::InvitationId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(OutboundMails::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Invitations::Table).to_owned())
            .await
    }
}
