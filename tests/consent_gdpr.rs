//! Consent and GDPR scenarios, each named after the guarantee it protects: a "no" on one
//! channel is honoured everywhere, merges are restrictive, erasure leaves no trace and
//! does not come back on replay, exports are complete and private, retention expires
//! by itself, minimisation drops what is not allowed.

mod common;

use common::{event, feed, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::{EngineConfig, ErasedIdentifiers};
use unicus::engine::Engine;
use unicus::model::output::Payload;
use unicus::model::Purpose;
use unicus::store::Store;

fn engine_with(config: EngineConfig) -> Engine {
    Engine::new(config, Store::temporary().unwrap()).unwrap()
}

fn engine() -> Engine {
    engine_with(EngineConfig::default())
}

fn request(id: &str, kind: &str, identifier: Value) -> String {
    json!({"request_id": id, "kind": kind, "identifier": identifier}).to_string()
}

/// The last golden record published for a customer.
fn last_profile<'a>(out: &'a [Value], customer: &str) -> &'a Value {
    &out.iter()
        .rev()
        .find(|o| o["topic"] == "profiles.merged" && o["key"] == customer)
        .unwrap_or_else(|| panic!("no profile for {customer}"))["value"]
}

fn allowed(profile: &Value, purpose: &str) -> Vec<String> {
    profile["allowed_channels"][purpose]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn web_customer() -> String {
    event(
        "web-1",
        "web",
        "account_created",
        "2026-11-01T10:00:00Z",
        json!({
            "identifiers": {"account_id": "A-1", "email": "lea.martin@example.org", "phone": "06 11 22 33 44"},
            "person": {"first_name": "Léa", "last_name": "Martin"},
            "consent": [{"purpose": "marketing", "channel": "email", "granted": true},
                        {"purpose": "marketing", "channel": "sms", "granted": true}]
        }),
    )
}

#[test]
fn a_no_given_in_store_is_honoured_on_every_channel() {
    let mut e = engine();
    let mut out = feed(&mut e, &[web_customer()]);
    let customer = out[0]["key"].as_str().unwrap().to_string();
    assert_eq!(
        allowed(last_profile(&out, &customer), "marketing"),
        ["email", "sms"]
    );
    // A paper opt-out at the till, known only by her phone.
    out = feed(
        &mut e,
        &[event(
            "pos-1",
            "store",
            "store_visit",
            "2026-11-05T15:00:00+01:00",
            json!({"identifiers": {"phone": "+33 6 11 22 33 44"},
                   "person": {"first_name": "Lea", "last_name": "Martin"},
                   "consent": [{"purpose": "marketing", "channel": "email", "granted": false}]}),
        )],
    );
    let changes = on_topic(&out, "consent.changes");
    assert_eq!(changes.len(), 1, "{out:#?}");
    let c = &changes[0]["value"];
    assert_eq!(changes[0]["key"], json!(customer));
    assert_eq!(
        (
            &c["purpose"],
            &c["channel"],
            &c["granted"],
            &c["previous"],
            &c["source_channel"],
            &c["event_id"],
            &c["cause"]
        ),
        (
            &json!("marketing"),
            &json!("email"),
            &json!(false),
            &json!(true),
            &json!("store"),
            &json!("pos-1"),
            &json!("event")
        )
    );
    let profile = last_profile(&out, &customer);
    assert_eq!(allowed(profile, "marketing"), ["sms"]);
    assert_eq!(profile["consents"]["marketing"]["email"]["granted"], false);
    assert_eq!(
        e.allowed_channels(&customer, Purpose::Marketing).unwrap(),
        ["sms"]
    );
}

#[test]
fn a_merge_of_a_granted_and_a_denied_profile_is_denied() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            web_customer(),
            event(
                "pos-1",
                "store",
                "purchase",
                "2026-11-02T10:00:00Z",
                json!({"identifiers": {"loyalty_id": "FID-1"},
                       "consent": [{"purpose": "marketing", "channel": "email", "granted": false}]}),
            ),
            // Later she gives both at the store: the two customers merge.
            event(
                "pos-2",
                "store",
                "store_visit",
                "2026-11-03T10:00:00Z",
                json!({"identifiers": {"loyalty_id": "FID-1", "email": "LEA.MARTIN@example.org"}}),
            ),
        ],
    );
    let merges: Vec<&Value> = on_topic(&out, "identity.changes")
        .into_iter()
        .filter(|r| r["value"]["type"] == "merge")
        .collect();
    assert_eq!(merges.len(), 1);
    let survivor = merges[0]["key"].as_str().unwrap();
    let changes = on_topic(&out, "consent.changes");
    let merge_change = changes
        .iter()
        .find(|c| c["value"]["cause"] == "merge")
        .expect("the merge changes the survivor's consent");
    assert_eq!(merge_change["key"], json!(survivor));
    assert_eq!(merge_change["value"]["granted"], false);
    assert_eq!(merge_change["value"]["previous"], true);
    assert_eq!(merge_change["value"]["source_channel"], "store");
    // The latest time of the two decisions is kept.
    assert_eq!(merge_change["value"]["at"], "2026-11-02T10:00:00Z");
    let profile = last_profile(&out, survivor);
    assert_eq!(profile["consents"]["marketing"]["email"]["granted"], false);
    assert_eq!(allowed(profile, "marketing"), ["sms"]);
}

