//! Replay scenarios of deterministic resolution, each named after what it protects.

mod common;

use common::{engine, event, feed, feed_at, on_topic, NOW};
use serde_json::{json, Value};

fn sophie_story() -> Vec<String> {
    vec![
        // A paper form digitised at the store: loyalty card, phone, purchase.
        event(
            "pos-paris11-000042",
            "store",
            "purchase",
            "2026-11-20T14:03:00+01:00",
            json!({
                "source": "pos-paris-11",
                "identifiers": {"loyalty_id": "FID-99812", "phone": "06 12 34 56 78"},
                "person": {"first_name": "Sophie", "last_name": "Dupont",
                    "address": {"line1": "12 rue de la Paix", "postal_code": "75002", "city": "Paris", "country": "FR"}},
                "order": {"order_id": "T-881", "total": 129.90, "currency": "EUR",
                    "items": [{"sku": "CLIMB-42", "name": "Chaussons d'escalade", "quantity": 1, "unit_price": 129.90}]}
            }),
        ),
        // A web account: a stranger so far.
        event(
            "web-000001",
            "web",
            "account_created",
            "2026-11-20T18:30:00+01:00",
            json!({
                "identifiers": {"account_id": "CRM-000123", "email": " sophie.dupont@gmail.com ", "cookie_id": "c-77ab"},
                "person": {"first_name": "Sophie", "last_name": "DUPONT"}
            }),
        ),
        // A Twitter interaction: a third stranger.
        event(
            "soc-000001",
            "social",
            "social_interaction",
            "2026-11-21T09:00:00Z",
            json!({"identifiers": {"social_handle": "twitter:@Sophie_D"},
                   "person": {"first_name": "Sophie", "last_name": "Dupont"}}),
        ),
        // A direct message giving her phone in international form: links Twitter and store.
        event(
            "soc-000002",
            "social",
            "social_interaction",
            "2026-11-21T09:05:00Z",
            json!({"identifiers": {"social_handle": "twitter:@sophie_d", "phone": "+33 6 12 34 56 78"}}),
        ),
        // Back at the store she gives her email: links the web account.
        event(
            "pos-paris11-000057",
            "store",
            "store_visit",
            "2026-11-22T11:00:00+01:00",
            json!({"identifiers": {"loyalty_id": "FID-99812", "email": "Sophie.Dupont@Gmail.com"}}),
        ),
    ]
}

