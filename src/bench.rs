//! Benchmarks that print figures and assert nothing (speed is never a timed test).
//!
//! `unicus bench replay` generates a stream to a temporary file, then measures in the
//! same run (a) a passthrough that reads each line, parses it as JSON and writes it as a
//! replay output line, and (b) the engine over the same file with an on-disk store.
//! It prints events/s of each, their ratio, and the peak resident memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::config::EngineConfig;
use crate::generate::{self, GenerateOptions};
use crate::replay;

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
    {
        let mut w = BufWriter::new(File::create(&input)?);
        generate::write_jsonl(
            GenerateOptions {
                seed,
                customers,
                events,
                ..GenerateOptions::default()
            },
            &mut w,
        )?;
        w.flush()?;
    }
    let size = std::fs::metadata(&input)?.len();
    println!(
        "generated {events} events over {customers} customers ({:.1} MiB) in {:.1}s",
        mib(size),
        started.elapsed().as_secs_f64()
    );
    let (_, rss_before) = memory();

    // (b) unicus first, so that the peak memory reported is the engine's.
    let mut engine = replay::open_engine(EngineConfig::default(), Some(&dir.path().join("store")))?;
    let reader = BufReader::with_capacity(1 << 20, File::open(&input)?);
    let mut sink = BufWriter::with_capacity(1 << 20, io::sink());
    let summary = replay::run(&mut engine, reader, "bench", &mut sink, 10_000, None)?;
    let (peak, _) = memory();
    let disk = engine.store().size_on_disk().unwrap_or(0);
    let mut sizes: Vec<u64> = engine
        .golden_records()?
        .iter()
        .map(|g| g["source_profiles"].as_u64().unwrap_or(0))
        .collect();
    sizes.sort_unstable();
    drop(engine);

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
    Ok(())
}
