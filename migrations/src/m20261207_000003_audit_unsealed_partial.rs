//! The sealer's index holds only the records that wait to be sealed: the writer stores reads
//! sealed, so a full index over `chain_index` cost every insert an index entry nobody reads.

use sea_orm_migration::prelude::*;

/// Replaces `idx_audit_events_unsealed` with `idx_audit_events_pending`, a partial index over
/// the unsealed records.
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000003_audit_unsealed_partial"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // The same statements on both databases (partial indexes: SQLite 3.8, PostgreSQL 7.2).
        db.execute_unprepared("DROP INDEX IF EXISTS idx_audit_events_unsealed")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_audit_events_pending ON audit_events (at, id) \
             WHERE chain_index IS NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS idx_audit_events_pending")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX idx_audit_events_unsealed ON audit_events (chain_index, at, id)",
        )
        .await?;
        Ok(())
    }
}
