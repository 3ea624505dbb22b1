//! The hash chain: the canonical encoding of a record, its SHA-256, [`append`] that stores new
//! records sealed, and the sealer that gives records stored unsealed (the changes written in
//! their own transactions) their place in their organisation's chain.
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

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use sha2::{Digest, Sha256};

use crate::{
    db::{
        self,
        entities::{audit_chain_head, audit_event},
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

/// What one sealing pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Records given their place.
    pub records: usize,
    /// Chains whose head another sealer moved first (retried on a later pass).
    pub conflicts: usize,
}

/// Seals up to [`SEAL_BATCH`] of the oldest unsealed records (ordered by `at, id`), one
/// transaction per chain. Each chain's head moves by compare-and-set on `last_index`: when
/// another replica sealed the same chain first, that chain's transaction is rolled back and its
/// records wait for the next pass, so every index is given once.
pub async fn seal_once(db: &DatabaseConnection) -> AppResult<Sealed> {
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::ChainIndex.is_null())
        .order_by_asc(audit_event::Column::At)
        .order_by_asc(audit_event::Column::Id)
        .limit(SEAL_BATCH)
        .all(db)
        .await?;
    let mut chains: BTreeMap<String, Vec<audit_event::Model>> = BTreeMap::new();
    for row in rows {
        chains.entry(row.chain.clone()).or_default().push(row);
    }
    let mut done = Sealed::default();
    for (chain, rows) in chains {
        match seal_chain(db, &chain, &rows).await? {
            true => done.records += rows.len(),
            false => done.conflicts += 1,
        }
    }
    Ok(done)
}

/// Seals `rows` (in order, already stored unsealed) onto `chain`; false when another sealer
/// got there first.
async fn seal_chain(
    db: &DatabaseConnection,
    chain: &str,
    rows: &[audit_event::Model],
) -> AppResult<bool> {
    let mut rows = rows.to_vec();
    place(db, chain, &mut rows, Placement::Update).await
}

/// Stores `rows` (new, in order) at the end of `chain`, sealed: one transaction reads the head,
/// gives each row its index and hash, inserts them all and moves the head by compare-and-set.
/// False when another sealer moved the head first (nothing is stored; try again).
pub async fn append(
    db: &DatabaseConnection,
    chain: &str,
    rows: &mut [audit_event::Model],
) -> AppResult<bool> {
    place(db, chain, rows, Placement::Insert).await
}

/// How [`place`] stores the rows it seals.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// They are stored already, unsealed: fill their chain columns.
    Update,
    /// They are new: insert them sealed.
    Insert,
}

/// Gives `rows` the next places of `chain` (filling their chain columns) and stores them as
/// `how` says, in one transaction whose head move is a compare-and-set; false (rolled back)
/// when another sealer moved the head first.
async fn place(
    db: &DatabaseConnection,
    chain: &str,
    rows: &mut [audit_event::Model],
    how: Placement,
) -> AppResult<bool> {
    let txn = db::begin(db).await?;
    let head = audit_chain_head::Entity::find_by_id(chain.to_owned())
        .one(&txn)
        .await?;
    let (mut index, mut prev) = match &head {
        Some(h) => (h.last_index, h.last_hash.clone()),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let start = index;
    for row in rows.iter_mut() {
        index += 1;
        let h = hash(row, index, &prev);
        row.chain_index = Some(index);
        row.prev_hash = Some(std::mem::replace(&mut prev, h.clone()));
        row.hash = Some(h);
    }
    let stored = match how {
        Placement::Update => fill_chain_columns(&txn, rows).await?,
        Placement::Insert => {
            let models = rows.iter().map(|r| r.clone().into_active_model().reset_all());
            audit_event::Entity::insert_many(models)
                .exec_without_returning(&txn)
                .await?;
            true
        }
    };
    if !stored {
        txn.rollback().await?;
        return Ok(false);
    }
    let now = Utc::now();
    let moved = match head {
        Some(_) => {
            audit_chain_head::Entity::update_many()
                .col_expr(audit_chain_head::Column::LastIndex, index.into())
                .col_expr(audit_chain_head::Column::LastHash, prev.clone().into())
                .col_expr(audit_chain_head::Column::SealedAt, now.into())
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
        })
        .exec_without_returning(&txn)
        .await
        .is_ok(),
    };
    if moved {
        txn.commit().await?;
    } else {
        txn.rollback().await?;
    }
    Ok(moved)
}

/// Fills the chain columns of stored, unsealed `rows` in one UPDATE; false when another sealer
/// filled one of them meanwhile.
async fn fill_chain_columns(
    txn: &impl ConnectionTrait,
    rows: &[audit_event::Model],
) -> AppResult<bool> {
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

/// Seals until nothing is left unsealed (at most `max_passes` passes); the number sealed.
pub async fn seal_all(db: &DatabaseConnection, max_passes: usize) -> AppResult<usize> {
    let mut total = 0;
    for _ in 0..max_passes {
        let pass = seal_once(db).await?;
        total += pass.records;
        if pass.records == 0 && pass.conflicts == 0 {
            break;
        }
    }
    Ok(total)
}
