//! Chat infrastructure: the outbox of provider side effects, and the local chat provider's
//! channels, members and messages.

use sea_orm_migration::prelude::*;

/// Creates `outbox` and the `local_chat_*` tables.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261121_000003_chat"
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Seq,
    Id,
    IdempotencyKey,
    OrgId,
    PartitionKey,
    Operation,
    Status,
    Attempts,
    NextAttemptAt,
    LockedUntil,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum LocalChatUsers {
    Table,
    Id,
    Name,
    Image,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LocalChatChannels {
    Table,
    Cid,
    ChannelType,
    ChannelId,
    CreatedBy,
    Name,
    Image,
    Metadata,
    Frozen,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum LocalChatMembers {
    Table,
    Cid,
    UserId,
    LastReadSeq,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LocalChatMessages {
    Table,
    Seq,
    Id,
    Cid,
    UserId,
    Text,
    System,
    CreatedAt,
}

fn text(col: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).not_null().to_owned()
}

fn at(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(
                        ColumnDef::new(Outbox::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text(Outbox::Id, 36).unique_key())
                    .col(text(Outbox::IdempotencyKey, 300).unique_key())
                    .col(ColumnDef::new(Outbox::OrgId).string_len(36).null())
                    .col(text(Outbox::PartitionKey, 200))
                    .col(ColumnDef::new(Outbox::Operation).text().not_null())
                    .col(text(Outbox::Status, 16))
                    .col(
                        ColumnDef::new(Outbox::Attempts)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(at(Outbox::NextAttemptAt))
                    .col(
                        ColumnDef::new(Outbox::LockedUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Outbox::LastError).string_len(1000).null())
                    .col(at(Outbox::CreatedAt))
                    .col(at(Outbox::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_due")
                    .table(Outbox::Table)
                    .col(Outbox::Status)
                    .col(Outbox::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_partition")
                    .table(Outbox::Table)
                    .col(Outbox::PartitionKey)
                    .col(Outbox::Status)
                    .col(Outbox::Seq)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LocalChatUsers::Table)
                    .col(text(LocalChatUsers::Id, 255).primary_key())
                    .col(text(LocalChatUsers::Name, 400))
                    .col(
                        ColumnDef::new(LocalChatUsers::Image)
                            .string_len(2048)
                            .null(),
                    )
                    .col(at(LocalChatUsers::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LocalChatChannels::Table)
                    .col(text(LocalChatChannels::Cid, 130).primary_key())
                    .col(text(LocalChatChannels::ChannelType, 64))
                    .col(text(LocalChatChannels::ChannelId, 64))
                    .col(text(LocalChatChannels::CreatedBy, 255))
                    .col(
                        ColumnDef::new(LocalChatChannels::Name)
                            .string_len(400)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LocalChatChannels::Image)
                            .string_len(2048)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(LocalChatChannels::Metadata)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LocalChatChannels::Frozen)
                            .boolean()
                            .not_null(),
                    )
                    .col(at(LocalChatChannels::CreatedAt))
                    .col(at(LocalChatChannels::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LocalChatMembers::Table)
                    .col(text(LocalChatMembers::Cid, 130))
                    .col(text(LocalChatMembers::UserId, 255))
                    .col(
                        ColumnDef::new(LocalChatMembers::LastReadSeq)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(at(LocalChatMembers::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(LocalChatMembers::Cid)
                            .col(LocalChatMembers::UserId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(LocalChatMembers::Table, LocalChatMembers::Cid)
                            .to(LocalChatChannels::Table, LocalChatChannels::Cid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LocalChatMessages::Table)
                    .col(
                        ColumnDef::new(LocalChatMessages::Seq)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(text(LocalChatMessages::Id, 200))
                    .col(text(LocalChatMessages::Cid, 130))
                    .col(
                        ColumnDef::new(LocalChatMessages::UserId)
                            .string_len(255)
                            .null(),
                    )
                    .col(ColumnDef::new(LocalChatMessages::Text).text().not_null())
                    .col(
                        ColumnDef::new(LocalChatMessages::System)
                            .boolean()
                            .not_null(),
                    )
                    .col(at(LocalChatMessages::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(LocalChatMessages::Table, LocalChatMessages::Cid)
                            .to(LocalChatChannels::Table, LocalChatChannels::Cid)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_local_chat_messages_id")
                    .table(LocalChatMessages::Table)
                    .col(LocalChatMessages::Cid)
                    .col(LocalChatMessages::Id)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_local_chat_messages_cid_seq")
                    .table(LocalChatMessages::Table)
                    .col(LocalChatMessages::Cid)
                    .col(LocalChatMessages::Seq)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            LocalChatMessages::Table.into_iden(),
            LocalChatMembers::Table.into_iden(),
            LocalChatChannels::Table.into_iden(),
            LocalChatUsers::Table.into_iden(),
            Outbox::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
