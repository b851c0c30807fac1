//! `unicus bench audiences`: what audiences, computed traits and journeys cost replay.
//! The same generated stream is replayed into fresh stores without definitions and with
//! the definitions below (20 audiences, 5 traits, 5 journeys, or a configuration's), the
//! two alternated over several rounds in one run; the figure is the ratio of the medians.

use std::collections::BTreeMap;
use std::io::{self, BufWriter};
use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::config::{EngineConfig, JourneyConfig};
use crate::engine::profile::audiences::named;
use crate::replay;
use crate::sim::generate::{GenerateOptions, Generator};

/// The audiences measured when no configuration is given: counts and sums over windows
/// of 7 to 90 days, with filters, consents, record fields, traits and `days_since`.
const AUDIENCES: [(&str, &str); 20] = [
    (
        "web_viewers_7d",
        r#"count(product_view where channel = "web", 7d) >= 3"#,
    ),
    (
        "app_viewers_7d",
        r#"count(product_view where channel = "app", 7d) >= 3"#,
    ),
    (
        "emailable_viewers",
        r#"count(product_view, 30d) >= 5 and allowed("marketing", "email")"#,
    ),
    ("sms_reachable", r#"allowed("marketing", "sms")"#),
    ("cart_builders", "count(cart_add, 14d) >= 2"),
    (
        "cart_no_purchase",
        "count(cart_add, 7d) >= 1 and count(purchase, 7d) = 0",
    ),
    ("buyers_30d", "count(purchase, 30d) >= 1"),
    ("repeat_buyers", "count(purchase, 90d) >= 3"),
    ("big_spenders", "sum(purchase, amount, 90d) > 300"),
    (
        "web_big_basket",
        r#"sum(purchase where channel in ["web", "app"], amount, 30d) > 150"#,
    ),
    (
        "store_regulars",
        r#"count(purchase where channel = "store", 90d) >= 2"#,
    ),
    ("returners", "count(return, 90d) >= 1"),
    ("searchers", "count(search, 7d) >= 2"),
    (
        "engaged_email",
        "count(email_open, 30d) >= 2 or count(email_click, 30d) >= 1",
    ),
    ("active_stage", r#"lifecycle_stage = "active""#),
    (
        "lapsing",
        "days_since(orders.last_order_at) > 60 and orders.count >= 1",
    ),
    ("vip", "segments.vip = true"),
    (
        "high_value",
        "traits.spent_90d > 500 or rfm.monetary > 1000",
    ),
    (
        "multichannel",
        "count(*, 30d) >= 10 and source_profiles >= 2",
    ),
    (
        "remarketing_ok",
        r#"allowed("remarketing", "any") and count(product_view, 7d) >= 1"#,
    ),
];

/// The traits measured with them.
const TRAITS: [(&str, &str); 5] = [
    ("spent_90d", "sum(purchase, amount, 90d)"),
    ("views_30d", "count(product_view, 30d)"),
    ("avg_basket", "orders.totals.EUR / orders.count"),
    ("city", "person.address.city"),
    ("days_since_order", "days_since(orders.last_order_at)"),
];

/// `(name, entry, when, unless, wait, cap)` of a journey.
type JourneyRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

/// The journeys measured with them: `(name, entry, when, unless, wait, cap)`: the three
/// sequences of the domain (views without a cart, a purchase then no visit, a reminder
/// then no purchase) and two more with caps.
const JOURNEYS: [JourneyRow; 5] = [
    (
        "browse_no_cart",
        "product_view",
        Some("count(product_view, 24h) >= 3"),
        Some("cart_add"),
        "24h",
        Some("1/7d"),
    ),
    (
        "lapsed_buyer",
        "purchase",
        None,
        Some("page_view"),
        "60d",
        None,
    ),
    (
        "reminder_no_purchase",
        "email_click",
        None,
        Some("purchase"),
        "48h",
        None,
    ),
    (
        "search_no_view",
        "search",
        None,
        Some("product_view"),
        "1h",
        Some("2/1d"),
    ),
    (
        "web_big_basket",
        r#"cart_add where channel = "web" and items >= 3"#,
        None,
        Some("purchase"),
        "6h",
        Some("1/30d"),
    ),
];

fn journeys() -> BTreeMap<String, JourneyConfig> {
    JOURNEYS
        .iter()
        .map(|&(name, entry, when, unless, wait, cap)| {
            let journey = JourneyConfig {
                entry: entry.into(),
                when: when.map(String::from),
                unless: unless.map(String::from),
                wait: wait.into(),
                purposes: Some(vec![crate::model::Purpose::Marketing]),
                cap: cap.map(String::from),
                quiet_hours: Some("21-8".into()),
                suppress_after_purchase: None,
                per: None,
                enabled: true,
            };
            (name.to_string(), journey)
        })
        .collect()
}

/// Replays `events` generated events (over `customers`) `rounds` times each way, and
/// prints the events/s of each run and the ratio. `config` replaces the definitions
/// above with a configuration's `[engine.audiences]`, `[engine.traits]` and
/// `[engine.journeys]`; its `[engine.enrichment]`, when on, is measured with them (the
/// runs without have it off). Both replay the generated catalogue and stores first.
pub fn audiences(
    events: usize,
    customers: usize,
    seed: u64,
    rounds: usize,
    config: Option<EngineConfig>,
) -> Result<()> {
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let input = dir.path().join("events.jsonl");
    let lines: Vec<String> = Generator::new(GenerateOptions {
        seed,
        customers,
        events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    // The generated retailer's catalogue and stores first, as replay lines: what filters
    // on reference fields and enrichment read.
    let reference =
        crate::sim::generate::reference_records()
            .into_iter()
            .map(|(table, key, value)| {
                format!(
                    r#"{{"reference":"{}","key":{},"value":{value}}}"#,
                    table.name(),
                    serde_json::Value::String(key)
                )
            });
    let lines: Vec<String> = reference.chain(lines).collect();
    std::fs::write(&input, lines.join("\n")).context("failed to write the stream")?;
    drop(lines);
    let with = config.unwrap_or_else(|| EngineConfig {
        audiences: named(&AUDIENCES),
        traits: named(&TRAITS),
        journeys: journeys(),
        ..EngineConfig::default()
    });
    with.validate().context("the definitions do not compile")?;
    let without = EngineConfig {
        audiences: BTreeMap::new(),
        traits: BTreeMap::new(),
        journeys: BTreeMap::new(),
        enrichment: crate::engine::config::Enrichment {
            enabled: false,
            ..with.enrichment.clone()
        },
        ..with.clone()
    };
    println!(
        "{events} events over {customers} customers; {} audiences, {} traits and {} journeys, enrichment {}; {rounds} rounds each way, alternated",
        with.audiences.len(),
        with.traits.len(),
        with.journeys.len(),
        if with.enrichment.enabled { "on" } else { "off" }
    );
    let (mut base, mut defs) = (Vec::new(), Vec::new());
    let (mut changes, mut triggers) = (0, 0);
    for round in 0..rounds.max(1) {
        let (rate, _, _) = one_run(&input, &without, &dir.path().join(format!("a{round}")))?;
        base.push(rate);
        let (rate, n, t) = one_run(&input, &with, &dir.path().join(format!("b{round}")))?;
        defs.push(rate);
        (changes, triggers) = (n, t);
        println!(
            "round {}: without {:.0} events/s, with {:.0} events/s",
            round + 1,
            base[round],
            defs[round]
        );
    }
    let (base, defs) = (median(&mut base), median(&mut defs));
    println!("audiences.changes records: {changes}; journey triggers: {triggers}");
    println!("median without definitions: {base:.0} events/s");
    println!("median with definitions:    {defs:.0} events/s");
    println!("ratio with/without:         {:.3}", defs / base);
    Ok(())
}

/// One replay into a fresh store at `store`: events/s, `audiences.changes` records and
/// journey triggers.
fn one_run(input: &Path, config: &EngineConfig, store: &Path) -> Result<(f64, u64, u64)> {
    let mut engine = replay::open_engine(config.clone(), Some(store))?;
    let reader = io::BufReader::with_capacity(1 << 20, std::fs::File::open(input)?);
    let mut sink = BufWriter::with_capacity(1 << 20, io::sink());
    let now = chrono::Utc::now().timestamp_millis();
    let summary = replay::run(&mut engine, reader, "bench", now, &mut sink, 10_000, None)?;
    let stats = &summary.stats;
    let (changes, triggers) = (stats.audience_changes, stats.journey_triggers);
    drop(engine);
    std::fs::remove_dir_all(store).ok();
    Ok((summary.events_per_second(), changes, triggers))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