#[test]
fn sophie_dupont_three_strangers_become_one_customer() {
    let mut e = engine();
    let out = feed(&mut e, &sophie_story());

    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_eq!(resolved.len(), 5);
    let methods: Vec<&str> = resolved
        .iter()
        .map(|r| r["value"]["resolution"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["new", "new", "new", "deterministic", "deterministic"]
    );
    let store_customer = resolved[0]["key"].as_str().unwrap();
    for r in &resolved[3..] {
        assert_eq!(r["key"], store_customer, "the oldest customer survives");
    }

    let merges = on_topic(&out, "identity.changes");
    assert_eq!(merges.len(), 2);
    assert_eq!(merges[0]["value"]["type"], "merge");
    assert_eq!(merges[0]["value"]["customer_id"], store_customer);
    assert_eq!(
        merges[0]["value"]["merged_ids"],
        json!([resolved[2]["key"]])
    );
    assert_eq!(merges[0]["value"]["matched_on"], json!(["phone"]));
    assert_eq!(
        merges[0]["value"]["identifiers"],
        json!([{"type": "phone", "value": "+33612345678"}])
    );
    assert_eq!(merges[0]["value"]["event_id"], "soc-000002");
    assert_eq!(
        merges[1]["value"]["merged_ids"],
        json!([resolved[1]["key"]])
    );
    assert_eq!(merges[1]["value"]["matched_on"], json!(["email"]));

    // Merged-away ids get tombstones on the compacted topic.
    let tombstones: Vec<&Value> = on_topic(&out, "profiles.merged")
        .into_iter()
        .filter(|r| r["value"].is_null())
        .collect();
    assert_eq!(tombstones.len(), 2);
    assert_eq!(e.customer_count().unwrap(), 1);

    let golden = e.golden_record(store_customer).unwrap().unwrap();
    assert_eq!(
        golden["identifiers"],
        json!({
            "account_id": ["CRM-000123"],
            "cookie_id": ["c-77ab"],
            "email": ["sophie.dupont@gmail.com"],
            "loyalty_id": ["FID-99812"],
            "phone": ["+33612345678"],
            "social_handle": ["twitter:sophie_d"],
        })
    );
    // Most recent non-empty wins: the web account wrote "DUPONT" later than the store
    // form, then Twitter wrote "Dupont" later still.
    assert_eq!(golden["person"]["last_name"]["value"], "Dupont");
    assert_eq!(golden["person"]["last_name"]["source"], "social");
    assert_eq!(golden["person"]["address"]["value"]["postal_code"], "75002");
    assert_eq!(golden["person"]["address"]["source"], "store");
    assert_eq!(golden["orders"]["count"], 1);
    assert_eq!(golden["orders"]["totals"]["EUR"], 129.9);
    assert_eq!(golden["orders"]["last_order_id"], "T-881");
    assert_eq!(golden["rfm"]["frequency"], 1);
    assert_eq!(golden["rfm"]["recency_days"], 1);
    assert_eq!(golden["lifecycle_stage"], "active");
    assert_eq!(golden["source_profiles"], 3);
    assert_eq!(
        golden["channels"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["social", "store", "web"]
    );
    assert_eq!(golden["channels"]["store"]["events"], 2);
}

/// The whole output of the Sophie Dupont story, line for line, as reviewed by hand in
/// `tests/scenarios/sophie.expected.jsonl`. Set `UNICUS_BLESS=1` to rewrite it after an
/// intended change, then review the diff.
#[test]
fn sophie_dupont_output_is_exactly_the_reviewed_one() {
    let mut e = engine();
    let out = feed(&mut e, &sophie_story());
    let text: String = out.iter().map(|v| format!("{v}\n")).collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scenarios/sophie.expected.jsonl"
    );
    if std::env::var_os("UNICUS_BLESS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(path).unwrap();
    for (i, (got, want)) in text.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "output line {}", i + 1);
    }
    assert_eq!(text.lines().count(), expected.lines().count());
}

#[test]
fn shared_family_email_with_two_accounts_stays_two_customers() {
    let mut e = engine();
    let lines = vec![
        event(
            "w1",
            "web",
            "account_created",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-1", "email": "famille.martin@orange.fr"},
                   "person": {"first_name": "Paul", "last_name": "Martin"}}),
        ),
        event(
            "a1",
            "app",
            "account_created",
            "2026-11-02T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-2", "email": "Famille.Martin@orange.fr"},
                   "person": {"first_name": "Julie", "last_name": "Martin"}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    assert_eq!(e.customer_count().unwrap(), 2);
    let changes = on_topic(&out, "identity.changes");
    assert_eq!(changes.len(), 1, "{changes:?}");
    let conflict = &changes[0]["value"];
    assert_eq!(conflict["type"], "conflict");
    assert_eq!(conflict["rule"], "unique_identifier");
    assert_eq!(conflict["identifier_type"], "account_id");
    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_ne!(resolved[0]["key"], resolved[1]["key"]);
    assert_eq!(conflict["other_customer_id"], resolved[0]["key"]);
    assert_eq!(e.stats().conflicts, 1);
    assert_eq!(e.stats().merges, 0);
}

