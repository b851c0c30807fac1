//! Activation scenarios: abandoned carts across channels and consent, purchase
//! suppression, lifecycle changes by the passage of time, segment bands.

mod common;

use common::{cart_add, elsewhere, event, feed, on_topic};
use serde_json::{json, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::Engine;
use unicus::model::output::{OutputRecord, Payload};
use unicus::model::Purpose;
use unicus::store::Store;

fn engine() -> Engine {
    Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap()
}

fn ms(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_millis()
}

fn values(out: &[OutputRecord], topic: &str) -> Vec<Value> {
    out.iter()
        .filter(|r| r.topic.name() == topic)
        .filter_map(|r| match &r.payload {
            Payload::Json(v) => Some(v.clone()),
            _ => None,
        })
        .collect()
}

/// Léa: web account with email and phone, marketing allowed on email and SMS.
fn lea() -> String {
    event(
        "w-0",
        "web",
        "account_created",
        "2026-11-20T09:00:00Z",
        json!({"identifiers": {"account_id": "A-1", "email": "lea@example.org", "phone": "0611223344"},
               "person": {"first_name": "Léa", "last_name": "Martin"},
               "consent": [{"purpose": "marketing", "channel": "email", "granted": true},
                           {"purpose": "marketing", "channel": "sms", "granted": true}]}),
    )
}

fn web_cart(id: &str, at: &str) -> String {
    cart_add(
        id,
        "K-1",
        at,
        json!([{"sku": "CLIMB-42", "name": "Chaussons", "quantity": 1, "unit_price": 129.90},
               {"sku": "CHALK-1", "quantity": 2, "unit_price": 5.0}]),
    )
}

#[test]
fn a_web_cart_bought_in_store_gets_no_reminder() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            lea(),
            web_cart("w-1", "2026-11-20T10:00:00Z"),
            // Bought at the till 40 minutes later, known by her phone only.
            event(
                "pos-1",
                "store",
                "purchase",
                "2026-11-20T10:40:00Z",
                json!({"identifiers": {"phone": "+33 6 11 22 33 44"},
                       "order": {"order_id": "T-9", "total": 139.90, "currency": "EUR", "items": [
                           {"sku": "CLIMB-42", "quantity": 1, "unit_price": 129.90},
                           {"sku": "CHALK-1", "quantity": 2, "unit_price": 5.0}]}}),
            ),
            elsewhere("x-1", "2026-11-20T14:00:00Z"),
        ],
    );
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    let done = on_topic(&out, "triggers.purchase_completed");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["value"]["cancelled_carts"], json!(["K-1"]));
    assert_eq!(done[0]["value"]["channel"], "store");
    assert_eq!(
        done[0]["value"]["recently_purchased"],
        json!(["CHALK-1", "CLIMB-42"])
    );
    // Not later either, by the wall clock.
    assert!(e.tick(ms("2026-11-25T00:00:00Z")).unwrap().is_empty());
    assert_eq!(e.stats().carts_fired + e.stats().carts_suppressed, 0);
}

#[test]
fn timers_are_read_only_once_the_clock_reaches_the_next_one_due() {
    let mut e = engine();
    feed(&mut e, &[lea(), web_cart("w-1", "2026-11-20T10:00:00Z")]);
    // Timer keys the engine cannot read (no separator after the customer): a read of
    // the timers due drops those it meets.
    let unreadable = |at: &str| {
        let at = ms(at);
        [
            &b"p/tm/"[..],
            &((at as u64) ^ (1 << 63)).to_be_bytes(),
            b"cus_x",
        ]
        .concat()
    };
    let (before, after) = (
        unreadable("2026-11-20T10:50:00Z"),
        unreadable("2026-11-20T11:00:30Z"),
    );
    e.store_mut().put_raw(before.clone(), Vec::new());
    // Timers fire 5 minutes late (the grace for late events): at 10:55 the clock
    // passes 10:50 but not the cart's timer (11:00), and the timers are not read.
    let out = feed(&mut e, &[elsewhere("x-1", "2026-11-20T10:55:00Z")]);
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    assert!(e.store().get_raw(&before).unwrap().is_some());
    // Past the cart's timer they are: it fires, and the key due since is dropped.
    e.store_mut().put_raw(after.clone(), Vec::new());
    let out = feed(&mut e, &[elsewhere("x-2", "2026-11-20T11:06:00Z")]);
    assert_eq!(on_topic(&out, "triggers.cart_abandoned").len(), 1);
    assert!(e.store().get_raw(&after).unwrap().is_none());
}

