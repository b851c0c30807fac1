//! Activation: what a customer is doing (carts, purchases), the segments derived from
//! it (RFM scores, lifetime value, VIP, lifecycle stage) and the timers that make
//! triggers fire.
//!
//! Pure functions over [`Activity`], which the profile stage keeps inside each customer
//! profile. The profile stage owns the timers table and the output records.
//!
//! - A `cart` object on an event is the whole content of that cart (a snapshot); an
//!   empty snapshot empties the cart. A newer snapshot wins over an older one.
//! - A purchase converts the cart it names, and takes the purchased SKUs out of the
//!   customer's other carts (a cart left with nothing is cancelled). A purchase without
//!   item detail cancels every open cart: better no reminder than one for what was
//!   just bought.
//! - A cart is abandoned the cart journey's `wait` after its last activity
//!   ([`CartJourney`], `[engine.journeys.cart_abandoned]`); it fires at most once (a
//!   fired cart is remembered and never re-armed).
//! - Everything is bounded (`[engine.limits]`, `activation.max_carts`): the oldest carts,
//!   purchases and orders are forgotten first, a snapshot keeps its first items; what
//!   was forgotten is returned ([`Trimmed`]) for the counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::config::{EngineConfig, Lifecycle, RfmBands};
use crate::engine::profile::consent::ConsentKey;
use crate::engine::profile::event::{CartFacts, ProfileEvent};
use crate::engine::profile::journeys::CartJourney;
use crate::model::output::DAY_MS;
use crate::model::Item;

/// One cart of a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartState {
    pub items: Vec<Item>,
    /// Event time of the latest snapshot.
    pub last_activity: i64,
    pub channel: String,
    pub event_id: String,
    /// The abandonment trigger fired (or was suppressed): never again for this cart.
    pub fired: bool,
    /// Source profile of the latest snapshot (a split takes the cart with it).
    pub source_profile: u64,
}

impl CartState {
    pub fn value(&self) -> f64 {
        cart_value(&self.items)
    }
}

/// Value of items: quantity × unit price, rounded to cents.
pub fn cart_value(items: &[Item]) -> f64 {
    let cents: i64 = items
        .iter()
        .map(|i| (i.quantity * i.unit_price.unwrap_or(0.0) * 100.0).round() as i64)
        .sum();
    cents as f64 / 100.0
}

/// What a customer is doing, kept for triggers and segments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub carts: BTreeMap<String, CartState>,
    /// `(sku, event time, source profile)` of recent purchases, oldest first.
    pub purchased: Vec<(String, i64, u64)>,
    /// `(event time, net cents in the base currency, source profile)` of orders
    /// (negative: returns).
    pub order_log: Vec<(i64, i64, u64)>,
    /// The last lifecycle stage published.
    pub stage: Option<String>,
}

/// What an event did to the activity.
#[derive(Debug, Default, PartialEq)]
pub struct EventEffects {
    /// Carts the event converted, emptied or made pointless.
    pub cancelled_carts: Vec<String>,
    /// What the bounds made it forget.
    pub trimmed: Trimmed,
}

/// What the bounds of the activity forgot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Carts beyond `activation.max_carts`, the least recently active first.
    pub carts: u64,
    /// Items of a snapshot beyond `limits.max_cart_items`.
    pub cart_items: u64,
    /// Purchased items beyond `limits.max_recent_purchases`, the oldest first.
    pub purchases: u64,
    /// Orders and returns beyond `limits.max_orders_kept`, the oldest first.
    pub orders: u64,
}

/// Keeps the last `max` entries of a log sorted by time; returns how many went.
fn keep_latest<T>(log: &mut Vec<T>, max: usize, at: impl Fn(&T) -> i64) -> u64 {
    if log.len() <= max {
        return 0;
    }
    log.sort_by_key(&at);
    let excess = log.len() - max;
    log.drain(..excess);
    excess as u64
}

