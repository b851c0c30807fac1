//! The golden records of a batch, coalesced: like the record cache in front of a Kafka
//! Streams KTable, `profiles.merged` (a compacted topic, where only the latest value of a
//! key is kept) gets the latest golden record of each customer a batch changed, not one
//! per change. Every other topic keeps one record per decision, in order.
//!
//! A driver (the Kafka runtime, `replay`, the benchmarks) makes one [`ProfileCache`] per
//! batch with [`Engine::profile_cache`], hands each input to [`Engine::handle_batched`]
//! (or passes outputs made otherwise through [`ProfileCache::absorb`]), and writes what
//! [`Engine::end_batch`] returns before the batch is committed. With
//! `[engine] coalesce_profiles = false` nothing is held: every change publishes its
//! golden record at once.
//!
//! Inside `handle_batched` a golden record is not built when a customer changes, only
//! noted ([`Payload::Deferred`], with the clock it would have been built at); `end_batch`
//! builds each one once, from the customer's state at the end of the batch. Every
//! change of a profile publishes it again, so that state is the one the latest change
//! left, and the record is the one an immediate build would have given (the replay
//! outputs are byte for byte those of building every record at once).
//!
//! Per key the order is kept (a tombstone after a golden record leaves the tombstone
//! alone: what an erasure deletes is never published), and what a consumer of the
//! compacted topic ends with is the same either way.

use std::collections::HashMap;

use super::{Engine, EngineError, Input, Record};
use crate::engine::input::touchpoint::Rejection;
use crate::model::output::{OutputRecord, Payload, Topic};

/// The `profiles.merged` records of one batch, the latest per customer, each with a tag
/// `T` of the input that decided it (the runtime keeps its broker timestamp).
#[derive(Debug)]
pub struct ProfileCache<T = ()> {
    enabled: bool,
    /// In the order in which each customer first appeared in the batch.
    held: Vec<(OutputRecord, T)>,
    /// Where each customer's record is in `held`.
    at: HashMap<String, usize>,
    /// Records replaced by a later one of the same customer.
    replaced: u64,
}

impl<T> ProfileCache<T> {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            held: Vec::new(),
            at: HashMap::new(),
            replaced: 0,
        }
    }

    /// Moves the `profiles.merged` records of `outputs` into the cache (a customer's
    /// later record replaces its earlier one) and leaves the others in order.
    pub fn absorb(&mut self, outputs: &mut Vec<OutputRecord>, tag: T)
    where
        T: Clone,
    {
        if !self.enabled || !outputs.iter().any(is_keyed_profile) {
            return;
        }
        let mut kept = Vec::with_capacity(outputs.len());
        for record in outputs.drain(..) {
            if !is_keyed_profile(&record) {
                kept.push(record);
                continue;
            }
            let key = record.key.clone().unwrap_or_default();
            match self.at.get(&key) {
                Some(&i) => {
                    self.held[i] = (record, tag.clone());
                    self.replaced += 1;
                }
                None => {
                    self.at.insert(key, self.held.len());
                    self.held.push((record, tag.clone()));
                }
            }
        }
        *outputs = kept;
    }

    /// Golden records held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

fn is_keyed_profile(r: &OutputRecord) -> bool {
    r.topic == Topic::ProfilesMerged && r.key.is_some()
}

impl Engine {
    /// A cache for one batch's golden records, on or off as configured.
    pub fn profile_cache<T>(&self) -> ProfileCache<T> {
        ProfileCache::new(self.config.coalesce_profiles)
    }

    /// [`Engine::handle`] inside a batch whose golden records `cache` coalesces: they
    /// are built at [`Engine::end_batch`], once per customer, not at each change. The
    /// outputs returned are those the cache does not hold.
    pub fn handle_batched<T: Clone>(
        &mut self,
        record: &Record,
        input: Result<Input, Rejection>,
        cache: &mut ProfileCache<T>,
        tag: T,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        self.profiler.defer_golden_records(cache.enabled);
        let handled = self.handle(record, input);
        self.profiler.defer_golden_records(false);
        let mut out = handled?;
        cache.absorb(&mut out, tag);
        Ok(out)
    }

    /// Ends a batch: its golden records, the latest per customer (built now for those
    /// left to the end), and counts those that were replaced (they are not published:
    /// `profiles_coalesced`, and no longer in `outputs`). The cache is empty afterwards,
    /// ready for the next batch.
    pub fn end_batch<T>(
        &mut self,
        cache: &mut ProfileCache<T>,
    ) -> Result<Vec<(OutputRecord, T)>, EngineError> {
        let replaced = std::mem::take(&mut cache.replaced);
        if replaced > 0 {
            self.stats.profiles_coalesced += replaced;
            if let Some(n) = self.stats.outputs.get_mut(Topic::ProfilesMerged.name()) {
                *n = n.saturating_sub(replaced);
            }
        }
        cache.at.clear();
        let mut held = std::mem::take(&mut cache.held);
        let mut gone = 0;
        for (record, _) in &mut held {
            let Payload::Deferred(clock) = record.payload else {
                continue;
            };
            let customer_id = record.key.as_deref().unwrap_or_default();
            match self
                .profiler
                .deferred_golden_record(&self.store, customer_id, clock)?
            {
                Some(value) => {
                    record.payload = Payload::Json(value);
                    self.pseudonymise(record)?;
                }
                None => gone += 1,
            }
        }
        if gone > 0 {
            // A profile goes with a tombstone, which replaces its record in the cache:
            // a deferred record without a profile is a bug, never published as one.
            debug_assert_eq!(gone, 0, "golden records deferred for vanished profiles");
            held.retain(|(r, _)| !matches!(r.payload, Payload::Deferred(_)));
            if let Some(n) = self.stats.outputs.get_mut(Topic::ProfilesMerged.name()) {
                *n = n.saturating_sub(gone);
            }
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn golden(customer: &str, n: u64) -> OutputRecord {
        OutputRecord::json(Topic::ProfilesMerged, customer, json!({ "n": n }))
    }

    fn resolved(n: u64) -> OutputRecord {
        OutputRecord::json(Topic::Resolved, "c", json!({ "n": n }))
    }

    #[test]
    fn keeps_the_latest_golden_record_per_customer_and_everything_else_in_order() {
        let mut cache = ProfileCache::new(true);
        let mut first = vec![resolved(1), golden("a", 1), golden("b", 1)];
        cache.absorb(&mut first, 10);
        let mut second = vec![resolved(2), golden("a", 2)];
        cache.absorb(&mut second, 20);
        let mut third = vec![OutputRecord::tombstone(Topic::ProfilesMerged, "b")];
        cache.absorb(&mut third, 30);
        assert_eq!(first, vec![resolved(1)]);
        assert_eq!(second, vec![resolved(2)]);
        assert!(third.is_empty());
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.replaced, 2);
        let held: Vec<_> = cache.held.iter().map(|(r, t)| (r.clone(), *t)).collect();
        assert_eq!(
            held,
            vec![
                (golden("a", 2), 20),
                (OutputRecord::tombstone(Topic::ProfilesMerged, "b"), 30)
            ]
        );
    }

    #[test]
    fn holds_nothing_when_off() {
        let mut cache = ProfileCache::new(false);
        let mut out = vec![golden("a", 1), golden("a", 2)];
        cache.absorb(&mut out, ());
        assert_eq!(out.len(), 2);
        assert!(cache.is_empty());
    }
}
