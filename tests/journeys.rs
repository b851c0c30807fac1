//! Journeys of the configuration, end to end through replay: the three sequences of the
//! issue (viewed three times in 24 h and no cart; a purchase, then no visit for 60 days;
//! a reminder sent, then no purchase within 48 h), the same events in another order,
//! caps, quiet hours, suppression by consent and by a recent purchase, merges, erasure,
//! and definitions that do not compile.

mod common;

use std::collections::BTreeMap;

use common::{elsewhere, event, feed, lea_emailable as lea, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::{EngineConfig, JourneyConfig};
use unicus::engine::Engine;
use unicus::store::Store;

fn journey(entry: &str, unless: Option<&str>, wait: &str) -> JourneyConfig {
    JourneyConfig {
        entry: entry.into(),
        when: None,
        unless: unless.map(String::from),
        wait: wait.into(),
        purposes: Some(vec![unicus::model::Purpose::Marketing]),
        cap: None,
        quiet_hours: None,
        suppress_after_purchase: None,
        per: None,
        enabled: true,
    }
}

/// Product viewed three times in 24 h, no cart: reminded two hours after the third view.
fn browse_no_cart() -> JourneyConfig {
    JourneyConfig {
        when: Some("count(product_view, 24h) >= 3".into()),
        ..journey("product_view", Some("cart_add"), "2h")
    }
}

fn config(journeys: &[(&str, JourneyConfig)]) -> EngineConfig {
    EngineConfig {
        journeys: journeys
            .iter()
            .map(|(name, j)| (name.to_string(), j.clone()))
            .collect::<BTreeMap<_, _>>(),
        ..EngineConfig::default()
    }
}

fn engine(config: EngineConfig) -> Engine {
    config.validate().unwrap();
    Engine::new(config, Store::temporary().unwrap()).unwrap()
}

fn by_lea(id: &str, kind: &str, at: &str) -> String {
    event(
        id,
        "web",
        kind,
        at,
        json!({"identifiers": {"account_id": "A-1"}}),
    )
}

fn purchase(id: &str, at: &str) -> String {
    event(
        id,
        "store",
        "purchase",
        at,
        json!({"identifiers": {"email": "lea@example.org"},
               "order": {"order_id": format!("O-{id}"), "total": 40.0, "currency": "EUR"}}),
    )
}

/// The trigger records of a journey, checked to be keyed by their customer.
fn triggers<'a>(out: &'a [Value], journey: &str) -> Vec<&'a Value> {
    on_topic(out, &format!("triggers.{journey}"))
        .into_iter()
        .map(|o| {
            assert_eq!(
                o["key"], o["value"]["customer_id"],
                "keyed by customer: {o}"
            );
            assert_eq!(o["value"]["journey"], journey);
            &o["value"]
        })
        .collect()
}

#[test]
fn three_views_in_a_day_without_a_cart_trigger_two_hours_after_the_third() {
    let mut e = engine(config(&[("browse_no_cart", browse_no_cart())]));
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            by_lea("v-1", "product_view", "2026-11-20T10:00:00Z"),
            by_lea("v-2", "product_view", "2026-11-20T10:05:00Z"),
            // Two views: `when` does not hold, nothing waits.
            elsewhere("x-1", "2026-11-20T13:00:00Z"),
        ],
    );
    assert!(triggers(&out, "browse_no_cart").is_empty());

    let out = feed(
        &mut e,
        &[
            by_lea("v-3", "product_view", "2026-11-20T14:00:00Z"),
            elsewhere("x-2", "2026-11-20T16:04:00Z"),
        ],
    );
    // Not due yet: timers fire `activation.grace_ms` (5 minutes) after their time,
    // so that late events still count.
    assert!(triggers(&out, "browse_no_cart").is_empty(), "not due yet");

    let out = feed(&mut e, &[elsewhere("x-3", "2026-11-20T16:06:00Z")]);
    let fired = triggers(&out, "browse_no_cart");
    assert_eq!(fired.len(), 1, "{out:#?}");
    let t = fired[0];
    assert_eq!(t["entered_at"], "2026-11-20T14:00:00Z");
    assert_eq!(t["entry_event_id"], "v-3");
    assert_eq!(t["due_at"], "2026-11-20T16:00:00Z");
    assert_eq!(t["purpose"], "marketing");
    assert_eq!(t["channels_allowed"], json!(["email"]));
    assert_eq!(
        t["trigger_id"],
        format!(
            "browse_no_cart:{}:{}",
            t["customer_id"].as_str().unwrap(),
            1_795_183_200_000i64
        )
    );
    assert_eq!(e.stats().journey_triggers, 1);

    // Fired once: nothing more as time goes on.
    let out = feed(&mut e, &[elsewhere("x-4", "2026-11-25T00:00:00Z")]);
    assert!(triggers(&out, "browse_no_cart").is_empty());
}

