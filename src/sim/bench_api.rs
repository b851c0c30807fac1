//! `unicus bench api`: lookups per second and their latency while the stream runs, on
//! the in-process mock cluster. Prints figures, asserts nothing.
//!
//! 1. A generated stream is preloaded and consumed at full speed: unicus's maximum rate.
//! 2. Lookups alone (the stream idle) at the target rate: the API's own latency.
//! 3. The rest of the stream paced at half the maximum rate, with lookups at the target
//!    rate beside it: the case (p99 ≤ 5 ms at 1,000 lookups/s).
//!
//! Lookups are open-loop: each is due at a fixed time, and its latency counts from then,
//! so a slow answer delays the ones behind it in the figures too (no coordinated
//! omission). They go over keep-alive connections, by email (as typed by people, so
//! normalised by the API) and by customer id, in turn.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::api::auth::token_hash;
use crate::kafka::runtime::{self, RuntimeStats};
use crate::settings::api::{ApiToken, Scope};
use crate::settings::Settings;
use crate::sim::demo::{produce_lines, Feeder};
use crate::sim::generate::{self, GenerateOptions};

const TOKEN: &str = "bench-token";
/// Connections the lookups are spread over.
const CONNECTIONS: usize = 8;

/// One keep-alive HTTP/1.1 connection to the API.
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(address: std::net::SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// `GET target`: the status and the body.
    async fn get(&mut self, target: &str) -> Result<(u16, Vec<u8>)> {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the API closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .context("an answer without content-length")?;
            if self.buf.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .context("no status")?;
                return Ok((status, self.buf[end + 4..end + 4 + length].to_vec()));
            }
        }
    }
}

/// Latencies (µs) and statuses of a run of lookups.
#[derive(Default)]
struct Lookups {
    micros: Vec<u64>,
    ok: u64,
    /// 301: a customer id merged away since the targets were taken.
    moved: u64,
    not_found: u64,
    other: u64,
}

impl Lookups {
    fn merge(&mut self, other: Lookups) {
        self.micros.extend(other.micros);
        self.ok += other.ok;
        self.moved += other.moved;
        self.not_found += other.not_found;
        self.other += other.other;
    }

    fn report(&mut self, what: &str, elapsed: Duration) {
        self.micros.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.micros.len() as f64 * p).ceil() as usize).saturating_sub(1);
            self.micros.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "{what}: {:.0} lookups/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} found, {} merged away, {} not found, {} other)",
            self.micros.len() as f64 / elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
            self.ok,
            self.moved,
            self.not_found,
            self.other
        );
    }
}

