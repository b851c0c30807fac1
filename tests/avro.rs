//! Avro without a broker: the JSON and Avro forms of every record type carry the same
//! information, Avro input feeds the engine exactly as JSON does, writer schemas of
//! older and newer producers are resolved, and undecodable records get a precise reason.

mod common;

use std::collections::BTreeMap;

use apache_avro::reader::datum::GenericDatumReader;
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::input::touchpoint::{Parser, Rejection};
use unicus::engine::{Engine, InputKind, Record};
use unicus::kafka::avro::codec::{self, Nulls};
use unicus::kafka::avro::registry::{json_shape, InputFormats, OutputEncoder};
use unicus::kafka::avro::schemas::{catalogue, SchemaFile, TopicSchema};
use unicus::model::output::{OutputRecord, Payload, Topic};
use unicus::settings::avro::SchemaRegistrySettings;
use unicus::sim::generate::{GenerateOptions, Generator};
use unicus::sim::registry_double::RegistryDouble;
use unicus::store::Store;

/// The information of a JSON value: null and absent are the same, numbers compare as
/// numbers, times as instants.
fn normal(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normal(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normal).collect()),
        Value::Number(n) => json!(n.as_f64()),
        Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => json!(format!("instant:{}", t.timestamp_millis())),
            Err(_) => Value::String(s.clone()),
        },
        other => other.clone(),
    }
}

fn topic_of(name: &str) -> Topic {
    Topic::ALL.into_iter().find(|t| t.name() == name).unwrap()
}

/// Every output topic in Avro, with made-up schema ids.
fn encoder() -> OutputEncoder {
    OutputEncoder::with_ids(
        Topic::ALL
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, 100 + i as u32, Some(1))),
    )
}

/// An output record through its Avro form and back to JSON.
fn through_avro(encoder: &OutputEncoder, record: &OutputRecord) -> Value {
    let bytes = encoder
        .value(record)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap();
    let (id, mut body) = unicus::kafka::avro::unframe(&bytes).unwrap();
    assert_eq!(
        id,
        100 + Topic::ALL.iter().position(|t| *t == record.topic).unwrap() as u32
    );
    let ts = catalogue().output(record.topic).unwrap();
    let value = GenericDatumReader::builder(ts.schema)
        .resolved_writer_schemata(ts.resolved.clone())
        .build()
        .unwrap()
        .read_value(&mut body)
        .unwrap();
    assert!(body.is_empty(), "the datum is the whole body");
    json_shape(
        record.topic,
        codec::to_json(value, ts.schema, &ts.names, Nulls::Keep).unwrap(),
    )
}