#[test]
fn household_phone_does_not_fuse_two_people() {
    let mut e = engine();
    let lines = vec![
        event(
            "s1",
            "store",
            "purchase",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"phone": "01 43 57 89 12", "loyalty_id": "FID-1"},
                   "person": {"first_name": "Marie", "last_name": "Leroy", "birth_date": "1962-03-01"}}),
        ),
        event(
            "s2",
            "service",
            "support_ticket",
            "2026-11-02T10:00:00Z",
            json!({"identifiers": {"phone": "+33143578912", "email": "lea.leroy@free.fr"},
                   "person": {"first_name": "Léa", "last_name": "Leroy"}}),
        ),
        // Same first name, no birth date: weak evidence is enough.
        event(
            "s3",
            "crm",
            "form_submit",
            "2026-11-03T10:00:00Z",
            json!({"identifiers": {"phone": "0143578912"},
                   "person": {"first_name": "MARIE", "last_name": "Leroy"}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_ne!(resolved[0]["key"], resolved[1]["key"]);
    assert_eq!(resolved[2]["key"], resolved[0]["key"]);
    let changes = on_topic(&out, "identity.changes");
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["value"]["rule"], "weak_identifier_contradiction");
    assert_eq!(changes[0]["value"]["identifier_type"], "phone");
    // The third event carries the phone of both: it joins Marie and refuses Léa.
    assert_eq!(changes[1]["value"]["type"], "conflict");
    assert_eq!(changes[1]["value"]["other_customer_id"], resolved[1]["key"]);
    assert_eq!(e.customer_count().unwrap(), 2);
}

#[test]
fn junk_values_never_link() {
    let mut e = engine();
    let lines: Vec<String> = ["Alice", "Bruno", "Chloé"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            event(&format!("j{i}"), "web", "form_submit", "2026-11-01T10:00:00Z",
                json!({"identifiers": {"email": "TEST@test.com", "phone": "0000000000",
                                       "account_id": "n/a", "cookie_id": "undefined", "device_id": "x"},
                       "person": {"first_name": name}}))
        })
        .collect();
    let out = feed(&mut e, &lines);
    assert_eq!(e.customer_count().unwrap(), 3);
    assert!(on_topic(&out, "identity.changes").is_empty());
    assert_eq!(e.stats().junk_values, 15);
    for r in on_topic(&out, "touchpoints.resolved") {
        assert_eq!(r["value"]["resolution"]["method"], "new");
    }
}

#[test]
fn a_value_shared_by_many_people_becomes_generic_and_stops_linking() {
    let mut e = engine();
    // The shop's own phone typed for every walk-in customer.
    let names = [
        "Alice", "Bruno", "Chloé", "David", "Emma", "Farid", "Gaëlle",
    ];
    let lines: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            event(&format!("walk-in-{i}"), "store", "purchase", "2026-11-01T10:00:00Z",
                json!({"identifiers": {"phone": "01 43 57 89 12", "email": format!("client{i}@mail.fr")},
                       "person": {"first_name": name, "last_name": format!("Nom{i}")}}))
        })
        .collect();
    let out = feed(&mut e, &lines);
    assert_eq!(e.customer_count().unwrap(), 7);
    let changes: Vec<&Value> = on_topic(&out, "identity.changes")
        .iter()
        .map(|r| &r["value"])
        .collect();
    let kinds: Vec<&str> = changes
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    // People 2 to 5 are refused on the weak phone, each against every earlier one
    // (1 + 2 + 3 + 4 conflicts); the 6th makes it generic; the 7th is not compared.
    assert_eq!(kinds.len(), 11);
    assert!(kinds[..10].iter().all(|k| *k == "conflict"));
    assert_eq!(kinds[10], "generic_value");
    assert_eq!(
        changes[10]["identifier"],
        json!({"type": "phone", "value": "+33143578912"})
    );
    assert_eq!(changes[10]["event_id"], "walk-in-5");
    assert_eq!(e.stats().generic_values, 1);
    assert_eq!(e.stats().generic_skipped, 2);
}

