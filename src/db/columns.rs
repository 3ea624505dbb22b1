//! Rows read by column position: an entity's model from the columns sea-orm selects for it, in
//! its fields' order (`db::entities::model!` writes the reader next to the model).
//!
//! sea-orm reads a model by looking each column up by name, through a wrapper per value that
//! formats an error string for every NULL it meets. Reading by position calls sqlx's decoder for
//! each column directly, with the types sea-orm asks for (a field's type as an `Option`, a NULL
//! in a field that is not one an error), so the same values on both databases; it took
//! the dashboard query from 12.18 to 11.52 million instructions per request (callgrind, README
//! Performance).

use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QueryResult, QueryTrait, Select, sqlx};

/// A row's columns, read one after the other from the first.
pub struct Columns<'r> {
    row: Row<'r>,
    next: usize,
}

/// The driver's row underneath sea-orm's.
enum Row<'r> {
    Sqlite(&'r sqlx::sqlite::SqliteRow),
    Postgres(&'r sqlx::postgres::PgRow),
}

/// A type sqlx decodes on both databases.
trait Decodable:
    for<'a> sqlx::Decode<'a, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + for<'a> sqlx::Decode<'a, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
{
}

impl<T> Decodable for T where
    T: for<'a> sqlx::Decode<'a, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'a> sqlx::Decode<'a, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
{
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
                    row.decode::<Option<$t>>(index)?
                        .ok_or_else(|| DbErr::Type(format!("column {index}: NULL")))
                }
            }

            impl ColumnValue for Option<$t> {
                fn read(row: &Columns<'_>, index: usize) -> Result<Self, DbErr> {
                    row.decode::<Option<$t>>(index)
                }
            }
        )+
    };
}

column_values!(
    String,
    bool,
    i32,
    i64,
    chrono::DateTime<chrono::Utc>,
    chrono::NaiveDate
);

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

    /// The next column's value.
    #[allow(clippy::should_implement_trait)]
    pub fn next<T: ColumnValue>(&mut self) -> Result<T, DbErr> {
        let index = self.next;
        self.next += 1;
        T::read(self, index)
    }

    /// Column `index` decoded by sqlx as `T`.
    fn decode<T: Decodable>(&self, index: usize) -> Result<T, DbErr> {
        match self.row {
            Row::Sqlite(r) => sqlx::Row::try_get(r, index),
            Row::Postgres(r) => sqlx::Row::try_get(r, index),
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

/// The models `select` reads (what sea-orm's `all` returns, read by position).
pub async fn all<E>(db: &impl ConnectionTrait, select: Select<E>) -> Result<Vec<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: FromColumns,
{
    db.query_all_raw(select.build(db.get_database_backend()))
        .await?
        .iter()
        .map(E::Model::from_row)
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use sea_orm::{
        ActiveValue::Set, ConnectionTrait, Database, EntityTrait, FromQueryResult, QueryTrait,
    };

    use super::FromColumns;
    use crate::db::entities::{organization, user};

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
            organization::ActiveModel {
                id: Set("o1".into()),
                name: Set("Vets".into()),
                slug: Set("vets".into()),
                cross_org_messaging: Set(true),
                chat_activation_minutes: Set(Some(15)),
                created_at: Set(at),
            },
            organization::ActiveModel {
                id: Set("o2".into()),
                name: Set("Clinic".into()),
                slug: Set("clinic".into()),
                cross_org_messaging: Set(false),
                chat_activation_minutes: Set(None),
                created_at: Set(at),
            },
        ])
        .exec(&db)
        .await
        .expect("organisations");
        user::Entity::insert(user::ActiveModel {
            id: Set("u1".into()),
            email: Set("a@example.org".into()),
            external_id: Set(None),
            given_name: Set("Ada".into()),
            family_name: Set("Lovelace".into()),
            display_name: Set("Ada L".into()),
            avatar_url: Set(Some("https://example.org/a.png".into())),
            password_hash: Set(None),
            created_at: Set(at),
        })
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
