//! Rows read by column position: an entity's model from the columns sea-orm selects for it, in
//! its fields' order (`db::entities::model!` writes the reader next to the model).
//!
//! sea-orm reads a model by looking each column up by name, through a wrapper per value that
//! formats an error string for every NULL it meets. Reading by position calls the driver's
//! decoder for each column directly, with the types sea-orm asks for (a field's type as an
//! `Option`, a NULL in a field that is not one an error), so the same values on both databases
//! and on both SQLite paths (sqlx's pool, or [`super::direct`] on the calling thread); it took
//! the dashboard query from 12.18 to 11.52 million instructions per request (callgrind, README
//! Performance).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use rusqlite::types::ValueRef;
use sea_orm::{DbErr, EntityTrait, QueryResult, QuerySelect, QueryTrait, Select, Statement, sqlx};

use super::Source;

/// A row's columns, read one after the other from the first.
pub struct Columns<'r> {
    row: Row<'r>,
    next: usize,
}

/// The driver's row underneath sea-orm's, or a row of a direct SQLite read.
enum Row<'r> {
    Sqlite(&'r sqlx::sqlite::SqliteRow),
    Postgres(&'r sqlx::postgres::PgRow),
    Direct(&'r rusqlite::Row<'r>),
}

/// A type read on both databases: by sqlx, or from the value SQLite holds on a direct read.
trait Decodable:
    for<'a> sqlx::Decode<'a, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + for<'a> sqlx::Decode<'a, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
{
    /// The value SQLite holds, decoded as sqlx-sqlite decodes it (`None` for a NULL).
    fn direct(value: ValueRef<'_>) -> Result<Option<Self>, String>;
}

/// What a direct read met where it wanted `wanted`.
fn mismatch(wanted: &str, value: ValueRef<'_>) -> String {
    format!(
        "mismatched types: {wanted} from SQLite {}",
        value.data_type()
    )
}

/// The text SQLite holds, or `None` for a NULL.
fn text<'v>(wanted: &str, value: ValueRef<'v>) -> Result<Option<&'v str>, String> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
        other => Err(mismatch(wanted, other)),
    }
}

/// The integer SQLite holds, or `None` for a NULL.
fn integer(wanted: &str, value: ValueRef<'_>) -> Result<Option<i64>, String> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(i)),
        other => Err(mismatch(wanted, other)),
    }
}

impl Decodable for String {
    fn direct(value: ValueRef<'_>) -> Result<Option<Self>, String> {
        Ok(text("text", value)?.map(str::to_owned))
    }
}

impl Decodable for bool {
    fn direct(value: ValueRef<'_>) -> Result<Option<Self>, String> {
        Ok(integer("boolean", value)?.map(|i| i != 0))
    }
}

impl Decodable for i32 {
    fn direct(value: ValueRef<'_>) -> Result<Option<Self>, String> {
        integer("integer", value)?
            .map(|i| i32::try_from(i).map_err(|e| e.to_string()))
            .transpose()
    }
}

impl Decodable for i64 {
    fn direct(value: ValueRef<'_>) -> Result<Option<Self>, String> {
        integer("integer", value)
    }
}

impl Decodable for NaiveDate {
    fn direct(value: ValueRef<'_>) -> Result<Option<Self>, String> {
        text("date", value)?
            .map(|t| NaiveDate::parse_from_str(t, "%F").map_err(|e| e.to_string()))
            .transpose()
    }
}

impl Decodable for DateTime<Utc> {
    fn direct(value: ValueRef<'_>) -> Result<Option<Self>, String> {
        let at = match value {
            ValueRef::Null => return Ok(None),
            ValueRef::Text(_) => text("time", value)?.and_then(time_from_text),
            ValueRef::Integer(seconds) => Utc.fix().timestamp_opt(seconds, 0).single(),
            ValueRef::Real(days) => time_from_julian_days(days),
            ValueRef::Blob(_) => return Err(mismatch("time", value)),
        };
        at.map(|t| Some(t.with_timezone(&Utc)))
            .ok_or_else(|| "invalid datetime".to_owned())
    }
}

/// The time formats SQLite's date and time functions accept, after RFC 3339 (which sqlx writes);
/// a time without an offset is UTC.
const TIME_FORMATS: [&str; 12] = [
    "%F %T%.f",
    "%F %R",
    "%F %RZ",
    "%F %R%:z",
    "%F %T%.fZ",
    "%F %T%.f%:z",
    "%FT%R",
    "%FT%RZ",
    "%FT%R%:z",
    "%FT%T%.f",
    "%FT%T%.fZ",
    "%FT%T%.f%:z",
];

