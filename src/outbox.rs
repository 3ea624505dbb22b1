//! The outbox: every side effect at the chat provider that follows a change in caregraph, and
//! every SMS relayed to an external chat member, is written as a row in the same database
//! transaction as the change, with an idempotency key, and delivered by a worker that retries
//! with backoff until it succeeds, or marks the row dead after `CAREGRAPH_OUTBOX_MAX_ATTEMPTS`
//! (visible to admins and in metrics).
//!
//! Rows of one partition (one channel, the user directory, one user's token revocations, or
//! one SMS recipient) are delivered in order, one at a time; partitions proceed in parallel. A
//! row is claimed with a lease, so a process that dies mid-delivery loses nothing: the lease
//! expires and another worker delivers it. Delivery is at least once, and every chat operation
//! is idempotent at the provider, so the effect happens once. An SMS has no idempotency at the
//! gateway: its row (one per message and recipient, by key) is marked done once the gateway
//! accepted it, so it is sent again only if the process dies between the two.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use rand::Rng;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, OnConflict},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    backoff::Backoff,
    clock::SharedClock,
    db::entities::outbox,
    providers::{
        chat::{ChannelRef, ChannelSpec, ChatProvider, ChatUser, ProviderError, SystemMessage},
        http::single_attempt,
    },
};

/// A side effect at the chat provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Create or update users.
    UpsertUsers {
        /// The users.
        users: Vec<ChatUser>,
    },
    /// Delete users.
    DeleteUsers {
        /// Their ids.
        user_ids: Vec<String>,
    },
    /// Create (or get) a channel, upserting its members first (so it never waits on another
    /// partition).
    CreateChannel {
        /// The channel.
        spec: ChannelSpec,
        /// The members and creator as the provider should know them.
        users: Vec<ChatUser>,
    },
    /// Set and unset custom data.
    UpdateMetadata {
        /// The channel.
        channel: ChannelRef,
        /// Keys to set.
        set: Map<String, Value>,
        /// Keys to remove.
        unset: Vec<String>,
    },
    /// Add members, upserting them first.
    AddMembers {
        /// The channel.
        channel: ChannelRef,
        /// The new members.
        users: Vec<ChatUser>,
        /// A system message to post with it.
        message: Option<SystemMessage>,
    },
    /// Remove members.
    RemoveMembers {
        /// The channel.
        channel: ChannelRef,
        /// Their ids.
        user_ids: Vec<String>,
        /// A system message to post with it.
        message: Option<SystemMessage>,
    },
    /// Freeze or unfreeze.
    SetFrozen {
        /// The channel.
        channel: ChannelRef,
        /// Frozen or not.
        frozen: bool,
    },
    /// Post a system message.
    SystemMessage {
        /// The channel.
        channel: ChannelRef,
        /// The message (its id makes it idempotent).
        message: SystemMessage,
    },
    /// Delete a channel.
    DeleteChannel {
        /// The channel.
        channel: ChannelRef,
    },
    /// Revoke a user's chat tokens issued before an instant (a deactivated member's apps lose
    /// their provider session where the provider can do that).
    RevokeTokens {
        /// caregraph's user id.
        user_id: String,
        /// Tokens issued before this instant stop working; later ones keep working.
        issued_before: DateTime<Utc>,
    },
    /// Relay a chat message by SMS to an external member (delivered by the [`SmsRelay`], which
    /// looks the number up and checks the member may still receive it when it sends).
    SendSms {
        /// The external member.
        member_id: String,
        /// Their chat session.
        session_id: String,
        /// The chat message relayed.
        message_id: String,
        /// The text, with its prefix.
        body: String,
    },
}

/// Delivers [`Operation::SendSms`] rows (the SMS side of the services, set once at start).
#[async_trait::async_trait]
pub trait SmsRelay: Send + Sync {
    /// Sends one relayed message, or nothing when its member is gone, opted out or no longer
    /// entitled (that is a success: the row is done).
    async fn relay(
        &self,
        member_id: &str,
        session_id: &str,
        message_id: &str,
        body: &str,
    ) -> Result<(), ProviderError>;
}

