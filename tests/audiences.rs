//! Audiences and computed traits of the configuration, end to end through replay:
//! entering on events, leaving on a consent denial, as windows move, on a merge and on
//! erasure; traits in the golden record; definitions that do not compile stop the start
//! with their position.

mod common;

use common::{elsewhere, event, feed, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::profile::audiences::named;
use unicus::engine::Engine;
use unicus::store::Store;

fn config(audiences: &[(&str, &str)], traits: &[(&str, &str)]) -> EngineConfig {
    EngineConfig {
        audiences: named(audiences),
        traits: named(traits),
        ..EngineConfig::default()
    }
}

fn engine(config: EngineConfig) -> Engine {
    config.validate().unwrap();
    Engine::new(config, Store::temporary().unwrap()).unwrap()
}

/// Web browsers who may be emailed.
const BROWSERS: (&str, &str) = (
    "browsers",
    r#"count(product_view where channel = "web", 30d) >= 3 and allowed("marketing", "email")"#,
);

/// Léa's web account: email, marketing by email allowed.
fn lea(at: &str) -> String {
    event(
        "lea-0",
        "web",
        "account_created",
        at,
        json!({"identifiers": {"account_id": "A-1", "email": "lea@example.org"},
               "person": {"first_name": "Léa", "last_name": "Martin",
                          "address": {"city": "Lyon", "postal_code": "69001", "country": "FR"}},
               "consent": [{"purpose": "marketing", "channel": "email", "granted": true}]}),
    )
}

fn view(id: &str, channel: &str, at: &str) -> String {
    event(
        id,
        channel,
        "product_view",
        at,
        json!({"identifiers": {"account_id": "A-1"},
               "page": {"url": "https://shop.example/p/CLIMB-42", "product_sku": "CLIMB-42"}}),
    )
}

/// The `audiences.changes` values, as (audience, change, cause).
fn changes(out: &[Value]) -> Vec<(String, String, String)> {
    on_topic(out, "audiences.changes")
        .into_iter()
        .map(|o| {
            let v = &o["value"];
            assert_eq!(o["key"], v["customer_id"], "keyed by customer id: {o}");
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("audience"), s("change"), s("cause"))
        })
        .collect()
}

fn change(audience: &str, change: &str, cause: &str) -> (String, String, String) {
    (audience.into(), change.into(), cause.into())
}

fn last_profile(out: &[Value]) -> &Value {
    &on_topic(out, "profiles.merged")
        .last()
        .expect("a golden record")["value"]
}

#[test]
fn a_customer_enters_on_the_third_view_and_leaves_at_once_when_email_is_refused() {
    let mut e = engine(config(&[BROWSERS], &[]));
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            view("v-1", "web", "2026-11-20T10:00:00Z"),
            view("v-2", "web", "2026-11-20T10:05:00Z"),
            // An app view does not count: the filter asks for the web.
            view("v-3", "app", "2026-11-20T10:06:00Z"),
        ],
    );
    assert_eq!(changes(&out), vec![]);
    assert_eq!(last_profile(&out)["audiences"], json!([]));

    let out = feed(&mut e, &[view("v-4", "web", "2026-11-20T10:10:00Z")]);
    assert_eq!(changes(&out), vec![change("browsers", "entered", "event")]);
    assert_eq!(last_profile(&out)["audiences"], json!(["browsers"]));
    let entered = &on_topic(&out, "audiences.changes")[0]["value"];
    assert_eq!(entered["at"], "2026-11-20T10:10:00Z");

    // The same customer says no to marketing e-mails, on another channel.
    let no = event(
        "crm-1",
        "crm",
        "consent_update",
        "2026-11-20T11:00:00Z",
        json!({"identifiers": {"email": "LEA@example.org"},
               "consent": [{"purpose": "marketing", "channel": "email", "granted": false}]}),
    );
    let out = feed(&mut e, &[no]);
    assert_eq!(changes(&out), vec![change("browsers", "exited", "event")]);
    assert_eq!(last_profile(&out)["audiences"], json!([]));
}

