//! Audit trail hardening: a signature on each chain head, the used nonces of export download
//! links (so a link serves once across every replica), and an index for an organisation's
//! records filtered by action.

use sea_orm_migration::prelude::*;

/// Adds `audit_chain_heads.signature`, `audit_export_links` and `idx_audit_events_org_action`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000001_audit_hardening"
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    OrgId,
    Action,
    At,
    Id,
}

#[derive(DeriveIden)]
enum AuditChainHeads {
    Table,
    Signature,
}

#[derive(DeriveIden)]
enum AuditExportLinks {
    Table,
    Nonce,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // HMAC-SHA256 (hex) of the head; heads sealed before this migration have none.
        manager
            .alter_table(
                Table::alter()
                    .table(AuditChainHeads::Table)
                    .add_column(
                        ColumnDef::new(AuditChainHeads::Signature)
                            .string_len(64)
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // A link's nonce is inserted when the link is used: the primary key refuses a second use.
        manager
            .create_table(
                Table::create()
                    .table(AuditExportLinks::Table)
                    .col(
                        ColumnDef::new(AuditExportLinks::Nonce)
                            .string_len(32)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuditExportLinks::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_export_links_expires")
                    .table(AuditExportLinks::Table)
                    .col(AuditExportLinks::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        // `auditEvents` filtered by action, newest first: `org_id = ? AND action = ? ORDER BY
        // at DESC, id DESC`.
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_events_org_action")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrgId)
                    .col(AuditEvents::Action)
                    .col(AuditEvents::At)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_audit_events_org_action")
                    .table(AuditEvents::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(AuditExportLinks::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(AuditChainHeads::Table)
                    .drop_column(AuditChainHeads::Signature)
                    .to_owned(),
            )
            .await
    }
}
