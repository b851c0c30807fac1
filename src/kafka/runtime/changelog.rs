//! The store's changelog: every batch's state changes on a compacted topic with one
//! partition, `<topic_prefix><group_id>-store-changelog`, from which an instance that
//! starts on an empty store (a lost disk, a new machine) restores the state before it
//! consumes anything, as a Kafka Streams task restores its state stores.
//!
//! # What goes on it, and when
//!
//! Each record is one store key (the record key) and its value (postcard bytes, as the
//! store holds them), or a tombstone for a removal; the runtime's own tables (outbox)
//! are not on it. A batch's records are followed by a *batch end* record. They are sent
//! once the batch's outputs are acknowledged, and the batch's offsets are committed only
//! once they are acknowledged too. So a batch whose records are on the changelog, up to
//! its end, had all its outputs acknowledged, and a committed batch is on the changelog.
//!
//! A crash between a batch's write and its changelog leaves its outbox entry, which
//! keeps the keys it wrote: on start, their current values go out again with the first
//! batch ([`Changelog::current`]).
//!
//! # Restoring
//!
//! A store in step with the changelog says so (a cell of the runtime's own): it is used
//! as it is. Otherwise the runtime writes a *fence* record (a value of its own) and
//! reads the changelog from its start until that fence (this needs no end offset, which
//! some brokers misreport). Records are applied batch by batch, at each batch end;
//! records after the last batch end (a batch cut by a crash) are not applied, and their
//! keys' restored values are written again so that a later restore does not apply them
//! either. The records that restored batches have acknowledged outputs; their input
//! records are consumed again from the group's committed offsets and recognised by
//! `event_id`.
//!
//! A restore cut by a crash is done again on the next start, over what it had applied.
//! A store that holds customers but is not in step, and not being restored (a store
//! from before the changelog, or one that ran with `kafka.changelog = false`), is the
//! newer copy: it is copied to the changelog whole, and the keys the changelog holds
//! that it does not are removed there.
//!
//! One partition keeps a batch's records in order with its end; the store is written by
//! one instance (see the README on scaling out).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use super::sink::{Sink, WireRecord};
use super::{kafka, RuntimeError, RuntimeStats};
use crate::engine::Engine;
use crate::settings::Settings;
use crate::store::{keys, Cell, Store, StoreError};

/// Ends a batch's records: a restore applies a batch once it reads its end.
const BATCH_END: &[u8] = b"#batch";
/// Written before the changelog is read back on start: reading stops at it.
const FENCE: &[u8] = b"#fence";
/// Records per store write while restoring, and per delivery while copying the store.
const CHUNK: usize = 20_000;

/// Set once the store is in step with the changelog.
const SYNCED: Cell<bool> = Cell::new(keys::kafka_runtime::CHANGELOG_SYNCED);
/// Set while a restore is under way (written with its first records).
const RESTORING: Cell<bool> = Cell::new(keys::kafka_runtime::CHANGELOG_RESTORING);

/// Whether a store key is state that the changelog carries (not the runtime's own).
fn is_state(key: &[u8]) -> bool {
    !key.starts_with(keys::kafka_runtime::NAMESPACE.bytes()) && !key.starts_with(b"#")
}

/// The changelog of one deployment's store.
pub(super) struct Changelog {
    topic: String,
}

impl Changelog {
    /// The changelog, if `kafka.changelog` is on.
    pub(super) fn new(settings: &Settings) -> Option<Self> {
        settings.kafka.changelog.then(|| Self {
            topic: settings.kafka.changelog_topic(),
        })
    }

    fn record(&self, key: &[u8], value: Option<&[u8]>) -> WireRecord {
        WireRecord {
            topic: self.topic.clone(),
            key: Some(key.to_vec()),
            payload: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
            source_timestamp: None,
            received_at: None,
            changelog: true,
        }
    }

    fn batch_end(&self) -> WireRecord {
        self.record(BATCH_END, Some(b""))
    }

    /// The changelog records of the state the store has staged, ended by a batch end,
    /// and the keys they carry (what the batch's outbox entry keeps); none without any.
    pub(super) fn records(&self, store: &Store) -> (Vec<WireRecord>, Vec<Vec<u8>>) {
        let mut records = Vec::new();
        let mut keys = Vec::new();
        for (key, value) in store.staged_writes() {
            if is_state(key) {
                records.push(self.record(key, value));
                keys.push(key.to_vec());
            }
        }
        if !records.is_empty() {
            records.push(self.batch_end());
        }
        (records, keys)
    }

    /// Whether the store has staged state changes (not only the runtime's own).
    pub(super) fn stages_state(store: &Store) -> bool {
        store.staged_writes().any(|(k, _)| is_state(k))
    }