#[test]
fn a_cart_within_the_wait_ends_it_whatever_the_order_the_events_arrive_in() {
    let lines = [
        lea("2026-11-20T09:00:00Z"),
        by_lea("v-1", "product_view", "2026-11-20T10:00:00Z"),
        by_lea("v-2", "product_view", "2026-11-20T10:05:00Z"),
        by_lea("v-3", "product_view", "2026-11-20T10:10:00Z"),
        by_lea("c-1", "cart_add", "2026-11-20T11:00:00Z"),
    ];
    let clock = elsewhere("x-1", "2026-11-21T00:00:00Z");
    // In order; then the cart first (sent late by another channel's buffer: its event
    // time is after the views, it arrives before them).
    let orders: [Vec<String>; 2] = [
        lines.to_vec(),
        vec![
            lines[0].clone(),
            lines[4].clone(),
            lines[1].clone(),
            lines[3].clone(),
            lines[2].clone(),
        ],
    ];
    for lines in orders {
        let mut e = engine(config(&[("browse_no_cart", browse_no_cart())]));
        let mut out = feed(&mut e, &lines);
        out.extend(feed(&mut e, std::slice::from_ref(&clock)));
        assert!(triggers(&out, "browse_no_cart").is_empty(), "{lines:?}");
        assert_eq!(e.stats().journey_triggers + e.stats().journey_suppressed, 0);
    }

    // A cart *before* the views (in event time) ends nothing, in either order.
    let early_cart = by_lea("c-0", "cart_add", "2026-11-20T09:30:00Z");
    for first in [true, false] {
        let mut e = engine(config(&[("browse_no_cart", browse_no_cart())]));
        let mut lines = lines[..4].to_vec();
        if first {
            lines.insert(1, early_cart.clone());
        } else {
            lines.push(early_cart.clone());
        }
        lines.push(clock.clone());
        let out = feed(&mut e, &lines);
        let fired = triggers(&out, "browse_no_cart");
        assert_eq!(fired.len(), 1, "cart first: {first}");
        assert_eq!(fired[0]["due_at"], "2026-11-20T12:10:00Z");
    }
}

#[test]
fn a_purchase_then_no_visit_for_sixty_days() {
    let lapsed = (
        "lapsed_buyer",
        journey("purchase", Some("page_view"), "60d"),
    );
    let mut e = engine(config(std::slice::from_ref(&lapsed)));
    let out = feed(
        &mut e,
        &[
            lea("2026-01-01T09:00:00Z"),
            purchase("p-1", "2026-01-10T10:00:00Z"),
            // A visit after 30 days: the wait is over, no trigger.
            by_lea("w-1", "page_view", "2026-02-09T10:00:00Z"),
            elsewhere("x-1", "2026-04-01T00:00:00Z"),
        ],
    );
    assert!(triggers(&out, "lapsed_buyer").is_empty());

    // Another purchase, and no visit since: due 60 days later.
    let out = feed(
        &mut e,
        &[
            purchase("p-2", "2026-04-02T10:00:00Z"),
            elsewhere("x-2", "2026-06-01T10:04:00Z"),
        ],
    );
    assert!(triggers(&out, "lapsed_buyer").is_empty());
    let out = feed(&mut e, &[elsewhere("x-3", "2026-06-01T10:06:00Z")]);
    let fired = triggers(&out, "lapsed_buyer");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["entry_event_id"], "p-2");
    assert_eq!(fired[0]["due_at"], "2026-06-01T10:00:00Z");
}