#[test]
fn a_strong_identifier_links_a_nickname_but_not_clearly_another_person() {
    // Email is not weak: a nickname with the same birth date does not stop the link...
    let mut e = engine();
    let lines = vec![
        event(
            "1",
            "web",
            "login",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"email": "j.bernard@sfr.fr"},
                   "person": {"first_name": "Jean-Baptiste", "birth_date": "1980-05-05"}}),
        ),
        event(
            "2",
            "email",
            "email_click",
            "2026-11-01T11:00:00Z",
            json!({"identifiers": {"email": "J.Bernard@SFR.fr"},
                   "person": {"first_name": "Titou", "birth_date": "1980-05-05"}}),
        ),
        // ...but a family e-mail used by another first name and no equal birth date does.
        event(
            "3",
            "store",
            "purchase",
            "2026-11-02T11:00:00Z",
            json!({"identifiers": {"email": "j.bernard@sfr.fr"}, "person": {"first_name": "Josiane"}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_eq!(resolved[0]["key"], resolved[1]["key"]);
    assert_eq!(
        resolved[1]["value"]["resolution"]["matched_on"],
        json!(["email"])
    );
    assert_ne!(resolved[2]["key"], resolved[0]["key"]);
    let conflicts = on_topic(&out, "identity.changes");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0]["value"]["rule"], "identifier_contradiction");
    assert_eq!(conflicts[0]["value"]["identifier_type"], "email");
}

#[test]
fn duplicate_delivery_changes_nothing_and_counts_nothing() {
    let story = sophie_story();
    let mut once = engine();
    feed(&mut once, &story);
    let mut twice = engine();
    let mut doubled = story.clone();
    doubled.extend(story.iter().cloned());
    doubled.insert(2, story[0].clone());
    let out = feed(&mut twice, &doubled);
    assert_eq!(on_topic(&out, "touchpoints.resolved").len(), 5);
    assert_eq!(twice.stats().duplicates, 6);
    assert_eq!(
        once.golden_records().unwrap(),
        twice.golden_records().unwrap()
    );
    let g = &twice.golden_records().unwrap()[0];
    assert_eq!(g["orders"]["count"], 1);
    assert_eq!(g["channels"]["store"]["events"], 2);
}

/// An event's id is remembered `limits.seen_events_days` (30) full days after the day
/// it was received: a copy within them changes nothing; after, the mark is pruned (by
/// the next event) and a copy counts again. 0 keeps every mark.
#[test]
fn seen_marks_are_forgotten_after_their_horizon() {
    const DAY: i64 = 86_400_000;
    let story = sophie_story();
    let first = story[0].clone();
    for (days, expected_pruned) in [(30, true), (0, false)] {
        let mut config = unicus::engine::config::EngineConfig::default();
        config.limits.seen_events_days = days;
        let mut e = unicus::engine::Engine::new(config, unicus::store::Store::temporary().unwrap())
            .unwrap();
        feed_at(&mut e, &story, NOW);
        let marks = |e: &unicus::engine::Engine| e.store().scan_prefix(b"e/seen/").unwrap().len();
        assert_eq!(marks(&e), story.len());
        // A copy 30 days later is a duplicate; nothing is pruned yet.
        let out = feed_at(&mut e, std::slice::from_ref(&first), NOW + 30 * DAY);
        assert!(on_topic(&out, "touchpoints.resolved").is_empty());
        assert_eq!(e.stats().duplicates, 1);
        assert_eq!(e.stats().seen_marks_pruned, 0);
        // The next day: the story's marks go, and the copy is processed again.
        let out = feed_at(&mut e, std::slice::from_ref(&first), NOW + 31 * DAY);
        if expected_pruned {
            assert_eq!(e.stats().seen_marks_pruned, story.len() as u64);
            assert_eq!(on_topic(&out, "touchpoints.resolved").len(), 1);
            assert_eq!(e.stats().duplicates, 1);
            // Only the copy's mark is left, with its own day.
            assert_eq!(marks(&e), 1);
        } else {
            assert_eq!(e.stats().seen_marks_pruned, 0);
            assert!(on_topic(&out, "touchpoints.resolved").is_empty());
            assert_eq!(e.stats().duplicates, 2);
            assert_eq!(marks(&e), story.len());
        }
    }
}

