//! Practitioners' weekly availability, and the per-person booking locks that keep two
//! appointments of one person from overlapping.

use sea_orm_migration::prelude::*;

/// Adds `practitioner_availability` and `booking_locks`.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000002_availability"
    }
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum PractitionerAvailability {
    Table,
    OrgId,
    PractitionerId,
    Timezone,
    SlotMinutes,
    Weekly,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum BookingLocks {
    Table,
    UserId,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One schedule per practitioner and organisation; `weekly` holds the intervals as JSON
        // text (read and written whole, never queried by part).
        manager
            .create_table(
                Table::create()
                    .table(PractitionerAvailability::Table)
                    .col(
                        ColumnDef::new(PractitionerAvailability::OrgId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PractitionerAvailability::PractitionerId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PractitionerAvailability::Timezone)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PractitionerAvailability::SlotMinutes)
                            .integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PractitionerAvailability::Weekly)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PractitionerAvailability::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(PractitionerAvailability::OrgId)
                            .col(PractitionerAvailability::PractitionerId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                PractitionerAvailability::Table,
                                PractitionerAvailability::OrgId,
                            )
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(
                                PractitionerAvailability::Table,
                                PractitionerAvailability::PractitionerId,
                            )
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A row per person ever booked: a transaction that books someone first updates their
        // row, which holds a row lock until it ends on PostgreSQL (SQLite has one writer).
        manager
            .create_table(
                Table::create()
                    .table(BookingLocks::Table)
                    .col(
                        ColumnDef::new(BookingLocks::UserId)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(BookingLocks::Version)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BookingLocks::Table).to_owned())
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(PractitionerAvailability::Table)
                    .to_owned(),
            )
            .await
    }
}