#[test]
fn a_reminder_then_no_purchase_within_48_hours_and_a_filter_on_the_entry() {
    let reminded = (
        "no_purchase_after_reminder",
        journey(
            r#"email_sent where campaign = "cart-reminder""#,
            Some("purchase"),
            "48h",
        ),
    );
    let mut e = engine(config(std::slice::from_ref(&reminded)));
    let sent = |id: &str, campaign: &str, at: &str| {
        event(
            id,
            "crm",
            "email_sent",
            at,
            json!({"identifiers": {"email": "lea@example.org"},
                   "attributes": {"campaign": campaign}}),
        )
    };
    let out = feed(
        &mut e,
        &[
            lea("2026-11-01T09:00:00Z"),
            // Another campaign: not an entry.
            sent("m-0", "newsletter", "2026-11-01T10:00:00Z"),
            sent("m-1", "cart-reminder", "2026-11-02T10:00:00Z"),
            purchase("p-1", "2026-11-03T09:00:00Z"),
            sent("m-2", "cart-reminder", "2026-11-10T10:00:00Z"),
            elsewhere("x-1", "2026-11-13T00:00:00Z"),
        ],
    );
    let fired = triggers(&out, "no_purchase_after_reminder");
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0]["entry_event_id"], "m-2");
    assert_eq!(fired[0]["due_at"], "2026-11-12T10:00:00Z");
}

#[test]
fn caps_quiet_hours_consent_and_a_recent_purchase_hold_triggers_back() {
    // Every product view waits an hour; at most one trigger in 7 days; none at night.
    let nudge = JourneyConfig {
        cap: Some("1/7d".into()),
        quiet_hours: Some("21-8".into()),
        suppress_after_purchase: Some("3d".into()),
        ..journey("product_view", None, "1h")
    };
    let mut e = engine(config(&[("nudge", nudge)]));
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            // Due at 21:30: quiet, so at 08:00 the next morning.
            by_lea("v-1", "product_view", "2026-11-20T20:30:00Z"),
            elsewhere("x-1", "2026-11-21T08:04:00Z"),
        ],
    );
    assert!(triggers(&out, "nudge").is_empty());
    let out = feed(&mut e, &[elsewhere("x-2", "2026-11-21T08:06:00Z")]);
    let fired = triggers(&out, "nudge");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["due_at"], "2026-11-21T08:00:00Z");

    // Two days later: within the cap's 7 days, held back.
    let out = feed(
        &mut e,
        &[
            by_lea("v-2", "product_view", "2026-11-23T10:00:00Z"),
            elsewhere("x-3", "2026-11-23T12:00:00Z"),
        ],
    );
    assert!(triggers(&out, "nudge").is_empty());
    assert_eq!(e.stats().journey_suppressed, 1);

    // Past the cap, but she bought two days ago: held back.
    let out = feed(
        &mut e,
        &[
            purchase("p-1", "2026-11-28T10:00:00Z"),
            by_lea("v-3", "product_view", "2026-11-30T10:00:00Z"),
            elsewhere("x-4", "2026-11-30T12:00:00Z"),
        ],
    );
    assert!(triggers(&out, "nudge").is_empty());
    assert_eq!(e.stats().journey_suppressed, 2);

    // Past both; then she refuses marketing e-mails: no channel left, held back.
    let out = feed(
        &mut e,
        &[
            by_lea("v-4", "product_view", "2026-12-05T10:00:00Z"),
            event(
                "no-1",
                "crm",
                "consent_update",
                "2026-12-05T10:30:00Z",
                json!({"identifiers": {"email": "lea@example.org"},
                       "consent": [{"purpose": "marketing", "channel": "email", "granted": false}]}),
            ),
            elsewhere("x-5", "2026-12-05T12:00:00Z"),
        ],
    );
    assert!(triggers(&out, "nudge").is_empty());
    assert_eq!(e.stats().journey_suppressed, 3);
    assert_eq!(e.stats().journey_triggers, 1);
}

