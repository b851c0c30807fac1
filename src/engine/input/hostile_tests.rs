//! Regression tests of hostile and ambiguous input (issue #21), at the parser and at
//! `Engine::handle`: each case is refused with its own reason, near misses pass.

use super::touchpoint::{parse, Rejection};
use super::{InputKind, InputParser, Record};
use crate::engine::config::EngineConfig;
use crate::engine::Engine;
use crate::model::EventType;
use crate::store::Store;

const HEAD: &str =
    r#""event_id":"e1","channel":"web","type":"purchase","occurred_at":"2026-01-01T00:00:00Z""#;

fn event(rest: &str) -> String {
    if rest.is_empty() {
        format!("{{{HEAD}}}")
    } else {
        format!("{{{HEAD},{rest}}}")
    }
}

fn reject(text: &str) -> Rejection {
    parse(text.as_bytes(), &EngineConfig::default()).unwrap_err()
}

fn special(key: &str) -> bool {
    let with_attribute = event(&format!(r#""attributes":{{"{key}":"x"}}"#));
    let nested = event(&format!(
        r#""order":{{"items":[{{"sku":"A","extra":{{"{key}":"x"}}}}]}}"#
    ));
    let found = |t: &str| {
        matches!(
            parse(t.as_bytes(), &EngineConfig::default()),
            Err(Rejection::SpecialCategory { .. })
        )
    };
    let (top, deep) = (found(&with_attribute), found(&nested));
    assert_eq!(top, deep, "{key:?} at the top and nested");
    top
}

#[test]
fn disguised_special_category_keys_are_refused() {
    for key in [
        "\u{ff48}\u{ff45}\u{ff41}\u{ff4c}\u{ff54}\u{ff48}", // ｈｅａｌｔｈ, full-width
        "heal\u{200b}th",                                   // zero-width space
        "h\u{0435}alth",                                    // Cyrillic е
        "H\u{c9}ALTH",                                      // HÉALTH
        "sant\u{e9}",                                       // santé
        "religi\u{f8}n\u{2060}",                            // ø, word joiner
    ] {
        assert!(special(key), "{key:?}");
    }
}

#[test]
fn special_categories_are_refused_in_english_and_in_french() {
    for key in [
        "health_condition",
        "religion",
        "political_opinions",
        "ethnic_origin",
        "sexual_orientation",
        "trade_union",
        "genetic_data",
        "biometric",
        "etat_de_sante",
        "opinions_politiques",
        "origine_ethnique",
        "orientationSexuelle",
        "syndicat",
        "donn\u{e9}es_g\u{e9}n\u{e9}tiques",
        "empreintes_biom\u{e9}triques",
    ] {
        assert!(special(key), "{key:?}");
    }
}

#[test]
fn near_misses_of_special_categories_pass() {
    for key in [
        "healthy_snacks",
        "trace_id",
        "wealth",
        "politique_de_retour",
        "syndication_feed",
    ] {
        assert!(!special(key), "{key:?}");
    }
}

#[test]
fn a_duplicate_key_anywhere_is_refused() {
    let twice = r#"{"event_id":"e1","event_id":"e2","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z"}"#;
    assert_eq!(
        reject(twice),
        Rejection::DuplicateKey {
            key: "event_id".into()
        }
    );
    let nested = event(r#""person":{"address":{"city":"Lyon","city":"Paris"}}"#);
    assert_eq!(
        reject(&nested),
        Rejection::DuplicateKey {
            key: "person.address.city".into()
        }
    );
    let parser = InputParser::new(&EngineConfig::default());
    let request = br#"{"request_id":"r","kind":"erase","kind":"export","customer_id":"c"}"#;
    let refused = parser.parse(InputKind::Request, request).unwrap_err();
    assert_eq!(refused.reason(), "duplicate_key");
}

#[test]
fn a_channel_not_configured_is_unknown() {
    let kiosk = r#"{"event_id":"e1","channel":"kiosk","type":"login","occurred_at":"2026-01-01T00:00:00Z"}"#;
    assert_eq!(
        reject(kiosk),
        Rejection::UnknownChannel {
            channel: "kiosk".into()
        }
    );
    let config = EngineConfig {
        channels: vec!["kiosk".into()],
        ..EngineConfig::default()
    };
    parse(kiosk.as_bytes(), &config).unwrap();
}

#[test]
fn negative_amounts_are_bad_values_outside_returns() {
    for (rest, field) in [
        (r#""order":{"total":-5}"#, "order.total"),
        (
            r#""order":{"items":[{"sku":"A","unit_price":-1}]}"#,
            "order.items[0].unit_price",
        ),
        (
            r#""order":{"items":[{"sku":"A"},{"sku":"B","quantity":0}]}"#,
            "order.items[1].quantity",
        ),
        (
            r#""cart":{"items":[{"sku":"A","quantity":-2}]}"#,
            "cart.items[0].quantity",
        ),
    ] {
        match reject(&event(rest)) {
            Rejection::BadValue { field: f, .. } => assert_eq!(f, field, "{rest}"),
            other => panic!("{rest}: {other:?}"),
        }
    }
    let free = event(r#""order":{"total":0,"items":[{"sku":"A","unit_price":0}]}"#);
    parse(free.as_bytes(), &EngineConfig::default()).unwrap();
}

#[test]
fn a_return_may_state_its_amounts_as_negative() {
    let refund = r#"{"event_id":"r1","channel":"store","type":"return","occurred_at":"2026-01-01T00:00:00Z",
        "order":{"order_id":"T-1","total":-129.90,"items":[{"sku":"A","quantity":-1,"unit_price":-129.90}]}}"#;
    let t = parse(refund.as_bytes(), &EngineConfig::default()).unwrap();
    assert_eq!(t.kind, EventType::Return);
    let order = t.order.unwrap();
    assert_eq!(order.total_cents, Some(12990));
    assert_eq!(order.items[0].quantity, 1.0);
    assert_eq!(order.items[0].unit_price, Some(129.90));
}

#[test]
fn numbers_out_of_range_are_bad_values() {
    let huge = "1".repeat(400);
    for (rest, field) in [
        (r#""order":{"total":1e309}"#.to_string(), "order.total"),
        (
            format!(r#""attributes":{{"visits":{huge}}}"#),
            "attributes.visits",
        ),
        (
            r#""order":{"total":18446744073709551616}"#.into(),
            "order.total",
        ),
    ] {
        match reject(&event(&rest)) {
            Rejection::BadValue { field: f, .. } => assert_eq!(f, field, "{rest}"),
            other => panic!("{rest}: {other:?}"),
        }
    }
}

#[test]
fn an_empty_value_is_named_and_a_byte_order_mark_is_skipped() {
    assert_eq!(reject(""), Rejection::EmptyValue);
    assert_eq!(reject("\n"), Rejection::EmptyValue);
    let with_bom = format!("\u{feff}{}", event(""));
    parse(with_bom.as_bytes(), &EngineConfig::default()).unwrap();
}

/// The reason reaches the dead letter's `unicus.error.reason` header.
#[test]
fn the_engine_sends_each_case_to_the_dead_letter_topic_with_its_reason() {
    let mut engine = Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap();
    for (text, reason) in [
        (r#"{"a":1,"a":2}"#.to_string(), "duplicate_key"),
        (String::new(), "empty_value"),
        (event(r#""order":{"total":-1}"#), "bad_value"),
        (event(r#""order":{"total":1e400}"#), "bad_value"),
        (event("").replace("\"web\"", "\"kiosk\""), "unknown_channel"),
        (
            event(r#""attributes":{"ｈｅａｌｔｈ":"x"}"#),
            "special_category",
        ),
    ] {
        // Read long after the events' time: only their content is at stake here.
        let record = Record::new(text.as_bytes(), "touchpoints.web", 0, 1_893_456_000_000);
        let input = engine.parse(InputKind::Touchpoint, record.bytes);
        let out = engine.handle(&record, input).unwrap();
        assert_eq!(out.len(), 1, "{text}");
        let header = out[0]
            .headers
            .iter()
            .find(|(k, _)| k == "unicus.error.reason")
            .map(|(_, v)| v.as_str());
        assert_eq!(header, Some(reason), "{text}");
    }
}

/// The README lists every reason code a dead letter can carry.
#[test]
fn the_readme_lists_every_reason_code() {
    let readme = include_str!("../../../README.md");
    for reason in Rejection::REASONS {
        assert!(
            readme.contains(&format!("| `{reason}` |")),
            "README: no row for the reason `{reason}`"
        );
    }
}
