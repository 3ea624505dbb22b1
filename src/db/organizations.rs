//! The organisations repository: organisations and their memberships.

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait, LikeExpr},
};

use super::entities::{membership, organization};
use super::keyset::Keyset;
use crate::{
    domain::{
        Membership, OrgId, OrgRole, Organization, Slug, User, UserId,
        pagination::{Page, PageRequest},
    },
    error::AppResult,
};

/// The largest character, so that `[q, q + MAX)` is the range of strings starting with `q` in
/// byte order.
const PREFIX_END: char = '\u{10FFFF}';

/// The search columns of a member: lowercased given, family and display name, and all of it
/// with the email.
fn search_fields(user: &User) -> (String, String, String, String) {
    let given = user.given_name.to_lowercase();
    let family = user.family_name.to_lowercase();
    let display = user.display_name.to_lowercase();
    let text = format!("{given} {family} {display} {}", user.email.to_lowercase());
    (given, family, display, text)
}

fn org_to_domain(m: organization::Model) -> AppResult<Organization> {
    Ok(Organization {
        id: OrgId::from_db(&m.id)?,
        name: m.name,
        slug: m.slug,
        cross_org_messaging: m.cross_org_messaging,
        chat_activation_minutes: m.chat_activation_minutes,
        created_at: m.created_at,
    })
}

fn membership_to_domain(m: membership::Model) -> AppResult<Membership> {
    Ok(Membership {
        org_id: OrgId::from_db(&m.org_id)?,
        user_id: UserId::from_db(&m.user_id)?,
        role: OrgRole::from_db(&m.role)?,
        title: m.title,
        active: m.active,
        auditor: m.auditor,
    })
}

/// Inserts an organisation.
pub async fn insert(db: &impl super::Source, name: String, slug: &Slug) -> AppResult<Organization> {
    let model = organization::ActiveModel {
        id: Set(OrgId::new().as_string()),
        name: Set(name),
        slug: Set(slug.as_str().to_owned()),
        cross_org_messaging: Set(false),
        chat_activation_minutes: Set(None),
        created_at: Set(Utc::now()),
    };
    org_to_domain(
        organization::Entity::insert(model)
            .exec_with_returning(db)
            .await?,
    )
}

/// Finds an organisation by id.
pub async fn find(db: &impl super::Source, id: OrgId) -> AppResult<Option<Organization>> {
    organization::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(org_to_domain)
        .transpose()
}

/// Finds many organisations by id (for loaders).
pub async fn find_many(db: &impl super::Source, ids: &[OrgId]) -> AppResult<Vec<Organization>> {
    super::rows_in::<organization::Entity, _>(db, organization::Column::Id, ids, org_to_domain)
        .await
}

/// Whether a slug is taken.
pub async fn slug_taken(db: &impl super::Source, slug: &Slug) -> AppResult<bool> {
    Ok(organization::Entity::find()
        .filter(organization::Column::Slug.eq(slug.as_str()))
        .count(db)
        .await?
        > 0)
}

/// How many organisations exist (an empty database gets demo data).
pub async fn count(db: &impl super::Source) -> AppResult<u64> {
    Ok(organization::Entity::find().count(db).await?)
}

/// Changes an organisation's name, network-messaging switch and chat activation minutes.
pub async fn update(
    db: &impl super::Source,
    id: OrgId,
    name: Option<String>,
    cross_org_messaging: Option<bool>,
    chat_activation_minutes: Option<i32>,
) -> AppResult<()> {
    let mut update =
        organization::Entity::update_many().filter(organization::Column::Id.eq(id.as_string()));
    if let Some(name) = name {
        update = update.col_expr(organization::Column::Name, Expr::value(name));
    }
    if let Some(flag) = cross_org_messaging {
        update = update.col_expr(organization::Column::CrossOrgMessaging, Expr::value(flag));
    }
    if let Some(minutes) = chat_activation_minutes {
        update = update.col_expr(
            organization::Column::ChatActivationMinutes,
            Expr::value(minutes),
        );
    }
    update.exec(db).await?;
    Ok(())
}

/// The row of a new, active membership, with its search columns filled from the user.
pub fn membership_row(
    org_id: OrgId,
    user: &User,
    role: OrgRole,
    title: Option<String>,
) -> membership::ActiveModel {
    let (given, family, display, text) = search_fields(user);
    membership::ActiveModel {
        org_id: Set(org_id.as_string()),
        user_id: Set(user.id.as_string()),
        role: Set(role.as_str().to_owned()),
        title: Set(title),
        active: Set(true),
        auditor: Set(false),
        created_at: Set(Utc::now()),
        search_given: Set(given),
        search_family: Set(family),
        search_display: Set(display),
        search_text: Set(text),
        search_id: Set(rand::random::<i64>() & i64::MAX),
    }
}

