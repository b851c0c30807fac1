//! Fuzzy identity resolution under the match rules (`scoring = "rules"`), explanations
//! and reversible merges, each test named after what it protects. The default scoring,
//! probabilistic, has its own tests in `probabilistic.rs`, which also go through the
//! scenarios here that do not depend on the rules' scores.

mod common;

use common::{event, feed, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::{Engine, InputKind, Record};
use unicus::store::Store;

/// An engine scoring fuzzy candidates with the rules and their thresholds.
fn rules_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.matching.scoring = unicus::engine::config::Scoring::Rules;
    config
}

fn engine() -> Engine {
    Engine::new(rules_config(), Store::temporary().unwrap()).unwrap()
}

fn paris(line1: &str) -> Value {
    json!({"line1": line1, "postal_code": "75002", "city": "Paris", "country": "FR"})
}

/// Sophie's paper form in a store (no identifier at all), then her web account typed
/// differently, then Jean Dupont at the same address (her husband).
fn paper_form_and_web_account() -> Vec<String> {
    vec![
        event(
            "pos-1",
            "store",
            "purchase",
            "2026-11-20T14:03:00+01:00",
            json!({
                "person": {"first_name": "Sophie", "last_name": "Dupont", "birth_date": "12/04/1985",
                           "address": paris("12, R. de la Paix")},
                "order": {"order_id": "T-1", "total": 50.0, "currency": "EUR",
                          "items": [{"sku": "A", "quantity": 1, "unit_price": 50.0}]},
                "consent": [{"purpose": "marketing", "channel": "email", "granted": false}],
            }),
        ),
        event(
            "web-1",
            "web",
            "account_created",
            "2026-11-21T10:00:00Z",
            json!({
                "identifiers": {"account_id": "CRM-1", "email": "sophie.dupont@gmail.com"},
                "person": {"first_name": "Sofie", "last_name": "Dupond", "birth_date": "1985-04-12",
                           "address": paris("12 rue de la Paix")},
                "consent": [{"purpose": "marketing", "channel": "email", "granted": true}],
            }),
        ),
        event(
            "web-2",
            "web",
            "account_created",
            "2026-11-21T11:00:00Z",
            json!({
                "identifiers": {"account_id": "CRM-2", "email": "jean.dupont@gmail.com"},
                "person": {"first_name": "Jean", "last_name": "Dupont", "address": paris("12 rue de la Paix")},
            }),
        ),
    ]
}

fn resolved(out: &[Value]) -> Vec<&Value> {
    on_topic(out, "touchpoints.resolved")
}

fn changes<'a>(out: &'a [Value], kind: &str) -> Vec<&'a Value> {
    on_topic(out, "identity.changes")
        .into_iter()
        .filter(|c| c["value"]["type"] == kind)
        .collect()
}

/// Processes `doc` as an input of `kind` read from `topic`, commits, and returns the
/// outputs as replay lines.
fn process(e: &mut Engine, kind: InputKind, topic: &str, doc: Value) -> Vec<Value> {
    let bytes = doc.to_string().into_bytes();
    let out = e
        .process(
            kind,
            &Record::new(&bytes, topic, 0, 1_795_000_000_000).written_at(1_795_000_000_000),
        )
        .unwrap();
    e.commit().unwrap();
    out.iter()
        .map(|r| {
            let mut line = Vec::new();
            r.write_replay_line(&mut line).unwrap();
            serde_json::from_slice(&line).unwrap()
        })
        .collect()
}

fn command(e: &mut Engine, doc: Value) -> Vec<Value> {
    process(e, InputKind::Command, "identity.commands", doc)
}

fn request(e: &mut Engine, doc: Value) -> Vec<Value> {
    process(e, InputKind::Request, "gdpr.requests", doc)
}

