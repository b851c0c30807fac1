//! A bounded map in two generations, the one cache shape the engine and the store use.
//!
//! Entries go into the young generation. When it is full (its weight would pass the
//! capacity) it becomes the old generation and the previous old one is dropped; an entry
//! found in the old generation moves back to the young one. So what is used keeps being
//! found, at most twice the capacity is held, and the map is never emptied whole the way
//! a cache cleared when full would be.

use std::borrow::Borrow;
use std::hash::Hash;

/// A hash map for the keys of the store and its caches: foldhash, seeded at random per
/// map (keys come from hostile input, so a fixed-seed hash would let crafted identifiers
/// collide), and several times cheaper than the standard SipHash on short keys.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Weight of one entry: 1 for a count of entries, bytes for a budget in bytes.
pub type Weigh<K, V> = fn(&K, &V) -> usize;

pub struct Generations<K, V> {
    young: FastMap<K, V>,
    old: FastMap<K, V>,
    /// Weight of `young`.
    weight: usize,
    /// Weight each generation may hold; 0 keeps nothing.
    capacity: usize,
    weigh: Weigh<K, V>,
}

impl<K: Hash + Eq, V: Clone> Generations<K, V> {
    /// Counts entries: each generation holds `entries`.
    pub fn with_entries(entries: usize) -> Self {
        Self::weighed(entries, |_, _| 1)
    }

    /// Each generation holds entries up to a total `capacity` as `weigh` counts them.
    pub fn weighed(capacity: usize, weigh: Weigh<K, V>) -> Self {
        Self {
            young: FastMap::default(),
            old: FastMap::default(),
            weight: 0,
            capacity,
            weigh,
        }
    }

    /// Changes the capacity and forgets everything.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.clear();
    }

    /// The value under `key`; found in the old generation, it moves to the young one.
    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.young.get(key) {
            return Some(v.clone());
        }
        let (key, v) = self.old.remove_entry(key)?;
        self.push_young(key, v.clone());
        Some(v)
    }

    /// The value under `key`, made by `make` when neither generation has it.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.young.get(&key) {
            return v.clone();
        }
        let v = self.old.remove(&key).unwrap_or_else(make);
        self.push_young(key, v.clone());
        v
    }

    /// Puts `value` under `key` in the young generation, in place of any earlier value.
    pub fn insert(&mut self, key: K, value: V) {
        self.remove(&key);
        self.push_young(key, value);
    }

    /// Puts `value` under `key`, which neither generation holds, in the young one;
    /// heavier than a generation, it is not held (it would empty the young generation
    /// for nothing).
    fn push_young(&mut self, key: K, value: V) {
        let weight = (self.weigh)(&key, &value);
        if weight > self.capacity {
            return;
        }
        if self.weight + weight > self.capacity {
            self.old = std::mem::take(&mut self.young);
            self.weight = 0;
        }
        self.weight += weight;
        self.young.insert(key, value);
    }

    /// Forgets `key` in both generations.
    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some((key, earlier)) = self.young.remove_entry(key) {
            self.weight -= (self.weigh)(&key, &earlier);
        }
        self.old.remove(key);
    }

    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.weight = 0;
    }

    /// Whether the young generation holds `key` (what a fresh read would find first).
    pub fn is_young<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.contains_key(key)
    }

    /// Total weight held in both generations.
    pub fn held(&self) -> usize {
        self.weight
            + self
                .old
                .iter()
                .map(|(k, v)| (self.weigh)(k, v))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_used_stays_and_at_most_two_generations_are_held() {
        let mut g = Generations::<u32, u32>::with_entries(100);
        g.insert(0, 0);
        for i in 1..1_000 {
            g.insert(i, i);
            assert_eq!(g.get(&0), Some(0), "after {i}");
            assert!(g.held() <= 200);
        }
        assert!(g.is_young(&0));
        // Long unused entries are gone.
        assert_eq!(g.get(&1), None);
        assert_eq!(g.get(&999), Some(999));
    }

    #[test]
    fn weights_are_kept_exactly_through_replacement_and_removal() {
        let mut g = Generations::<String, String>::weighed(20, |k, v| k.len() + v.len());
        g.insert("a".into(), "xxxx".into());
        g.insert("a".into(), "xx".into());
        assert_eq!(g.held(), 3);
        g.remove("a");
        assert_eq!(g.held(), 0);
        g.insert("b".into(), "x".repeat(30)); // heavier than a generation: not held
        assert_eq!(g.get("b"), None);
        for i in 0..50 {
            g.insert(format!("k{i}"), "v".into());
            assert!(g.held() <= 40);
        }
        assert_eq!(g.get_or_insert_with("k49".into(), || "other".into()), "v");
        assert_eq!(g.get_or_insert_with("new".into(), || "made".into()), "made");
        g.set_capacity(0);
        g.insert("c".into(), String::new());
        assert_eq!(g.get("c"), None);
    }
}
