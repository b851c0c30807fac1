//! The bounds of `[engine.limits]`: what a customer keeps stays bounded whatever the
//! input, each bound does what the README says at the limit, and output bytes stay
//! proportional to input bytes over the adversarial streams of `bench adversarial`.

mod common;

use common::{event, feed, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::Engine;
use unicus::sim::adversarial::{measure_stream, streams, Scale, Stream};
use unicus::store::Store;

fn engine_with(config: EngineConfig) -> Engine {
    Engine::new(config, Store::temporary().unwrap()).unwrap()
}

fn at(minute: u32) -> String {
    format!("2026-03-01T10:{minute:02}:00Z")
}

/// The last `profiles.merged` value of `customer`.
fn golden<'a>(outputs: &'a [Value], customer: &str) -> &'a Value {
    &on_topic(outputs, "profiles.merged")
        .into_iter()
        .rev()
        .find(|o| o["key"] == customer)
        .expect("a golden record")["value"]
}

fn customer_of(outputs: &[Value], event_id: &str) -> String {
    on_topic(outputs, "touchpoints.resolved")
        .into_iter()
        .find(|o| o["value"]["event_id"] == event_id)
        .and_then(|o| o["key"].as_str())
        .expect("resolved")
        .to_string()
}

fn conflicts<'a>(outputs: &'a [Value], rule: &str) -> Vec<&'a Value> {
    on_topic(outputs, "identity.changes")
        .into_iter()
        .filter(|o| o["value"]["type"] == "conflict" && o["value"]["rule"] == rule)
        .collect()
}

#[test]
fn a_customer_keeps_its_most_recently_stated_attribute_keys() {
    let mut config = EngineConfig::default();
    config.limits.max_attributes_per_customer = 3;
    let mut e = engine_with(config);
    let id = json!({"account_id": "A-1"});
    let lines: Vec<String> = (0..5)
        .map(|i| {
            let attributes = json!({format!("k{i}"): "v", "always": format!("{i}")});
            let extra = json!({"identifiers": id, "attributes": attributes});
            event(&format!("e{i}"), "crm", "account_updated", &at(i), extra)
        })
        .collect();
    // An old event stating a new key: the least recently stated, forgotten at once.
    let late = event(
        "late",
        "web",
        "login",
        "2026-01-01T00:00:00Z",
        json!({"identifiers": id, "attributes": {"old": "x"}}),
    );
    let mut out = feed(&mut e, &lines);
    out.extend(feed(&mut e, &[late]));
    let customer = customer_of(&out, "e0");
    let kept: Vec<&str> = golden(&out, &customer)["attributes"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(kept, ["always", "k3", "k4"]);
    assert_eq!(e.stats().attributes_dropped, 4, "k0, k1, k2, then old");
}

#[test]
fn a_link_beyond_the_source_profile_limit_is_refused() {
    let mut config = EngineConfig::default();
    config.limits.max_source_profiles_per_customer = 2;
    let mut e = engine_with(config);
    let out = feed(
        &mut e,
        &[
            event(
                "c1",
                "web",
                "page_view",
                &at(0),
                json!({"identifiers": {"cookie_id": "ck-a"}}),
            ),
            event(
                "c2",
                "web",
                "page_view",
                &at(1),
                json!({"identifiers": {"cookie_id": "ck-b"}}),
            ),
            // A new source profile (app) joins the first and would bring the second.
            event(
                "link",
                "app",
                "login",
                &at(2),
                json!({"identifiers": {"account_id": "A-1", "cookie_id": ["ck-a", "ck-b"]}}),
            ),
        ],
    );
    let first = customer_of(&out, "c1");
    assert_eq!(customer_of(&out, "link"), first);
    assert_eq!(golden(&out, &first)["source_profiles"], 2);
    let refused = conflicts(&out, "source_profile_limit");
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0]["value"]["other_customer_id"],
        customer_of(&out, "c2")
    );
    assert_eq!(refused[0]["value"]["identifier_type"], "cookie_id");
}

