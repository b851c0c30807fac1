//! The engine: one input record in, state changes staged and output records out.
//!
//! Data path: [`touchpoint::parse`](crate::engine::input::touchpoint::parse) → normalise → [`Resolver`] →
//! [`ProfileCommand`](crate::engine::handoff::ProfileCommand)s → [`Profiler`] → output records.
//! The engine knows nothing of Kafka: the runtime, `replay` and the tests all drive this
//! same type. It is deterministic: the same inputs in the same order into the same store
//! give the same outputs (ids, times and all).
//!
//! Changes are staged in the store's overlay and become durable, atomically, at
//! [`Engine::commit`] (one flush per batch). An event id seen before (committed or
//! staged) changes nothing and counts nothing: redelivery is harmless.

pub mod config;
pub mod gdpr;
pub mod handoff;
pub mod input;
pub mod normalise;
pub mod profile;
pub mod resolve;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::engine::config::{ConfigError, EngineConfig};
use crate::engine::gdpr::Subject;
use crate::engine::handoff::{Ident, ProfileCommand, RequestKind};
use crate::engine::input::command::{self, Command, CommandKind};
use crate::engine::input::touchpoint::{self, Rejection};
use crate::engine::profile::Profiler;
use crate::engine::resolve::{Method, Resolver};
use crate::model::output::rfc3339;
use crate::model::output::{OutputRecord, Payload, Topic};
use crate::store::{key, Store, StoreError};

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
pub const STORE_FORMAT: u32 = 2;
const STORE_FORMAT_KEY: &[u8] = b"m/store_format";

/// One input record, wherever it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub bytes: &'a [u8],
    /// Topic (or file) the record was read from, for dead letters.
    pub source_topic: &'a str,
    /// Offset (or line index) of the record, for dead letters.
    pub source_offset: i64,
    pub key: Option<&'a [u8]>,
    /// When the record was written (ms), if known: the time of a rights request.
    pub timestamp: Option<i64>,
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
    /// Events dropped because they carry an identifier of an erased customer.
    pub suppressed: u64,
    /// Person fields or attributes dropped by the minimisation allow-lists.
    pub minimised: u64,
    /// Consent entries naming an identifier that cannot be normalised.
    pub consent_dropped: u64,
    /// `consent.changes` records by `purpose/channel`.
    pub consent_changes: BTreeMap<String, u64>,
    /// Rights requests done, by kind (`export`, `erase`, `retention`, `not_found`).
    pub requests: BTreeMap<&'static str, u64>,
    /// Behavioural source profiles detached by retention.
    pub detached_source_profiles: u64,
    /// `triggers.cart_abandoned` records.
    pub carts_fired: u64,
    /// Abandoned carts without any allowed channel: no trigger.
    pub carts_suppressed: u64,
    /// `triggers.purchase_completed` records.
    pub purchases: u64,
    /// `triggers.lifecycle_changed` records.
    pub lifecycle_changes: u64,
    /// Consent decisions that lapsed.
    pub consents_expired: u64,
    pub outputs: BTreeMap<&'static str, u64>,
    /// Events not attached to the source profile of their anchor: its value is generic,
    /// or it is clearly somebody else's (the shop's phone, a family e-mail).
    pub anchors_refused: u64,
    /// Events that brought new person data and looked up fuzzy candidates.
    pub fuzzy_searches: u64,
    /// Source profiles compared by fuzzy matching.
    pub fuzzy_candidates: u64,
    /// Blocking keys that turned generic (shared by more than `matching.max_candidates`).
    pub generic_blocks: u64,
    /// Fuzzy links, by match rule.
    pub fuzzy_links: BTreeMap<String, u64>,
    /// `identity.changes` suggestions, by match rule.
    pub suggestions: BTreeMap<String, u64>,
    /// Splits done (`identity.commands`).
    pub splits: u64,
    /// What became of the records of each input source (a topic, or a file), for the
    /// reconciliation of what was consumed against what came out.
    pub by_source: BTreeMap<String, SourceCounts>,
    /// The number of source profiles of a customer after each change that added to them
    /// (creation, merge, a new source profile), counted per number: the over-merge signal.
    pub customer_source_profiles: BTreeMap<u32, u64>,
}