impl Operation {
    /// Rows with the same partition key are delivered in order.
    pub fn partition_key(&self) -> String {
        match self {
            Self::UpsertUsers { .. } | Self::DeleteUsers { .. } => "users".into(),
            // One partition per user: a refused revocation holds back only that user's later
            // revocations, never the user directory.
            Self::RevokeTokens { user_id, .. } => format!("revoke_tokens:{user_id}"),
            // One partition per recipient: their messages arrive in order, and a number that
            // refuses holds back only its own.
            Self::SendSms { member_id, .. } => format!("sms:{member_id}"),
            Self::CreateChannel { spec, .. } => spec.channel.cid(),
            Self::UpdateMetadata { channel, .. }
            | Self::AddMembers { channel, .. }
            | Self::RemoveMembers { channel, .. }
            | Self::SetFrozen { channel, .. }
            | Self::SystemMessage { channel, .. }
            | Self::DeleteChannel { channel } => channel.cid(),
        }
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::UpsertUsers { .. } => "upsert_users",
            Self::DeleteUsers { .. } => "delete_users",
            Self::CreateChannel { .. } => "create_channel",
            Self::UpdateMetadata { .. } => "update_metadata",
            Self::AddMembers { .. } => "add_members",
            Self::RemoveMembers { .. } => "remove_members",
            Self::SetFrozen { .. } => "set_frozen",
            Self::SystemMessage { .. } => "system_message",
            Self::DeleteChannel { .. } => "delete_channel",
            Self::RevokeTokens { .. } => "revoke_tokens",
            Self::SendSms { .. } => "send_sms",
        }
    }

    /// Carries the operation out at the provider.
    pub async fn apply(&self, provider: &dyn ChatProvider) -> Result<(), ProviderError> {
        match self {
            Self::UpsertUsers { users } => provider.upsert_users(users).await,
            Self::DeleteUsers { user_ids } => provider.delete_users(user_ids).await,
            Self::CreateChannel { spec, users } => {
                if !users.is_empty() {
                    provider.upsert_users(users).await?;
                }
                provider.create_channel(spec).await
            }
            Self::UpdateMetadata {
                channel,
                set,
                unset,
            } => provider.update_metadata(channel, set, unset).await,
            Self::AddMembers {
                channel,
                users,
                message,
            } => {
                provider.upsert_users(users).await?;
                let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
                provider.add_members(channel, &ids, message.as_ref()).await
            }
            Self::RemoveMembers {
                channel,
                user_ids,
                message,
            } => {
                provider
                    .remove_members(channel, user_ids, message.as_ref())
                    .await
            }
            Self::SetFrozen { channel, frozen } => provider.set_frozen(channel, *frozen).await,
            Self::SystemMessage { channel, message } => {
                provider.send_system_message(channel, message).await
            }
            Self::DeleteChannel { channel } => provider.delete_channel(channel).await,
            Self::RevokeTokens {
                user_id,
                issued_before,
            } => provider.revoke_tokens(user_id, *issued_before).await,
            Self::SendSms { .. } => Err(ProviderError::Rejected {
                status: 0,
                message: "an SMS goes through the outbox's SMS relay".into(),
            }),
        }
    }
}

/// The condition that a row is the oldest undelivered row of its partition. A dead row holds its
/// partition: later rows wait until an admin retries it, so effects never apply out of order.
const HEAD_OF_PARTITION: &str = r#""outbox"."seq" = (SELECT MIN("o2"."seq") FROM "outbox" "o2" WHERE "o2"."partition_key" = "outbox"."partition_key" AND "o2"."status" IN ('pending', 'dead'))"#;

/// Row states.
pub mod status {
    /// Waiting for delivery.
    pub const PENDING: &str = "pending";
    /// Delivered.
    pub const DONE: &str = "done";
    /// Given up on; an admin may retry it.
    pub const DEAD: &str = "dead";
}

/// One row to write: an idempotency key (a repeat of the key writes nothing) and the operation.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Unique per effect, e.g. `case:<id>:create`.
    pub key: String,
    /// The organisation whose admins see the row if it dies.
    pub org_id: Option<String>,
    /// The effect.
    pub op: Operation,
}

