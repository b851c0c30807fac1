//! What each subcommand of the `unicus` binary does, as library calls taking plain options:
//! the binary parses its arguments, converts them and calls one function here.
pub mod files;
pub mod service;
pub mod sim;
pub mod store_tools;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::config::EngineConfig;
use crate::model::output::OutputRecord;
use crate::settings::Settings;

/// The `[engine]` table of the configuration file (the same file `run` reads), with the
/// environment applied; defaults without a file.
pub fn load_engine_config(path: Option<&Path>) -> Result<EngineConfig> {
    Ok(Settings::load(path)?.engine)
}

/// The RFC 3339 time given to `flag` in ms, or the wall clock when none is given.
pub fn time_or_wall_clock(given: Option<&str>, flag: &'static str) -> Result<i64> {
    match given {
        Some(t) => crate::engine::input::touchpoint::parse_time(t, flag)
            .with_context(|| format!("--{flag} takes an RFC 3339 time")),
        None => Ok(chrono::Utc::now().timestamp_millis()),
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// Writes output records as replay lines (contract §3), one per line.
fn write_replay_lines<'a>(
    out: &mut impl std::io::Write,
    records: impl IntoIterator<Item = &'a OutputRecord>,
) -> Result<()> {
    for r in records {
        r.write_replay_line(out)?;
        writeln!(out)?;
    }
    Ok(())
}