#[test]
fn a_merge_puts_waits_together_and_erasure_leaves_nothing() {
    let mut e = engine(config(&[(
        "viewed",
        journey("product_view", Some("cart_add"), "1h"),
    )]));
    let cookie = |id: &str, kind: &str, at: &str| {
        event(
            id,
            "web",
            kind,
            at,
            json!({"identifiers": {"cookie_id": "c-77"}}),
        )
    };
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            by_lea("v-1", "product_view", "2026-11-20T10:00:00Z"),
            // The visitor (a cookie, not known yet to be her) adds to a cart later.
            cookie("c-1", "cart_add", "2026-11-20T10:20:00Z"),
            cookie("v-2", "product_view", "2026-11-20T10:10:00Z"),
            // She logs in on that browser: one customer, whose cart ends both waits.
            event(
                "l-1",
                "web",
                "login",
                "2026-11-20T10:30:00Z",
                json!({"identifiers": {"account_id": "A-1", "cookie_id": "c-77"}}),
            ),
            elsewhere("x-1", "2026-11-20T13:00:00Z"),
        ],
    );
    assert!(triggers(&out, "viewed").is_empty(), "{out:#?}");

    let out = feed(
        &mut e,
        &[by_lea("v-3", "product_view", "2026-11-20T14:00:00Z")],
    );
    let customer = on_topic(&out, "profiles.merged")[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let erase = json!({"request_id": "dpo-1", "kind": "erase",
                       "identifier": {"type": "email", "value": "lea@example.org"}})
    .to_string();
    let out = feed(&mut e, &[erase, elsewhere("x-2", "2026-11-20T16:00:00Z")]);
    assert!(triggers(&out, "viewed").is_empty());
    let left: Vec<String> = e
        .store()
        .audit_scan()
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .filter(|k| k.contains(&customer))
        .filter(|k| k.starts_with("p/au/") || k.starts_with("p/tm/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn journeys_alone_add_nothing_to_golden_records() {
    let mut e = engine(config(&[("browse_no_cart", browse_no_cart())]));
    let out = feed(&mut e, &[lea("2026-11-20T09:00:00Z")]);
    let record = &on_topic(&out, "profiles.merged")[0]["value"];
    assert!(record.get("audiences").is_none(), "{record}");
    assert!(record.get("traits").is_none(), "{record}");
}

#[test]
fn a_journey_that_does_not_compile_is_refused_with_its_field_and_position() {
    let refused = |j: JourneyConfig| config(&[("j", j)]).validate().unwrap_err().to_string();
    let mut bad = browse_no_cart();
    bad.when = Some("count(product_view, 24h) >= 3 and\n  cout(cart_add, 1d) = 0".into());
    assert_eq!(
        refused(bad),
        "engine.journeys.j.when: line 2, column 3: unknown function `cout`: did you mean \
         `count`? the functions are count, sum, allowed, exists, days_since"
    );
    let bad = journey("product_view where", None, "2h");
    assert!(refused(bad).starts_with("engine.journeys.j.entry: line 1, column 19: "));
    let bad = journey("product_view", None, "2 hours");
    assert!(refused(bad).starts_with("engine.journeys.j.wait: line 1, column "));
    let bad = JourneyConfig {
        cap: Some("1/7x".into()),
        ..journey("product_view", None, "2h")
    };
    assert!(refused(bad).starts_with("engine.journeys.j.cap: line 1, column 3"));
    let bad = JourneyConfig {
        quiet_hours: Some("21-25".into()),
        ..journey("product_view", None, "2h")
    };
    assert!(refused(bad).contains("`25` is not an hour"));
    let bad = JourneyConfig {
        purposes: Some(vec![]),
        ..journey("product_view", None, "2h")
    };
    assert!(refused(bad).starts_with("engine.journeys.j.purposes: "));

    // Built-in triggers keep their topics; names are those of audiences.
    let err = config(&[("purchase_completed", browse_no_cart())])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("built-in trigger"), "{err}");
    let err = config(&[("Bad-Name", browse_no_cart())])
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("engine.journeys.Bad-Name: a name is"),
        "{err}"
    );

    // An unknown key in the configuration file is refused.
    let toml = "[engine.journeys.j]\nentry = \"product_view\"\nwait = \"2h\"\nwiat = \"3h\"\n";
    let err = unicus::settings::Settings::from_toml_and_env(toml, [])
        .unwrap_err()
        .to_string();
    assert!(err.contains("wiat"), "{err}");
}