#[test]
fn a_filter_reads_the_product_a_page_shows() {
    let climbers = (
        "climbers",
        r#"count(product_view where sku = "CLIMB-42", 30d) >= 2"#,
    );
    let mut e = engine(config(&[climbers], &[]));
    let other = event(
        "v-0",
        "web",
        "product_view",
        "2026-11-20T09:30:00Z",
        json!({"identifiers": {"account_id": "A-1"}, "page": {"product_sku": "SKI-MASK"}}),
    );
    // A `page` of another shape is no reason to refuse an event, nor a product.
    let odd = event(
        "v-00",
        "web",
        "product_view",
        "2026-11-20T09:31:00Z",
        json!({"identifiers": {"account_id": "A-1"}, "page": {"product_sku": 42}}),
    );
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            other,
            odd,
            view("v-1", "web", "2026-11-20T10:00:00Z"),
        ],
    );
    assert!(on_topic(&out, "touchpoints.dlq").is_empty());
    assert_eq!(changes(&out), vec![]);
    let out = feed(&mut e, &[view("v-2", "app", "2026-11-20T10:01:00Z")]);
    assert_eq!(changes(&out), vec![change("climbers", "entered", "event")]);
}

#[test]
fn views_leave_the_window_as_time_passes_and_the_customer_exits() {
    let mut e = engine(config(
        &[BROWSERS],
        &[("views", "count(product_view, 30d)")],
    ));
    let out = feed(
        &mut e,
        &[
            lea("2026-11-01T09:00:00Z"),
            view("v-1", "web", "2026-11-01T10:00:00Z"),
            view("v-2", "web", "2026-11-02T10:00:00Z"),
            view("v-3", "web", "2026-11-03T10:00:00Z"),
        ],
    );
    assert_eq!(changes(&out), vec![change("browsers", "entered", "event")]);
    assert_eq!(last_profile(&out)["traits"]["views"], 3.0);

    // Twenty days on: still three views in 30 days.
    let out = feed(&mut e, &[elsewhere("x-1", "2026-11-21T10:00:00Z")]);
    assert_eq!(changes(&out), vec![]);

    // A month and a bit after the first view, nothing from her: the first one has left
    // the window (at most a 32nd of it late), and she is out.
    let out = feed(&mut e, &[elsewhere("x-2", "2026-12-03T12:00:00Z")]);
    assert_eq!(changes(&out), vec![change("browsers", "exited", "time")]);
    let lea_id = on_topic(&out, "audiences.changes")[0]["key"].clone();
    let record = e.golden_record(lea_id.as_str().unwrap()).unwrap().unwrap();
    assert_eq!(record["audiences"], json!([]));
    assert!(
        record["traits"]["views"].as_f64().unwrap() < 3.0,
        "{}",
        record["traits"]
    );

    // Months later every view has left: no timer is left to fire, nothing more happens.
    let out = feed(&mut e, &[elsewhere("x-3", "2027-03-01T00:00:00Z")]);
    assert_eq!(changes(&out), vec![]);
}

#[test]
fn the_days_of_days_since_turn_at_the_time_of_day_of_their_time() {
    let mut e = engine(config(&[("recent", "days_since(last_seen) < 2")], &[]));
    let out = feed(
        &mut e,
        &[
            lea("2026-11-01T09:00:00Z"),
            view("v-1", "web", "2026-11-01T15:30:00Z"),
        ],
    );
    assert_eq!(changes(&out), vec![change("recent", "entered", "event")]);
    let lea_id = on_topic(&out, "audiences.changes")[0]["key"].clone();
    // Léa's changes (the devices that move the clock are customers too, seen just now).
    let hers = |out: &[Value]| -> Vec<(String, String, String)> {
        let mine: Vec<Value> = out
            .iter()
            .filter(|o| o["topic"] == "audiences.changes" && o["key"] == lea_id)
            .cloned()
            .collect();
        changes(&mine)
    };
    // Two whole days since her last event at 15:30 two days on, decided once the clock
    // is the grace (5 minutes) past it: not at midnight, nor a day late.
    let out = feed(&mut e, &[elsewhere("x-1", "2026-11-03T15:34:00Z")]);
    assert_eq!(hers(&out), vec![]);
    let out = feed(&mut e, &[elsewhere("x-2", "2026-11-03T15:36:00Z")]);
    assert_eq!(hers(&out), vec![change("recent", "exited", "time")]);
    // Only growing from then on: nothing more to time.
    let out = feed(&mut e, &[elsewhere("x-3", "2027-03-01T00:00:00Z")]);
    assert_eq!(hers(&out), vec![]);
}

