//! The enriched golden record (`[engine.enrichment]`), through replay: affinities from the
//! catalogue, home store and region, price band, contact channel and hour per purpose,
//! next purchase; gated by the `profiling` consent; the same in any order of arrival;
//! merged, erased, and off by default.

mod common;

use common::{event, feed, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::profile::audiences::named;
use unicus::engine::Engine;
use unicus::store::Store;

fn config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.enrichment.enabled = true;
    config
}

fn engine(config: EngineConfig) -> Engine {
    config.validate().unwrap();
    Engine::new(config, Store::temporary().unwrap()).unwrap()
}

fn reference(table: &str, key: &str, value: Value) -> String {
    json!({"reference": table, "key": key, "value": value}).to_string()
}

fn catalogue() -> Vec<String> {
    vec![
        reference(
            "products",
            "CLIMB-42",
            json!({"category_path": ["Sport", "Montagne", "escalade"], "brand": "Simond", "price": 129.9}),
        ),
        reference(
            "products",
            "ROPE-60",
            json!({"category_path": ["Sport", "Montagne", "escalade"], "brand": "Beal", "price": 149.0}),
        ),
        reference(
            "products",
            "SOCK-3P",
            json!({"category_path": ["Sport", "vetements"], "brand": "Quechua", "price": 15.9}),
        ),
        reference(
            "stores",
            "pos-lyon-2",
            json!({"name": "Lyon Bellecour", "city": "Lyon", "postal_code": "69002"}),
        ),
    ]
}

const SOPHIE: &str = "sophie@example.org";

/// Sophie's events, all with her e-mail: an account with an address in Lyon and
/// marketing by e-mail and SMS allowed, three views of climbing shoes, a cart, two
/// purchases in the Lyon store 30 days apart, e-mails opened at 19:xx UTC.
fn sophie_events() -> Vec<String> {
    let ids = json!({"email": SOPHIE});
    let with = |extra: Value| {
        let mut e = json!({"identifiers": ids});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e
    };
    let view = |id: &str, sku: &str, at: &str| {
        event(
            id,
            "web",
            "product_view",
            at,
            with(json!({"page": {"product_sku": sku}})),
        )
    };
    let purchase = |id: &str, at: &str, items: Value| {
        event(
            id,
            "store",
            "purchase",
            at,
            with(json!({"source": "pos-lyon-2",
                        "order": {"order_id": id, "total": 100.0, "currency": "EUR", "items": items}})),
        )
    };
    vec![
        event(
            "acc-1",
            "web",
            "account_created",
            "2026-09-01T08:00:00Z",
            with(json!({
                "person": {"first_name": "Sophie", "last_name": "Dupont",
                           "address": {"line1": "3 place Bellecour", "postal_code": "69002",
                                       "city": "Lyon", "country": "FR"}},
                "consent": [{"purpose": "marketing", "channel": "email", "granted": true},
                            {"purpose": "marketing", "channel": "sms", "granted": true}],
                "identifiers": {"email": SOPHIE, "phone": "06 12 34 56 78"}})),
        ),
        view("v-1", "CLIMB-42", "2026-09-02T10:00:00Z"),
        view("v-2", "CLIMB-42", "2026-09-03T10:00:00Z"),
        view("v-3", "SOCK-3P", "2026-09-03T10:05:00Z"),
        event(
            "c-1",
            "web",
            "cart_add",
            "2026-09-03T10:10:00Z",
            with(
                json!({"cart": {"cart_id": "K-1", "items": [{"sku": "CLIMB-42", "quantity": 1, "unit_price": 129.9}]}}),
            ),
        ),
        purchase(
            "o-1",
            "2026-09-10T15:00:00Z",
            json!([{"sku": "CLIMB-42", "quantity": 1, "unit_price": 129.9}]),
        ),
        purchase(
            "o-2",
            "2026-10-10T15:00:00Z",
            json!([{"sku": "ROPE-60", "quantity": 1, "unit_price": 149.0},
                   {"sku": "SOCK-3P", "quantity": 1, "unit_price": 15.9}]),
        ),
        event(
            "e-1",
            "email",
            "email_open",
            "2026-10-01T19:10:00Z",
            with(json!({})),
        ),
        event(
            "e-2",
            "email",
            "email_click",
            "2026-10-02T19:40:00Z",
            with(json!({})),
        ),
        event(
            "e-3",
            "email",
            "email_open",
            "2026-10-05T07:00:00Z",
            with(json!({})),
        ),
    ]
}

/// The customer ids whose golden records `out` published, the last record of each.
fn last_records(out: &[Value]) -> Vec<(String, Value)> {
    let mut records: Vec<(String, Value)> = Vec::new();
    for o in on_topic(out, "profiles.merged") {
        let key = o["key"].as_str().unwrap().to_string();
        records.retain(|(k, _)| *k != key);
        if !o["value"].is_null() {
            records.push((key, o["value"].clone()));
        }
    }
    records
}

fn sophie(e: &Engine) -> Value {
    let records = e.golden_records().unwrap();
    records
        .into_iter()
        .find(|r| r["identifiers"]["email"][0] == SOPHIE)
        .expect("Sophie's golden record")
}

