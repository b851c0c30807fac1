//! `unicus demo`: the whole chain on an in-process Kafka mock cluster, nothing to install.
//!
//! A producer plays the seeded synthetic stream (the Sophie Dupont story included) into
//! the per-channel topics while the real runtime consumes them; a live progress line,
//! then a summary and Sophie Dupont's merged profile. The store is kept so that
//! `unicus profile --store DIR` can read it afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;

use crate::kafka::runtime::{self, RuntimeStats};
use crate::settings::Settings;
use crate::sim::generate::{GenerateOptions, Generator};

/// The topic an event line goes to: `touchpoints.<channel>` of its own channel field
/// when that channel is configured, the first configured channel otherwise.
pub fn route<'a>(line: &str, channels: &'a [String]) -> &'a str {
    let channel = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("channel").and_then(|c| c.as_str()).map(String::from));
    channel
        .and_then(|c| channels.iter().find(|k| **k == c))
        .unwrap_or(&channels[0])
}

/// A producer of JSON event lines to their channel topics, kept for many sends.
pub struct Feeder {
    producer: FutureProducer,
    topic_prefix: String,
    channels: Vec<String>,
}

impl Feeder {
    pub fn new(brokers: &str, topic_prefix: &str, channels: &[String]) -> Result<Self> {
        Self::with_linger(brokers, topic_prefix, channels, 10)
    }

