//! The [`AuditLog`]: the bounded queue between requests and the database, its one writer task
//! (batched multi-row inserts, sealed on the way in), and the sealer task that chains what was
//! stored unsealed (changes, written in their own transactions, and what the writer could not
//! seal).
//!
//! A request's reads are buffered in its [`AuditScope`] and handed to the queue after the
//! response is built; when the queue is full the hand-over waits for room, so no record is ever
//! dropped. The writer takes up to [`WRITE_BATCH`] records at a time and leaves out the allowed
//! reads that repeat one it accepted within the read window ([`ReadCoalescer`]). On shutdown the
//! queue is drained before the process exits; a crash loses the records of in-flight requests
//! and those still in the queue.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use sea_orm::EntityTrait;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AuditActor, AuditRecord, AuditScope, chain, coalesce::ReadCoalescer, retention};
use crate::{clock::SharedClock, db::entities::audit_event};

/// The most records the writer takes from the queue at a time (one transaction per
/// organisation): the larger the batch, the fewer times each index page is written to the log.
pub const WRITE_BATCH: usize = 2_000;

/// How often the writer tries to store a chain's records sealed while other sealers move that
/// chain's head first, before it stores them unsealed.
const APPEND_ATTEMPTS: usize = 3;

/// How often the sealer looks for unsealed records.
pub const SEAL_INTERVAL: Duration = Duration::from_millis(200);

/// How often (at most) the retention sweep runs.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The longest the writer waits between two attempts at a failing insert.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where requests hand over their records, and the tasks that write and seal them. Cheap to
/// clone; a disabled log (`CAREGRAPH_AUDIT=false`) hands out scopes that record nothing.
#[derive(Clone)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
    db: crate::db::Db,
    clock: SharedClock,
    key: SecretString,
    retention_days: u32,
}

struct Inner {
    tx: mpsc::Sender<AuditRecord>,
    rx: Mutex<Option<mpsc::Receiver<AuditRecord>>>,
    capacity: usize,
    queued: AtomicU64,
    written: AtomicU64,
    /// Allowed reads repeating one accepted less than this ago are not written (zero: all are).
    read_window: Duration,
    /// Records left out as repeated reads (`caregraph_audit_records_coalesced_total`).
    coalesced: Counter,
}

impl AuditLog {
    /// A log writing to `db` through a queue of `capacity` records (`None`: disabled), every
    /// read included (see [`AuditLog::coalescing_reads`]).
    pub fn new(
        db: crate::db::Db,
        capacity: Option<usize>,
        clock: SharedClock,
        key: SecretString,
        retention_days: u32,
    ) -> Self {
        let inner = capacity.map(|capacity| {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            Arc::new(Inner {
                tx,
                rx: Mutex::new(Some(rx)),
                capacity: capacity.max(1),
                queued: AtomicU64::new(0),
                written: AtomicU64::new(0),
                read_window: Duration::ZERO,
                coalesced: Counter::default(),
            })
        });
        Self {
            inner,
            db,
            clock,
            key,
            retention_days,
        }
    }

    /// Leaves out an allowed read identical to one the writer accepted less than `window` ago
    /// (zero: every read is written), counting each one left out in `coalesced`. Takes effect
    /// on a log not cloned yet (as [`AuditLog::new`] returns it); a clone keeps every read.
    /// The settings live behind the log's shared pointer, so the log, held by every service and
    /// thus by every request's future, stays as small as it was.
    #[must_use]
    pub fn coalescing_reads(mut self, window: Duration, coalesced: Counter) -> Self {
        if let Some(inner) = self.inner.as_mut().and_then(Arc::get_mut) {
            inner.read_window = window;
            inner.coalesced = coalesced;
        }
        self
    }

