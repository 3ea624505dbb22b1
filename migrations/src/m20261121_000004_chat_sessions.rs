//! Chat sessions: caregraph's record of each conversation mirrored to a provider channel, and
//! its members.

use sea_orm_migration::prelude::*;

/// Creates `chat_sessions` and `chat_session_members`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261121_000004_chat_sessions"
    }
}

#[derive(DeriveIden)]
enum ChatSessions {
    Table,
    Id,
    OrgId,
    CounterpartOrgId,
    Category,
    NaturalKey,
    ChannelType,
    ChannelId,
    Title,
    ImageUrl,
    ReadOnly,
    IsGroup,
    CreatedBy,
    AppointmentId,
    CaseId,
    PatientId,
    CareTeamId,
    AllowedFrom,
    AllowedUntil,
    Status,
    ClosedAt,
    ClosedBy,
    CloseReason,
    LastActivityAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChatSessionMembers {
    Table,
    SessionId,
    UserId,
    Role,
    CreatedAt,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(36).not_null().to_owned()
}

fn opt_id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(36).null().to_owned()
}

fn at(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn opt_at(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChatSessions::Table)
                    .col(id(ChatSessions::Id).primary_key())
                    .col(id(ChatSessions::OrgId))
                    .col(opt_id(ChatSessions::CounterpartOrgId))
                    .col(
                        ColumnDef::new(ChatSessions::Category)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatSessions::NaturalKey)
                            .string_len(300)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(ChatSessions::ChannelType)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatSessions::ChannelId)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(ChatSessions::Title).string_len(200).null())
                    .col(
                        ColumnDef::new(ChatSessions::ImageUrl)
                            .string_len(2048)
                            .null(),
                    )
                    .col(ColumnDef::new(ChatSessions::ReadOnly).boolean().not_null())
                    .col(ColumnDef::new(ChatSessions::IsGroup).boolean().not_null())
                    .col(id(ChatSessions::CreatedBy))
                    .col(opt_id(ChatSessions::AppointmentId))
                    .col(opt_id(ChatSessions::CaseId))
                    .col(opt_id(ChatSessions::PatientId))
                    .col(opt_id(ChatSessions::CareTeamId))
                    .col(opt_at(ChatSessions::AllowedFrom))
                    .col(opt_at(ChatSessions::AllowedUntil))
                    .col(
                        ColumnDef::new(ChatSessions::Status)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(opt_at(ChatSessions::ClosedAt))
                    .col(opt_id(ChatSessions::ClosedBy))
                    .col(
                        ColumnDef::new(ChatSessions::CloseReason)
                            .string_len(32)
                            .null(),
                    )
                    .col(at(ChatSessions::LastActivityAt))
                    .col(at(ChatSessions::CreatedAt))
                    .col(at(ChatSessions::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "idx_chat_sessions_org_activity",
                vec!["org_id", "last_activity_at", "id"],
            ),
            (
                "idx_chat_sessions_counterpart_activity",
                vec!["counterpart_org_id", "last_activity_at", "id"],
            ),
            ("idx_chat_sessions_due_from", vec!["status", "allowed_from"]),
            (
                "idx_chat_sessions_due_until",
                vec!["status", "allowed_until"],
            ),
            ("idx_chat_sessions_appointment", vec!["appointment_id"]),
        ] {
            let mut stmt = Index::create()
                .name(name)
                .table(ChatSessions::Table)
                .to_owned();
            for c in cols {
                stmt.col(Alias::new(c));
            }
            manager.create_index(stmt).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ChatSessionMembers::Table)
                    .col(id(ChatSessionMembers::SessionId))
                    .col(id(ChatSessionMembers::UserId))
                    .col(
                        ColumnDef::new(ChatSessionMembers::Role)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(at(ChatSessionMembers::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ChatSessionMembers::SessionId)
                            .col(ChatSessionMembers::UserId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ChatSessionMembers::Table, ChatSessionMembers::SessionId)
                            .to(ChatSessions::Table, ChatSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_chat_session_members_user")
                    .table(ChatSessionMembers::Table)
                    .col(ChatSessionMembers::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ChatSessionMembers::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ChatSessions::Table).to_owned())
            .await
    }
}
