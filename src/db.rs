//! Persistence: connecting, migrating, entities (no GraphQL derives) and one repository module
//! per aggregate. Works on SQLite (the embedded default) and PostgreSQL.

pub mod appointments;
pub mod audit_events;
pub mod audit_export_links;
pub mod availability;
pub mod care_teams;
pub mod cases;
pub mod chat_sessions;
pub mod columns;
pub mod consents;
pub mod direct;
pub mod entities;
pub mod invitations;
pub mod keyset;
pub mod local_chat;
pub mod organizations;
pub mod patients;
pub mod sms;
pub mod users;
pub mod webhooks;

use std::{str::FromStr, sync::Arc, time::Duration};

use migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, DeleteMany, EntityTrait, ExecResult,
    QueryFilter, QueryResult, Statement, TransactionTrait, UpdateMany, sea_query::OnConflict, sqlx,
};
use secrecy::ExposeSecret;

use crate::config::DatabaseConfig;

/// Counts the SQL statements this process runs (for metrics and batching tests).
#[derive(Clone, Debug, Default)]
pub struct QueryStats {
    statements: prometheus_client::metrics::counter::Counter,
}

impl QueryStats {
    /// Statements run so far.
    pub fn statements(&self) -> u64 {
        self.statements.get()
    }

    /// The counter itself, for the metrics registry.
    pub fn counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.statements.clone()
    }
}

/// A connection reads go through: sea-orm's pool or a transaction, and on a SQLite file the
/// application's direct reader ([`direct`]).
pub trait Source: ConnectionTrait {
    /// The reader that runs reads on the calling thread, when there is one.
    fn direct(&self) -> Option<&direct::Reader> {
        None
    }
}

impl Source for DatabaseConnection {}

impl Source for DatabaseTransaction {}

/// The application's database: sea-orm's pool, and on a SQLite file a direct reader for the
/// reads of [`columns::rows`] (everything else, writes and transactions included, is the pool's).
#[derive(Clone, Debug)]
pub struct Db {
    pool: DatabaseConnection,
    direct: Option<Arc<direct::Reader>>,
}

impl Db {
    /// The database without a direct reader: every statement goes through sea-orm's pool.
    pub fn pooled(pool: DatabaseConnection) -> Self {
        Self { pool, direct: None }
    }

    /// Closes the pool (the direct reader's connections close with the last clone).
    pub async fn close(self) -> Result<(), DbErr> {
        self.pool.close().await
    }
}

impl std::ops::Deref for Db {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        &self.pool
    }
}

impl Source for Db {
    fn direct(&self) -> Option<&direct::Reader> {
        self.direct.as_deref()
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Db {
    fn get_database_backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.pool.execute_raw(stmt).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.pool.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.pool.query_one_raw(stmt).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.pool.query_all_raw(stmt).await
    }

    fn support_returning(&self) -> bool {
        self.pool.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.pool.is_mock_connection()
    }
}

/// Connects to the configured database (creating a SQLite file when needed).
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Db> {
    Ok(connect_counted(config).await?.0)
}

/// Connects and counts the statements run through the connection.
pub async fn connect_counted(config: &DatabaseConfig) -> anyhow::Result<(Db, QueryStats)> {
    let url = config.url.expose_secret();
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(config.max_connections)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // For every pooled SQLite connection: WAL lets readers and the single writer proceed
        // together; foreign keys are off by default in SQLite; a busy writer is waited for.
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5))
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        });
    if url.starts_with("sqlite:") {
        // A SQLite connection is a file handle that cannot be dropped by a server: pinging it
        // at every checkout was one more round trip to its worker thread per statement. A
        // PostgreSQL connection is still tested at every checkout.
        options.test_before_acquire(false);
    }
    let mut db = Database::connect(options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
    let stats = QueryStats::default();
    let counter = stats.statements.clone();
    db.set_metric_callback(move |_| {
        counter.inc();
    });
    let direct = match config.direct_reads {
        true => sqlite_file(url).map(|path| {
            Arc::new(direct::Reader::new(
                path,
                config.max_connections as usize,
                stats.counter(),
            ))
        }),
        false => None,
    };
    Ok((Db { pool: db, direct }, stats))
}

