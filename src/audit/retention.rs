//! Retention: sealed records older than `CAREGRAPH_AUDIT_RETENTION_DAYS` are deleted from the
//! front of each chain, and a checkpoint (the last pruned index and hash, signed with
//! HMAC-SHA256) is written in the same transaction, so the rest of the chain stays verifiable.
//!
//! Nothing is signed on trust: each batch is verified before it is pruned (from the latest
//! checkpoint's signed hash, or the genesis hash, every link and hash recomputed), and a batch
//! that does not verify is not pruned, its chain is logged by id and reported, and the sweep
//! goes on with the other chains. Sweeps of several replicas may run at once: a batch whose
//! records another sweep deleted first, or whose checkpoint it wrote first, is rolled back and
//! counted as done there.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
};
use secrecy::{ExposeSecret, SecretString};

use super::{
    chain::{GENESIS_HASH, canonical_time, field, hash},
    verify::Break,
};
use crate::{
    db::{
        self,
        entities::{audit_chain_head, audit_checkpoint, audit_event},
    },
    error::AppResult,
};

/// Records deleted per transaction.
pub const PRUNE_BATCH: u64 = 1_000;

/// Transactions per chain in one sweep (the rest waits for the next sweep).
pub const PRUNE_BATCHES_PER_SWEEP: usize = 100;

/// The key that signs checkpoints: `CAREGRAPH_AUDIT_KEY`, or one derived from the JWT secret.
pub fn checkpoint_key(config: &crate::config::Config) -> SecretString {
    config.audit.key.clone().unwrap_or_else(|| {
        crate::auth::derive_key(&config.auth.jwt_secret, "caregraph audit checkpoints")
    })
}

/// The signed bytes of a checkpoint: `caregraph-audit-checkpoint-v1` and the chain, the last
/// pruned index, its hash and the cutoff, each encoded as in the record's canonical encoding.
fn checkpoint_message(
    chain: &str,
    through: i64,
    last_hash: &str,
    before: &DateTime<Utc>,
) -> Vec<u8> {
    let mut out = b"caregraph-audit-checkpoint-v1".to_vec();
    field(&mut out, Some(chain));
    field(&mut out, Some(&through.to_string()));
    field(&mut out, Some(last_hash));
    field(&mut out, Some(&canonical_time(before)));
    out
}

/// Whether `cp` carries a valid signature under `key`.
pub fn checkpoint_signature_ok(key: &[u8], cp: &audit_checkpoint::Model) -> bool {
    let message = checkpoint_message(
        &cp.chain,
        cp.through_index,
        &cp.last_hash,
        &cp.pruned_before,
    );
    crate::crypto::verify_hex(key, &message, &cp.signature)
}

/// The latest checkpoint of `chain`, if it was ever pruned.
pub async fn latest_checkpoint(
    db: &impl db::Source,
    chain: &str,
) -> AppResult<Option<audit_checkpoint::Model>> {
    Ok(audit_checkpoint::Entity::find()
        .filter(audit_checkpoint::Column::Chain.eq(chain))
        .order_by_desc(audit_checkpoint::Column::ThroughIndex)
        .one(db)
        .await?)
}

/// What a retention sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Records deleted (behind a new checkpoint).
    pub deleted: u64,
    /// Chains left unpruned because their oldest records do not verify: where and why.
    pub refused: Vec<Break>,
}

/// How one batch ended.
enum Batch {
    /// This many records were pruned behind a new checkpoint.
    Pruned(u64),
    /// The batch does not verify: nothing was pruned.
    Refused(Break),
    /// Another sweep pruned these records (or wrote this checkpoint) first.
    DoneElsewhere,
}

/// Deletes the sealed records older than `cutoff` from the front of every chain, in bounded
/// batches, each verified first and pruned with its checkpoint in the same transaction; the
/// number deleted (a chain that does not verify is logged by id and left as it is).
pub async fn prune(
    db: &DatabaseConnection,
    key: &SecretString,
    cutoff: DateTime<Utc>,
) -> AppResult<u64> {
    Ok(prune_report(db, key, cutoff).await?.deleted)
}

