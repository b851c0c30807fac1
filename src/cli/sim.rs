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
) -> Result<()> {
    tokio_runtime()?.block_on(crate::sim::bench::kafka(events, customers, seed, brokers))
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