#[test]
fn an_older_event_never_overrides_a_newer_decision() {
    let mut e = engine();
    let consent = |id: &str, at: &str, granted: bool| {
        event(
            id,
            "web",
            "consent_update",
            at,
            json!({"identifiers": {"email": "x@example.org"},
                   "consent": [{"purpose": "remarketing", "channel": "web", "granted": granted}]}),
        )
    };
    let out = feed(
        &mut e,
        &[
            consent("c-2", "2026-11-10T00:00:00Z", false),
            consent("c-1", "2026-11-01T00:00:00Z", true), // arrives late
        ],
    );
    let changes = on_topic(&out, "consent.changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["value"]["granted"], false);
    let customer = changes[0]["key"].as_str().unwrap();
    let p = last_profile(&out, customer);
    assert_eq!(p["consents"]["remarketing"]["web"]["event_id"], "c-2");
    // Restating the same decision later is not a change.
    let out = feed(&mut e, &[consent("c-3", "2026-11-11T00:00:00Z", false)]);
    assert!(on_topic(&out, "consent.changes").is_empty());
}

#[test]
fn only_reachable_channels_are_allowed_and_one_address_can_opt_out() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            event(
                "w-1",
                "web",
                "consent_update",
                "2026-11-01T00:00:00Z",
                json!({"identifiers": {"account_id": "A-9", "email": "one@example.org"},
                       "consent": [{"purpose": "marketing", "channel": "all", "granted": true}]}),
            ),
            event(
                "w-2",
                "web",
                "login",
                "2026-11-02T00:00:00Z",
                json!({"identifiers": {"account_id": "A-9", "email": "two@example.org"}}),
            ),
        ],
    );
    let customer = out[0]["key"].as_str().unwrap().to_string();
    // No phone, no device, no address: email and web only.
    assert_eq!(
        allowed(last_profile(&out, &customer), "marketing"),
        ["email", "web"]
    );
    let opt_out = |id: &str, address: &str| {
        event(
            id,
            "email",
            "email_click",
            "2026-11-03T00:00:00Z",
            json!({"identifiers": {"email": address},
                   "consent": [{"purpose": "marketing", "channel": "email", "granted": false,
                                "identifier": {"type": "email", "value": address}}]}),
        )
    };
    let out = feed(&mut e, &[opt_out("e-1", "ONE@example.org")]);
    let p = last_profile(&out, &customer);
    assert_eq!(allowed(p, "marketing"), ["email", "web"]);
    assert_eq!(
        p["consents_by_identifier"][0]["identifier"]["value"],
        "one@example.org"
    );
    let out = feed(&mut e, &[opt_out("e-2", "two@example.org")]);
    assert_eq!(allowed(last_profile(&out, &customer), "marketing"), ["web"]);
}

