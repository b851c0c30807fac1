//! The outbox: a batch's output records, written to the store in the same atomic write
//! as the state they come from, kept until acknowledged, and re-sent on start.
//!
//! An entry is removed once every one of its records is acknowledged and its batch's
//! offsets are committed, in the store's next write (the next batch's). An entry found
//! on start belongs to a run that stopped between its write and that next write: its
//! records are produced again, before anything is consumed, unless the group's
//! committed offsets show that its batch was committed (a batch is committed only once
//! all its outputs are acknowledged): each entry keeps where its batch's input ends.
//! With the changelog on, an entry also keeps the store keys its batch wrote: for a
//! batch not committed, their current values go to the changelog again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::changelog::Changelog;
use super::offsets::{self, InputEnd};
use super::sink::{Sink, WireRecord};
use super::source::Source;
use super::{RuntimeError, RuntimeStats};
use crate::engine::Engine;
use crate::store::{keys, Cell, Store, StoreError, Table};

/// The entries by sequence number.
const OUTBOX: Table<u64, Vec<WireRecord>> = Table::new(keys::kafka_runtime::OUTBOX);
/// The last sequence number given.
const OUTBOX_SEQ: Cell<u64> = Cell::new(keys::kafka_runtime::OUTBOX_SEQ);
/// Where each entry's batch ends on its input partitions.
const OUTBOX_INPUT: Table<u64, Vec<InputEnd>> = Table::new(keys::kafka_runtime::OUTBOX_INPUT);
/// The store keys each entry's batch wrote (with the changelog on).
const OUTBOX_KEYS: Table<u64, Vec<Vec<u8>>> = Table::new(keys::kafka_runtime::OUTBOX_KEYS);

/// How long the group's committed offsets are waited for on start; without an answer
/// every entry is re-sent.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// The outbox entry of the batch in progress.
#[derive(Default)]
pub(super) struct Outbox {
    /// The entry staged in the store's next write (none for a batch without outputs).
    staged: Option<u64>,
    /// The entry in the store whose records are not all acknowledged yet.
    unacknowledged: Option<u64>,
}

impl Outbox {
    /// Stages, in the store's next write, a new entry holding `records` and the store
    /// keys `changed` (none if there are neither) of a batch whose input ends at
    /// `input`. [`Outbox::written`] says when that write is durable.
    pub(super) fn stage(
        &mut self,
        store: &mut Store,
        records: &[WireRecord],
        changed: &[Vec<u8>],
        input: &[InputEnd],
    ) -> Result<(), StoreError> {
        let seq = OUTBOX_SEQ.get(store)?.unwrap_or(0) + 1;
        OUTBOX_SEQ.put(store, &seq)?;
        self.staged = None;
        if !records.is_empty() || !changed.is_empty() {
            OUTBOX.put(store, seq, records)?;
            if !changed.is_empty() {
                OUTBOX_KEYS.put(store, seq, changed)?;
            }
            if !input.is_empty() {
                OUTBOX_INPUT.put(store, seq, input)?;
            }
            self.staged = Some(seq);
        }
        Ok(())
    }

    /// The staged entry is durable in the store.
    pub(super) fn written(&mut self) {
        self.unacknowledged = self.staged.take();
    }

    /// Every record of the entry written is acknowledged: stages its removal in the
    /// store's next write.
    pub(super) fn acknowledged(&mut self, store: &mut Store) {
        if let Some(seq) = self.unacknowledged.take() {
            remove(store, seq);
        }
    }

    /// On a clean stop every entry is acknowledged, hence removed: writes what an idle
    /// turn may have left staged.
    pub(super) fn clear(&self, engine: &mut Engine) -> Result<(), RuntimeError> {
        tokio::task::block_in_place(|| engine.commit())?;
        Ok(())
    }
}

/// Whether the store holds an outbox entry with store keys: a batch whose changelog a
/// crash may have cut (its state is in the store, maybe not on the changelog).
pub(super) fn holds_entries(store: &Store) -> Result<bool, StoreError> {
    let prefix = keys::kafka_runtime::OUTBOX_KEYS.bytes();
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Ok(store.first_key_at_least(prefix, &end)?.is_some())
}

/// Removes an entry.
fn remove(store: &mut Store, seq: u64) {
    OUTBOX.remove(store, seq);
    OUTBOX_INPUT.remove(store, seq);
    OUTBOX_KEYS.remove(store, seq);
}

/// Sends what the outbox holds, but the entries of batches the group has committed,
/// then empties it; with the changelog on, an entry's keys go to it again with their
/// current values. False: shutdown was requested during an outage, and what is left
/// stays for the next start.
pub(super) async fn resend(
    engine: &mut Engine,
    changelog: Option<&Changelog>,
    sink: &mut Sink,
    source: &Source,
    stats: &RuntimeStats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, RuntimeError> {
    let entries = OUTBOX.scan(engine.store())?;
    if entries.is_empty() {
        return Ok(true);
    }
    let mut inputs = Vec::with_capacity(entries.len());
    for (seq, _) in &entries {
        inputs.push(OUTBOX_INPUT.get(engine.store(), *seq)?.unwrap_or_default());
    }
    let all: Vec<InputEnd> = inputs.iter().flatten().cloned().collect();
    let committed = if all.is_empty() {
        Default::default()
    } else {
        let asked = tokio::task::block_in_place(|| {
            offsets::committed(&source.consumer, &all, COMMITTED_TIMEOUT)
        });
        asked.unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the group's committed offsets; re-sending every outbox entry");
            Default::default()
        })
    };
    let (mut total, mut skipped) = (0, 0);
    for ((seq, records), input) in entries.into_iter().zip(inputs) {
        let done = !input.is_empty()
            && input.iter().all(|(topic, partition, end)| {
                committed
                    .get(&(topic.clone(), *partition))
                    .is_some_and(|c| c >= end)
            });
        if done {
            skipped += records.len();
            remove(engine.store_mut(), seq);
            continue;
        }
        stats.telemetry.set_outbox_pending(records.len());
        if !sink.deliver(&records, shutdown).await? {
            return Ok(false);
        }
        total += records.len();
        if let Some(changelog) = changelog {
            let changed = OUTBOX_KEYS.get(engine.store(), seq)?.unwrap_or_default();
            let again = changelog.current(engine.store(), &changed)?;
            if !sink.deliver(&again, shutdown).await? {
                return Ok(false);
            }
        }
        remove(engine.store_mut(), seq);
    }
    tokio::task::block_in_place(|| engine.commit())?;
    stats
        .outbox_resent
        .fetch_add(total as u64, Ordering::Relaxed);
    stats.telemetry.outbox_resent(total);
    stats.telemetry.set_outbox_pending(0);
    if total > 0 {
        info!(
            records = total,
            "re-sent outputs left in the outbox by the previous run"
        );
    }
    if skipped > 0 {
        info!(
            records = skipped,
            "outputs left in the outbox by batches the group had committed (hence acknowledged) not re-sent"
        );
    }
    Ok(true)
}
