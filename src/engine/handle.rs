//! The one entry point of the engine: a parsed input in, its state changes staged and
//! its output records out, whatever its kind (touchpoint, rights request, command).

use serde_json::Value;

use crate::engine::gdpr;
use crate::engine::handoff::ProfileCommand;
use crate::engine::input::command::{self, Command, CommandKind};
use crate::engine::input::request::{Request, Subject};
use crate::engine::input::touchpoint::{Rejection, Touchpoint};
use crate::engine::input::{Input, InputKind, InputParser, Record};
use crate::engine::reference::{self, RefTable, ReferenceUpdate};
use crate::engine::resolve::{Method, Resolution};
use crate::engine::{Engine, EngineError, Stats};
use crate::model::output::{day_of, rfc3339, to_json, OutputRecord, Payload, Topic};
use crate::model::records::{EngineReceipt, OperatorMerge, ResolutionSummary, SplitChange};
use crate::model::EventType;
use crate::store::{keys, Cell, Store, StoreError, Table};

/// Events seen, by `event_id`: the day each was received.
const SEEN_EVENTS: Table<String, u32> = Table::new(keys::engine::SEEN_EVENTS);
/// Where the sweep of the seen marks stands.
const SEEN_SWEEP: Cell<SeenSweep> = Cell::new(keys::engine::SEEN_SWEEP);
/// Seen marks read per input while a sweep runs: a day's sweep goes over the inputs
/// that follow.
const SWEEP_PER_INPUT: usize = 2_000;

/// A sweep of the seen marks: it forgets those received before `cutoff`, reading them in
/// key order after `after`; `done` once it has read the last.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SeenSweep {
    cutoff: u32,
    after: Option<String>,
    done: bool,
}

/// The id under which an input is done once, in the table of its kind's owner.
enum DoneMark {
    Event(String),
    Request(String),
    Command(String),
}

impl DoneMark {
    /// `None` for reference data: applied again, it changes nothing.
    fn of(input: &Input) -> Option<Self> {
        match input {
            Input::Touchpoint(tp) => Some(Self::Event(tp.event_id.clone())),
            Input::Request(r) => Some(Self::Request(r.request_id.clone())),
            Input::Command(c) => Some(Self::Command(c.command_id.clone())),
            Input::Reference(_) => None,
        }
    }

    fn is_done(&self, store: &Store) -> Result<bool, StoreError> {
        match self {
            Self::Event(id) => SEEN_EVENTS.contains(store, id),
            Self::Request(id) => gdpr::request_done(store, id),
            Self::Command(id) => command::command_done(store, id),
        }
    }

    /// Marks the input done; an event's mark holds the day of `received_at`.
    fn mark(&self, store: &mut Store, received_at: i64) -> Result<(), StoreError> {
        match self {
            Self::Event(id) => SEEN_EVENTS.put(store, id, &day_of(received_at)),
            Self::Request(id) => gdpr::mark_request_done(store, id),
            Self::Command(id) => command::mark_command_done(store, id),
        }
    }
}

/// What one input gave: outputs, or a refusal that becomes a dead letter.
type Outcome = Result<Vec<OutputRecord>, Rejection>;

