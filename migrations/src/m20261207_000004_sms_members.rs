//! External chat members reached by SMS (outside clinicians without an account, by phone
//! number), and the messages the local SMS gateway records instead of sending.

use sea_orm_migration::prelude::*;

/// Adds `chat_external_members` and `local_sms_messages`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000004_sms_members"
    }
}

#[derive(DeriveIden)]
enum ChatSessions {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChatExternalMembers {
    Table,
    Id,
    SessionId,
    Name,
    PhoneNumber,
    OptedOut,
    CareTeamMemberId,
    LastRelayedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LocalSmsMessages {
    Table,
    Id,
    Reference,
    ToNumber,
    FromNumber,
    Body,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ChatExternalMembers::Table)
                    .col(
                        ColumnDef::new(ChatExternalMembers::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ChatExternalMembers::SessionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatExternalMembers::Name)
                            .string_len(200)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatExternalMembers::PhoneNumber)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ChatExternalMembers::OptedOut)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(ChatExternalMembers::CareTeamMemberId)
                            .string_len(36)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ChatExternalMembers::LastRelayedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(ChatExternalMembers::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(ChatExternalMembers::Table, ChatExternalMembers::SessionId)
                            .to(ChatSessions::Table, ChatSessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One number once per chat; an inbound SMS is matched by number.
        manager
            .create_index(
                Index::create()
                    .name("ux_chat_external_members_session_phone")
                    .table(ChatExternalMembers::Table)
                    .col(ChatExternalMembers::SessionId)
                    .col(ChatExternalMembers::PhoneNumber)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_chat_external_members_phone")
                    .table(ChatExternalMembers::Table)
                    .col(ChatExternalMembers::PhoneNumber)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LocalSmsMessages::Table)
                    .col(
                        ColumnDef::new(LocalSmsMessages::Id)
                            .string_len(40)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LocalSmsMessages::Reference)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LocalSmsMessages::ToNumber)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LocalSmsMessages::FromNumber)
                            .string_len(40)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LocalSmsMessages::Body).text().not_null())
                    .col(
                        ColumnDef::new(LocalSmsMessages::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_local_sms_messages_reference")
                    .table(LocalSmsMessages::Table)
                    .col(LocalSmsMessages::Reference)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(LocalSmsMessages::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ChatExternalMembers::Table).to_owned())
            .await
    }
}