impl Stats {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// One line on fuzzy matching, for the summaries of `replay` and `demo`.
    pub fn fuzzy_summary(&self) -> String {
        let by_rule = |m: &BTreeMap<String, u64>| -> String {
            let total: u64 = m.values().sum();
            if m.is_empty() {
                return "0".into();
            }
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("{total} ({})", parts.join(", "))
        };
        format!(
            "fuzzy matching: {} events looked for candidates, {} compared; links {}; suggestions {}; generic blocking keys {}; splits {}",
            self.fuzzy_searches,
            self.fuzzy_candidates,
            by_rule(&self.fuzzy_links),
            by_rule(&self.suggestions),
            self.generic_blocks,
            self.splits
        )
    }

    fn source(&mut self, topic: &str) -> &mut SourceCounts {
        if !self.by_source.contains_key(topic) {
            self.by_source
                .insert(topic.to_string(), SourceCounts::default());
        }
        self.by_source.get_mut(topic).expect("inserted above")
    }
}

/// What became of the records of one input source. Every record the engine is given
/// counts once, in exactly one of these.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceCounts {
    /// Touchpoints resolved (one `touchpoints.resolved` record each), or rights
    /// requests carried out.
    pub accepted: u64,
    /// Dead letters, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// An `event_id` or `request_id` seen before: nothing changed.
    pub duplicates: u64,
    /// Events of an erased person: dropped, nothing published.
    pub suppressed: u64,
}

impl SourceCounts {
    pub fn total(&self) -> u64 {
        self.accepted + self.rejected.values().sum::<u64>() + self.duplicates + self.suppressed
    }
}

pub struct Engine {
    config: EngineConfig,
    store: Store,
    parser: touchpoint::Parser,
    resolver: Resolver,
    profiler: Profiler,
    stats: Stats,
    /// Events staged since the last commit.
    pending: usize,
    /// Key of the pseudonymised topics' hashes, read once.
    pseudonym_key: Option<Vec<u8>>,
}

const DAY_MS: i64 = 86_400_000;

fn seen_key(event_id: &str) -> Vec<u8> {
    key("e/", &[event_id])
}