    /// The records of `keys` with the values the store holds now, ended by a batch
    /// end: what a batch whose changelog a crash may have cut sends again.
    pub(super) fn current(
        &self,
        store: &Store,
        keys: &[Vec<u8>],
    ) -> Result<Vec<WireRecord>, StoreError> {
        let mut records = Vec::with_capacity(keys.len() + 1);
        for key in keys.iter().filter(|k| is_state(k)) {
            records.push(self.record(key, store.get_raw(key)?.as_deref()));
        }
        if !records.is_empty() {
            records.push(self.batch_end());
        }
        Ok(records)
    }
}

/// Brings the store in step with the changelog before anything is consumed: restores
/// an empty store from it, or copies a store that is not in step to it (module docs).
/// With the changelog off, marks the store as no longer in step. False: shutdown was
/// requested during an outage.
pub(super) async fn sync(
    changelog: Option<&Changelog>,
    settings: &Settings,
    engine: &mut Engine,
    sink: &mut Sink,
    stats: &RuntimeStats,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, RuntimeError> {
    let synced = SYNCED.get(engine.store())?.unwrap_or(false);
    let Some(changelog) = changelog else {
        if synced {
            SYNCED.remove(engine.store_mut());
            tokio::task::block_in_place(|| engine.commit())?;
        }
        return Ok(true);
    };
    if synced {
        return Ok(true);
    }
    let health = &stats.telemetry.health;
    health.set_restoring(true);
    let started = Instant::now();
    // A store restored in part (a crash during its restore) is restored again: the
    // whole changelog applied over it gives the changelog's state.
    let restoring = RESTORING.get(engine.store())?.unwrap_or(false);
    let copy = !restoring && engine.holds_customers()?;
    if !copy {
        RESTORING.put(engine.store_mut(), &true)?;
    }
    let fence = fence_value();
    if !sink
        .deliver(&[changelog.record(FENCE, Some(&fence))], shutdown)
        .await?
    {
        return Ok(false);
    }
    let Some(read) = read_back(changelog, settings, engine, &fence, copy, stats, shutdown)? else {
        return Ok(false);
    };
    let mut sent = 0;
    if copy {
        let Some(n) = copy_store(changelog, engine, &read.keys, sink, shutdown).await? else {
            return Ok(false);
        };
        sent = n;
    } else {
        // The cut batch's keys, as restored: a later restore does not apply the cut.
        let records = changelog.current(engine.store(), &read.cut)?;
        if !sink.deliver(&records, shutdown).await? {
            return Ok(false);
        }
    }
    SYNCED.put(engine.store_mut(), &true)?;
    RESTORING.remove(engine.store_mut());
    tokio::task::block_in_place(|| engine.commit())?;
    health.set_restoring(false);
    info!(
        restored = read.applied,
        read = read.read,
        not_applied = read.cut.len(),
        copied = sent,
        seconds = started.elapsed().as_secs_f64(),
        topic = %changelog.topic,
        "store in step with its changelog"
    );
    Ok(true)
}

/// A value no other start writes.
fn fence_value() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}-{}", std::process::id(), rand::random::<u64>()).into_bytes()
}

/// What reading the changelog back found.
#[derive(Default)]
struct ReadBack {
    /// Records read before the fence.
    read: u64,
    /// Records applied to the store.
    applied: u64,
    /// Keys of the records after the last batch end.
    cut: Vec<Vec<u8>>,
    /// Every state key the changelog holds (only when the store is copied to it).
    keys: HashSet<Vec<u8>>,
}

