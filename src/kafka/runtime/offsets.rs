//! Offsets: a batch's are committed only after its state and outbox entry are flushed
//! and every one of its outputs is acknowledged, so a committed record has had all its
//! effects; until then, a crash means the batch is consumed again, without effect.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::source::RuntimeContext;
use super::{kafka, RuntimeError};
use crate::telemetry::metrics::Telemetry;

/// Where a batch's input ends on one partition: the offset its commit gives (the next
/// record to read).
pub(super) type InputEnd = (String, i32, i64);

/// Where `batch` ends, on each partition it read from.
pub(super) fn input_ends(batch: &[OwnedMessage]) -> Vec<InputEnd> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    next.into_iter()
        .map(|((t, p), o)| (t.to_string(), p, o))
        .collect()
}

/// The group's committed offsets on the partitions of `ends`, as far as the broker
/// answers within `timeout`; a partition without a commit is absent.
pub(super) fn committed(
    consumer: &StreamConsumer<RuntimeContext>,
    ends: &[InputEnd],
    timeout: Duration,
) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(ends.len());
    for (topic, partition, _) in ends {
        tpl.add_partition(topic, *partition);
    }
    let answer = consumer.committed_offsets(tpl, timeout)?;
    Ok(answer
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// Commits a batch that ends at `next` ([`input_ends`]): on each partition, the next
/// record to read. A failed commit is harmless: the records come again and are
/// recognised by `event_id`.
pub(super) fn commit(
    consumer: &StreamConsumer<RuntimeContext>,
    next: &[InputEnd],
    telemetry: &Telemetry,
) -> Result<(), RuntimeError> {
    if next.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(next.len());
    for (topic, partition, offset) in next {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(kafka("building the offsets to commit"))?;
    }
    // The commit waits for the broker as deliveries do (a frozen broker holds it up to
    // `socket.timeout.ms`): health counts it as outputs awaiting their acknowledgement,
    // so that it reports the broker, not a stalled loop. Every output of the batch is
    // acknowledged by now: nothing else is awaited meanwhile.
    telemetry.health.outputs_sent();
    let committed = consumer.commit(&tpl, CommitMode::Sync);
    telemetry.health.outputs_settled();
    if let Err(e) = committed {
        warn!(error = %e, "offset commit failed; the batch will be consumed again");
        telemetry.commit_failed();
    }
    Ok(())
}
