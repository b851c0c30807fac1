//! `produce`, `replay` and `generate`: the subcommands that read or write files of JSON
//! events (or standard input and output).
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::service::SettingsOverrides;
use super::{load_engine_config, tokio_runtime};
use crate::replay::{self, ReplayOptions};
use crate::sim::demo::Feeder;
use crate::sim::generate::{self, GenerateOptions};

/// `produce`: where the events come from and how fast they go.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// File of JSON events, one per line (`-`: standard input).
    pub input: PathBuf,
    /// Events per second (as fast as possible without it).
    pub rate: Option<f64>,
    pub settings: SettingsOverrides,
}

/// `produce`: sends each non-blank line to its `touchpoints.<channel>` topic.
pub fn produce(opts: &ProduceOptions) -> Result<()> {
    let settings = opts.settings.settings()?;
    let input: Box<dyn std::io::BufRead> = if opts.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&opts.input)
            .with_context(|| format!("failed to open {}", opts.input.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let lines = input
        .lines()
        .map_while(|l| l.ok())
        .filter(|l| !l.trim().is_empty());
    let k = &settings.kafka;
    let n = tokio_runtime()?.block_on(async {
        let feeder = Feeder::new(&k.brokers, &k.topic_prefix, &k.channels)?;
        match opts.rate {
            Some(rate) => feeder.send_paced(lines, rate).await,
            None => feeder.send(lines).await,
        }
    })?;
    eprintln!("produced {n} events");
    Ok(())
}

/// `replay`: the engine over a file of events, with the `[engine]` table of `config`.
pub fn replay(config: Option<&Path>, opts: &ReplayOptions) -> Result<()> {
    let config = load_engine_config(config)?;
    let summary = replay::replay(config, opts).context("replay failed")?;
    eprint!("{}", replay::describe(&summary));
    Ok(())
}

/// `generate`: the stream and where it goes.
#[derive(Debug, Clone)]
pub struct GenerateCommand {
    pub options: GenerateOptions,
    /// Also write the ground truth (CSV `event_id,person`) to this file.
    pub truth: Option<PathBuf>,
    /// Output file (standard output if absent).
    pub output: Option<PathBuf>,
}

/// `generate`: checks the shares and counts, then writes the stream (and its truth).
pub fn generate(cmd: GenerateCommand) -> Result<()> {
    let opts = cmd.options;
    if !(0.0..=1.0).contains(&opts.invalid_rate) {
        bail!("--invalid-rate must be between 0 and 1");
    }
    if !(0.0..=1.0).contains(&opts.paper_forms) {
        bail!("--paper-forms must be between 0 and 1");
    }
    if opts.customers == 0 {
        bail!("--customers must be at least 1");
    }
    let out: Box<dyn std::io::Write> = match &cmd.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("failed to create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = std::io::BufWriter::new(out);
    let Some(path) = &cmd.truth else {
        let n = generate::write_jsonl(opts, &mut w)?;
        w.flush()?;
        eprintln!("wrote {n} events");
        return Ok(());
    };
    let file = std::fs::File::create(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    let (lines, rows) =
        generate::write_jsonl_with_truth(opts, &mut w, &mut std::io::BufWriter::new(file))
            .with_context(|| format!("failed to write {}", path.display()))?;
    w.flush()?;
    eprintln!(
        "wrote {lines} events, {rows} truth rows to {}",
        path.display()
    );
    Ok(())
}
