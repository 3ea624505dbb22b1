//! The hash chain: the canonical encoding of a record, its SHA-256, [`append`] that stores new
//! records sealed, and the sealer that gives records stored unsealed (changes, written in their
//! own transactions) their place in their organisation's chain.
//!
//! # Canonical encoding (version 1)
//!
//! The hash of a record is the lowercase hex SHA-256 of the bytes
//!
//! ```text
//! "caregraph-audit-v1" || field(id) || field(at) || field(chain) || field(org_id)
//!   || field(actor_kind) || field(actor_id) || field(action) || field(entity_type)
//!   || field(entity_id) || field(patient_id) || field(outcome) || field(request_id)
//!   || field(client_address) || field(operation_name) || field(chain_index) || field(prev_hash)
//! ```
//!
//! where `field(null)` is the single byte `N` and `field(s)` is `S`, the decimal length of `s`
//! in bytes, `:` and the UTF-8 bytes of `s`. The length prefix makes the encoding unambiguous
//! whatever a value holds (no separator has to be absent from the data), and a null is distinct
//! from an empty string (`N` against `S0:`). `at` is written as RFC 3339 in UTC with exactly six
//! fractional digits (`2026-12-06T21:00:00.123456Z`; records are created at microsecond
//! precision, which both databases keep), `chain_index` in decimal. The first record of a chain
//! has index 1 and a `prev_hash` of 64 zeros; a record after a pruned prefix chains to the
//! checkpoint's `last_hash`.
//!
//! # Signed heads
//!
//! Each chain's head (its last index and hash) carries an HMAC-SHA256 signature with the key
//! that signs retention checkpoints (see [`head_message`]), so records rewritten together with
//! their head are found by `caregraph audit verify`, and the sealer extends only a head whose
//! signature holds. A chain with sealed records but no head (a deleted head), or with a head
//! whose signature does not hold, is not sealed further: it is logged by chain id and skipped,
//! and every other chain goes on being sealed.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::{
    db::{
        self,
        entities::{audit_chain_head, audit_checkpoint, audit_event},
    },
    error::AppResult,
};

/// The `prev_hash` of a chain's first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The most records one sealing pass takes.
pub const SEAL_BATCH: u64 = 500;

pub(super) fn field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(b'N'),
        Some(s) => {
            out.push(b'S');
            out.extend_from_slice(s.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// `at` as the canonical encoding writes it.
pub fn canonical_time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The canonical bytes of `row` with `chain_index` and `prev_hash` (see the module docs).
pub fn canonical(row: &audit_event::Model, chain_index: i64, prev_hash: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"caregraph-audit-v1");
    field(&mut out, Some(&row.id));
    field(&mut out, Some(&canonical_time(&row.at)));
    field(&mut out, Some(&row.chain));
    field(&mut out, row.org_id.as_deref());
    field(&mut out, Some(&row.actor_kind));
    field(&mut out, row.actor_id.as_deref());
    field(&mut out, Some(&row.action));
    field(&mut out, Some(&row.entity_type));
    field(&mut out, row.entity_id.as_deref());
    field(&mut out, row.patient_id.as_deref());
    field(&mut out, Some(&row.outcome));
    field(&mut out, row.request_id.as_deref());
    field(&mut out, row.client_address.as_deref());
    field(&mut out, row.operation_name.as_deref());
    field(&mut out, Some(&chain_index.to_string()));
    field(&mut out, Some(prev_hash));
    out
}

/// The hash of `row` at `chain_index` after `prev_hash`.
pub fn hash(row: &audit_event::Model, chain_index: i64, prev_hash: &str) -> String {
    hex::encode(Sha256::digest(canonical(row, chain_index, prev_hash)))
}

/// The most chains one [`seal_all`] skips as failing before it stops for this round.
pub const MAX_FAILING_CHAINS: usize = 100;

/// The signed bytes of a chain head: `caregraph-audit-head-v1` and the chain, the last index
/// and its hash, each encoded as in the record's canonical encoding.
pub fn head_message(chain: &str, last_index: i64, last_hash: &str) -> Vec<u8> {
    let mut out = b"caregraph-audit-head-v1".to_vec();
    field(&mut out, Some(chain));
    field(&mut out, Some(&last_index.to_string()));
    field(&mut out, Some(last_hash));
    out
}

/// The signature (hex HMAC-SHA256 under `key`) of `chain`'s head at `last_index`, `last_hash`.
pub fn sign_head(key: &[u8], chain: &str, last_index: i64, last_hash: &str) -> String {
    crate::crypto::hmac_hex(key, &head_message(chain, last_index, last_hash))
}

/// Whether `head` carries a valid signature under `key` (an unsigned head does not).
pub fn head_signature_ok(key: &[u8], head: &audit_chain_head::Model) -> bool {
    head.signature.as_deref().is_some_and(|signature| {
        crate::crypto::verify_hex(
            key,
            &head_message(&head.chain, head.last_index, &head.last_hash),
            signature,
        )
    })
}

/// What one sealing pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Records given their place.
    pub records: usize,
    /// Chains whose head another sealer moved first (retried on a later pass).
    pub conflicts: usize,
    /// Chains that could not be sealed (logged by id; skipped by the passes that follow).
    pub failed: Vec<String>,
}

