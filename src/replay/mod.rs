//! Replay (contract §3): the engine over a file of JSON events, no broker.
//!
//! Every non-blank line is one record, processed in file order; every output record is
//! written in order (the golden records of a batch, coalesced per customer, at its end:
//! `engine::coalesce`) as one JSON line `{"topic", "key", "value"}` (dead letters also carry
//! `"headers"`, and their value is the original line as a string). The store is committed
//! every `batch` events and at the end, so a replay stopped at any point and started
//! again with the same `--state` skips what was committed (by `event_id`) and ends in the
//! same state as one uninterrupted run (given the same `now`: every line counts as read
//! then, and a line may state a time up to `limits.max_future_skew_ms` after it).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::config::EngineConfig;
use crate::engine::input::touchpoint::Parser;
use crate::engine::resolve::train::TrainRecord;
use crate::engine::resolve::Resolver;
use crate::engine::{Engine, EngineError, Record, Stats};
use crate::model::output::OutputRecord;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read `{path}`: {source}")]
    Input { path: PathBuf, source: io::Error },
    #[error("cannot write `{path}`: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub struct ReplayOptions {
    pub input: PathBuf,
    /// `-` for standard output.
    pub output: PathBuf,
    /// Keeps the store between runs; a temporary store without it.
    pub state: Option<PathBuf>,
    /// Events per commit.
    pub batch: usize,
    pub progress: bool,
    /// When every line counts as read (ms since the epoch): with the skew allowed, the
    /// latest time a line may state (`--now`; the CLI's default is its wall clock at
    /// start). The same `now` gives the same output.
    pub now: i64,
}

#[derive(Debug, Clone)]
pub struct ReplaySummary {
    pub records: u64,
    pub outputs: u64,
    /// The engine's counters since it was opened (a fresh engine per `replay`).
    pub stats: Stats,
    pub customers: i64,
    pub elapsed: Duration,
}

impl ReplaySummary {
    pub fn events_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Opens the engine on `--state` or on a temporary store.
pub fn open_engine(config: EngineConfig, state: Option<&Path>) -> Result<Engine, EngineError> {
    let store = match state {
        Some(dir) => Store::open(dir),
        None => Store::temporary(),
    }
    .map_err(EngineError::Store)?;
    Engine::new(config, store)
}

/// Runs a whole replay as the CLI does.
pub fn replay(config: EngineConfig, opts: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let mut engine = open_engine(config, opts.state.as_deref())?;
    let file = File::open(&opts.input).map_err(|source| ReplayError::Input {
        path: opts.input.clone(),
        source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = if opts.progress {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let output_err = |source| ReplayError::Output {
        path: opts.output.clone(),
        source,
    };
    let out: Box<dyn Write> = if opts.output.as_os_str() == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(&opts.output).map_err(output_err)?)
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let source = opts.input.display().to_string();
    let summary = run(
        &mut engine,
        BufReader::with_capacity(1 << 20, file),
        &source,
        opts.now,
        &mut out,
        opts.batch,
        progress.as_ref(),
    )?;
    out.flush().map_err(output_err)?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// Drives `engine` over JSON lines from `reader`, each read at `now` (ms), writing
/// output lines to `out`.
pub fn run(
    engine: &mut Engine,
    mut reader: impl BufRead,
    source: &str,
    now: i64,
    out: &mut impl Write,
    batch: usize,
    progress: Option<&ProgressBar>,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let batch = batch.max(1);
    let mut line = Vec::with_capacity(4096);
    let mut line_index: i64 = -1;
    let (mut records, mut outputs) = (0u64, 0u64);
    let input_err = |error| ReplayError::Input {
        path: PathBuf::from(source),
        source: error,
    };
    let mut write = |record: &OutputRecord, outputs: &mut u64| {
        *outputs += 1;
        record
            .write_replay_line(&mut *out)
            .map_err(io::Error::from)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|error| ReplayError::Output {
                path: PathBuf::from("output"),
                source: error,
            })
    };
    let mut profiles = engine.profile_cache();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(input_err)?;
        if n == 0 {
            break;
        }
        line_index += 1;
        if let Some(bar) = progress {
            bar.inc(n as u64);
        }
        let body = line.trim_ascii();
        if body.is_empty() {
            continue;
        }
        records += 1;
        let record = Record::new(body, source, line_index, now);
        let input = engine.parse_line(body);
        let produced = engine.handle_batched(&record, input, &mut profiles, ())?;
        for record in &produced {
            write(record, &mut outputs)?;
        }
        if engine.pending() >= batch {
            for (record, ()) in engine.end_batch(&mut profiles)? {
                write(&record, &mut outputs)?;
            }
            engine.commit_in_background()?;
            if let Some(bar) = progress {
                bar.set_message(format!("{records} events"));
            }
        }
    }
    for (record, ()) in engine.end_batch(&mut profiles)? {
        write(&record, &mut outputs)?;
    }
    engine.commit()?;
    Ok(ReplaySummary {
        records,
        outputs,
        stats: engine.stats().clone(),
        customers: engine.customer_count()?,
        elapsed: started.elapsed(),
    })
}

/// The training records of an event file (for `train-matching` and the FEBRL bench):
/// each touchpoint's person data, normalised as resolve normalises it; also how many
/// lines there were and how many were not touchpoints.
pub fn training_records(
    config: &EngineConfig,
    path: &Path,
) -> Result<(Vec<TrainRecord>, u64, u64), ReplayError> {
    let resolver = Resolver::new(config);
    let parser = Parser::new(config);
    let input = |source| ReplayError::Input {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(input)?;
    let mut records = Vec::new();
    let (mut lines, mut rejected) = (0u64, 0u64);
    for line in BufReader::new(file).lines() {
        let line = line.map_err(input)?;
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        match parser.parse(line.as_bytes()) {
            Ok(tp) => records.extend(resolver.training_record(&tp)),
            Err(_) => rejected += 1,
        }
    }
    Ok((records, lines, rejected))
}

/// A human summary, for the end of `unicus replay`.
pub fn describe(summary: &ReplaySummary) -> String {
    let s = &summary.stats;
    let mut text = format!(
        "{} records in {:.2}s ({:.0} events/s): {} accepted, {} duplicates, {} rejected to touchpoints.dlq\n",
        summary.records,
        summary.elapsed.as_secs_f64(),
        summary.events_per_second(),
        s.accepted,
        s.duplicates,
        s.rejected_total()
    );
    text += &format!(
        "customers: {} live ({} created, {} merges); conflicts refused: {}; generic values: {}; junk values ignored: {}; unusable values: {}; unresolved events: {}\n",
        summary.customers, s.new_customers, s.merges, s.conflicts, s.generic_values, s.junk_values, s.unusable_values, s.unresolved
    );
    text += &s.fuzzy_summary();
    text.push('\n');
    if !s.rejected.is_empty() {
        let reasons: Vec<String> = s.rejected.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text += &format!("rejected by reason: {}\n", reasons.join(", "));
    }
    let consent_changes: u64 = s.consent_changes.values().sum();
    text += &format!(
        "consent changes: {consent_changes}; triggers: {} abandoned carts ({} suppressed: no allowed channel), {} purchases, {} lifecycle changes; suppressed events of erased persons: {}; fields dropped by minimisation: {}\n",
        s.carts_fired, s.carts_suppressed, s.purchases, s.lifecycle_changes, s.suppressed, s.minimised
    );
    let outs: Vec<String> = s.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    text += &format!("{} output records: {}\n", summary.outputs, outs.join(", "));
    text
}