#[test]
fn an_abandoned_cart_fires_once_after_the_delay_with_the_allowed_channels() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[
            lea(),
            web_cart("w-1", "2026-11-20T10:00:00Z"),
            // Before the delay plus grace: nothing yet.
            elsewhere("x-1", "2026-11-20T11:04:00Z"),
        ],
    );
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    let out = feed(&mut e, &[elsewhere("x-2", "2026-11-20T11:06:00Z")]);
    let fired = on_topic(&out, "triggers.cart_abandoned");
    assert_eq!(fired.len(), 1, "{out:#?}");
    let t = &fired[0]["value"];
    let customer = e.find_customer("account_id", "A-1").unwrap().unwrap();
    assert_eq!(t["customer_id"], json!(customer));
    assert_eq!(t["cart_id"], "K-1");
    assert_eq!(t["value"], 139.9);
    assert_eq!(t["items"].as_array().unwrap().len(), 2);
    assert_eq!(t["last_activity_at"], "2026-11-20T10:00:00Z");
    assert_eq!(t["due_at"], "2026-11-20T11:00:00Z");
    assert_eq!(t["channels_allowed"], json!(["email", "sms"]));
    assert_eq!(t["purpose"], "marketing");
    assert_eq!(t["preferred_channels"], json!(["web"]));
    // Never twice: more events, ticks, and the same cart seen again.
    let out = feed(
        &mut e,
        &[
            elsewhere("x-3", "2026-11-21T11:06:00Z"),
            web_cart("w-2", "2026-11-21T12:00:00Z"),
            elsewhere("x-4", "2026-11-22T12:00:00Z"),
        ],
    );
    assert!(on_topic(&out, "triggers.cart_abandoned").is_empty());
    assert!(values(
        &e.tick(ms("2026-12-01T00:00:00Z")).unwrap(),
        "triggers.cart_abandoned"
    )
    .is_empty());
    assert_eq!(e.stats().carts_fired, 1);
}

#[test]
fn an_idle_stream_fires_by_the_wall_clock() {
    let mut e = engine();
    feed(&mut e, &[lea(), web_cart("w-1", "2026-11-20T10:00:00Z")]);
    assert!(e.tick(ms("2026-11-20T11:04:59Z")).unwrap().is_empty());
    let out = e.tick(ms("2026-11-20T11:05:00Z")).unwrap();
    let fired = values(&out, "triggers.cart_abandoned");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["at"], "2026-11-20T11:05:00Z");
    // The cart is no longer open: the golden record says so at once, not at the
    // customer's next event.
    let golden = values(&out, "profiles.merged");
    assert_eq!(golden.len(), 1, "{out:#?}");
    assert_eq!(golden[0]["open_carts"], 0);
}

#[test]
fn a_consent_withdrawal_after_the_cart_removes_the_channel_from_the_trigger() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            lea(),
            web_cart("w-1", "2026-11-20T10:00:00Z"),
            event(
                "m-1",
                "email",
                "email_click",
                "2026-11-20T10:30:00Z",
                json!({"identifiers": {"email": "lea@example.org"},
                       "consent": [{"purpose": "marketing", "channel": "email", "granted": false}]}),
            ),
        ],
    );
    let out = e.tick(ms("2026-11-20T12:00:00Z")).unwrap();
    let fired = values(&out, "triggers.cart_abandoned");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["channels_allowed"], json!(["sms"]));
}

