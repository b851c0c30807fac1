//! Which instance of a deployment writes the store: the one the consumer group
//! `<group_id>-writer` assigns the changelog's one partition to.
//!
//! Every instance started with the same `group_id` (and the changelog on) joins that
//! group, subscribed to the changelog topic; Kafka assigns its one partition to exactly
//! one member, which is the deployment's *writer*: it consumes the input topics and
//! writes the store and the changelog. The others stand by: they follow the changelog
//! into their own store (a warm replica) and take over when the partition comes to them
//! (the writer stopped, or its session timed out). The assignment is cooperative-sticky,
//! so an instance joining never moves the partition away from a live writer; with
//! `kafka.group_instance_id` the membership is static, so a writer restarted with the
//! same id takes its partition back without waiting for its old session to expire. The partition is paused as soon as it is
//! assigned: this group only elects, it reads nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{kafka, RuntimeError};
use crate::settings::Settings;

/// How often the election's consumer is polled (rebalances are served in polls).
const POLL: Duration = Duration::from_millis(100);

/// How often a writer that lost the election (a broker outage, a coordinator change, or
/// another writer) asks the group whether another writer claimed a term: twice the
/// session timeout (`session.timeout.ms`, 45 s by default), after which the group has
/// elected another member if there is one.
pub(super) fn regain_within(settings: &Settings) -> Duration {
    let session_ms = settings
        .kafka
        .properties
        .get("session.timeout.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(45_000);
    Duration::from_millis(session_ms.saturating_mul(2))
}

/// How long reading or writing the election's term waits for the broker.
const TERM_TIMEOUT: Duration = Duration::from_secs(10);

/// This instance's place in the writer election, followed by a thread of its own.
pub(super) struct Election {
    consumer: Arc<BaseConsumer>,
    topic: String,
    writer: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Election {
    /// Joins the election of `settings`' deployment.
    pub(super) fn join(settings: &Settings) -> Result<Self, RuntimeError> {
        let mut config = super::clients::consumer_config(settings);
        config
            .set("group.id", settings.kafka.writer_group())
            .set("partition.assignment.strategy", "cooperative-sticky")
            .remove("statistics.interval.ms");
        let consumer: BaseConsumer = config
            .create()
            .map_err(kafka("creating the writer election's consumer"))?;
        let topic = settings.kafka.changelog_topic();
        consumer
            .subscribe(&[&topic])
            .map_err(kafka("joining the writer election"))?;
        let consumer = Arc::new(consumer);
        let writer = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, writer, stop) = (consumer.clone(), writer.clone(), stop.clone());
            let topic = topic.clone();
            std::thread::Builder::new()
                .name("unicus-election".into())
                .spawn(move || follow(&consumer, &topic, &writer, &stop))
                .map_err(RuntimeError::ElectionThread)?
        };
        Ok(Self {
            consumer,
            topic,
            writer,
            stop,
            thread: Some(thread),
        })
    }

    /// Whether this instance is the writer now.
    pub(super) fn is_writer(&self) -> bool {
        self.writer.load(Ordering::Acquire)
    }

    /// Records, as the group's committed offset of the changelog's partition, the term
    /// this writer opened: `term`, the offset after its fence. Each new writer commits
    /// its own before it consumes anything, so a writer cut off from the group learns
    /// from it whether another one took over ([`Election::term`]). Only the member the
    /// partition is assigned to can commit.
    /// A commit refused (a rebalance in progress as another instance joins) is tried
    /// again for up to [`TERM_TIMEOUT`].
    pub(super) fn claim(&self, term: i64) -> Result<(), RuntimeError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(term))
            .map_err(kafka("claiming the writer's term"))?;
        let until = std::time::Instant::now() + TERM_TIMEOUT;
        let committed = loop {
            match self.consumer.commit(&tpl, CommitMode::Sync) {
                Err(_) if std::time::Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                done => break done.map_err(kafka("claiming the writer's term")),
            }
        };
        drop(tpl);
        committed
    }

    /// The term of the deployment's last writer (the offset after its fence), as the
    /// group holds it; `None` if none was claimed.
    pub(super) fn term(&self) -> Result<Option<i64>, RuntimeError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let answer = self
            .consumer
            .committed_offsets(tpl, TERM_TIMEOUT)
            .map_err(kafka("reading the writer's term"))?;
        let term = answer.elements().iter().find_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
        drop(answer);
        Ok(term)
    }
}

impl Drop for Election {
    /// Leaves the group: the partition goes to a standby at once.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls the election's consumer until `stop`, keeping `writer` to whether the
/// changelog's partition is assigned to it, and that partition paused.
fn follow(consumer: &BaseConsumer, topic: &str, writer: &AtomicBool, stop: &AtomicBool) {
    let mut was = false;
    while !stop.load(Ordering::Acquire) {
        // Records (if any arrive before the pause) are not read: this group only elects.
        if let Some(Err(e)) = consumer.poll(POLL) {
            warn!(error = %e, "writer election");
        }
        let is = match consumer.assignment() {
            Ok(assigned) => {
                let owned = assigned
                    .elements()
                    .iter()
                    .any(|p| p.topic() == topic && p.partition() == 0);
                if owned {
                    if let Err(e) = consumer.pause(&assigned) {
                        warn!(error = %e, "pausing the writer election's partition");
                    }
                }
                owned
            }
            Err(e) => {
                warn!(error = %e, "reading the writer election's assignment");
                was
            }
        };
        if is != was {
            writer.store(is, Ordering::Release);
            if is {
                info!(%topic, "elected the deployment's writer");
            } else {
                warn!(%topic, "no longer the deployment's writer");
            }
            was = is;
        }
    }
    writer.store(false, Ordering::Release);
    consumer.unsubscribe();
}