#[test]
fn audience_states_written_before_journeys_are_still_read() {
    use unicus::engine::profile::audiences::AudienceStateBeforeJourneys;
    let mut config = config(&[("viewed", journey("product_view", None, "1h"))]);
    config.audiences = [(
        "viewers".to_string(),
        "count(product_view, 30d) >= 1".to_string(),
    )]
    .into();
    let mut e = engine(config);
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            by_lea("v-1", "product_view", "2026-11-20T10:00:00Z"),
        ],
    );
    assert_eq!(on_topic(&out, "audiences.changes").len(), 1);
    let customer = on_topic(&out, "audiences.changes")[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    // The state as the release before journeys wrote it: in `viewers`, no windows.
    let old = AudienceStateBeforeJourneys {
        members: ["viewers".to_string()].into(),
        ..AudienceStateBeforeJourneys::default()
    };
    let key = [b"p/au/".as_slice(), customer.as_bytes()].concat();
    e.store_mut().put(key, &old).unwrap();
    e.commit().unwrap();
    // Read back: still in `viewers` (no second `entered`), and her next view waits.
    let out = feed(
        &mut e,
        &[
            by_lea("v-2", "product_view", "2026-11-21T10:00:00Z"),
            elsewhere("x-1", "2026-11-21T12:00:00Z"),
        ],
    );
    assert!(on_topic(&out, "audiences.changes").is_empty(), "{out:#?}");
    assert_eq!(triggers(&out, "viewed").len(), 1);
}

/// The same events in shuffled orders give the same triggers, as long as each arrives
/// before the waits it concerns are decided (here a grace of three days: every order
/// of the stream qualifies). Journeys without `when`, which reads the customer as its
/// entry arrives.
#[test]
fn shuffled_events_give_the_same_triggers() {
    let viewed = ("viewed", journey("product_view", Some("cart_add"), "2h"));
    let lapsed = ("lapsed", journey("purchase", Some("page_view"), "1d"));
    let times = [
        ("v-1", "product_view", "2026-11-20T10:00:00Z"),
        ("c-1", "cart_add", "2026-11-20T11:00:00Z"),
        ("v-2", "product_view", "2026-11-20T13:00:00Z"),
        ("w-1", "page_view", "2026-11-20T14:00:00Z"),
        ("v-2b", "product_view", "2026-11-20T14:30:00Z"),
        ("v-3", "product_view", "2026-11-21T09:00:00Z"),
        ("c-2", "cart_add", "2026-11-21T12:00:00Z"),
        ("v-4", "product_view", "2026-11-21T16:00:00Z"),
        ("w-2", "page_view", "2026-11-21T17:00:00Z"),
    ];
    let purchases = [
        purchase("p-1", "2026-11-20T12:00:00Z"),
        purchase("p-2", "2026-11-21T08:00:00Z"),
    ];
    let mut lines: Vec<String> = times
        .iter()
        .map(|(id, kind, at)| by_lea(id, kind, at))
        .chain(purchases)
        .collect();
    let run = |lines: &[String]| {
        let mut config = config(&[viewed.clone(), lapsed.clone()]);
        config.activation.grace_ms = 3 * 24 * 3_600_000;
        let mut e = engine(config);
        let mut all = vec![lea("2026-11-20T09:00:00Z")];
        all.extend(lines.iter().cloned());
        all.push(elsewhere("x-1", "2026-11-30T00:00:00Z"));
        let out = feed(&mut e, &all);
        let mut fired: Vec<(String, String, String)> = ["viewed", "lapsed"]
            .iter()
            .flat_map(|j| triggers(&out, j))
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap().to_string();
                (s("journey"), s("entry_event_id"), s("due_at"))
            })
            .collect();
        fired.sort();
        fired
    };
    let expected = run(&lines);
    // v-1 is ended by c-1; v-2 by v-2b (another view within it: w-1 is no cart), due at
    // 16:30; v-3 at 11:00 (c-2 comes after), v-4 at 18:00; p-1 is ended by w-1, p-2 by
    // w-2.
    assert_eq!(
        expected,
        vec![
            (
                "viewed".into(),
                "v-2b".into(),
                "2026-11-20T16:30:00Z".into()
            ),
            ("viewed".into(), "v-3".into(), "2026-11-21T11:00:00Z".into()),
            ("viewed".into(), "v-4".into(), "2026-11-21T18:00:00Z".into()),
        ]
    );
    let mut seed: u64 = 7;
    for _ in 0..20 {
        for i in (1..lines.len()).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            lines.swap(i, (seed >> 33) as usize % (i + 1));
        }
        assert_eq!(run(&lines), expected, "{lines:#?}");
    }
}

