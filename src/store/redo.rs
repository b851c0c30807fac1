//! The redo record that makes a batch's write atomic.
//!
//! sled applies a `Batch` atomically, but under its global lock, which every read of
//! the database takes too: the engine's reads of the next batch and the lookup API's
//! waited until a whole batch (tens of thousands of writes) was in the tree. Instead,
//! the flush thread first writes the batch's writes to a file of their own beside
//! sled's and syncs it, then applies them in key order, in small sled batches between
//! which waiting readers get in (they read over the batch being applied:
//! [`super::Store::consistent`]), then flushes sled. A store opened after a crash
//! during the apply or the flush applies the file again: a batch is either wholly
//! there or not at all. The file holds one batch, overwritten by the next one once
//! sled has flushed the previous one; it is kept out of sled so that sled's log does
//! not carry every batch twice.
//!
//! Writes applied one by one (no sled batch at all) let readers run freely but raced
//! them inside sled: an apply of 35,000 writes beside the engine's reads sometimes
//! took 1.5-8.6 s instead of a third of a second.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{Result, Staged, StoreError};

/// The file's name, in the store's directory.
const FILE: &str = "unicus-redo";

/// The first bytes of the file: its format.
const MAGIC: &[u8; 4] = b"URD1";

/// Magic, payload length (u64) and payload CRC-32 (u32), little-endian.
const HEADER: usize = 16;

/// The redo file of a store on disk (none for a temporary store, which a crash takes
/// whole).
pub(super) struct Redo {
    path: Option<PathBuf>,
    /// Whether the file's entry in the directory is durable (synced once created).
    listed: bool,
    /// The encoding of the batch being written, kept for the next one.
    buf: Vec<u8>,
}

impl Redo {
    /// A store in memory: nothing to redo.
    pub(super) fn none() -> Self {
        Self {
            path: None,
            listed: false,
            buf: Vec::new(),
        }
    }

    /// The redo file of the store in `dir`, and the batch it holds applied to `tree`
    /// if a process stopped before finishing it: durable, and the file gone, on
    /// return. A file cut short (the crash came before it was synced, so before any
    /// of its writes reached sled) is dropped.
    pub(super) fn recover(dir: &Path, db: &sled::Db, tree: &sled::Tree) -> Result<Self> {
        let path = dir.join(FILE);
        let bytes = match File::open(&path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io)?;
                Some(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        if let Some(payload) = bytes.as_deref().and_then(whole_payload) {
            let mut rest = payload;
            while !rest.is_empty() {
                let ((k, v), tail): ((&[u8], Option<&[u8]>), _) = postcard::take_from_bytes(rest)
                    .map_err(|e| {
                    StoreError::Corrupt(format!("redo file `{}`: {e}", path.display()))
                })?;
                match v {
                    Some(v) => tree.insert(k, v)?,
                    None => tree.remove(k)?,
                };
                rest = tail;
            }
            db.flush()?;
        }
        if bytes.is_some() {
            std::fs::remove_file(&path).map_err(io)?;
        }
        Ok(Self {
            path: Some(path),
            listed: false,
            buf: Vec::new(),
        })
    }

    /// Writes a batch's writes to the file and syncs it: from then on, a crash before
    /// sled has flushed them is redone at the next open. Call only once sled has
    /// flushed the batch before it.
    pub(super) fn write(&mut self, staged: &Staged) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(HEADER, 0);
        for (k, v) in staged.iter() {
            let entry: (&[u8], Option<&[u8]>) = (k, v.as_deref());
            buf = postcard::to_extend(&entry, buf).map_err(StoreError::Encode)?;
        }
        let payload = buf.len() - HEADER;
        let crc = crc32fast::hash(&buf[HEADER..]);
        buf[..4].copy_from_slice(MAGIC);
        buf[4..12].copy_from_slice(&(payload as u64).to_le_bytes());
        buf[12..16].copy_from_slice(&crc.to_le_bytes());
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .and_then(|mut f| {
                f.write_all(&buf)?;
                f.sync_data()
            })
            .and_then(|()| {
                // A file just created is found after a crash only once the directory
                // that lists it is synced too.
                if !self.listed {
                    if let Some(dir) = path.parent() {
                        File::open(dir)?.sync_all()?;
                    }
                    self.listed = true;
                }
                Ok(())
            });
        self.buf = buf;
        written.map_err(io)
    }

