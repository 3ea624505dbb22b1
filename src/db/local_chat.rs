//! Storage of the local chat provider: channels, members and messages in caregraph's own
//! database. Every write is idempotent as the real providers' are.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, OnConflict, Query},
};
use serde_json::{Map, Value};

use super::entities::{
    local_chat_channel as channel, local_chat_member as member, local_chat_message as message,
    local_chat_user as user,
};

/// A stored message.
pub type MessageRow = message::Model;
/// A stored channel.
pub type ChannelRow = channel::Model;

/// Inserts or updates users.
pub async fn upsert_users(
    db: &impl super::Source,
    users: &[(String, String, Option<String>)],
) -> Result<(), sea_orm::DbErr> {
    // One row per id: PostgreSQL refuses an upsert that touches a row twice.
    let mut seen = std::collections::HashSet::new();
    let users: Vec<_> = users
        .iter()
        .filter(|(id, _, _)| seen.insert(id.clone()))
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    user::Entity::insert_many(users.iter().map(|(id, name, image)| user::ActiveModel {
        id: Set(id.clone()),
        name: Set(name.clone()),
        image: Set(image.clone()),
        created_at: Set(Utc::now()),
    }))
    .on_conflict(
        OnConflict::column(user::Column::Id)
            .update_columns([user::Column::Name, user::Column::Image])
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}

/// Deletes users and their memberships.
pub async fn delete_users(db: &impl super::Source, ids: &[String]) -> Result<(), sea_orm::DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    member::Entity::delete_many()
        .filter(member::Column::UserId.is_in(ids.iter().cloned()))
        .exec(db)
        .await?;
    user::Entity::delete_many()
        .filter(user::Column::Id.is_in(ids.iter().cloned()))
        .exec(db)
        .await?;
    Ok(())
}

/// A channel to create.
pub struct NewChannel<'a> {
    /// `type:id`.
    pub cid: String,
    /// Type.
    pub channel_type: &'a str,
    /// Id.
    pub channel_id: &'a str,
    /// Creator.
    pub created_by: &'a str,
    /// Name.
    pub name: Option<String>,
    /// Image.
    pub image: Option<String>,
    /// Custom data.
    pub metadata: &'a Map<String, Value>,
    /// Frozen.
    pub frozen: bool,
}

/// Creates a channel unless it exists.
pub async fn create_channel(
    db: &impl super::Source,
    c: NewChannel<'_>,
) -> Result<(), sea_orm::DbErr> {
    let now = Utc::now();
    let row = channel::ActiveModel {
        cid: Set(c.cid),
        channel_type: Set(c.channel_type.to_owned()),
        channel_id: Set(c.channel_id.to_owned()),
        created_by: Set(c.created_by.to_owned()),
        name: Set(c.name),
        image: Set(c.image),
        metadata: Set(Value::Object(c.metadata.clone()).to_string()),
        frozen: Set(c.frozen),
        created_at: Set(now),
        updated_at: Set(now),
    };
    super::insert_new(db, [row], [channel::Column::Cid]).await?;
    Ok(())
}

/// Finds a channel.
pub async fn find_channel(
    db: &impl super::Source,
    cid: &str,
) -> Result<Option<ChannelRow>, sea_orm::DbErr> {
    channel::Entity::find_by_id(cid.to_owned()).one(db).await
}

/// Stores a channel's custom data.
pub async fn set_metadata(
    db: &impl super::Source,
    cid: &str,
    metadata: &Map<String, Value>,
) -> Result<(), sea_orm::DbErr> {
    let metadata = Value::Object(metadata.clone()).to_string();
    set_channel_column(db, cid, channel::Column::Metadata, metadata).await
}

/// Sets a channel's frozen flag.
pub async fn set_frozen(
    db: &impl super::Source,
    cid: &str,
    frozen: bool,
) -> Result<(), sea_orm::DbErr> {
    set_channel_column(db, cid, channel::Column::Frozen, frozen).await
}