/// How sealing one chain ended.
enum ChainSealed {
    /// Its records have their place.
    Done,
    /// Another sealer moved the head first.
    Conflict,
    /// The chain cannot be extended safely (the reason, for the log).
    Refused(&'static str),
}

/// Seals up to [`SEAL_BATCH`] of the oldest unsealed records (ordered by `at, id`) outside the
/// chains in `skip`, one transaction per chain, each head signed with `key`. Each chain's head
/// moves by compare-and-set on `last_index`: when another replica sealed the same chain first,
/// that chain's transaction is rolled back and its records wait for the next pass, so every
/// index is given once. A chain that fails is logged by its id and listed in
/// [`Sealed::failed`]; the other chains of the pass are sealed all the same.
pub async fn seal_once(db: &db::Db, key: &[u8], skip: &BTreeSet<String>) -> AppResult<Sealed> {
    let mut query = audit_event::Entity::find().filter(audit_event::Column::ChainIndex.is_null());
    if !skip.is_empty() {
        query = query.filter(audit_event::Column::Chain.is_not_in(skip.iter().cloned()));
    }
    let query = query
        .order_by_asc(audit_event::Column::At)
        .order_by_asc(audit_event::Column::Id)
        .limit(SEAL_BATCH);
    let rows = db::columns::all(db, query).await?;
    let mut chains: BTreeMap<String, Vec<audit_event::Model>> = BTreeMap::new();
    for row in rows {
        chains.entry(row.chain.clone()).or_default().push(row);
    }
    let mut done = Sealed::default();
    for (chain, rows) in chains {
        match seal_chain(db, key, &chain, &rows).await {
            Ok(ChainSealed::Done) => done.records += rows.len(),
            Ok(ChainSealed::Conflict) => done.conflicts += 1,
            Ok(ChainSealed::Refused(reason)) => {
                tracing::error!(chain = %chain, reason, "audit chain not sealed");
                done.failed.push(chain);
            }
            Err(e) => {
                // Ids only: an audit record holds no PHI, and the chain is an organisation id.
                tracing::error!(chain = %chain, error = ?e, "sealing an audit chain failed");
                done.failed.push(chain);
            }
        }
    }
    Ok(done)
}

/// Whether `chain` has sealed records or a checkpoint (so it must have a head).
async fn was_sealed(db: &impl db::Source, chain: &str) -> AppResult<bool> {
    let sealed = audit_event::Entity::find()
        .filter(audit_event::Column::Chain.eq(chain))
        .filter(audit_event::Column::ChainIndex.is_not_null())
        .one(db)
        .await?
        .is_some();
    let pruned = audit_checkpoint::Entity::find()
        .filter(audit_checkpoint::Column::Chain.eq(chain))
        .one(db)
        .await?
        .is_some();
    Ok(sealed || pruned)
}

/// Seals `rows` (in order, stored unsealed) onto `chain` and signs its new head with `key`.
async fn seal_chain(
    db: &DatabaseConnection,
    key: &[u8],
    chain: &str,
    rows: &[audit_event::Model],
) -> AppResult<ChainSealed> {
    let mut rows = rows.to_vec();
    place(db, key, chain, &mut rows, Placement::Update).await
}

/// Stores `rows` (new, in order) at the end of `chain`, sealed, and signs its new head with
/// `key`: one transaction reads the head, places the chain's records that wait for the sealer
/// (up to [`SEAL_BATCH`]) and then `rows`, inserts `rows` and moves the head by
/// compare-and-set. `Ok(true)` when stored; `Ok(false)` when nothing was
/// stored (another sealer moved the head first, or the chain is refused as the sealer refuses
/// it); an error when the database refused the rows (nothing stored either).
pub async fn append(
    db: &DatabaseConnection,
    key: &[u8],
    chain: &str,
    rows: &mut [audit_event::Model],
) -> AppResult<bool> {
    Ok(matches!(
        place(db, key, chain, rows, Placement::Insert).await?,
        ChainSealed::Done
    ))
}

/// How [`place`] stores the rows it seals.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// They are stored already, unsealed: fill their chain columns.
    Update,
    /// They are new: insert them sealed.
    Insert,
}