#[test]
fn a_merge_adds_up_the_windows_and_the_merged_away_id_exits_its_audiences() {
    let defs = [BROWSERS, ("viewers", "count(product_view, 30d) >= 1")];
    let mut e = engine(config(&defs, &[]));
    // Léa's account with two web views; an unknown visitor (a cookie) with one.
    let cookie_view = event(
        "c-1",
        "web",
        "product_view",
        "2026-11-20T10:30:00Z",
        json!({"identifiers": {"cookie_id": "c-77"}}),
    );
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            view("v-1", "web", "2026-11-20T10:00:00Z"),
            view("v-2", "web", "2026-11-20T10:05:00Z"),
            cookie_view,
        ],
    );
    assert_eq!(
        changes(&out),
        vec![
            change("viewers", "entered", "event"),
            change("viewers", "entered", "event")
        ]
    );
    // She logs in on that browser: one customer, three views.
    let login = event(
        "l-1",
        "web",
        "login",
        "2026-11-20T11:00:00Z",
        json!({"identifiers": {"account_id": "A-1", "cookie_id": "c-77"}}),
    );
    let out = feed(&mut e, &[login]);
    let merge = &on_topic(&out, "identity.changes")[0]["value"];
    let survivor = merge["customer_id"].as_str().unwrap();
    let merged = merge["merged_ids"][0].as_str().unwrap();
    let by_key: Vec<(String, (String, String, String))> = on_topic(&out, "audiences.changes")
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                changes(&[(*o).clone()])[0].clone(),
            )
        })
        .collect();
    assert_eq!(
        by_key,
        vec![
            (merged.to_string(), change("viewers", "exited", "merge")),
            (survivor.to_string(), change("browsers", "entered", "event")),
        ]
    );
    // The id merged away keeps nothing: no audiences, no timer; the survivor one timer.
    let keys: Vec<String> = e
        .store()
        .audit_scan()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .filter(|k| k.starts_with("p/au/") || (k.starts_with("p/tm/") && k.contains("audiences")))
        .collect();
    assert!(!keys.iter().any(|k| k.contains(merged)), "{keys:?}");
    assert_eq!(
        keys.iter().filter(|k| k.contains(survivor)).count(),
        2,
        "{keys:?}"
    );
}

#[test]
fn erasure_exits_every_audience_and_leaves_nothing() {
    let mut e = engine(config(&[("viewers", "count(product_view, 30d) >= 1")], &[]));
    feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            view("v-1", "web", "2026-11-20T10:00:00Z"),
        ],
    );
    let erase = json!({"request_id": "dpo-1", "kind": "erase",
                       "identifier": {"type": "email", "value": "lea@example.org"}})
    .to_string();
    let out = feed(&mut e, &[erase]);
    assert_eq!(changes(&out), vec![change("viewers", "exited", "erasure")]);
    let leftover: Vec<String> = e
        .store()
        .audit_scan()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .filter(|k| k.starts_with("p/au/") || (k.starts_with("p/tm/") && k.contains("audiences")))
        .collect();
    assert_eq!(leftover, Vec::<String>::new());
}

#[test]
fn traits_are_computed_into_the_golden_record_and_audiences_read_them() {
    let traits = [
        ("spent_90d", "sum(purchase, amount, 90d)"),
        ("city", "person.address.city"),
        ("last_order", "orders.last_order_at"),
        ("avg_basket", "orders.totals.EUR / orders.count"),
        (
            "climbing_items",
            r#"sum(purchase where sku = "CLIMB-42", items, 90d)"#,
        ),
    ];
    let audiences = [("big_spenders", "traits.spent_90d > 200")];
    let mut e = engine(config(&audiences, &traits));
    let purchase = |id: &str, at: &str, total: f64, qty: u32| {
        event(
            id,
            "store",
            "purchase",
            at,
            json!({"identifiers": {"email": "lea@example.org"},
                   "order": {"order_id": id, "total": total, "currency": "EUR",
                             "items": [{"sku": "CLIMB-42", "quantity": qty, "unit_price": total / f64::from(qty)}]}}),
        )
    };
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            purchase("t-1", "2026-11-20T12:00:00Z", 129.9, 1),
        ],
    );
    let traits = &last_profile(&out)["traits"];
    assert_eq!(
        traits,
        &json!({"spent_90d": 129.9, "city": "Lyon", "last_order": "2026-11-20T12:00:00Z",
                "avg_basket": 129.9, "climbing_items": 1.0})
    );
    assert_eq!(changes(&out), vec![]);
    let out = feed(&mut e, &[purchase("t-2", "2026-11-21T12:00:00Z", 100.0, 2)]);
    assert_eq!(
        changes(&out),
        vec![change("big_spenders", "entered", "event")]
    );
    let traits = &last_profile(&out)["traits"];
    assert_eq!(traits["avg_basket"], 114.95);
    assert_eq!(traits["climbing_items"], 3.0);
}

