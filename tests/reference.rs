//! Reference data joined in the stream, through replay: the product catalogue and the
//! stores read by audience filters (`category`, `brand`, `store_city`), an update that
//! applies from then on, a removal, unknown keys counted, records that cannot be read.
//! (Through the broker: `tests/kafka_mock.rs`.)

mod common;

use common::{event, feed, lea_emailable as lea, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::profile::audiences::named;
use unicus::engine::Engine;
use unicus::store::Store;

fn engine(audiences: &[(&str, &str)]) -> Engine {
    let config = EngineConfig {
        audiences: named(audiences),
        ..EngineConfig::default()
    };
    config.validate().unwrap();
    Engine::new(config, Store::temporary().unwrap()).unwrap()
}

fn product(sku: &str, value: Value) -> String {
    json!({"reference": "products", "key": sku, "value": value}).to_string()
}

fn view(id: &str, sku: &str, at: &str) -> String {
    event(
        id,
        "web",
        "product_view",
        at,
        json!({"identifiers": {"account_id": "A-1"}, "page": {"product_sku": sku}}),
    )
}

/// The audiences the customer entered, in order.
fn entered(out: &[Value]) -> Vec<String> {
    on_topic(out, "audiences.changes")
        .iter()
        .filter(|o| o["value"]["change"] == "entered")
        .map(|o| o["value"]["audience"].as_str().unwrap().to_string())
        .collect()
}

const CLIMBERS: (&str, &str) = (
    "climbers",
    r#"count(product_view where category = "escalade", 30d) >= 2"#,
);

#[test]
fn a_filter_reads_the_category_and_brand_of_the_catalogue() {
    let simond = (
        "simond_fans",
        r#"count(product_view where brand = "Simond" and category_path contains "Montagne", 30d) >= 1"#,
    );
    let mut e = engine(&[CLIMBERS, simond]);
    let out = feed(
        &mut e,
        &[
            product(
                "CLIMB-42",
                json!({"category_path": ["Sport", "Montagne", "escalade"], "brand": "Simond", "price": 129.9}),
            ),
            product("SKI-1", json!({"category_path": "Sport > Montagne > ski"})),
            lea("2026-11-20T09:00:00Z"),
            view("v-1", "CLIMB-42", "2026-11-20T10:00:00Z"),
            view("v-2", "SKI-1", "2026-11-20T10:01:00Z"),
        ],
    );
    assert!(on_topic(&out, "touchpoints.dlq").is_empty(), "{out:#?}");
    assert_eq!(entered(&out), vec!["simond_fans"]);
    let out = feed(&mut e, &[view("v-3", "CLIMB-42", "2026-11-20T10:02:00Z")]);
    assert_eq!(entered(&out), vec!["climbers"]);
    assert_eq!(e.stats().reference_products, 2);
    assert_eq!(e.stats().product_misses, 0);
}

#[test]
fn an_update_applies_from_then_on_and_unknown_or_removed_skus_are_counted() {
    let mut e = engine(&[CLIMBERS]);
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            // Not in the catalogue yet: counted, read as no category, never blocking.
            view("v-1", "ROPE-9", "2026-11-20T10:00:00Z"),
            product("ROPE-9", json!({"category_path": ["Sport", "escalade"]})),
            view("v-2", "ROPE-9", "2026-11-20T10:01:00Z"),
        ],
    );
    assert_eq!(e.stats().product_misses, 1);
    assert!(entered(&out).is_empty(), "the first view had no category");
    assert_eq!(on_topic(&out, "touchpoints.resolved").len(), 3);

    let out = feed(&mut e, &[view("v-3", "ROPE-9", "2026-11-20T10:02:00Z")]);
    assert_eq!(entered(&out), vec!["climbers"]);

    // Removed from the catalogue: unknown again.
    let out = feed(
        &mut e,
        &[
            product("ROPE-9", Value::Null),
            view("v-4", "ROPE-9", "2026-11-20T10:03:00Z"),
        ],
    );
    assert!(on_topic(&out, "touchpoints.dlq").is_empty());
    assert_eq!(e.stats().product_misses, 2);
}