impl Engine {
    pub fn new(config: EngineConfig, mut store: Store) -> Result<Self, EngineError> {
        config.validate()?;
        match store.get::<u32>(STORE_FORMAT_KEY)? {
            Some(STORE_FORMAT) => {}
            Some(found) => return Err(EngineError::StoreFormat { found }),
            // Written by the first batch; a store with records and no format is older.
            None if store.contains(b"m/next_customer_seq")? => {
                return Err(EngineError::StoreFormat { found: 1 })
            }
            None => store.put(STORE_FORMAT_KEY.to_vec(), &STORE_FORMAT)?,
        }
        Ok(Self {
            parser: touchpoint::Parser::new(&config),
            resolver: Resolver::new(&config),
            profiler: Profiler::new(&config),
            config,
            store,
            stats: Stats::default(),
            pending: 0,
            pseudonym_key: None,
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
        let parsed = self.parser.parse(input.bytes);
        self.process_parsed(input, parsed)
    }

    /// Processes one record whose bytes (`input.bytes`, kept for a dead letter) were
    /// decoded into `doc` before the engine (Avro), or could not be.
    pub fn process_document(
        &mut self,
        input: &Input,
        doc: Result<serde_json::Map<String, Value>, Rejection>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let parsed = doc.and_then(|d| self.parser.parse_document(d));
        self.process_parsed(input, parsed)
    }

    fn process_parsed(
        &mut self,
        input: &Input,
        parsed: Result<touchpoint::Touchpoint, Rejection>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        self.stats.consumed += 1;
        let tp = match parsed {
            Ok(tp) => tp,
            Err(rejection) => return Ok(vec![self.dead_letter(input, &rejection)]),
        };
        let seen = seen_key(&tp.event_id);
        if self.store.contains(&seen)? {
            self.stats.duplicates += 1;
            self.stats.source(input.source_topic).duplicates += 1;
            return Ok(Vec::new());
        }
        let resolution = self.resolver.resolve(&mut self.store, &tp)?;
        if resolution.method == Method::Suppressed {
            // Nothing of the event is kept or published: it belongs to an erased person.
            self.store.put_raw(seen, Vec::new());
            self.pending += 1;
            self.stats.suppressed += 1;
            self.stats.source(input.source_topic).suppressed += 1;
            return Ok(Vec::new());
        }
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
        self.minimise(&mut resolved);
        resolved.insert("customer_id".into(), json!(resolution.customer_id));
        resolved.insert(
            "resolution".into(),
            json!({
                "method": resolution.method.as_str(),
                "matched_on": resolution.matched_on,
                "score": resolution.score,
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
        s.source(input.source_topic).accepted += 1;
        *s.accepted_by_channel.entry(tp.channel).or_default() += 1;
        s.unknown_fields += u64::from(tp.unknown_fields);
        s.unknown_identifier_types += u64::from(tp.unknown_identifier_types);
        s.unknown_types += u64::from(matches!(tp.kind, touchpoint::EventType::Other(_)));
        s.junk_values += u64::from(c.junk);
        s.unusable_values += u64::from(c.unusable);
        s.generic_values += u64::from(c.generic_new);
        s.generic_skipped += u64::from(c.generic_skipped);
        s.limit_dropped += u64::from(c.limit_dropped);
        s.conflicts += u64::from(c.conflicts);
        s.merges += u64::from(c.merges);
        s.new_customers += u64::from(c.new_customer);
        s.unresolved += u64::from(resolution.method == Method::Unresolved);
        s.minimised += u64::from(c.minimised);
        s.consent_dropped += u64::from(c.consent_dropped);
        s.anchors_refused += u64::from(c.anchors_refused);
        s.fuzzy_searches += u64::from(c.fuzzy_searched);
        s.fuzzy_candidates += u64::from(c.fuzzy_candidates);
        s.generic_blocks += u64::from(c.generic_blocks);
        let rules = &self.config.matching.rules;
        for &r in &c.fuzzy_links {
            *s.fuzzy_links.entry(rules[r].name.clone()).or_default() += 1;
        }
        for &r in &c.suggestions {
            *s.suggestions.entry(rules[r].name.clone()).or_default() += 1;
        }
        if c.customer_source_profiles > 0 {
            *s.customer_source_profiles
                .entry(c.customer_source_profiles)
                .or_default() += 1;
        }
        self.finish(&mut out)?;
        Ok(out)
    }

    /// Drops from a published event what the minimisation allow-lists do not keep.
    fn minimise(&self, doc: &mut serde_json::Map<String, Value>) {
        let g = &self.config.gdpr;
        if let Some(Value::Object(person)) = doc.get_mut("person") {
            person.retain(|k, _| g.person_field_allowed(k));
        }
        if let Some(Value::Object(attributes)) = doc.get_mut("attributes") {
            attributes.retain(|k, _| g.attribute_allowed(k));
        }
    }

    /// Pseudonymises the records of the configured topics and counts every output.
    fn finish(&mut self, out: &mut [OutputRecord]) -> Result<(), EngineError> {
        if !self.config.gdpr.pseudonymised_topics.is_empty() {
            for r in out.iter_mut() {
                if !self
                    .config
                    .gdpr
                    .pseudonymised_topics
                    .iter()
                    .any(|t| t == r.topic.name())
                {
                    continue;
                }
                if let Payload::Json(v) = &mut r.payload {
                    if self.pseudonym_key.is_none() {
                        self.pseudonym_key =
                            Some(gdpr::hash_key_or_generate(&mut self.store, &self.config)?);
                    }
                    gdpr::pseudonymise(v, self.pseudonym_key.as_deref().unwrap_or_default());
                }
            }
        }
        let counts = self.profiler.take_counts();
        let s = &mut self.stats;
        s.carts_fired += counts.carts_fired;
        s.carts_suppressed += counts.carts_suppressed;
        s.purchases += counts.purchases;
        s.lifecycle_changes += counts.lifecycle_changes;
        s.consents_expired += counts.consents_expired;
        for r in out.iter() {
            *s.outputs.entry(r.topic.name()).or_default() += 1;
            if r.topic == Topic::ConsentChanges {
                if let Payload::Json(v) = &r.payload {
                    let label = format!(
                        "{}/{}",
                        v["purpose"].as_str().unwrap_or("?"),
                        v["channel"].as_str().unwrap_or("?")
                    );
                    *s.consent_changes.entry(label).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    /// Processes one rights request (`gdpr.requests`): an export, or an erasure of
    /// every stored trace of the customer. A bad request is a dead letter; a request id
    /// seen before changes nothing.
    pub fn process_request(&mut self, input: &Input) -> Result<Vec<OutputRecord>, EngineError> {
        let parsed = gdpr::parse_request(input.bytes, &self.config);
        self.process_parsed_request(input, parsed)
    }

    /// [`Engine::process_request`] for a request decoded before the engine (Avro).
    pub fn process_request_document(
        &mut self,
        input: &Input,
        doc: Result<serde_json::Map<String, Value>, Rejection>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let parsed = doc.and_then(|d| gdpr::parse_request_document(&d, &self.config));
        self.process_parsed_request(input, parsed)
    }

    fn process_parsed_request(
        &mut self,
        input: &Input,
        parsed: Result<gdpr::Request, Rejection>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        self.stats.consumed += 1;
        let request = match parsed {
            Ok(r) => r,
            Err(rejection) => return Ok(vec![self.dead_letter(input, &rejection)]),
        };
        let seen = gdpr::request_key(&request.request_id);
        if self.store.contains(&seen)? {
            self.stats.duplicates += 1;
            self.stats.source(input.source_topic).duplicates += 1;
            return Ok(Vec::new());
        }
        let at = match request.requested_at.or(input.timestamp) {
            Some(at) => at,
            None => self.profiler.clock(&self.store)?,
        };
        let customer = match &request.subject {
            Subject::Identifier(kind, raw) => self.find_customer(kind, raw)?,
            Subject::CustomerId(id) => self
                .resolver
                .customer_exists(&self.store, id)?
                .then(|| id.clone()),
        };
        let mut out = match &customer {
            Some(customer_id) => {
                self.run_request(customer_id, &request.request_id, request.kind, at)?
            }
            None => {
                *self.stats.requests.entry("not_found").or_default() += 1;
                vec![OutputRecord::json(
                    Topic::GdprReceipts,
                    request.request_id.clone(),
                    json!({
                        "request_id": request.request_id, "customer_id": null,
                        "kind": request.kind.as_str(), "status": "not_found",
                        "done_at": rfc3339(at), "erased": {},
                    }),
                )]
            }
        };
        self.store.put_raw(seen, Vec::new());
        self.pending += 1;
        self.stats.source(input.source_topic).accepted += 1;
        self.finish(&mut out)?;
        Ok(out)
    }

    /// Processes one operator command (`identity.commands`): a split or a merge. A bad
    /// command, or one that cannot be carried out, is a dead letter with its reason; a
    /// command id seen before changes nothing.
    pub fn process_command(&mut self, input: &Input) -> Result<Vec<OutputRecord>, EngineError> {
        let parsed = command::parse_command(input.bytes, &self.config);
        self.process_parsed_command(input, parsed)
    }

    /// [`Engine::process_command`] for a command decoded before the engine (Avro).
    pub fn process_command_document(
        &mut self,
        input: &Input,
        doc: Result<serde_json::Map<String, Value>, Rejection>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let parsed = doc.and_then(|d| command::parse_command_document(&d, &self.config));
        self.process_parsed_command(input, parsed)
    }

    fn process_parsed_command(
        &mut self,
        input: &Input,
        parsed: Result<Command, Rejection>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        self.stats.consumed += 1;
        let cmd = match parsed {
            Ok(c) => c,
            Err(rejection) => return Ok(vec![self.dead_letter(input, &rejection)]),
        };
        let seen = command::command_key(&cmd.command_id);
        if self.store.contains(&seen)? {
            self.stats.duplicates += 1;
            self.stats.source(input.source_topic).duplicates += 1;
            return Ok(Vec::new());
        }
        let at = match cmd.requested_at.or(input.timestamp) {
            Some(at) => at,
            None => self.profiler.clock(&self.store)?,
        };
        let done = match &cmd.kind {
            CommandKind::Split {
                customer_id,
                identifier: (kind, raw),
            } => self.split(&cmd, customer_id, kind, raw, at)?,
            CommandKind::Merge { customer_ids } => self.merge_command(&cmd, customer_ids, at)?,
        };
        let mut out = match done {
            Ok(out) => out,
            Err(detail) => {
                let refusal = Rejection::Refused { detail };
                return Ok(vec![self.dead_letter(input, &refusal)]);
            }
        };
        self.store.put_raw(seen, Vec::new());
        self.pending += 1;
        self.stats.source(input.source_topic).accepted += 1;
        self.finish(&mut out)?;
        Ok(out)
    }

    fn split(
        &mut self,
        cmd: &Command,
        customer_id: &str,
        kind: &str,
        raw: &str,
        at: i64,
    ) -> Result<Result<Vec<OutputRecord>, String>, EngineError> {
        let Some(identifier) = self.resolver.normalise_identifier(kind, raw) else {
            return Ok(Err(format!("`{raw}` is not a usable {kind}")));
        };
        let Some(customer_id) = self.resolver.current_id(&self.store, customer_id)? else {
            return Ok(Err(format!("no customer `{customer_id}`")));
        };
        let done = match self.resolver.split(
            &mut self.store,
            &customer_id,
            &identifier,
            &cmd.command_id,
            at,
        )? {
            Ok(done) => done,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.stats.splits += 1;
        let mut out = vec![OutputRecord::json(
            Topic::IdentityChanges,
            customer_id.clone(),
            json!({
                "type": "split", "customer_id": customer_id,
                "new_customer_id": done.new_customer_id, "identifiers": [identifier],
                "source_profiles": done.moved.len(), "reason": cmd.reason.as_deref().unwrap_or("command"),
                "command_id": cmd.command_id, "at": rfc3339(at),
            }),
        )];
        let commands = [ProfileCommand::Split {
            customer_id,
            new_customer_id: done.new_customer_id,
            source_profiles: done.moved,
            at,
        }];
        out.extend(self.profiler.apply(&mut self.store, &commands)?);
        Ok(Ok(out))
    }

    fn merge_command(
        &mut self,
        cmd: &Command,
        ids: &[String; 2],
        at: i64,
    ) -> Result<Result<Vec<OutputRecord>, String>, EngineError> {
        let done = match self
            .resolver
            .merge_command(&mut self.store, ids, &cmd.command_id, at)?
        {
            Ok(done) => done,
            Err(refusal) => return Ok(Err(refusal)),
        };
        self.stats.merges += 1;
        let mut out = vec![OutputRecord::json(
            Topic::IdentityChanges,
            done.survivor.clone(),
            json!({
                "type": "merge", "customer_id": done.survivor, "merged_ids": [done.merged],
                "rule": "command", "matched_on": [], "identifiers": [], "score": null,
                "reason": cmd.reason.as_deref().unwrap_or("command"), "splits_lifted": done.lifted,
                "command_id": cmd.command_id, "event_id": null, "at": rfc3339(at),
            }),
        )];
        out.extend(self.profiler.apply(&mut self.store, &done.commands)?);
        Ok(Ok(out))
    }

    /// Why each source profile of a customer belongs to it (`unicus explain`).
    pub fn explain(&self, customer_id: &str) -> Result<Option<Value>, EngineError> {
        Ok(self.resolver.explain(&self.store, customer_id)?)
    }

    /// Why two customers were merged, or were not.
    pub fn explain_pair(&self, a: &str, b: &str) -> Result<Value, EngineError> {
        Ok(self.resolver.explain_pair(&self.store, a, b)?)
    }

    /// Runs an export, erasure or retention expiry of one existing customer.
    fn run_request(
        &mut self,
        customer_id: &str,
        request_id: &str,
        kind: RequestKind,
        at: i64,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let facts = match kind {
            RequestKind::Export => {
                let identity = self.resolver.export_identity(&self.store, customer_id)?;
                Resolver::request_facts(request_id, kind, at, None, identity.as_ref())
            }
            RequestKind::Erase | RequestKind::Retention => {
                let Some(forgotten) = self.resolver.forget(&mut self.store, customer_id)? else {
                    return Ok(Vec::new());
                };
                let mut facts =
                    Resolver::request_facts(request_id, kind, at, Some(&forgotten), None);
                let suppressed = if kind == RequestKind::Erase {
                    gdpr::suppress(
                        &mut self.store,
                        &self.config,
                        &forgotten.exclusive_identifiers,
                    )?
                } else {
                    0
                };
                facts
                    .erased
                    .push(("suppressed_identifiers".into(), suppressed));
                facts
            }
        };
        *self.stats.requests.entry(kind.as_str()).or_default() += 1;
        let commands = [ProfileCommand::Request {
            customer_id: customer_id.to_string(),
            facts: Box::new(facts),
        }];
        Ok(self.profiler.apply(&mut self.store, &commands)?)
    }

    /// Erases the customers inactive beyond `gdpr.retention.inactive_customer_days` and
    /// detaches the behavioural source profiles unseen beyond `behavioural_days`, as of
    /// `now` (ms): at most `sweep_batch` of each per call, found through the time
    /// indexes (no scan). Each expiry gets a receipt of kind `retention`. Call it between
    /// batches; what it changes is committed with the next [`Engine::commit`].
    pub fn sweep_retention(&mut self, now: i64) -> Result<Vec<OutputRecord>, EngineError> {
        let r = self.config.gdpr.retention.clone();
        let mut out = Vec::new();
        if r.inactive_customer_days > 0 {
            let cutoff = now - i64::from(r.inactive_customer_days) * DAY_MS;
            for (index_key, customer_id) in
                self.profiler
                    .inactive_before(&self.store, cutoff, r.sweep_batch)?
            {
                let request_id = format!("retention-{customer_id}-{}", now / DAY_MS);
                out.extend(self.run_request(
                    &customer_id,
                    &request_id,
                    RequestKind::Retention,
                    now,
                )?);
                // Gone with the profile; removed here too in case the index was stale.
                self.store.remove(index_key);
            }
        }
        if r.behavioural_days > 0 {
            let cutoff = now - i64::from(r.behavioural_days) * DAY_MS;
            let mut by_customer: BTreeMap<String, Vec<u64>> = BTreeMap::new();
            for (index_key, customer_id, sp) in
                self.profiler
                    .behavioural_before(&self.store, cutoff, r.sweep_batch)?
            {
                self.store.remove(index_key);
                by_customer.entry(customer_id).or_default().push(sp);
            }
            for (customer_id, sps) in by_customer {
                let Some(all) = self
                    .resolver
                    .source_profiles_of(&self.store, &customer_id)?
                else {
                    continue;
                };
                let request_id = format!("retention-{customer_id}-{}", now / DAY_MS);
                if all.iter().all(|sp| sps.contains(sp)) {
                    out.extend(self.run_request(
                        &customer_id,
                        &request_id,
                        RequestKind::Retention,
                        now,
                    )?);
                    continue;
                }
                let Some(forgotten) = self.resolver.detach(&mut self.store, &customer_id, &sps)?
                else {
                    continue;
                };
                self.stats.detached_source_profiles += forgotten.source_profiles;
                let commands = [ProfileCommand::Detach {
                    customer_id: customer_id.clone(),
                    source_profiles: sps,
                    at: now,
                }];
                out.extend(self.profiler.apply(&mut self.store, &commands)?);
                let erased: serde_json::Map<String, Value> = forgotten
                    .counts()
                    .into_iter()
                    .filter(|(k, _)| k != "customer_ids")
                    .map(|(k, n)| (k, json!(n)))
                    .collect();
                out.push(OutputRecord::json(
                    Topic::GdprReceipts,
                    customer_id.clone(),
                    json!({
                        "request_id": request_id, "customer_id": customer_id,
                        "kind": "retention", "scope": "behavioural_source_profiles",
                        "status": "done", "done_at": rfc3339(now), "erased": erased,
                    }),
                ));
            }
        }
        if !out.is_empty() {
            self.pending += 1;
        }
        self.finish(&mut out)?;
        Ok(out)
    }

    /// Fires the timers due by the wall clock `now` (ms) minus the grace: abandoned carts,
    /// lifecycle changes by the passage of time, consent expiries. The runtime calls it
    /// when the stream is idle, so that time-driven triggers do not wait for events;
    /// while events flow, timers fire in event time. What it changes is committed with
    /// the next [`Engine::commit`].
    pub fn tick(&mut self, now: i64) -> Result<Vec<OutputRecord>, EngineError> {
        let clock = self.profiler.clock(&self.store)?;
        let now = now.max(clock);
        let until = now.saturating_sub(self.config.activation.grace_ms as i64);
        let mut out = self.profiler.fire_timers(&mut self.store, until, now)?;
        if !out.is_empty() {
            self.pending += 1;
        }
        self.finish(&mut out)?;
        Ok(out)
    }

    /// Channels on which `purpose` is allowed now and the customer is reachable: the
    /// only channels an activation may use.
    pub fn allowed_channels(
        &self,
        customer_id: &str,
        purpose: &str,
    ) -> Result<Vec<&'static str>, EngineError> {
        let Some(profile) = self.profiler.load(&self.store, customer_id)? else {
            return Ok(Vec::new());
        };
        let clock = self.profiler.clock(&self.store)?;
        Ok(self.profiler.allowed_channels(&profile, purpose, clock))
    }

    fn dead_letter(&mut self, input: &Input, rejection: &Rejection) -> OutputRecord {
        // A dead letter changes no state but is part of the batch.
        self.pending += 1;
        *self.stats.rejected.entry(rejection.reason()).or_default() += 1;
        *self
            .stats
            .source(input.source_topic)
            .rejected
            .entry(rejection.reason())
            .or_default() += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_of_another_format_is_refused_with_a_clear_message() {
        let mut store = Store::temporary().unwrap();
        store.put(STORE_FORMAT_KEY.to_vec(), &1u32).unwrap();
        store.commit().unwrap();
        let err = Engine::new(EngineConfig::default(), store)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("format 1") && err.contains("replay"), "{err}");

        let mut store = Store::temporary().unwrap();
        store.put(b"m/next_customer_seq".to_vec(), &3u64).unwrap();
        store.commit().unwrap();
        assert!(Engine::new(EngineConfig::default(), store).is_err());

        let mut fresh = Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap();
        fresh.commit().unwrap();
        assert_eq!(
            fresh.store().get::<u32>(STORE_FORMAT_KEY).unwrap(),
            Some(STORE_FORMAT)
        );
    }
}