impl Entry {
    /// An entry on behalf of an organisation.
    pub fn new(key: impl Into<String>, org_id: Option<String>, op: Operation) -> Self {
        Self {
            key: key.into(),
            org_id,
            op,
        }
    }
}

/// The entry that revokes `user_id`'s chat tokens issued before `issued_before`, on behalf of
/// `org_id` (whose admins see the row if it dies); write it in the transaction that deactivates
/// the user. The key names the user and the instant (to the millisecond), so a retried request
/// writes one row and a later deactivation a new one. Its partition is the user's own
/// (`revoke_tokens:<user_id>`): revocations of one user go out in order, independently of the
/// user directory and of channels.
pub fn revoke_tokens_entry(
    user_id: impl Into<String>,
    org_id: Option<String>,
    issued_before: DateTime<Utc>,
) -> Entry {
    let user_id = user_id.into();
    Entry::new(
        format!(
            "user:{user_id}:revoke_tokens:{}",
            issued_before.timestamp_millis()
        ),
        org_id,
        Operation::RevokeTokens {
            user_id,
            issued_before,
        },
    )
}

/// Writes entries in the caller's transaction; returns their keys (an existing key is skipped,
/// so retried requests never duplicate an effect).
pub async fn enqueue(
    db: &impl crate::db::Source,
    entries: &[Entry],
    now: DateTime<Utc>,
) -> Result<Vec<String>, sea_orm::DbErr> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let rows = entries
        .iter()
        .map(|e| {
            Ok(outbox::ActiveModel {
                id: Set(uuid::Uuid::now_v7().to_string()),
                idempotency_key: Set(e.key.clone()),
                org_id: Set(e.org_id.clone()),
                partition_key: Set(e.op.partition_key()),
                operation: Set(serde_json::to_string(&e.op)
                    .map_err(|err| sea_orm::DbErr::Custom(err.to_string()))?),
                status: Set(status::PENDING.into()),
                attempts: Set(0),
                next_attempt_at: Set(now),
                locked_until: Set(None),
                last_error: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
    // On PostgreSQL a sequence number is taken at insert, not at commit: serialise writers of a
    // partition until commit, so that rows of one partition are numbered in commit order.
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        let mut partitions: Vec<String> = entries.iter().map(|e| e.op.partition_key()).collect();
        partitions.sort();
        partitions.dedup();
        for p in partitions {
            db.execute_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                [p.into()],
            ))
            .await?;
        }
    }
    // One row per statement keeps the sequence in the order given.
    for row in rows {
        outbox::Entity::insert(row)
            .on_conflict(
                OnConflict::column(outbox::Column::IdempotencyKey)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(entries.iter().map(|e| e.key.clone()).collect())
}

/// Worker settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Attempts before a row is dead.
    pub max_attempts: i32,
    /// The wait before a retry: the first retry waits twice `base`, doubling from there.
    pub backoff: Backoff,
    /// How long a claim holds without a heartbeat before another worker may take the row (the
    /// holder renews it every third of this while it delivers).
    pub lease: Duration,
    /// Partitions delivered at once.
    pub concurrency: usize,
    /// How often the worker looks when nobody wakes it.
    pub poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(300)),
            lease: Duration::from_secs(10),
            concurrency: 8,
            poll: Duration::from_secs(1),
        }
    }
}

/// Counts for metrics and admins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Waiting.
    pub pending: u64,
    /// Given up.
    pub dead: u64,
    /// How long the oldest waiting row has waited (zero when none waits).
    pub oldest_pending_age: Duration,
}

/// The outbox: writes rows, delivers them, reports on them.
#[derive(Clone)]
pub struct Outbox {
    db: crate::db::Db,
    provider: Arc<dyn ChatProvider>,
    clock: SharedClock,
    settings: Settings,
    /// What every clone shares: the worker's wake-up and the SMS relay.
    shared: Arc<Shared>,
    delivered_late: tokio::sync::broadcast::Sender<String>,
    /// When this process's outbox started (rows older than this were left by another).
    started: DateTime<Utc>,
}