#[test]
fn denied_profiling_removes_segments_and_denied_personalisation_is_flagged() {
    let mut e = engine();
    let buy = event(
        "p-1",
        "web",
        "purchase",
        "2026-11-01T00:00:00Z",
        json!({"identifiers": {"email": "y@example.org"},
               "order": {"order_id": "O1", "total": 10.0, "currency": "EUR"}}),
    );
    let out = feed(&mut e, &[buy]);
    let customer = out[0]["key"].as_str().unwrap().to_string();
    let p = last_profile(&out, &customer);
    assert_eq!(p["lifecycle_stage"], "active");
    assert_eq!(p["rfm"]["frequency"], 1);
    assert_eq!(p["do_not_profile"], false);
    let out = feed(
        &mut e,
        &[event(
            "c-1",
            "web",
            "consent_update",
            "2026-11-02T00:00:00Z",
            json!({"identifiers": {"email": "y@example.org"},
                   "consent": [{"purpose": "profiling", "channel": "all", "granted": false},
                               {"purpose": "personalization", "channel": "all", "granted": false}]}),
        )],
    );
    let p = last_profile(&out, &customer);
    assert_eq!(p["rfm"], Value::Null);
    assert_eq!(p["lifecycle_stage"], Value::Null);
    assert_eq!(p["do_not_profile"], true);
    assert_eq!(p["do_not_personalize"], true);
    // The order facts themselves are kept: they are not a segment.
    assert_eq!(p["orders"]["count"], 1);
}

/// Sophie in three channels, Marc elsewhere.
fn two_people() -> Vec<String> {
    vec![
        event(
            "pos-1",
            "store",
            "purchase",
            "2026-11-20T14:03:00+01:00",
            json!({"identifiers": {"loyalty_id": "FID-99812", "phone": "06 12 34 56 78"},
                   "person": {"first_name": "Sophie", "last_name": "Dupont", "birth_date": "1985-04-12",
                     "address": {"line1": "12 rue de la Paix", "postal_code": "75002", "city": "Paris", "country": "FR"}},
                   "order": {"order_id": "T-881", "total": 129.90, "currency": "EUR"},
                   "consent": [{"purpose": "marketing", "channel": "email", "granted": false}]}),
        ),
        event(
            "web-1",
            "web",
            "account_created",
            "2026-11-20T18:30:00+01:00",
            json!({"identifiers": {"account_id": "CRM-000123", "email": "sophie.dupont@gmail.com", "cookie_id": "c-77ab"},
                   "person": {"first_name": "Sophie", "last_name": "Dupont"},
                   "attributes": {"preferred_store": "Paris 11"}}),
        ),
        event(
            "soc-1",
            "social",
            "social_interaction",
            "2026-11-21T09:05:00Z",
            json!({"identifiers": {"social_handle": "twitter:@sophie_d", "phone": "+33 6 12 34 56 78"}}),
        ),
        event(
            "pos-2",
            "store",
            "store_visit",
            "2026-11-22T11:00:00+01:00",
            json!({"identifiers": {"loyalty_id": "FID-99812", "email": "Sophie.Dupont@Gmail.com"}}),
        ),
        event(
            "web-2",
            "web",
            "purchase",
            "2026-11-22T12:00:00Z",
            json!({"identifiers": {"email": "marc.leroy@example.com", "phone": "07 98 76 54 32"},
                   "person": {"first_name": "Marc", "last_name": "Leroy"},
                   "order": {"order_id": "W-1", "total": 20.0, "currency": "EUR"}}),
        ),
    ]
}

const SOPHIE_TRACES: [&str; 13] = [
    "sophie",
    "dupont",
    "1985-04-12",
    "fid-99812",
    "+33612345678",
    "crm-000123",
    "c-77ab",
    "twitter:sophie_d",
    "rue de la paix",
    "75002",
    "t-881",
    "paris 11",
    "gmail",
];

