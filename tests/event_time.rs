//! Times an input may state (issue #21): none before `limits.min_event_time`, none more
//! than `limits.max_future_skew_ms` after the time its record was read, so that no
//! single record moves the engine's clocks.

mod common;

use common::{engine, event, feed, feed_at, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::input::touchpoint::parse_time;
use unicus::engine::{Engine, InputKind, Record};
use unicus::model::output::{OutputRecord, Payload, Topic};
use unicus::sim::generate::{GenerateOptions, Generator};
use unicus::store::Store;

const DAY: i64 = 86_400_000;

fn ms(t: &str) -> i64 {
    parse_time(t, "t").unwrap()
}

/// The reason code of a dead letter line.
fn reason(dead_letter: &Value) -> &str {
    dead_letter["headers"]["unicus.error.reason"]
        .as_str()
        .unwrap()
}

/// The cookie event of the issue: an unrelated visitor, dated at the end of RFC 3339.
const HOSTILE: &str = r#"{"event_id":"web-hostile-9999","channel":"web","type":"page_view","occurred_at":"9999-12-31T23:59:59Z","identifiers":{"cookie_id":"c-0ff1ce0ff1ce"}}"#;

/// 2,000 generated events (1,000 persons), with export requests for three of their
/// e-mails after the middle and at the end; `hostile` goes in the middle if given.
fn stream(hostile: Option<&str>) -> Vec<String> {
    let mut lines: Vec<String> = Generator::new(GenerateOptions {
        events: 2_000,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    let emails: Vec<String> = lines[1_000..]
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["identifiers"]["email"].as_str().map(String::from))
        .take(3)
        .collect();
    assert_eq!(emails.len(), 3);
    let request = |n: usize| {
        json!({"request_id": format!("r-{n}"), "kind": "export",
               "identifier": {"type": "email", "value": emails[n]}})
        .to_string()
    };
    lines.push(request(1));
    lines.push(request(2));
    lines.insert(1_000, request(0));
    if let Some(h) = hostile {
        lines.insert(1_000, h.to_string());
    }
    lines
}

/// The outputs of `lines` on one topic, dead letters without their offset header (the
/// line index, shifted by an inserted line).
fn outputs(outs: &[Value], topic: &str) -> Vec<Value> {
    on_topic(outs, topic)
        .into_iter()
        .map(|o| {
            let mut o = o.clone();
            if let Some(h) = o.get_mut("headers").and_then(Value::as_object_mut) {
                h.remove("unicus.source.offset");
            }
            o
        })
        .collect()
}

#[test]
fn an_event_dated_9999_changes_nothing_and_is_a_dead_letter() {
    // Golden records one per change: a dead letter counts in its batch, so coalesced
    // golden records would come out where the shifted batches end.
    let engine = || {
        let config = EngineConfig {
            coalesce_profiles: false,
            ..EngineConfig::default()
        };
        Engine::new(config, Store::temporary().unwrap()).unwrap()
    };
    let (mut clean_engine, mut hostile_engine) = (engine(), engine());
    let clean = feed(&mut clean_engine, &stream(None));
    let hostile = feed(&mut hostile_engine, &stream(Some(HOSTILE)));

    let lifecycle = outputs(&clean, "triggers.lifecycle_changed");
    let carts = outputs(&clean, "triggers.cart_abandoned");
    let receipts = outputs(&clean, "gdpr.receipts");
    // What the issue saw move: lifecycle changes, cart reminders, receipt dates.
    assert!(lifecycle.len() > 100, "{}", lifecycle.len());
    assert!(!carts.is_empty());
    assert_eq!(receipts.len(), 3);
    let count = |topic: &str| outputs(&hostile, topic).len();
    assert_eq!(
        (
            count("triggers.lifecycle_changed"),
            count("triggers.cart_abandoned")
        ),
        (lifecycle.len(), carts.len()),
        "lifecycle changes and cart reminders"
    );
    assert_eq!(
        outputs(&hostile, "triggers.lifecycle_changed"),
        lifecycle,
        "lifecycle changes"
    );
    assert_eq!(
        outputs(&hostile, "triggers.cart_abandoned"),
        carts,
        "reminders"
    );
    assert_eq!(outputs(&hostile, "gdpr.receipts"), receipts, "receipts");
    for r in &receipts {
        assert!(
            r["value"]["done_at"].as_str().unwrap() < "2026-11",
            "{}",
            r["value"]
        );
    }
    // And everything else, but the one dead letter.
    let not_dlq = |outs: &[Value]| -> Vec<Value> {
        outs.iter()
            .filter(|o| o["topic"] != "touchpoints.dlq")
            .cloned()
            .collect()
    };
    assert_eq!(not_dlq(&hostile), not_dlq(&clean));
    let mut dead = outputs(&hostile, "touchpoints.dlq");
    let refused = dead.remove(
        dead.iter()
            .position(|d| d["value"] == HOSTILE)
            .expect("the event is a dead letter"),
    );
    assert_eq!(reason(&refused), "time_out_of_range");
    assert_eq!(
        refused["headers"]["unicus.error"],
        "field `occurred_at` is 9999-12-31T23:59:59Z, outside the accepted range \
         2000-01-01T00:00:00Z to 2030-01-02T00:00:00Z"
    );
    assert_eq!(dead, outputs(&clean, "touchpoints.dlq"));
    assert_eq!(
        hostile_engine.input_clock().unwrap(),
        clean_engine.input_clock().unwrap()
    );
    assert!(clean_engine.input_clock().unwrap() < ms("2026-11-01T00:00:00Z"));
}

#[test]
fn times_before_the_floor_are_dead_letters() {
    let mut e = engine();
    let at = |id: &str, t: &str| {
        event(
            id,
            "web",
            "login",
            t,
            json!({"identifiers": {"email": "a@example.org"}}),
        )
    };
    let out = feed(
        &mut e,
        &[
            at("year-0", "0000-01-01T00:00:00Z"),
            at("just-before", "1999-12-31T23:59:59.999Z"),
            at("offset-before", "2000-01-01T00:59:59+01:00"),
            at("floor", "2000-01-01T00:00:00Z"),
        ],
    );
    let dead = on_topic(&out, "touchpoints.dlq");
    assert_eq!(dead.len(), 3, "{dead:#?}");
    assert!(dead.iter().all(|d| reason(d) == "time_out_of_range"));
    assert_eq!(on_topic(&out, "touchpoints.resolved").len(), 1);
    assert_eq!(e.input_clock().unwrap(), ms("2000-01-01T00:00:00Z"));
}

#[test]
fn the_floor_and_the_skew_are_configurable() {
    let config: unicus::engine::config::EngineConfig = toml::from_str(
        "[limits]\nmin_event_time = \"2020-01-01T00:00:00Z\"\nmax_future_skew_ms = 3600000\n",
    )
    .unwrap();
    let mut e = Engine::new(config, unicus::store::Store::temporary().unwrap()).unwrap();
    let now = ms("2026-12-06T10:00:00Z");
    let line = |id: &str, t: &str| event(id, "web", "login", t, json!({}));
    let out = feed_at(
        &mut e,
        &[
            line("old", "2019-12-31T23:00:00Z"),
            line("late", "2026-12-06T11:00:01Z"),
            line("ok", "2026-12-06T11:00:00Z"),
        ],
        now,
    );
    let dead = on_topic(&out, "touchpoints.dlq");
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| reason(d) == "time_out_of_range"));

    let bad: Result<unicus::engine::config::EngineConfig, _> =
        toml::from_str("[limits]\nmin_event_time = \"2020-01-01\"\n");
    let err = bad.unwrap().validate().unwrap_err().to_string();
    assert!(err.contains("limits.min_event_time"), "{err}");
}

