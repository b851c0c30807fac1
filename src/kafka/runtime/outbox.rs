//! The outbox: a batch's output records, written to the store in the same atomic write
//! as the state they come from, kept until acknowledged, and re-sent on start.
//!
//! An entry is removed once every one of its records is acknowledged and its batch's
//! offsets are committed, in the store's next write (the next batch's). An entry found
//! on start belongs to a run that stopped between its write and that next write: its
//! records are produced again, before anything is consumed.

use std::sync::atomic::Ordering;

use tokio::sync::watch;
use tracing::info;

use super::sink::{Sink, WireRecord};
use super::{RuntimeError, RuntimeStats};
use crate::engine::Engine;
use crate::store::{keys, Cell, Store, StoreError, Table};

/// The entries by sequence number.
const OUTBOX: Table<u64, Vec<WireRecord>> = Table::new(keys::kafka_runtime::OUTBOX);
/// The last sequence number given.
const OUTBOX_SEQ: Cell<u64> = Cell::new(keys::kafka_runtime::OUTBOX_SEQ);

/// The outbox entry of the batch in progress.
#[derive(Default)]
pub(super) struct Outbox {
    /// The entry staged in the store's next write (none for a batch without outputs).
    staged: Option<u64>,
    /// The entry in the store whose records are not all acknowledged yet.
    unacknowledged: Option<u64>,
}

impl Outbox {
    /// Stages, in the store's next write, a new entry holding `records` (none if there
    /// are none). [`Outbox::written`] says when that write is durable.
    pub(super) fn stage(
        &mut self,
        store: &mut Store,
        records: &[WireRecord],
    ) -> Result<(), StoreError> {
        let seq = OUTBOX_SEQ.get(store)?.unwrap_or(0) + 1;
        OUTBOX_SEQ.put(store, &seq)?;
        self.staged = None;
        if !records.is_empty() {
            OUTBOX.put(store, seq, records)?;
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
            OUTBOX.remove(store, seq);
        }
    }

    /// On a clean stop every entry is acknowledged, hence removed: writes what an idle
    /// turn may have left staged.
    pub(super) fn clear(&self, engine: &mut Engine) -> Result<(), RuntimeError> {
        tokio::task::block_in_place(|| engine.commit())?;
        Ok(())
    }
}

/// Sends what the outbox holds, then empties it. False: shutdown was requested during
/// an outage, and what is left stays for the next start.
pub(super) async fn resend(
    engine: &mut Engine,
    sink: &mut Sink,
    stats: &RuntimeStats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, RuntimeError> {
    let entries = OUTBOX.scan(engine.store())?;
    if entries.is_empty() {
        return Ok(true);
    }
    let mut total = 0;
    for (seq, records) in entries {
        stats.telemetry.set_outbox_pending(records.len());
        if !sink.deliver(&records, shutdown).await? {
            return Ok(false);
        }
        total += records.len();
        OUTBOX.remove(engine.store_mut(), seq);
    }
    tokio::task::block_in_place(|| engine.commit())?;
    stats
        .outbox_resent
        .fetch_add(total as u64, Ordering::Relaxed);
    stats.telemetry.outbox_resent(total);
    stats.telemetry.set_outbox_pending(0);
    info!(
        records = total,
        "re-sent outputs left in the outbox by the previous run"
    );
    Ok(true)
}
