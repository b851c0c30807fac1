//! The reference topics (`reference.products`, `reference.stores`), read whole by every
//! instance as Kafka Streams reads a GlobalKTable: every partition assigned (no group
//! membership, no commit), read from the start to its end before the first batch
//! (restore), then followed: what has arrived is applied before each batch, and made
//! durable with it. Reference data is kept in the store (`engine::reference`); at each
//! start the topics are read again from their start (they are compacted: one record per
//! key), so a restart never misses an update. A topic that does not exist is left out:
//! reference data is optional. A record that cannot be read is logged and counted,
//! never blocks the stream.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{kafka, RuntimeError};
use crate::engine::reference::RefTable;
use crate::engine::Engine;
use crate::settings::Settings;

/// How long the restore waits for a partition's end before it goes on without it.
const RESTORE_PATIENCE: Duration = Duration::from_secs(60);

pub struct ReferenceReader {
    consumer: BaseConsumer,
    /// `(topic, table)` of the reference topics that exist.
    topics: Vec<(String, RefTable)>,
    /// `(topic, partition, end)`: where each partition ended when the reader opened.
    ends: Vec<(String, i32, i64)>,
}

impl ReferenceReader {
    /// Assigns every partition of the reference topics that exist, from their start;
    /// `None` when there is none.
    pub fn open(settings: &Settings) -> Result<Option<Self>, RuntimeError> {
        let mut config = super::consumer_config(settings);
        config
            .set("group.id", format!("{}-reference", settings.kafka.group_id))
            .remove("group.instance.id")
            .remove("statistics.interval.ms");
        let consumer: BaseConsumer = config
            .create()
            .map_err(kafka("creating the reference reader"))?;
        let mut topics = Vec::new();
        let mut ends = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for table in RefTable::ALL {
            let topic = format!("{}{}", settings.kafka.topic_prefix, table.topic());
            let partitions = match consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) {
                Ok(m) => m
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len() as i32)
                    .sum::<i32>(),
                Err(e) => {
                    warn!(%topic, error = %e, "reference topic metadata unavailable: left out");
                    0
                }
            };
            if partitions == 0 {
                info!(%topic, "no reference topic: its reference data stays as it is");
                continue;
            }
            for p in 0..partitions {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .map_err(kafka("reading a reference partition's end"))?;
                ends.push((topic.clone(), p, high));
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .map_err(kafka("assigning the reference topics"))?;
            }
            topics.push((topic, table));
        }
        if topics.is_empty() {
            return Ok(None);
        }
        consumer
            .assign(&tpl)
            .map_err(kafka("assigning the reference topics"))?;
        drop(tpl);
        Ok(Some(Self {
            consumer,
            topics,
            ends,
        }))
    }

    /// Reads every partition to the end it had when the reader opened, applies it, and
    /// makes it durable: the reference data is whole before the first event. Gives the
    /// records read.
    pub fn restore(&mut self, engine: &mut Engine) -> Result<u64, RuntimeError> {
        let started = Instant::now();
        let mut read = 0;
        let mut last_progress = Instant::now();
        while !self.caught_up()? {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    self.apply(engine, &m)?;
                    read += 1;
                    last_progress = Instant::now();
                }
                Some(Err(e)) => warn!(error = %e, "reading reference data"),
                None if last_progress.elapsed() > RESTORE_PATIENCE => {
                    warn!(
                        records = read,
                        "reference data not read to its end in 60 s: going on, the rest follows"
                    );
                    break;
                }
                None => {}
            }
        }
        engine.commit()?;
        info!(
            records = read,
            ms = started.elapsed().as_millis() as u64,
            "reference data restored"
        );
        Ok(read)
    }

    /// Whether every partition's position has reached its end as of opening.
    fn caught_up(&self) -> Result<bool, RuntimeError> {
        let positions = self
            .consumer
            .position()
            .map_err(kafka("reading the reference positions"))?;
        Ok(self.ends.iter().all(|(topic, p, end)| {
            *end == 0
                || positions
                    .find_partition(topic, *p)
                    .is_some_and(|tp| matches!(tp.offset(), Offset::Offset(o) if o >= *end))
        }))
    }

    /// Applies what has arrived since (without waiting): staged in the store, durable
    /// with the next batch. Gives the records applied.
    pub fn follow(&mut self, engine: &mut Engine) -> Result<u64, RuntimeError> {
        let mut read = 0;
        while let Some(polled) = self.consumer.poll(Duration::ZERO) {
            match polled {
                Ok(m) => {
                    self.apply(engine, &m)?;
                    read += 1;
                }
                Err(e) => warn!(error = %e, "reading reference data"),
            }
        }
        Ok(read)
    }

    fn apply(
        &self,
        engine: &mut Engine,
        m: &rdkafka::message::BorrowedMessage<'_>,
    ) -> Result<(), RuntimeError> {
        let Some(&(_, table)) = self.topics.iter().find(|(t, _)| t == m.topic()) else {
            return Ok(());
        };
        if let Err(rejection) = engine.reference(table, m.key(), m.payload())? {
            warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                reason = rejection.reason(),
                error = %rejection,
                "reference record refused: its key keeps what it had"
            );
        }
        Ok(())
    }
}