impl Activity {
    /// Applies the cart and order facts of an event of `source_profile`.
    pub fn on_event(
        &mut self,
        ev: &ProfileEvent,
        source_profile: u64,
        config: &EngineConfig,
    ) -> EventEffects {
        let mut fx = EventEffects::default();
        let is_purchase = ev.kind == "purchase";
        if let Some(cart) = &ev.cart {
            self.apply_cart(ev, cart, is_purchase, source_profile, &mut fx);
            fx.trimmed.cart_items = self.bound_cart_items(&cart.cart_id, config);
        }
        if is_purchase {
            self.apply_purchase(ev, source_profile, &mut fx);
        }
        self.log_orders(ev, source_profile, config);
        fx.trimmed.purchases = keep_latest(
            &mut self.purchased,
            config.limits.max_recent_purchases,
            |p| p.1,
        );
        fx.trimmed.orders =
            keep_latest(&mut self.order_log, config.limits.max_orders_kept, |o| o.0);
        fx.trimmed.carts = self.bound_carts(config);
        fx.cancelled_carts.sort();
        fx
    }

    /// A cart snapshot: replaces an older one; empty, or converted by a purchase, it
    /// cancels the cart.
    fn apply_cart(
        &mut self,
        ev: &ProfileEvent,
        cart: &CartFacts,
        is_purchase: bool,
        source_profile: u64,
        fx: &mut EventEffects,
    ) {
        let newer = self
            .carts
            .get(&cart.cart_id)
            .is_none_or(|c| ev.occurred_at >= c.last_activity);
        if is_purchase || (newer && cart.items.is_empty()) {
            if self.carts.remove(&cart.cart_id).is_some() {
                fx.cancelled_carts.push(cart.cart_id.clone());
            }
        } else if newer {
            let fired = self.carts.get(&cart.cart_id).is_some_and(|c| c.fired);
            self.carts.insert(
                cart.cart_id.clone(),
                CartState {
                    items: cart.items.clone(),
                    last_activity: ev.occurred_at,
                    channel: ev.channel.clone(),
                    event_id: ev.event_id.clone(),
                    fired,
                    source_profile,
                },
            );
        }
    }

    /// A purchase takes what it bought out of the open carts (all of it without item
    /// detail), cancelling those left empty, and remembers the SKUs bought.
    fn apply_purchase(&mut self, ev: &ProfileEvent, source_profile: u64, fx: &mut EventEffects) {
        let items = ev
            .purchase
            .as_ref()
            .map(|p| p.items.as_slice())
            .unwrap_or_default();
        let open: Vec<String> = self
            .carts
            .iter()
            .filter(|(_, c)| !c.fired && c.last_activity <= ev.occurred_at)
            .map(|(id, _)| id.clone())
            .collect();
        for id in open {
            let Some(cart) = self.carts.get_mut(&id) else {
                continue;
            };
            if items.is_empty() {
                cart.items.clear();
            } else {
                cart.items.retain(|i| !items.iter().any(|b| b.sku == i.sku));
            }
            if cart.items.is_empty() {
                self.carts.remove(&id);
                fx.cancelled_carts.push(id);
            }
        }
        for i in items {
            self.purchased
                .push((i.sku.clone(), ev.occurred_at, source_profile));
        }
    }

    /// Logs the event's order (and return, negative) in the base currency, for the
    /// lifetime value.
    fn log_orders(&mut self, ev: &ProfileEvent, source_profile: u64, config: &EngineConfig) {
        let base = &config.lifecycle.base_currency;
        for (order, sign) in [(&ev.purchase, 1), (&ev.refund, -1)] {
            if let Some(o) = order.as_ref().filter(|o| &o.currency == base) {
                self.order_log
                    .push((ev.occurred_at, sign * o.total_cents, source_profile));
            }
        }
    }