/// Lookups at `per_second` for `duration`, over [`CONNECTIONS`] connections, of the
/// targets in turn.
async fn lookups(
    address: std::net::SocketAddr,
    targets: Arc<Vec<String>>,
    per_second: f64,
    duration: Duration,
) -> Result<(Lookups, Duration)> {
    let started = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(CONNECTIONS as f64 / per_second);
    let each = (duration.as_secs_f64() * per_second / CONNECTIONS as f64) as usize;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let targets = targets.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(address).await?;
            let mut out = Lookups::default();
            let offset = interval.mul_f64(c as f64 / CONNECTIONS as f64);
            for i in 0..each {
                let due = started + offset + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let target = &targets[(i * CONNECTIONS + c) % targets.len()];
                let (status, _) = conn.get(target).await?;
                out.micros.push(due.elapsed().as_micros() as u64);
                match status {
                    200 => out.ok += 1,
                    301 => out.moved += 1,
                    404 => out.not_found += 1,
                    _ => out.other += 1,
                }
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Lookups::default();
    for t in tasks {
        all.merge(t.await??);
    }
    Ok((all, started.elapsed()))
}

pub async fn api(events: usize, customers: usize, seed: u64, per_second: f64) -> Result<()> {
    use rdkafka::mocking::MockCluster;

    if !per_second.is_finite() || per_second <= 0.0 {
        bail!("--lookups-per-second must be a positive number");
    }
    let dir = tempfile::tempdir()?;
    let mock = MockCluster::new(1)?;
    let mut settings = Settings::default();
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.topic_prefix = format!("benchapi{}.", std::process::id());
    settings.kafka.create_topics = false;
    settings.kafka.group_id = "bench-api".into();
    settings.runtime.store_dir = dir.path().join("store");
    settings.metrics.listen = "127.0.0.1:0".into();
    settings.api.listen = Some("127.0.0.1:0".into());
    settings.api.rate_per_second = 1_000_000;
    settings.api.burst = 1_000_000;
    settings.api.tokens = vec![ApiToken {
        name: "bench".into(),
        sha256: token_hash(TOKEN),
        // Without pii:read: the answers are masked, the common case of a
        // personalisation service and the dearer one.
        scopes: vec![Scope::ProfilesRead],
    }];
    let paced_events = (events / 2).max(1_000);
    crate::sim::bench::create_mock_topics(&mock, &settings, events + paced_events)?;
    mock.create_topic(&settings.kafka.changelog_topic(), 1, 1)?;

    let lines: Vec<String> = generate::Generator::new(GenerateOptions {
        seed,
        customers,
        events: events + paced_events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    // Emails as people typed them: the API normalises them.
    let mut emails: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["identifiers"]["email"].as_str().map(str::to_string))
        .collect();
    emails.sort();
    emails.dedup();
    if emails.is_empty() {
        bail!("the generated stream holds no email");
    }
    let (bulk, paced) = lines.split_at(events);
    let channels = settings.kafka.channels.clone();
    let n = produce_lines(
        &settings.kafka.brokers,
        &settings.kafka.topic_prefix,
        &channels,
        bulk.iter().cloned(),
    )
    .await?;

    let stats = Arc::new(RuntimeStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(settings.clone(), stop_rx, stats.clone()));
    let mut first: Option<(Instant, u64)> = None;
    while stats.consumed.load(Ordering::Relaxed) < n {
        if task.is_finished() {
            bail!("the runtime stopped: {:?}", task.await?);
        }
        let consumed = stats.consumed.load(Ordering::Relaxed);
        if consumed > 0 && first.is_none() {
            first = Some((Instant::now(), consumed));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let max_rate = first.map_or(0.0, |(t, c)| {
        (n - c) as f64 / t.elapsed().as_secs_f64().max(1e-9)
    });
    println!("unicus maximum rate: {max_rate:.0} events/s ({n} events preloaded)");
    let address = stats
        .api_endpoint
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .context("the API is not listening")?;

    // Targets: emails, and the customer ids they lead to.
    let mut conn = Connection::open(address).await?;
    let mut targets = Vec::new();
    for email in emails.iter().take(2_000) {
        let target = format!("/v1/customers?email={}", urlencode(email));
        let (status, body) = conn.get(&target).await?;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            if let Some(id) = v["customer_id"].as_str() {
                targets.push(format!("/v1/customers/{id}"));
            }
        }
        targets.push(target);
    }
    let targets = Arc::new(targets);
    println!(
        "lookup targets: {} (by email as typed, and by customer id)",
        targets.len()
    );

    let (mut idle, took) =
        lookups(address, targets.clone(), per_second, Duration::from_secs(5)).await?;
    idle.report(&format!("lookups at {per_second:.0}/s, stream idle"), took);

    stats.reset_latencies();
    let stream_rate = (max_rate / 2.0).max(100.0);
    let paced_for = Duration::from_secs_f64(paced.len() as f64 / stream_rate);
    let feeder = Feeder::with_linger(
        &settings.kafka.brokers,
        &settings.kafka.topic_prefix,
        &channels,
        0,
    )?;
    let lookup_run = tokio::spawn(lookups(address, targets, per_second, paced_for));
    let sent = feeder
        .send_paced(paced.iter().cloned(), stream_rate)
        .await?;
    let (mut busy, took) = lookup_run.await??;
    busy.report(
        &format!(
            "lookups at {per_second:.0}/s, stream at {stream_rate:.0} events/s (half the maximum)"
        ),
        took,
    );
    while stats.consumed.load(Ordering::Relaxed) < n + sent {
        if task.is_finished() {
            bail!("the runtime stopped: {:?}", task.await?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "stream latency input->output meanwhile: p50 {} ms, p99 {} ms (inside unicus: p50 {} ms, p99 {} ms)",
        stats.latency_percentile(0.5).unwrap_or(0),
        stats.latency_percentile(0.99).unwrap_or(0),
        stats.inside_latency_percentile(0.5).unwrap_or(0),
        stats.inside_latency_percentile(0.99).unwrap_or(0)
    );
    stop.send(true).ok();
    task.await??;
    // The feeder's producer first: the cluster gone under it, it logs errors.
    drop(feeder);
    drop(mock);
    Ok(())
}

/// Percent-encodes a query value.
fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