/// A time stored as text, read as sqlx-sqlite reads it.
fn time_from_text(t: &str) -> Option<DateTime<FixedOffset>> {
    if let Some(at) = utc_as_written(t) {
        return Some(at.fixed_offset());
    }
    DateTime::parse_from_rfc3339(t).ok().or_else(|| {
        TIME_FORMATS.iter().find_map(|format| {
            DateTime::parse_from_str(t, format).ok().or_else(|| {
                NaiveDateTime::parse_from_str(t, format)
                    .ok()
                    .map(|n| Utc.fix().from_utc_datetime(&n))
            })
        })
    })
}

/// A UTC time in the one form sqlx writes one (`2026-12-07T09:30:15.123456+00:00`, zero to nine
/// fraction digits, or `Z` for the offset), read without chrono's general parser; `None` for any
/// other text, which the general parser then reads (a leap second included).
fn utc_as_written(t: &str) -> Option<DateTime<Utc>> {
    let b = t.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if !separators.iter().all(|&(i, c)| b.get(i) == Some(&c)) {
        return None;
    }
    let (mut end, mut nanos) = (19, 0);
    if b.get(19) == Some(&b'.') {
        end = 20 + b[20..].iter().take_while(|c| c.is_ascii_digit()).count();
        let places = end - 20;
        if !(1..=9).contains(&places) {
            return None;
        }
        nanos = digits(20..end)? * 10u32.pow(9 - u32::try_from(places).ok()?);
    }
    if !matches!(b.get(end..)?, b"+00:00" | b"Z") {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(0..4)?).ok()?,
        digits(5..7)?,
        digits(8..10)?,
    )?;
    let time = date.and_hms_nano_opt(digits(11..13)?, digits(14..16)?, digits(17..19)?, nanos)?;
    Some(Utc.from_utc_datetime(&time))
}

/// A time stored as a Julian day number, read as sqlx-sqlite reads it.
fn time_from_julian_days(days: f64) -> Option<DateTime<FixedOffset>> {
    const UNIX_EPOCH_IN_JULIAN_DAYS: f64 = 2_440_587.5;
    let seconds = (days - UNIX_EPOCH_IN_JULIAN_DAYS) * 86_400.0;
    if !seconds.is_finite() {
        return None;
    }
    // Lossy as sqlx's: whole seconds and the fraction's nanoseconds.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let (whole, nanos) = (seconds.trunc() as i64, (seconds.fract() * 1e9).abs() as u32);
    Utc.fix().timestamp_opt(whole, nanos).single()
}

/// A type a model's field holds: read as sea-orm reads it, always as an `Option` first, so that
/// a NULL in a field that is not an `Option` is an error on both databases (sqlx alone would
/// decode it on SQLite as an empty text, a zero or `false`).
pub trait ColumnValue: Sized {
    /// The value of column `index` of `row`.
    #[doc(hidden)]
    fn read(row: &Columns<'_>, index: usize) -> Result<Self, DbErr>;
}

/// Implements [`ColumnValue`] for each type and its `Option`.
macro_rules! column_values {
    ($($t:ty),+) => {
        $(
            impl ColumnValue for $t {
                fn read(row: &Columns<'_>, index: usize) -> Result<Self, DbErr> {
                    row.decode::<$t>(index)?
                        .ok_or_else(|| DbErr::Type(format!("column {index}: NULL")))
                }
            }

            impl ColumnValue for Option<$t> {
                fn read(row: &Columns<'_>, index: usize) -> Result<Self, DbErr> {
                    row.decode::<$t>(index)
                }
            }
        )+
    };
}

column_values!(String, bool, i32, i64, DateTime<Utc>, NaiveDate);

impl<'r> Columns<'r> {
    /// The columns of `row`, from the first.
    pub fn of(row: &'r QueryResult) -> Result<Self, DbErr> {
        let row = if let Some(r) = row.try_as_sqlite_row() {
            Row::Sqlite(r)
        } else if let Some(r) = row.try_as_pg_row() {
            Row::Postgres(r)
        } else {
            return Err(DbErr::Custom("a row of an unsupported driver".into()));
        };
        Ok(Self { row, next: 0 })
    }