#[test]
fn no_allowed_channel_means_no_trigger_and_it_is_counted() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            lea(),
            web_cart("w-1", "2026-11-20T10:00:00Z"),
            event(
                "s-1",
                "service",
                "support_ticket",
                "2026-11-20T10:10:00Z",
                json!({"identifiers": {"account_id": "A-1"},
                       "consent": [{"purpose": "marketing", "channel": "all", "granted": false}]}),
            ),
        ],
    );
    let out = e.tick(ms("2026-11-20T12:00:00Z")).unwrap();
    assert!(values(&out, "triggers.cart_abandoned").is_empty());
    assert_eq!(e.stats().carts_suppressed, 1);
    assert_eq!(e.stats().carts_fired, 0);
}

#[test]
fn an_erasure_cancels_the_cart() {
    let mut e = engine();
    feed(
        &mut e,
        &[
            lea(),
            web_cart("w-1", "2026-11-20T10:00:00Z"),
            json!({"request_id": "r-1", "kind": "erase", "identifier": {"type": "account_id", "value": "A-1"}})
                .to_string(),
        ],
    );
    assert!(e.tick(ms("2026-11-21T00:00:00Z")).unwrap().is_empty());
}

#[test]
fn lifecycle_changes_by_the_passage_of_time_on_an_idle_stream() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[event(
            "p-1",
            "web",
            "purchase",
            "2026-01-10T10:00:00Z",
            json!({"identifiers": {"email": "old@example.org"},
                   "order": {"order_id": "O-1", "total": 50.0, "currency": "EUR"}}),
        )],
    );
    let changes = on_topic(&out, "triggers.lifecycle_changed");
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            &changes[0]["value"]["from"],
            &changes[0]["value"]["to"],
            &changes[0]["value"]["cause"]
        ),
        (&json!("prospect"), &json!("active"), &json!("event"))
    );
    // 181 days later: inactive, by time alone.
    assert!(e.tick(ms("2026-07-09T00:00:00Z")).unwrap().is_empty());
    let out = e.tick(ms("2026-07-10T10:05:00Z")).unwrap();
    let changes = values(&out, "triggers.lifecycle_changed");
    assert_eq!(changes.len(), 1, "{out:#?}");
    assert_eq!(
        (&changes[0]["from"], &changes[0]["to"], &changes[0]["cause"]),
        (&json!("active"), &json!("inactive"), &json!("time"))
    );
    let profile = values(&out, "profiles.merged");
    assert_eq!(profile[0]["lifecycle_stage"], "inactive");
    // Then dormant after a year, once.
    let out = e.tick(ms("2027-01-11T10:05:00Z")).unwrap();
    assert_eq!(
        values(&out, "triggers.lifecycle_changed")[0]["to"],
        "dormant"
    );
    assert!(e.tick(ms("2028-01-01T00:00:00Z")).unwrap().is_empty());
    // A new purchase brings the customer back: active again, by event.
    let out = feed(
        &mut e,
        &[event(
            "p-2",
            "web",
            "purchase",
            "2028-01-02T00:00:00Z",
            json!({"identifiers": {"email": "old@example.org"},
                   "order": {"order_id": "O-2", "total": 20.0, "currency": "EUR"}}),
        )],
    );
    let changes = on_topic(&out, "triggers.lifecycle_changed");
    assert_eq!(changes[0]["value"]["from"], "dormant");
    assert_eq!(changes[0]["value"]["to"], "active");
}

