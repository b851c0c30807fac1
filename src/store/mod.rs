//! The embedded store: one sled tree, key prefixes per table, one atomic write per batch.
//!
//! All state lives in a single sled tree, and a batch (state of resolve and profile,
//! dedupe marks, outbox) is written atomically: after a crash either the whole batch is
//! there or none of it. Its writes go first to a redo file, synced, then into the tree
//! in small sled batches, so that no reader waits for a whole batch to be applied
//! ([`redo`]; sled's atomic batches hold a lock that every read of the database waits
//! for). Writes of a batch are staged in an in-memory overlay that reads see first;
//! [`Store::commit`] applies and flushes the overlay. Flushing happens per batch, never
//! per event, and can run on a background thread while the next batch is staged
//! ([`Store::commit_in_background`]).
//!
//! Values are encoded with postcard. Every key prefix (one table each) is declared in
//! [`keys`], with the part of unicus that owns it; the owners read and write through
//! typed [`Table`]s and [`Cell`]s ([`table`]). The raw methods here serve the tables,
//! audits and tests.

pub mod keys;
mod redo;
pub mod table;

pub use table::{Cell, Table};

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::generations::{FastMap, Generations};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store i/o failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value under `{key}` cannot be decoded: {source}")]
    Decode {
        key: String,
        source: postcard::Error,
    },
    #[error("value cannot be encoded: {0}")]
    Encode(postcard::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store and the overlay of the batch being built.
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// Writes of the current batch, not yet in sled; `None` is a removal.
    overlay: FastMap<Vec<u8>, Option<Vec<u8>>>,
    /// The keys of `overlay` under an [`keys::ORDERED`] prefix, in order: range scans
    /// of those tables (timers, time indexes) run per event and must not walk the
    /// whole overlay.
    overlay_ordered: BTreeSet<Vec<u8>>,
    /// The previous batch while a background thread applies and flushes it: reads see
    /// it until it is durable, so the next batch can be processed meanwhile.
    in_flight: Option<InFlight>,
    /// Committed values read or written lately (`None`: known absent), so that hot keys
    /// skip sled's tree walk. Always equal to what sled holds; at most its budget of
    /// bytes ([`ReadCache`]); never the keys of [`keys::UNCACHED`]. Behind a `RefCell`
    /// so that reads stay `&self`; the store is used by one thread.
    cache: RefCell<ReadCache>,
    /// Values decoded lately, shared ([`Store::get_shared`]): records that many events
    /// read (the source profiles of a common name's block) are decoded once. Always
    /// the value the overlay or sled holds: a key staged or abandoned is forgotten.
    decoded: RefCell<DecodedCache>,
    /// The one long-lived thread that applies and flushes batches (started at the first
    /// background commit). One thread, not one per batch: a new thread starts with an
    /// empty allocator heap and pays page faults for every allocation sled makes.
    flusher: Option<(
        std::sync::mpsc::Sender<FlushJob>,
        std::thread::JoinHandle<()>,
    )>,
    /// Batches applied, twice: odd while one is being applied. Shared with the
    /// [`Store::reader`]s, which read whole batches ([`Store::consistent`]).
    applied: Arc<AtomicU64>,
    /// The batch being applied, while `applied` is odd.
    applying: Applying,
    /// A reader's view: it never writes.
    read_only: bool,
    /// The redo file, until the flush thread takes it (none in a reader's view).
    redo: Option<redo::Redo>,
}