    /// A feeder whose producer waits `linger_ms` to fill a request: 10 for bulk, 0 for a
    /// paced stream timed from each record's timestamp (as a front-end sends an event
    /// when it happens).
    pub fn with_linger(
        brokers: &str,
        topic_prefix: &str,
        channels: &[String],
        linger_ms: u32,
    ) -> Result<Self> {
        if channels.is_empty() {
            bail!("at least one channel is needed");
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", linger_ms.to_string())
            .set("queue.buffering.max.messages", "200000")
            .create()
            .context("failed to create the producer")?;
        Ok(Self {
            producer,
            topic_prefix: topic_prefix.to_string(),
            channels: channels.to_vec(),
        })
    }

    /// Hands one line to the producer, to its channel's topic (waiting while its queue
    /// is full).
    async fn enqueue(&self, line: &str) -> DeliveryFuture {
        let topic = format!(
            "{}touchpoints.{}",
            self.topic_prefix,
            route(line, &self.channels)
        );
        let mut record = FutureRecord::<(), str>::to(&topic).payload(line);
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return f,
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// Sends lines and waits for their acknowledgements; returns how many were acknowledged.
    pub async fn send(&self, lines: impl Iterator<Item = String>) -> Result<u64> {
        self.send_at(lines, None).await
    }

    /// Sends lines at `per_second`, a hundredth of a second's worth at a time (a steady
    /// stream, not bursts), without waiting for acknowledgements in between; returns how
    /// many were acknowledged.
    pub async fn send_paced(
        &self,
        lines: impl Iterator<Item = String>,
        per_second: f64,
    ) -> Result<u64> {
        if !per_second.is_finite() || per_second <= 0.0 {
            bail!("the rate must be a positive number of events per second");
        }
        self.send_at(lines, Some(per_second)).await
    }

    async fn send_at(
        &self,
        lines: impl Iterator<Item = String>,
        per_second: Option<f64>,
    ) -> Result<u64> {
        let started = tokio::time::Instant::now();
        let chunk = per_second.map_or(usize::MAX, |r| (r / 100.0).max(1.0) as usize);
        let mut in_flight: Vec<DeliveryFuture> = Vec::with_capacity(10_000);
        let (mut sent, mut acked) = (0u64, 0u64);
        for line in lines {
            if let Some(rate) = per_second {
                if sent % chunk as u64 == 0 {
                    tokio::time::sleep_until(started + Duration::from_secs_f64(sent as f64 / rate))
                        .await;
                }
            }
            in_flight.push(self.enqueue(&line).await);
            sent += 1;
            if in_flight.len() >= 10_000 {
                for f in in_flight.drain(..) {
                    acked += u64::from(matches!(f.await, Ok(Ok(_))));
                }
            }
        }
        for f in in_flight.drain(..) {
            acked += u64::from(matches!(f.await, Ok(Ok(_))));
        }
        Ok(acked)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        // Everything sent was awaited; this only bounds the close.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// Produces JSON lines to their channel topics; returns how many were acknowledged.
pub async fn produce_lines(
    brokers: &str,
    topic_prefix: &str,
    channels: &[String],
    lines: impl Iterator<Item = String>,
) -> Result<u64> {
    Feeder::new(brokers, topic_prefix, channels)?
        .send(lines)
        .await
}

pub struct DemoOptions {
    pub events: usize,
    pub customers: usize,
    pub seed: u64,
    pub store_dir: PathBuf,
    /// Serve the lookup API and the 360 page here, until Ctrl-C after the stream.
    pub api: Option<String>,
    /// Instances of one deployment: one writer, the others standing by (1: as a single
    /// `unicus run`).
    pub instances: usize,
}

const DEMO_MARKER: &str = ".unicus-demo";

/// Makes sure the store directory is a fresh demo store.
fn prepare_store(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(DEMO_MARKER).exists() {
            bail!(
                "{} exists and is not a demo store; choose another --store",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| {
            format!("failed to clear the previous demo store {}", dir.display())
        })?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(DEMO_MARKER),
        "created by `unicus demo`; cleared by the next demo\n",
    )?;
    Ok(())
}

/// The demo's audiences: what a marketer would write first.
const DEMO_AUDIENCES: [(&str, &str); 3] = [
    (
        "climbing_fans",
        r#"count(product_view where category = "escalade", 30d) >= 2 or count(purchase where category = "escalade", 365d) >= 1"#,
    ),
    (
        "emailable_buyers",
        r#"count(purchase, 90d) >= 1 and allowed("marketing", "email")"#,
    ),
    ("big_spenders", "traits.spent_90d > 300"),
];

/// The demo's computed traits.
const DEMO_TRAITS: [(&str, &str); 2] = [
    ("spent_90d", "sum(purchase, amount, 90d)"),
    ("views_30d", "count(product_view, 30d)"),
];

/// The demo's journey: product viewed three times in a day, no cart within the day.
fn demo_journey() -> crate::engine::config::JourneyConfig {
    crate::engine::config::JourneyConfig {
        entry: "product_view".into(),
        when: Some("count(product_view, 24h) >= 3".into()),
        unless: Some("cart_add".into()),
        wait: "24h".into(),
        purposes: Some(vec![crate::model::Purpose::Marketing]),
        cap: Some("1/7d".into()),
        quiet_hours: None,
        suppress_after_purchase: None,
        per: None,
        enabled: true,
    }
}

/// Creates the reference topics on the mock cluster and produces the generated
/// retailer's catalogue and stores to them.
async fn produce_reference(
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    settings: &Settings,
) -> Result<()> {
    use crate::engine::reference::RefTable;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    for table in RefTable::ALL {
        mock.create_topic(
            &format!("{}{}", settings.kafka.topic_prefix, table.topic()),
            1,
            1,
        )?;
    }
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.brokers)
        .create()
        .context("failed to create the reference producer")?;
    for (table, key, value) in crate::sim::generate::reference_records() {
        let topic = format!("{}{}", settings.kafka.topic_prefix, table.topic());
        producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing reference data: {e}"))?;
    }
    Ok(())
}

pub async fn demo(opts: DemoOptions) -> Result<()> {
    use crate::engine::profile::audiences::named;
    prepare_store(&opts.store_dir)?;
    let mock = MockCluster::new(1).context("failed to start the in-process Kafka mock cluster")?;
    let mut settings = Settings::default();
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.group_id = "unicus-demo".into();
    settings.kafka.create_topics = false; // the mock has no admin api
    settings.runtime.store_dir = opts.store_dir.clone();
    settings.metrics.listen = "127.0.0.1:0".into();
    // Example audiences, traits and a journey, to show them on `audiences.changes`,
    // `triggers.browse_no_cart`, in golden records and on the 360 page (a deployment has
    // none unless configured).
    settings.engine.audiences = named(&DEMO_AUDIENCES);
    settings.engine.traits = named(&DEMO_TRAITS);
    settings.engine.journeys = [("browse_no_cart".to_string(), demo_journey())].into();
    // The enriched golden record: affinities from the catalogue, home store and region,
    // price band, contact channel and hour, next purchase.
    settings.engine.enrichment.enabled = true;
    settings.validate()?;
    settings
        .kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    settings
        .kafka
        .properties
        .insert("heartbeat.interval.ms".into(), "1000".into());
    crate::sim::bench::create_topics_on_mock(&mock, &settings, opts.events, 20_000, 4)?;
    // The retailer's catalogue and stores, read whole by the runtime before any event:
    // `climbing_fans` counts views of the `escalade` category.
    produce_reference(&mock, &settings).await?;
    if opts.instances > 1 {
        if opts.api.is_some() {
            bail!("--api serves one instance: leave it out with --instances");
        }
        return deployment(&opts, &settings, mock).await;
    }
    let api_token = match &opts.api {
        Some(listen) => {
            let token = crate::api::auth::new_token();
            settings.api.listen = Some(listen.clone());
            settings.api.tokens = vec![crate::settings::api::ApiToken {
                name: "demo".into(),
                sha256: crate::api::auth::token_hash(&token),
                scopes: crate::settings::api::Scope::ALL.to_vec(),
            }];
            settings.validate()?;
            Some(token)
        }
        None => None,
    };

    let stats = Arc::new(RuntimeStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let runtime = tokio::spawn(runtime::run(settings.clone(), stop_rx, stats.clone()));

    let started = Instant::now();
    let generator = Generator::new(GenerateOptions {
        seed: opts.seed,
        customers: opts.customers,
        events: opts.events,
        ..GenerateOptions::default()
    });
    let channels = settings.kafka.channels.clone();
    let brokers = settings.kafka.brokers.clone();
    let mut producer = tokio::spawn(async move {
        produce_lines(&brokers, "", &channels, generator.map(|e| e.line)).await
    });

    let bar = ProgressBar::new(opts.events as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut produced: Option<u64> = None;
    let mut endpoint_shown = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let (false, Some(address)) = (endpoint_shown, stats.telemetry.endpoint()) {
            bar.println(format!(
                "metrics while the demo runs: http://{address}/metrics"
            ));
            endpoint_shown = true;
        }
        let consumed = stats.consumed.load(Ordering::Relaxed);
        bar.set_position(consumed);
        bar.set_message(format!(
            "| {} customers | {} outputs | {:.0} events/s",
            stats.customers.load(Ordering::Relaxed),
            stats.produced.load(Ordering::Relaxed),
            consumed as f64 / started.elapsed().as_secs_f64()
        ));
        if produced.is_none() && producer.is_finished() {
            produced = Some(
                (&mut producer)
                    .await
                    .context("the demo producer failed")??,
            );
        }
        // Done once every event is in a committed batch: the lookup API, shown next,
        // answers from committed state only.
        if let Some(n) = produced {
            if stats.committed.load(Ordering::Relaxed) >= n {
                break;
            }
        }
        if runtime.is_finished() {
            break;
        }
    }
    let elapsed = started.elapsed();
    if let Some(token) = &api_token {
        let address = *stats.api_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(address) = address {
            // On standard output, not the bar's line: it must show without a terminal too.
            bar.suspend(|| {
                println!(
                    "customer 360 page: http://{address}/ui/ (token {token})\n\
                     lookup API: http://{address}/v1/customers?email=sophie.dupont@gmail.com\n\
                     serving until Ctrl-C"
                );
                let _ = std::io::Write::flush(&mut std::io::stdout());
            });
            tokio::signal::ctrl_c()
                .await
                .context("failed to wait for Ctrl-C")?;
        }
    }
    stop_tx.send(true).ok();
    let summary = runtime.await.context("the runtime task failed")??;
    bar.finish_and_clear();

    let s = &summary.engine;
    println!(
        "unicus demo: {} events in {:.1}s ({:.0} events/s through Kafka)",
        summary.consumed,
        elapsed.as_secs_f64(),
        summary.consumed as f64 / elapsed.as_secs_f64()
    );
    let by_channel: BTreeMap<_, _> = s.accepted_by_channel.iter().collect();
    println!(
        "events per channel: {}",
        by_channel
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "customers: {} (from {} created, {} merges); conflicts refused: {}; generic values: {}; junk values ignored: {}",
        summary.customers, s.new_customers, s.merges, s.conflicts, s.generic_values, s.junk_values
    );
    println!("{}", s.fuzzy_summary());
    println!(
        "dead letters: {} ({}); duplicates ignored: {}",
        s.rejected_total(),
        s.rejected
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.duplicates
    );
    let consent_changes: u64 = s.consent_changes.values().sum();
    println!(
        "consent changes: {consent_changes}; triggers: {} abandoned carts ({} without an allowed channel, not sent), {} purchases completed, {} lifecycle changes",
        s.carts_fired, s.carts_suppressed, s.purchases, s.lifecycle_changes
    );
    println!(
        "audiences ({}): {} entered or left; traits: {}",
        DEMO_AUDIENCES.map(|(n, _)| n).join(", "),
        s.audience_changes,
        DEMO_TRAITS.map(|(n, _)| n).join(", ")
    );
    println!(
        "reference data: {} products and {} stores read before the first event ({} events of an unknown SKU)",
        s.reference_products, s.reference_stores, s.product_misses
    );
    println!(
        "journey browse_no_cart (3 views in 24 h, no cart within a day): {} triggers, {} held back",
        s.journey_triggers, s.journey_suppressed
    );
    println!(
        "outputs acknowledged: {}; input→output latency p50 {} ms, p99 {} ms (the whole stream is produced at once, so this includes its backlog; `unicus bench kafka` measures a paced stream)",
        summary.produced,
        stats.latency_percentile(0.5).unwrap_or(0),
        stats.latency_percentile(0.99).unwrap_or(0)
    );
    drop(mock);

    let engine = runtime::open_engine(&settings)?;
    match engine.find_customer("email", "sophie.dupont@gmail.com")? {
        Some(id) => {
            let record = engine.golden_record(&id)?.unwrap_or_default();
            println!("\nSophie Dupont's merged profile ({id}):");
            println!("{}", serde_json::to_string_pretty(&record)?);
        }
        None => println!("\nSophie Dupont was not in this stream (try a larger --events)"),
    }
    println!(
        "\nstore kept in {}: `unicus profile --store {} --email sophie.dupont@gmail.com`",
        opts.store_dir.display(),
        opts.store_dir.display()
    );
    Ok(())
}

/// One instance of the demo's deployment.
struct Instance {
    stats: Arc<RuntimeStats>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<runtime::RunSummary, runtime::RuntimeError>>,
    settings: Settings,
}

impl Instance {
    fn start(settings: &Settings, i: usize) -> Self {
        let mut settings = settings.clone();
        settings.runtime.store_dir = settings.runtime.store_dir.join(format!("instance-{i}"));
        let stats = Arc::new(RuntimeStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(runtime::run(settings.clone(), stop_rx, stats.clone()));
        Self {
            stats,
            stop,
            task,
            settings,
        }
    }

    fn is_writer(&self) -> bool {
        self.stats.writer.load(Ordering::Relaxed)
    }

    async fn stop(self) -> Result<runtime::RunSummary> {
        self.stop.send(true).ok();
        Ok(self.task.await.context("an instance's task failed")??)
    }
}

/// Waits (at most `limit`) until one of `instances` is the writer; its index.
async fn writer_of(instances: &[Instance], limit: Duration) -> Result<usize> {
    let until = Instant::now() + limit;
    loop {
        if let Some(i) = instances.iter().position(Instance::is_writer) {
            return Ok(i);
        }
        if Instant::now() > until {
            bail!("no instance was elected the writer within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `instances` have committed `n` events between them, showing progress
/// after the `before` events committed earlier.
async fn until_committed(
    instances: &[Instance],
    n: u64,
    before: u64,
    bar: &ProgressBar,
) -> Result<()> {
    loop {
        let committed: u64 = instances
            .iter()
            .map(|i| i.stats.committed.load(Ordering::Relaxed))
            .sum();
        bar.set_position(before + committed);
        if committed >= n {
            return Ok(());
        }
        if instances.iter().any(|i| i.task.is_finished()) {
            bail!("an instance stopped early");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `unicus demo --instances N`: N instances of one deployment in this process, each
/// with its store; the first is elected the writer, the others stand by following the
/// changelog. Half-way through the stream the writer is stopped (as a rolling restart
/// would) and a standby takes over from the changelog's tail.
async fn deployment(
    opts: &DemoOptions,
    settings: &Settings,
    mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> Result<()> {
    let n = opts.instances;
    let mut instances = vec![Instance::start(settings, 0)];
    writer_of(&instances, Duration::from_secs(60)).await?;
    for i in 1..n {
        instances.push(Instance::start(settings, i));
    }
    println!(
        "{n} instances of one deployment (group {}): instance 0 is the writer, {} standing by on the changelog",
        settings.kafka.group_id,
        n - 1
    );
    let started = Instant::now();
    let lines: Vec<String> = Generator::new(GenerateOptions {
        seed: opts.seed,
        customers: opts.customers,
        events: opts.events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    let (first_half, second_half) = lines.split_at(lines.len() / 2);
    let (channels, brokers) = (&settings.kafka.channels, &settings.kafka.brokers);
    let bar = ProgressBar::new(opts.events as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The first half of the stream through instance 0, the writer.
    let produced = produce_lines(brokers, "", channels, first_half.iter().cloned()).await?;
    until_committed(&instances[..1], produced, 0, &bar).await?;
    let first = instances.remove(0);
    let summary = first.stop().await?;
    let handover = Instant::now();
    bar.suspend(|| {
        println!(
            "instance 0 stopped after {} events (its outputs acknowledged, its changes on the changelog)",
            summary.consumed
        )
    });
    // The second half through the standby elected in its place.
    let writer = writer_of(&instances, Duration::from_secs(60)).await?;
    bar.suspend(|| {
        println!(
            "instance {} elected the writer {:.1} s later: it had followed the changelog, and read only its tail",
            writer + 1,
            handover.elapsed().as_secs_f64()
        )
    });
    let second = produce_lines(brokers, "", channels, second_half.iter().cloned()).await?;
    until_committed(&instances[writer..=writer], second, produced, &bar).await?;
    let produced = produced + second;
    let elapsed = started.elapsed();
    // The standbys read the writer's last batches before they stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    bar.finish_and_clear();
    let writer_store = instances[writer].settings.runtime.store_dir.clone();
    let stores: Vec<PathBuf> = instances
        .iter()
        .map(|i| i.settings.runtime.store_dir.clone())
        .collect();
    for (i, instance) in instances.into_iter().enumerate() {
        let applied = instance.stats.restored_records.load(Ordering::Relaxed);
        let summary = instance.stop().await?;
        println!(
            "instance {}: {} events consumed as the writer, {applied} changelog records applied as a standby",
            i + 1,
            summary.consumed
        );
    }
    println!(
        "unicus demo: {produced} events through {n} instances in {:.1}s, one writer at a time",
        elapsed.as_secs_f64()
    );
    drop(mock);
    let mut counts = Vec::new();
    for store in &stores {
        let mut at = settings.clone();
        at.runtime.store_dir = store.clone();
        counts.push(runtime::open_engine(&at)?.customer_count()?);
    }
    println!(
        "customers in the stores of instances 1 to {}: {counts:?} (the writer's and the standbys' replicas)",
        n - 1
    );
    let mut writer_settings = settings.clone();
    writer_settings.runtime.store_dir = writer_store.clone();
    let engine = runtime::open_engine(&writer_settings)?;
    if let Some(id) = engine.find_customer("email", "sophie.dupont@gmail.com")? {
        let record = engine.golden_record(&id)?.unwrap_or_default();
        println!("\nSophie Dupont's merged profile ({id}), from the last writer's store:");
        println!("{}", serde_json::to_string_pretty(&record)?);
    }
    println!(
        "\nstores kept in {}/instance-*: `unicus profile --store {} --email sophie.dupont@gmail.com`",
        opts.store_dir.display(),
        writer_store.display()
    );
    Ok(())
}