#[test]
fn a_merge_beyond_a_type_limit_is_refused_and_so_is_the_merge_command() {
    let mut e = engine_with(EngineConfig::default());
    let emails = |from: usize| -> Vec<String> {
        (from..from + 3)
            .map(|i| format!("p{i}@example.org"))
            .collect()
    };
    let mut out = feed(
        &mut e,
        &[
            event(
                "m1",
                "web",
                "login",
                &at(0),
                json!({"identifiers": {"email": emails(0)}}),
            ),
            event(
                "m2",
                "web",
                "login",
                &at(1),
                json!({"identifiers": {"email": emails(3)}}),
            ),
            event(
                "link",
                "web",
                "login",
                &at(2),
                json!({"identifiers": {"email": ["p0@example.org", "p3@example.org"]}}),
            ),
        ],
    );
    let (a, b) = (customer_of(&out, "m1"), customer_of(&out, "m2"));
    assert_ne!(a, b, "six e-mails together: more than the limit of five");
    let refused = conflicts(&out, "identifier_limit");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["value"]["identifier_type"], "email");
    let command = json!({"command_id": "ops-1", "kind": "merge", "customer_ids": [a, b]});
    out = feed(&mut e, &[command.to_string()]);
    let dlq = on_topic(&out, "touchpoints.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["headers"]["unicus.error.reason"], "command_refused");
    let why = dlq[0]["headers"]["unicus.error"].as_str().unwrap();
    assert!(why.contains("more `email` values than its limit"), "{why}");
}

#[test]
fn ids_merged_beyond_the_bound_are_forgotten_with_their_aliases() {
    let mut config = EngineConfig::default();
    config.limits.max_merged_ids = 1;
    let mut e = engine_with(config);
    let cookie = |id: &str, c: &str, m: u32| {
        event(
            id,
            "web",
            "page_view",
            &at(m),
            json!({"identifiers": {"cookie_id": c}}),
        )
    };
    let out = feed(
        &mut e,
        &[
            cookie("c1", "ck-a", 0),
            cookie("c2", "ck-b", 1),
            cookie("c3", "ck-c", 2),
            event(
                "link",
                "app",
                "login",
                &at(3),
                json!({"identifiers": {"account_id": "A-1", "cookie_id": ["ck-a", "ck-b", "ck-c"]}}),
            ),
        ],
    );
    let survivor = customer_of(&out, "c1");
    assert_eq!(customer_of(&out, "link"), survivor);
    let (second, third) = (customer_of(&out, "c2"), customer_of(&out, "c3"));
    assert!(e.explain(&second).unwrap().is_none(), "forgotten alias");
    assert!(e.explain(&third).unwrap().is_some(), "kept alias");
    assert_eq!(e.stats().merged_ids_dropped, 1);
}