/// Inserts a membership.
pub async fn insert_membership(
    db: &impl super::Source,
    org_id: OrgId,
    user: &User,
    role: OrgRole,
    title: Option<String>,
) -> AppResult<Membership> {
    membership_to_domain(
        membership::Entity::insert(membership_row(org_id, user, role, title))
            .exec_with_returning(db)
            .await?,
    )
}

/// Finds one membership.
pub async fn find_membership(
    db: &impl super::Source,
    org_id: OrgId,
    user_id: UserId,
) -> AppResult<Option<Membership>> {
    membership::Entity::find_by_id((org_id.as_string(), user_id.as_string()))
        .one(db)
        .await?
        .map(membership_to_domain)
        .transpose()
}

/// A user's memberships, oldest first.
pub async fn memberships_of_user(
    db: &impl super::Source,
    user_id: UserId,
) -> AppResult<Vec<Membership>> {
    memberships_of_users(db, &[user_id]).await
}

/// The memberships of many users (for loaders).
pub async fn memberships_of_users(
    db: &impl super::Source,
    users: &[UserId],
) -> AppResult<Vec<Membership>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let select = membership::Entity::find()
        .filter(membership::Column::UserId.is_in(users.iter().map(UserId::as_string)))
        .order_by_asc(membership::Column::CreatedAt);
    super::columns::all(db, select)
        .await?
        .into_iter()
        .map(membership_to_domain)
        .collect()
}

