//! Per-organisation chat settings: how many minutes before an appointment its chat opens.

use sea_orm_migration::prelude::*;

/// Adds `organizations.chat_activation_minutes` (null: the deployment's default).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261121_000005_org_chat_settings"
    }
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    ChatActivationMinutes,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Organizations::Table)
                    .add_column(
                        ColumnDef::new(Organizations::ChatActivationMinutes)
                            .integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Organizations::Table)
                    .drop_column(Organizations::ChatActivationMinutes)
                    .to_owned(),
            )
            .await
    }
}