#[test]
fn profiling_denied_means_no_segment_and_no_lifecycle_trigger() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[event(
            "p-1",
            "web",
            "purchase",
            "2026-01-10T10:00:00Z",
            json!({"identifiers": {"email": "np@example.org"},
                   "consent": [{"purpose": "profiling", "channel": "all", "granted": false}],
                   "order": {"order_id": "O-1", "total": 50.0, "currency": "EUR"}}),
        )],
    );
    assert!(on_topic(&out, "triggers.lifecycle_changed").is_empty());
    let p = &on_topic(&out, "profiles.merged")[0]["value"];
    assert_eq!(p["segments"], Value::Null);
    assert!(e.tick(ms("2027-07-10T00:00:00Z")).unwrap().is_empty());
}

#[test]
fn segment_bands_on_a_known_dataset() {
    let mut e = engine();
    let buy = |id: &str, who: &str, at: &str, total: f64| {
        event(
            id,
            "web",
            "purchase",
            at,
            json!({"identifiers": {"email": who},
                   "order": {"order_id": id, "total": total, "currency": "EUR"}}),
        )
    };
    let mut lines = Vec::new();
    // A: 10 orders of 250 € within the year, the last 5 days ago.
    for i in 0..10 {
        lines.push(buy(
            &format!("a{i}"),
            "a@x.org",
            &format!("2026-{:02}-10T00:00:00Z", i + 2),
            250.0,
        ));
    }
    lines.push(buy("a-last", "a@x.org", "2026-11-15T00:00:00Z", 0.0));
    // B: one order of 120 € 100 days ago.
    lines.push(buy("b0", "b@x.org", "2026-08-12T00:00:00Z", 120.0));
    // C: two orders, 400 days ago (outside the lifetime-value horizon).
    lines.push(buy("c0", "c@x.org", "2025-10-15T00:00:00Z", 30.0));
    lines.push(buy("c1", "c@x.org", "2025-10-16T00:00:00Z", 30.0));
    // The clock: 2026-11-20.
    lines.push(event(
        "z",
        "app",
        "page_view",
        "2026-11-20T00:00:00Z",
        json!({"identifiers": {"device_id": "d-z"}}),
    ));
    feed(&mut e, &lines);
    let seg = |who: &str| {
        let c = e.find_customer("email", who).unwrap().unwrap();
        e.golden_record(&c).unwrap().unwrap()["segments"].clone()
    };
    let a = seg("a@x.org");
    assert_eq!(a["rfm"]["score"], "555");
    assert_eq!(a["clv"], 2500.0);
    assert_eq!(a["orders_in_horizon"], 10);
    assert_eq!(a["vip"], true);
    let b = seg("b@x.org");
    assert_eq!(b["rfm"]["score"], "312");
    assert_eq!(b["clv"], 120.0);
    assert_eq!(b["vip"], false);
    let c = seg("c@x.org");
    assert_eq!(c["rfm"]["score"], "121");
    assert_eq!(c["clv"], 0.0);
    assert_eq!(c["orders_in_horizon"], 0);
}

#[test]
fn a_consent_expiry_is_a_consent_change_when_it_lapses() {
    let mut e = engine();
    let out = feed(
        &mut e,
        &[event(
            "c-1",
            "web",
            "consent_update",
            "2026-11-01T00:00:00Z",
            json!({"identifiers": {"email": "exp@example.org"},
                   "consent": [{"purpose": "remarketing", "channel": "web", "granted": true,
                                "expires_at": "2026-12-01T00:00:00Z"}]}),
        )],
    );
    let customer = on_topic(&out, "consent.changes")[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(e.tick(ms("2026-11-30T00:00:00Z")).unwrap().is_empty());
    let out = e.tick(ms("2026-12-01T00:06:00Z")).unwrap();
    let changes = values(&out, "consent.changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["customer_id"], json!(customer));
    assert_eq!(changes[0]["cause"], "expiry");
    assert_eq!(changes[0]["granted"], false);
    assert_eq!(changes[0]["previous"], true);
    assert_eq!(
        e.allowed_channels(&customer, Purpose::Remarketing).unwrap(),
        Vec::<&str>::new()
    );
}