    /// Bounds the carts: forgets the least recently active. Returns how many.
    fn bound_carts(&mut self, config: &EngineConfig) -> u64 {
        let mut forgotten = 0;
        while self.carts.len() > config.activation.max_carts {
            let oldest = self
                .carts
                .iter()
                .min_by_key(|(id, c)| (c.last_activity, (*id).clone()))
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.carts.remove(&id),
                None => break,
            };
            forgotten += 1;
        }
        forgotten
    }

    /// Bounds the items of a cart to its first `max_cart_items`. Returns how many went.
    fn bound_cart_items(&mut self, cart_id: &str, config: &EngineConfig) -> u64 {
        let max = config.limits.max_cart_items;
        match self.carts.get_mut(cart_id) {
            Some(c) if c.items.len() > max => {
                let excess = c.items.len() - max;
                c.items.truncate(max);
                excess as u64
            }
            _ => 0,
        }
    }

    /// Folds the activity of a customer merged into this one, within the bounds.
    pub fn merge(&mut self, other: Activity, config: &EngineConfig) -> Trimmed {
        for (id, cart) in other.carts {
            match self.carts.get(&id) {
                Some(mine) if mine.last_activity >= cart.last_activity => {
                    if cart.fired {
                        if let Some(m) = self.carts.get_mut(&id) {
                            m.fired = true;
                        }
                    }
                }
                _ => {
                    let fired = cart.fired || self.carts.get(&id).is_some_and(|c| c.fired);
                    self.carts.insert(id, CartState { fired, ..cart });
                }
            }
        }
        self.purchased.extend(other.purchased);
        self.purchased.sort_by_key(|(_, at, _)| *at);
        self.order_log.extend(other.order_log);
        self.order_log.sort();
        let limits = &config.limits;
        Trimmed {
            carts: self.bound_carts(config),
            cart_items: 0,
            purchases: keep_latest(&mut self.purchased, limits.max_recent_purchases, |p| p.1),
            orders: keep_latest(&mut self.order_log, limits.max_orders_kept, |o| o.0),
        }
    }

    /// Takes out what the source profiles in `moved` did (a split): their carts,
    /// purchases and orders go with them. The part taken out has no published stage
    /// yet: it is a new customer, settled from `prospect` like any other.
    pub fn split_off(&mut self, moved: &[u64]) -> Activity {
        let (gone, kept): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.carts)
            .into_iter()
            .partition(|(_, c)| moved.contains(&c.source_profile));
        self.carts = kept;
        let (gone_purchases, kept_purchases) = std::mem::take(&mut self.purchased)
            .into_iter()
            .partition(|(_, _, sp)| moved.contains(sp));
        self.purchased = kept_purchases;
        let (gone_orders, kept_orders) = std::mem::take(&mut self.order_log)
            .into_iter()
            .partition(|(_, _, sp)| moved.contains(sp));
        self.order_log = kept_orders;
        Activity {
            carts: gone,
            purchased: gone_purchases,
            order_log: gone_orders,
            stage: None,
        }
    }

    /// Forgets what is older than the windows it is kept for.
    pub fn prune(&mut self, now: i64, config: &EngineConfig) {
        let a = &config.activation;
        let recent = now - i64::from(a.recent_purchase_days) * DAY_MS;
        self.purchased.retain(|(_, at, _)| *at >= recent);
        let horizon = now - i64::from(a.clv_horizon_days) * DAY_MS;
        self.order_log.retain(|(at, _, _)| *at >= horizon);
    }

    /// SKUs bought within the window, most recent first, without repeats.
    pub fn recently_purchased(&self, now: i64, days: u32) -> Vec<String> {
        let since = now - i64::from(days) * DAY_MS;
        let mut recent: Vec<&(String, i64, u64)> = self
            .purchased
            .iter()
            .filter(|(_, at, _)| *at >= since)
            .collect();
        recent.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut out: Vec<String> = Vec::new();
        for (sku, _, _) in recent {
            if !out.contains(sku) {
                out.push(sku.clone());
            }
        }
        out
    }

    /// Net purchases (cents, base currency) and orders within the horizon.
    pub fn lifetime_value(&self, now: i64, horizon_days: u32) -> (i64, u64) {
        let since = now - i64::from(horizon_days) * DAY_MS;
        let window = self
            .order_log
            .iter()
            .filter(|(at, _, _)| *at >= since && *at <= now);
        let (mut cents, mut orders) = (0i64, 0u64);
        for (_, c, _) in window {
            cents += c;
            orders += u64::from(*c > 0);
        }
        (cents, orders)
    }

    /// Due time of a cart's abandonment, if it can still fire: none when the cart
    /// journey is turned off.
    pub fn cart_due(cart: &CartState, journey: Option<&CartJourney>) -> Option<i64> {
        let journey = journey?;
        (!cart.fired && !cart.items.is_empty()).then(|| journey.due(cart.last_activity))
    }
}