    /// Removes the file: call once sled has flushed the last batch written.
    pub(super) fn close(&mut self) -> Result<()> {
        self.listed = false;
        match &self.path {
            Some(path) => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

/// The payload of a file written whole, or `None`.
fn whole_payload(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(bytes[4..12].try_into().ok()?);
    let crc = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    let payload = &bytes[HEADER..];
    (payload.len() as u64 == len && crc32fast::hash(payload) == crc).then_some(payload)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Sled(sled::Error::Io(e))
}

/// Applies a batch's writes in key order (neighbouring keys share sled's leaves: in
/// the order of a hash map, sled's file grew more), in sled batches of
/// [`CHUNK_WRITES`].
pub(super) fn apply(tree: &sled::Tree, staged: &Staged) -> sled::Result<()> {
    let mut writes: Vec<(&Vec<u8>, &Option<sled::IVec>)> = staged.iter().collect();
    writes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for chunk in writes.chunks(CHUNK_WRITES) {
        let mut batch = sled::Batch::default();
        for (k, v) in chunk {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.clone()),
                None => batch.remove(k.as_slice()),
            }
        }
        tree.apply_batch(batch)?;
        // sled's lock favours its writer: readers waiting get in between two chunks.
        std::thread::yield_now();
    }
    Ok(())
}

/// Writes per sled batch: how long a reader may wait for sled's lock. bench api, 1,000
/// lookups/s beside the stream at half its maximum rate: p99 15-20 ms with 512, 7-9 ms
/// with 128 (20 ms with the whole batch).
const CHUNK_WRITES: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn staged(pairs: &[(&[u8], Option<u32>)]) -> Staged {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_vec(),
                    v.map(|v| postcard::to_stdvec(&v).unwrap().into()),
                )
            })
            .collect()
    }

    fn committed(dir: &Path) {
        let mut s = Store::open(dir).unwrap();
        s.put(b"a".to_vec(), &1u32).unwrap();
        s.put(b"gone".to_vec(), &1u32).unwrap();
        s.commit().unwrap();
    }

    /// A crash after a batch's redo file was synced and before its writes were all
    /// applied and flushed: the store opened again holds the whole batch, and no file.
    #[test]
    fn a_batch_half_applied_is_whole_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        committed(dir.path());
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let tree = db.open_tree("unicus").unwrap();
            let mut redo = Redo::recover(dir.path(), &db, &tree).unwrap();
            let batch = staged(&[(b"a", Some(2)), (b"b", Some(2)), (b"gone", None)]);
            redo.write(&batch).unwrap();
            // One write of three reaches the tree before the crash.
            tree.insert(b"a", postcard::to_stdvec(&2u32).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        assert!(dir.path().join(FILE).exists());
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get::<u32>(b"a").unwrap(), Some(2));
        assert_eq!(s.get::<u32>(b"b").unwrap(), Some(2));
        assert!(!s.contains(b"gone").unwrap());
        assert!(!dir.path().join(FILE).exists());
    }

    /// A file cut short or altered was never synced whole, so none of its writes
    /// reached sled: it is dropped, not applied.
    #[test]
    fn a_file_cut_short_or_altered_is_not_applied() {
        for damage in [
            |b: &mut Vec<u8>| b.truncate(b.len() - 1),
            |b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 1,
            |b: &mut Vec<u8>| b.truncate(7),
        ] {
            let dir = tempfile::tempdir().unwrap();
            committed(dir.path());
            {
                let db = sled::Config::new().path(dir.path()).open().unwrap();
                let tree = db.open_tree("unicus").unwrap();
                let mut redo = Redo::recover(dir.path(), &db, &tree).unwrap();
                redo.write(&staged(&[(b"a", Some(2)), (b"b", Some(2))]))
                    .unwrap();
            }
            let path = dir.path().join(FILE);
            let mut bytes = std::fs::read(&path).unwrap();
            damage(&mut bytes);
            std::fs::write(&path, bytes).unwrap();
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.get::<u32>(b"a").unwrap(), Some(1));
            assert_eq!(s.get::<u32>(b"b").unwrap(), None);
            assert!(!path.exists());
        }
    }

    /// Batches committed, then the store closed: no file is left, and the writes are
    /// all there.
    #[test]
    fn a_store_closed_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Store::open(dir.path()).unwrap();
            for i in 0..3u32 {
                s.put(format!("k{i}").into_bytes(), &i).unwrap();
                s.commit_in_background().unwrap();
            }
            s.wait_durable().unwrap();
            assert!(
                dir.path().join(FILE).exists(),
                "the last batch's, while open"
            );
        }
        assert!(!dir.path().join(FILE).exists());
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.scan_prefix(b"k").unwrap().len(), 3);
    }
}
