//! `profile`, `explain`, `split`, `merge` and `gdpr`: reads and operator commands on a
//! store that no `run` holds, their output records printed as replay lines.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{load_engine_config, write_replay_lines};
use crate::engine::{Engine, InputKind, Record};
use crate::model::output::{OutputRecord, Payload, Topic};
use crate::replay;

/// A store directory and the configuration whose `[engine]` table applies to it.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub store: PathBuf,
    /// Configuration file (the same as for `run`); defaults without it.
    pub config: Option<PathBuf>,
}

impl StoreOptions {
    /// The engine over the existing store.
    pub fn open(&self) -> Result<Engine> {
        let config = load_engine_config(self.config.as_deref())?;
        if !self.store.exists() {
            bail!("no store at {}", self.store.display());
        }
        replay::open_engine(config, Some(&self.store))
            .with_context(|| format!("failed to open the store at {}", self.store.display()))
    }
}

/// How `profile` finds the customer.
#[derive(Debug, Clone)]
pub enum ProfileKey {
    CustomerId(String),
    Email(String),
    Phone(String),
    /// Any identifier type, as `type:value`.
    Identifier(String),
}

/// `profile`: prints the golden record (pretty JSON) of the customer `key` finds.
pub fn profile(store: &StoreOptions, key: &ProfileKey) -> Result<()> {
    let engine = store.open()?;
    let customer = match key {
        ProfileKey::CustomerId(id) => Some(id.clone()),
        ProfileKey::Email(email) => engine.find_customer("email", email)?,
        ProfileKey::Phone(phone) => engine.find_customer("phone", phone)?,
        ProfileKey::Identifier(typed) => {
            let (kind, value) = split_identifier(typed)?;
            if !engine.config().identifiers.contains_key(kind) {
                bail!("unknown identifier type `{kind}`");
            }
            engine.find_customer(kind, value)?
        }
    };
    let Some(customer) = customer else {
        bail!("no customer holds that identifier");
    };
    let Some(record) = engine.golden_record(&customer)? else {
        bail!("no customer `{customer}`");
    };
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(())
}

/// What `explain` explains.
#[derive(Debug, Clone)]
pub enum Explain {
    /// Why each source profile belongs to this customer.
    Customer(String),
    /// Why these two customers are, or are not, one.
    Pair(String, String),
}

/// `explain`: prints the explanation (pretty JSON).
pub fn explain(store: &StoreOptions, what: &Explain) -> Result<()> {
    let engine = store.open()?;
    let doc = match what {
        Explain::Customer(id) => engine
            .explain(id)?
            .with_context(|| format!("no customer `{id}`"))?,
        Explain::Pair(a, b) => engine.explain_pair(a, b)?,
    };
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// `split`: the customer, the identifier (`type:value`) whose source profiles move, why,
/// and the command id (default: `cli-split-<time>`).
#[derive(Debug, Clone)]
pub struct SplitOptions {
    pub customer_id: String,
    pub identifier: String,
    pub reason: Option<String>,
    pub command_id: Option<String>,
}

/// `split`: runs a `split` record of `identity.commands` on the store.
pub fn split(store: &StoreOptions, opts: SplitOptions) -> Result<()> {
    let (kind, value) = split_identifier(&opts.identifier)?;
    let now = chrono::Utc::now().timestamp_millis();
    let command = json!({
        "command_id": opts.command_id.unwrap_or_else(|| format!("cli-split-{now}")),
        "kind": "split", "customer_id": opts.customer_id,
        "identifier": {"type": kind, "value": value}, "reason": opts.reason,
    });
    identity_command(store, command, now)
}

/// `merge`: the two customers, why, and the command id (default: `cli-merge-<time>`).
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub customer_ids: Vec<String>,
    pub reason: Option<String>,
    pub command_id: Option<String>,
}

/// `merge`: runs a `merge` record of `identity.commands` on the store.
pub fn merge(store: &StoreOptions, opts: MergeOptions) -> Result<()> {
    if opts.customer_ids.len() != 2 {
        bail!("--customer-id is given twice: the two customers to merge");
    }
    let now = chrono::Utc::now().timestamp_millis();
    let command = json!({
        "command_id": opts.command_id.unwrap_or_else(|| format!("cli-merge-{now}")),
        "kind": "merge", "customer_ids": opts.customer_ids, "reason": opts.reason,
    });
    identity_command(store, command, now)
}

