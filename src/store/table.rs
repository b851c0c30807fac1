//! Typed tables over the store: a [`Table`] is a prefix declared in [`super::keys`], a
//! key encoding and a value type; a [`Cell`] is one value under one declared key.
//!
//! Keys keep the order of their parts: numbers big-endian (signed ones with the sign bit
//! flipped), text as is, a text part that is not last ended by a NUL (no part holds one:
//! normalised values never do). So a range of keys is a range of their values, which the
//! time indexes and timers rely on. Values are encoded with postcard, as [`Store::put`]
//! does; a table is only a typed view, the store's overlay and cache are untouched.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{decode, Result, Store, StoreError};

/// One part of a key.
pub trait KeyPart: Sized {
    /// What a caller passes: the part itself, or `&str` for text.
    type Ref<'a>: Copy;
    /// Appends the part to a key; `last` tells whether another part follows.
    fn put(part: Self::Ref<'_>, last: bool, out: &mut Vec<u8>);
    /// Takes the part off the front of `bytes`.
    fn take(bytes: &mut &[u8], last: bool) -> Option<Self>;
}

impl KeyPart for String {
    type Ref<'a> = &'a str;

    fn put(part: &str, last: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(part.as_bytes());
        if !last {
            out.push(0);
        }
    }

    fn take(bytes: &mut &[u8], last: bool) -> Option<Self> {
        let end = if last {
            bytes.len()
        } else {
            bytes.iter().position(|&b| b == 0)?
        };
        let text = std::str::from_utf8(&bytes[..end]).ok()?.to_string();
        *bytes = &bytes[(end + usize::from(!last)).min(bytes.len())..];
        Some(text)
    }
}

/// Fixed-width numbers, big-endian; `$flip` turns the order of signed numbers into the
/// order of their bytes.
macro_rules! fixed_width_part {
    ($($t:ty, $unsigned:ty, $flip:expr;)*) => {$(
        impl KeyPart for $t {
            type Ref<'a> = $t;

            fn put(part: $t, _last: bool, out: &mut Vec<u8>) {
                out.extend_from_slice(&((part as $unsigned) ^ $flip).to_be_bytes());
            }

            fn take(bytes: &mut &[u8], _last: bool) -> Option<Self> {
                let (head, rest) = bytes.split_first_chunk()?;
                *bytes = rest;
                Some((<$unsigned>::from_be_bytes(*head) ^ $flip) as $t)
            }
        }
    )*};
}

fixed_width_part! {
    u32, u32, 0;
    u64, u64, 0;
    i64, u64, 1 << 63;
}

/// The key of a table's entries: one part or a tuple of parts.
pub trait TableKey: Sized {
    /// What a caller passes to name an entry.
    type Ref<'a>: Copy;
    fn encode(key: Self::Ref<'_>, out: &mut Vec<u8>);
    /// `None` if `bytes` (the key without its prefix) is not a key of this shape.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

macro_rules! single_part_key {
    ($($t:ty),*) => {$(
        impl TableKey for $t {
            type Ref<'a> = <$t as KeyPart>::Ref<'a>;

            fn encode(key: Self::Ref<'_>, out: &mut Vec<u8>) {
                <$t as KeyPart>::put(key, true, out);
            }

            fn decode(mut bytes: &[u8]) -> Option<Self> {
                let key = <$t as KeyPart>::take(&mut bytes, true)?;
                bytes.is_empty().then_some(key)
            }
        }
    )*};
}

single_part_key!(String, u64);

impl<A: KeyPart, B: KeyPart> TableKey for (A, B) {
    type Ref<'a> = (A::Ref<'a>, B::Ref<'a>);

    fn encode((a, b): Self::Ref<'_>, out: &mut Vec<u8>) {
        A::put(a, false, out);
        B::put(b, true, out);
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let a = A::take(&mut bytes, false)?;
        let b = B::take(&mut bytes, true)?;
        bytes.is_empty().then_some((a, b))
    }
}

impl<A: KeyPart, B: KeyPart, C: KeyPart> TableKey for (A, B, C) {
    type Ref<'a> = (A::Ref<'a>, B::Ref<'a>, C::Ref<'a>);

    fn encode((a, b, c): Self::Ref<'_>, out: &mut Vec<u8>) {
        A::put(a, false, out);
        B::put(b, false, out);
        C::put(c, true, out);
    }

    fn decode(mut bytes: &[u8]) -> Option<Self> {
        let a = A::take(&mut bytes, false)?;
        let b = B::take(&mut bytes, false)?;
        let c = C::take(&mut bytes, true)?;
        bytes.is_empty().then_some((a, b, c))
    }
}

/// A table's prefix with the shape of its keys, as declared in [`super::keys`] (only
/// the store can declare one).
pub struct TablePrefix<K> {
    bytes: &'static [u8],
    key: PhantomData<fn() -> K>,
}

impl<K> TablePrefix<K> {
    pub(in crate::store) const fn new(bytes: &'static [u8]) -> Self {
        Self {
            bytes,
            key: PhantomData,
        }
    }