/// The sweep that forgets old marks reads 2,000 of them per input: 4,500 marks go over
/// the three inputs that follow, and a mark of the current day stays.
#[test]
fn the_sweep_of_seen_marks_goes_over_the_inputs_that_follow() {
    const DAY: i64 = 86_400_000;
    let mut e = engine();
    let views: Vec<String> = (0..4_500)
        .map(|i| common::elsewhere(&format!("old-{i:05}"), "2029-12-31T10:00:00Z"))
        .collect();
    feed_at(&mut e, &views, NOW);
    let later = |i: usize| common::elsewhere(&format!("new-{i}"), "2030-02-01T10:00:00Z");
    let mut pruned = Vec::new();
    for i in 0..4 {
        feed_at(&mut e, &[later(i)], NOW + 31 * DAY);
        pruned.push(e.stats().seen_marks_pruned);
    }
    assert_eq!(pruned, [2_000, 4_000, 4_500, 4_500]);
    assert_eq!(e.store().scan_prefix(b"e/seen/").unwrap().len(), 4);
}

#[test]
fn out_of_order_events_keep_the_most_recent_values() {
    let late = event(
        "b",
        "crm",
        "account_updated",
        "2026-11-10T10:00:00Z",
        json!({"identifiers": {"account_id": "CRM-9"},
               "person": {"first_name": "Hélène", "address": {"line1": "3 av. Foch", "postal_code": "69006", "city": "Lyon"}}}),
    );
    let early = event(
        "a",
        "web",
        "login",
        "2026-11-01T10:00:00Z",
        json!({"identifiers": {"account_id": "CRM-9"},
               "person": {"first_name": "Helene", "address": {"line1": "1 rue Neuve", "postal_code": "75001", "city": "Paris"}}}),
    );
    let purchase_late = event(
        "p2",
        "web",
        "purchase",
        "2026-11-09T10:00:00Z",
        json!({"identifiers": {"account_id": "CRM-9"}, "order": {"order_id": "O-2", "total": 10}}),
    );
    let purchase_early = event(
        "p1",
        "store",
        "purchase",
        "2026-10-01T10:00:00Z",
        json!({"identifiers": {"account_id": "CRM-9"}, "order": {"order_id": "O-1", "total": 5.5}}),
    );
    let mut in_order = engine();
    feed(
        &mut in_order,
        &[
            early.clone(),
            purchase_early.clone(),
            purchase_late.clone(),
            late.clone(),
        ],
    );
    let mut shuffled = engine();
    feed(&mut shuffled, &[late, purchase_late, early, purchase_early]);
    let mut a = in_order.golden_records().unwrap();
    let mut b = shuffled.golden_records().unwrap();
    // The customer id comes from the first event processed; everything else is equal.
    a[0]["customer_id"] = Value::Null;
    b[0]["customer_id"] = Value::Null;
    assert_eq!(a, b);
    assert_eq!(b[0]["person"]["first_name"]["value"], "Hélène");
    assert_eq!(b[0]["person"]["address"]["value"]["city"], "Lyon");
    assert_eq!(b[0]["orders"]["last_order_id"], "O-2");
    assert_eq!(b[0]["orders"]["totals"]["EUR"], 15.5);
    assert_eq!(b[0]["first_seen"], "2026-10-01T10:00:00Z");
}

#[test]
fn invalid_and_special_category_events_go_to_the_dlq_and_change_nothing() {
    let mut e = engine();
    let lines = vec![
        "{not json".to_string(),
        event(
            "x",
            "web",
            "login",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"email": "a@b.fr"}, "attributes": {"religion": "x"}}),
        ),
        r#"{"channel":"web","type":"login","occurred_at":"2026-11-01T10:00:00Z"}"#.to_string(),
    ];
    let out = feed(&mut e, &lines);
    assert_eq!(out.len(), 3);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r["topic"], "touchpoints.dlq");
        assert_eq!(r["value"], lines[i].as_str(), "original bytes kept");
        assert_eq!(r["headers"]["unicus.source.offset"], i.to_string());
    }
    assert_eq!(
        out[1]["headers"]["unicus.error"],
        "special-category data is never stored: key `religion`"
    );
    assert_eq!(
        out[2]["headers"]["unicus.error"],
        "missing required field `event_id`"
    );
    assert_eq!(e.customer_count().unwrap(), 0);
    assert!(e.golden_records().unwrap().is_empty());
    assert!(e.find_customer("email", "a@b.fr").unwrap().is_none());
}