#[test]
fn a_paper_form_without_identifiers_joins_the_web_account_by_person_data() {
    let mut e = engine();
    let out = feed(&mut e, &paper_form_and_web_account());
    let r = resolved(&out);
    assert_eq!(r[0]["value"]["resolution"]["method"], "new");
    let web = &r[1]["value"]["resolution"];
    assert_eq!(web["method"], "fuzzy");
    assert_eq!(web["score"].as_f64().unwrap(), 0.971);
    assert_eq!(
        web["matched_on"],
        json!(["birth_date", "first_name", "last_name", "postal_code"])
    );
    assert_eq!(r[1]["key"], r[0]["key"], "one customer: the paper form's");
    // Her husband at the same address is somebody else: Jean is not Jeanne nor Sophie.
    assert_ne!(r[2]["key"], r[0]["key"]);
    assert_eq!(r[2]["value"]["resolution"]["method"], "new");
    assert_eq!(e.customer_count().unwrap(), 2);
    assert!(
        changes(&out, "merge").is_empty(),
        "no merge: the web profile was new"
    );
    let stats = e.stats();
    assert_eq!(
        stats.fuzzy_links.get("name_birth_date_postal_code"),
        Some(&1)
    );
    assert_eq!(stats.fuzzy_searches, 3);
}

#[test]
fn a_fuzzy_link_between_two_known_customers_is_a_merge_with_its_explanation() {
    let mut e = engine();
    let mut lines = paper_form_and_web_account();
    // The web account arrives first, without person data, then a mail-order form that
    // carries only the person: they join by the account's person data only once known.
    lines.swap(0, 1);
    lines.insert(
        0,
        event(
            "web-0",
            "web",
            "login",
            "2026-11-19T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-1"}}),
        ),
    );
    let out = feed(&mut e, &lines);
    // web-0 makes CRM-1's customer; pos-1 (paper form) is a stranger until web-1 states
    // the person data of CRM-1 and finds it.
    let r = resolved(&out);
    let web_customer = r[0]["key"].clone();
    assert_eq!(r[1]["key"], web_customer);
    let merges = changes(&out, "merge");
    assert_eq!(merges.len(), 0, "pos-1 comes after web-1 here: {merges:?}");
    assert_eq!(r[2]["key"], web_customer);
    assert_eq!(r[2]["value"]["resolution"]["method"], "fuzzy");

    // Now the other order: the paper form first, the account without person data, then
    // the account states it: two customers merge, the paper form's (older) survives.
    let mut e = engine();
    let lines = vec![
        paper_form_and_web_account()[0].clone(),
        event(
            "web-0",
            "web",
            "login",
            "2026-11-20T16:00:00Z",
            json!({"identifiers": {"account_id": "CRM-1"}}),
        ),
        paper_form_and_web_account()[1].clone(),
    ];
    let out = feed(&mut e, &lines);
    let r = resolved(&out);
    let merges = changes(&out, "merge");
    assert_eq!(merges.len(), 1);
    let m = &merges[0]["value"];
    assert_eq!(m["customer_id"], r[0]["key"]);
    assert_eq!(m["merged_ids"], json!([r[1]["key"]]));
    assert_eq!(m["rule"], "name_birth_date_postal_code");
    assert_eq!(m["score"].as_f64().unwrap(), 0.971);
    assert_eq!(m["fields"]["first_name"].as_f64().unwrap(), 0.95);
    assert_eq!(m["links"][0]["source_profile"], 1);
    assert_eq!(r[2]["value"]["resolution"]["method"], "deterministic");

    let customer = r[0]["key"].as_str().unwrap();
    let why = e.explain(customer).unwrap().unwrap();
    assert_eq!(why["customer_id"], customer);
    let sps = why["source_profiles"].as_array().unwrap();
    assert_eq!(sps.len(), 2);
    assert_eq!(sps[0]["joined"]["method"], "new");
    assert_eq!(
        sps[1]["joined"]["method"], "new",
        "CRM-1 was a customer of its own"
    );
    assert_eq!(
        sps[1]["via_merges"][0]["link"]["rule"],
        "name_birth_date_postal_code"
    );
    assert_eq!(sps[1]["via_merges"][0]["link"]["event_id"], "web-1");
    // The merged-away id still explains, through its alias.
    let merged = r[1]["key"].as_str().unwrap();
    assert_eq!(e.explain(merged).unwrap().unwrap()["customer_id"], customer);
    let pair = e.explain_pair(customer, merged).unwrap();
    assert_eq!(pair["same_customer"], true);
    assert_eq!(pair["merges"][0]["link"]["method"], "fuzzy");
}

