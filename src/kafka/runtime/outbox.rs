//! The outbox: a batch's output records, written to the store in the same atomic write
//! as the state they come from, kept until acknowledged, and re-sent on start.
//!
//! An entry is removed in the write of the next batch (its records were acknowledged
//! before that batch was gathered), or on a clean stop. An entry found on start belongs
//! to a run that stopped between the write and the acknowledgement: its records are
//! produced again, before anything is consumed.

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

/// The outbox entries of this run.
#[derive(Default)]
pub(super) struct Outbox {
    /// The entry of the last batch written, acknowledged by the time the next is staged.
    previous: Option<u64>,
}

impl Outbox {
    /// Stages, in the store's next write, a new entry holding `records` (none if there
    /// are none) and the removal of the previous one. Returns the new entry's number,
    /// to pass to [`Outbox::written`] once that write is flushed.
    pub(super) fn stage(
        &self,
        store: &mut Store,
        records: &[WireRecord],
    ) -> Result<u64, StoreError> {
        let seq = OUTBOX_SEQ.get(store)?.unwrap_or(0) + 1;
        OUTBOX_SEQ.put(store, &seq)?;
        if let Some(prev) = self.previous {
            OUTBOX.remove(store, prev);
        }
        if !records.is_empty() {
            OUTBOX.put(store, seq, records)?;
        }
        Ok(seq)
    }

    /// The entry `seq` is in the store.
    pub(super) fn written(&mut self, seq: u64) {
        self.previous = Some(seq);
    }

    /// On a clean stop, every entry was acknowledged: removes the last one.
    pub(super) fn clear(&self, engine: &mut Engine) -> Result<(), RuntimeError> {
        if let Some(prev) = self.previous {
            OUTBOX.remove(engine.store_mut(), prev);
        }
        tokio::task::block_in_place(|| engine.commit())?;
        Ok(())
    }
}

/// Sends what the outbox holds, then empties it. False: shutdown was requested during
/// an outage, and what is left stays for the next start.
pub(super) async fn resend(
    engine: &mut Engine,
    sink: &Sink,
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
        if !sink.deliver(&records, shutdown).await {
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