/// How long [`Store::open`] waits for the lock of a store closed a moment ago.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The error sled gives when another handle holds the store's directory lock.
fn is_lock_contention(e: &sled::Error) -> bool {
    // sled wraps the OS's EWOULDBLOCK in an error of its own kind with this message.
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

impl Drop for Store {
    /// Lets the flush thread finish and release the database (its lock) before the
    /// store is gone, so that it can be reopened at once.
    fn drop(&mut self) {
        if let Some((jobs, thread)) = self.flusher.take() {
            drop(jobs);
            let _ = thread.join();
        }
    }
}

struct FlushJob {
    staged: Arc<Staged>,
    ordered: Arc<BTreeSet<Vec<u8>>>,
    answer: std::sync::mpsc::Sender<Result<()>>,
}

type Staged = FastMap<Vec<u8>, Option<sled::IVec>>;

struct InFlight {
    staged: Arc<Staged>,
    ordered: Arc<BTreeSet<Vec<u8>>>,
    /// Answers once the batch is applied and flushed (none for a reader's view of the
    /// batch being applied).
    done: Option<std::sync::mpsc::Receiver<Result<()>>>,
}

/// The batch the flush thread is applying, under its (odd) number: readers take its
/// writes over what sled holds, so they read past it instead of waiting for it.
type Applying = Arc<std::sync::Mutex<Option<(u64, Arc<Staged>, Arc<BTreeSet<Vec<u8>>>)>>>;

/// Committed values (or their absence), up to half the budget in bytes per generation.
type ReadCache = Generations<Vec<u8>, Option<sled::IVec>>;

fn read_cache(budget: usize) -> ReadCache {
    Generations::weighed(budget / 2, |k, v| {
        k.len() + v.as_ref().map_or(0, |v| v.len()) + CACHE_ENTRY_OVERHEAD
    })
}

/// Decoded values, [`DECODED_GENERATION`] per generation: shared by later reads until
/// their key is written.
type DecodedCache = Generations<Vec<u8>, Decoded>;

type Decoded = Arc<dyn std::any::Any + Send + Sync>;

/// Values per generation of the decoded cache.
const DECODED_GENERATION: usize = 65_536;

fn is_ordered(key: &[u8]) -> bool {
    keys::ORDERED.iter().any(|p| key.starts_with(p))
}

/// Whether the read cache may keep `key` ([`keys::UNCACHED`]).
fn is_cached(key: &[u8]) -> bool {
    !keys::UNCACHED.iter().any(|p| key.starts_with(p))
}

/// Bytes a cache entry is counted for, beyond its key and value.
const CACHE_ENTRY_OVERHEAD: usize = 64;
/// Default budget of the read cache.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

impl Store {
    /// Opens (or creates) a store in a directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput);
        // sled 0.34 releases its directory lock when its own flush thread ends, which a
        // dropped `Db` does not wait for: a store closed a moment ago may still be
        // locked. Retry for a short while; a store another live process holds stays
        // locked far longer and is refused.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(e) if is_lock_contention(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let tree = db.open_tree("unicus")?;
        let redo = redo::Redo::recover(dir, &db, &tree)?;
        Self::from_db(db, tree, redo)
    }

    /// A store that lives in memory and disappears on drop (tests, replay without `--state`).
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open()?;
        let tree = db.open_tree("unicus")?;
        Self::from_db(db, tree, redo::Redo::none())
    }

    fn from_db(db: sled::Db, tree: sled::Tree, redo: redo::Redo) -> Result<Self> {
        Ok(Self {
            db,
            tree,
            overlay: FastMap::default(),
            overlay_ordered: BTreeSet::new(),
            in_flight: None,
            flusher: None,
            cache: RefCell::new(read_cache(DEFAULT_CACHE_BYTES)),
            decoded: RefCell::new(Generations::with_entries(DECODED_GENERATION)),
            applied: Arc::new(AtomicU64::new(0)),
            applying: Applying::default(),
            read_only: false,
            redo: Some(redo),
        })
    }

    /// A read-only view of what the store has committed, for another thread (the lookup
    /// API): it sees whole batches only when read through [`Store::consistent`], and
    /// keeps no cache (a cache would miss the writer's later batches).
    pub fn reader(&self) -> Result<Self> {
        Ok(Self {
            db: self.db.clone(),
            tree: self.tree.clone(),
            overlay: FastMap::default(),
            overlay_ordered: BTreeSet::new(),
            in_flight: None,
            flusher: None,
            cache: RefCell::new(read_cache(0)),
            decoded: RefCell::new(Generations::with_entries(0)),
            applied: self.applied.clone(),
            applying: self.applying.clone(),
            read_only: true,
            redo: None,
        })
    }

    /// Runs `read` on one committed state, so that what it reads across several keys is
    /// never of a batch half applied. While the flush thread applies a batch, `read` sees
    /// that batch's writes over what sled holds (the state once it is applied) instead of
    /// waiting; `read` runs again only if another batch started meanwhile. For readers
    /// on other threads; the writer's own reads need none.
    pub fn consistent<T, E>(
        &mut self,
        mut read: impl FnMut(&Self) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        loop {
            let before = self.applied.load(AtomicOrdering::SeqCst);
            self.in_flight = None;
            if before % 2 == 1 {
                let applying = self
                    .applying
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                match applying {
                    Some((seq, staged, ordered)) if seq == before => {
                        self.in_flight = Some(InFlight {
                            staged,
                            ordered,
                            done: None,
                        });
                    }
                    // Between the number and the batch: a moment.
                    _ => {
                        std::thread::yield_now();
                        continue;
                    }
                }
            }
            let value = read(self);
            self.in_flight = None;
            let after = self.applied.load(AtomicOrdering::SeqCst);
            // The same state, or the batch read over came to its end meanwhile.
            if after == before || (before % 2 == 1 && after == before + 1) {
                return value;
            }
        }
    }

    /// Sets the read cache's budget in bytes (0 disables it).
    pub fn set_cache_budget(&mut self, bytes: usize) {
        *self.cache.get_mut() = read_cache(bytes);
    }

    /// Reads a committed value through the cache.
    fn committed(&self, key: &[u8]) -> Result<Option<sled::IVec>> {
        if !is_cached(key) {
            return Ok(self.tree.get(key)?);
        }
        if let Some(v) = self.cache.borrow_mut().get(key) {
            return Ok(v);
        }
        let v = self.tree.get(key)?;
        self.cache.borrow_mut().insert(key.to_vec(), v.clone());
        Ok(v)
    }

    /// A value written but not yet durable: `Some(None)` is a removal.
    fn staged_value(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        if let Some(v) = self.overlay.get(key) {
            return Some(v.as_deref());
        }
        let in_flight = self.in_flight.as_ref()?;
        in_flight.staged.get(key).map(|v| v.as_deref())
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        if let Some(staged) = self.staged_value(key) {
            return Ok(staged.is_some());
        }
        Ok(self.committed(key)?.is_some())
    }

    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        if let Some(staged) = self.staged_value(key) {
            return staged.map(|bytes| decode(key, bytes)).transpose();
        }
        self.committed(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    /// The value under `key`, decoded once and shared by later reads until the key is
    /// written: for records read far more often than written.
    pub fn get_shared<T>(&self, key: &[u8]) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if let Some(v) = self.decoded.borrow_mut().get(key) {
            if let Ok(v) = v.downcast::<T>() {
                return Ok(Some(v));
            }
        }
        let Some(value) = self.get::<T>(key)? else {
            return Ok(None);
        };
        let value = Arc::new(value);
        self.decoded
            .borrow_mut()
            .insert(key.to_vec(), value.clone());
        Ok(Some(value))
    }

    fn stage(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.decoded.get_mut().remove(&key);
        if is_ordered(&key) {
            self.overlay_ordered.insert(key.clone());
        }
        self.overlay.insert(key, value);
    }

    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.stage(key, Some(value));
    }

    pub fn put<T: Serialize + ?Sized>(&mut self, key: Vec<u8>, value: &T) -> Result<()> {
        let bytes = postcard::to_stdvec(value).map_err(StoreError::Encode)?;
        self.stage(key, Some(bytes));
        Ok(())
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.stage(key, None);
    }

    /// The writes staged for the next commit, in no order (`None`: a removal).
    pub fn staged_writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.overlay
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// A value's bytes as the store holds them, staged or committed.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(match self.staged_value(key) {
            Some(v) => v.map(<[u8]>::to_vec),
            None => self.committed(key)?.map(|v| v.to_vec()),
        })
    }

    /// At most `limit` committed keys and values after `after` (from the first key
    /// without it), in key order: the store read whole in pieces. Staged writes are not
    /// read.
    pub fn committed_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        use std::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Unbounded,
        };
        self.tree
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StoreError::from)
            })
            .collect()
    }

    /// Keys and values under a prefix, overlay included, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .tree
            .scan_prefix(prefix)
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), Some(v.to_vec()))))
            .collect::<std::result::Result<_, _>>()?;
        if let Some(f) = &self.in_flight {
            for (k, v) in f.staged.iter() {
                if k.starts_with(prefix) {
                    merged.insert(k.clone(), v.as_ref().map(|v| v.to_vec()));
                }
            }
        }
        for (k, v) in &self.overlay {
            if k.starts_with(prefix) {
                merged.insert(k.clone(), v.clone());
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// At most `limit` keys and values in `[start, end)`, overlay included, in key
    /// order. Reads only that range (plus the staged writes of the batch).
    pub fn scan_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let in_range = |k: &[u8]| k >= start && k < end;
        let mut staged: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            std::collections::BTreeMap::new();
        if is_ordered(start) {
            if let Some(f) = &self.in_flight {
                for k in f.ordered.range(start.to_vec()..end.to_vec()) {
                    if let Some(v) = f.staged.get(k) {
                        staged.insert(k.clone(), v.as_ref().map(|v| v.to_vec()));
                    }
                }
            }
            for k in self.overlay_ordered.range(start.to_vec()..end.to_vec()) {
                if let Some(v) = self.overlay.get(k) {
                    staged.insert(k.clone(), v.clone());
                }
            }
        } else {
            if let Some(f) = &self.in_flight {
                for (k, v) in f.staged.iter().filter(|(k, _)| in_range(k)) {
                    staged.insert(k.clone(), v.as_ref().map(|v| v.to_vec()));
                }
            }
            for (k, v) in self.overlay.iter().filter(|(k, _)| in_range(k)) {
                staged.insert(k.clone(), v.clone());
            }
        }
        // Staged removals may hide committed keys: read that many more.
        let removals = staged.values().filter(|v| v.is_none()).count();
        let mut merged = std::collections::BTreeMap::new();
        for kv in self
            .tree
            .range(start..end)
            .take(limit.saturating_add(removals))
        {
            let (k, v) = kv?;
            merged.insert(k.to_vec(), Some(v.to_vec()));
        }
        merged.extend(staged);
        Ok(merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect())
    }

    /// The least key in `[start, end)` committed, in flight or staged, removals
    /// included: a lower bound of the first key there, which reads one key of sled
    /// and, in a table of [`keys::ORDERED`], none of the staged writes beyond it (a
    /// range scan merges them all).
    pub fn first_key_at_least(&self, start: &[u8], end: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut least = match self.tree.range(start..end).next() {
            Some(kv) => Some(kv?.0.to_vec()),
            None => None,
        };
        let mut consider = |key: Option<&Vec<u8>>| {
            if let Some(key) = key {
                if least.as_ref().is_none_or(|l| key < l) {
                    least = Some(key.clone());
                }
            }
        };
        if is_ordered(start) {
            if let Some(f) = &self.in_flight {
                consider(f.ordered.range(start.to_vec()..end.to_vec()).next());
            }
            consider(
                self.overlay_ordered
                    .range(start.to_vec()..end.to_vec())
                    .next(),
            );
        } else {
            let in_range = |k: &&Vec<u8>| k.as_slice() >= start && k.as_slice() < end;
            if let Some(f) = &self.in_flight {
                consider(f.staged.keys().filter(in_range).min());
            }
            consider(self.overlay.keys().filter(in_range).min());
        }
        Ok(least)
    }

    /// Every key and value of every tree of the database, committed or staged: what an
    /// audit of "what is stored about this person" must read. A full scan.
    pub fn audit_scan(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            if tree.name() == self.tree.name() {
                continue;
            }
            for kv in tree.iter() {
                let (k, v) = kv?;
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        out.extend(self.scan_prefix(b"")?);
        Ok(out)
    }

    /// Drops the staged writes: the batch never happened.
    pub fn abandon(&mut self) {
        let decoded = self.decoded.get_mut();
        for key in self.overlay.keys() {
            decoded.remove(key);
        }
        self.overlay.clear();
        self.overlay_ordered.clear();
    }

    /// Applies the staged writes atomically and flushes them to disk; durable on return.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_in_background()?;
        self.wait_durable()
    }

    /// Hands the staged writes to a background thread that applies them atomically and
    /// flushes them, and returns at once: the next batch can be staged meanwhile (reads
    /// see the batch in flight). Waits first for the previous batch, so at most one is
    /// in flight. [`Store::wait_durable`] says when it is on disk.
    pub fn commit_in_background(&mut self) -> Result<()> {
        self.wait_durable()?;
        if self.overlay.is_empty() {
            return Ok(());
        }
        if self.read_only {
            return Err(StoreError::Sled(sled::Error::Unsupported(
                "a reader of the store cannot commit".into(),
            )));
        }
        let staged: Arc<Staged> = Arc::new(
            self.overlay
                .drain()
                .map(|(k, v)| (k, v.map(sled::IVec::from)))
                .collect(),
        );
        let ordered = Arc::new(std::mem::take(&mut self.overlay_ordered));
        let (answer, done) = std::sync::mpsc::channel();
        self.flusher()?
            .send(FlushJob {
                staged: staged.clone(),
                ordered: ordered.clone(),
                answer,
            })
            .map_err(|_| {
                StoreError::Sled(sled::Error::ReportableBug(
                    "the store flush thread is gone".into(),
                ))
            })?;
        self.in_flight = Some(InFlight {
            staged,
            ordered,
            done: Some(done),
        });
        Ok(())
    }

    fn flusher(&mut self) -> Result<&std::sync::mpsc::Sender<FlushJob>> {
        if self.flusher.is_none() {
            let (jobs, queue) = std::sync::mpsc::channel::<FlushJob>();
            let (db, tree) = (self.db.clone(), self.tree.clone());
            let (applied, applying) = (self.applied.clone(), self.applying.clone());
            let mut redo = self.redo.take().ok_or_else(|| {
                StoreError::Sled(sled::Error::ReportableBug(
                    "the store's redo file is gone".into(),
                ))
            })?;
            let thread = std::thread::Builder::new()
                .name("unicus-store-flush".into())
                .spawn(move || {
                    // Ends when the store (the sender) is dropped.
                    let mut flushed = true;
                    for job in queue {
                        // Durable once applied and flushed; a crash in between is
                        // redone from the redo file at the next open.
                        if let Err(e) = redo.write(&job.staged) {
                            flushed = false;
                            let _ = job.answer.send(Err(e));
                            continue;
                        }
                        // Odd while the batch is applied, which readers then read over.
                        let seq = applied.load(AtomicOrdering::SeqCst) + 1;
                        *applying.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((seq, job.staged.clone(), job.ordered.clone()));
                        applied.fetch_add(1, AtomicOrdering::SeqCst);
                        let result = redo::apply(&tree, &job.staged);
                        applied.fetch_add(1, AtomicOrdering::SeqCst);
                        *applying.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        let result = result
                            .and_then(|()| db.flush().map(|_| ()))
                            .map_err(StoreError::from);
                        flushed = result.is_ok();
                        let _ = job.answer.send(result);
                    }
                    // Closed: the last batch flushed, nothing is left to redo.
                    if flushed {
                        let _ = redo.close();
                    }
                })
                .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
            self.flusher = Some((jobs, thread));
        }
        Ok(&self.flusher.as_ref().expect("set above").0)
    }

    /// Waits until the batch in flight (if any) is applied and flushed.
    pub fn wait_durable(&mut self) -> Result<()> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let result = match &f.done {
            Some(done) => done.recv().unwrap_or_else(|_| {
                Err(StoreError::Sled(sled::Error::ReportableBug(
                    "the store flush thread panicked".into(),
                )))
            }),
            None => Ok(()),
        };
        let cache = self.cache.get_mut();
        match result {
            Ok(()) => {
                let staged = Arc::try_unwrap(f.staged).unwrap_or_else(|shared| (*shared).clone());
                for (k, v) in staged.into_iter().filter(|(k, _)| is_cached(k)) {
                    cache.insert(k, v);
                }
                Ok(())
            }
            Err(e) => {
                // What sled holds is unknown now: the caches must not claim otherwise.
                cache.clear();
                self.decoded.get_mut().clear();
                Err(e)
            }
        }
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Decodes the value stored under `key`.
fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_waits_for_a_store_released_a_moment_later_and_refuses_one_kept_open() {
        let dir = tempfile::tempdir().unwrap();
        let held = Store::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        let refused = Store::open(dir.path()).err().expect("the lock is held");
        assert!(
            matches!(&refused, StoreError::Sled(e) if is_lock_contention(e)),
            "{refused}"
        );
        assert!(started.elapsed() >= LOCK_WAIT);
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        Store::open(dir.path()).expect("opened once the other handle is gone");
        release.join().unwrap();
    }

    #[test]
    fn overlay_is_read_before_commit_and_dropped_on_abandon() {
        let mut s = Store::temporary().unwrap();
        s.put(b"a".to_vec(), &7u32).unwrap();
        assert_eq!(s.get::<u32>(b"a").unwrap(), Some(7));
        s.abandon();
        assert_eq!(s.get::<u32>(b"a").unwrap(), None);
        s.put(b"a".to_vec(), &8u32).unwrap();
        s.commit().unwrap();
        s.remove(b"a".to_vec());
        assert!(!s.contains(b"a").unwrap());
        s.abandon();
        assert_eq!(s.get::<u32>(b"a").unwrap(), Some(8));
    }

    #[test]
    fn range_scans_merge_committed_in_flight_and_staged_keys_in_order() {
        for prefix in [&b"p/tm/"[..], &b"x/"[..]] {
            let k = |n: u8| [prefix, &[n]].concat();
            let mut s = Store::temporary().unwrap();
            for n in [1u8, 3, 5, 7] {
                s.put_raw(k(n), vec![n]);
            }
            s.commit().unwrap();
            s.put_raw(k(2), vec![2]);
            s.remove(k(3));
            s.commit_in_background().unwrap();
            s.put_raw(k(4), vec![4]);
            s.remove(k(5));
            let got: Vec<u8> = s
                .scan_range(&k(0), &k(7), 10)
                .unwrap()
                .into_iter()
                .map(|(_, v)| v[0])
                .collect();
            assert_eq!(got, [1, 2, 4], "prefix {prefix:?}");
            let two = s.scan_range(&k(0), &k(9), 2).unwrap();
            assert_eq!(two.len(), 2);
            s.wait_durable().unwrap();
            assert_eq!(s.scan_range(&k(2), &k(9), 10).unwrap().len(), 3);
        }
    }

    #[test]
    fn committed_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.put(b"r/x/email\0a@b.fr".to_vec(), &"v".to_string())
                .unwrap();
            s.put(b"r/y".to_vec(), &1u8).unwrap();
            s.commit().unwrap();
            s.put(b"r/z".to_vec(), &1u8).unwrap(); // never committed
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.get::<String>(b"r/x/email\0a@b.fr").unwrap(),
            Some("v".into())
        );
        assert_eq!(s.scan_prefix(b"r/").unwrap().len(), 2);
    }

    #[test]
    fn shared_values_always_agree_with_what_is_staged_or_committed() {
        let mut s = Store::temporary().unwrap();
        assert_eq!(s.get_shared::<u32>(b"k").unwrap(), None);
        s.put(b"k".to_vec(), &1u32).unwrap();
        assert_eq!(s.get_shared::<u32>(b"k").unwrap().as_deref(), Some(&1));
        s.commit().unwrap();
        let first = s.get_shared::<u32>(b"k").unwrap().unwrap();
        // Decoded once: later reads share it.
        assert!(Arc::ptr_eq(
            &first,
            &s.get_shared::<u32>(b"k").unwrap().unwrap()
        ));
        s.put(b"k".to_vec(), &2u32).unwrap();
        assert_eq!(s.get_shared::<u32>(b"k").unwrap().as_deref(), Some(&2));
        s.abandon();
        assert_eq!(s.get_shared::<u32>(b"k").unwrap().as_deref(), Some(&1));
        s.remove(b"k".to_vec());
        assert_eq!(s.get_shared::<u32>(b"k").unwrap(), None);
        s.commit_in_background().unwrap();
        assert_eq!(s.get_shared::<u32>(b"k").unwrap(), None);
        s.wait_durable().unwrap();
        // Past a generation's size, what is read stays and the rest goes.
        for i in 0..(DECODED_GENERATION as u32 * 2 + 10) {
            s.put(i.to_be_bytes().to_vec(), &i).unwrap();
            assert_eq!(
                s.get_shared::<u32>(&i.to_be_bytes()).unwrap().as_deref(),
                Some(&i)
            );
            assert_eq!(
                s.get_shared::<u32>(&0u32.to_be_bytes()).unwrap().as_deref(),
                Some(&0)
            );
        }
        let decoded = s.decoded.borrow();
        assert!(decoded.held() <= 2 * DECODED_GENERATION);
        assert!(decoded.is_young(&0u32.to_be_bytes()[..]));
    }

    #[test]
    fn the_first_key_at_least_is_read_over_committed_in_flight_and_staged_keys() {
        for prefix in [&b"p/tm/"[..], &b"x/"[..]] {
            let k = |n: u8| [prefix, &[n]].concat();
            let first = |s: &Store, from: u8| s.first_key_at_least(&k(from), &k(9)).unwrap();
            let mut s = Store::temporary().unwrap();
            assert_eq!(first(&s, 0), None);
            s.put_raw(k(6), vec![6]);
            s.commit().unwrap();
            assert_eq!(first(&s, 0), Some(k(6)));
            s.put_raw(k(4), vec![4]);
            s.commit_in_background().unwrap();
            assert_eq!(first(&s, 0), Some(k(4)));
            s.put_raw(k(2), vec![2]);
            assert_eq!(first(&s, 0), Some(k(2)));
            assert_eq!(first(&s, 3), Some(k(4)));
            assert_eq!(first(&s, 5), Some(k(6)));
            assert_eq!(first(&s, 7), None);
            // A staged removal still counts: a lower bound, never past a key there.
            s.remove(k(2));
            assert_eq!(first(&s, 0), Some(k(2)));
            s.wait_durable().unwrap();
            // The end is excluded.
            assert_eq!(s.first_key_at_least(&k(5), &k(6)).unwrap(), None);
        }
    }

    #[test]
    fn the_read_cache_keeps_what_is_read_often_within_its_budget() {
        let mut s = Store::temporary().unwrap();
        s.set_cache_budget(4_000);
        s.put(b"hot".to_vec(), &0u32).unwrap();
        for i in 0..500u32 {
            s.put(format!("k{i}").into_bytes(), &i).unwrap();
        }
        s.commit().unwrap();
        for i in 0..500u32 {
            assert_eq!(s.get::<u32>(format!("k{i}").as_bytes()).unwrap(), Some(i));
            assert_eq!(s.get::<u32>(b"hot").unwrap(), Some(0));
            let cache = s.cache.borrow();
            assert!(cache.is_young(&b"hot"[..]), "read {i}");
            let held = cache.held();
            assert!(held <= 4_000, "{held} bytes held");
        }
    }

    #[test]
    fn the_read_cache_keeps_no_seen_marks_nor_keys_of_tables_read_by_range() {
        let mut s = Store::temporary().unwrap();
        let seen = [keys::engine::SEEN_EVENTS.bytes(), b"ev-1"].concat();
        let timer = [keys::profile::TIMERS.bytes(), &[0u8; 8][..]].concat();
        let customer = [keys::resolve::CUSTOMERS.bytes(), b"c-1"].concat();
        let never = [keys::engine::SEEN_EVENTS.bytes(), b"ev-2"].concat();
        for k in [&seen, &timer, &customer] {
            s.put(k.clone(), &1u32).unwrap();
        }
        s.commit().unwrap();
        for k in [&seen, &timer, &customer, &never] {
            let expected = (k != &never).then_some(1u32);
            assert_eq!(s.get::<u32>(k).unwrap(), expected);
        }
        let cache = s.cache.borrow();
        assert!(
            cache.is_young(&customer[..]),
            "a record read one by one is kept"
        );
        for k in [&seen, &timer, &never] {
            assert!(
                !cache.is_young(&k[..]),
                "{:?} kept",
                String::from_utf8_lossy(k)
            );
        }
        drop(cache);
        // Read from sled each time, so always what was committed.
        s.remove(seen.clone());
        s.put(timer.clone(), &2u32).unwrap();
        s.commit().unwrap();
        assert_eq!(s.get::<u32>(&seen).unwrap(), None);
        assert_eq!(s.get::<u32>(&timer).unwrap(), Some(2));
    }

    #[test]
    fn read_cache_always_agrees_with_what_was_committed() {
        for budget in [0, 200, DEFAULT_CACHE_BYTES] {
            let mut s = Store::temporary().unwrap();
            s.set_cache_budget(budget);
            assert_eq!(s.get::<u32>(b"k").unwrap(), None); // absent, remembered as such
            s.put(b"k".to_vec(), &1u32).unwrap();
            s.commit().unwrap();
            assert_eq!(s.get::<u32>(b"k").unwrap(), Some(1));
            s.put(b"k".to_vec(), &2u32).unwrap();
            s.abandon();
            assert_eq!(s.get::<u32>(b"k").unwrap(), Some(1), "budget {budget}");
            for i in 0..50u32 {
                s.put(format!("x{i}").into_bytes(), &i).unwrap();
            }
            s.remove(b"k".to_vec());
            s.commit().unwrap();
            assert_eq!(s.get::<u32>(b"k").unwrap(), None, "budget {budget}");
            assert_eq!(s.get::<u32>(b"x7").unwrap(), Some(7));
        }
    }

    #[test]
    fn a_reader_on_another_thread_sees_whole_batches_only() {
        // Each batch writes its number under every key: a read that mixed two batches
        // would find two numbers.
        const KEYS: u32 = 300;
        let mut s = Store::temporary().unwrap();
        let mut reader = s.reader().unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            std::thread::spawn(move || {
                let (mut reads, mut last) = (0u32, 0u32);
                while !done.load(AtomicOrdering::SeqCst) {
                    let seen: Vec<u32> = reader
                        .consistent(|r| {
                            (0..KEYS)
                                .map(|k| {
                                    r.get::<u32>(&k.to_be_bytes())
                                        .map(Option::unwrap_or_default)
                                })
                                .collect::<Result<Vec<u32>>>()
                        })
                        .unwrap();
                    assert!(
                        seen.iter().all(|v| *v == seen[0]),
                        "a batch half seen: {seen:?}"
                    );
                    assert!(seen[0] >= last, "went back from {last} to {}", seen[0]);
                    last = seen[0];
                    reads += 1;
                }
                (reads, last)
            })
        };
        for batch in 1..=200u32 {
            for k in 0..KEYS {
                s.put(k.to_be_bytes().to_vec(), &batch).unwrap();
            }
            s.commit_in_background().unwrap();
        }
        s.wait_durable().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        done.store(true, AtomicOrdering::SeqCst);
        let (reads, last) = watcher.join().unwrap();
        assert!(reads > 0);
        assert_eq!(
            last, 200,
            "the reader sees the last batch once it is applied"
        );
        let mut reader = s.reader().unwrap();
        reader.put(b"x".to_vec(), &1u32).unwrap();
        assert!(reader.commit().is_err(), "a reader never writes");
    }

    #[test]
    fn a_reader_reads_over_a_batch_being_applied_as_if_it_were_done() {
        // The flush thread's state while it applies a batch, set by hand: the batch
        // writes 2 under both keys; sled gets it in the middle of the reader's read.
        let mut s = Store::temporary().unwrap();
        s.put(b"a".to_vec(), &1u32).unwrap();
        s.put(b"b".to_vec(), &1u32).unwrap();
        s.commit().unwrap();
        let mut reader = s.reader().unwrap();
        let staged: Staged = [b"a", b"b"]
            .iter()
            .map(|k| (k.to_vec(), Some(postcard::to_stdvec(&2u32).unwrap().into())))
            .collect();
        let seq = s.applied.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        *s.applying.lock().unwrap() = Some((seq, Arc::new(staged), Arc::default()));
        let tree = s.tree.clone();
        let applied = s.applied.clone();
        let mut calls = 0;
        let seen = reader
            .consistent(|r| {
                calls += 1;
                let a = r.get::<u32>(b"a")?;
                if calls == 1 {
                    // The batch lands in sled and ends between the two reads.
                    let mut batch = sled::Batch::default();
                    batch.insert(b"a", postcard::to_stdvec(&2u32).unwrap());
                    batch.insert(b"b", postcard::to_stdvec(&2u32).unwrap());
                    tree.apply_batch(batch).unwrap();
                    applied.fetch_add(1, AtomicOrdering::SeqCst);
                }
                Ok::<_, StoreError>((a, r.get::<u32>(b"b")?))
            })
            .unwrap();
        assert_eq!(seen, (Some(2), Some(2)));
        assert_eq!(calls, 1, "no second read for a batch read over");
    }

    #[test]
    fn a_batch_in_flight_is_read_and_then_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.put(b"a".to_vec(), &1u32).unwrap();
            s.put(b"gone".to_vec(), &1u32).unwrap();
            s.commit().unwrap();
            s.put(b"a".to_vec(), &2u32).unwrap();
            s.remove(b"gone".to_vec());
            s.commit_in_background().unwrap();
            // Next batch, staged while the previous one flushes.
            assert_eq!(s.get::<u32>(b"a").unwrap(), Some(2));
            assert!(!s.contains(b"gone").unwrap());
            assert_eq!(s.scan_prefix(b"").unwrap().len(), 1);
            s.put(b"a".to_vec(), &3u32).unwrap();
            s.put(b"b".to_vec(), &4u32).unwrap();
            s.commit_in_background().unwrap();
            s.put(b"never".to_vec(), &5u32).unwrap(); // staged, not committed
            s.wait_durable().unwrap();
            assert_eq!(s.get::<u32>(b"a").unwrap(), Some(3));
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get::<u32>(b"a").unwrap(), Some(3));
        assert_eq!(s.get::<u32>(b"b").unwrap(), Some(4));
        assert_eq!(s.get::<u32>(b"gone").unwrap(), None);
        assert_eq!(s.get::<u32>(b"never").unwrap(), None);
    }

    #[test]
    fn undecodable_value_is_an_error_naming_the_key() {
        let mut s = Store::temporary().unwrap();
        s.put_raw(b"k".to_vec(), vec![0xff, 0xff, 0xff]);
        let err = s.get::<String>(b"k").unwrap_err();
        assert!(err.to_string().contains("`k`"), "{err}");
    }
}