fn cart(id: &str, cart_id: &str, at: &str) -> String {
    let items = json!([{"sku": "CLIMB-42", "quantity": 1, "unit_price": 129.90}]);
    common::cart_add(id, cart_id, at, items)
}

/// The cart journey from a configuration file's text.
fn with_cart_journey(toml: &str) -> EngineConfig {
    let settings = unicus::settings::Settings::from_toml_and_env(toml, []).unwrap();
    settings.engine
}

/// Cart abandonment is the journey `cart_abandoned`, shipped by default: a
/// configuration sets its wait, quiet hours and suppression by a recent purchase as for
/// any journey, and its records stay those of `triggers.cart_abandoned`.
#[test]
fn the_cart_journey_takes_its_wait_quiet_hours_and_recent_purchase_from_its_definition() {
    let mut e = engine(with_cart_journey(
        "[engine.journeys.cart_abandoned]\nwait = \"30m\"\nquiet_hours = \"21-8\"\n\
         suppress_after_purchase = \"2d\"\n",
    ));
    // Due 30 minutes after the cart (not the hour of `activation`), once the clock is
    // five minutes past.
    let out = feed(
        &mut e,
        &[
            lea("2026-11-20T09:00:00Z"),
            cart("c-1", "K-1", "2026-11-20T10:00:00Z"),
            elsewhere("x-1", "2026-11-20T10:34:00Z"),
        ],
    );
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    let out = feed(&mut e, &[elsewhere("x-2", "2026-11-20T10:36:00Z")]);
    let fired = on_topic(&out, "triggers.cart_abandoned");
    assert_eq!(fired.len(), 1, "{out:#?}");
    assert_eq!(fired[0]["value"]["cart_id"], "K-1");
    assert_eq!(fired[0]["value"]["due_at"], "2026-11-20T10:30:00Z");
    assert_eq!(fired[0]["value"]["purpose"], "marketing");
    // Due at 21:15, in the quiet hours: at 08:00 the next morning.
    let out = feed(
        &mut e,
        &[
            cart("c-2", "K-2", "2026-11-20T20:45:00Z"),
            elsewhere("x-3", "2026-11-21T07:00:00Z"),
        ],
    );
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    let out = feed(&mut e, &[elsewhere("x-4", "2026-11-21T08:06:00Z")]);
    let fired = on_topic(&out, "triggers.cart_abandoned");
    assert_eq!(fired.len(), 1, "{out:#?}");
    assert_eq!(fired[0]["value"]["cart_id"], "K-2");
    assert_eq!(fired[0]["value"]["due_at"], "2026-11-21T08:00:00Z");
    // An order an hour before a new cart: within the 2 days, held back and counted.
    let out = feed(
        &mut e,
        &[
            purchase("p-1", "2026-11-22T09:00:00Z"),
            cart("c-3", "K-3", "2026-11-22T10:00:00Z"),
            elsewhere("x-5", "2026-11-22T12:00:00Z"),
        ],
    );
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    assert_eq!(e.stats().carts_fired, 2);
    assert_eq!(e.stats().carts_suppressed, 1);
    // Held back once is over: the cart does not fire later either.
    let out = feed(&mut e, &[elsewhere("x-6", "2026-11-26T12:00:00Z")]);
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
}