fn stream(events: usize) -> Vec<String> {
    Generator::new(GenerateOptions {
        seed: 11,
        customers: events / 20,
        events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect()
}

fn record_of(line: &Value) -> OutputRecord {
    let topic = topic_of(line["topic"].as_str().unwrap());
    OutputRecord {
        topic,
        key: line["key"].as_str().map(String::from),
        payload: match &line["value"] {
            Value::Null => Payload::Tombstone,
            Value::String(s) if topic == Topic::Dlq => Payload::Raw(s.clone().into_bytes()),
            v => Payload::Json(v.clone()),
        },
        headers: Vec::new(),
    }
}

fn lyon(line1: &str, postal_code: &str) -> Value {
    json!({"line1": line1, "postal_code": postal_code, "city": "Lyon", "country": "FR"})
}

/// Person-data stories for fuzzy matching (as in tests/fuzzy.rs): a paper form joined by
/// a web account typed differently (a fuzzy resolution), the same once the account is a
/// customer of its own (a fuzzy merge), a namesake in another street (a suggestion) and
/// a namesake with another loyalty card (a fuzzy candidate refused).
fn fuzzy_stories() -> Vec<String> {
    let paper = |id: &str, at: &str, person: Value| {
        common::event(
            id,
            "store",
            "purchase",
            at,
            json!({"person": person,
            "order": {"order_id": format!("T-{id}"), "total": 20.0, "currency": "EUR",
                      "items": [{"sku": "A", "quantity": 1, "unit_price": 20.0}]}}),
        )
    };
    let account = |id: &str, at: &str, identifiers: Value, person: Value| {
        common::event(
            id,
            "web",
            "account_created",
            at,
            json!({"identifiers": identifiers, "person": person}),
        )
    };
    vec![
        paper(
            "fz-a1",
            "2026-12-02T10:00:00Z",
            json!({"first_name": "Sophie", "last_name": "Marchand",
            "birth_date": "30/09/1979", "address": lyon("12, R. de la République", "69002")}),
        ),
        account(
            "fz-a2",
            "2026-12-03T10:00:00Z",
            json!({"account_id": "FZ-1", "email": "sophie.marchant@example.org"}),
            json!({"first_name": "Sofie", "last_name": "Marchant", "birth_date": "1979-09-30",
                   "address": lyon("12 rue de la République", "69002")}),
        ),
        paper(
            "fz-b1",
            "2026-12-02T10:00:00Z",
            json!({"first_name": "Sophie", "last_name": "Lambert",
            "birth_date": "11/02/1975", "address": lyon("4 rue Mercière", "69003")}),
        ),
        common::event(
            "fz-b2",
            "web",
            "login",
            "2026-12-02T12:00:00Z",
            json!({"identifiers": {"account_id": "FZ-2"}}),
        ),
        account(
            "fz-b3",
            "2026-12-03T10:00:00Z",
            json!({"account_id": "FZ-2", "email": "sophie.lambert@example.org"}),
            json!({"first_name": "Sofie", "last_name": "Lambert", "birth_date": "1975-02-11",
                   "address": lyon("4 rue Mercière", "69003")}),
        ),
        common::event(
            "fz-c1",
            "store",
            "store_visit",
            "2026-12-02T10:00:00Z",
            json!({"person": {"first_name": "Julien", "last_name": "Garnier",
                              "address": lyon("8 rue Dumenge", "69004")}}),
        ),
        common::event(
            "fz-c2",
            "marketplace",
            "purchase",
            "2026-12-03T10:00:00Z",
            json!({"identifiers": {"marketplace_buyer_id": "mkp:FZ-3"},
                   "person": {"first_name": "Julien", "last_name": "Garnier",
                              "address": lyon("3 avenue Foch", "69004")}}),
        ),
        common::event(
            "fz-d1",
            "store",
            "store_visit",
            "2026-12-02T10:00:00Z",
            json!({"identifiers": {"loyalty_id": "FZ-LOY-1"},
                   "person": {"first_name": "Nathalie", "last_name": "Perrin", "birth_date": "1990-01-02",
                              "address": lyon("1 rue Neuve", "69001")}}),
        ),
        common::event(
            "fz-d2",
            "store",
            "store_visit",
            "2026-12-03T10:00:00Z",
            json!({"identifiers": {"loyalty_id": "FZ-LOY-2"},
                   "person": {"first_name": "Nathalie", "last_name": "Perrin", "birth_date": "1990-01-02",
                              "address": lyon("1 rue Neuve", "69001")}}),
        ),
    ]
}

/// An operator splits the web account off the paper form's customer of the first fuzzy
/// story, then merges them back.
fn split_and_merge_back(engine: &mut Engine, so_far: &[OutputRecord]) -> Vec<OutputRecord> {
    let customer = so_far
        .iter()
        .find_map(|r| match &r.payload {
            Payload::Json(v) if r.topic == Topic::Resolved && v["event_id"] == "fz-a2" => {
                assert_eq!(v["resolution"]["method"], "fuzzy", "{v}");
                v["customer_id"].as_str().map(String::from)
            }
            _ => None,
        })
        .expect("fz-a2 resolved");
    let mut out = Vec::new();
    let split = json!({"command_id": "ops-split", "kind": "split", "customer_id": customer,
        "identifier": {"type": "email", "value": "sophie.marchant@example.org"},
        "reason": "two people"});
    let mut run = |command: &Value, offset: i64| -> Vec<OutputRecord> {
        let bytes = command.to_string().into_bytes();
        engine
            .process(
                InputKind::Command,
                &Record::new(&bytes, "identity.commands", offset, 1_800_000_000_000)
                    .written_at(1_800_000_000_000),
            )
            .unwrap()
    };
    let done = run(&split, 0);
    let new_customer = done
        .iter()
        .find_map(|r| match &r.payload {
            Payload::Json(v) if v["type"] == "split" => {
                v["new_customer_id"].as_str().map(String::from)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no split in {done:?}"));
    out.extend(done);
    let merge = json!({"command_id": "ops-merge", "kind": "merge",
        "customer_ids": [customer, new_customer], "reason": "the same person after all"});
    out.extend(run(&merge, 1));
    engine.commit().unwrap();
    out
}

/// Every output record of a stream with rights requests, a wall-clock tick that fires
/// the carts and a retention sweep that expires everyone.
fn all_kinds_of_outputs(config: EngineConfig) -> Vec<OutputRecord> {
    let mut engine = Engine::new(config, Store::temporary().unwrap()).unwrap();
    let mut lines = stream(6_000);
    // A shop's phone typed for seven different people: a generic value.
    for (i, name) in ["Ana", "Bob", "Chloé", "Dan", "Eve", "Fanny", "Gus"]
        .iter()
        .enumerate()
    {
        lines.push(common::event(
            &format!("walk-in-{i}"),
            "store",
            "purchase",
            "2026-12-01T10:00:00Z",
            json!({"identifiers": {"phone": "01 45 45 45 45", "email": format!("{name}@example.org")},
                   "person": {"first_name": name, "last_name": format!("Walker{i}")}}),
        ));
    }
    lines.extend(fuzzy_stories());
    let mut out: Vec<OutputRecord> = common::feed(&mut engine, &lines)
        .iter()
        .map(record_of)
        .collect();
    out.extend(split_and_merge_back(&mut engine, &out));
    let requests = [
        json!({"request_id": "r-export", "kind": "export", "identifier": {"type": "email", "value": "sophie.dupont@gmail.com"}}),
        json!({"request_id": "r-missing", "kind": "erase", "identifier": {"type": "email", "value": "nobody@example.org"}}),
        json!({"request_id": "r-erase", "kind": "erase", "identifier": {"type": "loyalty_id", "value": "FID-99812"}, "requested_at": "2027-01-01T00:00:00Z"}),
    ];
    for (i, r) in requests.iter().enumerate() {
        let bytes = r.to_string().into_bytes();
        out.extend(
            engine
                .process(
                    InputKind::Request,
                    &Record::new(&bytes, "gdpr.requests", i as i64, 1_800_000_000_000)
                        .written_at(1_800_000_000_000),
                )
                .unwrap(),
        );
    }
    let later = 1_900_000_000_000; // 2030: every cart is overdue, every customer inactive
    out.extend(engine.tick(later).unwrap());
    for _ in 0..100 {
        let swept = engine
            .sweep_retention(later + 4 * 365 * 86_400_000)
            .unwrap();
        if swept.is_empty() {
            break;
        }
        out.extend(swept);
    }
    engine.commit().unwrap();
    out
}

fn check_every_record(records: &[OutputRecord]) -> BTreeMap<String, usize> {
    let encoder = encoder();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        if r.topic == Topic::Dlq {
            continue;
        }
        let Payload::Json(original) = &r.payload else {
            assert_eq!(
                encoder.value(r).unwrap(),
                None,
                "a tombstone stays a tombstone"
            );
            continue;
        };
        let kind = match (r.topic, original.get("type"), original.get("kind")) {
            (Topic::IdentityChanges, Some(t), _) => {
                let how = if original.get("command_id").is_some() && t == "merge" {
                    ":command"
                } else if original.get("links").is_some() || original.get("match_rule").is_some() {
                    ":fuzzy"
                } else {
                    ""
                };
                format!("{}:{}{how}", r.topic.name(), t.as_str().unwrap())
            }
            (Topic::Resolved, _, _) => format!(
                "{}:{}",
                r.topic.name(),
                original["resolution"]["method"].as_str().unwrap()
            ),
            (Topic::GdprReceipts, _, Some(k)) => format!(
                "{}:{}:{}",
                r.topic.name(),
                k.as_str().unwrap(),
                original["status"].as_str().unwrap()
            ),
            _ => r.topic.name().to_string(),
        };
        *seen.entry(kind).or_default() += 1;
        let back = through_avro(&encoder, r);
        assert_eq!(
            normal(&back),
            normal(original),
            "{} record changed through Avro",
            r.topic.name()
        );
        if let Some(key) = encoder.key(r) {
            assert_eq!(
                &key[..5],
                &[0, 0, 0, 0, 1],
                "avro key framed with the key schema id"
            );
        }
    }
    seen
}

#[test]
fn json_and_avro_forms_of_every_output_record_carry_the_same_information() {
    let seen = check_every_record(&all_kinds_of_outputs(EngineConfig::default()));
    for kind in [
        "touchpoints.resolved:new",
        "touchpoints.resolved:deterministic",
        "touchpoints.resolved:fuzzy",
        "identity.changes:merge",
        "identity.changes:merge:fuzzy",
        "identity.changes:merge:command",
        "identity.changes:split",
        "identity.changes:suggestion",
        "identity.changes:conflict",
        "identity.changes:conflict:fuzzy",
        "identity.changes:generic_value",
        "profiles.merged",
        "consent.changes",
        "triggers.cart_abandoned",
        "triggers.purchase_completed",
        "triggers.lifecycle_changed",
        "gdpr.receipts:export:done",
        "gdpr.receipts:erase:done",
        "gdpr.receipts:erase:not_found",
        "gdpr.receipts:retention:done",
    ] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} record in {seen:?}"
        );
    }
}

/// `audiences.changes` records and golden records carrying `audiences` and `traits`
/// (deployments that configure them), every kind of trait value, through Avro and back;
/// a golden record without them stays without them.
#[test]
fn audience_changes_and_golden_records_with_audiences_and_traits_carry_the_same_information() {
    let mut engine = common::engine();
    let mut lines = fuzzy_stories();
    lines.push(common::event(
        "aud-1",
        "web",
        "purchase",
        "2026-12-04T10:00:00Z",
        json!({"identifiers": {"email": "sophie.marchant@example.org"},
               "order": {"order_id": "W-1", "total": 64.95, "currency": "EUR",
                         "items": [{"sku": "B", "quantity": 1, "unit_price": 64.95}]}}),
    ));
    let outputs: Vec<OutputRecord> = common::feed(&mut engine, &lines)
        .iter()
        .map(record_of)
        .collect();
    let golden = golden_records(&outputs);
    assert!(!golden.is_empty());
    let traits = json!({"avg_basket": 64.95, "is_vip": true, "home_city": "Lyon",
        "last_order": "2026-11-20T13:03:00Z", "unknown": null, "churned": false,
        "orders": 3.0, "note": ""});
    let mut records = Vec::new();
    for (i, g) in golden.iter().enumerate() {
        let customer = g["customer_id"].as_str().unwrap().to_string();
        let with = |audiences: Value, traits: Value| {
            let mut v = (*g).clone();
            v["audiences"] = audiences;
            v["traits"] = traits;
            OutputRecord::json(Topic::ProfilesMerged, customer.clone(), v)
        };
        records.push(with(
            json!(["big_spenders", "escalade_fans"]),
            traits.clone(),
        ));
        records.push(with(json!([]), json!({})));
        records.push(with(Value::Null, Value::Null));
        records.push(OutputRecord::json(
            Topic::ProfilesMerged,
            customer.clone(),
            (*g).clone(),
        ));
        for (change, cause) in [
            ("entered", "event"),
            ("exited", "time"),
            ("entered", "merge"),
            ("exited", "erasure"),
            ("exited", "retention"),
            ("entered", "definition"),
        ] {
            let at = 1_767_225_600_000i64 + i as i64;
            records.push(OutputRecord::json(
                Topic::AudiencesChanges,
                customer.clone(),
                json!({"change_id": format!("audience:{customer}:escalade_fans:{change}:{at}"),
                       "customer_id": customer, "audience": "escalade_fans", "change": change,
                       "cause": cause, "at": unicus::model::output::rfc3339(at)}),
            ));
        }
    }
    let seen = check_every_record(&records);
    assert_eq!(seen["profiles.merged"], 4 * golden.len());
    assert_eq!(seen["audiences.changes"], 6 * golden.len());

    let encoder = encoder();
    for r in &records {
        let Payload::Json(original) = &r.payload else {
            unreachable!()
        };
        let back = through_avro(&encoder, r);
        match r.topic {
            // Every field is always there: the record comes back as it was, exactly.
            Topic::AudiencesChanges => assert_eq!(&back, original),
            _ => {
                // The new fields exactly: names in order, every trait (a null one too)
                // with its value and kind.
                for field in ["audiences", "traits"] {
                    assert_eq!(
                        back[field],
                        original.get(field).cloned().unwrap_or(Value::Null),
                        "{field}"
                    );
                }
                let nulled = {
                    let mut v = original.clone();
                    v["audiences"] = Value::Null;
                    v["traits"] = Value::Null;
                    v
                };
                let without = {
                    let mut v = original.clone();
                    let o = v.as_object_mut().unwrap();
                    o.remove("audiences");
                    o.remove("traits");
                    v
                };
                let bytes = |v: &Value| {
                    encoder
                        .value(&OutputRecord::json(Topic::ProfilesMerged, "k", v.clone()))
                        .unwrap()
                        .unwrap()
                };
                assert_eq!(
                    bytes(&nulled),
                    bytes(&without),
                    "absent and null are the same"
                );
                // Read back as the runtime reads Avro (null fields left out), a record
                // without them has none.
                if original.get("traits").is_none_or(Value::is_null) {
                    let ts = catalogue().output(Topic::ProfilesMerged).unwrap();
                    let (_, body) = unicus::kafka::avro::unframe(&bytes(original))
                        .map(|(id, b)| (id, b.to_vec()))
                        .unwrap();
                    let doc = ts.decode_direct(&body, Nulls::Drop).unwrap();
                    assert!(doc.get("audiences").is_none() && doc.get("traits").is_none());
                    assert_eq!(normal(&doc), normal(original));
                }
            }
        }
    }
    // A golden record with them is the golden record, trait values of each kind included.
    let r = &records[0];
    let back = through_avro(&encoder, r);
    assert_eq!(back["traits"], traits);
    assert_eq!(back["traits"]["unknown"], Value::Null);
    assert!(back["traits"].as_object().unwrap().contains_key("unknown"));
    assert_eq!(back["audiences"], json!(["big_spenders", "escalade_fans"]));
}

/// The golden records (JSON) among `outputs`.
fn golden_records(outputs: &[OutputRecord]) -> Vec<&Value> {
    outputs
        .iter()
        .filter(|r| r.topic == Topic::ProfilesMerged)
        .filter_map(|r| match &r.payload {
            Payload::Json(v) => Some(v),
            _ => None,
        })
        .collect()
}

/// An `enrichment` with every field set, a contact for two purposes, as the engine
/// serialises it.
fn full_enrichment() -> Value {
    serde_json::to_value(unicus::engine::profile::enrichment::Enriched::example()).unwrap()
}

/// Golden records of a deployment that enables enrichment: the engine's own (from the
/// catalogue, a store, orders, e-mail engagement; and null once profiling is refused)
/// through Avro and back; then each golden record with an `enrichment` of every field,
/// with `"enrichment": null` (profiling denied) and without it (enrichment off). The
/// enrichment comes back exactly; null and absent are the same datum.
#[test]
fn golden_records_with_enrichment_carry_the_same_information() {
    let mut config = EngineConfig::default();
    config.enrichment.enabled = true;
    let mut engine = Engine::new(config, Store::temporary().unwrap()).unwrap();
    let reference = |table: &str, key: &str, value: Value| {
        json!({"reference": table, "key": key, "value": value}).to_string()
    };
    let ines = |extra: Value| {
        let mut e = json!({"identifiers": {"email": "ines.martin@example.org"}});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        e
    };
    let purchase = |id: &str, at: &str| {
        common::event(
            id,
            "store",
            "purchase",
            at,
            ines(json!({"source": "pos-lyon-2",
                        "order": {"order_id": id, "total": 129.9, "currency": "EUR",
                                  "items": [{"sku": "CLIMB-42", "quantity": 1, "unit_price": 129.9}]}})),
        )
    };
    let mut lines = vec![
        reference(
            "products",
            "CLIMB-42",
            json!({"category_path": ["Sport", "Montagne", "escalade"], "brand": "Simond", "price": 129.9}),
        ),
        reference(
            "stores",
            "pos-lyon-2",
            json!({"name": "Lyon Bellecour", "city": "Lyon", "postal_code": "69002"}),
        ),
        common::event(
            "en-acc",
            "web",
            "account_created",
            "2026-09-01T08:00:00Z",
            ines(
                json!({"person": {"first_name": "Inès", "last_name": "Martin",
                                   "address": lyon("3 place Bellecour", "69002")},
                        "consent": [{"purpose": "marketing", "channel": "email", "granted": true},
                                    {"purpose": "marketing", "channel": "sms", "granted": true}],
                        "identifiers": {"email": "ines.martin@example.org", "phone": "06 12 34 56 78"}}),
            ),
        ),
        common::event(
            "en-view",
            "web",
            "product_view",
            "2026-09-02T10:00:00Z",
            ines(json!({"page": {"product_sku": "CLIMB-42"}})),
        ),
        purchase("en-o-1", "2026-09-10T15:00:00Z"),
        purchase("en-o-2", "2026-10-10T15:00:00Z"),
        common::event(
            "en-open",
            "email",
            "email_open",
            "2026-10-11T19:10:00Z",
            ines(json!({})),
        ),
    ];
    lines.extend(fuzzy_stories());
    let deny = common::event(
        "en-deny",
        "web",
        "consent_update",
        "2026-10-12T09:00:00Z",
        ines(json!({"consent": [{"purpose": "profiling", "channel": "all", "granted": false}]})),
    );
    // Two feeds: the golden record before the refusal is published with everything.
    let mut outputs = common::feed(&mut engine, &lines);
    outputs.extend(common::feed(&mut engine, &[deny]));
    let outputs: Vec<OutputRecord> = outputs.iter().map(record_of).collect();
    let golden = golden_records(&outputs);
    // The engine's enrichment, full and null.
    let full = golden
        .iter()
        .find(|g| g["enrichment"]["next_purchase"].is_object())
        .expect("an enrichment with a next purchase");
    for field in ["top_category", "home_store", "home_region", "price_band"] {
        assert!(full["enrichment"][field].is_object(), "{field}: {full:#}");
    }
    assert!(
        full["enrichment"]["contact"]["marketing"].is_object(),
        "{full:#}"
    );
    assert!(golden.iter().any(|g| g["enrichment"].is_null()));
    assert!(golden.iter().all(|g| g.get("enrichment").is_some()));
    let seen = check_every_record(&outputs);
    assert_eq!(seen["profiles.merged"], golden.len());

    let made = full_enrichment();
    let mut records = Vec::new();
    for g in &golden {
        let customer = g["customer_id"].as_str().unwrap().to_string();
        let with = |enrichment: Option<Value>| {
            let mut v = (*g).clone();
            let o = v.as_object_mut().unwrap();
            match enrichment {
                Some(e) => o.insert("enrichment".into(), e),
                None => o.remove("enrichment"),
            };
            OutputRecord::json(Topic::ProfilesMerged, customer.clone(), v)
        };
        records.push(with(Some((*g)["enrichment"].clone())));
        records.push(with(Some(made.clone())));
        records.push(with(Some(Value::Null)));
        records.push(with(None));
    }
    let seen = check_every_record(&records);
    assert_eq!(seen["profiles.merged"], 4 * golden.len());

    let encoder = encoder();
    let bytes = |v: &Value| {
        encoder
            .value(&OutputRecord::json(Topic::ProfilesMerged, "k", v.clone()))
            .unwrap()
            .unwrap()
    };
    let ts = catalogue().output(Topic::ProfilesMerged).unwrap();
    for r in &records {
        let Payload::Json(original) = &r.payload else {
            unreachable!()
        };
        let back = through_avro(&encoder, r);
        // The enrichment exactly: names, numbers, times, each purpose's contact.
        assert_eq!(
            back["enrichment"],
            original.get("enrichment").cloned().unwrap_or(Value::Null)
        );
        let mut without = original.clone();
        without.as_object_mut().unwrap().remove("enrichment");
        let mut nulled = without.clone();
        nulled["enrichment"] = Value::Null;
        assert_eq!(
            bytes(&nulled),
            bytes(&without),
            "absent and null are the same"
        );
        // Read back as the runtime reads Avro (null fields left out): no enrichment.
        if original.get("enrichment").is_none_or(Value::is_null) {
            let framed = bytes(original);
            let (_, body) = unicus::kafka::avro::unframe(&framed).unwrap();
            let doc = ts.decode_direct(body, Nulls::Drop).unwrap();
            assert!(doc.get("enrichment").is_none());
            assert_eq!(normal(&doc), normal(original));
        }
    }
    // The made one, every field set and two purposes, is what it was.
    let back = through_avro(&encoder, &records[1]);
    assert_eq!(back["enrichment"], made);
    assert_eq!(
        back["enrichment"]["contact"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["ab_testing", "marketing"]
    );
    assert_eq!(
        back["enrichment"]["next_purchase"]["value"],
        "2026-11-09T15:00:00Z"
    );
    assert_eq!(
        back["enrichment"]["categories"][1]["at"],
        "2026-10-09T08:30:00.250Z"
    );
}

#[test]
fn pseudonymised_records_fit_their_schemas_too() {
    let mut config = EngineConfig::default();
    config.gdpr.pseudonymised_topics = [
        "touchpoints.resolved",
        "profiles.merged",
        "identity.changes",
    ]
    .map(String::from)
    .to_vec();
    let seen = check_every_record(&all_kinds_of_outputs(config));
    assert!(seen["profiles.merged"] > 0);
}

/// A touchpoint's Avro form, decoded as the runtime does (without the registry).
fn avro_document(doc: &Value) -> Result<serde_json::Map<String, Value>, codec::CodecError> {
    let ts = catalogue().input(doc["channel"].as_str().unwrap_or("web"));
    let body = ts.encode(doc)?;
    let value = GenericDatumReader::builder(ts.schema)
        .resolved_writer_schemata(ts.resolved.clone())
        .build()
        .unwrap()
        .read_value(&mut &body[..])
        .unwrap();
    match codec::to_json(value, ts.schema, &ts.names, Nulls::Drop).unwrap() {
        Value::Object(o) => Ok(o),
        other => panic!("not a record: {other}"),
    }
}

#[test]
fn an_avro_touchpoint_is_the_same_touchpoint_as_its_json_form_and_gives_the_same_outputs() {
    let lines = stream(4_000);
    let config = EngineConfig::default();
    let parser = Parser::new(&config);
    let mut json_engine = Engine::new(config.clone(), Store::temporary().unwrap()).unwrap();
    let mut avro_engine = Engine::new(config.clone(), Store::temporary().unwrap()).unwrap();
    let (mut as_avro, mut not_representable) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        let input = Record::new(line.as_bytes(), "t", i as i64, 1_800_000_000_000);
        let from_json = parser.parse(line.as_bytes());
        let json_out = json_engine.process(InputKind::Touchpoint, &input).unwrap();
        let avro_out = match serde_json::from_str::<Value>(line)
            .ok()
            .map(|d| avro_document(&d))
        {
            Some(Ok(doc)) => {
                as_avro += 1;
                let from_avro = parser.parse_document(doc.clone());
                match (&from_json, &from_avro) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(
                            normal(&Value::Object(a.raw.clone())),
                            normal(&Value::Object(b.raw.clone())),
                            "{line}"
                        );
                        let (mut a, mut b) = (a.clone(), b.clone());
                        a.raw.clear();
                        b.raw.clear();
                        assert_eq!(a, b, "{line}");
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "{line}"),
                    (a, b) => panic!("{line}: json {a:?}, avro {b:?}"),
                }
                let parsed = avro_engine.parse_document(InputKind::Touchpoint, Ok(doc));
                avro_engine.handle(&input, parsed).unwrap()
            }
            // Not representable in the schema (a time that is not one, not json...): the
            // JSON parser refuses it too.
            _ => {
                not_representable += 1;
                assert!(
                    from_json.is_err(),
                    "{line} parses as JSON but has no Avro form"
                );
                avro_engine.process(InputKind::Touchpoint, &input).unwrap()
            }
        };
        assert_eq!(json_out.len(), avro_out.len(), "{line}");
        for (a, b) in json_out.iter().zip(&avro_out) {
            assert_eq!(a.topic, b.topic);
            assert_eq!(a.key, b.key);
            match (&a.payload, &b.payload) {
                (Payload::Json(x), Payload::Json(y)) => assert_eq!(normal(x), normal(y), "{line}"),
                (x, y) if a.topic == Topic::Dlq => {
                    let _ = (x, y);
                }
                (x, y) => assert_eq!(x, y),
            }
        }
    }
    assert!(
        as_avro > 3_900 && not_representable > 0,
        "{as_avro} {not_representable}"
    );
    assert_eq!(json_engine.stats().merges, avro_engine.stats().merges);
    assert_eq!(json_engine.stats().rejected, avro_engine.stats().rejected);
}

