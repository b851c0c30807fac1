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
//! A store keeps its place on the changelog ([`NEXT`]: the offset after the last batch
//! it holds). The deployment's writer (see [`super::election`]) writes a *fence* record
//! (a value of its own) and reads the changelog from the store's place (from its start
//! for an empty store) until that fence (this needs no end offset, which some brokers
//! misreport). Each batch end carries the id of the writer that wrote it: the batches of
//! the store's own last term are in it already and are not applied again (newer writes
//! may follow them); the others are applied batch by batch, at each batch end; records
//! after the last batch end (a batch cut by a crash) are not applied, and their keys'
//! restored values are written again so that a later restore does not apply them
//! either. The records that restored batches have acknowledged outputs; their input
//! records are consumed again from the group's committed offsets and recognised by
//! `event_id`.
//!
//! If another writer's batch follows the store's place while the store holds a batch
//! whose changelog a crash may have cut (an outbox entry with keys), the store is emptied
//! and restored from the start: that writer consumed the batch's inputs again.
//!
//! A restore cut by a crash is done again on the next start, over what it had applied.
//! A store that holds customers but is not in step, and not being restored (a store
//! from before the changelog, or one that ran with `kafka.changelog = false`), is the
//! newer copy: it is copied to the changelog whole, and the keys the changelog holds
//! that it does not are removed there.
//!
//! # Standing by
//!
//! An instance that is not the writer follows the changelog into its store the same
//! way, from its place, until it is elected ([`stand_by`]); once it has read all there
//! was, the store is in step up to its place, and the lookup API answers from it.
//!
//! One partition keeps a batch's records in order with its end; the store is written by
//! one instance at a time (see the README on scaling out).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::{info, warn};

use super::election::Election;
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
/// The changelog offset the store is in step with (the next record to read).
pub(super) const NEXT: Cell<i64> = Cell::new(keys::kafka_runtime::CHANGELOG_NEXT);
/// The writer id of the store's last term as the writer.
const WRITER: Cell<Vec<u8>> = Cell::new(keys::kafka_runtime::CHANGELOG_WRITER);
/// The writer whose term the store's place is in.
const TERM: Cell<Vec<u8>> = Cell::new(keys::kafka_runtime::CHANGELOG_TERM);
/// How writer ids (on a term's fence and its batch ends) begin; fences and batch ends
/// written before writer ids do not.
const TERM_PREFIX: &[u8] = b"w:";

/// Whether a store key is state that the changelog carries (not the runtime's own).
fn is_state(key: &[u8]) -> bool {
    !key.starts_with(keys::kafka_runtime::NAMESPACE.bytes()) && !key.starts_with(b"#")
}

/// The changelog of one deployment's store.
pub(super) struct Changelog {
    topic: String,
    /// This term's writer id, on each batch end it writes.
    writer: Vec<u8>,
}