/// What every clone of an [`Outbox`] shares (one allocation, so the handle stays small).
#[derive(Default)]
struct Shared {
    /// Wakes the worker.
    wake: Notify,
    /// Delivers SMS rows (set once the services exist).
    sms: std::sync::OnceLock<Arc<dyn SmsRelay>>,
}

/// Where one outbox row stands, for those who wait on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowState {
    /// Not tried yet, or being tried now.
    Pending,
    /// Tried and failed; tried again at `retry_at`.
    Retrying {
        /// The next attempt.
        retry_at: DateTime<Utc>,
    },
    /// Failed for good (an admin may queue it again).
    Dead,
    /// Delivered (or no such row: delivered and pruned, or never written).
    Done,
}

/// A row that may be claimed at `now`: pending, due (or `asked` for now), and not leased to a
/// worker.
fn claimable(now: DateTime<Utc>, asked: bool) -> Condition {
    let due = if asked {
        Condition::all()
    } else {
        Condition::all().add(outbox::Column::NextAttemptAt.lte(now))
    };
    Condition::all()
        .add(outbox::Column::Status.eq(status::PENDING))
        .add(due)
        .add(
            Condition::any()
                .add(outbox::Column::LockedUntil.is_null())
                .add(outbox::Column::LockedUntil.lt(now)),
        )
}

/// The longest one delivery attempt may run (its lease kept alive by the heartbeat meanwhile).
const DELIVERY_BUDGET: Duration = Duration::from_secs(60);

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(60))
}