// ----------------------------------------------------------------------------- registry

/// A variant of the web schema, as another producer might have it.
fn web_variant(name: &'static str, edit: impl FnOnce(&mut Vec<Value>)) -> TopicSchema {
    let mut schema: Value = serde_json::from_str(catalogue().input("web").text()).unwrap();
    let fields = schema["fields"].as_array_mut().unwrap();
    edit(fields);
    let text: &'static str = Box::leak(schema.to_string().into_boxed_str());
    TopicSchema::parse(SchemaFile {
        dir: "input",
        name,
        text,
    })
    .unwrap()
}

fn framed(id: u32, doc: &Value, ts: &TopicSchema) -> Vec<u8> {
    unicus::kafka::avro::frame(id, &ts.encode(doc).unwrap())
}

/// The input formats of a runtime reading one channel, the requests and the commands.
fn input_formats(registry: SchemaRegistrySettings, channel: &str) -> InputFormats {
    InputFormats::new(
        &registry,
        "",
        &[channel.to_string()],
        "gdpr.requests",
        "identity.commands",
    )
    .unwrap()
}

fn registry_settings(url: String) -> SchemaRegistrySettings {
    SchemaRegistrySettings {
        url,
        ..SchemaRegistrySettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_and_newer_producers_are_both_read_and_bad_records_get_a_precise_reason() {
    let registry = RegistryDouble::start().await.unwrap();
    let subject = "touchpoints.web-value";
    // An older producer: no `source`, no `page`, no `referrer` yet.
    let older = web_variant("older", |f| {
        f.retain(|f| !["source", "page", "referrer"].contains(&f["name"].as_str().unwrap()))
    });
    // A newer producer: a required field unicus does not know yet.
    let newer = web_variant("newer", |f| {
        f.push(json!({"name": "loyalty_tier", "type": "string", "doc": "tier"}))
    });
    // A breaking producer: occurred_at as text.
    let breaking = web_variant("breaking", |f| {
        f[3] = json!({"name": "occurred_at", "type": "string", "doc": "t"})
    });
    let ours = catalogue().input("web");
    let id_ours = registry.register(subject, ours.text()).unwrap();
    let id_older = registry.register("older-value", older.text()).unwrap();
    // Not under the subject: the registry refuses it there (BACKWARD), as it should.
    assert!(registry.register(subject, newer.text()).is_err());
    let id_newer = registry.register("newer-value", newer.text()).unwrap();
    let id_breaking = registry.register("other-value", breaking.text()).unwrap();

    let base = json!({"event_id": "w-1", "channel": "web", "type": "login",
        "occurred_at": "2026-11-20T10:00:00Z", "identifiers": {"email": "a@example.org"}});
    let mut with_page = base.clone();
    with_page["page"] = json!({"url": "https://shop.example/"});
    with_page["source"] = json!("front-1");
    let mut with_tier = with_page.clone();
    with_tier["loyalty_tier"] = json!("gold");
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("ours", framed(id_ours, &with_page, ours)),
        ("older", framed(id_older, &base, &older)),
        ("newer", framed(id_newer, &with_tier, &newer)),
        (
            "breaking",
            framed(
                id_breaking,
                &json!({"event_id": "x", "channel": "web", "type": "login", "occurred_at": "now"}),
                &breaking,
            ),
        ),
        (
            "unknown id",
            unicus::kafka::avro::frame(9_999, &ours.encode(&base).unwrap()),
        ),
        (
            "garbage",
            unicus::kafka::avro::frame(id_ours, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ),
        (
            "trailing",
            [framed(id_ours, &base, ours), vec![1, 2, 3]].concat(),
        ),
        ("short", vec![0, 0, 1]),
    ];
    let formats = input_formats(registry_settings(registry.url()), "web");
    let wanted = formats.unknown_ids(
        records
            .iter()
            .map(|(_, b)| ("touchpoints.web", b.as_slice())),
    );
    assert_eq!(wanted.len(), 5, "each writer id once");
    formats.prepare(&wanted).await.unwrap();
    let calls = registry.requests();
    let doc = |name: &str| {
        let bytes = &records.iter().find(|(n, _)| *n == name).unwrap().1;
        formats.document("touchpoints.web", bytes)
    };
    assert_eq!(Value::Object(doc("ours").unwrap()), with_page);
    assert_eq!(
        Value::Object(doc("older").unwrap()),
        base,
        "missing fields take their defaults"
    );
    assert_eq!(
        Value::Object(doc("newer").unwrap()),
        with_page,
        "a field unicus does not read is dropped"
    );
    let reason = |name: &str| match doc(name) {
        Err(Rejection::Avro { reason, detail }) => (reason, detail),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(reason("breaking").0, "avro_incompatible_schema");
    assert_eq!(
        reason("unknown id"),
        (
            "avro_unknown_schema",
            "schema id 9999 is not in the schema registry".into()
        )
    );
    assert_eq!(reason("garbage").0, "avro_undecodable");
    assert!(
        reason("trailing")
            .1
            .contains("3 bytes left after the datum"),
        "{:?}",
        reason("trailing")
    );
    assert_eq!(reason("short").0, "avro_undecodable");
    // Known ids are cached, unknown ones too: nothing more is asked.
    assert!(formats
        .unknown_ids(
            records
                .iter()
                .map(|(_, b)| ("touchpoints.web", b.as_slice()))
        )
        .is_empty());
    assert_eq!(registry.requests(), calls);
}

/// Hostile Avro input gets the reasons JSON gets (issue #21): an unknown channel, a
/// negative amount, a number JSON cannot hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_are_refused_for_the_reasons_json_records_are() {
    let registry = RegistryDouble::start().await.unwrap();
    let ours = catalogue().input("web");
    let id = registry
        .register("touchpoints.web-value", ours.text())
        .unwrap();
    let formats = input_formats(registry_settings(registry.url()), "web");
    let parser = Parser::new(&EngineConfig::default());
    let base = json!({"event_id": "w-1", "channel": "web", "type": "purchase",
        "occurred_at": "2026-11-20T10:00:00Z", "attributes": {"ratio": 0.5}});
    let mut kiosk = base.clone();
    kiosk["channel"] = json!("kiosk");
    let mut refund_elsewhere = base.clone();
    refund_elsewhere["order"] = json!({"order_id": "T-1", "total": -12.5});
    // 0.5 as an Avro double, then NaN in its place.
    let mut not_a_number = framed(id, &base, ours);
    let half = 0.5f64.to_le_bytes();
    let at = not_a_number
        .windows(8)
        .position(|w| w == half)
        .expect("the double 0.5 in the datum");
    not_a_number[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
    let records = [
        framed(id, &base, ours),
        framed(id, &kiosk, ours),
        framed(id, &refund_elsewhere, ours),
        not_a_number,
    ];
    let wanted = formats.unknown_ids(records.iter().map(|r| ("touchpoints.web", r.as_slice())));
    formats.prepare(&wanted).await.unwrap();
    let outcome: Vec<Result<(), Rejection>> = records
        .iter()
        .map(|r| {
            let doc = formats.document("touchpoints.web", r)?;
            parser.parse_document(doc).map(|_| ())
        })
        .collect();
    assert_eq!(
        outcome,
        [
            Ok(()),
            Err(Rejection::UnknownChannel {
                channel: "kiosk".into()
            }),
            Err(Rejection::BadValue {
                field: "order.total".into(),
                detail: "negative".into()
            }),
            Err(Rejection::BadValue {
                field: "attributes.ratio".into(),
                detail: "number out of range".into()
            }),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_an_error_to_retry_and_caches_nothing() {
    let registry = RegistryDouble::start().await.unwrap();
    let ours = catalogue().input("store");
    let id = registry
        .register("touchpoints.store-value", ours.text())
        .unwrap();
    let doc = json!({"event_id": "s-1", "channel": "store", "type": "store_visit", "occurred_at": "2026-11-20T10:00:00Z"});
    let bytes = framed(id, &doc, ours);
    let formats = input_formats(registry_settings(registry.url()), "store");
    registry.set_outage(true);
    let wanted = formats.unknown_ids([("touchpoints.store", bytes.as_slice())]);
    let e = formats.prepare(&wanted).await.unwrap_err();
    assert!(e.is_retriable(), "{e}");
    assert_eq!(
        formats
            .unknown_ids([("touchpoints.store", bytes.as_slice())])
            .len(),
        1,
        "nothing cached"
    );
    registry.set_outage(false);
    formats.prepare(&wanted).await.unwrap();
    assert_eq!(
        Value::Object(formats.document("touchpoints.store", &bytes).unwrap()),
        doc
    );

    // Without a registry, Avro input is a dead letter that says so.
    let none = input_formats(SchemaRegistrySettings::default(), "store");
    none.prepare(&none.unknown_ids([("touchpoints.store", bytes.as_slice())]))
        .await
        .unwrap();
    assert!(matches!(
        none.document("touchpoints.store", &bytes),
        Err(Rejection::Avro {
            reason: "avro_no_registry",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_avro_command_on_identity_commands_is_the_command_of_its_json_form() {
    let registry = RegistryDouble::start().await.unwrap();
    let ours = catalogue().commands();
    let id = registry
        .register("identity.commands-value", ours.text())
        .unwrap();
    let formats = input_formats(registry_settings(registry.url()), "web");
    // Two engines over the same stories: one is given each command as JSON, the other
    // as Avro, decoded as the runtime does.
    let stories = fuzzy_stories();
    let (mut by_json, mut by_avro) = (common::engine(), common::engine());
    let out = common::feed(&mut by_json, &stories);
    common::feed(&mut by_avro, &stories);
    let customer = out
        .iter()
        .find(|l| l["topic"] == "touchpoints.resolved" && l["value"]["event_id"] == "fz-a2")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let config = EngineConfig::default();
    let sample = framed(id, &json!({"command_id": "c", "kind": "merge"}), ours);
    let wanted = formats.unknown_ids([("identity.commands", sample.as_slice())]);
    assert_eq!(wanted.len(), 1);
    formats.prepare(&wanted).await.unwrap();
    let mut run = |offset: i64, command: Value| -> Vec<OutputRecord> {
        let json_bytes = command.to_string().into_bytes();
        let avro_bytes = framed(id, &command, ours);
        let doc = formats.document("identity.commands", &avro_bytes);
        assert_eq!(
            doc.clone()
                .and_then(|d| unicus::engine::input::command::parse_command_document(&d, &config)),
            unicus::engine::input::command::parse_command(&json_bytes, &config),
            "{command}"
        );
        let input = |bytes| {
            Record::new(bytes, "identity.commands", offset, 1_800_000_000_000)
                .written_at(1_800_000_000_000)
        };
        let from_json = by_json
            .process(InputKind::Command, &input(&json_bytes[..]))
            .unwrap();
        let parsed = by_avro.parse_document(InputKind::Command, doc);
        let from_avro = by_avro.handle(&input(&avro_bytes[..]), parsed).unwrap();
        assert_eq!(from_json.len(), from_avro.len(), "{command}");
        for (a, b) in from_json.iter().zip(&from_avro) {
            assert_eq!((a.topic, &a.key), (b.topic, &b.key));
            match (&a.payload, &b.payload) {
                (Payload::Json(x), Payload::Json(y)) => assert_eq!(normal(x), normal(y)),
                // A dead letter keeps its own bytes; its reason is the same.
                (Payload::Raw(_), Payload::Raw(raw)) => {
                    assert_eq!(raw, &avro_bytes);
                    assert_eq!(a.headers[..2], b.headers[..2]);
                }
                (x, y) => assert_eq!(x, y),
            }
        }
        from_avro
    };
    let split = run(
        0,
        json!({"command_id": "ops-1", "kind": "split", "customer_id": customer,
               "identifier": {"type": "email", "value": "Sophie.Marchant@example.org"},
               "reason": "two people", "requested_at": "2027-01-02T03:04:05Z"}),
    );
    let Payload::Json(record) = &split[0].payload else {
        panic!("{split:?}")
    };
    assert_eq!(
        (record["type"].as_str(), record["at"].as_str()),
        (Some("split"), Some("2027-01-02T03:04:05Z"))
    );
    let new_customer = record["new_customer_id"].as_str().unwrap().to_string();
    let merge = run(
        1,
        json!({"command_id": "ops-2", "kind": "merge", "customer_ids": [customer, new_customer]}),
    );
    assert!(merge
        .iter()
        .any(|r| matches!(&r.payload, Payload::Json(v) if v["splits_lifted"] == 1)));
    // Refused and malformed commands are the same dead letters.
    for (offset, bad, reason) in [
        (
            2,
            json!({"command_id": "ops-3", "kind": "split", "customer_id": "cus_nobody",
                   "identifier": {"type": "email", "value": "a@b.fr"}}),
            "command_refused",
        ),
        (
            3,
            json!({"command_id": "ops-4", "kind": "merge", "customer_ids": [customer]}),
            "bad_value",
        ),
    ] {
        let out = run(offset, bad);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, Topic::Dlq);
        assert_eq!(out[0].headers[1].1, reason, "{:?}", out[0].headers);
    }
    // Not the touchpoint schema: a command on a channel topic does not resolve.
    let wanted = formats.unknown_ids([("touchpoints.web", sample.as_slice())]);
    formats.prepare(&wanted).await.unwrap();
    assert!(matches!(
        formats.document("touchpoints.web", &sample),
        Err(Rejection::Avro {
            reason: "avro_incompatible_schema",
            ..
        })
    ));
}

#[test]
fn the_schemas_directory_passes_the_compatibility_guard_and_a_breaking_change_fails_it() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let report = unicus::kafka::avro::check::check(&dir).unwrap();
    assert!(report.ok(), "{}", report.describe());
    assert_eq!(
        report.verdicts.len(),
        unicus::kafka::avro::schemas::FILES.len()
    );
    // The embedded schemas are the files.
    for f in unicus::kafka::avro::schemas::FILES {
        let on_disk =
            std::fs::read_to_string(dir.join(f.dir).join(format!("{}.avsc", f.name))).unwrap();
        assert_eq!(on_disk, f.text);
    }

    // A copy of schemas/ where profiles.merged gains a required field: caught.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&dir, copy.path());
    let path = copy.path().join("output/profiles.merged.avsc");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "tier", "type": "string", "doc": "a new required field"}));
    std::fs::write(&path, schema.to_string()).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_unicus"))
        .args(["schemas", "check", "--dir"])
        .arg(copy.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(!run.status.success(), "{stdout}");
    assert!(stdout.contains("FAIL output/profiles.merged"), "{stdout}");
    assert!(
        stdout.contains("not backward compatible with v1"),
        "{stdout}"
    );
    // The same field with a default is a compatible change.
    schema["fields"].as_array_mut().unwrap().pop();
    schema["fields"].as_array_mut().unwrap().push(json!({"name": "tier", "type": ["null", "string"], "default": null, "doc": "a new optional field"}));
    std::fs::write(&path, schema.to_string()).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_unicus"))
        .args(["schemas", "check", "--dir"])
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