#[test]
fn stores_give_the_city_of_a_shop_event() {
    let lyon = (
        "lyon_shoppers",
        r#"count(purchase where store_city = "Lyon" and store_format = "megastore", 365d) >= 1"#,
    );
    let mut e = engine(&[lyon]);
    let buy = |id: &str, source: &str| {
        event(
            id,
            "store",
            "purchase",
            "2026-11-21T15:00:00Z",
            json!({"source": source, "identifiers": {"email": "lea@example.org"},
                   "order": {"order_id": format!("O-{id}"), "total": 40.0, "currency": "EUR"}}),
        )
    };
    let store = |id: &str, city: &str| {
        json!({"reference": "stores", "key": id,
               "value": {"name": "Part-Dieu", "city": city, "format": "megastore"}})
        .to_string()
    };
    let out = feed(
        &mut e,
        &[
            store("pos-lyon-3", "Lyon"),
            store("pos-paris-11", "Paris"),
            lea("2026-11-20T09:00:00Z"),
            buy("p-1", "pos-paris-11"),
            buy("p-2", "pos-nowhere"),
        ],
    );
    assert!(entered(&out).is_empty());
    assert_eq!(e.stats().store_misses, 1);
    let out = feed(&mut e, &[buy("p-3", "pos-lyon-3")]);
    assert_eq!(entered(&out), vec!["lyon_shoppers"]);
}

#[test]
fn reference_records_that_cannot_be_read_are_dead_letters_and_change_nothing() {
    let mut e = engine(&[CLIMBERS]);
    let out = feed(
        &mut e,
        &[
            product("ROPE-9", json!({"category_path": ["escalade"]})),
            product("ROPE-9", json!({"price": "cheap"})),
            json!({"reference": "prices", "key": "ROPE-9", "value": {}}).to_string(),
            json!({"reference": "products", "value": {}}).to_string(),
            lea("2026-11-20T09:00:00Z"),
            view("v-1", "ROPE-9", "2026-11-20T10:00:00Z"),
            view("v-2", "ROPE-9", "2026-11-20T10:01:00Z"),
        ],
    );
    let dead = on_topic(&out, "touchpoints.dlq");
    assert_eq!(dead.len(), 3, "{dead:#?}");
    // The refused update left the entry as it was: still `escalade`.
    assert_eq!(entered(&out), vec!["climbers"]);
}

#[test]
fn no_filter_on_reference_fields_reads_no_reference_data() {
    let mut e = engine(&[("viewers", "count(product_view, 30d) >= 1")]);
    feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            view("v-1", "ROPE-9", "2026-11-20T10:00:00Z"),
        ],
    );
    assert_eq!(e.stats().product_misses, 0, "not looked up");
}

#[test]
fn geography_gives_the_region_of_an_address_and_of_a_store() {
    let config = EngineConfig {
        audiences: named(&[
            ("rhone_alpes", r#"geo.region = "Auvergne-Rhône-Alpes""#),
            (
                "bought_in_corsica",
                r#"count(purchase where store_region = "Corse", 365d) >= 1"#,
            ),
        ]),
        // A région is no contact data: a trait may show it.
        traits: named(&[
            ("region", "geo.region"),
            ("departement", "geo.departement"),
            ("commune", "geo.commune"),
        ]),
        ..EngineConfig::default()
    };
    config.validate().unwrap();
    let mut e = Engine::new(config, Store::temporary().unwrap()).unwrap();
    let moved = |id: &str, postal_code: &str, country: &str, at: &str| {
        event(
            id,
            "web",
            "profile_update",
            at,
            json!({"identifiers": {"account_id": "A-1"},
                   "person": {"address": {"city": "X", "postal_code": postal_code, "country": country}}}),
        )
    };
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            moved("a-1", "69001", "FR", "2026-11-20T10:00:00Z"),
        ],
    );
    assert_eq!(entered(&out), vec!["rhone_alpes"]);
    let record = &on_topic(&out, "profiles.merged").last().unwrap()["value"];
    assert_eq!(record["traits"]["region"], "Auvergne-Rhône-Alpes");
    assert_eq!(record["traits"]["departement"], "Rhône");
    assert_eq!(record["traits"]["commune"], "Lyon 1er Arrondissement");

    // Abroad, the same digits are no French postal code.
    let out = feed(
        &mut e,
        &[moved("a-2", "69001", "BE", "2026-11-21T10:00:00Z")],
    );
    let record = &on_topic(&out, "profiles.merged").last().unwrap()["value"];
    assert_eq!(record["traits"]["region"], Value::Null);
    assert_eq!(record["audiences"], json!([]));

    // A store whose reference data gives only a postal code.
    let out = feed(
        &mut e,
        &[
            json!({"reference": "stores", "key": "pos-ajaccio",
                   "value": {"city": "Ajaccio", "postal_code": "20000"}})
            .to_string(),
            event(
                "p-1",
                "store",
                "purchase",
                "2026-11-22T10:00:00Z",
                json!({"source": "pos-ajaccio", "identifiers": {"email": "lea@example.org"},
                       "order": {"order_id": "O-1", "total": 10.0, "currency": "EUR"}}),
            ),
        ],
    );
    assert_eq!(entered(&out), vec!["bought_in_corsica"]);
}
