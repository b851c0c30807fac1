//! Benchmarks that print figures and assert nothing (speed is never a timed test).
//!
//! `unicus bench replay` generates a stream to a temporary file (in a child `unicus
//! generate` process), then measures in the same run (a) a passthrough that reads each
//! line, parses it as JSON and writes it as a replay output line, and (b) the engine
//! over the same file with an on-disk store. It prints events/s of each, their ratio,
//! and the engine's peak resident memory (counted from its start), then how long the
//! engine restarted on the store it left takes to answer a new event.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use tokio::sync::watch;

use crate::engine::config::EngineConfig;
use crate::engine::Record;
use crate::kafka::runtime::{self, RuntimeStats};
use crate::model::output::Topic;
use crate::replay;
use crate::settings::Settings;
use crate::sim::demo::produce_lines;
use crate::sim::generate::{self, GenerateOptions};

/// Peak and current resident set size of this process, in bytes (Linux).
pub fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub fn replay(events: usize, customers: usize, seed: u64) -> Result<()> {
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let input = dir.path().join("events.jsonl");
    let started = Instant::now();
    // In a process of its own (`unicus generate`, the same stream): the memory it takes
    // for a million persons is not this process's when the engine's is measured.
    let status = std::process::Command::new(
        std::env::current_exe().context("cannot find the unicus executable")?,
    )
    .args(["generate", "--customers", &customers.to_string()])
    .args(["--events", &events.to_string(), "--seed", &seed.to_string()])
    .arg("--output")
    .arg(&input)
    .stderr(std::process::Stdio::null())
    .status()
    .context("cannot run unicus generate")?;
    anyhow::ensure!(status.success(), "unicus generate failed: {status}");
    let size = std::fs::metadata(&input)?.len();
    println!(
        "generated {events} events over {customers} customers ({:.1} MiB) in {:.1}s",
        mib(size),
        started.elapsed().as_secs_f64()
    );
    // The peak is counted from here (Linux: writing 5 to clear_refs resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (_, rss_before) = memory();

    // (b) unicus first, so that the peak memory reported is the engine's.
    let mut engine = replay::open_engine(EngineConfig::default(), Some(&dir.path().join("store")))?;
    let reader = BufReader::with_capacity(1 << 20, File::open(&input)?);
    let mut sink = BufWriter::with_capacity(1 << 20, io::sink());
    let now = chrono::Utc::now().timestamp_millis();
    let summary = replay::run(&mut engine, reader, "bench", now, &mut sink, 10_000, None)?;
    let (peak, _) = memory();
    let disk = engine.store().size_on_disk().unwrap_or(0);
    let mut sizes = engine.source_profile_counts()?;
    sizes.sort_unstable();
    drop(engine);
    let restart = first_event_after_restart(&input, &dir.path().join("store"), now)?;

    // (a) passthrough over the same file.
    let t = Instant::now();
    let mut reader = BufReader::with_capacity(1 << 20, File::open(&input)?);
    let mut sink = BufWriter::with_capacity(1 << 20, io::sink());
    let mut line = Vec::new();
    let mut n = 0u64;
    while reader.read_until(b'\n', &mut line)? > 0 {
        if let Ok(v) = serde_json::from_slice::<Value>(line.trim_ascii()) {
            serde_json::to_writer(
                &mut sink,
                &json!({"topic": "touchpoints.resolved", "key": null, "value": v}),
            )?;
            sink.write_all(b"\n")?;
        }
        n += 1;
        line.clear();
    }
    let passthrough = n as f64 / t.elapsed().as_secs_f64();
    let engine_rate = summary.events_per_second();

    println!("passthrough (parse + write): {passthrough:.0} events/s");
    println!(
        "unicus replay:               {engine_rate:.0} events/s ({} outputs, {} customers, {} merges, {} conflicts)",
        summary.outputs, summary.customers, summary.stats.merges, summary.stats.conflicts
    );
    println!(
        "ratio unicus/passthrough:    {:.3}",
        engine_rate / passthrough
    );
    let pct = |p: f64| {
        sizes
            .get(((sizes.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "source profiles per customer: p50 {} p99 {} max {}",
        pct(0.5),
        pct(0.99),
        sizes.last().copied().unwrap_or(0)
    );
    println!(
        "memory: peak RSS {:.0} MiB (before the engine: {:.0} MiB); store on disk {:.0} MiB",
        mib(peak),
        mib(rss_before),
        mib(disk)
    );
    println!(
        "restart: store opened and a new event answered in {:.0} ms",
        restart.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Opens the engine again on the store a replay left and times how long it takes to
/// answer one new event (the stream's first, under an event id never seen): what an
/// instance restarted on its disk makes its first input wait.
fn first_event_after_restart(input: &Path, store: &Path, now: i64) -> Result<Duration> {
    let mut first = String::new();
    BufReader::new(File::open(input)?).read_line(&mut first)?;
    let mut event: Value = serde_json::from_str(first.trim()).context("the stream's first line")?;
    event["event_id"] = json!("bench-restart-first-event");
    let line = serde_json::to_vec(&event)?;
    // sled's own flush thread releases the directory lock a moment after the store is
    // dropped: a restarted process would not wait for it, so neither does the figure.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut engine = replay::open_engine(EngineConfig::default(), Some(store))?;
    let parsed = engine.parse_line(&line);
    let out = engine.handle(&Record::new(&line, "bench", 0, now), parsed)?;
    engine.commit()?;
    let took = started.elapsed();
    anyhow::ensure!(!out.is_empty(), "the restarted engine answered nothing");
    Ok(took)
}

/// Events/s from the moment the first batch was done to the moment `total` were done.
struct Rate {
    first_at: Option<(Instant, u64)>,
}

impl Rate {
    fn observe(&mut self, done: u64) {
        if done > 0 && self.first_at.is_none() {
            self.first_at = Some((Instant::now(), done));
        }
    }
    fn per_second(&self, total: u64) -> f64 {
        match self.first_at {
            Some((t, n)) => (total - n) as f64 / t.elapsed().as_secs_f64().max(1e-9),
            None => 0.0,
        }
    }
}

/// The topics of `settings` on the in-process cluster, for a run of `events` inputs:
/// inputs spread over enough partitions (the mock keeps ~5 MiB per partition), every
/// output topic in 8, requests and commands in 1.
pub(crate) fn create_mock_topics(
    m: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    settings: &Settings,
    events: usize,
) -> Result<()> {
    create_topics_on_mock(m, settings, events, 15_000, 8)
}

/// The topics of `settings` on the in-process cluster: inputs with one partition per
/// `events_per_partition` of the `events` to come (2 to 64: the mock keeps ~5 MiB per
/// partition), every output topic in `output_partitions`, requests and commands in 1.
pub(crate) fn create_topics_on_mock(
    m: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    settings: &Settings,
    events: usize,
    events_per_partition: usize,
    output_partitions: i32,
) -> Result<()> {
    let partitions = (events / events_per_partition + 1).clamp(2, 64) as i32;
    for t in settings.kafka.input_topics() {
        m.create_topic(&t, partitions, 1)?;
    }
    for t in Topic::outputs(&settings.engine) {
        m.create_topic(&settings.kafka.topic(t), output_partitions, 1)?;
    }
    m.create_topic(&settings.kafka.requests_topic(), 1, 1)?;
    m.create_topic(&settings.kafka.commands_topic(), 1, 1)?;
    if settings.kafka.changelog {
        m.create_topic(&settings.kafka.changelog_topic(), 1, 1)?;
    }
    Ok(())
}

/// The passthrough baseline: consume -> produce the same bytes -> await acks -> commit,
/// with the runtime's client settings and batch size.
async fn passthrough(settings: &Settings, total: u64) -> Result<f64> {
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Message, Offset, TopicPartitionList};

    let consumer: StreamConsumer = runtime::consumer_config(settings).create()?;
    let producer: FutureProducer = runtime::producer_config(settings).create()?;
    let topics = settings.kafka.input_topics();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    let out_topic = format!("{}bench.passthrough", settings.kafka.topic_prefix);
    let mut done = 0u64;
    let mut rate = Rate { first_at: None };
    while done < total {
        let mut batch = Vec::with_capacity(settings.runtime.batch_max_events);
        let first = tokio::time::timeout(Duration::from_secs(120), consumer.recv())
            .await
            .map_err(|_| {
                anyhow::anyhow!("passthrough: no record within 120 s ({done} of {total} done)")
            })??
            .detach();
        batch.push(first);
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(settings.runtime.batch_max_wait_ms);
        let idle = Duration::from_millis(settings.runtime.batch_idle_ms);
        while batch.len() < settings.runtime.batch_max_events {
            let until = if idle.is_zero() {
                deadline
            } else {
                deadline.min(tokio::time::Instant::now() + idle)
            };
            match tokio::time::timeout_at(until, consumer.recv()).await {
                Ok(m) => batch.push(m?.detach()),
                Err(_) => break,
            }
        }
        let mut acks = Vec::with_capacity(batch.len());
        for m in &batch {
            let mut record =
                FutureRecord::<[u8], [u8]>::to(&out_topic).payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        acks.push(f);
                        break;
                    }
                    Err((_, back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }
        }
        for f in acks {
            f.await?
                .map_err(|(e, _)| anyhow::anyhow!("passthrough delivery failed: {e}"))?;
        }
        let mut next = std::collections::BTreeMap::new();
        for m in &batch {
            let e = next
                .entry((m.topic().to_string(), m.partition()))
                .or_insert(0);
            *e = m.offset() + 1;
        }
        {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o) in &next {
                tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
            }
            consumer.commit(&tpl, CommitMode::Sync)?;
        }
        done += batch.len() as u64;
        rate.observe(done);
    }
    Ok(rate.per_second(total))
}

/// `unicus bench kafka`: passthrough and unicus over the same generated events on the
/// same broker (the in-process mock cluster unless `brokers` is given), in one run.
pub async fn kafka(
    events: usize,
    customers: usize,
    seed: u64,
    brokers: Option<String>,
    changelog: bool,
) -> Result<()> {
    use rdkafka::mocking::MockCluster;
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir()?;
    let mock = match &brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1)?),
    };
    let mut settings = Settings::default();
    settings.kafka.brokers = brokers
        .clone()
        .or_else(|| mock.as_ref().map(|m| m.bootstrap_servers()))
        .unwrap_or_default();
    settings.kafka.topic_prefix = format!("bench{}.", std::process::id());
    settings.runtime.store_dir = dir.path().join("store");
    // Metrics on, as in production, on a free port.
    settings.metrics.listen = "127.0.0.1:0".into();
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        settings.kafka.properties.insert(k.into(), v.into());
    }
    let latency_events = (events / 10).clamp(1_000, 20_000);
    if let Some(m) = &mock {
        settings.kafka.create_topics = false;
        create_mock_topics(m, &settings, events + latency_events)?;
        m.create_topic(
            &format!("{}bench.passthrough", settings.kafka.topic_prefix),
            8,
            1,
        )?;
    }
    let lines: Vec<String> = generate::Generator::new(GenerateOptions {
        seed,
        customers,
        events: events + latency_events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    let (bulk, paced) = lines.split_at(events);
    let channels = settings.kafka.channels.clone();
    let t = Instant::now();
    let n = produce_lines(
        &settings.kafka.brokers,
        &settings.kafka.topic_prefix,
        &channels,
        bulk.iter().cloned(),
    )
    .await?;
    println!("preloaded {n} events in {:.1}s", t.elapsed().as_secs_f64());

    settings.kafka.group_id = "bench-passthrough".into();
    let pass = passthrough(&settings, n).await?;
    println!("passthrough consume->produce->ack->commit: {pass:.0} events/s");

    settings.kafka.group_id = "bench-unicus".into();
    settings.kafka.changelog = changelog;
    println!(
        "store changelog:                        {}",
        if changelog { "on" } else { "off" }
    );
    if let Some(m) = &mock {
        m.create_topic(&settings.kafka.changelog_topic(), 1, 1)?;
    }
    let stats = Arc::new(RuntimeStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(settings.clone(), stop_rx, stats.clone()));
    let mut rate = Rate { first_at: None };
    let mut progress = (0, Instant::now());
    while stats.consumed.load(Ordering::Relaxed) < n {
        let consumed = stats.consumed.load(Ordering::Relaxed);
        if consumed != progress.0 {
            progress = (consumed, Instant::now());
        } else if progress.1.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("unicus made no progress for 120 s ({consumed} of {n})");
        }
        if task.is_finished() {
            anyhow::bail!("the runtime stopped: {:?}", task.await?);
        }
        rate.observe(stats.consumed.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unicus_rate = rate.per_second(n);
    println!("unicus:                                 {unicus_rate:.0} events/s");
    println!(
        "ratio unicus/passthrough:               {:.3}",
        unicus_rate / pass
    );

    // Latency: a stream paced at half of unicus's throughput (sent every 10 ms), timed
    // from each input record's timestamp to the acknowledgement of its outputs.
    // Let the last bulk outputs be acknowledged before timing the paced stream.
    let mut last = u64::MAX;
    while last != stats.produced.load(Ordering::Relaxed) {
        last = stats.produced.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stats.reset_latencies();
    let per_second = (unicus_rate / 2.0).max(100.0);
    let feeder = crate::sim::demo::Feeder::with_linger(
        &settings.kafka.brokers,
        &settings.kafka.topic_prefix,
        &channels,
        0,
    )?;
    let sent = feeder.send_paced(paced.iter().cloned(), per_second).await?;
    while stats.consumed.load(Ordering::Relaxed) < n + sent {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The last batch's acknowledgements, timed as they come.
    let mut last = u64::MAX;
    while last != stats.produced.load(Ordering::Relaxed) {
        last = stats.produced.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "latency input->output at {per_second:.0} events/s: p50 {} ms, p99 {} ms ({} outputs)",
        stats.latency_percentile(0.5).unwrap_or(0),
        stats.latency_percentile(0.99).unwrap_or(0),
        stats.produced.load(Ordering::Relaxed)
    );
    println!(
        "  of which inside unicus (its batch's first record received -> acknowledged): p50 {} ms, p99 {} ms",
        stats.inside_latency_percentile(0.5).unwrap_or(0),
        stats.inside_latency_percentile(0.99).unwrap_or(0),
    );
    stop.send(true).ok();
    task.await??;
    drop(mock);
    Ok(())
}

/// `unicus bench avro`: the engine over the same generated events with the record formats
/// of a Kafka deployment, measured in one run: JSON in and out, then Avro in (Confluent
/// framed, writer schemas from the registry double, decoded before the engine) and out
/// (every output topic encoded as the runtime does). Both include the wire encoding of
/// every output; the store is on disk. Apart from the format, both passes do the same
/// work: the same events through the same engine entry points as the runtime.
pub fn avro(events: usize, customers: usize, seed: u64) -> Result<()> {
    use crate::kafka::avro::registry::{InputFormats, OutputEncoder};
    use crate::sim::registry_double::RegistryDouble;

    let lines: Vec<String> = generate::Generator::new(GenerateOptions {
        seed,
        customers,
        events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let registry = rt.block_on(RegistryDouble::start())?;
    let mut settings = Settings::default();
    settings.schema_registry.url = registry.url();
    settings.output.format = crate::settings::avro::Format::Avro;
    let channels = settings.kafka.channels.clone();
    let requests = settings.kafka.requests_topic();
    let c = crate::kafka::avro::schemas::catalogue();
    // Avro records as producers would write them (lines without an Avro form stay JSON).
    let mut ids = std::collections::HashMap::new();
    let records: Vec<(String, Vec<u8>)> = lines
        .iter()
        .map(|line| {
            let doc: Option<Value> = serde_json::from_str(line).ok();
            let channel = doc
                .as_ref()
                .and_then(|d| d["channel"].as_str())
                .filter(|ch| channels.iter().any(|c| c == ch))
                .unwrap_or("web")
                .to_string();
            let topic = format!("touchpoints.{channel}");
            let schema = c.input(&channel);
            let avro = doc.and_then(|d| schema.encode(&d).ok());
            let bytes = match avro {
                Some(body) => {
                    let id = *ids.entry(channel.clone()).or_insert_with(|| {
                        registry
                            .register(&format!("{topic}-value"), schema.text())
                            .unwrap_or(0)
                    });
                    crate::kafka::avro::frame(id, &body)
                }
                None => line.clone().into_bytes(),
            };
            (topic, bytes)
        })
        .collect();
    let json_records: Vec<(String, Vec<u8>)> = records
        .iter()
        .zip(&lines)
        .map(|((topic, _), line)| (topic.clone(), line.clone().into_bytes()))
        .collect();
    let json_bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let avro_bytes: u64 = records.iter().map(|(_, b)| b.len() as u64).sum();
    let commands = settings.kafka.commands_topic();
    let formats = InputFormats::new(
        &settings.schema_registry,
        "",
        &channels,
        &requests,
        &commands,
    )?;
    let encoder = rt.block_on(OutputEncoder::connect(
        &settings.output,
        &settings.schema_registry,
        "",
        &Topic::outputs(&settings.engine),
    ))?;
    let wanted = formats.unknown_ids(records.iter().map(|(t, b)| (t.as_str(), b.as_slice())));
    rt.block_on(formats.prepare(&wanted))?;

    // A-B-B-A, the best of two passes per format: the machine's load and the order
    // (page cache, allocator) weigh on both alike.
    let json_encoder = OutputEncoder::json();
    let mut best = [(0f64, 0u64); 2];
    let mut passes = Vec::new();
    for avro in [false, true, true, false] {
        let (rate, out) = if avro {
            engine_pass(&records, Some(&formats), &encoder)?
        } else {
            engine_pass(&json_records, None, &json_encoder)?
        };
        passes.push(format!("{} {rate:.0}", if avro { "Avro" } else { "JSON" }));
        let slot = &mut best[usize::from(avro)];
        *slot = (slot.0.max(rate), out);
    }
    let [(json_rate, json_out), (avro_rate, avro_out)] = best;
    println!("passes, events/s:        {}", passes.join(", "));
    println!(
        "{} events ({} as Avro); input {:.1} MiB JSON, {:.1} MiB Avro",
        records.len(),
        records
            .iter()
            .filter(|(_, b)| crate::kafka::avro::is_framed(b))
            .count(),
        mib(json_bytes),
        mib(avro_bytes)
    );
    println!(
        "engine, JSON in and out: {json_rate:.0} events/s ({:.1} MiB of outputs)",
        mib(json_out)
    );
    println!(
        "engine, Avro in and out: {avro_rate:.0} events/s ({:.1} MiB of outputs)",
        mib(avro_out)
    );
    println!("ratio Avro/JSON:         {:.3}", avro_rate / json_rate);
    Ok(())
}

/// One pass of the engine over `records` into a fresh on-disk store: each record decoded
/// as the runtime does (Avro with `formats` when framed, else JSON), every output encoded
/// with `encoder`. Returns events/s and the bytes of outputs. Not inlined, so that a
/// profiler can tell the passes apart (`valgrind --tool=callgrind
/// --dump-before=unicus::sim::bench::engine_pass --dump-after=unicus::sim::bench::engine_pass`).
#[inline(never)]
fn engine_pass(
    records: &[(String, Vec<u8>)],
    formats: Option<&crate::kafka::avro::registry::InputFormats>,
    encoder: &crate::kafka::avro::registry::OutputEncoder,
) -> Result<(f64, u64)> {
    use crate::engine::{InputKind, Record};
    let dir = tempfile::tempdir()?;
    let mut engine = replay::open_engine(EngineConfig::default(), Some(&dir.path().join("store")))?;
    let received_at = chrono::Utc::now().timestamp_millis();
    let t = Instant::now();
    let mut out_bytes = 0u64;
    for (i, (topic, bytes)) in records.iter().enumerate() {
        let record = Record::new(bytes, topic, i as i64, received_at);
        let input = match formats {
            Some(f) if crate::kafka::avro::is_framed(bytes) => {
                engine.parse_document(InputKind::Touchpoint, f.document(topic, bytes))
            }
            _ => engine.parse(InputKind::Touchpoint, bytes),
        };
        let outputs = engine.handle(&record, input)?;
        for o in &outputs {
            out_bytes += encoder.value(o)?.map_or(0, |v| v.len() as u64);
            out_bytes += encoder.key(o).map_or(0, |k| k.len() as u64);
        }
        if engine.pending() >= 5_000 {
            engine.commit_in_background()?;
        }
    }
    engine.commit()?;
    Ok((records.len() as f64 / t.elapsed().as_secs_f64(), out_bytes))
}