#[test]
fn unknown_types_and_fields_are_kept_and_counted() {
    // A channel added by configuration (`kafka.channels`): not in the contract's list.
    let mut config = unicus::engine::config::EngineConfig::default();
    config.channels.push("kiosk".into());
    let mut e = engine_with(config);
    let out = feed(
        &mut e,
        &[event(
            "u",
            "kiosk",
            "wishlist_add",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"email": "z@z.fr", "fax": "0102"}, "app_version": "9"}),
        )],
    );
    let r = &on_topic(&out, "touchpoints.resolved")[0]["value"];
    assert_eq!(r["type"], "wishlist_add");
    assert_eq!(r["app_version"], "9");
    assert_eq!(e.stats().unknown_types, 1);
    assert_eq!(e.stats().unknown_fields, 1);
    assert_eq!(e.stats().unknown_identifier_types, 1);
}

fn engine_with(config: unicus::engine::config::EngineConfig) -> unicus::engine::Engine {
    unicus::engine::Engine::new(config, unicus::store::Store::temporary().unwrap()).unwrap()
}

#[test]
fn source_priority_per_field_beats_recency() {
    let mut config = unicus::engine::config::EngineConfig::default();
    config
        .survivorship
        .field_priority
        .insert("address".into(), vec!["crm".into()]);
    let mut e = engine_with(config);
    let lines = vec![
        event(
            "c",
            "crm",
            "account_updated",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-5"},
                   "person": {"first_name": "Zoé", "address": {"line1": "1 rue A", "postal_code": "44000", "city": "Nantes"}}}),
        ),
        event(
            "s",
            "store",
            "store_visit",
            "2026-11-05T10:00:00Z",
            json!({"identifiers": {"account_id": "CRM-5"},
                   "person": {"first_name": "Zoe", "address": {"line1": "9 rue B", "postal_code": "33000", "city": "Bordeaux"}}}),
        ),
    ];
    feed(&mut e, &lines);
    let g = &e.golden_records().unwrap()[0];
    assert_eq!(
        g["person"]["address"]["source"], "crm",
        "crm is first for address"
    );
    assert_eq!(g["person"]["address"]["value"]["city"], "Nantes");
    assert_eq!(
        g["person"]["first_name"]["value"], "Zoe",
        "no priority: most recent wins"
    );
}

#[test]
fn lifecycle_follows_event_time_and_returns_reduce_monetary() {
    let mut e = engine();
    let id = json!({"identifiers": {"loyalty_id": "FID-7"}});
    let mut buy = id.clone();
    buy["order"] = json!({"order_id": "A", "total": 100, "currency": "EUR"});
    let mut ret = id.clone();
    ret["order"] = json!({"order_id": "A", "total": 40, "currency": "EUR"});
    let stage = |e: &mut unicus::engine::Engine, i: &str, at: &str| {
        feed(e, &[event(i, "store", "store_visit", at, id.clone())]);
        e.golden_records().unwrap()[0]["lifecycle_stage"].clone()
    };
    feed(
        &mut e,
        &[event(
            "v0",
            "web",
            "page_view",
            "2026-01-01T10:00:00Z",
            id.clone(),
        )],
    );
    assert_eq!(
        e.golden_records().unwrap()[0]["lifecycle_stage"],
        "prospect"
    );
    feed(
        &mut e,
        &[event("b", "store", "purchase", "2026-01-02T10:00:00Z", buy)],
    );
    feed(
        &mut e,
        &[event("r", "store", "return", "2026-01-03T10:00:00Z", ret)],
    );
    let g = e.golden_records().unwrap()[0].clone();
    assert_eq!(g["lifecycle_stage"], "active");
    assert_eq!(g["rfm"]["monetary"], 60.0);
    assert_eq!(g["orders"]["returns"], 1);
    assert_eq!(stage(&mut e, "v1", "2026-08-01T10:00:00Z"), "inactive");
    assert_eq!(stage(&mut e, "v2", "2027-03-01T10:00:00Z"), "dormant");
    assert_eq!(e.golden_records().unwrap()[0]["rfm"]["recency_days"], 423);
}

