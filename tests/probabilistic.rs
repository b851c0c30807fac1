//! Probabilistic (Fellegi–Sunter) scoring, the default of `[engine.matching] scoring`:
//! candidates get the model's probability and the records carry the weight of every
//! field compared. The scenarios of `fuzzy.rs` that do not depend on the rules' scores
//! are gone through here again.

mod common;

use common::{event, feed, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::{ContradictionVeto, EngineConfig, Scoring};
use unicus::engine::Engine;
use unicus::store::Store;

fn probabilistic() -> Engine {
    let config = EngineConfig::default();
    assert_eq!(config.matching.scoring, Scoring::Probabilistic);
    with_veto(ContradictionVeto::Both)
}

fn with_veto(veto: ContradictionVeto) -> Engine {
    let mut config = EngineConfig::default();
    config.matching.contradiction_veto = veto;
    config.validate().unwrap();
    Engine::new(config, Store::temporary().unwrap()).unwrap()
}

fn paris(line1: &str) -> Value {
    json!({"line1": line1, "postal_code": "75002", "city": "Paris", "country": "FR"})
}

fn person_event(id: &str, at: &str, extra: Value) -> String {
    event(id, "store", "store_visit", at, extra)
}

/// A store visit stating a full person living at 12 rue de la Paix, Paris.
fn resident(id: &str, at: &str, first: &str, last: &str, birth: &str) -> String {
    person_event(
        id,
        at,
        json!({"person": {"first_name": first, "last_name": last, "birth_date": birth,
                          "address": paris("12 rue de la Paix")}}),
    )
}

fn changes<'a>(out: &'a [Value], kind: &str) -> Vec<&'a Value> {
    on_topic(out, "identity.changes")
        .into_iter()
        .filter(|c| c["value"]["type"] == kind)
        .collect()
}

