//! Retention: sealed records older than `CAREGRAPH_AUDIT_RETENTION_DAYS` are deleted from the
//! front of each chain, and a checkpoint (the last pruned index and hash, signed with
//! HMAC-SHA256) is written in the same transaction, so the rest of the chain stays verifiable.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use secrecy::{ExposeSecret, SecretString};

use super::chain::{canonical_time, field};
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
    db: &impl ConnectionTrait,
    chain: &str,
) -> AppResult<Option<audit_checkpoint::Model>> {
    Ok(audit_checkpoint::Entity::find()
        .filter(audit_checkpoint::Column::Chain.eq(chain))
        .order_by_desc(audit_checkpoint::Column::ThroughIndex)
        .one(db)
        .await?)
}

/// Deletes the sealed records older than `cutoff` from the front of every chain, in bounded
/// batches, each with its checkpoint in the same transaction; the number deleted.
pub async fn prune(
    db: &DatabaseConnection,
    key: &SecretString,
    cutoff: DateTime<Utc>,
) -> AppResult<u64> {
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
    let mut deleted = 0;
    for chain in chains {
        for _ in 0..PRUNE_BATCHES_PER_SWEEP {
            let n = prune_batch(db, key, &chain, cutoff).await?;
            deleted += n;
            if n < PRUNE_BATCH {
                break;
            }
        }
    }
    Ok(deleted)
}

async fn prune_batch(
    db: &DatabaseConnection,
    key: &[u8],
    chain: &str,
    cutoff: DateTime<Utc>,
) -> AppResult<u64> {
    let txn = db::begin(db).await?;
    let through = latest_checkpoint(&txn, chain)
        .await?
        .map_or(0, |cp| cp.through_index);
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::Chain.eq(chain))
        .filter(audit_event::Column::ChainIndex.gt(through))
        .order_by_asc(audit_event::Column::ChainIndex)
        .limit(PRUNE_BATCH)
        .all(&txn)
        .await?;
    // Only an unbroken prefix of old records: the first newer one (or gap) ends the batch.
    let mut last: Option<&audit_event::Model> = None;
    let mut count = 0u64;
    for row in &rows {
        let expected = last.map_or(through + 1, |l| l.chain_index.unwrap_or_default() + 1);
        if row.at >= cutoff || row.chain_index != Some(expected) {
            break;
        }
        last = Some(row);
        count += 1;
    }
    let Some(last) = last else {
        txn.rollback().await?;
        return Ok(0);
    };
    let last_index = last.chain_index.unwrap_or_default();
    let last_hash = last.hash.clone().unwrap_or_default();
    audit_event::Entity::delete_many()
        .filter(audit_event::Column::Chain.eq(chain))
        .filter(audit_event::Column::ChainIndex.gt(through))
        .filter(audit_event::Column::ChainIndex.lte(last_index))
        .exec(&txn)
        .await?;
    let signature = crate::crypto::hmac_hex(
        key,
        &checkpoint_message(chain, last_index, &last_hash, &cutoff),
    );
    audit_checkpoint::Entity::insert(audit_checkpoint::ActiveModel {
        chain: Set(chain.to_owned()),
        through_index: Set(last_index),
        last_hash: Set(last_hash),
        pruned_before: Set(cutoff),
        created_at: Set(Utc::now()),
        signature: Set(signature),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(count)
}