    pub const fn bytes(&self) -> &'static [u8] {
        self.bytes
    }
}

/// The key of a single value, as declared in [`super::keys`].
pub struct CellKey {
    bytes: &'static [u8],
}

impl CellKey {
    pub(in crate::store) const fn new(bytes: &'static [u8]) -> Self {
        Self { bytes }
    }

    pub const fn bytes(&self) -> &'static [u8] {
        self.bytes
    }
}

/// Everything one owner keeps is under its namespace.
pub struct Namespace {
    bytes: &'static [u8],
}

impl Namespace {
    pub(in crate::store) const fn new(bytes: &'static [u8]) -> Self {
        Self { bytes }
    }

    pub const fn bytes(&self) -> &'static [u8] {
        self.bytes
    }

    /// Whether anything at all is stored under the namespace, in any layout (reads one
    /// key at most).
    pub fn holds_anything(&self, store: &Store) -> Result<bool> {
        let any = store.scan_range(self.bytes, &prefix_end(self.bytes), 1)?;
        Ok(!any.is_empty())
    }
}

/// The first key after every key starting with `prefix`, which (as every declared
/// namespace) ends with a byte below 0xFF.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    match end.last_mut() {
        Some(last) if *last < u8::MAX => *last += 1,
        _ => panic!("a namespace ends with a byte below 0xFF: {prefix:?}"),
    }
    end
}

/// Entries of type `V` by keys of shape `K`, under one prefix.
pub struct Table<K, V> {
    prefix: &'static [u8],
    types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Table<K, V> {
    pub const fn new(prefix: TablePrefix<K>) -> Self {
        Self {
            prefix: prefix.bytes,
            types: PhantomData,
        }
    }
}

impl<K: TableKey, V: Serialize + DeserializeOwned> Table<K, V> {
    fn key(&self, key: K::Ref<'_>) -> Vec<u8> {
        let mut k = self.prefix.to_vec();
        K::encode(key, &mut k);
        k
    }

    pub fn get(&self, store: &Store, key: K::Ref<'_>) -> Result<Option<V>> {
        store.get(&self.key(key))
    }

