//! `caregraph audit verify`: walks each chain in `chain_index` order, in bounded pages, from its
//! latest signed checkpoint (or from index 1), recomputing every hash and checking every link,
//! and reports the first break.
//!
//! The chains are those the records, heads and checkpoints name (every organisation with sealed
//! records, not only those with a head), so a deleted head is a break, not a chain left out.
//! Each head must carry a valid signature and match the chain's last sealed record.

use std::collections::BTreeSet;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    chain::{GENESIS_HASH, hash, head_signature_ok},
    retention::{checkpoint_signature_ok, latest_checkpoint},
};
use crate::{
    db::entities::{audit_chain_head, audit_checkpoint, audit_event},
    error::AppResult,
};

/// Rows read per page.
pub const VERIFY_PAGE: u64 = 1_000;

/// How often (in records) progress is reported.
pub const PROGRESS_EVERY: u64 = 100_000;

/// The first place a chain does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The chain (organisation id or `system`).
    pub chain: String,
    /// Where in the chain.
    pub chain_index: i64,
    /// The record found there, if any.
    pub record_id: Option<String>,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chain {} breaks at index {} (record {}): {}",
            self.chain,
            self.chain_index,
            self.record_id.as_deref().unwrap_or("-"),
            self.problem
        )
    }
}

/// What a clean verification covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Chains walked.
    pub chains: usize,
    /// Records whose hash and link were checked.
    pub records: u64,
    /// Chains that start at a signed checkpoint (a pruned prefix).
    pub from_checkpoint: usize,
}

/// Verifies every chain, or only `chain` (an organisation id or `system`); `progress` is called
/// with the chain and the records checked so far every [`PROGRESS_EVERY`] records.
pub async fn verify(
    db: &DatabaseConnection,
    key: &[u8],
    chain: Option<&str>,
    mut progress: impl FnMut(&str, u64),
) -> AppResult<Result<Summary, Break>> {
    let mut summary = Summary::default();
    for name in chains(db, chain).await? {
        summary.chains += 1;
        match verify_chain(db, key, &name, &mut summary, &mut progress).await? {
            Ok(()) => {}
            Err(b) => return Ok(Err(b)),
        }
    }
    Ok(Ok(summary))
}

/// The chains to verify, in order: every chain with a sealed record, a head or a checkpoint
/// (only `chain`, when given).
async fn chains(db: &DatabaseConnection, chain: Option<&str>) -> AppResult<BTreeSet<String>> {
    let mut sealed = audit_event::Entity::find()
        .select_only()
        .column(audit_event::Column::Chain)
        .distinct()
        .filter(audit_event::Column::ChainIndex.is_not_null());
    let mut heads = audit_chain_head::Entity::find()
        .select_only()
        .column(audit_chain_head::Column::Chain);
    let mut checkpoints = audit_checkpoint::Entity::find()
        .select_only()
        .column(audit_checkpoint::Column::Chain)
        .distinct();
    if let Some(chain) = chain {
        sealed = sealed.filter(audit_event::Column::Chain.eq(chain));
        heads = heads.filter(audit_chain_head::Column::Chain.eq(chain));
        checkpoints = checkpoints.filter(audit_checkpoint::Column::Chain.eq(chain));
    }
    let mut all = BTreeSet::new();
    all.extend(sealed.into_tuple::<String>().all(db).await?);
    all.extend(heads.into_tuple::<String>().all(db).await?);
    all.extend(checkpoints.into_tuple::<String>().all(db).await?);
    Ok(all)
}

async fn verify_chain(
    db: &DatabaseConnection,
    key: &[u8],
    chain: &str,
    summary: &mut Summary,
    progress: &mut impl FnMut(&str, u64),
) -> AppResult<Result<(), Break>> {
    let broken = |index: i64, id: Option<&str>, problem: String| Break {
        chain: chain.to_owned(),
        chain_index: index,
        record_id: id.map(str::to_owned),
        problem,
    };
    let head = audit_chain_head::Entity::find_by_id(chain.to_owned())
        .one(db)
        .await?;
    if let Some(head) = &head
        && !head_signature_ok(key, head)
    {
        return Ok(Err(broken(
            head.last_index,
            None,
            "the head's signature does not match (forged, altered or unsigned head)".into(),
        )));
    }
    let (mut expected, mut prev) = match latest_checkpoint(db, chain).await? {
        Some(cp) => {
            if !checkpoint_signature_ok(key, &cp) {
                return Ok(Err(broken(
                    cp.through_index,
                    None,
                    "the checkpoint's signature does not match (forged or altered checkpoint)"
                        .into(),
                )));
            }
            summary.from_checkpoint += 1;
            (cp.through_index + 1, cp.last_hash)
        }
        None => (1, GENESIS_HASH.to_owned()),
    };
    let mut checked = 0u64;
    loop {
        let page = audit_event::Entity::find()
            .filter(audit_event::Column::Chain.eq(chain))
            .filter(audit_event::Column::ChainIndex.gte(expected))
            .order_by_asc(audit_event::Column::ChainIndex)
            .limit(VERIFY_PAGE)
            .all(db)
            .await?;
        let full = page.len() as u64 == VERIFY_PAGE;
        for row in &page {
            let index = row.chain_index.unwrap_or_default();
            if index != expected {
                return Ok(Err(broken(
                    expected,
                    Some(&row.id),
                    format!(
                        "records {expected} to {} are missing (the next record has index {index})",
                        index - 1
                    ),
                )));
            }
            if row.prev_hash.as_deref() != Some(prev.as_str()) {
                return Ok(Err(broken(
                    index,
                    Some(&row.id),
                    "prev_hash does not match the previous record's hash".into(),
                )));
            }
            let computed = hash(row, index, &prev);
            if row.hash.as_deref() != Some(computed.as_str()) {
                return Ok(Err(broken(
                    index,
                    Some(&row.id),
                    "the hash does not match the record's content (altered record)".into(),
                )));
            }
            prev = computed;
            expected += 1;
            checked += 1;
            summary.records += 1;
            if checked.is_multiple_of(PROGRESS_EVERY) {
                progress(chain, checked);
            }
        }
        if !full {
            break;
        }
    }
    let last = expected - 1;
    let Some(head) = head else {
        return Ok(Err(broken(
            last,
            None,
            format!("the chain has sealed records through index {last} but no head (deleted head)"),
        )));
    };
    let matches = |h: &audit_chain_head::Model| h.last_index == last && h.last_hash == prev;
    if !matches(&head) {
        // The sealer may have moved the head while the chain was walked: the head as it is now.
        let moved = audit_chain_head::Entity::find_by_id(chain.to_owned())
            .one(db)
            .await?;
        if moved.is_some_and(|h| head_signature_ok(key, &h) && matches(&h)) {
            return Ok(Ok(()));
        }
        return Ok(Err(broken(
            last + 1,
            None,
            format!(
                "the chain ends at index {last} but its head is at index {} (records removed from the end)",
                head.last_index
            ),
        )));
    }
    Ok(Ok(()))
}