#[test]
fn between_the_thresholds_is_a_suggestion_and_no_merge() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            event(
                "a",
                "store",
                "store_visit",
                "2026-11-20T10:00:00Z",
                json!({"person": {"first_name": "Sophie", "last_name": "Dupont", "address": paris("12 rue de la Paix")}}),
            ),
            event(
                "b",
                "marketplace",
                "purchase",
                "2026-11-21T10:00:00Z",
                json!({"identifiers": {"marketplace_buyer_id": "mkp:A1"},
                       "person": {"first_name": "Sophie", "last_name": "Dupont", "address": paris("3 avenue Foch")}}),
            ),
        ],
    );
    let s = changes(&out, "suggestion");
    assert_eq!(s.len(), 1);
    let v = &s[0]["value"];
    assert_eq!(v["rule"], "name_postal_code");
    assert_eq!(v["fields"]["street"].as_f64().unwrap(), 0.0);
    assert_eq!(v["other_customer_id"], resolved(&out)[0]["key"]);
    assert_eq!(e.customer_count().unwrap(), 2);
    assert_eq!(e.stats().suggestions.get("name_postal_code"), Some(&1));
}

#[test]
fn guardrails_still_apply_to_fuzzy_links() {
    // Same name, birth date and postal code, but two loyalty cards: a unique type.
    let person = json!({"first_name": "Marie", "last_name": "Martin", "birth_date": "1990-01-02",
                        "address": paris("1 rue Montorgueil")});
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            event(
                "a",
                "store",
                "store_visit",
                "2026-11-20T10:00:00Z",
                json!({"identifiers": {"loyalty_id": "FID-1"}, "person": person}),
            ),
            event(
                "b",
                "store",
                "store_visit",
                "2026-11-21T10:00:00Z",
                json!({"identifiers": {"loyalty_id": "FID-2"}, "person": person}),
            ),
        ],
    );
    let c = changes(&out, "conflict");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["value"]["rule"], "unique_identifier");
    assert_eq!(c[0]["value"]["match_rule"], "name_birth_date_postal_code");
    assert_eq!(e.customer_count().unwrap(), 2);
}

#[test]
fn a_blocking_key_shared_by_more_than_the_cap_turns_generic_and_is_counted() {
    let mut config = rules_config();
    config.matching.max_candidates = 3;
    let mut e = Engine::new(config, Store::temporary().unwrap()).unwrap();
    // Five different Martins born the same day at the same address: the birth-date and
    // address blocks overflow.
    let names = ["Paul", "Luc", "Anne", "Rose", "Hugo"];
    let lines: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            event(
                &format!("e{i}"),
                "store",
                "store_visit",
                "2026-11-20T10:00:00Z",
                json!({"person": {"first_name": n, "last_name": "Martin", "birth_date": "1990-01-02",
                                  "address": paris("1 rue Montorgueil")}}),
            )
        })
        .collect();
    feed(&mut e, &lines);
    assert!(e.stats().generic_blocks >= 1, "{:?}", e.stats());
    assert_eq!(e.customer_count().unwrap(), 5);
    assert!(e.stats().fuzzy_candidates <= 3 * 5);
}