    /// [`Table::get`], decoded once and shared until the key is written
    /// ([`Store::get_shared`]).
    pub fn get_shared(&self, store: &Store, key: K::Ref<'_>) -> Result<Option<Arc<V>>>
    where
        V: Send + Sync + 'static,
    {
        store.get_shared(&self.key(key))
    }

    pub fn contains(&self, store: &Store, key: K::Ref<'_>) -> Result<bool> {
        store.contains(&self.key(key))
    }

    /// Stages `value` under `key`; `value` may be a borrowed form of `V` (`&str` for a
    /// `String`, a slice for a `Vec`), which postcard encodes alike.
    pub fn put<Q>(&self, store: &mut Store, key: K::Ref<'_>, value: &Q) -> Result<()>
    where
        V: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        store.put(self.key(key), value)
    }

    pub fn remove(&self, store: &mut Store, key: K::Ref<'_>) {
        store.remove(self.key(key));
    }

    /// Every entry, in key order. A full scan of the table.
    pub fn scan(&self, store: &Store) -> Result<Vec<(K, V)>> {
        self.entries(store.scan_prefix(self.prefix)?)
    }

    /// At most `limit` entries with keys in `[start, end)`, in key order.
    pub fn range(
        &self,
        store: &Store,
        start: K::Ref<'_>,
        end: K::Ref<'_>,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        self.entries(store.scan_range(&self.key(start), &self.key(end), limit)?)
    }

    /// At most `limit` entries after the one keyed `after` (from the first when `None`),
    /// in key order, undecoded (whole keys and values): a table read a page at a time.
    pub fn page_raw(
        &self,
        store: &Store,
        after: Option<K::Ref<'_>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = match after {
            // The key right after it.
            Some(key) => {
                let mut k = self.key(key);
                k.push(0);
                k
            }
            None => self.prefix.to_vec(),
        };
        store.scan_range(&start, &prefix_end(self.prefix), limit)
    }

    /// [`Table::page_raw`], decoded.
    pub fn page(
        &self,
        store: &Store,
        after: Option<K::Ref<'_>>,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        self.entries(self.page_raw(store, after, limit)?)
    }

    /// At most `limit` entries with keys before `end`, from the first, in key order.
    pub fn below(&self, store: &Store, end: K::Ref<'_>, limit: usize) -> Result<Vec<(K, V)>> {
        self.entries(store.scan_range(self.prefix, &self.key(end), limit)?)
    }

    /// The least key in `[start, end)`, or one before it that a staged removal hides
    /// ([`Store::first_key_at_least`]): `Some(None)` if it cannot be decoded.
    pub fn first_key_at_least(
        &self,
        store: &Store,
        start: K::Ref<'_>,
        end: K::Ref<'_>,
    ) -> Result<Option<Option<K>>> {
        Ok(store
            .first_key_at_least(&self.key(start), &self.key(end))?
            .map(|k| K::decode(&k[self.prefix.len()..])))
    }

    /// As [`Table::range`], except that entries whose key cannot be decoded are
    /// removed (staged) and skipped instead of failing the read.
    pub fn range_dropping_unreadable(
        &self,
        store: &mut Store,
        start: K::Ref<'_>,
        end: K::Ref<'_>,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let rows = store.scan_range(&self.key(start), &self.key(end), limit)?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            match K::decode(&k[self.prefix.len()..]) {
                Some(key) => out.push((key, decode(&k, &v)?)),
                None => store.remove(k),
            }
        }
        Ok(out)
    }

    fn entries(&self, rows: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(K, V)>> {
        rows.into_iter()
            .map(|(k, v)| {
                let key = K::decode(&k[self.prefix.len()..]).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "key `{}` is not a key of its table",
                        String::from_utf8_lossy(&k)
                    ))
                })?;
                Ok((key, decode(&k, &v)?))
            })
            .collect()
    }
}

/// One value of type `V` under one key.
pub struct Cell<V> {
    key: &'static [u8],
    value: PhantomData<fn() -> V>,
}

impl<V> Cell<V> {
    pub const fn new(key: CellKey) -> Self {
        Self {
            key: key.bytes,
            value: PhantomData,
        }
    }

    pub fn remove(&self, store: &mut Store) {
        store.remove(self.key.to_vec());
    }
}

impl<V: Serialize + DeserializeOwned> Cell<V> {
    pub fn get(&self, store: &Store) -> Result<Option<V>> {
        store.get(self.key)
    }

