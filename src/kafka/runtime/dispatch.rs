//! Dispatch: each record of a batch to the engine entry point of its topic and format,
//! then the retention sweep and timers that are due, then the batch's golden records
//! (the latest per customer: `engine::coalesce`). The batch's state is staged in the
//! store; the runtime adds its outbox entry and starts the write.

use std::time::Instant;

use rdkafka::message::{Message, OwnedMessage};

use super::decode::Inputs;
use super::sink::WireRecord;
use super::source::Due;
use super::RuntimeError;
use crate::engine::{Engine, EngineError, ProfileCache, Record};
use crate::kafka::avro::registry::OutputEncoder;
use crate::model::output::OutputRecord;
use crate::settings::Settings;

/// What one batch needs besides its records.
pub(super) struct Dispatch<'a> {
    pub(super) settings: &'a Settings,
    pub(super) inputs: &'a Inputs,
    pub(super) encoder: &'a OutputEncoder,
}

/// A batch run through the engine.
pub(super) struct Processed {
    /// Its output records, encoded.
    pub(super) wire: Vec<WireRecord>,
    /// When the engine was done; `None`: an idle turn that found nothing (what it may
    /// have staged goes with the next batch's write).
    pub(super) processed_at: Option<Instant>,
}

impl Dispatch<'_> {
    /// Runs the engine over `batch` and what is `due`; its state changes are staged in
    /// the store, not written.
    pub(super) fn process(
        &self,
        engine: &mut Engine,
        batch: &[OwnedMessage],
        due: Due,
    ) -> Result<Processed, RuntimeError> {
        let mut wire = Vec::with_capacity(batch.len() * 3);
        // The batch was read just before: the wall clock now bounds the times it states.
        let received_at = chrono::Utc::now().timestamp_millis();
        // The batch's golden records, the latest per customer, go out at its end, each
        // with the broker timestamp of the input that decided it.
        let mut profiles = engine.profile_cache::<Option<i64>>();
        for m in batch {
            let ts = m.timestamp().to_millis();
            let outs = self.dispatch(engine, m, received_at, &mut profiles)?;
            for out in &outs {
                wire.push(self.encode(out, ts)?);
            }
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut due_outs = Vec::new();
        if due.sweep {
            due_outs.extend(engine.sweep_retention(now)?);
        }
        if due.tick {
            due_outs.extend(engine.tick(now)?);
        }
        profiles.absorb(&mut due_outs, None);
        for out in &due_outs {
            wire.push(self.encode(out, None)?);
        }
        for (out, ts) in engine.end_batch(&mut profiles)? {
            wire.push(self.encode(&out, ts)?);
        }
        if batch.is_empty() && wire.is_empty() {
            return Ok(Processed {
                wire,
                processed_at: None,
            });
        }
        Ok(Processed {
            wire,
            processed_at: Some(Instant::now()),
        })
    }

    /// One record to the engine, as the kind its topic carries, read at `received_at`
    /// (wall clock, ms); an Avro record is decoded before the engine parses it.
    fn dispatch(
        &self,
        engine: &mut Engine,
        m: &OwnedMessage,
        received_at: i64,
        profiles: &mut ProfileCache<Option<i64>>,
    ) -> Result<Vec<OutputRecord>, EngineError> {
        let record = Record {
            bytes: super::decode::payload(m),
            source_topic: m.topic(),
            source_offset: m.offset(),
            key: m.key(),
            timestamp: m.timestamp().to_millis(),
            received_at,
        };
        let input = self.inputs.input(engine, m);
        engine.handle_batched(&record, input, profiles, record.timestamp)
    }

    fn encode(
        &self,
        out: &OutputRecord,
        source_timestamp: Option<i64>,
    ) -> Result<WireRecord, RuntimeError> {
        Ok(WireRecord::from_output(
            out,
            self.settings,
            self.encoder,
            source_timestamp,
        )?)
    }
}
