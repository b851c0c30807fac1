//! Adversarial streams for `unicus bench adversarial`: inputs built to make one customer
//! grow, replayed through the engine in memory, and the output bytes each input byte costs.
//!
//! Every stream is a function of the event index, so even hundreds of megabytes of
//! input are never held at once. Bytes are counted as Kafka carries them: the key, the
//! value (JSON text, the original bytes of a dead letter, nothing for a tombstone) and
//! the headers.

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::engine::config::EngineConfig;
use crate::engine::{Engine, Record};
use crate::model::output::{OutputRecord, Payload, Topic};
use crate::replay;
use crate::sim::generate::{self, GenerateOptions};

/// One stream: its name and its events, made one at a time.
pub struct Stream {
    pub name: &'static str,
    pub events: usize,
    /// The first events prepare the state and are not counted.
    pub warm_up: usize,
    line: Box<dyn Fn(usize) -> String>,
}

impl Stream {
    fn new(name: &'static str, events: usize, line: impl Fn(usize) -> String + 'static) -> Self {
        Self {
            name,
            events,
            warm_up: 0,
            line: Box::new(line),
        }
    }

    /// The `i`-th event of the stream.
    pub fn line(&self, i: usize) -> String {
        (self.line)(i)
    }
}

/// What a stream cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub events: usize,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// The most output bytes one event gave (its golden record, when coalesced, is
    /// counted at the end of its batch instead: see `max_golden_record`).
    pub max_event_output: u64,
    /// The most output bytes one event gave beyond its own size (what an event costs
    /// besides echoing itself on `touchpoints.resolved` or `touchpoints.dlq`).
    pub max_event_excess: u64,
    /// The largest `profiles.merged` value written.
    pub max_golden_record: u64,
    /// Dead letters among the outputs.
    pub dead_letters: u64,
}

impl Figures {
    pub fn ratio(&self) -> f64 {
        self.output_bytes as f64 / self.input_bytes.max(1) as f64
    }
}

/// How big the streams are: `full` gives the sizes of the issue (400 events of 200
/// keys...), smaller values scale every stream down (at least a few events each).
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Events of the attribute and key streams (400 in full).
    pub events: usize,
    /// Customers merged into one, and events of the "many things" stream.
    pub many: usize,
}

impl Scale {
    pub fn full() -> Self {
        Self {
            events: 400,
            many: 400,
        }
    }
}

const ACCOUNT: &str = "CRM-ADV-1";

