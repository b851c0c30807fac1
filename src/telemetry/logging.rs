//! Log output: `tracing` events to standard error, as text lines or one JSON object per
//! line (`[log] format`).
//!
//! The level or filter is the first of: the `--log-level` flag, the `UNICUS_LOG`
//! variable, `[log] level` of the configuration (itself overridable by
//! `UNICUS_LOG__LEVEL`). Nothing personal (emails, phones, names, addresses, identifier
//! values, payloads) is logged at info level or above: messages carry counts, topics,
//! partitions, offsets and error texts.

use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

#[derive(Debug, thiserror::Error)]
#[error("invalid log level or filter `{filter}` (from {origin}): {problem}")]
pub struct LogError {
    filter: String,
    origin: &'static str,
    problem: String,
}

/// The filter to use and where it came from.
fn choose<'a>(settings: &'a LogSettings, flag: Option<&'a str>) -> (String, &'static str) {
    if let Some(level) = flag {
        return (level.to_string(), "--log-level");
    }
    match std::env::var("UNICUS_LOG") {
        Ok(v) if !v.trim().is_empty() => (v, "UNICUS_LOG"),
        _ => (settings.level.clone(), "[log] level"),
    }
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn install(settings: &LogSettings, flag: Option<&str>) -> Result<(), LogError> {
    let (filter, origin) = choose(settings, flag);
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| LogError {
        filter: filter.clone(),
        origin,
        problem: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    Ok(())
}