/// `enabled = false` turns the shipped cart journey off; a configuration that defines
/// other journeys only keeps it as shipped.
#[test]
fn the_cart_journey_is_shipped_and_can_be_turned_off() {
    let events = [
        lea("2026-11-20T09:00:00Z"),
        cart("c-1", "K-1", "2026-11-20T10:00:00Z"),
        elsewhere("x-1", "2026-11-20T12:00:00Z"),
    ];
    let mut off = engine(with_cart_journey(
        "[engine.journeys.cart_abandoned]\nenabled = false\n",
    ));
    let out = feed(&mut off, &events);
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    assert_eq!(off.stats().carts_fired + off.stats().carts_suppressed, 0);
    // The cart is still kept and shown.
    let customer = off.find_customer("account_id", "A-1").unwrap().unwrap();
    let merged = on_topic(&out, "profiles.merged");
    let hers = merged.iter().rev().find(|r| r["key"] == customer.as_str());
    assert_eq!(hers.unwrap()["value"]["open_carts"], 1);

    // Its topic is the contract's, listed once among the outputs.
    let config = with_cart_journey("[engine.journeys.cart_abandoned]\nquiet_hours = \"21-8\"\n");
    let topics = unicus::model::output::Topic::outputs(&config);
    let carts = topics
        .iter()
        .filter(|t| t.name() == "triggers.cart_abandoned");
    assert_eq!(carts.count(), 1);
    // A journey turned off is not run and has no topic.
    let config = with_cart_journey(
        "[engine.journeys.viewed]\nentry = \"product_view\"\nwait = \"1h\"\nenabled = false\n",
    );
    let topics = unicus::model::output::Topic::outputs(&config);
    assert!(topics.iter().all(|t| t.name() != "triggers.viewed"));

    let mut other = engine(with_cart_journey(
        "[engine.journeys.viewed]\nentry = \"product_view\"\nwait = \"1h\"\n",
    ));
    let out = feed(&mut other, &events);
    let fired = on_topic(&out, "triggers.cart_abandoned");
    assert_eq!(fired.len(), 1, "{out:#?}");
    assert_eq!(fired[0]["value"]["due_at"], "2026-11-20T11:00:00Z");
}

#[test]
fn a_cart_journey_that_sets_what_carts_decide_is_refused_with_its_field() {
    let refused = |toml: &str| {
        unicus::settings::Settings::from_toml_and_env(toml, [])
            .unwrap_err()
            .to_string()
    };
    let err = refused("[engine.journeys.cart_abandoned]\nentry = \"cart_add\"\nwait = \"1h\"\n");
    assert!(
        err.contains("engine.journeys.cart_abandoned.entry: "),
        "{err}"
    );
    let err = refused("[engine.journeys.cart_abandoned]\nunless = \"purchase\"\n");
    assert!(
        err.contains("engine.journeys.cart_abandoned.unless: "),
        "{err}"
    );
    let err = refused("[engine.journeys.cart_abandoned]\ncap = \"1/7d\"\n");
    assert!(err.contains("a cart fires at most once"), "{err}");
    let err = refused("[engine.journeys.cart_abandoned]\nper = \"customer\"\n");
    assert!(
        err.contains("engine.journeys.cart_abandoned.per: "),
        "{err}"
    );
    let err = refused("[engine.journeys.panier]\nper = \"cart\"\n");
    assert!(err.contains("engine.journeys.panier.per: "), "{err}");
    // Also beside the cart journey itself.
    let err = refused(
        "[engine.journeys.cart_abandoned]\nwait = \"2h\"\n[engine.journeys.panier]\nper = \"cart\"\n",
    );
    assert!(err.contains("engine.journeys.panier.per: "), "{err}");
    let err = refused("[engine.journeys.cart_abandoned]\nwait = \"1 hour\"\n");
    assert!(
        err.contains("engine.journeys.cart_abandoned.wait: line 1"),
        "{err}"
    );
    // `activation.cart_purposes = []`, accepted before the cart journey, still is: no
    // reminder, each held back and counted.
    let mut none = engine(with_cart_journey(
        "[engine.activation]\ncart_purposes = []\n",
    ));
    let out = feed(
        &mut none,
        &[
            lea("2026-11-20T09:00:00Z"),
            cart("c-1", "K-1", "2026-11-20T10:00:00Z"),
            elsewhere("x-1", "2026-11-20T12:00:00Z"),
        ],
    );
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    assert_eq!(none.stats().carts_suppressed, 1);
    let err = refused("[engine.journeys.cart_abandoned]\npurposes = []\n");
    assert!(
        err.contains("engine.journeys.cart_abandoned.purposes: "),
        "{err}"
    );
    // A journey of customers still needs its entry and wait.
    let err = refused("[engine.journeys.j]\nwait = \"1h\"\n");
    assert!(
        err.contains("engine.journeys.j.entry: line 1, column 1: `entry` is required"),
        "{err}"
    );
}