/// Every stored trace of Sophie, read from every tree of the store.
fn traces_of_sophie(e: &Engine) -> Vec<String> {
    let mut found = Vec::new();
    for (k, v) in e.store().audit_scan().unwrap() {
        let text = format!(
            "{} {}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        )
        .to_lowercase();
        for t in SOPHIE_TRACES {
            if text.contains(t) {
                found.push(format!("{t} in {}", String::from_utf8_lossy(&k)));
            }
        }
    }
    found
}

#[test]
fn erasure_leaves_no_trace_and_replay_does_not_bring_the_person_back() {
    let mut e = engine();
    let input = two_people();
    let out = feed(&mut e, &input);
    let sophie = e
        .find_customer("email", "sophie.dupont@gmail.com")
        .unwrap()
        .unwrap();
    let marc = e
        .find_customer("email", "marc.leroy@example.com")
        .unwrap()
        .unwrap();
    let all_sophie_ids: Vec<String> = out
        .iter()
        .filter(|o| o["topic"] == "identity.changes" && o["value"]["type"] == "merge")
        .flat_map(|o| {
            let mut ids = vec![o["key"].as_str().unwrap().to_string()];
            ids.extend(
                o["value"]["merged_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string()),
            );
            ids
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(all_sophie_ids.len(), 2, "{all_sophie_ids:?}");
    assert!(
        !traces_of_sophie(&e).is_empty(),
        "the test must see traces before"
    );

    let out = feed(
        &mut e,
        &[request(
            "dpo-1",
            "erase",
            json!({"type": "phone", "value": "06 12 34 56 78"}),
        )],
    );
    let receipts = on_topic(&out, "gdpr.receipts");
    assert_eq!(receipts.len(), 1);
    let r = &receipts[0]["value"];
    assert_eq!(r["request_id"], "dpo-1");
    assert_eq!(r["customer_id"], json!(sophie));
    assert_eq!(r["kind"], "erase");
    assert_eq!(r["status"], "done");
    assert_eq!(r["erased"]["source_profiles"], 3);
    assert_eq!(r["erased"]["customer_ids"], json!(all_sophie_ids.len()));
    assert_eq!(r["erased"]["consents"], 1);
    assert!(
        r["erased"]["touchpoints"].as_u64().unwrap() >= 3,
        "the timeline is erased too: {r}"
    );
    assert!(
        r["erased"]["suppressed_identifiers"].as_u64().unwrap() >= 6,
        "{r}"
    );
    let mut tombstoned: Vec<String> = on_topic(&out, "profiles.merged")
        .iter()
        .filter(|o| o["value"].is_null())
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect();
    tombstoned.sort();
    assert_eq!(tombstoned, all_sophie_ids);
    e.commit().unwrap();
    assert_eq!(traces_of_sophie(&e), Vec::<String>::new());

    // The whole input again: recognised by event id, nothing comes back.
    let out = feed(&mut e, &input);
    assert!(out.is_empty(), "{out:#?}");
    // The same events with new ids (a producer replaying its history): suppressed.
    let renamed: Vec<String> = input
        .iter()
        .map(|l| l.replace("\"event_id\":\"", "\"event_id\":\"again-"))
        .collect();
    let out = feed(&mut e, &renamed);
    assert!(
        out.iter().all(|o| o["key"] == json!(marc)),
        "only Marc's events may produce anything: {out:#?}"
    );
    assert_eq!(e.stats().suppressed, 4);
    e.commit().unwrap();
    assert_eq!(traces_of_sophie(&e), Vec::<String>::new());
    assert!(e
        .find_customer("email", "sophie.dupont@gmail.com")
        .unwrap()
        .is_none());
    // Marc is untouched (his purchase, sent again under a new id, counts twice).
    assert_eq!(
        e.golden_record(&marc).unwrap().unwrap()["orders"]["count"],
        2
    );
}

#[test]
fn erased_identifiers_may_be_accepted_again_by_configuration() {
    let mut config = EngineConfig::default();
    config.gdpr.erased_identifiers = ErasedIdentifiers::Accept;
    let mut e = engine_with(config);
    let input = two_people();
    feed(&mut e, &input);
    feed(
        &mut e,
        &[request(
            "dpo-1",
            "erase",
            json!({"type": "loyalty_id", "value": "FID-99812"}),
        )],
    );
    let renamed: Vec<String> = input
        .iter()
        .map(|l| l.replace("\"event_id\":\"", "\"event_id\":\"again-"))
        .collect();
    feed(&mut e, &renamed);
    assert_eq!(e.stats().suppressed, 0);
    assert!(e
        .find_customer("email", "sophie.dupont@gmail.com")
        .unwrap()
        .is_some());
}

#[test]
fn an_export_contains_everything_of_the_customer_and_nothing_of_another() {
    let mut e = engine();
    feed(&mut e, &two_people());
    let sophie = e.find_customer("loyalty_id", "FID-99812").unwrap().unwrap();
    let out = feed(
        &mut e,
        &[
            request(
                "x-1",
                "export",
                json!({"type": "email", "value": "SOPHIE.DUPONT@gmail.com"}),
            ),
            request(
                "x-1",
                "export",
                json!({"type": "email", "value": "SOPHIE.DUPONT@gmail.com"}),
            ),
            request(
                "x-2",
                "export",
                json!({"type": "email", "value": "nobody@example.org"}),
            ),
        ],
    );
    let receipts = on_topic(&out, "gdpr.receipts");
    assert_eq!(receipts.len(), 2, "a request id is done once: {out:#?}");
    let doc = &receipts[0]["value"];
    assert_eq!(doc["customer_id"], json!(sophie));
    assert_eq!(doc["kind"], "export");
    let text = doc.to_string().to_lowercase();
    for t in SOPHIE_TRACES {
        assert!(text.contains(t), "export misses `{t}`");
    }
    for other in ["marc", "leroy", "+33798765432", "w-1"] {
        assert!(
            !text.contains(other),
            "export shows `{other}` of another customer"
        );
    }
    let export = &doc["export"];
    assert_eq!(export["source_profiles"].as_array().unwrap().len(), 3);
    assert_eq!(
        export["identity_graph"]["source_profiles"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(export["consents"][0]["source_channel"], "store");
    // The timeline kept for the lookup API: Sophie's touchpoints on each channel, in
    // time order, without identifiers.
    let touchpoints = export["touchpoints"].as_array().unwrap();
    let channels: std::collections::BTreeSet<&str> = touchpoints
        .iter()
        .map(|t| t["channel"].as_str().unwrap())
        .collect();
    assert!(
        touchpoints.len() >= 3 && channels.len() >= 3,
        "{touchpoints:?}"
    );
    let times: Vec<&str> = touchpoints
        .iter()
        .map(|t| t["occurred_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(!export["touchpoints"].to_string().contains("@"));
    assert_eq!(
        export["golden_record"]["person"]["birth_date"]["value"],
        "1985-04-12"
    );
    assert_eq!(receipts[1]["value"]["status"], "not_found");
    assert_eq!(receipts[1]["value"]["customer_id"], Value::Null);
}

#[test]
fn bad_requests_are_dead_letters_with_a_reason() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[json!({"request_id": "r", "kind": "forget", "identifier": {"type": "email", "value": "a@b.fr"}}).to_string()],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["topic"], "touchpoints.dlq");
}

#[test]
fn retention_erases_inactive_customers_and_detaches_old_cookies() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            // Gone for years.
            event(
                "old-1",
                "web",
                "login",
                "2021-01-10T00:00:00Z",
                json!({"identifiers": {"email": "old@example.org"}}),
            ),
            // A web account with a cookie, and the app seen once on that cookie.
            event(
                "w-1",
                "web",
                "login",
                "2024-06-01T00:00:00Z",
                json!({"identifiers": {"account_id": "A-5", "cookie_id": "ck-5"}}),
            ),
            event(
                "a-1",
                "app",
                "page_view",
                "2024-06-02T00:00:00Z",
                json!({"identifiers": {"cookie_id": "ck-5"}}),
            ),
            // The account is active again; the cookie-only app profile is not.
            event(
                "w-2",
                "web",
                "login",
                "2026-11-01T00:00:00Z",
                json!({"identifiers": {"account_id": "A-5"}}),
            ),
        ],
    );
    let account = e.find_customer("account_id", "A-5").unwrap().unwrap();
    assert_eq!(last_profile(&out, &account)["source_profiles"], 2);
    let old = e
        .find_customer("email", "old@example.org")
        .unwrap()
        .unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T00:00:00Z")
        .unwrap()
        .timestamp_millis();

    // Before the limits nothing expires.
    let early = chrono::DateTime::parse_from_rfc3339("2023-12-01T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    assert!(e.sweep_retention(early).unwrap().is_empty());

    let out = e.sweep_retention(now).unwrap();
    let values: Vec<(String, Option<Value>)> = out
        .iter()
        .map(|r| {
            let v = match &r.payload {
                Payload::Json(v) => Some(v.clone()),
                _ => None,
            };
            (r.topic.name().to_string(), v)
        })
        .collect();
    let receipts: Vec<&Value> = values
        .iter()
        .filter(|(t, _)| t == "gdpr.receipts")
        .filter_map(|(_, v)| v.as_ref())
        .collect();
    assert_eq!(receipts.len(), 2, "{values:#?}");
    let erased = receipts
        .iter()
        .find(|r| r["customer_id"] == json!(old))
        .unwrap();
    assert_eq!(erased["kind"], "retention");
    assert_eq!(erased["done_at"], "2026-11-23T00:00:00Z");
    let detached = receipts
        .iter()
        .find(|r| r["customer_id"] == json!(account))
        .unwrap();
    assert_eq!(detached["scope"], "behavioural_source_profiles");
    assert_eq!(detached["erased"]["source_profiles"], 1);
    assert!(e
        .find_customer("email", "old@example.org")
        .unwrap()
        .is_none());
    let profile = e.golden_record(&account).unwrap().unwrap();
    assert_eq!(profile["source_profiles"], 1);
    assert!(profile["channels"].get("app").is_none());
    assert_eq!(e.stats().detached_source_profiles, 1);
    // Expired data is erased once: the next sweep finds nothing.
    e.commit().unwrap();
    assert!(e.sweep_retention(now).unwrap().is_empty());
}

#[test]
fn minimisation_drops_fields_not_allowed_and_counts_them() {
    let mut config = EngineConfig::default();
    config.gdpr.person_fields = vec!["first_name".into(), "last_name".into()];
    config.gdpr.attributes = vec!["preferred_store".into()];
    let mut e = engine_with(config);
    let out = feed(
        &mut e,
        &[event(
            "w-1",
            "web",
            "account_created",
            "2026-11-01T00:00:00Z",
            json!({"identifiers": {"email": "z@example.org"},
                   "person": {"first_name": "Zoé", "last_name": "Roux", "birth_date": "1990-01-01"},
                   "attributes": {"preferred_store": "Lyon", "shoe_size": "38"}}),
        )],
    );
    let text = out.iter().map(Value::to_string).collect::<String>();
    assert!(
        !text.contains("1990-01-01") && !text.contains("shoe_size"),
        "{text}"
    );
    assert!(text.contains("Lyon") && text.contains("Zoé"));
    assert_eq!(e.stats().minimised, 2);
}

#[test]
fn pseudonymised_topics_carry_keyed_hashes_only() {
    let mut config = EngineConfig::default();
    config.gdpr.pseudonymised_topics = vec!["touchpoints.resolved".into()];
    config.gdpr.hash_key = "a secret of the deployment".into();
    let mut e = engine_with(config);
    let out = feed(&mut e, &two_people());
    for r in on_topic(&out, "touchpoints.resolved") {
        let text = r["value"].to_string().to_lowercase();
        assert!(
            !text.contains("sophie") && !text.contains("fid-99812") && !text.contains("06 12"),
            "{text}"
        );
        assert!(text.contains("\"h:"), "{text}");
    }
    // Other topics are not pseudonymised.
    assert!(on_topic(&out, "profiles.merged")
        .iter()
        .any(|r| r["value"].to_string().contains("FID-99812")));
}

/// A person is reachable by every id unicus ever gave them: their live id, an id merged
/// away (through its alias), the id a split gave them, and any identifier they hold.
#[test]
fn rights_requests_reach_every_id_unicus_gave_the_person() {
    let receipt = |out: &[Value], id: &str| -> Value {
        out.iter()
            .find(|o| o["topic"] == "gdpr.receipts" && o["value"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no receipt for {id}: {out:?}"))["value"]
            .clone()
    };
    let mut e = engine();
    // Two customers: a web account, then a loyalty card in store.
    let out = feed(
        &mut e,
        &[
            event(
                "w1",
                "web",
                "account_created",
                "2026-11-01T10:00:00Z",
                json!({"identifiers": {"account_id": "A-1", "email": "lea.martin@example.org"}}),
            ),
            event(
                "s1",
                "store",
                "purchase",
                "2026-11-02T10:00:00Z",
                json!({"identifiers": {"loyalty_id": "L-1"}}),
            ),
            event(
                "s2",
                "store",
                "store_visit",
                "2026-11-02T11:00:00Z",
                json!({"identifiers": {"loyalty_id": "L-2", "phone": "06 11 22 33 44"}}),
            ),
        ],
    );
    let id_of = |out: &[Value], event_id: &str| -> String {
        out.iter()
            .find(|o| o["topic"] == "touchpoints.resolved" && o["value"]["event_id"] == event_id)
            .unwrap()["value"]["customer_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (web, card, other) = (id_of(&out, "w1"), id_of(&out, "s1"), id_of(&out, "s2"));
    assert!(web != card && card != other);
    // The card is given to the web account: the younger id is merged away.
    let out = feed(
        &mut e,
        &[event(
            "s3",
            "store",
            "purchase",
            "2026-11-03T10:00:00Z",
            json!({"identifiers": {"loyalty_id": "L-1", "email": "lea.martin@example.org"}}),
        )],
    );
    let survivor = id_of(&out, "s3");
    let merged_away = if survivor == web { &card } else { &web };
    assert_ne!(&survivor, merged_away);

    // Export by the merged-away id: done, for the survivor.
    let out = feed(
        &mut e,
        &[json!({"request_id": "x1", "kind": "export", "customer_id": merged_away}).to_string()],
    );
    let r = receipt(&out, "x1");
    assert_eq!(r["status"], "done", "{r}");
    assert_eq!(r["customer_id"], survivor.as_str(), "{r}");

    // Split the phone's card off the other customer, then erase by the id the split gave.
    let out = feed(
        &mut e,
        &[event(
            "s4",
            "web",
            "login",
            "2026-11-04T10:00:00Z",
            json!({"identifiers": {"loyalty_id": "L-2", "account_id": "A-9"}}),
        )],
    );
    assert_eq!(id_of(&out, "s4"), other);
    let out = feed(
        &mut e,
        &[
            json!({"command_id": "c1", "kind": "split", "customer_id": other,
                 "identifier": {"type": "account_id", "value": "A-9"}})
            .to_string(),
        ],
    );
    let split_off = on_topic(&out, "identity.changes")
        .iter()
        .find_map(|o| o["value"]["new_customer_id"].as_str())
        .unwrap_or_else(|| panic!("no split: {out:?}"))
        .to_string();
    let out = feed(
        &mut e,
        &[json!({"request_id": "x2", "kind": "erase", "customer_id": split_off}).to_string()],
    );
    assert_eq!(receipt(&out, "x2")["status"], "done");

    // Erase by the merged-away id: the survivor is erased, and no id of theirs answers.
    let out = feed(
        &mut e,
        &[json!({"request_id": "x3", "kind": "erase", "customer_id": merged_away}).to_string()],
    );
    let r = receipt(&out, "x3");
    assert_eq!(
        (r["status"].as_str(), r["customer_id"].as_str()),
        (Some("done"), Some(survivor.as_str())),
        "{r}"
    );
    for (n, id) in [&survivor, merged_away].into_iter().enumerate() {
        let rid = format!("x4-{n}");
        let out = feed(
            &mut e,
            &[json!({"request_id": rid, "kind": "export", "customer_id": id}).to_string()],
        );
        assert_eq!(receipt(&out, &rid)["status"], "not_found");
    }

    // Erase by an identifier: the customer that holds it.
    let out = feed(
        &mut e,
        &[request(
            "x5",
            "erase",
            json!({"type": "phone", "value": "+33611223344"}),
        )],
    );
    let r = receipt(&out, "x5");
    assert_eq!(
        (r["status"].as_str(), r["customer_id"].as_str()),
        (Some("done"), Some(other.as_str())),
        "{r}"
    );
}