#[test]
fn split_then_the_same_evidence_again_does_not_merge_them_back() {
    let mut e = engine();
    let out = feed(&mut e, &paper_form_and_web_account());
    let customer = resolved(&out)[0]["key"].as_str().unwrap().to_string();
    let split = command(
        &mut e,
        json!({"command_id": "ops-1", "kind": "split", "customer_id": customer,
               "identifier": {"type": "email", "value": "Sophie.Dupont@gmail.com"},
               "reason": "not the same person"}),
    );
    let record = &split
        .iter()
        .find(|r| r["value"]["type"] == "split")
        .unwrap()["value"];
    assert_eq!(record["customer_id"], customer);
    assert_eq!(record["source_profiles"], 1);
    assert_eq!(record["reason"], "not the same person");
    let new_customer = record["new_customer_id"].as_str().unwrap().to_string();
    // Both golden records, recomputed from their own source profiles.
    let profiles = on_topic(&split, "profiles.merged");
    assert_eq!(profiles.len(), 2);
    assert_eq!(e.customer_count().unwrap(), 3);
    let kept = e.golden_record(&customer).unwrap().unwrap();
    let moved = e.golden_record(&new_customer).unwrap().unwrap();
    assert_eq!(kept["source_profiles"], 1);
    assert_eq!(
        moved["identifiers"]["email"],
        json!(["sophie.dupont@gmail.com"])
    );
    assert!(kept["identifiers"].get("email").is_none(), "{kept}");
    assert_eq!(
        kept["rfm"]["frequency"], 1,
        "the purchase stays with the store form"
    );
    // Consents: each side keeps what its own source profiles stated.
    let consent: Vec<&Value> = on_topic(&split, "consent.changes");
    assert!(
        consent.iter().all(|c| c["value"]["cause"] == "split"),
        "{consent:?}"
    );
    assert!(consent.iter().any(|c| c["key"] == new_customer.as_str()
        && c["value"]["granted"] == true
        && c["value"]["purpose"] == "marketing"));
    // The store form's "no" to marketing e-mails is the kept side's again.
    assert!(consent.iter().any(|c| c["key"] == customer.as_str()
        && c["value"]["granted"] == false
        && c["value"]["previous"] == true
        && c["value"]["source_channel"] == "store"));
    assert_eq!(
        kept["consents"]["marketing"]["email"]["granted"], false,
        "{kept}"
    );
    assert_eq!(moved["consents"]["marketing"]["email"]["granted"], true);

    // The same evidence again, under new event ids: no merge, a never_link conflict.
    let again: Vec<String> = paper_form_and_web_account()
        .iter()
        .take(2)
        .map(|l| {
            l.replace("\"pos-1\"", "\"pos-1b\"")
                .replace("\"web-1\"", "\"web-1b\"")
        })
        .map(|l| {
            let mut v: Value = serde_json::from_str(&l).unwrap();
            v["occurred_at"] = json!("2026-11-25T10:00:00Z");
            v.to_string()
        })
        .collect();
    let out = feed(&mut e, &again);
    assert!(changes(&out, "merge").is_empty(), "{out:?}");
    let never: Vec<&Value> = changes(&out, "conflict")
        .into_iter()
        .filter(|c| c["value"]["rule"] == "never_link")
        .collect();
    assert!(!never.is_empty(), "{out:?}");
    assert_eq!(e.customer_count().unwrap(), 3);
    let why = e.explain_pair(&customer, &new_customer).unwrap();
    assert_eq!(why["same_customer"], false);
    assert!(why["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().contains("split")));

    // Until an explicit merge command, which lifts the split.
    let merged = command(
        &mut e,
        json!({"command_id": "ops-2", "kind": "merge", "customer_ids": [customer, new_customer]}),
    );
    let m = &merged
        .iter()
        .find(|r| r["value"]["type"] == "merge")
        .unwrap()["value"];
    assert_eq!(m["rule"], "command");
    assert_eq!(m["splits_lifted"], 1);
    assert_eq!(e.customer_count().unwrap(), 2);
    let pair = e.explain_pair(&customer, &new_customer).unwrap();
    assert_eq!(pair["same_customer"], true);
    // A command id is done once.
    assert!(command(
        &mut e,
        json!({"command_id": "ops-2", "kind": "merge", "customer_ids": [customer, new_customer]}),
    )
    .is_empty());
}

#[test]
fn commands_that_cannot_be_carried_out_are_dead_letters_with_a_reason() {
    let mut e = engine();
    let out = feed(&mut e, &paper_form_and_web_account());
    let customer = resolved(&out)[0]["key"].as_str().unwrap().to_string();
    let reason = |out: &[Value]| -> String {
        let dlq = on_topic(out, "touchpoints.dlq");
        assert_eq!(dlq.len(), 1, "{out:?}");
        dlq[0]["value"]
            .as_str()
            .map(String::from)
            .unwrap_or_default()
    };
    let cases = [
        json!({"command_id": "c1", "kind": "split", "customer_id": "cus_nobody",
               "identifier": {"type": "email", "value": "a@b.fr"}}),
        json!({"command_id": "c2", "kind": "split", "customer_id": customer,
               "identifier": {"type": "email", "value": "other@b.fr"}}),
        json!({"command_id": "c3", "kind": "split", "customer_id": customer}),
    ];
    for c in cases {
        let out = command(&mut e, c.clone());
        assert!(!reason(&out).is_empty());
    }
    assert_eq!(e.stats().rejected.get("command_refused"), Some(&2));
    assert_eq!(e.stats().rejected.get("missing_field"), Some(&1));
    assert_eq!(e.customer_count().unwrap(), 2, "nothing changed");
}

#[test]
fn explain_output_is_stable() {
    let lines = paper_form_and_web_account();
    let run = || {
        let mut e = engine();
        let out = feed(&mut e, &lines);
        let a = resolved(&out)[0]["key"].as_str().unwrap().to_string();
        let b = resolved(&out)[2]["key"].as_str().unwrap().to_string();
        (
            serde_json::to_string_pretty(&e.explain(&a).unwrap().unwrap()).unwrap(),
            serde_json::to_string_pretty(&e.explain_pair(&a, &b).unwrap()).unwrap(),
        )
    };
    let first = run();
    assert_eq!(
        first,
        run(),
        "two fresh replays explain alike, byte for byte"
    );
    assert!(first
        .0
        .contains("\"rule\": \"name_birth_date_postal_code\""));
    assert!(first.1.contains("a veto"), "{}", first.1);
}

#[test]
fn match_rule_mistakes_are_reported_clearly_at_start() {
    let try_config = |toml: &str| -> String {
        let config: EngineConfig = match toml::from_str(toml) {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        match Engine::new(config, Store::temporary().unwrap()) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let unknown = try_config(
        "[[matching.rules]]\nname = \"r\"\nrequire = { last_name = 0.9, shoe_size = 1.0 }\n",
    );
    assert!(
        unknown.contains("rule `r`") && unknown.contains("shoe_size"),
        "{unknown}"
    );
    assert!(unknown.contains("first_name, last_name"), "{unknown}");
    let no_name = try_config(
        "[[matching.rules]]\nname = \"r\"\nrequire = { birth_date = 1.0, postal_code = 1.0 }\n",
    );
    assert!(no_name.contains("must compare a name"), "{no_name}");
    let range = try_config(
        "[[matching.rules]]\nname = \"r\"\nrequire = { last_name = 1.5, birth_date = 1.0 }\n",
    );
    assert!(range.contains("1.5"), "{range}");
    let thresholds = try_config("[matching]\nlink_threshold = 0.7\nsuggest_threshold = 0.8\n");
    assert!(thresholds.contains("suggest_threshold"), "{thresholds}");
    let typo = try_config("[matching]\nlink_treshold = 0.9\n");
    assert!(typo.contains("link_treshold"), "{typo}");
    let dup = try_config(
        "[[matching.rules]]\nname = \"r\"\nrequire = { last_name = 0.9, birth_date = 1.0 }\n\
         [[matching.rules]]\nname = \"r\"\nrequire = { last_name = 0.9, first_name = 1.0 }\n",
    );
    assert!(dup.contains("two rules"), "{dup}");
    assert_eq!(
        try_config(
            "[[matching.rules]]\nname = \"r\"\nrequire = { last_name = 0.9, birth_date = 1.0 }\n"
        ),
        ""
    );
}

#[test]
fn erasure_forgets_blocking_keys_and_provenance() {
    let mut e = engine();
    let out = feed(&mut e, &paper_form_and_web_account());
    let customer = resolved(&out)[0]["key"].as_str().unwrap().to_string();
    let blocks = |e: &unicus::engine::Engine| -> Vec<(Vec<u8>, Vec<u8>)> {
        e.store()
            .audit_scan()
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(b"r/bk/"))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    };
    let before = blocks(&e);
    // Keys are digests: no name or birth date in them.
    assert!(
        before.iter().all(|(k, _)| k.len() == "r/bk/".len() + 8),
        "{before:?}"
    );
    let out = request(
        &mut e,
        json!({"request_id": "r1", "kind": "erase", "customer_id": customer}),
    );
    let receipts = on_topic(&out, "gdpr.receipts");
    let v = &receipts[0]["value"];
    let erased = v["erased"]["blocking_keys"].as_u64().unwrap();
    assert!(erased >= 4, "{erased} {v}");
    // Sophie's blocks are gone (or no longer name her source profiles); Jean's are left.
    let after = blocks(&e);
    assert!(!after.is_empty(), "{after:?}");
    assert!(after.len() < before.len(), "{before:?} {after:?}");
    assert!(
        after
            .iter()
            .all(|(k, _)| before.iter().any(|(b, _)| b == k)),
        "{before:?} {after:?}"
    );
    // Nothing of her birth date is anywhere in the store.
    assert!(e
        .store()
        .audit_scan()
        .unwrap()
        .iter()
        .all(|(k, v)| !String::from_utf8_lossy(k).contains("1985-04-12")
            && !String::from_utf8_lossy(v).contains("1985-04-12")));
}

#[test]
fn erasing_the_side_a_split_made_leaves_its_identifier_nowhere() {
    let mut e = engine();
    let out = feed(&mut e, &paper_form_and_web_account());
    let customer = resolved(&out)[0]["key"].as_str().unwrap().to_string();
    let split = command(
        &mut e,
        json!({"command_id": "ops-1", "kind": "split", "customer_id": customer,
               "identifier": {"type": "email", "value": "sophie.dupont@gmail.com"}}),
    );
    let new_customer = split
        .iter()
        .find(|r| r["value"]["type"] == "split")
        .unwrap()["value"]["new_customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    request(
        &mut e,
        json!({"request_id": "r1", "kind": "erase", "customer_id": new_customer}),
    );
    for (k, v) in e.store().audit_scan().unwrap() {
        for needle in [&b"sophie.dupont@gmail.com"[..], b"CRM-1"] {
            assert!(
                !k.windows(needle.len()).any(|w| w == needle)
                    && !v.windows(needle.len()).any(|w| w == needle),
                "{} still holds {}",
                String::from_utf8_lossy(&k),
                String::from_utf8_lossy(needle)
            );
        }
    }
    // The kept side still explains its history: a split, its type, no value.
    let why = e.explain(&customer).unwrap().unwrap();
    let history = why["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["kind"], "split");
    assert_eq!(
        history.last().unwrap()["link"]["matched_on"],
        json!(["email"])
    );
    assert_eq!(history.last().unwrap()["identifiers"], json!([]));
}