#[test]
fn the_golden_record_is_enriched_with_sources_and_times() {
    let mut e = engine(config());
    let mut lines = catalogue();
    lines.extend(sophie_events());
    let out = feed(&mut e, &lines);
    assert!(on_topic(&out, "touchpoints.dlq").is_empty(), "{out:#?}");
    let record = sophie(&e);
    let en = &record["enrichment"];

    // Affinities: escalade (2 views, a cart, two purchases) before vetements.
    assert_eq!(en["top_category"]["value"], "escalade", "{en:#}");
    assert_eq!(en["top_category"]["source"], "affinity");
    let categories: Vec<&str> = en["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(categories, ["escalade", "vetements"]);
    assert_eq!(en["categories"][0]["at"], "2026-10-10T15:00:00Z");
    // Quechua: a view (1) and a pair bought (5) on the last day; Beal: bought (5) on the
    // last day; Simond: 2 views, a cart and one bought (1 + 1 + 3 + 5) 30 to 38 days before.
    let brands: Vec<&str> = en["brands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(brands, ["Quechua", "Beal", "Simond"], "{en:#}");
    let simond = en["brands"][2]["score"].as_f64().unwrap();
    // As of the clock (2026-10-10T15:00), Simond's weights decayed 30 to 38 days.
    assert!(simond > 4.0 && simond < 5.0, "{simond}");

    // The store of her purchases, and the région of her address.
    assert_eq!(en["home_store"]["value"]["store"], "pos-lyon-2");
    assert_eq!(en["home_store"]["value"]["city"], "Lyon");
    assert_eq!(en["home_store"]["value"]["region"], "Auvergne-Rhône-Alpes");
    assert_eq!(en["home_store"]["value"]["events"], 2);
    assert_eq!(en["home_store"]["at"], "2026-10-10T15:00:00Z");
    assert_eq!(en["home_region"]["value"], "Auvergne-Rhône-Alpes");
    assert_eq!(en["home_region"]["source"], "address");

    // Items bought: 129.90 + 149.00 + 15.90 over 3 items, below the 100 of `mid`.
    assert_eq!(en["price_band"]["value"], "mid");
    assert_eq!(en["price_band"]["source"], "purchases");
    assert_eq!(en["price_band"]["average_price"], 98.27);
    assert_eq!(en["price_band"]["items"], 3);

    // E-mail, where she engages, at 19:00 UTC; SMS allowed but never engaged.
    let marketing = &en["contact"]["marketing"];
    assert_eq!(marketing["value"], "email", "{en:#}");
    assert_eq!(marketing["hour"], 19);
    assert_eq!(marketing["source"], "engagement");
    assert_eq!(marketing["at"], "2026-10-05T07:00:00Z");

    // Two orders 30 days apart: the next expected 30 days after the last.
    assert_eq!(en["next_purchase"]["value"], "2026-11-09T15:00:00Z");
    assert_eq!(en["next_purchase"]["interval_days"], 30.0);
    assert_eq!(en["next_purchase"]["orders"], 2);
    assert_eq!(en["next_purchase"]["at"], "2026-10-10T15:00:00Z");
}

#[test]
fn the_same_events_in_any_order_give_the_same_enrichment() {
    let expected = {
        let mut e = engine(config());
        let mut lines = catalogue();
        lines.extend(sophie_events());
        feed(&mut e, &lines);
        sophie(&e)["enrichment"].clone()
    };
    let mut events = sophie_events();
    // A fixed shuffle: each order a rotation and a reversal of the one before.
    for round in 0..8 {
        events.rotate_left(3);
        if round % 2 == 1 {
            events.reverse();
        }
        let mut e = engine(config());
        let mut lines = catalogue();
        lines.extend(events.iter().cloned());
        feed(&mut e, &lines);
        assert_eq!(
            sophie(&e)["enrichment"],
            expected,
            "order {round}: {events:#?}"
        );
    }
}

#[test]
fn profiling_denied_forgets_the_enrichment_and_granted_starts_it_again() {
    let mut e = engine(config());
    let mut lines = catalogue();
    lines.extend(sophie_events());
    feed(&mut e, &lines);
    let consent = |id: &str, granted: bool, at: &str| {
        event(
            id,
            "web",
            "consent_update",
            at,
            json!({"identifiers": {"email": SOPHIE},
                   "consent": [{"purpose": "profiling", "channel": "all", "granted": granted}]}),
        )
    };
    let view = |id: &str, at: &str| {
        event(
            id,
            "web",
            "product_view",
            at,
            json!({"identifiers": {"email": SOPHIE}, "page": {"product_sku": "SOCK-3P"}}),
        )
    };
    // Denied: nothing shown, nothing kept, and a view while denied is not counted.
    let out = feed(
        &mut e,
        &[
            consent("p-1", false, "2026-10-11T09:00:00Z"),
            view("v-9", "2026-10-11T09:30:00Z"),
        ],
    );
    let (_, record) = last_records(&out).pop().unwrap();
    assert!(record["enrichment"].is_null(), "{record:#}");
    assert!(record["rfm"].is_null());
    assert!(e.store().scan_prefix(b"p/en/").unwrap().is_empty());
    // Granted again: inferred from what comes from then on only.
    let out = feed(
        &mut e,
        &[
            consent("p-2", true, "2026-10-11T10:00:00Z"),
            view("v-10", "2026-10-11T10:30:00Z"),
        ],
    );
    let (_, record) = last_records(&out).pop().unwrap();
    let en = &record["enrichment"];
    assert_eq!(en["top_category"]["value"], "vetements", "{en:#}");
    assert_eq!(en["categories"].as_array().unwrap().len(), 1);
    assert_eq!(en["categories"][0]["score"], 1.0);
    assert_eq!(en["price_band"]["source"], "views");
    assert!(en["next_purchase"].is_null());
}

#[test]
fn enrichment_is_off_by_default_and_keeps_nothing() {
    let mut e = engine(EngineConfig::default());
    let mut lines = catalogue();
    lines.extend(sophie_events());
    let out = feed(&mut e, &lines);
    for (_, record) in last_records(&out) {
        assert!(record.get("enrichment").is_none(), "{record:#}");
    }
    assert!(e.store().scan_prefix(b"p/en/").unwrap().is_empty());
}

#[test]
fn a_merge_adds_both_sides_up_and_an_erasure_forgets_them() {
    let mut e = engine(config());
    let mut lines = catalogue();
    // Her phone's app, not known yet to be hers, buys ropes in the Lyon store.
    let app = |id: &str, kind: &str, at: &str, extra: Value| {
        let mut body = json!({"identifiers": {"device_id": "dev-9"}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        event(id, "app", kind, at, body)
    };
    lines.extend([
        app(
            "a-1",
            "product_view",
            "2026-09-01T12:00:00Z",
            json!({"page": {"product_sku": "ROPE-60"}}),
        ),
        app(
            "a-2",
            "product_view",
            "2026-09-01T12:05:00Z",
            json!({"page": {"product_sku": "ROPE-60"}}),
        ),
    ]);
    lines.extend(sophie_events());
    let out = feed(&mut e, &lines);
    assert_eq!(last_records(&out).len(), 2);
    let before = sophie(&e)["enrichment"].clone();
    assert!(before["contact"]["marketing"]["value"] == "email");
    // She logs in on the app: one customer; Beal gains the app's two views, and the app
    // is engagement for push (not allowed: the contact stays e-mail).
    let out = feed(
        &mut e,
        &[app(
            "a-3",
            "login",
            "2026-10-10T16:00:00Z",
            json!({"identifiers": {"device_id": "dev-9", "email": SOPHIE}}),
        )],
    );
    assert!(!on_topic(&out, "identity.changes").is_empty(), "{out:#?}");
    let after = sophie(&e)["enrichment"].clone();
    let score = |en: &Value, brand: &str| {
        en["brands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == brand)
            .map_or(0.0, |b| b["score"].as_f64().unwrap())
    };
    // Two views 39 days before the clock (2026-10-10T16:00): 2 × 2^(-39/30) ≈ 0.81.
    let gained = score(&after, "Beal") - score(&before, "Beal");
    assert!(
        (gained - 0.812).abs() < 0.01,
        "{gained}: {before:#} {after:#}"
    );
    assert_eq!(e.store().scan_prefix(b"p/en/").unwrap().len(), 1);

    let erase = json!({"request_id": "dpo-1", "kind": "erase",
                       "identifier": {"type": "email", "value": SOPHIE}})
    .to_string();
    feed(&mut e, &[erase]);
    assert!(e.store().scan_prefix(b"p/en/").unwrap().is_empty());
}

#[test]
fn audiences_read_the_enrichment() {
    let mut config = config();
    config.audiences = named(&[
        (
            "lyon_climbers",
            r#"enrichment.top_category = "escalade" and enrichment.home_store.city = "Lyon""#,
        ),
        ("mid_range", r#"enrichment.price_band = "mid""#),
    ]);
    let mut e = engine(config);
    let mut lines = catalogue();
    lines.extend(sophie_events());
    let out = feed(&mut e, &lines);
    let entered: Vec<&str> = on_topic(&out, "audiences.changes")
        .iter()
        .filter(|o| o["value"]["change"] == "entered")
        .map(|o| o["value"]["audience"].as_str().unwrap())
        .collect();
    assert!(entered.contains(&"lyon_climbers"), "{entered:?}");
    assert!(entered.contains(&"mid_range"), "{entered:?}");
}

#[test]
fn bad_enrichment_settings_are_refused_with_their_field() {
    let mut config = config();
    config.enrichment.price_band_limits = vec![100.0, 30.0];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("enrichment.price_band_limits"), "{err}");
    let mut config = self::config();
    config.enrichment.price_band_names = vec!["cheap".into()];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("enrichment.price_band_names"), "{err}");
    let mut config = self::config();
    config.enrichment.half_life_days = 0;
    assert!(config.validate().is_err());
}