impl Changelog {
    /// The changelog, if `kafka.changelog` is on.
    pub(super) fn new(settings: &Settings) -> Option<Self> {
        settings.kafka.changelog.then(|| Self {
            topic: settings.kafka.changelog_topic(),
            writer: writer_id(),
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
        self.record(BATCH_END, Some(&self.writer))
    }

    /// Sends a fence that opens no writer's term (readers skip it): where the broker
    /// creates topics on first use, this creates the changelog. False: shutdown was
    /// requested while the broker refused it.
    pub(super) async fn announce(
        &self,
        sink: &mut Sink,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, RuntimeError> {
        sink.deliver(&[self.record(FENCE, Some(&fence_value()))], shutdown)
            .await
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

/// Brings the store in step with the changelog before anything is consumed, once this
/// instance is the deployment's writer: restores an empty store from it, reads the
/// records after the store's place on it (what other writers wrote since), or copies a
/// store that is not in step to it (module docs). With the changelog off, marks the
/// store as no longer in step. False: shutdown was requested during an outage.
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
            NEXT.remove(engine.store_mut());
            tokio::task::block_in_place(|| engine.commit())?;
        }
        return Ok(true);
    };
    let health = &stats.telemetry.health;
    health.set_restoring(true);
    let started = Instant::now();
    // A store restored in part (a crash during its restore) is restored again from its
    // place: the changelog applied over it gives the changelog's state.
    let restoring = RESTORING.get(engine.store())?.unwrap_or(false);
    let mut next = NEXT.get(engine.store())?;
    let copy = !restoring && !synced && next.is_none() && engine.holds_customers()?;
    if !copy && !synced {
        RESTORING.put(engine.store_mut(), &true)?;
    }
    // The fence opens this writer's term: batches of any other writer after it are a
    // deposed writer's (module docs).
    let fence = changelog.writer.clone();
    if !sink
        .deliver(&[changelog.record(FENCE, Some(&fence))], shutdown)
        .await?
    {
        return Ok(false);
    }
    let mut wiped = false;
    let read = loop {
        // A restore cut by a crash starts again from the changelog's start.
        let from = if copy || restoring { None } else { next };
        let until = Until::Fence(&fence);
        match read(
            changelog, settings, engine, from, until, copy, stats, shutdown,
        )? {
            Read::Done(read) => break read,
            Read::Stopped => return Ok(false),
            Read::Wipe => {
                wipe(engine)?;
                wiped = true;
                next = None;
            }
        }
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
    // This writer's term begins after its fence.
    stats.changelog_term.store(read.next, Ordering::Relaxed);
    // In step with everything up to the fence and with what was sent after it.
    let next = read.next.max(stats.changelog_next.load(Ordering::Relaxed));
    NEXT.put(engine.store_mut(), &next)?;
    WRITER.put(engine.store_mut(), &changelog.writer)?;
    TERM.put(engine.store_mut(), &changelog.writer)?;
    SYNCED.put(engine.store_mut(), &true)?;
    RESTORING.remove(engine.store_mut());
    tokio::task::block_in_place(|| engine.commit())?;
    health.set_restoring(false);
    info!(
        restored = read.applied,
        read = read.read,
        not_applied = read.cut.len(),
        deposed_writers_batches = read.deposed,
        copied = sent,
        wiped,
        seconds = started.elapsed().as_secs_f64(),
        topic = %changelog.topic,
        "store in step with its changelog"
    );
    Ok(true)
}

/// Stands by until this instance is elected the deployment's writer, following the
/// changelog into the store meanwhile (a warm replica, whose committed state the lookup
/// API answers from once it has read all there was: `caught_up`). A store that is not
/// in step with the changelog but holds customers (from before the changelog) follows
/// nothing: it is copied to the changelog if elected. False: shutdown was requested.
pub(super) async fn stand_by(
    changelog: &Changelog,
    settings: &Settings,
    engine: &mut Engine,
    election: &Election,
    stats: &RuntimeStats,
    caught_up: &AtomicBool,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, RuntimeError> {
    if election.is_writer() {
        return Ok(true);
    }
    let health = &stats.telemetry.health;
    health.set_standby(true);
    info!(topic = %changelog.topic, "standing by: another instance writes the store; following its changelog until elected");
    let synced = SYNCED.get(engine.store())?.unwrap_or(false);
    let restoring = RESTORING.get(engine.store())?.unwrap_or(false);
    let mut next = NEXT.get(engine.store())?;
    if !synced && !restoring && next.is_none() && engine.holds_customers()? {
        warn!("the store holds customers but was not kept with the changelog: it follows nothing, and is copied to the changelog if this instance is elected");
        while !election.is_writer() {
            health.beat();
            if *shutdown.borrow() || shutdown.has_changed().is_err() {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        health.set_standby(false);
        return Ok(true);
    }
    let restoring = restoring || !synced;
    if restoring {
        RESTORING.put(engine.store_mut(), &true)?;
        next = None;
    }
    loop {
        let until = Until::Elected {
            election,
            caught_up,
        };
        match read(
            changelog, settings, engine, next, until, false, stats, shutdown,
        )? {
            Read::Done(_) => break,
            Read::Stopped => return Ok(false),
            Read::Wipe => {
                wipe(engine)?;
                RESTORING.put(engine.store_mut(), &true)?;
                next = None;
            }
        }
    }
    health.set_standby(false);
    Ok(true)
}

/// Removes everything the store holds (state, outbox and marks), for a restore from
/// the changelog's start: a store whose batches not on the changelog were overtaken by
/// another writer's.
fn wipe(engine: &mut Engine) -> Result<(), RuntimeError> {
    let mut removed = 0u64;
    loop {
        let chunk = engine.store().committed_after(None, CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        for (key, _) in chunk {
            engine.store_mut().remove(key);
            removed += 1;
        }
        tokio::task::block_in_place(|| engine.commit())?;
    }
    RESTORING.put(engine.store_mut(), &true)?;
    tokio::task::block_in_place(|| engine.commit())?;
    warn!(
        removed,
        "another writer wrote the changelog after this store's last batch, whose changelog a crash may have cut: the store was emptied, to be restored from the changelog's start"
    );
    Ok(())
}

/// A reader of the changelog from `from` (its start if `None`).
fn reader(
    changelog: &Changelog,
    settings: &Settings,
    from: Option<i64>,
) -> Result<BaseConsumer, RuntimeError> {
    let consumer =
        super::clients::assigned_consumer(settings, "restore", "creating the changelog reader")?;
    let offset = from.map_or(Offset::Beginning, Offset::Offset);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&changelog.topic, 0, offset)
        .map_err(kafka("assigning the changelog"))?;
    consumer
        .assign(&tpl)
        .map_err(kafka("assigning the changelog"))?;
    // The list is dropped here, before the consumer.
    drop(tpl);
    Ok(consumer)
}

/// Commits what was applied from the changelog (`staged` records), and counts them.
fn commit_applied(
    engine: &mut Engine,
    stats: &RuntimeStats,
    staged: &mut usize,
) -> Result<(), RuntimeError> {
    tokio::task::block_in_place(|| engine.commit())?;
    stats
        .restored_records
        .fetch_add(*staged as u64, Ordering::Relaxed);
    stats.telemetry.restored(*staged);
    *staged = 0;
    Ok(())
}

/// Marks a standby's store in step with the changelog up to its place: no batch on it
/// is the store's own unless it was the writer before.
fn mark_in_step(engine: &mut Engine) -> Result<(), RuntimeError> {
    if WRITER.get(engine.store())?.is_none() {
        WRITER.put(engine.store_mut(), &fence_value())?;
    }
    SYNCED.put(engine.store_mut(), &true)?;
    RESTORING.remove(engine.store_mut());
    Ok(())
}

/// A writer id: a value no other start writes, marked as a writer's.
fn writer_id() -> Vec<u8> {
    [TERM_PREFIX, &fence_value()].concat()
}

/// A value no other start writes.
fn fence_value() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}-{}", std::process::id(), rand::random::<u64>()).into_bytes()
}

/// Where a read of the changelog stops.
enum Until<'a> {
    /// At this fence: a writer taking over reads what was written before it.
    Fence(&'a [u8]),
    /// Once this instance is elected: a standby follows the changelog until then.
    Elected {
        election: &'a Election,
        caught_up: &'a AtomicBool,
    },
}

/// How a read of the changelog ended.
enum Read {
    Done(ReadBack),
    /// Another writer's batch came while the store has batches whose changelog a crash
    /// may have cut (outbox entries): the store must be emptied and restored.
    Wipe,
    /// Shutdown was requested.
    Stopped,
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
    /// The offset after the fence: where the store is in step once it is read.
    next: i64,
    /// Batches of a deposed writer, not applied.
    deposed: u64,
}

/// Reads the changelog from `from` (its start if `None`) until `until`; applies its
/// complete batches to the store, keeping the store's place on it, or (`copy`) only
/// collects its keys.
#[allow(clippy::too_many_arguments)]
fn read(
    changelog: &Changelog,
    settings: &Settings,
    engine: &mut Engine,
    from: Option<i64>,
    until: Until<'_>,
    copy: bool,
    stats: &RuntimeStats,
    shutdown: &watch::Receiver<bool>,
) -> Result<Read, RuntimeError> {
    let consumer = reader(changelog, settings, from)?;
    // The batches of the store's last term as the writer are in it already (each was
    // durable before it went to the changelog), and newer writes may follow them: they
    // are not applied again. A store in step from before writer ids wrote empty batch
    // ends; a store being restored has no batch of its own.
    let own = match WRITER.get(engine.store())? {
        // Read from the start: everything is applied.
        _ if from.is_none() => None,
        Some(id) => Some(id),
        None if SYNCED.get(engine.store())?.unwrap_or(false) => Some(Vec::new()),
        None => None,
    };
    let unsent = super::outbox::holds_entries(engine.store())?;
    // The writer whose term the reading is in: another writer's batches are a deposed
    // writer's (it wrote after the fence that opened this term), never applied.
    let mut term = match from {
        Some(_) => TERM.get(engine.store())?,
        None => None,
    };
    let mut found = ReadBack::default();
    let mut batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut staged = 0usize;
    let mut last_progress = Instant::now();
    loop {
        // Shutdown requested, or nobody left to request it.
        if *shutdown.borrow() || shutdown.has_changed().is_err() {
            return Ok(Read::Stopped);
        }
        if let Until::Elected { election, .. } = &until {
            // A standby's loop turns here: `/healthz` follows it.
            stats.telemetry.health.beat();
            if election.is_writer() {
                // Every batch up to its place is applied (from the start if it began
                // empty): the writer's read goes on from there, not from the start.
                mark_in_step(engine)?;
                break;
            }
        }
        let polled = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        let m = match polled {
            None => {
                if let Until::Elected { caught_up, .. } = &until {
                    // All there was is read: the replica is in step (from its place on,
                    // not from the start, if it is elected), for its lookups too.
                    if !caught_up.load(Ordering::Acquire) {
                        mark_in_step(engine)?;
                    }
                    if staged > 0 || !caught_up.load(Ordering::Acquire) {
                        commit_applied(engine, stats, &mut staged)?;
                    }
                    stats.telemetry.health.set_restoring(false);
                    caught_up.store(true, Ordering::Release);
                } else if last_progress.elapsed() > Duration::from_secs(30) {
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
            let payload = m.payload().unwrap_or_default();
            if payload.starts_with(TERM_PREFIX) {
                term = Some(payload.to_vec());
                if !copy {
                    TERM.put(engine.store_mut(), &payload.to_vec())?;
                }
            }
            if let Until::Fence(fence) = &until {
                if payload == *fence {
                    found.next = m.offset().saturating_add(1);
                    break;
                }
            }
            continue;
        }
        found.read += 1;
        if key == BATCH_END {
            let writer = m.payload().unwrap_or_default();
            let deposed =
                writer.starts_with(TERM_PREFIX) && term.as_deref().is_some_and(|t| t != writer);
            if deposed {
                found.deposed += 1;
                batch.clear();
            }
            let is_own = own.as_deref() == Some(writer);
            if !copy && !is_own && !deposed && unsent {
                return Ok(Read::Wipe);
            }
            if is_own && !copy {
                batch.clear();
            }
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
            if !copy {
                NEXT.put(engine.store_mut(), &m.offset().saturating_add(1))?;
            }
            if staged >= CHUNK {
                commit_applied(engine, stats, &mut staged)?;
            }
        } else if is_state(key) {
            batch.push((key.to_vec(), m.payload().map(<[u8]>::to_vec)));
        }
    }
    commit_applied(engine, stats, &mut staged)?;
    found.cut = batch.into_iter().map(|(k, _)| k).collect();
    if copy {
        found.keys.extend(found.cut.drain(..));
    }
    // A standby elected mid-batch leaves the batch to the writer's read, from its place.
    if matches!(until, Until::Elected { .. }) {
        found.cut.clear();
    }
    Ok(Read::Done(found))
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
        let changelog = Changelog {
            topic: "t".into(),
            writer: b"w".to_vec(),
        };
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
        assert!(changelog.records(&Store::temporary().unwrap()).0.is_empty());
    }
}