/// Runs one `identity.commands` record on a store and prints its output records.
fn identity_command(store: &StoreOptions, command: Value, now: i64) -> Result<()> {
    let mut engine = store.open()?;
    let out = process_once(&mut engine, InputKind::Command, &command, now)?;
    if let Some(r) = dead_letter(&out) {
        bail!("{}", first_header(r).unwrap_or("refused"));
    }
    write_replay_lines(&mut std::io::stdout().lock(), &out)
}

/// Whose data a rights request is about.
#[derive(Debug, Clone)]
pub enum Subject {
    CustomerId(String),
    /// The person's identifier, as `type:value`.
    Identifier(String),
}

/// A rights request from the command line: its subject and its id (default:
/// `cli-<kind>-<time>`).
#[derive(Debug, Clone)]
pub struct GdprRequest {
    pub subject: Subject,
    pub request_id: Option<String>,
}

/// `gdpr export`: the document goes to `output` if given, else with the other records.
pub fn gdpr_export(store: &StoreOptions, req: GdprRequest, output: Option<&Path>) -> Result<()> {
    rights_request(store, req, "export", output)
}

/// `gdpr erase`: prints the tombstones and the receipt.
pub fn gdpr_erase(store: &StoreOptions, req: GdprRequest) -> Result<()> {
    rights_request(store, req, "erase", None)
}

/// Runs one `gdpr.requests` record on a store and prints its output records, the
/// receipt written to `output` instead when given.
fn rights_request(
    store: &StoreOptions,
    req: GdprRequest,
    kind: &str,
    output: Option<&Path>,
) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut engine = store.open()?;
    let mut request = json!({
        "request_id": req.request_id.unwrap_or_else(|| format!("cli-{kind}-{now}")),
        "kind": kind,
    });
    match &req.subject {
        Subject::CustomerId(id) => request["customer_id"] = id.clone().into(),
        Subject::Identifier(typed) => {
            let (t, v) = split_identifier(typed)?;
            request["identifier"] = json!({"type": t, "value": v});
        }
    }
    let out = process_once(&mut engine, InputKind::Request, &request, now)?;
    let mut stdout = std::io::stdout().lock();
    for r in &out {
        if let (Some(path), Payload::Json(v)) = (output, &r.payload) {
            if r.topic == Topic::GdprReceipts {
                std::fs::write(path, serde_json::to_vec_pretty(v)?)
                    .with_context(|| format!("failed to write {}", path.display()))?;
                continue;
            }
        }
        write_replay_lines(&mut stdout, [r])?;
    }
    if let Some(r) = dead_letter(&out) {
        bail!("request refused: {}", first_header(r).unwrap_or("?"));
    }
    Ok(())
}

/// `gdpr sweep`: runs the retention sweep as of `now` (RFC 3339; default: now) until
/// nothing more expires, printing what each pass outputs.
pub fn gdpr_sweep(store: &StoreOptions, now: Option<&str>) -> Result<()> {
    let at = super::time_or_wall_clock(now, "now")?;
    let mut engine = store.open()?;
    let mut stdout = std::io::stdout().lock();
    loop {
        let out = engine.sweep_retention(at)?;
        engine.commit()?;
        if out.is_empty() {
            return Ok(());
        }
        write_replay_lines(&mut stdout, &out)?;
    }
}

/// Handles one JSON record of `kind` as if read from a `cli` topic at `now`, and commits.
fn process_once(
    engine: &mut Engine,
    kind: InputKind,
    value: &Value,
    now: i64,
) -> Result<Vec<OutputRecord>> {
    let bytes = value.to_string().into_bytes();
    let out = engine.process(kind, &Record::new(&bytes, "cli", 0, now).written_at(now))?;
    engine.commit()?;
    Ok(out)
}

/// `type:value` as its two parts.
fn split_identifier(typed: &str) -> Result<(&str, &str)> {
    typed
        .split_once(':')
        .context("--identifier takes `type:value`")
}

/// The dead letter among `out`, if the engine refused the input.
fn dead_letter(out: &[OutputRecord]) -> Option<&OutputRecord> {
    out.iter().find(|r| r.topic == Topic::Dlq)
}

/// The first header of a dead letter: the reason of the refusal.
fn first_header(r: &OutputRecord) -> Option<&str> {
    r.headers.first().map(|h| h.1.as_str())
}