#[test]
fn a_request_or_command_dated_9999_is_a_dead_letter() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            event(
                "e1",
                "web",
                "login",
                "2026-11-20T10:00:00Z",
                json!({"identifiers": {"email": "a@example.org", "cookie_id": "c-1"}}),
            ),
            json!({"request_id": "r-9999", "kind": "export",
                   "identifier": {"type": "email", "value": "a@example.org"},
                   "requested_at": "9999-12-31T23:59:59Z"})
            .to_string(),
            json!({"command_id": "c-9999", "kind": "split", "customer_id": "cus_x",
                   "identifier": {"type": "cookie_id", "value": "c-1"},
                   "requested_at": "9999-12-31T23:59:59Z"})
            .to_string(),
            json!({"request_id": "r-0000", "kind": "erase",
                   "identifier": {"type": "email", "value": "a@example.org"},
                   "requested_at": "0000-01-01T00:00:00Z"})
            .to_string(),
        ],
    );
    let dead = on_topic(&out, "touchpoints.dlq");
    assert_eq!(dead.len(), 3, "{out:#?}");
    for d in &dead {
        assert_eq!(reason(d), "time_out_of_range");
        let error = d["headers"]["unicus.error"].as_str().unwrap();
        assert!(error.starts_with("field `requested_at` is "), "{error}");
    }
    assert!(on_topic(&out, "gdpr.receipts").is_empty());
    assert!(on_topic(&out, "identity.changes").is_empty());
    assert_eq!(e.input_clock().unwrap(), ms("2026-11-20T10:00:00Z"));
}