impl Outbox {
    /// Builds the outbox over `provider`.
    pub fn new(
        db: crate::db::Db,
        provider: Arc<dyn ChatProvider>,
        clock: SharedClock,
        settings: Settings,
    ) -> Self {
        Self {
            db,
            provider,
            // At the precision both databases store, as rows' `created_at` are read back.
            started: crate::domain::care::stored_precision(clock.now()),
            clock,
            settings,
            shared: Arc::default(),
            delivered_late: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Sets what delivers SMS rows (once; every clone of this outbox shares it).
    pub fn set_sms_relay(&self, relay: Arc<dyn SmsRelay>) {
        let _ = self.shared.sms.set(relay);
    }

    /// Carries an operation out: SMS through the relay, the rest at the chat provider.
    async fn apply(&self, op: &Operation) -> Result<(), ProviderError> {
        match op {
            Operation::SendSms {
                member_id,
                session_id,
                message_id,
                body,
            } => match self.shared.sms.get() {
                Some(relay) => relay.relay(member_id, session_id, message_id, body).await,
                None => Err(ProviderError::Unavailable("no SMS relay yet".into())),
            },
            other => other.apply(self.provider.as_ref()).await,
        }
    }

    /// The keys of rows this process delivers late: after a failed attempt, or left by a
    /// process that stopped (a bounded buffer: a listener that falls behind misses keys, and is
    /// told so). A row delivered on its first attempt by the process that wrote it is not
    /// announced: its caller saw the outcome.
    pub fn delivered_late(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.delivered_late.subscribe()
    }

    /// Where each of `keys` stands, in one statement; keys without a row are `Done`.
    pub async fn states(&self, keys: &[String]) -> Result<Vec<(String, RowState)>, sea_orm::DbErr> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = outbox::Entity::find()
            .filter(outbox::Column::IdempotencyKey.is_in(keys.iter().cloned()))
            .all(&self.db)
            .await?;
        Ok(keys
            .iter()
            .map(|key| {
                let state = match rows.iter().find(|r| r.idempotency_key == *key) {
                    Some(r) if r.status == status::DEAD => RowState::Dead,
                    Some(r) if r.status == status::PENDING && r.attempts > 0 => {
                        RowState::Retrying {
                            retry_at: r.next_attempt_at,
                        }
                    }
                    Some(r) if r.status == status::PENDING => RowState::Pending,
                    _ => RowState::Done,
                };
                (key.clone(), state)
            })
            .collect())
    }

    /// The provider rows are delivered to.
    pub fn provider(&self) -> &Arc<dyn ChatProvider> {
        &self.provider
    }

    /// Wakes the worker (after a transaction with new rows committed).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Delivers these keys now (the caller waits for its own effects): the first round takes
    /// them even when a failed attempt scheduled them for later (someone is asking now), later
    /// rounds keep to the schedule; what fails stays for the worker. Returns whether every key
    /// is delivered.
    pub async fn deliver_now(&self, keys: &[String]) -> Result<bool, sea_orm::DbErr> {
        if keys.is_empty() {
            return Ok(true);
        }
        // Deliver in rounds: a key may wait behind earlier rows of its partition, or be in the
        // hands of the worker right now (then wait a little for its outcome).
        let patience = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut rounds = keys.len().max(1) * 2;
        let mut first = true;
        while rounds > 0 {
            let delivered = self.round(Some(keys), first).await?;
            first = false;
            let open = outbox::Entity::find()
                .filter(outbox::Column::IdempotencyKey.is_in(keys.iter().cloned()))
                .filter(outbox::Column::Status.eq(status::PENDING))
                .all(&self.db)
                .await?;
            if open.is_empty() {
                // Delivered only if none of them died.
                let dead = outbox::Entity::find()
                    .filter(outbox::Column::IdempotencyKey.is_in(keys.iter().cloned()))
                    .filter(outbox::Column::Status.eq(status::DEAD))
                    .count(&self.db)
                    .await?;
                return Ok(dead == 0);
            }
            if delivered == 0 {
                let now = self.clock.now();
                let held_elsewhere = open.iter().any(|r| r.locked_until.is_some_and(|l| l > now));
                if held_elsewhere && tokio::time::Instant::now() < patience {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    continue;
                }
                break;
            }
            rounds -= 1;
        }
        self.wake();
        Ok(false)
    }

    /// Runs until `stop` is cancelled: delivers due rows, sleeps until woken or the poll period.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(provider = self.provider.name(), "outbox worker started");
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                last_prune = Some(tokio::time::Instant::now());
                match self.prune(Duration::from_secs(7 * 86_400)).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(rows = n, "pruned delivered outbox rows older than 7 days")
                    }
                    Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
                }
            }
            match self.round(None, false).await {
                Ok(n) if n > 0 && !stop.is_cancelled() => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox round failed"),
            }
            // Sleep until the earliest retry is due (a backed-off row must not wait a whole poll
            // period), a new row wakes the worker, or the poll period passes.
            let due = self.next_due().await.ok().flatten();
            if !crate::backoff::rest(
                &stop,
                &self.shared.wake,
                due,
                self.clock.now(),
                self.settings.poll,
            )
            .await
            {
                break;
            }
        }
        tracing::info!("outbox worker stopped");
    }

    /// When the earliest pending partition head is due (rows behind a head wait for it).
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, sea_orm::DbErr> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Status.eq(status::PENDING))
            .filter(Expr::cust(HEAD_OF_PARTITION))
            .order_by_asc(outbox::Column::NextAttemptAt)
            .one(&self.db)
            .await?
            .map(|row| match row.locked_until {
                Some(lease) if lease > row.next_attempt_at => lease,
                _ => row.next_attempt_at,
            }))
    }

    /// Claims due partition heads (optionally only some keys, due or not when `asked`) and
    /// delivers them; returns how many
    /// rows it finished (delivered or dead).
    async fn round(&self, only: Option<&[String]>, asked: bool) -> Result<usize, sea_orm::DbErr> {
        let now = self.clock.now();
        let mut query = outbox::Entity::find()
            .filter(claimable(now, asked))
            .filter(Expr::cust(HEAD_OF_PARTITION));
        if let Some(keys) = only {
            query = query.filter(outbox::Column::IdempotencyKey.is_in(keys.iter().cloned()));
        }
        // Claim no more than can be delivered at once, so no lease runs down in a queue.
        let due = query
            .order_by_asc(outbox::Column::Seq)
            .limit(self.settings.concurrency as u64)
            .all(&self.db)
            .await?;
        let mut claimed = Vec::new();
        for row in due {
            // The lease's expiry, at the precision both databases store, doubles as this
            // claim's token: only the holder may write the outcome.
            let lease_until = self.lease_from(now);
            let lease = outbox::Entity::update_many()
                .col_expr(outbox::Column::LockedUntil, Expr::value(lease_until))
                .filter(outbox::Column::Seq.eq(row.seq))
                .filter(claimable(now, asked))
                .exec(&self.db)
                .await?;
            if lease.rows_affected == 1 {
                claimed.push((row, lease_until));
            }
        }
        let finished = stream::iter(claimed)
            .map(|(row, lease)| {
                // Taken before its retry was due because someone asked: a failure then costs
                // neither an attempt nor the schedule.
                let early = row.next_attempt_at > now;
                self.deliver(row, lease, early)
            })
            .buffer_unordered(self.settings.concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut done = 0;
        for result in finished {
            done += usize::from(result?);
        }
        Ok(done)
    }

    /// A lease expiring `settings.lease` after `now` (with jitter below a second, so two
    /// claims never share a token), at the precision both databases store.
    fn lease_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        crate::domain::care::stored_precision(
            now + chrono(self.settings.lease)
                + chrono::Duration::microseconds(rand::rng().random_range(0..1_000_000)),
        )
    }

    /// Renews a lease this worker holds; the new lease, or `None` when another worker took
    /// the row (the holder then stops writing to it).
    async fn renew(
        &self,
        seq: i64,
        lease: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, sea_orm::DbErr> {
        let renewed = self.lease_from(self.clock.now());
        let done = outbox::Entity::update_many()
            .col_expr(outbox::Column::LockedUntil, Expr::value(renewed))
            .filter(outbox::Column::Seq.eq(seq))
            .filter(outbox::Column::LockedUntil.eq(lease))
            .exec(&self.db)
            .await?;
        Ok((done.rows_affected == 1).then_some(renewed))
    }

    /// Delivers one claimed row; whether it finished (delivered or dead). While the provider
    /// call runs, a heartbeat renews the lease every third of its length, so the lease can be
    /// short (a crashed holder's rows are taken over within one lease) while a slow call keeps
    /// its row; a call is cut off after [`DELIVERY_BUDGET`]. The outcome is written only while
    /// the lease is still this worker's.
    async fn deliver(
        &self,
        row: outbox::Model,
        mut lease: DateTime<Utc>,
        early: bool,
    ) -> Result<bool, sea_orm::DbErr> {
        let op: Result<Operation, _> = serde_json::from_str(&row.operation);
        let attempts = row.attempts + 1;
        let result = match &op {
            // The outbox owns the retry schedule: each provider call is tried once here.
            Ok(op) => {
                let call = tokio::time::timeout(DELIVERY_BUDGET, single_attempt(self.apply(op)));
                tokio::pin!(call);
                let beat = (self.settings.lease / 3).max(Duration::from_millis(100));
                let mut heartbeat =
                    tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
                loop {
                    tokio::select! {
                        outcome = &mut call => {
                            break outcome.unwrap_or_else(|_| {
                                Err(ProviderError::Unavailable("the delivery took too long".into()))
                            });
                        }
                        _ = heartbeat.tick() => match self.renew(row.seq, lease).await {
                            Ok(Some(renewed)) => lease = renewed,
                            Ok(None) => {
                                tracing::warn!(key = %row.idempotency_key, "outbox lease was lost; another worker owns the row");
                                return Ok(false);
                            }
                            // The call goes on: the outcome is written only under this
                            // worker's lease, so a missed renewal costs at most a repeat.
                            Err(e) => tracing::warn!(key = %row.idempotency_key, error = %e, "outbox lease renewal failed"),
                        },
                    }
                }
            }
            Err(e) => Err(ProviderError::Rejected {
                status: 0,
                message: format!("unreadable operation: {e}"),
            }),
        };
        let now = self.clock.now();
        let name = op.as_ref().map_or("unknown", Operation::name);
        let counted = if early && result.is_err() {
            row.attempts
        } else {
            attempts
        };
        let mut update = outbox::Entity::update_many()
            .col_expr(outbox::Column::Attempts, Expr::value(counted))
            .col_expr(
                outbox::Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
            .filter(outbox::Column::Seq.eq(row.seq))
            .filter(outbox::Column::LockedUntil.eq(lease));
        let delivered = result.is_ok();
        let finished = match result {
            Ok(()) => {
                tracing::debug!(op = name, key = %row.idempotency_key, "outbox row delivered");
                update = update.col_expr(outbox::Column::Status, Expr::value(status::DONE));
                true
            }
            Err(e) if early => {
                // An early try failed: the row keeps its attempts and its retry time.
                let message: String = e.to_string().chars().take(1000).collect();
                update = update.col_expr(outbox::Column::LastError, Expr::value(message));
                tracing::debug!(op = name, key = %row.idempotency_key, error = %e, "an early delivery asked for failed; the schedule stands");
                false
            }
            Err(e) => {
                // A refusal is final, but not a credentials problem (401/403: a rotated key
                // comes back) nor "not found" (an earlier row of the partition may be missing).
                let refused = matches!(&e, ProviderError::Rejected { status, .. } if *status != 401 && *status != 403);
                let dead = refused || attempts >= self.settings.max_attempts;
                let message: String = e.to_string().chars().take(1000).collect();
                update = update.col_expr(outbox::Column::LastError, Expr::value(message));
                if dead {
                    tracing::error!(op = name, key = %row.idempotency_key, attempts, error = %e, "outbox row is dead");
                    update = update.col_expr(outbox::Column::Status, Expr::value(status::DEAD));
                } else {
                    let retry = u32::try_from(attempts).unwrap_or(0);
                    let wait = self.settings.backoff.wait(retry, e.retry_after());
                    tracing::warn!(op = name, key = %row.idempotency_key, attempts, ?wait, error = %e, "outbox delivery failed; will retry");
                    update = update.col_expr(
                        outbox::Column::NextAttemptAt,
                        Expr::value(now + chrono(wait)),
                    );
                }
                dead
            }
        };
        if update.exec(&self.db).await?.rows_affected == 0 {
            tracing::warn!(key = %row.idempotency_key, "outbox lease was lost; another worker owns the row");
            return Ok(false);
        }
        if delivered && (attempts > 1 || row.created_at < self.started) {
            // Nobody listening is fine.
            let _ = self.delivered_late.send(row.idempotency_key.clone());
        }
        Ok(finished)
    }

    /// Deletes delivered rows older than `age` (kept that long for support); returns how many.
    pub async fn prune(&self, age: Duration) -> Result<u64, sea_orm::DbErr> {
        let before = self.clock.now() - chrono(age);
        Ok(outbox::Entity::delete_many()
            .filter(outbox::Column::Status.eq(status::DONE))
            .filter(outbox::Column::UpdatedAt.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// Pending and dead rows.
    pub async fn counts(&self) -> Result<Counts, sea_orm::DbErr> {
        let pending = outbox::Entity::find()
            .filter(outbox::Column::Status.eq(status::PENDING))
            .count(&self.db)
            .await?;
        let dead = outbox::Entity::find()
            .filter(outbox::Column::Status.eq(status::DEAD))
            .count(&self.db)
            .await?;
        let oldest = outbox::Entity::find()
            .filter(outbox::Column::Status.eq(status::PENDING))
            .order_by_asc(outbox::Column::CreatedAt)
            .one(&self.db)
            .await?;
        let oldest_pending_age = oldest
            .and_then(|row| (self.clock.now() - row.created_at).to_std().ok())
            .unwrap_or_default();
        Ok(Counts {
            pending,
            dead,
            oldest_pending_age,
        })
    }
}

/// A row as admins see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The row's id.
    pub id: String,
    /// The idempotency key.
    pub key: String,
    /// The operation's name.
    pub operation: &'static str,
    /// `pending`, `done` or `dead`.
    pub status: String,
    /// Deliveries tried.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Written.
    pub created_at: DateTime<Utc>,
    /// Last tried.
    pub updated_at: DateTime<Utc>,
}

fn to_row(m: outbox::Model) -> Row {
    let operation =
        serde_json::from_str::<Operation>(&m.operation).map_or("unknown", |op| op.name());
    Row {
        id: m.id,
        key: m.idempotency_key,
        operation,
        status: m.status,
        attempts: m.attempts,
        last_error: m.last_error,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

impl Outbox {
    /// An organisation's rows in one status, newest first (at most `limit`).
    pub async fn rows(
        &self,
        org_id: &str,
        status: &str,
        limit: u64,
    ) -> Result<Vec<Row>, sea_orm::DbErr> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::OrgId.eq(org_id))
            .filter(outbox::Column::Status.eq(status))
            .order_by_desc(outbox::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_row)
            .collect())
    }

    /// Puts a dead row of `org_id` back in the queue; `None` when there is no such dead row.
    pub async fn retry(&self, org_id: &str, id: &str) -> Result<Option<Row>, sea_orm::DbErr> {
        let now = self.clock.now();
        let updated = outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(status::PENDING))
            .col_expr(outbox::Column::Attempts, Expr::value(0))
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(now))
            .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
            .filter(outbox::Column::Id.eq(id))
            .filter(outbox::Column::OrgId.eq(org_id))
            .filter(outbox::Column::Status.eq(status::DEAD))
            .exec(&self.db)
            .await?;
        if updated.rows_affected == 0 {
            return Ok(None);
        }
        self.wake();
        Ok(outbox::Entity::find()
            .filter(outbox::Column::Id.eq(id))
            .one(&self.db)
            .await?
            .map(to_row))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::{Operation, revoke_tokens_entry};

    #[test]
    fn a_token_revocation_is_stored_as_json_tagged_revoke_tokens_and_reads_back() {
        let at = chrono::Utc
            .timestamp_millis_opt(1_796_000_000_123)
            .single()
            .expect("instant");
        let op = Operation::RevokeTokens {
            user_id: "u-1".into(),
            issued_before: at,
        };
        let stored = serde_json::to_value(&op).expect("json");
        assert_eq!(
            stored,
            json!({
                "op": "revoke_tokens",
                "user_id": "u-1",
                "issued_before": "2026-11-30T00:53:20.123Z",
            })
        );
        assert_eq!(
            serde_json::from_value::<Operation>(stored).expect("reads back"),
            op
        );
        assert_eq!(op.name(), "revoke_tokens");
        assert_eq!(op.partition_key(), "revoke_tokens:u-1");
    }

    #[test]
    fn an_sms_is_partitioned_by_its_recipient_and_stored_as_send_sms() {
        let op = Operation::SendSms {
            member_id: "m-1".into(),
            session_id: "s-1".into(),
            message_id: "cg-1".into(),
            body: "[A, Case chat #abcdef] hi".into(),
        };
        assert_eq!(op.partition_key(), "sms:m-1");
        assert_eq!(op.name(), "send_sms");
        let stored = serde_json::to_value(&op).expect("json");
        assert_eq!(stored["op"], "send_sms");
        assert_eq!(
            serde_json::from_value::<Operation>(stored).expect("reads back"),
            op
        );
    }

    #[test]
    fn the_stored_json_of_the_earlier_operations_is_unchanged() {
        let op: Operation =
            serde_json::from_value(json!({ "op": "delete_users", "user_ids": ["a", "b"] }))
                .expect("an existing row reads");
        assert_eq!(
            op,
            Operation::DeleteUsers {
                user_ids: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            serde_json::to_value(&op).expect("json"),
            json!({ "op": "delete_users", "user_ids": ["a", "b"] })
        );
    }

    #[test]
    fn the_revocation_entry_is_keyed_by_user_and_instant_for_the_users_organisation() {
        let at = chrono::Utc
            .timestamp_millis_opt(1_796_000_000_123)
            .single()
            .expect("instant");
        let entry = revoke_tokens_entry("u-1", Some("org-1".into()), at);
        assert_eq!(entry.key, "user:u-1:revoke_tokens:1796000000123");
        assert_eq!(entry.org_id.as_deref(), Some("org-1"));
        assert_eq!(
            entry.op,
            Operation::RevokeTokens {
                user_id: "u-1".into(),
                issued_before: at,
            }
        );
    }
}