impl Engine {
    /// Forgets the seen marks of events received on a day more than
    /// `limits.seen_events_days` days before the day of `received_at` (so each is kept
    /// that many full days at least), so that they do not grow with the stream forever.
    /// Kafka's offsets already keep a redelivery from being processed twice within that
    /// horizon; the marks catch what they do not (a crash before the commit, a duplicate
    /// sent by a producer, a group reset within the topics' retention). Once a day, a
    /// sweep reads every mark in key order, [`SWEEP_PER_INPUT`] per input, and removes
    /// those of earlier days. Marks written before they held their day are kept.
    fn prune_seen(&mut self, received_at: i64) -> Result<(), StoreError> {
        let days = self.config.limits.seen_events_days;
        if days == 0 {
            return Ok(());
        }
        let cutoff = day_of(received_at).saturating_sub(days);
        let mut sweep = match self.seen_sweep.take() {
            Some(sweep) => sweep,
            None => SEEN_SWEEP.get(&self.store)?.unwrap_or(SeenSweep {
                cutoff: 0,
                after: None,
                done: true,
            }),
        };
        if sweep.done && sweep.cutoff >= cutoff {
            self.seen_sweep = Some(sweep);
            return Ok(());
        }
        if sweep.done {
            sweep.after = None;
            sweep.done = false;
        }
        sweep.cutoff = sweep.cutoff.max(cutoff);
        let prefix = keys::engine::SEEN_EVENTS.bytes();
        // Undecoded: marks written before they held their day hold `()`.
        let marks = SEEN_EVENTS.page_raw(&self.store, sweep.after.as_deref(), SWEEP_PER_INPUT)?;
        let mut pruned = 0;
        for (key, value) in &marks {
            let old = postcard::from_bytes::<u32>(value).is_ok_and(|day| day < sweep.cutoff);
            if old {
                self.store.remove(key.clone());
                pruned += 1;
            }
        }
        self.stats.seen_marks_pruned += pruned;
        match marks.last() {
            Some((key, _)) if marks.len() == SWEEP_PER_INPUT => {
                sweep.after = Some(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            }
            _ => sweep.done = true,
        }
        SEEN_SWEEP.put(&mut self.store, &sweep)?;
        self.seen_sweep = Some(sweep);
        Ok(())
    }

    /// Parses and validates a JSON record of a known kind.
    pub fn parse(&self, kind: InputKind, bytes: &[u8]) -> Result<Input, Rejection> {
        self.inputs.parse(kind, bytes)
    }

    /// Validates a record of a known kind decoded before the engine (Avro), or the
    /// reason it could not be decoded.
    pub fn parse_document(
        &self,
        kind: InputKind,
        doc: Result<serde_json::Map<String, Value>, Rejection>,
    ) -> Result<Input, Rejection> {
        doc.and_then(|d| self.inputs.parse_document(kind, d))
    }

    /// A parser of the engine's inputs, for a thread that parses beside it.
    pub fn input_parser(&self) -> InputParser {
        InputParser::new(&self.config)
    }

    /// Parses a line of a replay file, whose kind its fields tell (contract §3).
    pub fn parse_line(&self, bytes: &[u8]) -> Result<Input, Rejection> {
        self.inputs.parse_line(bytes)
    }

    /// Parses a JSON record of a known kind and handles it.
    pub fn process(
        &mut self,
        kind: InputKind,
        record: &Record,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let input = self.inputs.parse(kind, record.bytes);
        self.handle(record, input)
    }

    /// Handles one input. Only store failures are errors: a bad record (`Err` from the
    /// parser, or a command that cannot be carried out) is a dead-letter output and the
    /// stream goes on; an id seen before changes nothing and counts as a duplicate.
    pub fn handle(
        &mut self,
        record: &Record,
        input: Result<Input, Rejection>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        self.stats.consumed += 1;
        let input = input.and_then(|i| self.inputs.check_time(record, &i).map(|()| i));
        let input = match input {
            Ok(input) => input,
            Err(rejection) => return Ok(vec![self.dead_letter(record, &rejection)]),
        };
        let done = DoneMark::of(&input);
        if matches!(done, Some(DoneMark::Event(_))) {
            self.prune_seen(record.received_at)?;
        }
        if let Some(mark) = &done {
            if mark.is_done(&self.store)? {
                self.stats.duplicates += 1;
                self.stats.source(record.source_topic).duplicates += 1;
                return Ok(Vec::new());
            }
        }
        let outcome = match input {
            Input::Touchpoint(tp) => self.touchpoint(record, *tp)?,
            Input::Request(r) => Ok(self.request(record, r)?),
            Input::Command(c) => self.command(record, &c)?,
            Input::Reference(update) => {
                self.apply_reference(&update)?;
                self.stats.source(record.source_topic).accepted += 1;
                Ok(Vec::new())
            }
        };
        let mut out = match outcome {
            Ok(out) => out,
            Err(refusal) => return Ok(vec![self.dead_letter(record, &refusal)]),
        };
        if let Some(mark) = done {
            mark.mark(&mut self.store, record.received_at)?;
        }
        self.pending += 1;
        self.finish(&mut out)?;
        Ok(out)
    }

    /// Applies a record of a reference topic (`key` the SKU or store id, `value` none
    /// for a tombstone) to the local copy; a record that cannot be read is counted and
    /// given back, and changes nothing.
    pub fn reference(
        &mut self,
        table: RefTable,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<Result<(), Rejection>, EngineError> {
        match reference::parse_record(table, key, value, &self.config) {
            Ok(update) => self.apply_reference(&update).map(Ok),
            Err(rejection) => {
                self.stats.reference_rejected += 1;
                Ok(Err(rejection))
            }
        }
    }

    /// Counts a reference record refused before the engine could read it (an Avro value
    /// that cannot be decoded).
    pub fn count_reference_refused(&mut self) {
        self.stats.reference_rejected += 1;
    }

    fn apply_reference(&mut self, update: &ReferenceUpdate) -> Result<(), EngineError> {
        reference::apply(&mut self.store, update)?;
        match update.table {
            RefTable::Products => self.stats.reference_products += 1,
            RefTable::Stores => self.stats.reference_stores += 1,
        }
        self.pending += 1;
        Ok(())
    }

    /// Resolves a touchpoint, applies what resolve hands to profile, and writes the
    /// resolved event. An event of an erased person is dropped, nothing published.
    fn touchpoint(&mut self, record: &Record, tp: Touchpoint) -> Result<Outcome, EngineError> {
        let mut resolution = self.resolver.resolve(&mut self.store, &tp)?;
        if resolution.method == Method::Suppressed {
            self.stats.suppressed += 1;
            self.stats.source(record.source_topic).suppressed += 1;
            return Ok(Ok(Vec::new()));
        }
        self.advance_clock(tp.occurred_at)?;
        let mut out = Vec::with_capacity(resolution.identity_changes.len() + 3);
        let change_key = resolution.customer_id.clone().unwrap_or_default();
        for change in std::mem::take(&mut resolution.identity_changes) {
            let k = change
                .get("customer_id")
                .and_then(Value::as_str)
                .unwrap_or(&change_key)
                .to_string();
            out.push(OutputRecord::json(Topic::IdentityChanges, k, change));
        }
        out.extend(self.profile(&resolution.commands)?);
        self.count_touchpoint(record, &tp, std::mem::take(&mut resolution.counts));
        out.push(self.resolved(tp, &resolution));
        Ok(Ok(out))
    }

    /// Hands profile its commands and absorbs what it counted.
    pub(crate) fn profile(
        &mut self,
        commands: &[ProfileCommand],
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let profiled = self.profiler.apply(&mut self.store, commands)?;
        self.stats.absorb(profiled.counts);
        Ok(profiled.out)
    }

    /// The `touchpoints.resolved` record: the event as sent, less what minimisation
    /// drops, with its customer and how it was found.
    fn resolved(&self, tp: Touchpoint, resolution: &Resolution) -> OutputRecord {
        let mut resolved = tp.raw;
        self.minimise(&mut resolved);
        resolved.insert("customer_id".into(), to_json(&resolution.customer_id));
        let summary = ResolutionSummary {
            method: resolution.method.as_str(),
            matched_on: &resolution.matched_on,
            score: resolution.score,
        };
        resolved.insert("resolution".into(), to_json(&summary));
        OutputRecord {
            topic: Topic::Resolved,
            key: resolution.customer_id.clone(),
            payload: Payload::Json(Value::Object(resolved)),
            headers: Vec::new(),
        }
    }

    /// Counts an accepted touchpoint: what the input said, and what resolve counted.
    fn count_touchpoint(&mut self, record: &Record, tp: &Touchpoint, counted: Stats) {
        let s = &mut self.stats;
        s.accepted += 1;
        s.source(record.source_topic).accepted += 1;
        *s.accepted_by_channel.entry(tp.channel.clone()).or_default() += 1;
        s.unknown_fields += u64::from(tp.unknown_fields);
        s.unknown_identifier_types += u64::from(tp.unknown_identifier_types);
        s.unknown_types += u64::from(matches!(tp.kind, EventType::Other(_)));
        s.absorb(counted);
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

    /// Carries out a rights request (`gdpr.requests`): an export, or an erasure of
    /// every stored trace of the customer; a receipt either way.
    fn request(
        &mut self,
        record: &Record,
        request: Request,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let at = match request.requested_at.or(self.record_time(record)) {
            Some(at) => at,
            None => self.input_clock()?,
        };
        let customer = match &request.subject {
            Subject::Identifier(kind, raw) => self.find_customer(kind, raw)?,
            // Any id unicus ever gave the person: a merged-away one names the survivor.
            Subject::CustomerId(id) => self.resolver.current_id(&self.store, id)?,
        };
        let out = match &customer {
            Some(customer_id) => {
                self.run_request(customer_id, &request.request_id, request.kind, at)?
            }
            None => {
                *self.stats.requests.entry("not_found").or_default() += 1;
                let receipt = EngineReceipt {
                    request_id: &request.request_id,
                    customer_id: None,
                    kind: request.kind.as_str(),
                    scope: None,
                    status: "not_found",
                    done_at: rfc3339(at),
                    erased: Default::default(),
                };
                vec![OutputRecord::json(
                    Topic::GdprReceipts,
                    request.request_id.clone(),
                    to_json(&receipt),
                )]
            }
        };
        self.stats.source(record.source_topic).accepted += 1;
        Ok(out)
    }

    /// The record's timestamp as the time of a request or command that states none, if
    /// it lies within the times the record may state ([`Record::received_at`] bounds a
    /// producer-set one).
    fn record_time(&self, record: &Record) -> Option<i64> {
        let window = self.inputs.time_window(record);
        record.timestamp.filter(|t| window.contains(*t))
    }

    /// Carries out an operator command (`identity.commands`): a split or a merge, or
    /// the reason it cannot be.
    fn command(&mut self, record: &Record, cmd: &Command) -> Result<Outcome, EngineError> {
        let at = match cmd.requested_at.or(self.record_time(record)) {
            Some(at) => at,
            None => self.input_clock()?,
        };
        let done = match &cmd.kind {
            CommandKind::Split {
                customer_id,
                identifier: (kind, raw),
            } => self.split(cmd, customer_id, kind, raw, at)?,
            CommandKind::Merge { customer_ids } => self.merge_command(cmd, customer_ids, at)?,
        };
        if done.is_ok() {
            self.stats.source(record.source_topic).accepted += 1;
        }
        Ok(done.map_err(|detail| Rejection::Refused { detail }))
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
        let mut done = match self.resolver.split(
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
        self.stats.absorb(std::mem::take(&mut done.counts));
        let change = SplitChange {
            kind: "split",
            customer_id: &customer_id,
            new_customer_id: &done.new_customer_id,
            identifiers: [&identifier],
            source_profiles: done.moved.len(),
            reason: cmd.reason.as_deref().unwrap_or("command"),
            command_id: &cmd.command_id,
            at: rfc3339(at),
        };
        let mut out = vec![OutputRecord::json(
            Topic::IdentityChanges,
            customer_id.clone(),
            to_json(&change),
        )];
        let commands = [ProfileCommand::Split {
            customer_id,
            new_customer_id: done.new_customer_id,
            source_profiles: done.moved,
            at,
        }];
        out.extend(self.profile(&commands)?);
        Ok(Ok(out))
    }

    fn merge_command(
        &mut self,
        cmd: &Command,
        ids: &[String; 2],
        at: i64,
    ) -> Result<Result<Vec<OutputRecord>, String>, EngineError> {
        let mut done =
            match self
                .resolver
                .merge_command(&mut self.store, ids, &cmd.command_id, at)?
            {
                Ok(done) => done,
                Err(refusal) => return Ok(Err(refusal)),
            };
        self.stats.merges += 1;
        self.stats.absorb(std::mem::take(&mut done.counts));
        let change = OperatorMerge {
            kind: "merge",
            customer_id: &done.survivor,
            merged_ids: [&done.merged],
            rule: "command",
            matched_on: [],
            identifiers: [],
            score: None,
            reason: cmd.reason.as_deref().unwrap_or("command"),
            splits_lifted: done.lifted,
            command_id: &cmd.command_id,
            event_id: None,
            at: rfc3339(at),
        };
        let mut out = vec![OutputRecord::json(
            Topic::IdentityChanges,
            done.survivor.clone(),
            to_json(&change),
        )];
        out.extend(self.profile(&done.commands)?);
        Ok(Ok(out))
    }

    /// Pseudonymises the records of the configured topics and counts every output.
    pub(crate) fn finish(&mut self, out: &mut [OutputRecord]) -> Result<(), EngineError> {
        if !self.config.gdpr.pseudonymised_topics.is_empty() {
            for r in out.iter_mut() {
                self.pseudonymise(r)?;
            }
        }
        let s = &mut self.stats;
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

    /// Pseudonymises a record of a topic `gdpr.pseudonymised_topics` names.
    pub(crate) fn pseudonymise(&mut self, r: &mut OutputRecord) -> Result<(), EngineError> {
        let topics = &self.config.gdpr.pseudonymised_topics;
        if !topics.iter().any(|t| t == r.topic.name()) {
            return Ok(());
        }
        if let Payload::Json(v) = &mut r.payload {
            if self.pseudonym_key.is_none() {
                self.pseudonym_key =
                    Some(gdpr::hash_key_or_generate(&mut self.store, &self.config)?);
            }
            gdpr::pseudonymise(v, self.pseudonym_key.as_deref().unwrap_or_default());
        }
        Ok(())
    }

    /// A dead letter: the record's bytes untouched, with the reason in its headers.
    pub(crate) fn dead_letter(&mut self, record: &Record, rejection: &Rejection) -> OutputRecord {
        // A dead letter changes no state but is part of the batch.
        self.pending += 1;
        *self.stats.rejected.entry(rejection.reason()).or_default() += 1;
        *self
            .stats
            .source(record.source_topic)
            .rejected
            .entry(rejection.reason())
            .or_default() += 1;
        *self.stats.outputs.entry(Topic::Dlq.name()).or_default() += 1;
        OutputRecord {
            topic: Topic::Dlq,
            key: record.key.map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: Payload::Raw(record.bytes.to_vec()),
            headers: vec![
                ("unicus.error".into(), rejection.to_string()),
                ("unicus.error.reason".into(), rejection.reason().into()),
                ("unicus.source.topic".into(), record.source_topic.into()),
                (
                    "unicus.source.offset".into(),
                    record.source_offset.to_string(),
                ),
            ],
        }
    }
}
