//! The chat sessions repository: sessions and their members.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    UpdateMany,
    sea_query::{Expr, SelectStatement},
};

use super::entities::{chat_session as session, chat_session_member as member};
use super::keyset::Keyset;
use crate::{
    domain::{
        AppointmentId, ChatSessionId, OrgId, PatientId, UserId,
        chat::{
            ChatCategory, ChatRole, ChatSession, ChatStatus, SessionKey, StatusReason,
            reason_from_db,
        },
        pagination::{Page, PageRequest},
    },
    error::AppResult,
};

fn to_domain(m: session::Model) -> AppResult<ChatSession> {
    Ok(ChatSession {
        org_id: OrgId::from_db(&m.org_id)?,
        counterpart_org_id: m
            .counterpart_org_id
            .as_deref()
            .map(OrgId::from_db)
            .transpose()?,
        is_group: m.is_group,
        read_only: m.read_only,
        image_url: m.image_url.clone(),
        category: ChatCategory::from_db(&m.category)?,
        created_by: UserId::from_db(&m.created_by)?,
        appointment_id: m
            .appointment_id
            .as_deref()
            .map(AppointmentId::from_db)
            .transpose()?,
        status: ChatStatus::from_db(&m.status)?,
        closed_by: m.closed_by.as_deref().map(UserId::from_db).transpose()?,
        close_reason: reason_from_db(m.close_reason.as_deref())?,
        id: ChatSessionId::from_db(&m.id)?,
        channel_type: m.channel_type,
        channel_id: m.channel_id,
        title: m.title,
        allowed_from: m.allowed_from,
        allowed_until: m.allowed_until,
        closed_at: m.closed_at,
        last_activity_at: m.last_activity_at,
        created_at: m.created_at,
    })
}

/// The row of a session member.
fn member_row(
    session: ChatSessionId,
    user: UserId,
    role: ChatRole,
    at: DateTime<Utc>,
) -> member::ActiveModel {
    member::ActiveModel {
        session_id: Set(session.as_string()),
        user_id: Set(user.as_string()),
        role: Set(role.as_str().to_owned()),
        created_at: Set(at),
    }
}

/// The ids of the sessions `user` is a member of, as a subquery.
fn sessions_of(user: UserId) -> SelectStatement {
    member::Entity::find()
        .select_only()
        .column(member::Column::SessionId)
        .filter(member::Column::UserId.eq(user.as_string()))
        .into_query()
}

/// The sessions of `org`, as owner or counterpart.
fn of_org(org: OrgId) -> Condition {
    Condition::any()
        .add(session::Column::OrgId.eq(org.as_string()))
        .add(session::Column::CounterpartOrgId.eq(org.as_string()))
}

/// Where an open session's window has an edge: a PENDING one opens at `allowed_from`, an ACTIVE
/// one ends at `allowed_until`.
const WINDOW_EDGES: [(ChatStatus, session::Column); 2] = [
    (ChatStatus::Pending, session::Column::AllowedFrom),
    (ChatStatus::Active, session::Column::AllowedUntil),
];

