//! The engine: one input record in, state changes staged and output records out.
//!
//! Data path: [`input`] (parse and validate once) → [`Engine::handle`] → [`normalise`] →
//! [`resolve`] → [`handoff::ProfileCommand`]s → [`profile`] → output records, the golden
//! records of a batch [`coalesce`]d per customer.
//! The engine knows nothing of Kafka: the runtime, `replay` and the tests all drive this
//! same type. It is deterministic: the same inputs in the same order into the same store
//! give the same outputs (ids, times and all).
//!
//! Changes are staged in the store's overlay and become durable, atomically, at
//! [`Engine::commit`] (one flush per batch). An event id seen before (committed or
//! staged) changes nothing and counts nothing: redelivery is harmless.

pub mod audience;
pub mod coalesce;
pub mod config;
pub mod gdpr;
pub mod geography;
mod handle;
pub mod handoff;
pub mod input;
pub mod normalise;
pub mod profile;
pub mod reference;
mod requests;
pub mod resolve;
mod stats;

pub use coalesce::ProfileCache;
pub use input::{Input, InputKind, Record};
pub(crate) use stats::{engine_counters, sort_counters};
pub use stats::{SourceCounts, Stats};

use serde_json::Value;

use crate::engine::config::{ConfigError, EngineConfig};
use crate::engine::input::InputParser;
use crate::engine::profile::Profiler;
use crate::engine::resolve::Resolver;
use crate::model::output::OutputRecord;
use crate::model::{Channel, Ident, Purpose};
use crate::store::{keys, Cell, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid engine configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store was written in format {found}, this unicus reads format {STORE_FORMAT}: rebuild it with `unicus replay` from the input")]
    StoreFormat { found: u32 },
}

/// Layout of the records in the store; a change of layout changes it.
pub const STORE_FORMAT: u32 = 4;
/// The format of the store, written with the first batch.
const FORMAT: Cell<u32> = Cell::new(keys::engine::FORMAT);
/// Where stores of format 2 kept their format: read only to name it in the refusal.
/// The engine's event-time clock.
const INPUT_CLOCK: Cell<i64> = Cell::new(keys::engine::INPUT_CLOCK);
const FORMAT_2_AND_BEFORE: Cell<u32> = Cell::new(keys::legacy::STORE_FORMAT);

pub struct Engine {
    config: EngineConfig,
    store: Store,
    inputs: InputParser,
    resolver: Resolver,
    profiler: Profiler,
    stats: Stats,
    /// Events staged since the last commit.
    pending: usize,
    /// Key of the pseudonymised topics' hashes, read once.
    pseudonym_key: Option<Vec<u8>>,
    /// Where the sweep of the seen marks stands, once read (see `handle`).
    seen_sweep: Option<handle::SeenSweep>,
}

/// Refuses a store of another format; stages the format in a new one.
fn check_format(store: &mut Store, resolver: &Resolver) -> Result<(), EngineError> {
    match FORMAT.get(store)? {
        Some(STORE_FORMAT) => Ok(()),
        // Format 3 kept a key per touchpoint of the timelines: moved with the first
        // batch (so that a changelog gets the move too).
        Some(3) => {
            let customers = profile::timeline::migrate_from_format_3(store)?;
            tracing::info!(
                customers,
                "timelines of a store of format 3 moved to format 4"
            );
            Ok(FORMAT.put(store, &STORE_FORMAT)?)
        }
        Some(found) => Err(EngineError::StoreFormat { found }),
        None => {
            if let Some(found) = FORMAT_2_AND_BEFORE.get(store)? {
                return Err(EngineError::StoreFormat { found });
            }
            // A store with records and no format at all is of format 1.
            if resolver.holds_anything(store)? {
                return Err(EngineError::StoreFormat { found: 1 });
            }
            Ok(FORMAT.put(store, &STORE_FORMAT)?)
        }
    }
}