#[test]
fn the_same_events_in_another_order_give_the_same_audiences() {
    let defs = [BROWSERS, ("viewers", "count(product_view, 30d) >= 1")];
    let lines = vec![
        lea("2026-11-20T09:00:00Z"),
        view("v-1", "web", "2026-11-20T10:00:00Z"),
        view("v-2", "app", "2026-11-20T10:05:00Z"),
        view("v-3", "web", "2026-11-20T10:06:00Z"),
        view("v-4", "web", "2026-11-20T10:07:00Z"),
        elsewhere("x-1", "2026-11-20T12:00:00Z"),
    ];
    let audiences_of = |lines: &[String]| {
        let mut e = engine(config(&defs, &[("views", "count(product_view, 30d)")]));
        feed(&mut e, lines);
        let mut seen: Vec<(Value, Value)> = e
            .golden_records()
            .unwrap()
            .into_iter()
            .map(|r| (r["audiences"].clone(), r["traits"].clone()))
            .collect();
        seen.sort_by_key(|s| s.0.to_string() + &s.1.to_string());
        seen
    };
    let forward = audiences_of(&lines);
    let mut reversed = lines.clone();
    reversed[1..].reverse();
    assert_eq!(forward, audiences_of(&reversed));
    assert!(forward.contains(&(json!(["browsers", "viewers"]), json!({"views": 4.0}))));
}

#[test]
fn without_definitions_the_golden_record_has_neither_audiences_nor_traits() {
    let mut e = engine(EngineConfig::default());
    let out = feed(&mut e, &[lea("2026-11-20T09:00:00Z")]);
    let record = last_profile(&out);
    assert!(record.get("audiences").is_none() && record.get("traits").is_none());
    assert!(on_topic(&out, "audiences.changes").is_empty());
}

#[test]
fn a_definition_that_does_not_compile_is_refused_with_its_name_and_position() {
    let bad = config(
        &[(
            "fans",
            "count(product_view, 30d) >= 3\n  and cout(purchase, 7d) > 1",
        )],
        &[],
    );
    let err = bad.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("engine.audiences.fans: line 2, column 7: unknown function `cout`"),
        "{err}"
    );
    let not_a_condition = config(&[("n", "count(purchase, 7d)")], &[]);
    let err = not_a_condition.validate().unwrap_err().to_string();
    assert!(
        err.contains("engine.audiences.n: line 1, column 1"),
        "{err}"
    );
    // Traits are published to every consumer: no contact data in them.
    for (source, path) in [
        ("identifiers.email", "identifiers.email"),
        (
            "exists(person.address) and person.address.postal_code",
            "person.address",
        ),
        (
            "orders.count + 0 * days_since(person.address.line1)",
            "person.address.line1",
        ),
    ] {
        let err = config(&[], &[("contact", source)])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("engine.traits.contact: line 1, column "),
            "{err}"
        );
        assert!(
            err.contains(&format!("`{path}`: a trait is published")),
            "{err}"
        );
    }
    config(
        &[("mailable", "exists(identifiers.email)")],
        &[("city", "person.address.city")],
    )
    .validate()
    .unwrap();
    let badly_named = config(&[], &[("Avg Basket", "orders.count")]);
    let err = badly_named.validate().unwrap_err().to_string();
    assert!(err.contains("engine.traits.Avg Basket"), "{err}");
}
