//! Compliance group invitations: an organisation other than the group's creator joins only
//! once one of its OWNERs or ADMINs accepts.

use sea_orm_migration::prelude::*;

/// Adds `compliance_group_invitations`. Existing rows of `compliance_group_members` stay what
/// they were, accepted members, so groups made before this migration keep working.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000002_compliance_invitations"
    }
}

#[derive(DeriveIden)]
enum ComplianceGroups {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ComplianceGroupInvitations {
    Table,
    GroupId,
    OrgId,
    InvitedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // `org_id` has no foreign key on purpose: an invitation to an id that names no
        // organisation is stored like any other (and never accepted), so the inviter cannot
        // tell existing organisations from missing ones.
        manager
            .create_table(
                Table::create()
                    .table(ComplianceGroupInvitations::Table)
                    .col(
                        ColumnDef::new(ComplianceGroupInvitations::GroupId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ComplianceGroupInvitations::OrgId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ComplianceGroupInvitations::InvitedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(ComplianceGroupInvitations::GroupId)
                            .col(ComplianceGroupInvitations::OrgId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                ComplianceGroupInvitations::Table,
                                ComplianceGroupInvitations::GroupId,
                            )
                            .to(ComplianceGroups::Table, ComplianceGroups::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_compliance_group_invitations_org")
                    .table(ComplianceGroupInvitations::Table)
                    .col(ComplianceGroupInvitations::OrgId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(ComplianceGroupInvitations::Table)
                    .to_owned(),
            )
            .await
    }
}