#[test]
fn values_beyond_a_type_limit_are_not_linked() {
    let mut config = unicus::engine::config::EngineConfig::default();
    config.identifiers.get_mut("cookie_id").unwrap().limit = 2;
    let mut e = engine_with(config);
    let lines: Vec<String> = (0..4)
        .map(|i| {
            event(
                &format!("k{i}"),
                "web",
                "login",
                "2026-11-01T10:00:00Z",
                json!({"identifiers": {"account_id": "CRM-1", "cookie_id": format!("c-{i}")}}),
            )
        })
        .collect();
    feed(&mut e, &lines);
    assert_eq!(e.stats().limit_dropped, 2);
    let g = &e.golden_records().unwrap()[0];
    assert_eq!(g["identifiers"]["cookie_id"], json!(["c-0", "c-1"]));
    // A cookie over the limit does not bring its next event to the customer.
    let out = feed(
        &mut e,
        &[event(
            "k9",
            "web",
            "page_view",
            "2026-11-01T11:00:00Z",
            json!({"identifiers": {"cookie_id": "c-3"}}),
        )],
    );
    assert_eq!(
        on_topic(&out, "touchpoints.resolved")[0]["value"]["resolution"]["method"],
        "new"
    );
}

/// The weights a refusal through shared values records: the identifier's in place of
/// the prior, then each field's.
fn refusal_weights(conflict: &Value) -> (f64, f64) {
    let w = &conflict["value"]["weights"];
    (
        w["prior"].as_f64().expect("identifier weight"),
        w["match_weight"].as_f64().expect("total weight"),
    )
}

