//! SQLite reads run on the calling thread: query-only connections to the database file, used
//! directly from the runtime's worker instead of through sqlx's pool.
//!
//! sqlx runs every SQLite connection on a thread of its own: a statement is a checkout from the
//! pool, a command sent to that thread, rows sent back one by one through a channel (a wake-up of
//! the waiting task each time) and a task spawned to put the connection back; every value is
//! copied out of SQLite on the way (`sqlite3_value_dup`). A read through this module prepares
//! (or reuses) the statement on an idle query-only connection of its own, steps it where the task
//! runs and decodes each value where SQLite holds it. Writes and everything in a transaction stay
//! on sea-orm's pool; in WAL mode a reader sees every transaction committed before its
//! statement starts, so a read after a write sees the write.
//!
//! Used by [`super::columns::rows`]: the reads of `columns::all` and `columns::first` (the
//! loaders' batch lookups by id, chat members, the token's user and the viewer's memberships,
//! the audit sealer's batch) and the keyset pages. A read is interrupted once it has taken
//! [`STEP_BUDGET`] of SQLite's virtual-machine steps (a few milliseconds) and left to the pool,
//! whose connections run on threads of their own: a page whose total counts many rows of its
//! filter, say. SQLite checks the budget at jumps and at each row, so work inside one step (an
//! unfiltered `COUNT(*)`, an in-memory sort, reading cold pages from disk) is not cut short;
//! every caller filters its counts. A statement whose parameters hold a type this module does
//! not bind, one that would write, a read when no connection can be opened and one that finds
//! the database busy for longer than [`BUSY_WAIT`] go to the pool too ([`Reader::fallbacks`]
//! counts them); the two paths read the same rows. The values bind as sqlx binds them and decode
//! as sqlx decodes them (`columns::ColumnValue`).

use std::{
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::SecondsFormat;
use rusqlite::{
    OpenFlags,
    types::{ToSqlOutput, Value as Sql, ValueRef},
};
use sea_orm::{DbErr, RuntimeErr, Statement, Value};

use super::columns::Columns;

/// Prepared statements kept per connection: the loaders' lookups differ in their number of ids,
/// so a batch of a new size is one more statement.
const STATEMENT_CACHE: usize = 64;

/// Query-only connections to one SQLite file, lent to one read at a time.
pub struct Reader {
    path: PathBuf,
    /// Connections not in use; at most `keep` are kept.
    idle: Mutex<Vec<rusqlite::Connection>>,
    keep: usize,
    statements: prometheus_client::metrics::counter::Counter,
    /// Reads left to the pool after they were tried here (see [`Reader::fallbacks`]).
    fallbacks: AtomicU64,
    /// Whether a failure to open a connection was logged already (once per reader).
    warned: AtomicBool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("keep", &self.keep).finish()
    }
}