/// Sets one column of a channel alone, so that a concurrent change of another is not lost, and
/// stamps `updated_at`.
async fn set_channel_column(
    db: &impl super::Source,
    cid: &str,
    column: channel::Column,
    value: impl Into<sea_orm::Value>,
) -> Result<(), sea_orm::DbErr> {
    channel::Entity::update_many()
        .col_expr(column, Expr::value(value))
        .col_expr(channel::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(channel::Column::Cid.eq(cid))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes a channel with its members and messages; whether it existed.
pub async fn delete_channel(db: &impl super::Source, cid: &str) -> Result<bool, sea_orm::DbErr> {
    message::Entity::delete_many()
        .filter(message::Column::Cid.eq(cid))
        .exec(db)
        .await?;
    member::Entity::delete_many()
        .filter(member::Column::Cid.eq(cid))
        .exec(db)
        .await?;
    let delete = channel::Entity::delete_many().filter(channel::Column::Cid.eq(cid));
    super::delete_one(db, delete).await
}

/// Adds members (those already in stay as they are).
pub async fn add_members(
    db: &impl super::Source,
    cid: &str,
    users: &[String],
) -> Result<(), sea_orm::DbErr> {
    let rows = users.iter().map(|u| member::ActiveModel {
        cid: Set(cid.to_owned()),
        user_id: Set(u.clone()),
        last_read_seq: Set(0),
        created_at: Set(Utc::now()),
    });
    super::insert_new(db, rows, [member::Column::Cid, member::Column::UserId]).await?;
    Ok(())
}

/// Removes members.
pub async fn remove_members(
    db: &impl super::Source,
    cid: &str,
    users: &[String],
) -> Result<(), sea_orm::DbErr> {
    member::Entity::delete_many()
        .filter(member::Column::Cid.eq(cid))
        .filter(member::Column::UserId.is_in(users.iter().cloned()))
        .exec(db)
        .await?;
    Ok(())
}

/// The member ids of a channel.
pub async fn members(db: &impl super::Source, cid: &str) -> Result<Vec<String>, sea_orm::DbErr> {
    Ok(member::Entity::find()
        .filter(member::Column::Cid.eq(cid))
        .order_by_asc(member::Column::UserId)
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.user_id)
        .collect())
}

/// Posts a message unless one with this id exists in the channel; returns it.
pub async fn post(
    db: &impl super::Source,
    cid: &str,
    id: &str,
    user_id: Option<&str>,
    text: &str,
    system: bool,
    at: DateTime<Utc>,
) -> Result<MessageRow, sea_orm::DbErr> {
    let row = message::ActiveModel {
        id: Set(id.to_owned()),
        cid: Set(cid.to_owned()),
        user_id: Set(user_id.map(str::to_owned)),
        text: Set(text.to_owned()),
        system: Set(system),
        created_at: Set(at),
        ..Default::default()
    };
    super::insert_new(db, [row], [message::Column::Cid, message::Column::Id]).await?;
    message::Entity::find()
        .filter(message::Column::Cid.eq(cid))
        .filter(message::Column::Id.eq(id))
        .one(db)
        .await?
        .ok_or_else(|| sea_orm::DbErr::RecordNotFound("message just posted".into()))
}

/// A message of a channel by id.
pub async fn find_message(
    db: &impl super::Source,
    cid: &str,
    id: &str,
) -> Result<Option<MessageRow>, sea_orm::DbErr> {
    message::Entity::find()
        .filter(message::Column::Cid.eq(cid))
        .filter(message::Column::Id.eq(id))
        .one(db)
        .await
}

/// At most `limit` messages of a channel before `before_seq` (all when `None`), newest first.
pub async fn page(
    db: &impl super::Source,
    cid: &str,
    limit: u64,
    before_seq: Option<i64>,
) -> Result<Vec<MessageRow>, sea_orm::DbErr> {
    let mut query = message::Entity::find().filter(message::Column::Cid.eq(cid));
    if let Some(seq) = before_seq {
        query = query.filter(message::Column::Seq.lt(seq));
    }
    query
        .order_by_desc(message::Column::Seq)
        .limit(limit)
        .all(db)
        .await
}

/// Marks everything up to `seq` read for a member.
pub async fn mark_read(
    db: &impl super::Source,
    cid: &str,
    user_id: &str,
    seq: i64,
) -> Result<(), sea_orm::DbErr> {
    member::Entity::update_many()
        .col_expr(member::Column::LastReadSeq, Expr::value(seq))
        .filter(member::Column::Cid.eq(cid))
        .filter(member::Column::UserId.eq(user_id))
        .filter(member::Column::LastReadSeq.lt(seq))
        .exec(db)
        .await?;
    Ok(())
}

/// The latest `limit` messages of a channel, oldest first.
pub async fn recent(
    db: &impl super::Source,
    cid: &str,
    limit: u64,
) -> Result<Vec<MessageRow>, sea_orm::DbErr> {
    let mut rows = message::Entity::find()
        .filter(message::Column::Cid.eq(cid))
        .order_by_desc(message::Column::Seq)
        .limit(limit)
        .all(db)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// What a batch read returns per channel: the channel, member count, last message, unread.
pub type ChannelRead = (ChannelRow, u32, Option<MessageRow>, u32);

/// Reads many channels for one user in at most five statements, whatever their number.
pub async fn read(
    db: &impl super::Source,
    cids: &[String],
    for_user: &str,
) -> Result<Vec<ChannelRead>, sea_orm::DbErr> {
    if cids.is_empty() {
        return Ok(Vec::new());
    }
    let channels = channel::Entity::find()
        .filter(channel::Column::Cid.is_in(cids.iter().cloned()))
        .all(db)
        .await?;
    let members = member::Entity::find()
        .filter(member::Column::Cid.is_in(cids.iter().cloned()))
        .all(db)
        .await?;
    let last_seqs: Vec<i64> = message::Entity::find()
        .select_only()
        .column_as(message::Column::Seq.max(), "max_seq")
        .filter(message::Column::Cid.is_in(cids.iter().cloned()))
        .group_by(message::Column::Cid)
        .into_tuple::<Option<i64>>()
        .all(db)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let last: HashMap<String, MessageRow> = if last_seqs.is_empty() {
        HashMap::new()
    } else {
        message::Entity::find()
            .filter(message::Column::Seq.is_in(last_seqs))
            .all(db)
            .await?
            .into_iter()
            .map(|m| (m.cid.clone(), m))
            .collect()
    };
    // Unread: other people's messages after the user's read mark, counted by the database in
    // one statement (one row per channel, however many messages are unread).
    let mut unread: HashMap<String, u32> = HashMap::new();
    if members.iter().any(|m| m.user_id == for_user) {
        let query = Query::select()
            .column((message::Entity, message::Column::Cid))
            .expr(Func::count(Expr::col((
                message::Entity,
                message::Column::Seq,
            ))))
            .from(message::Entity)
            .inner_join(
                member::Entity,
                Expr::col((member::Entity, member::Column::Cid))
                    .equals((message::Entity, message::Column::Cid)),
            )
            .and_where(Expr::col((member::Entity, member::Column::UserId)).eq(for_user))
            .and_where(
                Expr::col((message::Entity, message::Column::Cid)).is_in(cids.iter().cloned()),
            )
            .and_where(
                Expr::col((message::Entity, message::Column::Seq))
                    .gt(Expr::col((member::Entity, member::Column::LastReadSeq))),
            )
            .and_where(Expr::col((message::Entity, message::Column::UserId)).is_not_null())
            .and_where(Expr::col((message::Entity, message::Column::UserId)).ne(for_user))
            .group_by_col((message::Entity, message::Column::Cid))
            .to_owned();
        for row in db.query_all(&query).await? {
            let cid: String = row.try_get_by_index(0)?;
            let n: i64 = row.try_get_by_index(1)?;
            unread.insert(cid, u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for m in &members {
        *counts.entry(m.cid.as_str()).or_default() += 1;
    }
    let counts: HashMap<String, u32> = counts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Ok(channels
        .into_iter()
        .map(|c| {
            let n = counts.get(&c.cid).copied().unwrap_or(0);
            let l = last.get(&c.cid).cloned();
            let u = unread.get(&c.cid).copied().unwrap_or(0);
            (c, n, l, u)
        })
        .collect())
}