/// Gives `rows` the next places of `chain` (filling their chain columns), stores them as `how`
/// says and signs the new head with `key`, in one transaction whose head move is a
/// compare-and-set (rolled back when another sealer moved the head first).
async fn place(
    db: &DatabaseConnection,
    key: &[u8],
    chain: &str,
    rows: &mut [audit_event::Model],
    how: Placement,
) -> AppResult<ChainSealed> {
    let txn = db::begin(db).await?;
    let head = audit_chain_head::Entity::find_by_id(chain.to_owned())
        .one(&txn)
        .await?;
    let refused = match &head {
        Some(h) if !head_signature_ok(key, h) => {
            Some("the head's signature does not hold (altered or unsigned head)")
        }
        None if was_sealed(&txn, chain).await? => {
            Some("the chain has sealed records but no head (deleted head)")
        }
        _ => None,
    };
    if let Some(reason) = refused {
        txn.rollback().await?;
        return Ok(ChainSealed::Refused(reason));
    }
    let (mut index, mut prev) = match &head {
        Some(h) => (h.last_index, h.last_hash.clone()),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let start = index;
    // New rows go behind the chain's records that wait for the sealer (changes committed before
    // them), so the chain keeps the order in which records were committed.
    let mut pending = match how {
        Placement::Insert => {
            audit_event::Entity::find()
                .filter(audit_event::Column::ChainIndex.is_null())
                .filter(audit_event::Column::Chain.eq(chain))
                .order_by_asc(audit_event::Column::At)
                .order_by_asc(audit_event::Column::Id)
                .limit(SEAL_BATCH)
                .all(&txn)
                .await?
        }
        Placement::Update => Vec::new(),
    };
    for row in pending.iter_mut().chain(rows.iter_mut()) {
        index += 1;
        let h = hash(row, index, &prev);
        row.chain_index = Some(index);
        row.prev_hash = Some(std::mem::replace(&mut prev, h.clone()));
        row.hash = Some(h);
    }
    let stored = match how {
        Placement::Update => fill_chain_columns(&txn, rows).await?,
        Placement::Insert => {
            if pending.is_empty() || fill_chain_columns(&txn, &pending).await? {
                insert_rows(&txn, rows).await?;
                true
            } else {
                false
            }
        }
    };
    if !stored {
        txn.rollback().await?;
        return Ok(ChainSealed::Conflict);
    }
    let now = Utc::now();
    let signature = sign_head(key, chain, index, &prev);
    let moved = match head {
        Some(_) => {
            audit_chain_head::Entity::update_many()
                .col_expr(audit_chain_head::Column::LastIndex, index.into())
                .col_expr(audit_chain_head::Column::LastHash, prev.clone().into())
                .col_expr(audit_chain_head::Column::SealedAt, now.into())
                .col_expr(audit_chain_head::Column::Signature, signature.into())
                .filter(audit_chain_head::Column::Chain.eq(chain))
                .filter(audit_chain_head::Column::LastIndex.eq(start))
                .exec(&txn)
                .await?
                .rows_affected
                == 1
        }
        None => audit_chain_head::Entity::insert(audit_chain_head::ActiveModel {
            chain: Set(chain.to_owned()),
            last_index: Set(index),
            last_hash: Set(prev),
            sealed_at: Set(now),
            signature: Set(Some(signature)),
        })
        .exec_without_returning(&txn)
        .await
        .is_ok(),
    };
    if moved {
        txn.commit().await?;
        Ok(ChainSealed::Done)
    } else {
        txn.rollback().await?;
        Ok(ChainSealed::Conflict)
    }
}

/// The columns of `audit_events`, in the order [`insert_rows`] binds them.
const COLUMNS: [&str; 17] = [
    "id",
    "at",
    "chain",
    "org_id",
    "actor_kind",
    "actor_id",
    "action",
    "entity_type",
    "entity_id",
    "patient_id",
    "outcome",
    "request_id",
    "client_address",
    "operation_name",
    "chain_index",
    "prev_hash",
    "hash",
];

/// The most rows one INSERT of [`insert_rows`] carries (a power of two).
const INSERT_CHUNK: usize = 32;

/// The text of an INSERT of `rows` records into `audit_events` for `backend`.
fn insert_sql(backend: sea_orm::DatabaseBackend, rows: usize) -> String {
    let mut sql = format!("INSERT INTO audit_events ({}) VALUES ", COLUMNS.join(", "));
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..COLUMNS.len() {
            if column > 0 {
                sql.push_str(", ");
            }
            n += 1;
            match backend {
                sea_orm::DatabaseBackend::Postgres => sql.push_str(&format!("${n}")),
                _ => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// Inserts `rows` (complete records) in statements of [`INSERT_CHUNK`] rows and then of the
/// powers of two below it, so that only a handful of statement texts exist: each is prepared
/// once per connection and reused (the driver caches prepared statements by their text), and
/// no ORM model is built or cloned per row.
pub(super) async fn insert_rows(
    txn: &impl db::Source,
    rows: &[audit_event::Model],
) -> AppResult<()> {
    let backend = txn.get_database_backend();
    let mut rest = rows;
    while !rest.is_empty() {
        let size = if rest.len() >= INSERT_CHUNK {
            INSERT_CHUNK
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(size);
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(size * COLUMNS.len());
        for row in chunk {
            values.extend([
                row.id.clone().into(),
                row.at.into(),
                row.chain.clone().into(),
                row.org_id.clone().into(),
                row.actor_kind.clone().into(),
                row.actor_id.clone().into(),
                row.action.clone().into(),
                row.entity_type.clone().into(),
                row.entity_id.clone().into(),
                row.patient_id.clone().into(),
                row.outcome.clone().into(),
                row.request_id.clone().into(),
                row.client_address.clone().into(),
                row.operation_name.clone().into(),
                row.chain_index.into(),
                row.prev_hash.clone().into(),
                row.hash.clone().into(),
            ]);
        }
        txn.execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            insert_sql(backend, size),
            values,
        ))
        .await?;
        rest = tail;
    }
    Ok(())
}

/// Fills the chain columns of stored, unsealed `rows` in one UPDATE; false when another sealer
/// filled one of them meanwhile.
async fn fill_chain_columns(txn: &impl db::Source, rows: &[audit_event::Model]) -> AppResult<bool> {
    // `WITH v(id, idx, prev, h) AS (VALUES ...) UPDATE ... FROM v`, which both databases speak;
    // a row another sealer filled meanwhile is not matched.
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(rows.len() * 4);
    let mut tuples = Vec::with_capacity(rows.len());
    let backend = txn.get_database_backend();
    for row in rows {
        let n = values.len();
        tuples.push(match backend {
            sea_orm::DatabaseBackend::Postgres => format!(
                "(${}, CAST(${} AS BIGINT), ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ),
            _ => "(?, ?, ?, ?)".to_owned(),
        });
        values.push(row.id.clone().into());
        values.push(row.chain_index.into());
        values.push(row.prev_hash.clone().into());
        values.push(row.hash.clone().into());
    }
    let sql = format!(
        "WITH v(id, idx, prev, h) AS (VALUES {}) \
         UPDATE audit_events SET chain_index = v.idx, prev_hash = v.prev, hash = v.h \
         FROM v WHERE audit_events.id = v.id AND audit_events.chain_index IS NULL",
        tuples.join(", ")
    );
    let updated = txn
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend, sql, values,
        ))
        .await?;
    Ok(updated.rows_affected() == rows.len() as u64)
}

/// Seals until nothing is left unsealed (at most `max_passes` passes), signing heads with
/// `key`; the number sealed. A chain that fails is skipped for the rest of the call (so the
/// others are sealed), and tried again on the next call.
pub async fn seal_all(db: &db::Db, key: &SecretString, max_passes: usize) -> AppResult<usize> {
    let key = key.expose_secret().as_bytes();
    let mut skip = BTreeSet::new();
    let mut total = 0;
    for _ in 0..max_passes {
        let pass = seal_once(db, key, &skip).await?;
        total += pass.records;
        let failed = pass.failed.len();
        skip.extend(pass.failed);
        if (pass.records == 0 && pass.conflicts == 0 && failed == 0)
            || skip.len() >= MAX_FAILING_CHAINS
        {
            break;
        }
    }
    Ok(total)
}
