//! The one keyset paginator: every paged list is a filter plus an order (a sort column and the
//! id column as tie-breaker), read as "the rows after the cursor's key", one row more than the
//! page to know whether more follow, and counted in all in the same statement.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, ModelTrait, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Value,
    sea_query::{Asterisk, Expr, ExprTrait, ValueType},
};

use super::columns::FromColumns;
use crate::{
    domain::pagination::{Key, Page, PageRequest},
    error::{AppError, AppResult},
};

/// How a paged list sorts: by which column (a text or a UTC time), with which id column breaking
/// ties, and in which direction.
#[derive(Clone, Copy, Debug)]
pub struct Keyset<C> {
    sort: C,
    id: C,
    descending: bool,
    time: bool,
}

impl<C: ColumnTrait> Keyset<C> {
    /// Ascending by a text column (a lowercased name), then by id.
    pub fn text(sort: C, id: C) -> Self {
        Self {
            sort,
            id,
            descending: false,
            time: false,
        }
    }

    /// Ascending by a UTC time column, then by id.
    pub fn time(sort: C, id: C) -> Self {
        Self {
            sort,
            id,
            descending: false,
            time: true,
        }
    }

    /// The same order, newest (or last) first.
    pub fn descending(self) -> Self {
        Self {
            descending: true,
            ..self
        }
    }

    /// The condition "after this key": `sort > v OR (sort = v AND id > last_id)` (or `<` both
    /// ways when descending).
    fn after(&self, key: &Key) -> AppResult<Condition> {
        let value: Value = if self.time {
            parse_key_time(&key.sort)?.into()
        } else {
            key.sort.as_str().into()
        };
        let (past, past_id) = if self.descending {
            (self.sort.lt(value.clone()), self.id.lt(key.id.as_str()))
        } else {
            (self.sort.gt(value.clone()), self.id.gt(key.id.as_str()))
        };
        Ok(Condition::any()
            .add(past)
            .add(Condition::all().add(self.sort.eq(value)).add(past_id)))
    }

    /// A row's key, read from its sort and id columns.
    fn key_of<M: ModelTrait>(&self, m: &M) -> AppResult<Key>
    where
        M::Entity: EntityTrait<Column = C>,
    {
        let sort = if self.time {
            key_time(value_as::<DateTime<Utc>>(m.get(self.sort))?)
        } else {
            value_as::<String>(m.get(self.sort))?
        };
        Ok(Key {
            sort,
            id: value_as::<String>(m.get(self.id))?,
        })
    }
}

fn value_as<T: ValueType>(v: Value) -> AppResult<T> {
    T::try_from(v).map_err(|e| AppError::internal(anyhow::anyhow!("page key column: {e:?}")))
}

/// The alias of the count that rides along with a page's rows.
const TOTAL: &str = "keyset_total";

/// One page of `E`'s rows matching `filter`, in `order`, each converted by `to_domain`.
///
/// The count of all matching rows rides along with the page as an uncorrelated scalar subquery
/// (`(SELECT COUNT(*) ... ) AS keyset_total`, which SQLite and PostgreSQL run once per
/// statement): one statement and one round trip instead of a count followed by the page. Only
/// a page past the end of its list, which has no row to carry it, counts on its own.
pub async fn page<E, T>(
    db: &impl super::Source,
    filter: Condition,
    order: Keyset<E::Column>,
    page: &PageRequest,
    to_domain: impl Fn(E::Model) -> AppResult<T>,
) -> AppResult<Page<T>>
where
    E: EntityTrait,
    E::Model: Sync + FromColumns,
{
    let count = E::find()
        .filter(filter.clone())
        .select_only()
        .expr(Expr::col(Asterisk).count())
        .into_query();
    let mut query = E::find().filter(filter.clone());
    if let Some(after) = &page.after {
        query = query.filter(order.after(after)?);
    }
    let direction = if order.descending {
        Order::Desc
    } else {
        Order::Asc
    };
    let statement = query
        .order_by(order.sort, direction.clone())
        .order_by(order.id, direction)
        .limit(page.fetch())
        .expr_as(Expr::SubQuery(None, Box::new(count.into())), TOTAL)
        .build(db.get_database_backend());
    let fetched = super::columns::rows(db, statement, |c| {
        let m = E::Model::from_columns(c)?;
        let total: i64 = c.next()?;
        Ok((m, total))
    })
    .await?;
    let total = match fetched.first() {
        Some((_, total)) => <u64 as TryFrom<i64>>::try_from(*total).unwrap_or(0),
        None if page.after.is_none() => 0,
        None => E::find().filter(filter).count(db).await?,
    };
    let rows = fetched
        .into_iter()
        .map(|(m, _)| {
            let key = order.key_of(&m)?;
            to_domain(m).map(|t| (key, t))
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok(Page::from_fetched(rows, page, total))
}

/// A page cursor's form of a time: RFC 3339 with nanoseconds, so it round-trips exactly.
fn key_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Reads a time from a page cursor.
fn parse_key_time(raw: &str) -> AppResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| AppError::bad_input("after", "not a valid cursor"))
}