    /// How many records were left out as repeated reads.
    pub fn coalesced(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.coalesced.get())
    }

    /// Whether records are kept.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A scope for `actor`'s request, connection or job (one that records nothing when the log
    /// is disabled).
    pub fn scope(
        &self,
        actor: AuditActor,
        request_id: Option<String>,
        client_address: Option<String>,
    ) -> AuditScope {
        if self.inner.is_some() {
            AuditScope::new(actor, request_id, client_address)
        } else {
            AuditScope::default()
        }
    }

    /// Hands the scope's buffered records to the writer, waiting while the queue is full.
    pub async fn flush(&self, scope: &AuditScope) {
        if scope.buffered() > 0 {
            self.submit(scope.take()).await;
        }
    }

    /// Hands `records` to the writer, waiting while the queue is full (never dropping one).
    pub async fn submit(&self, records: Vec<AuditRecord>) {
        let Some(inner) = &self.inner else {
            return;
        };
        let mut left = records.len();
        let mut records = records.into_iter();
        while left > 0 {
            let n = left.min(inner.capacity);
            let Ok(permits) = inner.tx.reserve_many(n).await else {
                // Only after the writer is gone (the process is exiting).
                tracing::error!(count = left, "the audit writer has stopped; records lost");
                return;
            };
            for permit in permits {
                if let Some(record) = records.next() {
                    permit.send(record);
                }
            }
            inner.queued.fetch_add(n as u64, Ordering::Relaxed);
            left -= n;
        }
    }

    /// Records handed over and records settled so far: written, or left out as repeated reads.
    pub fn counts(&self) -> (u64, u64) {
        self.inner.as_ref().map_or((0, 0), |i| {
            (
                i.queued.load(Ordering::Relaxed),
                i.written.load(Ordering::Relaxed) + i.coalesced.get(),
            )
        })
    }

    /// Waits (up to 10 s) until every record handed over so far is settled (written, or left
    /// out as a repeated read); whether it was.
    pub async fn written(&self) -> bool {
        let target = self.counts().0;
        for _ in 0..1_000 {
            if self.counts().1 >= target {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// The writer: takes up to [`WRITE_BATCH`] records at a time from the queue and stores
    /// them. After `stop`, writes what is left in the queue and returns. Only
    /// the first call runs; others return at once.
    pub async fn run_writer(self, stop: CancellationToken) {
        let Some(inner) = self.inner.clone() else {
            return;
        };
        let Some(mut rx) = inner.rx.lock().ok().and_then(|mut slot| slot.take()) else {
            return;
        };
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut reads = ReadCoalescer::new(inner.read_window);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.coalesce(&inner, &mut reads, &mut batch);
                    self.write(&inner, &mut batch, Some(&stop)).await;
                }
                () = stop.cancelled() => break,
            }
        }
        // Shutdown: everything still queued is written before the process exits.
        while let Ok(record) = rx.try_recv() {
            batch.push(record);
            if batch.len() == WRITE_BATCH {
                self.coalesce(&inner, &mut reads, &mut batch);
                self.write(&inner, &mut batch, None).await;
            }
        }
        self.coalesce(&inner, &mut reads, &mut batch);
        self.write(&inner, &mut batch, None).await;
    }

    /// Takes out of `batch` the allowed reads that repeat one accepted within the read window
    /// (never written, only counted); the rest keep their order.
    fn coalesce(&self, inner: &Inner, reads: &mut ReadCoalescer, batch: &mut Vec<AuditRecord>) {
        if inner.read_window.is_zero() || batch.is_empty() {
            return;
        }
        let now = self.clock.now();
        let before = batch.len();
        batch.retain(|record| !reads.is_repeat(record, now));
        inner.coalesced.inc_by((before - batch.len()) as u64);
    }

    /// Stores `batch` sealed where it can; inserts the rest unsealed in one transaction, retrying
    /// a failed insert with backoff (three attempts once shutting down); then clears it.
    async fn write(
        &self,
        inner: &Inner,
        batch: &mut Vec<AuditRecord>,
        stop: Option<&CancellationToken>,
    ) {
        if batch.is_empty() {
            return;
        }
        let sealed = self.append_sealed(batch).await;
        inner.written.fetch_add(sealed, Ordering::Relaxed);
        if batch.is_empty() {
            return;
        }
        let mut wait = Duration::from_millis(50);
        for attempt in 1.. {
            match self.insert_unsealed(batch).await {
                Ok(_) => {
                    inner
                        .written
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    // A batch that keeps failing may hold one row the database refuses, or rows a
                    // commit whose answer was lost already wrote: row by row, the rest goes in.
                    if attempt % 3 == 0
                        && let Some(done) = self.row_by_row(batch).await
                    {
                        inner.written.fetch_add(done, Ordering::Relaxed);
                        break;
                    }
                    let stopping = stop.is_none_or(CancellationToken::is_cancelled);
                    if stopping && attempt >= 3 {
                        tracing::error!(error = ?e, count = batch.len(), "writing audit records failed; records lost at shutdown");
                        break;
                    }
                    tracing::warn!(error = ?e, count = batch.len(), "writing audit records failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_RETRY);
                }
            }
        }
        batch.clear();
    }

    /// Stores `batch` sealed, one transaction per chain ([`chain::append`]), and returns how
    /// many records went in; the records of a chain that could not be stored so (the database
    /// fails, or another sealer kept moving the chain's head) are left in `batch`, in order, to
    /// go in unsealed for the sealer.
    async fn append_sealed(&self, batch: &mut Vec<AuditRecord>) -> u64 {
        let mut chains: BTreeMap<String, Vec<AuditRecord>> = BTreeMap::new();
        for record in batch.drain(..) {
            chains.entry(record.chain()).or_default().push(record);
        }
        let key = self.key.expose_secret().as_bytes();
        let mut stored = 0;
        for (chain, records) in chains {
            let mut rows: Vec<_> = records.iter().map(AuditRecord::to_model).collect();
            let mut done = false;
            for _ in 0..APPEND_ATTEMPTS {
                match chain::append(&self.db, key, &chain, &mut rows).await {
                    Ok(true) => {
                        done = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(error = ?e, "storing audit records sealed failed; storing them unsealed");
                        break;
                    }
                }
            }
            if done {
                stored += records.len() as u64;
            } else {
                batch.extend(records);
            }
        }
        stored
    }

    /// Inserts `batch` unsealed (for the sealer) in one transaction.
    async fn insert_unsealed(&self, batch: &[AuditRecord]) -> crate::error::AppResult<()> {
        let rows: Vec<_> = batch.iter().map(AuditRecord::to_model).collect();
        let txn = crate::db::begin(&self.db).await?;
        chain::insert_rows(&txn, &rows).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Writes `batch` one row at a time; a row that fails and is not already stored is refused
    /// for good and dropped (logged by id, never by content). Returns how many rows are settled
    /// (all of them), or `None` when none went in and none was stored: the database itself is
    /// failing, and the batch waits for it.
    async fn row_by_row(&self, batch: &[AuditRecord]) -> Option<u64> {
        let (mut inserted, mut stored, mut refused) = (0u64, 0u64, Vec::new());
        for record in batch {
            match audit_event::Entity::insert(record.to_row())
                .exec_without_returning(&self.db)
                .await
            {
                Ok(_) => inserted += 1,
                Err(e) => match audit_event::Entity::find_by_id(record.id.to_string())
                    .one(&self.db)
                    .await
                {
                    Ok(Some(_)) => stored += 1,
                    _ => refused.push((record.id, e)),
                },
            }
        }
        if inserted == 0 && stored == 0 {
            return None;
        }
        for (id, e) in &refused {
            tracing::error!(record = %id, error = %e, "the database refuses this audit record; it is dropped");
        }
        Some(batch.len() as u64)
    }

    /// The sealer (every [`SEAL_INTERVAL`]) and the retention sweep (at most every
    /// [`RETENTION_INTERVAL`]), until `stop`. Runs whether or not recording is on, so records of
    /// an earlier run are sealed and pruned too.
    pub async fn run_sealer(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SEAL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            if let Err(e) = self.seal().await {
                e.log_cause();
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL) {
                last_sweep = Some(tokio::time::Instant::now());
                match self.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "audit retention sweep"),
                    Err(e) => e.log_cause(),
                }
            }
        }
        // What the writer wrote at shutdown is sealed by the next start (or another replica).
        let _ = self.seal().await;
    }

    /// Seals every unsealed record now (at most 1,000 passes); the number sealed.
    pub async fn seal(&self) -> crate::error::AppResult<usize> {
        chain::seal_all(&self.db, &self.key, 1_000).await
    }

    /// Prunes what is past retention now; the number of records deleted.
    pub async fn sweep(&self) -> crate::error::AppResult<u64> {
        let cutoff = self.clock.now() - chrono::Duration::days(i64::from(self.retention_days));
        retention::prune(&self.db, &self.key, cutoff).await
    }
}