/// Reads the changelog from its start until `fence`; applies its complete batches to
/// the store, or (`copy`) only collects its keys. `None`: shutdown was requested.
fn read_back(
    changelog: &Changelog,
    settings: &Settings,
    engine: &mut Engine,
    fence: &[u8],
    copy: bool,
    stats: &RuntimeStats,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<ReadBack>, RuntimeError> {
    let consumer =
        super::clients::assigned_consumer(settings, "restore", "creating the changelog reader")?;
    {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&changelog.topic, 0, Offset::Beginning)
            .map_err(kafka("assigning the changelog"))?;
        consumer
            .assign(&tpl)
            .map_err(kafka("assigning the changelog"))?;
    }
    let mut found = ReadBack::default();
    let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut staged = 0usize;
    let mut last_progress = Instant::now();
    loop {
        // Shutdown requested, or nobody left to request it.
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            return Ok(None);
        }
        let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        let m = match polled {
            None => {
                if last_progress.elapsed() > Duration::from_secs(30) {
                    warn!(topic = %changelog.topic, records = found.read, "still reading the changelog back: no record for 30 s");
                    last_progress = Instant::now();
                }
                continue;
            }
            Some(Err(e)) => {
                warn!(error = %e, topic = %changelog.topic, "reading the changelog");
                continue;
            }
            Some(Ok(m)) => m,
        };
        last_progress = Instant::now();
        let key = m.key().unwrap_or_default();
        if key == FENCE {
            if m.payload() == Some(fence) {
                break;
            }
            continue;
        }
        found.read += 1;
        if key == BATCH_END {
            for (k, v) in batch.drain(..) {
                if copy {
                    found.keys.insert(k);
                    continue;
                }
                match v {
                    Some(v) => engine.store_mut().put_raw(k, v),
                    None => engine.store_mut().remove(k),
                }
                found.applied += 1;
                staged += 1;
            }
            if staged >= CHUNK {
                tokio::task::block_in_place(|| engine.commit())?;
                stats
                    .restored_records
                    .store(found.applied, Ordering::Relaxed);
                stats.telemetry.restored(staged);
                staged = 0;
            }
        } else if is_state(key) {
            batch.push((key.to_vec(), m.payload().map(<[u8]>::to_vec)));
        }
    }
    tokio::task::block_in_place(|| engine.commit())?;
    stats.telemetry.restored(staged);
    stats
        .restored_records
        .store(found.applied, Ordering::Relaxed);
    found.cut = batch.into_iter().map(|(k, _)| k).collect();
    if copy {
        found.keys.extend(found.cut.drain(..));
    }
    Ok(Some(found))
}

/// Copies every state key of the store to the changelog, and removes there the keys it
/// holds that the store does not, in batches. The records sent, or `None`: shutdown was
/// requested during an outage.
async fn copy_store(
    changelog: &Changelog,
    engine: &mut Engine,
    changelog_keys: &HashSet<Vec<u8>>,
    sink: &mut Sink,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<u64>, RuntimeError> {
    // `&mut`: a shared reference to the engine may not be held across an await.
    let mut sent = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = engine.store().committed_after(after.as_deref(), CHUNK)?;
        let Some((last, _)) = chunk.last() else { break };
        after = Some(last.clone());
        let mut records: Vec<WireRecord> = chunk
            .iter()
            .filter(|(k, _)| is_state(k))
            .map(|(k, v)| changelog.record(k, Some(v)))
            .collect();
        if records.is_empty() {
            continue;
        }
        records.push(changelog.batch_end());
        if !sink.deliver(&records, shutdown).await? {
            return Ok(None);
        }
        sent += records.len() as u64;
    }
    let mut gone: Vec<&Vec<u8>> = Vec::new();
    for key in changelog_keys {
        if !engine.store().contains(key)? {
            gone.push(key);
        }
    }
    for keys in gone.chunks(CHUNK) {
        let mut records: Vec<WireRecord> = keys.iter().map(|k| changelog.record(k, None)).collect();
        records.push(changelog.batch_end());
        if !sink.deliver(&records, shutdown).await? {
            return Ok(None);
        }
        sent += records.len() as u64;
    }
    Ok(Some(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_tables_and_changelog_markers_are_not_state() {
        assert!(!is_state(keys::kafka_runtime::OUTBOX.bytes()));
        assert!(!is_state(keys::kafka_runtime::CHANGELOG_SYNCED.bytes()));
        assert!(!is_state(BATCH_END));
        assert!(!is_state(FENCE));
        assert!(is_state(b"r/cu/cus_1"));
        assert!(is_state(b"e/seen/ev-1"));
    }

    #[test]
    fn a_batch_record_set_ends_with_its_end_and_leaves_out_the_outbox() {
        let mut store = Store::temporary().unwrap();
        store.put_raw(b"r/cu/cus_1".to_vec(), b"one".to_vec());
        store.remove(b"p/cu/cus_2".to_vec());
        store.put_raw(b"k/outbox/1".to_vec(), b"outputs".to_vec());
        let changelog = Changelog { topic: "t".into() };
        let (records, mut keys) = changelog.records(&store);
        keys.sort();
        assert_eq!(keys, vec![b"p/cu/cus_2".to_vec(), b"r/cu/cus_1".to_vec()]);
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].key.as_deref(), Some(BATCH_END));
        assert!(records.iter().all(|r| r.changelog && r.topic == "t"));
        let removal = records
            .iter()
            .find(|r| r.key.as_deref() == Some(b"p/cu/cus_2".as_slice()))
            .unwrap();
        assert_eq!(removal.payload, None, "a removal is a tombstone");
        assert!(Changelog { topic: "t".into() }
            .records(&Store::temporary().unwrap())
            .0
            .is_empty());
    }
}
