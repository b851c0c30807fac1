//! Helpers shared by the tests: drive the engine over JSON lines in memory, and
//! ([`mock_cluster`]) the runtime over rdkafka's in-process mock cluster.
#![allow(dead_code)]

pub mod http;
pub mod mock_cluster;

use serde_json::Value;
use unicus::engine::config::EngineConfig;
use unicus::engine::Engine;
use unicus::replay;
use unicus::store::Store;

pub fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap()
}

/// When the tests' lines count as read (2030-01-01T00:00:00Z): after every time they
/// state, and fixed, so that no test depends on the day it runs.
pub const NOW: i64 = 1_893_456_000_000;

/// Replays lines through `engine`, read at [`NOW`], and returns the output lines as
/// JSON values.
pub fn feed(engine: &mut Engine, lines: &[String]) -> Vec<Value> {
    feed_at(engine, lines, NOW)
}

/// [`feed`] with the lines read at `now` (ms).
pub fn feed_at(engine: &mut Engine, lines: &[String], now: i64) -> Vec<Value> {
    let input = lines.join("\n");
    let mut out = Vec::new();
    replay::run(engine, input.as_bytes(), "test", now, &mut out, 3, None).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn on_topic<'a>(outputs: &'a [Value], topic: &str) -> Vec<&'a Value> {
    outputs.iter().filter(|o| o["topic"] == topic).collect()
}

/// A touchpoint line with the given fields merged over the required ones.
pub fn event(id: &str, channel: &str, kind: &str, at: &str, extra: Value) -> String {
    let mut e = serde_json::json!({
        "event_id": id, "channel": channel, "type": kind, "occurred_at": at,
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut e, extra) {
        base.extend(more);
    }
    e.to_string()
}

/// A web `cart_add` by Léa's account (`A-1`): the whole content of cart `cart_id`.
pub fn cart_add(id: &str, cart_id: &str, at: &str, items: Value) -> String {
    event(
        id,
        "web",
        "cart_add",
        at,
        serde_json::json!({"identifiers": {"account_id": "A-1"},
               "cart": {"cart_id": cart_id, "items": items}}),
    )
}

/// Someone else's event at `at` (an app page view by a device of its own): moves the
/// event-time clock, and with it the timers.
pub fn elsewhere(id: &str, at: &str) -> String {
    event(
        id,
        "app",
        "page_view",
        at,
        serde_json::json!({"identifiers": {"device_id": format!("dev-{id}")}}),
    )
}

/// Léa's web account (`account_id` A-1, `lea@example.org`) created at `at`, marketing by
/// e-mail allowed: the customer of the audience and journey tests.
pub fn lea_emailable(at: &str) -> String {
    event(
        "lea-0",
        "web",
        "account_created",
        at,
        serde_json::json!({"identifiers": {"account_id": "A-1", "email": "lea@example.org"},
               "consent": [{"purpose": "marketing", "channel": "email", "granted": true}]}),
    )
}
