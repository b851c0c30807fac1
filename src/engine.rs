//! The engine: one input record in, state changes staged and output records out.
//!
//! Data path: [`event::parse`](crate::event::parse) → normalise → [`Resolver`] →
//! [`ProfileCommand`](crate::handoff::ProfileCommand)s → [`Profiler`] → output records.
//! The engine knows nothing of Kafka: the runtime, `replay` and the tests all drive this
//! same type. It is deterministic: the same inputs in the same order into the same store
//! give the same outputs (ids, times and all).
//!
//! Changes are staged in the store's overlay and become durable, atomically, at
//! [`Engine::commit`] (one flush per batch). An event id seen before (committed or
//! staged) changes nothing and counts nothing: redelivery is harmless.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::{ConfigError, EngineConfig};
use crate::event::{self, Rejection};
use crate::handoff::Ident;
use crate::output::{OutputRecord, Payload, Topic};
use crate::profile::Profiler;
use crate::resolve::{Method, Resolver};
use crate::store::{key, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid engine configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One input record, wherever it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub bytes: &'a [u8],
    /// Topic (or file) the record was read from, for dead letters.
    pub source_topic: &'a str,
    /// Offset (or line index) of the record, for dead letters.
    pub source_offset: i64,
    pub key: Option<&'a [u8]>,
}

/// What the engine saw since it was opened (not persisted: per process).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub consumed: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub accepted_by_channel: BTreeMap<String, u64>,
    pub unknown_fields: u64,
    pub unknown_types: u64,
    pub unknown_identifier_types: u64,
    pub junk_values: u64,
    pub unusable_values: u64,
    pub generic_values: u64,
    pub generic_skipped: u64,
    pub limit_dropped: u64,
    pub conflicts: u64,
    pub merges: u64,
    pub new_customers: u64,
    pub unresolved: u64,
    pub outputs: BTreeMap<&'static str, u64>,
}

impl Stats {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

pub struct Engine {
    config: EngineConfig,
    store: Store,
    parser: event::Parser,
    resolver: Resolver,
    profiler: Profiler,
    stats: Stats,
    /// Events staged since the last commit.
    pending: usize,
}

fn seen_key(event_id: &str) -> Vec<u8> {
    key("e/", &[event_id])
}

impl Engine {
    pub fn new(config: EngineConfig, store: Store) -> Result<Self, EngineError> {
        config.validate()?;
        Ok(Self {
            parser: event::Parser::new(&config),
            resolver: Resolver::new(&config),
            profiler: Profiler::new(&config),
            config,
            store,
            stats: Stats::default(),
            pending: 0,
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

    /// Events processed since the last commit.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Processes one record. Only store failures are errors: a bad record is a
    /// dead-letter output and the stream goes on.
    pub fn process(&mut self, input: &Input) -> Result<Vec<OutputRecord>, EngineError> {
        self.stats.consumed += 1;
        let tp = match self.parser.parse(input.bytes) {
            Ok(tp) => tp,
            Err(rejection) => return Ok(vec![self.dead_letter(input, &rejection)]),
        };
        let seen = seen_key(&tp.event_id);
        if self.store.contains(&seen)? {
            self.stats.duplicates += 1;
            return Ok(Vec::new());
        }
        let resolution = self.resolver.resolve(&mut self.store, &tp)?;
        let mut out = Vec::with_capacity(resolution.identity_changes.len() + 3);
        let change_key = resolution.customer_id.clone().unwrap_or_default();
        for change in resolution.identity_changes {
            let k = change
                .get("customer_id")
                .and_then(Value::as_str)
                .unwrap_or(&change_key)
                .to_string();
            out.push(OutputRecord::json(Topic::IdentityChanges, k, change));
        }
        out.extend(self.profiler.apply(&mut self.store, &resolution.commands)?);

        let mut resolved = tp.raw;
        resolved.insert("customer_id".into(), json!(resolution.customer_id));
        resolved.insert(
            "resolution".into(),
            json!({
                "method": resolution.method.as_str(),
                "matched_on": resolution.matched_on,
                "score": (resolution.method == Method::Deterministic).then_some(1.0),
            }),
        );
        out.push(OutputRecord {
            topic: Topic::Resolved,
            key: resolution.customer_id.clone(),
            payload: Payload::Json(Value::Object(resolved)),
            headers: Vec::new(),
        });
        self.store.put_raw(seen, Vec::new());
        self.pending += 1;

        let s = &mut self.stats;
        let c = &resolution.counts;
        s.accepted += 1;
        *s.accepted_by_channel.entry(tp.channel).or_default() += 1;
        s.unknown_fields += u64::from(tp.unknown_fields);
        s.unknown_identifier_types += u64::from(tp.unknown_identifier_types);
        s.unknown_types += u64::from(matches!(tp.kind, event::EventType::Other(_)));
        s.junk_values += u64::from(c.junk);
        s.unusable_values += u64::from(c.unusable);
        s.generic_values += u64::from(c.generic_new);
        s.generic_skipped += u64::from(c.generic_skipped);
        s.limit_dropped += u64::from(c.limit_dropped);
        s.conflicts += u64::from(c.conflicts);
        s.merges += u64::from(c.merges);
        s.new_customers += u64::from(c.new_customer);
        s.unresolved += u64::from(resolution.method == Method::Unresolved);
        for r in &out {
            *s.outputs.entry(r.topic.name()).or_default() += 1;
        }
        Ok(out)
    }

    fn dead_letter(&mut self, input: &Input, rejection: &Rejection) -> OutputRecord {
        *self.stats.rejected.entry(rejection.reason()).or_default() += 1;
        *self.stats.outputs.entry(Topic::Dlq.name()).or_default() += 1;
        OutputRecord {
            topic: Topic::Dlq,
            key: input.key.map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: Payload::Raw(input.bytes.to_vec()),
            headers: vec![
                ("unicus.error".into(), rejection.to_string()),
                ("unicus.error.reason".into(), rejection.reason().into()),
                ("unicus.source.topic".into(), input.source_topic.into()),
                (
                    "unicus.source.offset".into(),
                    input.source_offset.to_string(),
                ),
            ],
        }
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
        let Some(profile) = self.profiler.load(&self.store, customer_id)? else {
            return Ok(None);
        };
        let clock = self.profiler.clock(&self.store)?;
        Ok(Some(self.profiler.golden_record(
            customer_id,
            &profile,
            clock,
        )))
    }

    /// Every customer's golden record, in customer-id order. A full scan: for tests,
    /// exports and tools, never on the event path.
    pub fn golden_records(&self) -> Result<Vec<Value>, EngineError> {
        let clock = self.profiler.clock(&self.store)?;
        let mut out = Vec::new();
        for (k, v) in self.store.scan_prefix(b"p/cu/")? {
            let customer_id =
                String::from_utf8_lossy(k.strip_prefix(b"p/cu/").unwrap_or(&k)).into_owned();
            let profile = postcard::from_bytes(&v).map_err(|source| StoreError::Decode {
                key: customer_id.clone(),
                source,
            })?;
            out.push(self.profiler.golden_record(&customer_id, &profile, clock));
        }
        Ok(out)
    }

    /// Live customers.
    pub fn customer_count(&self) -> Result<i64, EngineError> {
        Ok(self.resolver.customer_count(&self.store)?)
    }

    /// Normalises an identifier the way resolution does.
    pub fn normalise_identifier(&self, kind: &str, raw: &str) -> Option<Ident> {
        self.resolver.normalise_identifier(kind, raw)
    }
}