#[test]
fn identifier_consents_beyond_the_bound_fall_back_to_the_default_grants_first() {
    let mut config = EngineConfig::default();
    config.limits.max_identifier_consents = 2;
    let mut e = engine_with(config);
    let consent = |id: &str, m: u32, email: &str, granted: bool| {
        let entry = json!({"purpose": "marketing", "channel": "email", "granted": granted,
            "identifier": {"type": "email", "value": email}});
        let extra = json!({"identifiers": {"account_id": "A-1"}, "consent": [entry]});
        event(id, "crm", "consent_update", &at(m), extra)
    };
    let out = feed(
        &mut e,
        &[
            consent("k1", 0, "a@example.org", false),
            consent("k2", 1, "b@example.org", true),
            consent("k3", 2, "c@example.org", true),
        ],
    );
    // The grant of b goes before the older denial of a.
    let limit: Vec<&Value> = on_topic(&out, "consent.changes")
        .into_iter()
        .filter(|o| o["value"]["cause"] == "limit")
        .collect();
    assert_eq!(limit.len(), 1);
    assert_eq!(limit[0]["value"]["identifier"]["value"], "b@example.org");
    assert_eq!(limit[0]["value"]["granted"], false);
    let customer = customer_of(&out, "k1");
    let kept: Vec<&str> = golden(&out, &customer)["consents_by_identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["identifier"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(kept, ["a@example.org", "c@example.org"]);
}

#[test]
fn totals_keep_their_currencies_and_carts_their_first_items_within_the_bounds() {
    let mut config = EngineConfig::default();
    config.limits.max_currencies_per_customer = 1;
    config.limits.max_cart_items = 2;
    let mut e = engine_with(config);
    let id = json!({"account_id": "A-1"});
    let purchase = |eid: &str, m: u32, currency: &str| {
        let extra = json!({"identifiers": id, "order": {"total": 10.0, "currency": currency}});
        event(eid, "web", "purchase", &at(m), extra)
    };
    let items: Vec<Value> = ["X", "Y", "Z"]
        .iter()
        .map(|s| json!({"sku": s, "quantity": 1, "unit_price": 1.0}))
        .collect();
    let cart = event(
        "cart",
        "web",
        "cart_add",
        &at(2),
        json!({"identifiers": id, "cart": {"cart_id": "K", "items": items}}),
    );
    let out = feed(
        &mut e,
        &[purchase("eur", 0, "EUR"), purchase("usd", 1, "USD"), cart],
    );
    let orders = &golden(&out, &customer_of(&out, "eur"))["orders"];
    assert_eq!(orders["count"], 2);
    assert_eq!(orders["totals"], json!({"EUR": 10.0}));
    assert_eq!(e.stats().currencies_dropped, 1);
    assert_eq!(e.stats().cart_items_dropped, 1);
}

/// The adversarial streams at a size that runs in a few seconds.
fn reduced() -> Scale {
    Scale {
        events: 100,
        many: 150,
    }
}

fn by_name<'a>(all: &'a [Stream], prefix: &str) -> &'a Stream {
    all.iter()
        .find(|s| s.name.starts_with(prefix))
        .expect("a stream")
}

/// Output per input byte over every adversarial stream stays under 50: each event's
/// outputs are its echo (resolved record or dead letter, about its own size) plus records
/// drawn from a bounded customer, chiefly the golden record (under 64 KiB with the default
/// limits), published once per customer per batch; a generated stream runs at about 3.
/// Unbounded, the same streams grow without end (see the next test).
///
/// With golden records not coalesced (one per change), one event still never costs more
/// than 64 KiB beyond its own size: tiny events on a full profile (e) then have the worst
/// ratio, the largest golden record over the smallest event, which is also the worst case
/// of coalescing (every event of a batch on another full customer).
#[test]
fn output_stays_proportional_to_input_over_adversarial_streams() {
    for coalesce_profiles in [true, false] {
        let config = EngineConfig {
            coalesce_profiles,
            ..EngineConfig::default()
        };
        for s in &streams(reduced(), &config) {
            let f = measure_stream(&config, s).unwrap();
            println!(
                "{} (coalesced: {coalesce_profiles}): {f:?} ratio {:.2}",
                s.name,
                f.ratio()
            );
            assert!(f.max_event_excess < 64 * 1024, "{}: {f:?}", s.name);
            assert!(f.max_golden_record < 64 * 1024, "{}: {f:?}", s.name);
            if coalesce_profiles || !s.name.starts_with("(e)") {
                assert!(f.ratio() < 50.0, "{}: {f:?}", s.name);
            }
            if s.name.starts_with("(a)") || s.name.starts_with("(b)") {
                // too_many_attributes, too_long: dead letters, the original bytes only.
                assert_eq!(f.dead_letters, f.events as u64, "{}", s.name);
            }
        }
    }
}

/// Without the per-customer attribute bound, the attribute stream's golden record grows
/// with every event and the ratio with the number of events: the test above would fail.
/// (Golden records one per change: coalesced, the stream's events fit in one batch.)
#[test]
fn lifting_the_attribute_bound_makes_output_grow_faster_than_input() {
    let mut config = EngineConfig {
        coalesce_profiles: false,
        ..EngineConfig::default()
    };
    config.limits.max_attributes_per_customer = usize::MAX;
    let all = streams(reduced(), &config);
    let f = measure_stream(&config, by_name(&all, "(a')")).unwrap();
    assert!(f.ratio() > 50.0, "{f:?}");
}
