//! The audit trail: an append-only log of who read or changed what, chained per organisation
//! by SHA-256, with the checkpoints that keep a pruned chain verifiable and the `auditor` flag
//! on memberships.

use sea_orm_migration::prelude::*;

/// Adds `audit_events`, `audit_chain_heads`, `audit_checkpoints` and `memberships.auditor`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000003_audit"
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum AuditEvents {
    Table,
    Id,
    At,
    Chain,
    OrgId,
    ActorKind,
    ActorId,
    Action,
    EntityType,
    EntityId,
    PatientId,
    Outcome,
    RequestId,
    ClientAddress,
    OperationName,
    ChainIndex,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum AuditChainHeads {
    Table,
    Chain,
    LastIndex,
    LastHash,
    SealedAt,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    Chain,
    ThroughIndex,
    LastHash,
    PrunedBefore,
    CreatedAt,
    Signature,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    Auditor,
}

fn id(col: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).not_null().to_owned()
}

fn optional(col: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).null().to_owned()
}

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    cols: &[AuditEvents],
    unique: bool,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(AuditEvents::Table);
    for col in cols {
        index.col(*col);
    }
    if unique {
        index.unique();
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Ids and codes only: no column holds a name, a message or any other PHI.
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(id(AuditEvents::Id, 36).primary_key())
                    .col(
                        ColumnDef::new(AuditEvents::At)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(id(AuditEvents::Chain, 36))
                    .col(optional(AuditEvents::OrgId, 36))
                    .col(id(AuditEvents::ActorKind, 16))
                    .col(optional(AuditEvents::ActorId, 64))
                    .col(id(AuditEvents::Action, 24))
                    .col(id(AuditEvents::EntityType, 32))
                    .col(optional(AuditEvents::EntityId, 128))
                    .col(optional(AuditEvents::PatientId, 36))
                    .col(id(AuditEvents::Outcome, 8))
                    .col(optional(AuditEvents::RequestId, 64))
                    .col(optional(AuditEvents::ClientAddress, 64))
                    .col(optional(AuditEvents::OperationName, 128))
                    .col(ColumnDef::new(AuditEvents::ChainIndex).big_integer().null())
                    .col(optional(AuditEvents::PrevHash, 64))
                    .col(optional(AuditEvents::Hash, 64))
                    .to_owned(),
            )
            .await?;
        // A patient's trail, an organisation's trail, an actor's trail, newest first.
        index(
            manager,
            "idx_audit_events_patient",
            &[AuditEvents::PatientId, AuditEvents::At, AuditEvents::Id],
            false,
        )
        .await?;
        index(
            manager,
            "idx_audit_events_org",
            &[AuditEvents::OrgId, AuditEvents::At, AuditEvents::Id],
            false,
        )
        .await?;
        index(
            manager,
            "idx_audit_events_actor",
            &[AuditEvents::ActorId, AuditEvents::At, AuditEvents::Id],
            false,
        )
        .await?;
        // The chain in order (verification), and the unsealed rows (chain_index null) in order.
        index(
            manager,
            "idx_audit_events_chain",
            &[AuditEvents::Chain, AuditEvents::ChainIndex],
            true,
        )
        .await?;
        index(
            manager,
            "idx_audit_events_unsealed",
            &[AuditEvents::ChainIndex, AuditEvents::At, AuditEvents::Id],
            false,
        )
        .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditChainHeads::Table)
                    .col(id(AuditChainHeads::Chain, 36).primary_key())
                    .col(
                        ColumnDef::new(AuditChainHeads::LastIndex)
                            .big_integer()
                            .not_null(),
                    )
                    .col(id(AuditChainHeads::LastHash, 64))
                    .col(
                        ColumnDef::new(AuditChainHeads::SealedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditCheckpoints::Table)
                    .col(id(AuditCheckpoints::Chain, 36))
                    .col(
                        ColumnDef::new(AuditCheckpoints::ThroughIndex)
                            .big_integer()
                            .not_null(),
                    )
                    .col(id(AuditCheckpoints::LastHash, 64))
                    .col(
                        ColumnDef::new(AuditCheckpoints::PrunedBefore)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(id(AuditCheckpoints::Signature, 64))
                    .primary_key(
                        Index::create()
                            .col(AuditCheckpoints::Chain)
                            .col(AuditCheckpoints::ThroughIndex),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Memberships::Table)
                    .add_column(
                        ColumnDef::new(Memberships::Auditor)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Memberships::Table)
                    .drop_column(Memberships::Auditor)
                    .to_owned(),
            )
            .await?;
        for table in [
            AuditCheckpoints::Table.into_iden(),
            AuditChainHeads::Table.into_iden(),
            AuditEvents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