/// The database file a `sqlite:` URL names, once the pool has created it; `None` for any other
/// URL, for an in-memory database (which no other connection could open, whatever file of that
/// name exists) and for one opened through another VFS or as immutable (left to the pool, which
/// knows those options).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let pool_only = query.split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        matches!(key, "vfs" | "immutable") || (key == "mode" && value == "memory")
    });
    if pool_only {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    path.is_file().then(|| path.to_owned())
}

/// The rows of `E` whose `column` holds one of `ids`, read as domain values; no statement runs
/// for no ids (the batch lookup behind the loaders).
pub async fn rows_in<E, T>(
    db: &impl Source,
    column: E::Column,
    ids: &[impl ToString],
    to_domain: impl Fn(E::Model) -> crate::error::AppResult<T>,
) -> crate::error::AppResult<Vec<T>>
where
    E: EntityTrait,
    E::Model: columns::FromColumns,
{
    let values: Vec<String> = ids.iter().map(ToString::to_string).collect();
    if values.is_empty() {
        return Ok(Vec::new());
    }
    columns::all(db, E::find().filter(column.is_in(values)))
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// Inserts `rows` but those whose `key` columns match a stored row or an earlier one of `rows`;
/// how many it inserted (no statement runs for no rows).
pub async fn insert_new<A: ActiveModelTrait>(
    db: &impl Source,
    rows: impl IntoIterator<Item = A>,
    key: impl IntoIterator<Item = <A::Entity as EntityTrait>::Column>,
) -> Result<u64, DbErr> {
    A::Entity::insert_many(rows)
        .on_conflict(OnConflict::columns(key).do_nothing().to_owned())
        .exec_without_returning(db)
        .await
}

/// Runs a guarded `update` of one row; whether it changed the row (`false`: the guard no longer
/// held, e.g. a concurrent writer came first).
pub async fn update_one<E: EntityTrait>(
    db: &impl Source,
    update: UpdateMany<E>,
) -> Result<bool, DbErr> {
    Ok(update.exec(db).await?.rows_affected == 1)
}

/// Runs a `delete` of one row by its key; whether there was the row.
pub async fn delete_one<E: EntityTrait>(
    db: &impl Source,
    delete: DeleteMany<E>,
) -> Result<bool, DbErr> {
    Ok(delete.exec(db).await?.rows_affected > 0)
}

/// Begins a transaction that may write. On SQLite it takes the write lock at once (like `BEGIN
/// IMMEDIATE`), waiting for other writers through the busy timeout, so that a transaction which
/// reads before it writes never fails with "database is locked" when another writer commits
/// meanwhile. PostgreSQL needs nothing of the kind.
pub async fn begin(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let txn = db.begin().await?;
    if txn.get_database_backend() == DatabaseBackend::Sqlite {
        txn.execute_unprepared("UPDATE write_lock SET id = id WHERE 1 = 0")
            .await?;
    }
    Ok(txn)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))
}

/// Whether the database answers a trivial query (for `/readyz`).
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.ping().await.is_ok()
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database, Statement};

    /// The flags `.cargo/config.toml` builds the bundled SQLite with: no memory statistics (a
    /// process-wide mutex around every allocation) and the planner's stability guarantee (a
    /// `LIMIT ?` does not expire the prepared statement each time it is bound).
    #[tokio::test]
    async fn the_bundled_sqlite_is_built_with_the_project_flags() {
        let db = Database::connect("sqlite::memory:")
            .await
            .expect("connects");
        for option in ["SQLITE_DEFAULT_MEMSTATUS=0", "SQLITE_ENABLE_QPSG"] {
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    format!("SELECT sqlite_compileoption_used('{option}') AS used"),
                ))
                .await
                .expect("query")
                .expect("one row");
            let used: i64 = row.try_get("", "used").expect("used");
            assert_eq!(used, 1, "the bundled SQLite is built without {option}");
        }
    }
}