/// One record read by the runtime at `received_at`, with the broker timestamp `timestamp`.
fn from_broker(
    e: &mut Engine,
    kind: InputKind,
    json: &Value,
    timestamp: i64,
    received_at: i64,
) -> Vec<OutputRecord> {
    let bytes = json.to_string().into_bytes();
    let record = Record::new(&bytes, "touchpoints.web", 0, received_at).written_at(timestamp);
    e.process(kind, &record).unwrap()
}

fn json_of(r: &OutputRecord) -> &Value {
    match &r.payload {
        Payload::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_broker_timestamp_far_ahead_does_not_widen_the_window() {
    let mut e = engine();
    let now = ms("2026-12-06T10:00:00Z");
    let hostile = ms("9999-12-31T23:59:59Z");
    let at = |id: &str, t: i64| {
        json!({"event_id": id, "channel": "web", "type": "login",
               "occurred_at": unicus::model::output::rfc3339(t),
               "identifiers": {"email": "a@example.org"}})
    };
    let out = from_broker(
        &mut e,
        InputKind::Touchpoint,
        &at("ahead", now + 2 * DAY),
        hostile,
        now,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, Topic::Dlq);
    assert_eq!(out[0].headers[1].1, "time_out_of_range");
    assert!(
        out[0].headers[0].1.ends_with("to 2026-12-07T10:00:00Z"),
        "{:?}",
        out[0].headers
    );
    let out = from_broker(
        &mut e,
        InputKind::Touchpoint,
        &at("soon", now + DAY),
        hostile,
        now,
    );
    assert!(out.iter().all(|r| r.topic != Topic::Dlq), "{out:?}");
    assert_eq!(e.input_clock().unwrap(), now + DAY);

    // An earlier broker timestamp narrows it: the producer wrote the record then.
    let written = now - 3 * DAY;
    let out = from_broker(
        &mut e,
        InputKind::Touchpoint,
        &at("after-write", now),
        written,
        now,
    );
    assert_eq!(out[0].topic, Topic::Dlq);

    // A request without a time is not done at the producer's timestamp either.
    let request = json!({"request_id": "r1", "kind": "export",
                         "identifier": {"type": "email", "value": "a@example.org"}});
    let out = from_broker(&mut e, InputKind::Request, &request, hostile, now);
    let receipt = out
        .iter()
        .find(|r| r.topic == Topic::GdprReceipts)
        .expect("a receipt");
    assert_eq!(json_of(receipt)["done_at"], "2026-12-07T10:00:00Z");
    let request = json!({"request_id": "r2", "kind": "export",
                         "identifier": {"type": "email", "value": "a@example.org"}});
    let out = from_broker(&mut e, InputKind::Request, &request, now - DAY, now);
    let receipt = out.iter().find(|r| r.topic == Topic::GdprReceipts).unwrap();
    assert_eq!(json_of(receipt)["done_at"], "2026-12-05T10:00:00Z");
}

#[test]
fn timers_follow_the_caller_s_now_not_a_refused_record() {
    let mut e = engine();
    let now = ms("2026-12-06T10:00:00Z");
    let cart = event(
        "cart-1",
        "web",
        "cart_add",
        "2026-12-06T09:00:00Z",
        json!({"identifiers": {"email": "a@example.org"},
               "consent": [{"purpose": "marketing", "channel": "all", "granted": true}],
               "cart": {"cart_id": "k1", "items": [{"sku": "S1", "quantity": 1, "unit_price": 10.0}]}}),
    );
    let hostile = event(
        "late-cookie",
        "web",
        "page_view",
        "9999-12-31T23:59:59Z",
        json!({"identifiers": {"cookie_id": "c-9"}}),
    );
    let out = feed_at(&mut e, &[cart, hostile], now);
    assert_eq!(on_topic(&out, "touchpoints.dlq").len(), 1);
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    // The cart is due an hour after its last activity, plus the grace: not yet.
    assert!(e.tick(now).unwrap().is_empty());
    let out = e.tick(now + 10 * 60_000).unwrap();
    assert_eq!(
        out.iter()
            .filter(|r| r.topic == Topic::CartAbandoned)
            .count(),
        1
    );
}