/// Stores a membership's role, title and active flag.
pub async fn update_membership(db: &impl super::Source, m: &Membership) -> AppResult<()> {
    membership::Entity::update_many()
        .col_expr(membership::Column::Role, Expr::value(m.role.as_str()))
        .col_expr(membership::Column::Title, Expr::value(m.title.clone()))
        .col_expr(membership::Column::Active, Expr::value(m.active))
        .col_expr(membership::Column::Auditor, Expr::value(m.auditor))
        .filter(membership::Column::OrgId.eq(m.org_id.as_string()))
        .filter(membership::Column::UserId.eq(m.user_id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// How many active owners an organisation has (the last one may not be demoted).
pub async fn active_owner_count(db: &impl super::Source, org_id: OrgId) -> AppResult<u64> {
    Ok(membership::Entity::find()
        .filter(membership::Column::OrgId.eq(org_id.as_string()))
        .filter(membership::Column::Role.eq(OrgRole::Owner.as_str()))
        .filter(membership::Column::Active.eq(true))
        .count(db)
        .await?)
}

/// A page of an organisation's members, ordered by display name.
pub async fn list_members(
    db: &impl super::Source,
    org_id: OrgId,
    include_inactive: bool,
    page: &PageRequest,
) -> AppResult<Page<Membership>> {
    let mut filter = Condition::all().add(membership::Column::OrgId.eq(org_id.as_string()));
    if !include_inactive {
        filter = filter.add(membership::Column::Active.eq(true));
    }
    let order = Keyset::text(
        membership::Column::SearchDisplay,
        membership::Column::UserId,
    );
    super::keyset::page::<membership::Entity, _>(db, filter, order, page, membership_to_domain)
        .await
}

/// Typeahead over active members but `exclude`, for `query` (already trimmed and lowercased),
/// in three index-backed phases until `limit` is filled:
///
/// 1. full names (`given family`, so also given names) starting with `query`, by name;
/// 2. family names starting with it, by family name then name;
/// 3. names or email containing it, by name ([`substring_matches`]).
///
/// Each phase is one range or index lookup with a `LIMIT`, so a large organisation costs no
/// more than a small one. Every condition is a bound value: the query is data.
pub async fn search_members(
    db: &impl super::Source,
    org_id: OrgId,
    exclude: UserId,
    query: &str,
    limit: u64,
) -> AppResult<Vec<Membership>> {
    let end = format!("{query}{PREFIX_END}");
    let in_range = |col: membership::Column| {
        Condition::all()
            .add(col.gte(query))
            .add(col.lt(end.as_str()))
    };
    let scope = Condition::all()
        .add(membership::Column::OrgId.eq(org_id.as_string()))
        .add(membership::Column::Active.eq(true))
        .add(membership::Column::UserId.ne(exclude.as_string()));
    let (display, family, user) = (
        membership::Column::SearchDisplay,
        membership::Column::SearchFamily,
        membership::Column::UserId,
    );
    let by_name = in_range(display);
    let by_family = in_range(family);
    let prefixes = Condition::any().add(by_name.clone()).add(by_family.clone());
    let phases = [
        (by_name.clone(), &[display, user][..]),
        (by_family.add(by_name.not()), &[family, display, user]),
    ];
    let mut found = Vec::new();
    for (condition, order) in phases {
        let missing = limit.saturating_sub(found.len() as u64);
        if missing == 0 {
            break;
        }
        let mut phase = membership::Entity::find().filter(scope.clone().add(condition));
        for &column in order {
            phase = phase.order_by_asc(column);
        }
        found.extend(phase.limit(missing).all(db).await?);
    }
    let missing = limit.saturating_sub(found.len() as u64);
    if missing > 0 {
        let not_prefix = prefixes.not();
        let contains = Condition::all()
            .add(contains_like(query))
            .add(not_prefix.clone());
        let indexed = substring(db, query).add(not_prefix);
        found.extend(substring_matches(db, scope, contains, indexed, missing).await?);
    }
    found.into_iter().map(membership_to_domain).collect()
}

/// How many members, in name order, the substring phase reads before it turns to the trigram
/// index: enough to fill a typeahead page whenever at least one member in a hundred matches.
const SUBSTRING_WINDOW: u64 = 1_000;

/// The substring phase: the first `limit` members of `scope` matching, by name.
///
/// A trigram index finds every match, and ordering them by name costs as many rows as there
/// are matches (thousands for `son.` in an organisation of 100,000). So the phase first reads
/// the first [`SUBSTRING_WINDOW`] members by name (one index range) and keeps those matching
/// `contains`: when that fills `limit`, they are the answer, since any other match sorts after
/// them. Only a rare query, whose matches are few, goes on to the trigram lookup (`indexed`).
async fn substring_matches(
    db: &impl super::Source,
    scope: Condition,
    contains: Condition,
    indexed: Condition,
    limit: u64,
) -> AppResult<Vec<membership::Model>> {
    use sea_orm::sea_query::{Asterisk, Order, Query};
    let (display, user) = (
        membership::Column::SearchDisplay,
        membership::Column::UserId,
    );
    let window = Query::select()
        .column(Asterisk)
        .from(membership::Entity)
        .cond_where(scope.clone())
        .order_by((membership::Entity, display), Order::Asc)
        .order_by((membership::Entity, user), Order::Asc)
        .limit(SUBSTRING_WINDOW)
        .to_owned();
    // The window keeps the table's name, so the conditions' qualified columns read from it.
    let in_window = Query::select()
        .column(Asterisk)
        .from_subquery(window, membership::Entity)
        .cond_where(contains)
        .order_by((membership::Entity, display), Order::Asc)
        .order_by((membership::Entity, user), Order::Asc)
        .limit(limit)
        .to_owned();
    let found = membership::Model::find_by_statement(db.get_database_backend().build(&in_window))
        .all(db)
        .await?;
    if found.len() as u64 >= limit {
        return Ok(found);
    }
    Ok(membership::Entity::find()
        .filter(scope.add(indexed))
        .order_by_asc(display)
        .order_by_asc(user)
        .limit(limit)
        .all(db)
        .await?)
}

/// Members whose names or email contain `query`, by `LIKE` (no index: for rows already few).
fn contains_like(query: &str) -> Condition {
    let pattern = format!("%{}%", escape_like(query));
    Condition::all()
        .add(Expr::col(membership::Column::SearchText).like(LikeExpr::new(pattern).escape('\\')))
}

/// Members whose names or email contain `query`. On SQLite a query of three or more characters
/// goes through the FTS5 trigram index as one quoted phrase (a quote inside is doubled); on
/// PostgreSQL `LIKE` uses the trigram index. Shorter queries scan the organisation's rows.
fn substring(db: &impl super::Source, query: &str) -> Condition {
    if db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite && query.chars().count() >= 3 {
        let phrase = format!("\"{}\"", query.replace('"', "\"\""));
        Condition::all().add(Expr::cust_with_values(
            r#""memberships"."search_id" IN (SELECT rowid FROM member_search WHERE member_search MATCH ?)"#,
            [phrase],
        ))
    } else {
        contains_like(query)
    }
}

/// Escapes `%`, `_` and `\` so that they match themselves in a `LIKE … ESCAPE '\'` pattern.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