/// [`prune`], reporting the chains it refused to prune and why.
pub async fn prune_report(
    db: &DatabaseConnection,
    key: &SecretString,
    cutoff: DateTime<Utc>,
) -> AppResult<Pruned> {
    let key = key.expose_secret().as_bytes();
    // Stored at microsecond precision on both databases, so signed at that precision.
    let cutoff = cutoff.trunc_subsecs(6);
    let chains: Vec<String> = audit_chain_head::Entity::find()
        .order_by_asc(audit_chain_head::Column::Chain)
        .all(db)
        .await?
        .into_iter()
        .map(|h| h.chain)
        .collect();
    let mut done = Pruned::default();
    for chain in chains {
        for _ in 0..PRUNE_BATCHES_PER_SWEEP {
            match prune_batch(db, key, &chain, cutoff).await? {
                Batch::Pruned(n) => {
                    done.deleted += n;
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Batch::Refused(broken) => {
                    // Ids and indexes only.
                    tracing::error!(
                        chain = %broken.chain,
                        index = broken.chain_index,
                        problem = %broken.problem,
                        "audit retention refused to prune a chain that does not verify"
                    );
                    done.refused.push(broken);
                    break;
                }
                Batch::DoneElsewhere => break,
            }
        }
    }
    Ok(done)
}

async fn prune_batch(
    db: &DatabaseConnection,
    key: &[u8],
    chain: &str,
    cutoff: DateTime<Utc>,
) -> AppResult<Batch> {
    let broken = |index: i64, id: Option<&str>, problem: String| Break {
        chain: chain.to_owned(),
        chain_index: index,
        record_id: id.map(str::to_owned),
        problem,
    };
    let txn = db::begin(db).await?;
    // One sweep at a time per chain: the head's row lock on PostgreSQL (SQLite's write
    // transactions are serialized by `db::begin` already). The checks below stay for safety.
    audit_chain_head::Entity::find_by_id(chain.to_owned())
        .lock_exclusive()
        .one(&txn)
        .await?;
    let (through, mut prev) = match latest_checkpoint(&txn, chain).await? {
        Some(cp) if !checkpoint_signature_ok(key, &cp) => {
            txn.rollback().await?;
            return Ok(Batch::Refused(broken(
                cp.through_index,
                None,
                "the checkpoint's signature does not match (forged or altered checkpoint)".into(),
            )));
        }
        Some(cp) => (cp.through_index, cp.last_hash),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::Chain.eq(chain))
        .filter(audit_event::Column::ChainIndex.gt(through))
        .order_by_asc(audit_event::Column::ChainIndex)
        .limit(PRUNE_BATCH)
        .all(&txn)
        .await?;
    // Only an unbroken prefix of old records, each verified: the first newer one ends the batch.
    let mut expected = through + 1;
    let mut count = 0u64;
    for row in &rows {
        if row.at >= cutoff {
            break;
        }
        let problem = if row.chain_index != Some(expected) {
            Some(format!(
                "records {expected} to {} are missing",
                row.chain_index.unwrap_or_default() - 1
            ))
        } else if row.prev_hash.as_deref() != Some(prev.as_str()) {
            Some("prev_hash does not match the previous record's hash".to_owned())
        } else {
            let computed = hash(row, expected, &prev);
            if row.hash.as_deref() == Some(computed.as_str()) {
                prev = computed;
                None
            } else {
                Some("the hash does not match the record's content (altered record)".to_owned())
            }
        };
        if let Some(problem) = problem {
            txn.rollback().await?;
            return Ok(Batch::Refused(broken(expected, Some(&row.id), problem)));
        }
        expected += 1;
        count += 1;
    }
    if count == 0 {
        txn.rollback().await?;
        return Ok(Batch::Pruned(0));
    }
    let last_index = expected - 1;
    let last_hash = prev;
    let deleted = audit_event::Entity::delete_many()
        .filter(audit_event::Column::Chain.eq(chain))
        .filter(audit_event::Column::ChainIndex.gt(through))
        .filter(audit_event::Column::ChainIndex.lte(last_index))
        .exec(&txn)
        .await?
        .rows_affected;
    if deleted != count {
        // Another sweep deleted (some of) them first.
        txn.rollback().await?;
        return Ok(Batch::DoneElsewhere);
    }
    let signature = crate::crypto::hmac_hex(
        key,
        &checkpoint_message(chain, last_index, &last_hash, &cutoff),
    );
    let inserted = audit_checkpoint::Entity::insert(audit_checkpoint::ActiveModel {
        chain: Set(chain.to_owned()),
        through_index: Set(last_index),
        last_hash: Set(last_hash),
        pruned_before: Set(cutoff),
        created_at: Set(Utc::now()),
        signature: Set(signature),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(&txn)
    .await?;
    if !matches!(inserted, TryInsertResult::Inserted(1)) {
        // Another sweep wrote this checkpoint first.
        txn.rollback().await?;
        return Ok(Batch::DoneElsewhere);
    }
    txn.commit().await?;
    Ok(Batch::Pruned(count))
}