impl Reader {
    /// A reader of the database file at `path` that keeps up to `keep` idle connections and
    /// counts its statements in `statements` (the same counter as the pool's).
    pub fn new(
        path: PathBuf,
        keep: usize,
        statements: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            keep,
            statements,
            fallbacks: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// How many reads were tried here and then left to the pool (a database busy for longer
    /// than [`BUSY_WAIT`], a statement past [`STEP_BUDGET`], one that writes, or no connection);
    /// a statement with a parameter this reader does not bind is not tried, so not counted.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Runs `statement` and reads each row with `read`; `None` when the pool should run it
    /// instead (see the module's documentation).
    pub fn rows<T>(
        &self,
        statement: &Statement,
        read: &mut impl FnMut(&mut Columns<'_>) -> Result<T, DbErr>,
    ) -> Option<Result<Vec<T>, DbErr>> {
        let params = match &statement.values {
            Some(values) => values.0.iter().map(param).collect::<Option<Vec<_>>>()?,
            None => Vec::new(),
        };
        let conn = match self.checkout() {
            Ok(conn) => conn,
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "no direct SQLite connection; reading through the pool");
                }
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let found = run(&conn, &statement.sql, &params, read);
        self.give_back(conn);
        match found {
            Err(Failure::ToPool) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(Failure::Db(e)) => {
                self.statements.inc();
                Some(Err(e))
            }
            Ok(rows) => {
                self.statements.inc();
                Some(Ok(rows))
            }
        }
    }

    /// An idle connection, or a new one.
    fn checkout(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        // Opened for reading and writing, as the pool's connections are, so that it can take
        // part in the WAL's shared-memory index however the pool's connections come and go;
        // `query_only` refuses any statement that would change the database.
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", true)?;
        conn.busy_timeout(BUSY_WAIT)?;
        // Called once a statement has taken STEP_BUDGET steps: `true` interrupts it.
        conn.progress_handler(STEP_BUDGET, Some(|| true))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Keeps `conn` for the next read, unless enough are kept.
    fn give_back(&self, conn: rusqlite::Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.keep {
            idle.push(conn);
        }
    }
}

/// The most virtual-machine steps a direct read takes on a runtime thread before it is
/// interrupted and left to the pool: a few milliseconds of SQLite's work. The dashboard's page
/// with its total takes about 2,100, its lookups by id about 500 (the `sqlite3` shell's
/// `.stats` on the bench's database).
const STEP_BUDGET: std::ffi::c_int = 500_000;

/// How long a direct read waits for a busy database (a recovering or checkpointing writer in WAL
/// mode) before leaving the statement to the pool: short, since it waits on a runtime thread.
const BUSY_WAIT: Duration = Duration::from_millis(50);

/// Why a direct read gave no rows.
enum Failure {
    /// The database stayed busy, or the statement ran past its step budget: the pool runs it.
    ToPool,
    /// The statement failed.
    Db(DbErr),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(
                rusqlite::ErrorCode::DatabaseBusy
                | rusqlite::ErrorCode::DatabaseLocked
                | rusqlite::ErrorCode::OperationInterrupted,
            ) => Self::ToPool,
            _ => Self::Db(query_error(e)),
        }
    }
}

/// Steps `sql` with `params` on `conn`, reading each row with `read`.
fn run<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[ToSqlOutput<'_>],
    read: &mut impl FnMut(&mut Columns<'_>) -> Result<T, DbErr>,
) -> Result<Vec<T>, Failure> {
    let mut stmt = conn.prepare_cached(sql)?;
    // Only reads run here; anything else (a write, a `PRAGMA` that changes the connection) is
    // the pool's.
    if !stmt.readonly() {
        return Err(Failure::ToPool);
    }
    // SQLite counts a statement's steps across all its runs and calls the progress handler at
    // every multiple of the budget: counted afresh, each run has the whole budget.
    stmt.reset_status(rusqlite::StatementStatus::VmStep);
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read(&mut Columns::direct(row)).map_err(Failure::Db)?);
    }
    Ok(out)
}

/// A sea-query value bound as sqlx binds it on SQLite (booleans as integers, times as RFC 3339
/// text with as many fraction digits as they need, dates as `YYYY-MM-DD`); `None` for a type
/// left to the pool.
fn param(value: &Value) -> Option<ToSqlOutput<'_>> {
    let integer = |v: Option<i64>| v.map_or(Sql::Null, Sql::Integer);
    Some(ToSqlOutput::Owned(match value {
        Value::String(Some(s)) => return Some(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))),
        Value::String(None) => Sql::Null,
        Value::Bool(v) => integer(v.map(i64::from)),
        Value::TinyInt(v) => integer(v.map(i64::from)),
        Value::SmallInt(v) => integer(v.map(i64::from)),
        Value::Int(v) => integer(v.map(i64::from)),
        Value::BigInt(v) => integer(*v),
        Value::TinyUnsigned(v) => integer(v.map(i64::from)),
        Value::SmallUnsigned(v) => integer(v.map(i64::from)),
        Value::Unsigned(v) => integer(v.map(i64::from)),
        Value::BigUnsigned(v) => match v {
            Some(v) => Sql::Integer(i64::try_from(*v).ok()?),
            None => Sql::Null,
        },
        Value::ChronoDateTimeUtc(v) => v.map_or(Sql::Null, |t| {
            Sql::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
        }),
        Value::ChronoDate(v) => v.map_or(Sql::Null, |d| Sql::Text(d.format("%F").to_string())),
        _ => return None,
    }))
}