    /// Stages `value`, which may be a borrowed form of `V` (see [`Table::put`]).
    pub fn put<Q>(&self, store: &mut Store, value: &Q) -> Result<()>
    where
        V: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        store.put(self.key.to_vec(), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: Table<(i64, String, String), ()> = Table::new(TablePrefix::new(b"t/tm/"));
    const NAMES: Table<(String, String), String> = Table::new(TablePrefix::new(b"t/nm/"));
    const COUNT: Cell<u64> = Cell::new(CellKey::new(b"t/count"));

    #[test]
    fn keys_round_trip_and_sort_as_their_parts() {
        let mut k = Vec::new();
        <(i64, String, String)>::encode((-5, "cus_1", "cart"), &mut k);
        assert_eq!(
            <(i64, String, String)>::decode(&k),
            Some((-5, "cus_1".into(), "cart".into()))
        );
        let enc = |t: i64| {
            let mut k = Vec::new();
            <(i64, String, String)>::encode((t, "", ""), &mut k);
            k
        };
        assert!(enc(i64::MIN) < enc(-1) && enc(-1) < enc(0) && enc(0) < enc(i64::MAX));
        let mut k = Vec::new();
        <(u32, u64)>::encode((7, 9), &mut k);
        assert_eq!(k.len(), 12);
        assert_eq!(<(u32, u64)>::decode(&k), Some((7, 9)));
        assert_eq!(<(u32, u64)>::decode(&k[..11]), None);
        assert_eq!(<(String, String)>::decode(b"no separator"), None);
        assert_eq!(u64::decode(&[0; 9]), None);
    }

    #[test]
    fn text_parts_are_joined_by_nul_as_before_tables() {
        let mut k = Vec::new();
        <(String, String)>::encode(("email", "a@b.fr"), &mut k);
        assert_eq!(k, b"email\0a@b.fr");
    }

    #[test]
    fn tables_read_their_own_entries_in_key_order_with_the_overlay() {
        let mut s = Store::temporary().unwrap();
        for t in [30, -10, 20] {
            TIMES.put(&mut s, (t, "cus", "cart"), &()).unwrap();
        }
        NAMES.put(&mut s, ("a", "b"), "c").unwrap();
        COUNT.put(&mut s, &3).unwrap();
        s.commit().unwrap();
        TIMES.remove(&mut s, (20, "cus", "cart"));
        TIMES.put(&mut s, (0, "cus", "cart"), &()).unwrap();
        let due: Vec<i64> = TIMES
            .range(&s, (-100, "", ""), (25, "", ""), 10)
            .unwrap()
            .into_iter()
            .map(|((t, _, _), ())| t)
            .collect();
        assert_eq!(due, [-10, 0]);
        assert_eq!(TIMES.below(&s, (0, "", ""), 10).unwrap().len(), 1);
        assert_eq!(TIMES.scan(&s).unwrap().len(), 3);
        assert_eq!(NAMES.get(&s, ("a", "b")).unwrap().as_deref(), Some("c"));
        assert!(!NAMES.contains(&s, ("a", "c")).unwrap());
        assert_eq!(COUNT.get(&s).unwrap(), Some(3));
        assert!(Namespace::new(b"t/").holds_anything(&s).unwrap());
        assert!(!Namespace::new(b"u/").holds_anything(&s).unwrap());
    }

    #[test]
    fn an_undecodable_key_fails_a_read_or_is_dropped_when_asked() {
        let mut s = Store::temporary().unwrap();
        TIMES.put(&mut s, (1, "cus", "cart"), &()).unwrap();
        s.put_raw(b"t/tm/short".to_vec(), Vec::new());
        let err = TIMES.scan(&s).unwrap_err();
        assert!(err.to_string().contains("t/tm/short"), "{err}");
        let kept = TIMES
            .range_dropping_unreadable(&mut s, (i64::MIN, "", ""), (i64::MAX, "", ""), 10)
            .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(TIMES.scan(&s).unwrap().len(), 1);
    }

    #[test]
    fn prefix_end_bounds_every_key_of_the_prefix() {
        assert_eq!(prefix_end(b"r/"), b"r0");
    }
}