#[test]
fn a_shared_email_links_through_a_misspelt_first_name_with_the_same_surname_and_town() {
    let mut e = engine();
    let lines = vec![
        event(
            "m1",
            "web",
            "login",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"email": "s.dupont@free.fr"},
                   "person": {"first_name": "Sophie", "last_name": "Dupont",
                              "address": {"line1": "12 rue Garibaldi", "city": "Lyon", "postal_code": "69003", "country": "FR"}}}),
        ),
        // Too far from Sophie for a nickname or a typo the names allow: the e-mail,
        // the surname and the town outweigh it.
        event(
            "m2",
            "crm",
            "account_updated",
            "2026-11-02T10:00:00Z",
            json!({"identifiers": {"email": " S.Dupont@free.fr"},
                   "person": {"first_name": "Zophei", "last_name": "Dupont",
                              "address": {"city": "Lyon", "country": "FR"}}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_eq!(resolved[1]["key"], resolved[0]["key"]);
    assert_eq!(
        resolved[1]["value"]["resolution"]["method"],
        "deterministic"
    );
    assert!(on_topic(&out, "identity.changes").is_empty());
    assert_eq!(e.customer_count().unwrap(), 1);
}

#[test]
fn a_family_email_does_not_link_different_first_names_and_birth_dates() {
    let mut e = engine();
    let address = json!({"line1": "3 place Bellecour", "city": "Lyon", "postal_code": "69002", "country": "FR"});
    let lines = vec![
        event(
            "f1",
            "web",
            "login",
            "2026-11-01T10:00:00Z",
            json!({"identifiers": {"email": "famille.martin@free.fr"},
                   "person": {"first_name": "Marc", "last_name": "Martin", "birth_date": "1980-01-02", "address": address}}),
        ),
        // One surname, one address: a household's, not one person's.
        event(
            "f2",
            "store",
            "purchase",
            "2026-11-03T10:00:00Z",
            json!({"identifiers": {"email": "famille.martin@free.fr"},
                   "person": {"first_name": "Julie", "last_name": "Martin", "birth_date": "1984-07-09", "address": address}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_ne!(resolved[0]["key"], resolved[1]["key"]);
    let changes = on_topic(&out, "identity.changes");
    assert_eq!(changes.len(), 1, "{changes:?}");
    let c = &changes[0]["value"];
    assert_eq!(c["type"], "conflict");
    assert_eq!(c["rule"], "identifier_contradiction");
    assert_eq!(c["identifier_type"], "email");
    assert_eq!(c["other_customer_id"], resolved[0]["key"]);
    let (identifier, total) = refusal_weights(changes[0]);
    assert!(identifier > 0.0 && total <= 0.0, "{c}");
    // The first names and birth dates weigh against; the household's surname and
    // address weigh nothing.
    let fields = &c["weights"]["fields"];
    assert!(
        fields["first_name"]["weight"].as_f64().unwrap() < 0.0,
        "{c}"
    );
    assert!(
        fields["birth_date"]["weight"].as_f64().unwrap() < 0.0,
        "{c}"
    );
    assert!(
        fields["postal_code"]["weight"].as_f64().unwrap() <= 0.0,
        "{c}"
    );
    assert_eq!(e.customer_count().unwrap(), 2);
}

#[test]
fn walk_ins_on_the_shop_phone_stay_apart() {
    let mut e = engine();
    // The shop's phone typed for walk-ins, in three spellings; the second gives a last
    // name only, so nothing in it contradicts a first name or a birth date.
    let lines = vec![
        event(
            "w1",
            "store",
            "purchase",
            "2026-11-04T10:00:00Z",
            json!({"identifiers": {"phone": "04 72 00 11 22"},
                   "person": {"first_name": "Daniel", "last_name": "Hare",
                              "address": {"city": "Villeurbanne", "postal_code": "69100", "country": "FR"}}}),
        ),
        event(
            "w2",
            "store",
            "purchase",
            "2026-11-04T11:00:00Z",
            json!({"identifiers": {"phone": "+33472001122"},
                   "person": {"last_name": "Speight",
                              "address": {"city": "Bron", "postal_code": "69500", "country": "FR"}}}),
        ),
        event(
            "w3",
            "store",
            "purchase",
            "2026-11-04T12:00:00Z",
            json!({"identifiers": {"phone": "0472001122"},
                   "person": {"first_name": "Chloé", "last_name": "Noble",
                              "address": {"city": "Lyon", "postal_code": "69007", "country": "FR"}}}),
        ),
    ];
    let out = feed(&mut e, &lines);
    let resolved = on_topic(&out, "touchpoints.resolved");
    assert_ne!(resolved[0]["key"], resolved[1]["key"]);
    assert_ne!(resolved[1]["key"], resolved[2]["key"]);
    assert_ne!(resolved[0]["key"], resolved[2]["key"]);
    assert_eq!(e.customer_count().unwrap(), 3);
    // Each refusal names the rule, the phone and the weights: 1 for the second, 2
    // for the third (the phone's spread has taken its weight below zero).
    let changes = on_topic(&out, "identity.changes");
    assert_eq!(changes.len(), 3, "{changes:?}");
    for c in &changes {
        assert_eq!(c["value"]["rule"], "weak_identifier_contradiction");
        assert_eq!(c["value"]["identifier_type"], "phone");
        let (_, total) = refusal_weights(c);
        assert!(total <= 0.0, "{c}");
    }
    assert!(refusal_weights(changes[2]).0 < refusal_weights(changes[0]).0);
    assert_eq!(e.stats().merges, 0);
}