/// A SQLite error as sea-orm reports a failed query.
pub(crate) fn query_error(e: rusqlite::Error) -> DbErr {
    DbErr::Query(RuntimeErr::Internal(format!("sqlite: {e}")))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryTrait, Statement};

    use crate::{
        config::DatabaseConfig,
        db::{
            Db, Source,
            columns::{
                self, Columns,
                tests::{organization_row, user_row},
            },
            entities::{membership, organization},
        },
    };

    /// A migrated SQLite file with a direct reader (and the directory that holds it).
    async fn file_db() -> (Db, crate::db::QueryStats, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let (db, stats) = crate::db::connect_counted(&DatabaseConfig {
            url: url.into(),
            embedded_default: false,
            max_connections: 2,
            direct_reads: true,
        })
        .await
        .expect("connects");
        crate::db::migrate(&db).await.expect("migrates");
        (db, stats, dir)
    }

    /// The database `url` names, with or without a direct reader as `direct_reads` says.
    async fn connect(url: String, direct_reads: bool) -> Db {
        crate::db::connect(&DatabaseConfig {
            url: url.into(),
            embedded_default: false,
            max_connections: 1,
            direct_reads,
        })
        .await
        .expect("connects")
    }

    /// What `select` reads through the pool and directly (on the reader itself, so a statement
    /// it would leave to the pool fails the test): both, after checking they are equal.
    async fn both_paths<E>(db: &Db, select: sea_orm::Select<E>) -> Vec<E::Model>
    where
        E: EntityTrait,
        E::Model: columns::FromColumns + PartialEq + std::fmt::Debug,
    {
        let pooled = columns::all(&db.pool, select.clone()).await.expect("pool");
        let statement = select.clone().build(db.get_database_backend());
        let reader = db.direct().expect("direct reader");
        let direct = reader
            .rows(&statement, &mut |c| {
                <E::Model as columns::FromColumns>::from_columns(c)
            })
            .expect("bound directly")
            .expect("direct");
        let by_name = select.all(&db.pool).await.expect("sea-orm");
        assert_eq!(direct, pooled);
        assert_eq!(direct, by_name);
        direct
    }

    /// Rows filtered by text, boolean, integer and time parameters (a time with nanoseconds,
    /// which sqlx stores with nine fraction digits) read the same directly as through sqlx's
    /// pool and sea-orm's by-name reader, and each direct read counts as one statement.
    #[tokio::test]
    async fn a_direct_read_binds_and_reads_every_value_as_the_pool_does() {
        let (db, stats, _dir) = file_db().await;
        assert!(db.direct().is_some(), "a SQLite file gets a direct reader");
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 9, 30, 15).unwrap();
        let fine = at + chrono::Duration::nanoseconds(123_456_789);
        organization::Entity::insert_many([
            organization_row("o1", true, Some(15), at),
            organization_row("o2", false, None, fine),
            organization_row("o3", true, Some(-4), fine),
        ])
        .exec(&db.pool)
        .await
        .expect("organisations");

        use organization::Column as C;
        let everything = both_paths(&db, organization::Entity::find()).await;
        assert_eq!(everything.len(), 3);
        assert_eq!(everything[1].created_at, fine);
        assert_eq!(everything[1].chat_activation_minutes, None);
        let at_fine = both_paths(
            &db,
            organization::Entity::find().filter(C::CreatedAt.eq(fine)),
        )
        .await;
        assert_eq!(at_fine.len(), 2, "a time parameter matches the stored text");
        let chatty = organization::Entity::find()
            .filter(C::CrossOrgMessaging.eq(true))
            .filter(C::ChatActivationMinutes.lt(0))
            .filter(C::Id.is_in(["o1", "o3"]));
        let chatty = both_paths(&db, chatty).await;
        assert_eq!(
            chatty.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["o3"]
        );

        let unset = both_paths(
            &db,
            organization::Entity::find().filter(sea_orm::sea_query::Expr::cust_with_values(
                "chat_activation_minutes IS ?",
                [Option::<i32>::None],
            )),
        )
        .await;
        assert_eq!(
            unset.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            ["o2"],
            "a NULL parameter binds as NULL"
        );
        let dated = both_paths(
            &db,
            organization::Entity::find().filter(sea_orm::sea_query::ExprTrait::eq(
                sea_orm::sea_query::Expr::cust("date(substr(created_at, 1, 10))"),
                chrono::NaiveDate::from_ymd_opt(2026, 12, 7).expect("a date"),
            )),
        )
        .await;
        assert_eq!(dated.len(), 3, "a date parameter binds as YYYY-MM-DD");

        let before = stats.statements();
        columns::all(&db, organization::Entity::find())
            .await
            .expect("direct");
        assert_eq!(stats.statements(), before + 1);
    }

    /// A statement with a parameter the reader does not bind (JSON) is left to the pool.
    #[tokio::test]
    async fn a_parameter_the_reader_does_not_bind_leaves_the_statement_to_the_pool() {
        let (db, _stats, _dir) = file_db().await;
        let statement = Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT ? AS j",
            [sea_orm::Value::Json(Some(Box::new(
                serde_json::json!({"a": 1}),
            )))],
        );
        let reader = db.direct().expect("direct reader");
        assert!(
            reader
                .rows(&statement, &mut |c| c.next::<String>())
                .is_none()
        );
        let read = columns::rows(&db, statement, |c| c.next::<String>())
            .await
            .expect("read through the pool");
        assert_eq!(read, [r#"{"a":1}"#]);
    }

    /// A read that runs past its step budget is interrupted on the runtime thread and run by
    /// the pool instead, to the same answer; a short statement run again and again never is.
    #[tokio::test]
    async fn a_read_past_its_step_budget_is_left_to_the_pool_and_answers_the_same() {
        let (db, stats, _dir) = file_db().await;
        let long = Statement::from_string(
            db.get_database_backend(),
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000) \
             SELECT count(*) FROM n",
        );
        let short_statement = Statement::from_string(
            db.get_database_backend(),
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000) \
             SELECT count(*) FROM n",
        );
        let reader = db.direct().expect("direct reader");
        let short = reader
            .rows(&short_statement, &mut |c| c.next::<i64>())
            .expect("within the budget")
            .expect("counted");
        assert_eq!(short, [1000]);
        // The same cached statement, run until its steps add up to several budgets: each run
        // has a budget of its own.
        for _ in 0..200 {
            assert!(
                reader
                    .rows(&short_statement, &mut |c| c.next::<i64>())
                    .is_some()
            );
        }
        assert_eq!(reader.fallbacks(), 0);
        assert!(reader.rows(&long, &mut |c| c.next::<i64>()).is_none());
        assert_eq!(reader.fallbacks(), 1);
        let before = stats.statements();
        let counted = columns::rows(&db, long, |c| c.next::<i64>())
            .await
            .expect("counted by the pool");
        assert_eq!(counted, [1_000_000]);
        assert_eq!(stats.statements(), before + 1, "counted once, by the pool");
    }

    /// A statement that would change the database is never run on a direct connection: it is
    /// left to the pool (and the connections are `query_only` besides).
    #[tokio::test]
    async fn a_statement_that_writes_is_left_to_the_pool() {
        let (db, _stats, _dir) = file_db().await;
        let insert = Statement::from_string(
            db.get_database_backend(),
            "INSERT INTO organizations (id, name, slug, cross_org_messaging, created_at) \
             VALUES ('o1', 'Vets', 'vets', 0, '2026-12-07T09:30:15+00:00') RETURNING id",
        );
        let reader = db.direct().expect("direct reader");
        assert!(reader.rows(&insert, &mut |c| c.next::<String>()).is_none());
        assert_eq!(reader.fallbacks(), 1);
        let count = organization::Entity::find()
            .all(&db.pool)
            .await
            .expect("read");
        assert!(count.is_empty());
    }

    /// Times stored in every form SQLite's date functions and sqlx write (RFC 3339 with an
    /// offset, space-separated, without seconds, Unix seconds, Julian days) and NULL read the
    /// same directly as through sqlx.
    #[tokio::test]
    async fn times_stored_in_any_form_sqlite_knows_read_as_sqlx_reads_them() {
        let (db, _stats, _dir) = file_db().await;
        let statement = Statement::from_string(
            db.get_database_backend(),
            "SELECT '2026-12-07T09:30:15.5+01:00', '2026-12-07 09:30:15', '2026-12-07 09:30', \
             1765099815, 2461381.896, NULL",
        );
        let read = |c: &mut Columns<'_>| {
            (0..6)
                .map(|_| c.next::<Option<DateTime<Utc>>>())
                .collect::<Result<Vec<_>, _>>()
        };
        let direct = db
            .direct()
            .expect("direct reader")
            .rows(&statement, &mut { read })
            .expect("bound directly")
            .expect("direct");
        let pooled = columns::rows(&db.pool, statement, read)
            .await
            .expect("pool");
        assert_eq!(direct, pooled);
        assert!(direct[0].iter().take(5).all(Option::is_some), "{direct:?}");
        assert_eq!(direct[0][5], None);
        assert_eq!(
            direct[0][1],
            Some(Utc.with_ymd_and_hms(2026, 12, 7, 9, 30, 15).unwrap())
        );
    }

    /// A membership's 64-bit integer and optional text read the same on both paths, and an
    /// in-memory database gets no direct reader (no other connection could open it).
    #[tokio::test]
    async fn integers_and_missing_texts_read_alike_and_memory_databases_stay_on_the_pool() {
        let (db, _stats, _dir) = file_db().await;
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 9, 30, 15).unwrap();
        organization::Entity::insert(organization_row("o1", false, None, at))
            .exec(&db.pool)
            .await
            .expect("organisation");
        crate::db::entities::user::Entity::insert(user_row("u1", at))
            .exec(&db.pool)
            .await
            .expect("user");
        db.execute_unprepared(
            "INSERT INTO memberships (org_id, user_id, role, title, active, auditor, created_at, \
             search_given, search_family, search_display, search_text, search_id) VALUES \
             ('o1', 'u1', 'OWNER', NULL, 1, 0, '2026-12-07T09:30:15+00:00', 'ada', 'lovelace', \
             'ada l', 'ada lovelace a@example.org', 9007199254740993)",
        )
        .await
        .expect("membership");
        let rows = both_paths(&db, membership::Entity::find()).await;
        assert_eq!(rows[0].search_id, 9_007_199_254_740_993);
        assert_eq!(rows[0].title, None);

        let memory = connect("sqlite::memory:".to_owned(), true).await;
        assert!(memory.direct().is_none());

        // A file of the name exists, but `mode=memory` opens an empty database in memory.
        let named = _dir.path().join("t.db");
        let in_memory = connect(format!("sqlite://{}?mode=memory", named.display()), true).await;
        assert!(named.is_file());
        assert!(in_memory.direct().is_none());

        // CAREGRAPH_SQLITE_DIRECT_READS=false: the same file, every statement through the pool.
        let switched_off = connect(format!("sqlite://{}?mode=rwc", named.display()), false).await;
        assert!(switched_off.direct().is_none());
    }
}