/// The time of the `i`-th event of a stream: one a minute from a fixed start.
fn at(i: usize) -> String {
    let t = chrono::DateTime::from_timestamp(1_790_000_000 + 60 * i as i64, 0).unwrap_or_default();
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A touchpoint of `channel` with `extra` fields over the required ones.
fn touchpoint(id: String, channel: &str, kind: &str, i: usize, extra: Value) -> String {
    let mut e = json!({"event_id": id, "channel": channel, "type": kind, "occurred_at": at(i)});
    if let (Value::Object(base), Value::Object(more)) = (&mut e, extra) {
        base.extend(more);
    }
    e.to_string()
}

/// `n` attributes never seen before, named after event `i`, each key `key_bytes` long
/// (at least 40), each value 64 bytes: about the 120 bytes per attribute of issue #21.
fn new_attributes(i: usize, n: usize, key_bytes: usize) -> Value {
    let attributes: Map<String, Value> = (0..n)
        .map(|k| {
            let mut key = format!("segment_affinity_{i}_{k}_");
            key.extend(std::iter::repeat_n(
                'x',
                key_bytes.max(40).saturating_sub(key.len()),
            ));
            let value = format!("{k:0>64}");
            (key, Value::String(value))
        })
        .collect();
    Value::Object(attributes)
}

/// The adversarial streams at `scale`, and a generated stream for comparison.
pub fn streams(scale: Scale, config: &EngineConfig) -> Vec<Stream> {
    let per_event = config.limits.max_attributes;
    let attributes = move |n: usize, key_bytes: usize| {
        move |i: usize| {
            let extra = json!({"identifiers": {"account_id": ACCOUNT},
                "attributes": new_attributes(i, n, key_bytes)});
            touchpoint(
                format!("adv-a-{n}-{key_bytes}-{i}"),
                "crm",
                "account_updated",
                i,
                extra,
            )
        }
    };
    vec![
        Stream::new(
            "(a) 200 new attribute keys per event",
            scale.events,
            attributes(200, 0),
        ),
        Stream::new(
            "(a') new attribute keys at the per-event bound",
            scale.events,
            attributes(per_event, 0),
        ),
        Stream::new(
            "(b) a 500 KB attribute key per event",
            scale.events,
            attributes(1, 500 * 1024),
        ),
        Stream::new(
            "(c) new ids, SKUs, carts, currencies, channels",
            scale.many,
            many_things,
        ),
        merged_with_many(scale.many),
        tiny_events_on_a_full_profile(scale.many),
    ]
}

/// Event `i` of one account: new cookies and devices, a new e-mail, a purchase of new
/// SKUs in a new currency, a new cart, a consent about a new address, new attributes, on
/// a new channel (so a new source profile) every other event.
fn many_things(i: usize) -> String {
    let sku = |k: usize| json!({"sku": format!("SKU-{i}-{k}"), "quantity": 1, "unit_price": 1.5});
    let letters = |n: usize| -> String {
        (0..3)
            .map(|p| (b'A' + (n / 26usize.pow(p) % 26) as u8) as char)
            .collect()
    };
    let channel = if i % 2 == 0 {
        format!("ch{i}")
    } else {
        "web".into()
    };
    let extra = json!({
        "identifiers": {
            "account_id": ACCOUNT,
            "cookie_id": [format!("ck-{i}-1"), format!("ck-{i}-2")],
            "device_id": format!("dev-{i}"),
            "email": format!("adv{i}@example.org"),
        },
        "order": {"order_id": format!("O-{i}"), "total": 15.0, "currency": letters(i),
            "items": (0..10).map(sku).collect::<Vec<_>>()},
        "cart": {"cart_id": format!("K-{i}"), "items": (10..14).map(sku).collect::<Vec<_>>()},
        "consent": [{"purpose": "marketing", "channel": "email", "granted": true,
            "identifier": {"type": "email", "value": format!("adv{i}@example.org")}}],
        "attributes": new_attributes(i, 4, 0),
    });
    touchpoint(format!("adv-c-{i}"), &channel, "purchase", i, extra)
}

/// `n` customers, each known by a cookie only, then `n` events of one account each
/// naming eight of those cookies: every event tries to merge eight customers into the
/// account's.
fn merged_with_many(n: usize) -> Stream {
    Stream::new("(d) one customer merged with many", 2 * n, move |i| {
        if i < n {
            let extra = json!({"identifiers": {"cookie_id": format!("ck-{i}")}});
            return touchpoint(format!("adv-d-{i}"), "web", "page_view", i, extra);
        }
        let cookies: Vec<String> = (0..8).map(|k| format!("ck-{}", (i + k) % n)).collect();
        let extra = json!({"identifiers": {"account_id": ACCOUNT, "cookie_id": cookies}});
        touchpoint(format!("adv-d-{i}"), "app", "login", i, extra)
    })
}

/// A customer filled up by "many things" events (not counted; under 64 source profiles,
/// so that its account does not turn generic), then `n` of the smallest events that
/// change its golden record: the worst case of output per input byte, about the largest
/// golden record over the smallest event.
fn tiny_events_on_a_full_profile(n: usize) -> Stream {
    let fill = 100;
    let mut s = Stream::new("(e) tiny events on a full profile", fill + n, move |i| {
        if i < fill {
            return many_things(i);
        }
        let extra = json!({"identifiers": {"account_id": ACCOUNT}});
        touchpoint(format!("e{i}"), "crm", "login", i, extra)
    });
    s.warm_up = fill;
    s
}

/// A generated stream of `events`, for comparison.
pub fn generated(events: usize) -> Vec<String> {
    generate::Generator::new(GenerateOptions {
        seed: 42,
        customers: (events / 10).max(1),
        events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect()
}

/// Events per batch, as `replay` commits by default and the runtime's batches hold at
/// most: the golden records of a batch are coalesced per customer (unless
/// `coalesce_profiles` is off).
const BATCH: usize = 1_000;

/// The bytes of one output record as Kafka carries it.
fn record_bytes(o: &OutputRecord) -> u64 {
    let key = o.key.as_ref().map_or(0, String::len);
    let value = match &o.payload {
        Payload::Json(v) => serde_json::to_vec(v).map_or(0, |b| b.len()),
        Payload::Raw(b) => b.len(),
        Payload::Tombstone | Payload::Deferred(_) => 0,
    };
    let headers: usize = o.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (key + value + headers) as u64
}

/// Replays `lines` into a fresh in-memory engine and counts the bytes in and out, from
/// the `warm_up`-th line on.
pub fn measure(
    config: &EngineConfig,
    lines: impl Iterator<Item = String>,
    warm_up: usize,
) -> Result<Figures> {
    let mut engine: Engine = replay::open_engine(config.clone(), None)?;
    let mut f = Figures::default();
    // Read like a replay run now: the streams' times all lie in the past.
    let received_at = chrono::Utc::now().timestamp_millis();
    let mut profiles = engine.profile_cache::<bool>();
    // A batch's golden records, counted when it ends (when coalesced), if its events count.
    let count_batch = |f: &mut Figures, held: Vec<(OutputRecord, bool)>| {
        for (o, counted) in held {
            let n = record_bytes(&o);
            if counted {
                f.max_golden_record = f.max_golden_record.max(n);
                f.output_bytes += n;
            }
        }
    };
    for (i, line) in lines.enumerate() {
        let bytes = line.as_bytes();
        let record = Record::new(bytes, "adversarial", i as i64, received_at);
        let counted = i >= warm_up;
        let input = engine.parse_line(bytes);
        let outputs = engine.handle_batched(&record, input, &mut profiles, counted)?;
        if engine.pending() >= BATCH {
            let held = engine.end_batch(&mut profiles)?;
            count_batch(&mut f, held);
            engine.commit()?;
        }
        if !counted {
            continue;
        }
        let mut out = 0;
        for o in outputs {
            let n = record_bytes(&o);
            if o.topic == Topic::ProfilesMerged {
                f.max_golden_record = f.max_golden_record.max(n);
            }
            f.dead_letters += u64::from(o.topic == Topic::Dlq);
            out += n;
        }
        f.events += 1;
        f.input_bytes += bytes.len() as u64;
        f.output_bytes += out;
        f.max_event_output = f.max_event_output.max(out);
        f.max_event_excess = f
            .max_event_excess
            .max(out.saturating_sub(bytes.len() as u64));
    }
    let held = engine.end_batch(&mut profiles)?;
    count_batch(&mut f, held);
    engine.commit()?;
    Ok(f)
}

/// Measures one stream.
pub fn measure_stream(config: &EngineConfig, s: &Stream) -> Result<Figures> {
    measure(config, (0..s.events).map(|i| s.line(i)), s.warm_up)
}

fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// `unicus bench adversarial`: every stream at `scale` and a generated stream of
/// `generated_events`, one line of figures each.
pub fn bench(
    config: &EngineConfig,
    scale: Scale,
    generated_events: usize,
    out: &mut impl Write,
) -> Result<()> {
    writeln!(
        out,
        "golden records coalesced per customer in batches of {BATCH} events: {}",
        if config.coalesce_profiles {
            "yes"
        } else {
            "no (coalesce_profiles = false)"
        }
    )?;
    writeln!(
        out,
        "{:<48} {:>7} {:>10} {:>10} {:>7} {:>11} {:>11} {:>10} {:>6}",
        "stream",
        "events",
        "input",
        "output",
        "out/in",
        "max/event",
        "max excess",
        "golden max",
        "dlq"
    )?;
    let mut rows: Vec<(String, Figures)> = Vec::new();
    for s in streams(scale, config) {
        rows.push((s.name.to_string(), measure_stream(config, &s)?));
        print_row(out, rows.last().expect("pushed"))?;
    }
    // The worst case of coalescing: every event of a batch on another full profile
    // publishes one golden record each, as with coalescing off.
    let other = EngineConfig {
        coalesce_profiles: !config.coalesce_profiles,
        ..config.clone()
    };
    let name = if other.coalesce_profiles {
        "(e) the same, golden records coalesced"
    } else {
        "(e) the same, one golden record per event"
    };
    let e = tiny_events_on_a_full_profile(scale.many);
    rows.push((name.into(), measure_stream(&other, &e)?));
    print_row(out, rows.last().expect("pushed"))?;
    let normal = measure(config, generated(generated_events).into_iter(), 0)?;
    rows.push(("generated stream (unicus generate)".into(), normal));
    print_row(out, rows.last().expect("pushed"))?;
    Ok(())
}

fn print_row(out: &mut impl Write, (name, f): &(String, Figures)) -> Result<()> {
    writeln!(
        out,
        "{:<48} {:>7} {:>10} {:>10} {:>7.2} {:>11} {:>11} {:>10} {:>6}",
        name,
        f.events,
        kib(f.input_bytes),
        kib(f.output_bytes),
        f.ratio(),
        kib(f.max_event_output),
        kib(f.max_event_excess),
        kib(f.max_golden_record),
        f.dead_letters
    )?;
    Ok(())
}