    /// The columns of a row of a direct SQLite read, from the first.
    pub(super) fn direct(row: &'r rusqlite::Row<'r>) -> Self {
        Self {
            row: Row::Direct(row),
            next: 0,
        }
    }

    /// The next column's value.
    #[allow(clippy::should_implement_trait)]
    pub fn next<T: ColumnValue>(&mut self) -> Result<T, DbErr> {
        let index = self.next;
        self.next += 1;
        T::read(self, index)
    }

    /// Column `index` decoded as `T`, `None` for a NULL.
    fn decode<T: Decodable>(&self, index: usize) -> Result<Option<T>, DbErr> {
        match self.row {
            Row::Sqlite(r) => sqlx::Row::try_get(r, index).map_err(|e| e.to_string()),
            Row::Postgres(r) => sqlx::Row::try_get(r, index).map_err(|e| e.to_string()),
            Row::Direct(r) => r
                .get_ref(index)
                .map_err(|e| e.to_string())
                .and_then(T::direct),
        }
        .map_err(|e| DbErr::Type(format!("column {index}: {e}")))
    }
}

/// A model read from its columns in the order sea-orm selects them.
pub trait FromColumns: Sized {
    /// Reads the model from the row's first columns.
    fn from_columns(columns: &mut Columns<'_>) -> Result<Self, DbErr>;

    /// Reads the model from a whole row.
    fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        Self::from_columns(&mut Columns::of(row)?)
    }
}

/// Runs `statement` and reads each row with `read`: on the calling thread when `db` has a direct
/// SQLite reader (which leaves a long statement to the pool), else through sea-orm. `read` may
/// see a row twice when a direct read is left to the pool part way: it must only decode.
pub async fn rows<T>(
    db: &impl Source,
    statement: Statement,
    mut read: impl FnMut(&mut Columns<'_>) -> Result<T, DbErr>,
) -> Result<Vec<T>, DbErr> {
    if let Some(found) = db.direct().and_then(|d| d.rows(&statement, &mut read)) {
        return found;
    }
    db.query_all_raw(statement)
        .await?
        .iter()
        .map(|row| read(&mut Columns::of(row)?))
        .collect()
}

/// The models `select` reads (what sea-orm's `all` returns, read by position).
pub async fn all<E>(db: &impl Source, select: Select<E>) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromColumns,
{
    let statement = select.build(db.get_database_backend());
    rows(db, statement, E::Model::from_columns).await
}

/// The first model `select` reads, if any (what sea-orm's `one` returns, read by position).
pub async fn first<E>(db: &impl Source, select: Select<E>) -> Result<Option<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromColumns,
{
    Ok(all(db, select.limit(1)).await?.into_iter().next())
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::{TimeZone, Utc};
    use sea_orm::{
        ActiveValue::Set, ConnectionTrait, Database, EntityTrait, FromQueryResult, QueryTrait,
    };

    use super::FromColumns;
    use crate::db::entities::{organization, user};

    /// An organisation row for tests (its name and slug from `id`).
    pub(in crate::db) fn organization_row(
        id: &str,
        messaging: bool,
        minutes: Option<i32>,
        created: chrono::DateTime<Utc>,
    ) -> organization::ActiveModel {
        organization::ActiveModel {
            id: Set(id.into()),
            name: Set(format!("Org {id}")),
            slug: Set(id.into()),
            cross_org_messaging: Set(messaging),
            chat_activation_minutes: Set(minutes),
            created_at: Set(created),
        }
    }

    /// A user row for tests, with NULL and non-NULL optional texts.
    pub(in crate::db) fn user_row(id: &str, created: chrono::DateTime<Utc>) -> user::ActiveModel {
        user::ActiveModel {
            id: Set(id.into()),
            email: Set(format!("{id}@example.org")),
            external_id: Set(None),
            given_name: Set("Ada".into()),
            family_name: Set("Lovelace".into()),
            display_name: Set("Ada L".into()),
            avatar_url: Set(Some("https://example.org/a.png".into())),
            password_hash: Set(None),
            created_at: Set(created),
        }
    }

    /// Reads every row of `E` both ways, by name (sea-orm) and by position, and compares.
    async fn both_ways<E>(db: &sea_orm::DatabaseConnection) -> Vec<E::Model>
    where
        E: EntityTrait,
        E::Model: FromColumns + PartialEq + std::fmt::Debug,
    {
        let rows = db
            .query_all_raw(E::find().build(db.get_database_backend()))
            .await
            .expect("rows");
        assert!(!rows.is_empty(), "no rows to compare");
        rows.iter()
            .map(|row| {
                let by_name = E::Model::from_query_result(row, "").expect("by name");
                let by_position = E::Model::from_row(row).expect("by position");
                assert_eq!(by_position, by_name);
                by_position
            })
            .collect()
    }

    /// Columns holding NULL and values of every kind (text, boolean, integer, time) read the
    /// same by position as sea-orm reads them by name.
    #[tokio::test]
    async fn a_model_read_by_position_equals_the_model_sea_orm_reads_by_name() {
        let db = Database::connect("sqlite::memory:")
            .await
            .expect("connects");
        crate::db::migrate(&db).await.expect("migrates");
        let at = Utc.with_ymd_and_hms(2026, 12, 7, 9, 30, 15).unwrap();
        organization::Entity::insert_many([
            organization_row("o1", true, Some(15), at),
            organization_row("o2", false, None, at),
        ])
        .exec(&db)
        .await
        .expect("organisations");
        user::Entity::insert(user_row("u1", at))
            .exec(&db)
            .await
            .expect("user");

        let orgs = both_ways::<organization::Entity>(&db).await;
        assert_eq!(orgs.len(), 2);
        assert_eq!(orgs[1].chat_activation_minutes, None);
        let users = both_ways::<user::Entity>(&db).await;
        assert_eq!(users[0].created_at, at);
        assert_eq!(users[0].password_hash, None);
    }

    /// Times in the form sqlx writes read by the short path exactly as chrono's RFC 3339 parser
    /// reads them; anything else (another offset, a leap second, a malformed or truncated text)
    /// is left to the general parser.
    #[test]
    fn a_time_as_sqlx_writes_it_reads_as_chrono_reads_it_and_other_texts_are_left_to_chrono() {
        let written = [
            "2026-12-07T09:30:15+00:00",
            "2026-12-07T09:30:15Z",
            "2026-12-07T09:30:15.5+00:00",
            "2026-12-07T09:30:15.123+00:00",
            "2026-12-07T09:30:15.123456+00:00",
            "2026-12-07T09:30:15.123456789+00:00",
            "0001-01-01T00:00:00+00:00",
            "2024-02-29T23:59:59.999999999Z",
        ];
        for t in written {
            let chrono = chrono::DateTime::parse_from_rfc3339(t).expect(t).to_utc();
            assert_eq!(super::utc_as_written(t), Some(chrono), "{t}");
        }
        let others = [
            "2026-12-07T09:30:15+01:00",
            "2026-12-07T23:59:60+00:00",
            "2026-12-07 09:30:15",
            "2026-12-07T09:30:15.+00:00",
            "2026-12-07T09:30:15.1234567891+00:00",
            "2026-12-07T09:30:15+00:0",
            "2026-02-30T09:30:15+00:00",
            "2026-12-07T09:3x:15+00:00",
            "2026-12-07T09:30",
            "2026-12-07T09:30:",
            "2026-12-07T09:30:1",
            "2026-12-07T09:30:15",
            "",
        ];
        for t in others {
            assert_eq!(super::utc_as_written(t), None, "{t}");
        }
        let leap = super::time_from_text("2026-12-31T23:59:60+00:00");
        assert_eq!(
            leap,
            chrono::DateTime::parse_from_rfc3339("2026-12-31T23:59:60+00:00").ok()
        );
    }

    /// A NULL where the model has no `Option` is an error by position as by name (sqlx alone
    /// reads a NULL text as "" on SQLite).
    #[tokio::test]
    async fn a_null_in_a_field_that_is_not_optional_is_an_error_both_ways() {
        let db = Database::connect("sqlite::memory:")
            .await
            .expect("connects");
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT 'o1' AS id, NULL AS name, 'vets' AS slug, 1 AS cross_org_messaging, \
                 NULL AS chat_activation_minutes, '2026-12-07T09:30:15Z' AS created_at",
            ))
            .await
            .expect("query")
            .expect("one row");
        assert!(organization::Model::from_query_result(&row, "").is_err());
        let err = organization::Model::from_row(&row).expect_err("NULL name");
        assert!(err.to_string().contains("column 1: NULL"), "{err}");
    }
}
