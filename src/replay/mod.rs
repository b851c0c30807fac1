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
use crate::engine::input::touchpoint::Rejection;
use crate::engine::input::InputParser;
use crate::engine::resolve::train::TrainRecord;
use crate::engine::resolve::Resolver;
use crate::engine::{Engine, EngineError, Input, ProfileCache, Record, Stats};
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
    let out: Box<dyn Write + Send> = if opts.output.as_os_str() == "-" {
        Box::new(io::stdout())
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

/// Lines parsed together and handed to the engine at once.
const CHUNK: usize = 256;
/// Chunks in flight between the threads: bounds memory when one side is slower.
const CHUNKS_IN_FLIGHT: usize = 16;

/// A line of the input, parsed beside the engine.
struct Parsed {
    line_index: i64,
    bytes: Vec<u8>,
    input: Result<Input, Rejection>,
}

/// Drives `engine` over JSON lines from `reader`, each read at `now` (ms), writing
/// output lines to `out`.
///
/// Three threads: one reads and parses lines, one (the caller's) runs the engine, one
/// writes the outputs. The engine sees the records in file order and the outputs are
/// written in the order it gives them; chunks between the threads are bounded.
pub fn run(
    engine: &mut Engine,
    reader: impl BufRead + Send,
    source: &str,
    now: i64,
    out: &mut (impl Write + Send),
    batch: usize,
    progress: Option<&ProgressBar>,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let batch = batch.max(1);
    let parser = engine.input_parser();
    let (parsed_tx, parsed_rx) = std::sync::mpsc::sync_channel::<Vec<Parsed>>(CHUNKS_IN_FLIGHT);
    let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Vec<OutputRecord>>(CHUNKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let reading = std::thread::Builder::new()
            .name("unicus-replay-read".into())
            .spawn_scoped(scope, move || {
                read_lines(reader, source, &parser, &parsed_tx, progress)
            })
            .map_err(|error| ReplayError::Input {
                path: PathBuf::from(source),
                source: error,
            })?;
        let writing = std::thread::Builder::new()
            .name("unicus-replay-write".into())
            .spawn_scoped(scope, move || write_lines(out, &out_rx))
            .map_err(|source| ReplayError::Output {
                path: PathBuf::from("output"),
                source,
            })?;
        let driven = drive(engine, parsed_rx, &out_tx, source, now, batch, progress);
        drop(out_tx);
        let written = writing.join().expect("the replay writer does not panic");
        let read = reading.join().expect("the replay reader does not panic");
        // The engine stops at its own error or when the writer is gone (the writer's
        // error says why); a reader that fails ends the input early (its error says so).
        let records = match driven {
            Err(gone @ ReplayError::Output { .. }) => {
                written?;
                return Err(gone);
            }
            other => other?,
        };
        read?;
        let outputs = written?;
        Ok(ReplaySummary {
            records,
            outputs,
            stats: engine.stats().clone(),
            customers: engine.customer_count()?,
            elapsed: started.elapsed(),
        })
    })
}

/// The reader: lines parsed in chunks, in order, until the end of the input, an error,
/// or the engine gone.
fn read_lines(
    mut reader: impl BufRead,
    source: &str,
    parser: &InputParser,
    parsed: &std::sync::mpsc::SyncSender<Vec<Parsed>>,
    progress: Option<&ProgressBar>,
) -> Result<(), ReplayError> {
    let mut line = Vec::with_capacity(4096);
    let mut line_index: i64 = -1;
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|error| ReplayError::Input {
                path: PathBuf::from(source),
                source: error,
            })?;
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
        chunk.push(Parsed {
            line_index,
            bytes: body.to_vec(),
            input: parser.parse_line(body),
        });
        if chunk.len() == CHUNK
            && parsed
                .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                .is_err()
        {
            return Ok(()); // the engine stopped: its error says why
        }
    }
    if !chunk.is_empty() {
        let _ = parsed.send(chunk);
    }
    Ok(())
}

