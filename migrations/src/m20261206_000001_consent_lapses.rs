//! Consent lapses: when the chats of a consent that reached its `expires_at` were brought in
//! step (the scheduler does it once per consent, and a restart loses none).

use sea_orm_migration::prelude::*;

/// Adds `consents.lapse_applied_at` (null: not lapsed yet, or not yet applied).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000001_consent_lapses"
    }
}

#[derive(DeriveIden)]
enum Consents {
    Table,
    LapseAppliedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Consents::Table)
                    .add_column(
                        ColumnDef::new(Consents::LapseAppliedAt)
                            .timestamp_with_time_zone()
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
                    .table(Consents::Table)
                    .drop_column(Consents::LapseAppliedAt)
                    .to_owned(),
            )
            .await
    }
}