/// Lifecycle stage at `now` from the last order.
pub fn stage(last_order_at: Option<i64>, now: i64, l: &Lifecycle) -> &'static str {
    match last_order_at.map(|at| (now - at).max(0) / DAY_MS) {
        None => "prospect",
        Some(d) if d <= i64::from(l.active_days) => "active",
        Some(d) if d <= i64::from(l.dormant_days) => "inactive",
        Some(_) => "dormant",
    }
}

/// When the stage of a customer whose last order is at `last_order_at` changes next by
/// the passage of time alone (`active → inactive → dormant`).
pub fn next_stage_change(last_order_at: Option<i64>, stage: &str, l: &Lifecycle) -> Option<i64> {
    let at = last_order_at?;
    let days = match stage {
        "active" => l.active_days,
        "inactive" => l.dormant_days,
        _ => return None,
    };
    Some(at.saturating_add((i64::from(days) + 1) * DAY_MS))
}

/// RFM scores 1–5: recency from days since the last order (fewer is better),
/// frequency from orders, monetary from net purchases. `None` without any order.
pub fn rfm_scores(
    recency_days: Option<i64>,
    frequency: u64,
    monetary: f64,
    bands: &RfmBands,
) -> Option<(u8, u8, u8)> {
    let r_days = recency_days?;
    let r = 5 - bands
        .recency_days
        .iter()
        .filter(|b| r_days > i64::from(**b))
        .count()
        .min(4) as u8;
    let f = 1 + bands
        .frequency
        .iter()
        .filter(|b| frequency >= u64::from(**b))
        .count()
        .min(4) as u8;
    let m = 1 + bands
        .monetary
        .iter()
        .filter(|b| monetary >= **b)
        .count()
        .min(4) as u8;
    Some((r, f, m))
}

/// A timer of a customer: due time (ms) and what it is for.
pub type Timer = (i64, String);

/// Timer kinds, as kept in timer keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerKind {
    Cart(String),
    Lifecycle,
    /// The customer's audiences are evaluated again (a window moved, a day passed).
    Audiences,
    /// The consent decision of this key expires.
    ConsentExpiry(ConsentKey),
}

impl TimerKind {
    pub fn encode(&self) -> String {
        match self {
            TimerKind::Cart(id) => format!("cart\u{1}{id}"),
            TimerKind::Lifecycle => "lifecycle".into(),
            TimerKind::Audiences => "audiences".into(),
            TimerKind::ConsentExpiry(k) => format!("consent\u{1}{}", k.encode()),
        }
    }

