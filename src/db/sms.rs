//! The SMS repository: external chat members (people reached by phone number) and the
//! messages the local SMS gateway records.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use super::entities::{chat_external_member as member, local_sms_message as local};
use crate::{
    domain::{
        CareTeamMemberId, ChatSessionId, ExternalMemberId,
        sms::{ExternalChatMember, RecordedSms},
    },
    error::AppResult,
};

/// The most external members one number is matched against (an inbound SMS).
const BY_PHONE_MAX: u64 = 200;

fn to_domain(m: member::Model) -> AppResult<ExternalChatMember> {
    Ok(ExternalChatMember {
        id: ExternalMemberId::from_db(&m.id)?,
        session_id: ChatSessionId::from_db(&m.session_id)?,
        care_team_member_id: m
            .care_team_member_id
            .as_deref()
            .map(CareTeamMemberId::from_db)
            .transpose()?,
        name: m.name,
        phone_number: m.phone_number,
        opted_out: m.opted_out,
        last_relayed_at: m.last_relayed_at,
        created_at: m.created_at,
    })
}

/// Inserts an external member; `false` when the number is in the session already.
pub async fn insert(db: &impl super::Source, m: &ExternalChatMember) -> AppResult<bool> {
    let row = member::ActiveModel {
        id: Set(m.id.as_string()),
        session_id: Set(m.session_id.as_string()),
        name: Set(m.name.clone()),
        phone_number: Set(m.phone_number.clone()),
        opted_out: Set(m.opted_out),
        care_team_member_id: Set(m.care_team_member_id.map(|c| c.as_string())),
        last_relayed_at: Set(m.last_relayed_at),
        created_at: Set(m.created_at),
    };
    let inserted = super::insert_new(
        db,
        [row],
        [member::Column::SessionId, member::Column::PhoneNumber],
    )
    .await?;
    Ok(inserted == 1)
}

/// One external member.
pub async fn find(
    db: &impl super::Source,
    id: ExternalMemberId,
) -> AppResult<Option<ExternalChatMember>> {
    member::Entity::find_by_id(id.as_string())
        .one(db)
        .await?
        .map(to_domain)
        .transpose()
}

/// The external members of many sessions, oldest first.
pub async fn of_sessions(
    db: &impl super::Source,
    sessions: &[ChatSessionId],
) -> AppResult<Vec<ExternalChatMember>> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    member::Entity::find()
        .filter(member::Column::SessionId.is_in(sessions.iter().map(ChatSessionId::as_string)))
        .order_by_asc(member::Column::CreatedAt)
        .order_by_asc(member::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// Removes an external member of a session; whether there was one.
pub async fn remove(
    db: &impl super::Source,
    session: ChatSessionId,
    id: ExternalMemberId,
) -> AppResult<bool> {
    let delete = member::Entity::delete_many()
        .filter(member::Column::SessionId.eq(session.as_string()))
        .filter(member::Column::Id.eq(id.as_string()));
    Ok(super::delete_one(db, delete).await?)
}

/// The external members with a phone number, the one relayed to last first (then the newest).
pub async fn by_phone(db: &impl super::Source, phone: &str) -> AppResult<Vec<ExternalChatMember>> {
    let mut found = member::Entity::find()
        .filter(member::Column::PhoneNumber.eq(phone))
        .order_by_desc(member::Column::CreatedAt)
        .limit(BY_PHONE_MAX)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect::<AppResult<Vec<_>>>()?;
    // NULLs sort differently on SQLite and PostgreSQL: order here.
    found.sort_by(|a, b| {
        b.last_relayed_at
            .cmp(&a.last_relayed_at)
            .then(b.created_at.cmp(&a.created_at))
    });
    Ok(found)
}

/// Opts a number out of (or back into) every chat it is in; how many members changed.
pub async fn set_opted_out(
    db: &impl super::Source,
    phone: &str,
    opted_out: bool,
) -> AppResult<u64> {
    Ok(member::Entity::update_many()
        .col_expr(member::Column::OptedOut, Expr::value(opted_out))
        .filter(member::Column::PhoneNumber.eq(phone))
        .filter(member::Column::OptedOut.eq(!opted_out))
        .exec(db)
        .await?
        .rows_affected)
}

/// Notes that a message was relayed to a member at `at`.
pub async fn relayed(
    db: &impl super::Source,
    id: ExternalMemberId,
    at: DateTime<Utc>,
) -> AppResult<()> {
    member::Entity::update_many()
        .col_expr(member::Column::LastRelayedAt, Expr::value(at))
        .filter(member::Column::Id.eq(id.as_string()))
        .exec(db)
        .await?;
    Ok(())
}

/// Records a message of the local gateway.
pub async fn record_local(db: &impl super::Source, sms: &RecordedSms) -> AppResult<()> {
    local::Entity::insert(local::ActiveModel {
        id: Set(sms.id.clone()),
        reference: Set(sms.reference.clone()),
        to_number: Set(sms.to.clone()),
        from_number: Set(sms.from.clone()),
        body: Set(sms.body.clone()),
        created_at: Set(sms.created_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The latest `limit` messages the local gateway recorded for `reference`, oldest first.
pub async fn local_of(
    db: &impl super::Source,
    reference: &str,
    limit: u64,
) -> AppResult<Vec<RecordedSms>> {
    let mut rows: Vec<RecordedSms> = local::Entity::find()
        .filter(local::Column::Reference.eq(reference))
        .order_by_desc(local::Column::CreatedAt)
        .order_by_desc(local::Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|m| RecordedSms {
            id: m.id,
            reference: m.reference,
            to: m.to_number,
            from: m.from_number,
            body: m.body,
            created_at: m.created_at,
        })
        .collect();
    rows.reverse();
    Ok(rows)
}