#[test]
fn a_typed_variant_links_with_the_weight_of_every_field() {
    let mut e = probabilistic();
    let lines = vec![
        resident(
            "a",
            "2026-11-20T10:00:00Z",
            "Sophie",
            "Dupont",
            "1985-04-12",
        ),
        event(
            "web-0",
            "web",
            "login",
            "2026-11-20T11:00:00Z",
            json!({"identifiers": {"account_id": "CRM-1"}}),
        ),
        // Day and month swapped, a typo in the last name: still her.
        event(
            "web-1",
            "web",
            "account_created",
            "2026-11-21T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-1"},
                   "person": {"first_name": "Sophie", "last_name": "Dupond", "birth_date": "1985-12-04",
                              "address": paris("12 rue de la Paix")}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    let merges = changes(&out, "merge");
    assert_eq!(merges.len(), 1, "{out:#?}");
    let m = &merges[0]["value"];
    assert_eq!(m["rule"], "probabilistic");
    assert!(m["score"].as_f64().unwrap() >= 0.99, "{m}");
    let w = &m["links"][0]["weights"];
    assert_eq!(w["fields"]["birth_date"]["level"], "swapped_day_month");
    assert_eq!(w["fields"]["last_name"]["level"], "one_edit");
    assert_eq!(w["fields"]["first_name"]["level"], "exact");
    let sum: f64 = w["fields"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f["weight"].as_f64().unwrap())
        .sum::<f64>()
        + w["prior"].as_f64().unwrap();
    assert!(
        (sum - w["match_weight"].as_f64().unwrap()).abs() < 0.01,
        "{w}"
    );
    assert_eq!(e.customer_count().unwrap(), 1);
}

#[test]
fn a_household_is_kept_apart_and_a_common_name_alone_is_not_enough() {
    let mut e = probabilistic();
    let lines = vec![
        resident(
            "a",
            "2026-11-20T10:00:00Z",
            "Sophie",
            "Dupont",
            "1985-04-12",
        ),
        // Her husband: same address and last name, another first name and birth date.
        resident("b", "2026-11-20T11:00:00Z", "Jean", "Dupont", "1983-02-03"),
        // Her name, nothing else: many people share it.
        event(
            "c",
            "service",
            "support_ticket",
            "2026-11-21T10:00:00Z",
            json!({"identifiers": {"phone": "0612345678"},
                   "person": {"first_name": "Sophie", "last_name": "Dupont"}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    assert!(changes(&out, "merge").is_empty(), "{out:#?}");
    assert!(changes(&out, "suggestion").is_empty(), "{out:#?}");
    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_ne!(resolved[0]["key"], resolved[1]["key"]);
    assert_ne!(resolved[0]["key"], resolved[2]["key"]);
    let why = e
        .explain_pair(
            resolved[0]["key"].as_str().unwrap(),
            resolved[1]["key"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(why["best_fuzzy_match"]["decision"], "vetoed", "{why:#}");
}

#[test]
fn a_rare_name_weighs_more_than_a_common_one() {
    let mut e = probabilistic();
    let pair = |id: &str, first: &str, last: &str| {
        vec![
            person_event(
                &format!("{id}-1"),
                "2026-11-20T10:00:00Z",
                json!({"person": {"first_name": first, "last_name": last,
                                  "address": paris("12 rue de la Paix")}}),
            ),
            event(
                &format!("{id}-2"),
                "service",
                "support_ticket",
                "2026-11-21T10:00:00Z",
                json!({"identifiers": {"phone": format!("06123456{}", id.len() + 10)},
                       "person": {"first_name": first, "last_name": last,
                                  "address": paris("40 avenue de l'Opéra")}}),
            ),
        ]
    };
    let mut lines = pair("common", "Sophie", "Dupont");
    lines.extend(pair("rare", "Philomène", "Quesnoy-Varennes"));
    let out = feed(&mut e, &lines);
    let scored: Vec<(String, f64)> = on_topic(&out, "identity.changes")
        .iter()
        .chain(on_topic(&out, "touchpoints.resolved").iter())
        .filter_map(|c| {
            let v = &c["value"];
            let id = v["event_id"].as_str()?.to_string();
            let s = v["score"].as_f64().or(v["resolution"]["score"].as_f64())?;
            Some((id, s))
        })
        .collect();
    let score_of = |id: &str| scored.iter().find(|(e, _)| e == id).map(|(_, s)| *s);
    let rare = score_of("rare-2").expect("the rare name is at least suggested");
    assert!(rare >= 0.9, "{scored:?}");
    assert!(score_of("common-2").is_none_or(|s| s < rare), "{scored:?}");
}

#[test]
fn explain_pair_shows_the_weights_and_the_probability_thresholds() {
    let mut e = probabilistic();
    let out = feed(
        &mut e,
        &[
            person_event(
                "a",
                "2026-11-20T10:00:00Z",
                json!({"person": {"first_name": "Sophie", "last_name": "Dupont", "birth_date": "1985-04-12"}}),
            ),
            person_event(
                "b",
                "2026-11-20T11:00:00Z",
                json!({"person": {"first_name": "Sophie", "last_name": "Durand", "birth_date": "1985-04-12"}}),
            ),
        ],
    );
    let r = on_topic(&out, "touchpoints.resolved");
    let (a, b) = (r[0]["key"].as_str().unwrap(), r[1]["key"].as_str().unwrap());
    let why = e.explain_pair(a, b).unwrap();
    let best = &why["best_fuzzy_match"];
    assert_eq!(best["rule"], "probabilistic");
    assert_eq!(best["weights"]["fields"]["last_name"]["level"], "different");
    assert!(
        best["weights"]["fields"]["last_name"]["weight"]
            .as_f64()
            .unwrap()
            < 0.0
    );
    assert_eq!(best["weights"]["fields"]["birth_date"]["level"], "exact");
    let reasons = why["reasons"].to_string();
    assert!(reasons.contains("suggest_probability"), "{reasons}");
}

#[test]
fn a_model_file_that_does_not_load_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    std::fs::write(&path, r#"{"format": "unicus-match-model", "version": 9}"#).unwrap();
    let mut config = EngineConfig::default();
    config.matching.scoring = Scoring::Probabilistic;
    config.matching.model = Some(path.clone());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("model"), "{err}");
    // Under the rules the model is not read.
    config.matching.scoring = Scoring::Rules;
    config.validate().unwrap();
    // A model written by training loads.
    let model = unicus::engine::resolve::model::MatchModel::default_model();
    std::fs::write(&path, model.to_json()).unwrap();
    config.matching.scoring = Scoring::Probabilistic;
    config.validate().unwrap();
}

/// The shipped model is what `train-matching` fits on the data its documentation names
/// (`generate --labelled --customers 5000 --events 50000 --seed 42`), exactly.
/// Takes a minute in a debug build: run with UNICUS_REFIT_MODEL=1.
#[test]
fn the_shipped_model_is_refitted_from_generated_data() {
    if std::env::var_os("UNICUS_REFIT_MODEL").is_none() {
        eprintln!("skipped: set UNICUS_REFIT_MODEL=1");
        return;
    }
    use unicus::sim::generate::{write_jsonl, GenerateOptions};
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut file = std::fs::File::create(&events).unwrap();
    write_jsonl(
        GenerateOptions {
            seed: 42,
            customers: 5000,
            events: 50_000,
            labelled: true,
            ..GenerateOptions::default()
        },
        &mut file,
    )
    .unwrap();
    let out = dir.path().join("model.json");
    unicus::cli::train::train_matching(&unicus::cli::train::TrainCommand {
        input: Some(events),
        store: None,
        out: out.clone(),
        seed: 42,
        random_pairs: 1_000_000,
        config: None,
    })
    .unwrap();
    use unicus::engine::resolve::model::{MatchModel, ModelFile};
    let mut refitted: ModelFile =
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    let shipped = MatchModel::default_model().to_file();
    // Only the name of the events file may differ.
    refitted.training.source = shipped.training.source.clone();
    assert!(
        refitted == shipped,
        "the shipped model is not what training gives now"
    );
}

#[test]
fn a_paper_form_without_identifiers_joins_the_web_account_and_not_the_husband() {
    let mut e = probabilistic();
    let lines = vec![
        person_event(
            "pos-1",
            "2026-11-20T14:03:00+01:00",
            json!({"person": {"first_name": "Sophie", "last_name": "Dupont", "birth_date": "12/04/1985",
                              "address": paris("12, R. de la Paix")}}),
        ),
        event(
            "web-1",
            "web",
            "account_created",
            "2026-11-21T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-1", "email": "sophie.dupont@gmail.com"},
                   "person": {"first_name": "Sofie", "last_name": "Dupond", "birth_date": "1985-04-12",
                              "address": paris("12 rue de la Paix")}}),
        ),
        event(
            "web-2",
            "web",
            "account_created",
            "2026-11-22T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-2", "email": "jean.dupont@gmail.com"},
                   "person": {"first_name": "Jean", "last_name": "Dupont", "birth_date": "1983-02-03",
                              "address": paris("12 rue de la Paix")}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    let r = on_topic(&out, "touchpoints.resolved");
    let web = &r[1]["value"]["resolution"];
    assert_eq!(web["method"], "fuzzy", "{out:#?}");
    assert!(web["score"].as_f64().unwrap() >= 0.99, "{web}");
    assert_eq!(r[1]["key"], r[0]["key"], "one customer: the paper form's");
    assert_ne!(r[2]["key"], r[0]["key"], "her husband is somebody else");
    assert_eq!(r[2]["value"]["resolution"]["method"], "new");
    assert!(changes(&out, "suggestion").is_empty(), "{out:#?}");
    assert_eq!(e.customer_count().unwrap(), 2);
}

#[test]
fn a_fuzzy_link_to_another_unique_identifier_is_refused_and_recorded() {
    // Same name, birth date and address, but two loyalty cards: a unique type.
    let person = json!({"first_name": "Marie", "last_name": "Martin", "birth_date": "1990-01-02",
                        "address": paris("1 rue Montorgueil")});
    let mut e = probabilistic();
    let out = feed(
        &mut e,
        &[
            person_event(
                "a",
                "2026-11-20T10:00:00Z",
                json!({"identifiers": {"loyalty_id": "FID-1"}, "person": person}),
            ),
            person_event(
                "b",
                "2026-11-21T10:00:00Z",
                json!({"identifiers": {"loyalty_id": "FID-2"}, "person": person}),
            ),
        ],
    );
    let c = changes(&out, "conflict");
    assert_eq!(c.len(), 1, "{out:#?}");
    assert_eq!(c[0]["value"]["rule"], "unique_identifier");
    assert_eq!(c[0]["value"]["match_rule"], "probabilistic");
    assert!(c[0]["value"]["weights"]["match_weight"].as_f64().unwrap() > 0.0);
    assert_eq!(e.customer_count().unwrap(), 2);
}

/// Sophie, then a record of her with one field badly wrong (another birth date: not a
/// typo), then her sister-in-law at her address (another first name and birth date).
fn one_contradiction_then_two() -> Vec<String> {
    vec![
        resident(
            "a",
            "2026-11-20T10:00:00Z",
            "Sophie",
            "Dupont",
            "1985-04-12",
        ),
        resident(
            "b",
            "2026-11-20T11:00:00Z",
            "Sophie",
            "Dupont",
            "1958-10-21",
        ),
        resident(
            "c",
            "2026-11-20T12:00:00Z",
            "Claire",
            "Dupont",
            "1990-07-30",
        ),
    ]
}

#[test]
fn the_veto_takes_either_contradiction_both_at_once_or_none() {
    let decisions = |veto| {
        let mut e = with_veto(veto);
        let out = feed(&mut e, &one_contradiction_then_two());
        let r = on_topic(&out, "touchpoints.resolved");
        let key = |i: usize| r[i]["key"].as_str().unwrap().to_string();
        let (a, b, c) = (key(0), key(1), key(2));
        let pair = |x: &str, y: &str| {
            e.explain_pair(x, y).unwrap()["best_fuzzy_match"]["decision"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        (a == b, pair(&a, &b), pair(&a, &c))
    };
    // Either: the other birth date alone refuses her record.
    let (joined, ab, ac) = decisions(ContradictionVeto::Either);
    assert!(!joined);
    assert_eq!((ab.as_str(), ac.as_str()), ("vetoed", "vetoed"));
    // Both (the default): one contradiction is weighed, two at once refuse.
    let (_, ab, ac) = decisions(ContradictionVeto::Both);
    assert_ne!(ab, "vetoed");
    assert_eq!(ac, "vetoed");
    // Off: the weights alone decide, even the sister-in-law is only weighed.
    let (_, ab, ac) = decisions(ContradictionVeto::Off);
    assert_ne!(ab, "vetoed");
    assert_ne!(ac, "vetoed");
}