/// Inserts a session (its natural key is unique: a concurrent twin fails with CONFLICT) and its
/// members.
pub async fn insert(
    db: &impl super::Source,
    s: &ChatSession,
    natural_key: &SessionKey,
    members: &[(UserId, ChatRole)],
) -> AppResult<()> {
    let now = s.created_at;
    session::Entity::insert(session::ActiveModel {
        id: Set(s.id.as_string()),
        org_id: Set(s.org_id.as_string()),
        counterpart_org_id: Set(s.counterpart_org_id.map(|o| o.as_string())),
        category: Set(s.category.as_str().to_owned()),
        natural_key: Set(natural_key.to_string()),
        channel_type: Set(s.channel_type.clone()),
        channel_id: Set(s.channel_id.clone()),
        title: Set(s.title.clone()),
        image_url: Set(s.image_url.clone()),
        read_only: Set(s.read_only),
        is_group: Set(s.is_group),
        created_by: Set(s.created_by.as_string()),
        appointment_id: Set(s.appointment_id.map(|a| a.as_string())),
        case_id: Set(None),
        patient_id: Set(None),
        care_team_id: Set(None),
        allowed_from: Set(s.allowed_from),
        allowed_until: Set(s.allowed_until),
        status: Set(s.status.as_str().to_owned()),
        closed_at: Set(None),
        closed_by: Set(None),
        close_reason: Set(None),
        last_activity_at: Set(now),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    member::Entity::insert_many(
        members
            .iter()
            .map(|&(u, role)| member_row(s.id, u, role, now)),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Finds a session.
pub async fn find(db: &impl super::Source, id: ChatSessionId) -> AppResult<Option<ChatSession>> {
    session::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Finds a session by its natural key (e.g. `appointment:<id>`).
pub async fn find_by_key(
    db: &impl super::Source,
    key: &SessionKey,
) -> AppResult<Option<ChatSession>> {
    session::Entity::find()
        .filter(session::Column::NaturalKey.eq(key.to_string()))
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// The session of a provider channel, if caregraph made it.
pub async fn find_by_channel(
    db: &impl super::Source,
    channel_type: &str,
    channel_id: &str,
) -> AppResult<Option<ChatSession>> {
    session::Entity::find()
        .filter(session::Column::ChannelType.eq(channel_type))
        .filter(session::Column::ChannelId.eq(channel_id))
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// Sessions by id (for loaders).
pub async fn find_many(
    db: &impl super::Source,
    ids: &[ChatSessionId],
) -> AppResult<Vec<ChatSession>> {
    super::rows_in::<session::Entity, _>(db, session::Column::Id, ids, to_domain).await
}

/// Sessions of appointments (for loaders).
pub async fn of_appointments(
    db: &impl super::Source,
    ids: &[AppointmentId],
) -> AppResult<Vec<ChatSession>> {
    super::rows_in::<session::Entity, _>(db, session::Column::AppointmentId, ids, to_domain).await
}

/// The natural keys of sessions (a key caregraph did not write is left out).
pub async fn keys_of(
    db: &impl super::Source,
    ids: &[ChatSessionId],
) -> AppResult<Vec<(ChatSessionId, SessionKey)>> {
    super::rows_in::<session::Entity, _>(db, session::Column::Id, ids, |m| {
        Ok((
            ChatSessionId::from_db(&m.id)?,
            SessionKey::from_stored(&m.natural_key),
        ))
    })
    .await
    .map(|rows| {
        rows.into_iter()
            .filter_map(|(id, key)| key.map(|k| (id, k)))
            .collect()
    })
}

/// The members of many sessions.
pub async fn members_of(
    db: &impl super::Source,
    ids: &[ChatSessionId],
) -> AppResult<Vec<(ChatSessionId, UserId, ChatRole)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let select = member::Entity::find()
        .filter(member::Column::SessionId.is_in(ids.iter().map(ChatSessionId::as_string)))
        .order_by_asc(member::Column::CreatedAt)
        .order_by_asc(member::Column::UserId);
    super::columns::all(db, select)
        .await?
        .into_iter()
        .map(|m| {
            Ok((
                ChatSessionId::from_db(&m.session_id)?,
                UserId::from_db(&m.user_id)?,
                ChatRole::from_db(&m.role)?,
            ))
        })
        .collect()
}

/// The sessions among `ids` of which `user` is a member (one statement, no other member read).
pub async fn joined_by(
    db: &impl super::Source,
    ids: &[ChatSessionId],
    user: UserId,
) -> AppResult<Vec<ChatSessionId>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let statement = member::Entity::find()
        .select_only()
        .column(member::Column::SessionId)
        .filter(member::Column::UserId.eq(user.as_string()))
        .filter(member::Column::SessionId.is_in(ids.iter().map(ChatSessionId::as_string)))
        .build(db.get_database_backend());
    super::columns::rows(db, statement, |c| c.next::<String>())
        .await?
        .iter()
        .map(|id| ChatSessionId::from_db(id))
        .collect()
}

/// Closes a session unless it is closed; whether this call closed it.
pub async fn close(
    db: &impl super::Source,
    id: ChatSessionId,
    by: Option<UserId>,
    reason: StatusReason,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let update = session::Entity::update_many()
        .col_expr(
            session::Column::Status,
            Expr::value(ChatStatus::Closed.as_str()),
        )
        .col_expr(session::Column::ClosedAt, Expr::value(at))
        .col_expr(
            session::Column::ClosedBy,
            Expr::value(by.map(|u| u.as_string())),
        )
        .col_expr(session::Column::CloseReason, Expr::value(reason.as_str()));
    update_open(db, id, at, update).await
}

/// Moves a session from one status to another; whether it was in `from`.
pub async fn transition(
    db: &impl super::Source,
    session: &ChatSession,
    to: ChatStatus,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let mut update = session::Entity::update_many()
        .col_expr(session::Column::Status, Expr::value(to.as_str()))
        .filter(session::Column::Status.eq(session.status.as_str()));
    // The window read decided the change: a concurrent reschedule wins over it.
    if let Some(from) = session.allowed_from {
        update = update.filter(session::Column::AllowedFrom.eq(from));
    }
    update_open(db, session.id, at, update).await
}

/// Moves an open session's window (and its stored status); whether it was open.
pub async fn set_window(
    db: &impl super::Source,
    id: ChatSessionId,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    status: ChatStatus,
    at: DateTime<Utc>,
) -> AppResult<bool> {
    let update = session::Entity::update_many()
        .col_expr(session::Column::AllowedFrom, Expr::value(from))
        .col_expr(session::Column::AllowedUntil, Expr::value(until))
        .col_expr(session::Column::Status, Expr::value(status.as_str()));
    update_open(db, id, at, update).await
}

/// Runs `update` on the session if it is still open, stamping `updated_at`; whether it was open.
async fn update_open(
    db: &impl super::Source,
    id: ChatSessionId,
    at: DateTime<Utc>,
    update: UpdateMany<session::Entity>,
) -> AppResult<bool> {
    let update = update
        .col_expr(session::Column::UpdatedAt, Expr::value(at))
        .filter(session::Column::Id.eq(id.as_string()))
        .filter(session::Column::ClosedAt.is_null());
    Ok(super::update_one(db, update).await?)
}

/// Records activity (a message) for list order.
pub async fn touch(db: &impl super::Source, id: ChatSessionId, at: DateTime<Utc>) -> AppResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::LastActivityAt, Expr::value(at))
        .filter(session::Column::Id.eq(id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Sessions whose window opens (PENDING, `allowed_from <= now`) or ends (ACTIVE,
/// `allowed_until <= now`).
pub async fn due(
    db: &impl super::Source,
    now: DateTime<Utc>,
    limit: u64,
) -> AppResult<Vec<ChatSession>> {
    let mut reached = Condition::any();
    for (status, edge) in WINDOW_EDGES {
        reached = reached.add(
            Condition::all()
                .add(session::Column::Status.eq(status.as_str()))
                .add(edge.lte(now)),
        );
    }
    session::Entity::find()
        .filter(session::Column::ClosedAt.is_null())
        .filter(reached)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// When the next window opens or ends.
pub async fn next_due(db: &impl super::Source) -> AppResult<Option<DateTime<Utc>>> {
    let mut next = None;
    for (status, edge) in WINDOW_EDGES {
        let first: Option<DateTime<Utc>> = session::Entity::find()
            .select_only()
            .column(edge)
            .filter(session::Column::ClosedAt.is_null())
            .filter(session::Column::Status.eq(status.as_str()))
            .filter(edge.is_not_null())
            .order_by_asc(edge)
            .into_tuple()
            .one(db)
            .await?;
        next = next.into_iter().chain(first).min();
    }
    Ok(next)
}

/// A page of a user's sessions in an organisation, newest activity first.
pub async fn list_for_member(
    db: &impl super::Source,
    org: OrgId,
    user: UserId,
    category: Option<ChatCategory>,
    include_closed: bool,
    page: &PageRequest,
) -> AppResult<Page<ChatSession>> {
    let mut filter = Condition::all()
        .add(of_org(org))
        .add(session::Column::Id.in_subquery(sessions_of(user)));
    if let Some(c) = category {
        filter = filter.add(session::Column::Category.eq(c.as_str()));
    }
    if !include_closed {
        filter = filter.add(session::Column::Status.ne(ChatStatus::Closed.as_str()));
    }
    let order = Keyset::time(session::Column::LastActivityAt, session::Column::Id).descending();
    super::keyset::page::<session::Entity, _>(db, filter, order, page, to_domain).await
}

/// Stores a group's title, image and broadcast mode.
pub async fn update_group(
    db: &impl super::Source,
    id: ChatSessionId,
    title: Option<String>,
    image_url: Option<String>,
    read_only: bool,
    at: DateTime<Utc>,
) -> AppResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::Title, Expr::value(title))
        .col_expr(session::Column::ImageUrl, Expr::value(image_url))
        .col_expr(session::Column::ReadOnly, Expr::value(read_only))
        .col_expr(session::Column::UpdatedAt, Expr::value(at))
        .filter(session::Column::Id.eq(id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Adds members (those in stay as they are).
pub async fn add_members(
    db: &impl super::Source,
    id: ChatSessionId,
    users: &[(UserId, ChatRole)],
    at: DateTime<Utc>,
) -> AppResult<()> {
    let rows = users.iter().map(|&(u, role)| member_row(id, u, role, at));
    super::insert_new(
        db,
        rows,
        [member::Column::SessionId, member::Column::UserId],
    )
    .await?;
    Ok(())
}

/// Removes members.
pub async fn remove_members(
    db: &impl super::Source,
    id: ChatSessionId,
    users: &[UserId],
) -> AppResult<()> {
    member::Entity::delete_many()
        .filter(member::Column::SessionId.eq(id.as_string()))
        .filter(member::Column::UserId.is_in(users.iter().map(UserId::as_string)))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes a session and its members.
pub async fn delete(db: &impl super::Source, id: ChatSessionId) -> AppResult<()> {
    member::Entity::delete_many()
        .filter(member::Column::SessionId.eq(id.as_string()))
        .exec(db)
        .await?;
    session::Entity::delete_by_id(id.as_string())
        .exec(db)
        .await?;
    Ok(())
}

/// Which of `users` are or were members of a session of `org` (as owner or counterpart).
pub async fn users_in_org_sessions(
    db: &impl super::Source,
    org: OrgId,
    users: &[UserId],
) -> AppResult<Vec<UserId>> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let of_org = session::Entity::find()
        .select_only()
        .column(session::Column::Id)
        .filter(of_org(org))
        .into_query();
    let rows: Vec<String> = member::Entity::find()
        .select_only()
        .column(member::Column::UserId)
        .distinct()
        .filter(member::Column::UserId.is_in(users.iter().map(UserId::as_string)))
        .filter(member::Column::SessionId.in_subquery(of_org))
        .into_tuple()
        .all(db)
        .await?;
    rows.iter().map(|u| UserId::from_db(u)).collect()
}

/// Removes users from every session they are in.
pub async fn remove_users_everywhere(db: &impl super::Source, users: &[UserId]) -> AppResult<()> {
    member::Entity::delete_many()
        .filter(member::Column::UserId.is_in(users.iter().map(UserId::as_string)))
        .exec(db)
        .await?;
    Ok(())
}

/// The members of a session with when each joined.
pub async fn members_joined(
    db: &impl super::Source,
    id: ChatSessionId,
) -> AppResult<Vec<(UserId, DateTime<Utc>)>> {
    member::Entity::find()
        .filter(member::Column::SessionId.eq(id.as_string()))
        .all(db)
        .await?
        .into_iter()
        .map(|m| Ok((UserId::from_db(&m.user_id)?, m.created_at)))
        .collect()
}

/// Up to `limit` sessions (open or closed) `user` is a member of, by id after `after` (a page
/// of a walk over all of them).
pub async fn of_member(
    db: &impl super::Source,
    user: UserId,
    after: Option<ChatSessionId>,
    limit: u64,
) -> AppResult<Vec<ChatSession>> {
    let mut query =
        session::Entity::find().filter(session::Column::Id.in_subquery(sessions_of(user)));
    if let Some(after) = after {
        query = query.filter(session::Column::Id.gt(after.as_string()));
    }
    query
        .order_by_asc(session::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// The chats (open or closed) of a patient's appointments.
pub async fn of_patient_appointments(
    db: &impl super::Source,
    patient: PatientId,
) -> AppResult<Vec<ChatSession>> {
    let appointments = super::entities::appointment::Entity::find()
        .select_only()
        .column(super::entities::appointment::Column::Id)
        .filter(super::entities::appointment::Column::PatientId.eq(patient.as_string()))
        .into_query();
    session::Entity::find()
        .filter(session::Column::AppointmentId.in_subquery(appointments))
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}