impl Engine {
    pub fn new(config: EngineConfig, mut store: Store) -> Result<Self, EngineError> {
        config.validate()?;
        let resolver = Resolver::new(&config);
        check_format(&mut store, &resolver)?;
        Ok(Self {
            inputs: InputParser::new(&config),
            resolver,
            profiler: Profiler::new(&config),
            config,
            store,
            stats: Stats::default(),
            pending: 0,
            pseudonym_key: None,
            seen_sweep: None,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, for the runtime's own tables (outbox) staged in the same batch.
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Whether the store holds customers (an identity graph), committed or staged.
    pub fn holds_customers(&self) -> Result<bool, EngineError> {
        Ok(self.resolver.holds_anything(&self.store)?)
    }

    /// Events processed since the last commit.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Why each source profile of a customer belongs to it (`unicus explain`).
    pub fn explain(&self, customer_id: &str) -> Result<Option<Value>, EngineError> {
        Ok(self.resolver.explain(&self.store, customer_id)?)
    }

    /// Why two customers were merged, or were not.
    pub fn explain_pair(&self, a: &str, b: &str) -> Result<Value, EngineError> {
        Ok(self.resolver.explain_pair(&self.store, a, b)?)
    }

    /// Fires the timers due by the wall clock `now` (ms) minus the grace: abandoned carts,
    /// lifecycle changes by the passage of time, consent expiries. The runtime calls it
    /// when the stream is idle, so that time-driven triggers do not wait for events;
    /// while events flow, timers fire in event time. What it changes is committed with
    /// the next [`Engine::commit`].
    pub fn tick(&mut self, now: i64) -> Result<Vec<OutputRecord>, EngineError> {
        // The input clock moves only with accepted times, each at most
        // `limits.max_future_skew_ms` past its reader's clock (`input::event_time`): no
        // record can carry the timers further.
        let now = now.max(self.input_clock()?);
        let until = now.saturating_sub(self.config.activation.grace_ms as i64);
        let timers = self.profiler.fire_timers(&mut self.store, until, now)?;
        self.stats.absorb(timers.counts);
        let mut out = timers.out;
        if !out.is_empty() {
            self.pending += 1;
        }
        self.finish(&mut out)?;
        Ok(out)
    }

    /// The engine's event-time clock: the latest time stated by an accepted touchpoint
    /// (0 before the first). It comes from the input only; the stages keep their own.
    pub fn input_clock(&self) -> Result<i64, EngineError> {
        Ok(INPUT_CLOCK.get(&self.store)?.unwrap_or(0))
    }

    /// Moves the clock to `at` if that is later.
    pub(crate) fn advance_clock(&mut self, at: i64) -> Result<(), EngineError> {
        if at > self.input_clock()? {
            INPUT_CLOCK.put(&mut self.store, &at)?;
        }
        Ok(())
    }

    /// Channels on which `purpose` is allowed now and the customer is reachable: the
    /// only channels an activation may use.
    pub fn allowed_channels(
        &self,
        customer_id: &str,
        purpose: Purpose,
    ) -> Result<Vec<Channel>, EngineError> {
        Ok(self
            .profiler
            .allowed_channels_now(&self.store, customer_id, purpose)?)
    }

    /// Makes everything staged since the last commit durable, atomically.
    pub fn commit(&mut self) -> Result<(), EngineError> {
        self.store.commit()?;
        self.pending = 0;
        Ok(())
    }

    /// Starts making the batch durable on a background thread and returns at once; the
    /// next batch can be processed meanwhile. See [`Engine::wait_durable`].
    pub fn commit_in_background(&mut self) -> Result<(), EngineError> {
        self.store.commit_in_background()?;
        self.pending = 0;
        Ok(())
    }

    /// Waits until everything committed so far is on disk.
    pub fn wait_durable(&mut self) -> Result<(), EngineError> {
        Ok(self.store.wait_durable()?)
    }

    /// Forgets everything staged since the last commit.
    pub fn abandon(&mut self) {
        self.store.abandon();
        self.pending = 0;
        self.seen_sweep = None;
    }

    /// The customer holding an identifier (raw value, normalised here), if any.
    pub fn find_customer(&self, kind: &str, raw: &str) -> Result<Option<String>, EngineError> {
        let Some(id) = self.resolver.normalise_identifier(kind, raw) else {
            return Ok(None);
        };
        Ok(self.resolver.customer_of(&self.store, &id)?)
    }

    /// A customer's golden record as `profiles.merged` carries it.
    pub fn golden_record(&self, customer_id: &str) -> Result<Option<Value>, EngineError> {
        Ok(self.profiler.golden_record_now(&self.store, customer_id)?)
    }

    /// Every customer's golden record, in customer-id order. A full scan: for tests,
    /// exports and tools, never on the event path.
    pub fn golden_records(&self) -> Result<Vec<Value>, EngineError> {
        Ok(self.profiler.golden_records(&self.store)?)
    }

    /// How many source profiles each live customer has (in customer id order).
    pub fn source_profile_counts(&self) -> Result<Vec<usize>, EngineError> {
        Ok(self.profiler.source_profile_counts(&self.store)?)
    }

    /// Live customers.
    pub fn customer_count(&self) -> Result<i64, EngineError> {
        Ok(self.resolver.customer_count(&self.store)?)
    }

    /// Normalises an identifier the way resolution does.
    /// Resolve, for tools that read its part of the store (matching training).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub fn normalise_identifier(&self, kind: &str, raw: &str) -> Option<Ident> {
        self.resolver.normalise_identifier(kind, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_of_another_format_is_refused_with_a_clear_message() {
        let mut store = Store::temporary().unwrap();
        FORMAT.put(&mut store, &1u32).unwrap();
        store.commit().unwrap();
        let err = Engine::new(EngineConfig::default(), store)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("format 1") && err.contains("replay"), "{err}");

        // A store of format 1 (no format key): its counters and resolve's records.
        let mut store = Store::temporary().unwrap();
        store.put(b"m/next_customer_seq".to_vec(), &3u64).unwrap();
        store.put_raw(b"r/sp/\0\0\0\0\0\0\0\x01".to_vec(), vec![0]);
        store.commit().unwrap();
        assert!(Engine::new(EngineConfig::default(), store).is_err());

        let mut store = Store::temporary().unwrap();
        FORMAT_2_AND_BEFORE.put(&mut store, &2u32).unwrap();
        store.commit().unwrap();
        let err = Engine::new(EngineConfig::default(), store)
            .err()
            .unwrap()
            .to_string();
        let reads = format!("reads format {STORE_FORMAT}");
        assert!(err.contains("format 2") && err.contains(&reads), "{err}");

        // Format 3 is moved to this one (its timelines: `timeline` tests the move).
        let mut store = Store::temporary().unwrap();
        FORMAT.put(&mut store, &3u32).unwrap();
        store.commit().unwrap();
        let mut moved = Engine::new(EngineConfig::default(), store).unwrap();
        moved.commit().unwrap();
        assert_eq!(FORMAT.get(moved.store()).unwrap(), Some(STORE_FORMAT));

        let mut fresh = Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap();
        fresh.commit().unwrap();
        assert_eq!(FORMAT.get(fresh.store()).unwrap(), Some(STORE_FORMAT));
    }

    /// When the test lines count as read: 2027-01-15T08:00:00Z.
    const NOW: i64 = 1_800_000_000_000;

    fn line(engine: &mut Engine, offset: i64, json: &str) -> Vec<OutputRecord> {
        let record = Record::new(json.as_bytes(), "test", offset, NOW);
        let input = engine.parse_line(record.bytes);
        engine.handle(&record, input).unwrap()
    }

    /// The `done_at` of the receipt among `out`.
    fn done_at(out: &[OutputRecord]) -> String {
        let receipt = out
            .iter()
            .find(|o| o.topic == crate::model::output::Topic::GdprReceipts)
            .expect("a receipt");
        let crate::model::output::Payload::Json(value) = &receipt.payload else {
            panic!("a JSON receipt");
        };
        value["done_at"]
            .as_str()
            .unwrap_or_else(|| panic!("no done_at: {value}"))
            .to_string()
    }

    #[test]
    fn a_request_without_a_time_is_done_at_the_latest_time_the_input_stated() {
        let mut engine = Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap();
        line(
            &mut engine,
            0,
            r#"{"event_id":"e1","channel":"web","type":"login","occurred_at":"2026-03-01T10:00:00Z","identifiers":{"email":"a@example.fr"}}"#,
        );
        // Nobody to attach it to: profile never sees it, but it is input all the same.
        line(
            &mut engine,
            1,
            r#"{"event_id":"e2","channel":"web","type":"page_view","occurred_at":"2026-03-05T08:00:00Z"}"#,
        );
        assert_eq!(engine.input_clock().unwrap(), 1_772_697_600_000);
        let out = line(
            &mut engine,
            2,
            r#"{"request_id":"r1","kind":"export","identifier":{"type":"email","value":"a@example.fr"}}"#,
        );
        assert_eq!(done_at(&out), "2026-03-05T08:00:00Z");
    }

    #[test]
    fn a_record_timestamp_rfc_3339_cannot_state_is_no_time_for_a_request() {
        let mut engine = Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap();
        line(
            &mut engine,
            0,
            r#"{"event_id":"e1","channel":"web","type":"login","occurred_at":"2026-03-01T10:00:00Z","identifiers":{"email":"a@example.fr"}}"#,
        );
        for (n, timestamp) in [(1, 253_402_300_800_000), (2, i64::MIN)] {
            let json = format!(
                r#"{{"request_id":"r{n}","kind":"export","identifier":{{"type":"email","value":"a@example.fr"}}}}"#
            );
            let record =
                Record::new(json.as_bytes(), "gdpr.requests", n, NOW).written_at(timestamp);
            let input = engine.parse(InputKind::Request, record.bytes);
            let out = engine.handle(&record, input).unwrap();
            assert_eq!(done_at(&out), "2026-03-01T10:00:00Z");
        }
    }
}