    pub fn decode(s: &str) -> Option<TimerKind> {
        match s.split_once('\u{1}') {
            Some(("cart", id)) => Some(TimerKind::Cart(id.to_string())),
            Some(("consent", k)) => ConsentKey::decode(k).map(TimerKind::ConsentExpiry),
            None if s == "lifecycle" => Some(TimerKind::Lifecycle),
            None if s == "audiences" => Some(TimerKind::Audiences),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::profile::event::{CartFacts, OrderFacts};
    use crate::model::{Channel, ConsentChannel, Purpose};

    fn item(sku: &str, price: f64) -> Item {
        Item {
            sku: sku.into(),
            name: None,
            quantity: 1.0,
            unit_price: Some(price),
        }
    }

    fn ev(
        kind: &str,
        at: i64,
        cart: Option<(&str, Vec<Item>)>,
        bought: Option<Vec<Item>>,
    ) -> ProfileEvent {
        ProfileEvent {
            event_id: format!("e{at}"),
            channel: "web".into(),
            kind: kind.into(),
            occurred_at: at,
            identifiers: Vec::new(),
            fields: Vec::new(),
            purchase: bought.map(|items| OrderFacts {
                order_id: None,
                total_cents: (cart_value(&items) * 100.0) as i64,
                currency: "EUR".into(),
                items,
            }),
            refund: None,
            consents: Vec::new(),
            product_sku: None,
            source: None,
            cart: cart.map(|(id, items)| CartFacts {
                cart_id: id.into(),
                items,
            }),
        }
    }

    #[test]
    fn a_purchase_of_the_cart_items_on_another_channel_cancels_the_cart() {
        let c = EngineConfig::default();
        let mut a = Activity::default();
        a.on_event(
            &ev(
                "cart_add",
                10,
                Some(("K1", vec![item("A", 10.0), item("B", 5.0)])),
                None,
            ),
            0,
            &c,
        );
        let fx = a.on_event(
            &ev("purchase", 20, None, Some(vec![item("A", 10.0)])),
            0,
            &c,
        );
        assert!(fx.cancelled_carts.is_empty());
        assert_eq!(a.carts["K1"].items, vec![item("B", 5.0)]);
        let fx = a.on_event(&ev("purchase", 30, None, Some(vec![item("B", 5.0)])), 0, &c);
        assert_eq!(fx.cancelled_carts, ["K1"]);
        assert_eq!(a.recently_purchased(30, 30), ["B", "A"]);
    }

    #[test]
    fn an_older_snapshot_does_not_override_a_newer_one_and_empty_cancels() {
        let c = EngineConfig::default();
        let mut a = Activity::default();
        a.on_event(
            &ev(
                "cart_add",
                20,
                Some(("K", vec![item("A", 1.0), item("B", 1.0)])),
                None,
            ),
            0,
            &c,
        );
        a.on_event(
            &ev("cart_add", 10, Some(("K", vec![item("A", 1.0)])), None),
            0,
            &c,
        );
        assert_eq!(a.carts["K"].items.len(), 2);
        let journey = CartJourney::compile(&c).unwrap();
        assert_eq!(
            Activity::cart_due(&a.carts["K"], journey.as_ref()),
            Some(20 + 3_600_000)
        );
        assert_eq!(Activity::cart_due(&a.carts["K"], None), None);
        let fx = a.on_event(&ev("cart_remove", 30, Some(("K", vec![])), None), 0, &c);
        assert_eq!(fx.cancelled_carts, ["K"]);
    }

    #[test]
    fn rfm_bands_score_one_to_five() {
        let b = RfmBands::default();
        assert_eq!(rfm_scores(Some(10), 12, 2500.0, &b), Some((5, 5, 5)));
        assert_eq!(rfm_scores(Some(100), 3, 150.0, &b), Some((3, 3, 2)));
        assert_eq!(rfm_scores(Some(400), 1, 10.0, &b), Some((1, 1, 1)));
        assert_eq!(rfm_scores(Some(30), 2, 100.0, &b), Some((5, 2, 2)));
        assert_eq!(rfm_scores(Some(31), 2, 99.99, &b), Some((4, 2, 1)));
        assert_eq!(rfm_scores(None, 0, 0.0, &b), None);
    }

    #[test]
    fn stages_change_by_time_at_the_thresholds() {
        let l = Lifecycle::default();
        assert_eq!(stage(None, 0, &l), "prospect");
        assert_eq!(stage(Some(0), 180 * DAY_MS, &l), "active");
        let next = next_stage_change(Some(0), "active", &l).unwrap();
        assert_eq!(stage(Some(0), next - 1, &l), "active");
        assert_eq!(stage(Some(0), next, &l), "inactive");
        let next = next_stage_change(Some(0), "inactive", &l).unwrap();
        assert_eq!(stage(Some(0), next, &l), "dormant");
        assert_eq!(next_stage_change(Some(0), "dormant", &l), None);
    }

    #[test]
    fn lifetime_value_counts_the_horizon_net_of_returns() {
        let a = Activity {
            order_log: vec![
                (0, 10_000, 1),
                (100 * DAY_MS, 5_000, 1),
                (101 * DAY_MS, -2_000, 2),
            ],
            ..Activity::default()
        };
        assert_eq!(a.lifetime_value(370 * DAY_MS, 365), (3_000, 1));
        assert_eq!(a.lifetime_value(200 * DAY_MS, 365), (13_000, 2));
    }

    #[test]
    fn timer_kinds_round_trip() {
        for k in [
            TimerKind::Cart("K-1".into()),
            TimerKind::Lifecycle,
            TimerKind::ConsentExpiry(ConsentKey {
                purpose: Purpose::Marketing,
                channel: ConsentChannel::One(Channel::Email),
                identifier: None,
            }),
        ] {
            assert_eq!(TimerKind::decode(&k.encode()), Some(k));
        }
    }
}