/// The engine's side: every parsed line handled in order, the store committed every
/// `batch` events and at the end. Returns the records handled.
fn drive(
    engine: &mut Engine,
    parsed: std::sync::mpsc::Receiver<Vec<Parsed>>,
    outputs: &std::sync::mpsc::SyncSender<Vec<OutputRecord>>,
    source: &str,
    now: i64,
    batch: usize,
    progress: Option<&ProgressBar>,
) -> Result<u64, ReplayError> {
    let writer_gone = || ReplayError::Output {
        path: PathBuf::from("output"),
        source: io::Error::new(io::ErrorKind::BrokenPipe, "the output writer stopped"),
    };
    let mut records = 0u64;
    let mut profiles = engine.profile_cache();
    for chunk in parsed {
        let mut produced = Vec::with_capacity(chunk.len() * 3);
        for Parsed {
            line_index,
            bytes,
            input,
        } in chunk
        {
            records += 1;
            let record = Record::new(&bytes, source, line_index, now);
            produced.extend(engine.handle_batched(&record, input, &mut profiles, ())?);
            if engine.pending() >= batch {
                produced.extend(end_batch(engine, &mut profiles)?);
                engine.commit_in_background()?;
                if let Some(bar) = progress {
                    bar.set_message(format!("{records} events"));
                }
            }
        }
        outputs.send(produced).map_err(|_| writer_gone())?;
    }
    let held = end_batch(engine, &mut profiles)?;
    outputs.send(held).map_err(|_| writer_gone())?;
    engine.commit()?;
    Ok(records)
}

/// The batch's deferred golden records (see [`Engine::end_batch`]).
fn end_batch(
    engine: &mut Engine,
    profiles: &mut ProfileCache<()>,
) -> Result<Vec<OutputRecord>, ReplayError> {
    Ok(engine
        .end_batch(profiles)?
        .into_iter()
        .map(|(r, ())| r)
        .collect())
}

/// The writer: every output record as one line, in the order received. Returns how
/// many were written.
fn write_lines(
    out: &mut impl Write,
    outputs: &std::sync::mpsc::Receiver<Vec<OutputRecord>>,
) -> Result<u64, ReplayError> {
    let mut written = 0u64;
    for chunk in outputs {
        for record in &chunk {
            written += 1;
            record
                .write_replay_line(&mut *out)
                .map_err(io::Error::from)
                .and_then(|_| out.write_all(b"\n"))
                .map_err(|source| ReplayError::Output {
                    path: PathBuf::from("output"),
                    source,
                })?;
        }
    }
    Ok(written)
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
        "consent changes: {consent_changes}; triggers: {} abandoned carts ({} held back: no channel allowed or a recent order), {} purchases, {} lifecycle changes; suppressed events of erased persons: {}; fields dropped by minimisation: {}\n",
        s.carts_fired, s.carts_suppressed, s.purchases, s.lifecycle_changes, s.suppressed, s.minimised
    );
    let outs: Vec<String> = s.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    text += &format!("{} output records: {}\n", summary.outputs, outs.join(", "));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!(
                    r#"{{"event_id":"e{i}","channel":"web","type":"login","occurred_at":"2026-11-20T10:00:00Z","identifiers":{{"email":"p{i}@example.fr"}}}}"#
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn engine() -> Engine {
        open_engine(EngineConfig::default(), None).unwrap()
    }

    const NOW: i64 = 1_800_000_000_000;

    /// Fails every write after `left` bytes.
    struct Full {
        left: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left < buf.len() {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Fails every read after `left` bytes of `inner`.
    struct Broken<'a> {
        inner: &'a [u8],
        left: usize,
    }

    impl io::Read for Broken<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("device gone"));
            }
            let n = buf.len().min(self.left).min(self.inner.len());
            buf[..n].copy_from_slice(&self.inner[..n]);
            self.inner = &self.inner[n..];
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn outputs_come_in_input_order_across_chunks_and_batches() {
        let input = lines(3 * CHUNK + 7);
        let mut out = Vec::new();
        let summary = run(
            &mut engine(),
            input.as_bytes(),
            "t",
            NOW,
            &mut out,
            100,
            None,
        )
        .unwrap();
        assert_eq!(summary.records, 3 * CHUNK as u64 + 7);
        let resolved: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["topic"] == "touchpoints.resolved")
            .map(|v| v["value"]["event_id"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (0..3 * CHUNK + 7).map(|i| format!("e{i}")).collect();
        assert_eq!(resolved, expected);
    }

    #[test]
    fn a_failing_output_is_the_error_and_nothing_hangs() {
        let input = lines(4 * CHUNK);
        let mut full = Full { left: 10_000 };
        let err = run(
            &mut engine(),
            input.as_bytes(),
            "t",
            NOW,
            &mut full,
            100,
            None,
        )
        .expect_err("the output fails");
        match err {
            ReplayError::Output { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::StorageFull, "{source}")
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_failing_input_is_the_error() {
        let input = lines(4 * CHUNK);
        let reader = io::BufReader::new(Broken {
            inner: input.as_bytes(),
            left: input.len() / 2,
        });
        let err = run(
            &mut engine(),
            reader,
            "in.jsonl",
            NOW,
            &mut io::sink(),
            100,
            None,
        )
        .expect_err("the input fails");
        assert!(
            matches!(&err, ReplayError::Input { path, .. } if path == Path::new("in.jsonl")),
            "{err}"
        );
    }
}
