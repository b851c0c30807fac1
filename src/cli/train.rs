//! `train-matching`: fits the model of probabilistic matching on an event file or a
//! store and writes the model file that `[engine.matching] model` names.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::load_engine_config;
use crate::engine::resolve::levels::COMPARISONS;
use crate::engine::resolve::model::logit2;
use crate::engine::resolve::train::{self, TrainOptions, TrainRecord};
use crate::replay;

/// `train-matching`: where the records come from and where the model goes.
#[derive(Debug, Clone)]
pub struct TrainCommand {
    /// A file of JSON events, one per line.
    pub input: Option<PathBuf>,
    /// A store no `run` holds (its source profiles).
    pub store: Option<PathBuf>,
    pub out: PathBuf,
    pub seed: u64,
    pub random_pairs: usize,
    /// The configuration whose `[engine]` table normalises the events.
    pub config: Option<PathBuf>,
}

/// `train-matching`: reads the records, fits, prints the fit and writes the model file.
pub fn train_matching(cmd: &TrainCommand) -> Result<()> {
    let config = load_engine_config(cmd.config.as_deref())?;
    let mut records: Vec<TrainRecord> = Vec::new();
    let mut sources = Vec::new();
    if let Some(path) = &cmd.input {
        let (from_events, lines, rejected) = replay::training_records(&config, path)?;
        records.extend(from_events);
        eprintln!(
            "{}: {lines} lines, {rejected} not touchpoints or invalid",
            path.display()
        );
        sources.push(format!(
            "events {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
    }
    if let Some(dir) = &cmd.store {
        if !dir.exists() {
            bail!("no store at {}", dir.display());
        }
        let engine = replay::open_engine(config.clone(), Some(dir))
            .with_context(|| format!("failed to open the store at {}", dir.display()))?;
        let from_store = engine.resolver().training_records(engine.store())?;
        eprintln!(
            "{}: {} source profiles with person data",
            dir.display(),
            from_store.len()
        );
        records.extend(from_store);
        sources.push("store".to_string());
    }
    if cmd.input.is_none() && cmd.store.is_none() {
        bail!("give --input or --store");
    }
    let opts = TrainOptions {
        seed: cmd.seed,
        random_pairs: cmd.random_pairs,
        max_block: config.matching.max_candidates,
        source: sources.join(" + "),
        ..TrainOptions::default()
    };
    let fitted = train::train(records, &opts).context("failed to fit the model")?;
    let m = &fitted.model;
    let t = m.training();
    println!(
        "records {}  blocked pairs {}  random pairs {}  seed {}",
        t.records, t.blocked_pairs, t.random_pairs, t.seed
    );
    println!("EM runs (key family: pairs, iterations, converged, match share):");
    for r in &fitted.runs {
        println!(
            "  {:<6} {:>9} {:>4} {:<5} {:.4}",
            r.name, r.pairs, r.iterations, r.converged, r.match_share
        );
    }
    println!(
        "prior λ {:.3e} (match weight {:.2})",
        m.prior(),
        logit2(m.prior())
    );
    for c in COMPARISONS {
        println!("{}", c.field.as_str());
        for (k, level) in c.levels.iter().enumerate() {
            let (pm, pu) = m.params(c.field, k);
            println!(
                "  {level:<18} m {pm:.5}  u {pu:.6}  weight {:+.2}",
                (pm / pu).log2()
            );
        }
    }
    std::fs::write(&cmd.out, m.to_json())
        .with_context(|| format!("failed to write {}", cmd.out.display()))?;
    eprintln!("wrote {}", cmd.out.display());
    Ok(())
}
