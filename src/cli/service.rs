//! `run`, `check-config` and `schemas`: the Kafka runtime started from the settings (file,
//! environment, overrides) and stopped by SIGINT or SIGTERM, and the schemas it publishes.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};

use super::tokio_runtime;
use crate::kafka::avro::registry::OutputEncoder;
use crate::kafka::runtime::{self, RuntimeStats};
use crate::settings::Settings;

/// The configuration file and the values given on the command line that override it.
#[derive(Debug, Clone, Default)]
pub struct SettingsOverrides {
    /// Configuration file (TOML).
    pub config: Option<PathBuf>,
    /// Overrides kafka.brokers.
    pub brokers: Option<String>,
    /// Overrides kafka.group_id.
    pub group_id: Option<String>,
    /// Overrides kafka.topic_prefix.
    pub topic_prefix: Option<String>,
    /// Overrides runtime.store_dir.
    pub store: Option<PathBuf>,
}

impl SettingsOverrides {
    /// The effective settings: defaults, file, environment, then these overrides, validated.
    pub fn settings(&self) -> Result<Settings> {
        let mut s = Settings::load(self.config.as_deref())?;
        if let Some(b) = &self.brokers {
            s.kafka.brokers = b.clone();
        }
        if let Some(g) = &self.group_id {
            s.kafka.group_id = g.clone();
        }
        if let Some(p) = &self.topic_prefix {
            s.kafka.topic_prefix = p.clone();
        }
        if let Some(d) = &self.store {
            s.runtime.store_dir = d.clone();
        }
        s.validate()?;
        Ok(s)
    }
}

/// `run`: the runtime until a termination signal has drained it.
pub fn run(overrides: &SettingsOverrides) -> Result<()> {
    let settings = overrides.settings()?;
    tokio_runtime()?.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            termination().await;
            tracing::info!("termination signal: draining");
            stop_tx.send(true).ok();
        });
        let stats = Arc::new(RuntimeStats::default());
        let summary = runtime::run(settings, stop_rx, stats).await?;
        tracing::info!(
            consumed = summary.consumed,
            produced = summary.produced,
            batches = summary.batches,
            customers = summary.customers,
            clean = summary.clean,
            "stopped"
        );
        Ok(())
    })
}

/// `check-config`: prints the effective configuration, secrets masked.
pub fn check_config(overrides: &SettingsOverrides) -> Result<()> {
    let settings = overrides.settings()?;
    print!("{}", settings.to_masked_toml());
    eprintln!("configuration is valid");
    Ok(())
}

/// `schemas register`: registers the schemas of the Avro output topics, as `run` does at
/// start with `schema_registry.register = true`.
pub fn register_schemas(overrides: &SettingsOverrides) -> Result<()> {
    let mut settings = overrides.settings()?;
    settings.schema_registry.register = true;
    tokio_runtime()?.block_on(OutputEncoder::connect(
        &settings.output,
        &settings.schema_registry,
        &settings.kafka.topic_prefix,
        &crate::model::output::Topic::outputs(&settings.engine),
    ))?;
    eprintln!("schemas registered");
    Ok(())
}

/// `schemas check`: prints the report on the schemas of `dir`, and fails if a schema
/// would break its consumers.
pub fn check_schemas(dir: &Path) -> Result<()> {
    let report = crate::kafka::avro::check::check(dir)?;
    print!("{}", report.describe());
    if !report.ok() {
        bail!(
            "schemas in {} would break consumers (see above)",
            dir.display()
        );
    }
    Ok(())
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `api-token`: a new random token and the configuration entry that admits it (its
/// SHA-256 and scopes, never the token).
pub fn api_token(name: &str, scopes: &[String]) -> Result<(String, String)> {
    use crate::settings::api::Scope;
    let mut parsed = Vec::new();
    for s in scopes {
        let Some(scope) = Scope::parse(s) else {
            bail!("unknown scope `{s}` (profiles:read, pii:read, commands:write)");
        };
        parsed.push(scope.name());
    }
    if name.trim().is_empty() || name.len() > 64 || name.contains('"') {
        bail!("--name is 1 to 64 bytes, without quotes");
    }
    let token = crate::api::auth::new_token();
    let entry = format!(
        "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{}]",
        crate::api::auth::token_hash(&token),
        parsed
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok((token, entry))
}
