//! A customer's recent touchpoints: what the lookup API's `/events`, the 360 page and
//! exports show. Minimised: the channel, type and time of each event, its source
//! profile, and for orders and carts the ids, amounts and SKUs; never an identifier or
//! person data. At most `limits.max_timeline_events` per customer, the oldest by event
//! time forgotten first, so which ones are kept does not depend on arrival order.
//! Merges, splits, expiries and erasures move or forget them with the customer.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::records::amount;
use crate::engine::handoff::EventFacts;
use crate::model::output::Time;
use crate::store::{keys, Store, StoreError, Table};

/// Keys by (customer, event time, event id): a customer's range in time order.
const TIMELINE: Table<(String, i64, String), Moment> = Table::new(keys::profile::TIMELINE);
/// Entries of each customer's range (so that the bound needs no count by scan).
const TIMELINE_LEN: Table<String, u32> = Table::new(keys::profile::TIMELINE_LEN);

/// SKUs kept of one order or cart.
const MAX_SKUS: usize = 20;
/// The last event id (the largest text a key holds): the end of a customer's range.
const LAST_ID: &str = "\u{10FFFF}";

/// One touchpoint as the timeline keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moment {
    pub event_id: String,
    pub channel: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Milliseconds since the epoch (event time).
    pub occurred_at: i64,
    pub source_profile: u64,
    pub order_id: Option<String>,
    /// Order total in cents.
    pub total_cents: Option<i64>,
    pub currency: Option<String>,
    pub cart_id: Option<String>,
    /// SKUs of the order or cart (the first twenty).
    pub skus: Vec<String>,
}

impl Moment {
    fn of(facts: &EventFacts, source_profile: u64) -> Self {
        let order = facts.order.as_ref();
        let cart = facts.cart.as_ref();
        let items = order
            .map(|o| &o.items)
            .or(cart.map(|c| &c.items))
            .map(|items| items.iter().take(MAX_SKUS).map(|i| i.sku.clone()).collect())
            .unwrap_or_default();
        Self {
            event_id: facts.event_id.clone(),
            channel: facts.channel.clone(),
            kind: facts.kind.clone(),
            occurred_at: facts.occurred_at,
            source_profile,
            order_id: order.and_then(|o| o.order_id.clone()),
            total_cents: order.and_then(|o| o.total_cents),
            currency: order.and_then(|o| o.currency.clone()),
            cart_id: cart.and_then(|c| c.cart_id.clone()),
            skus: items,
        }
    }
}

/// A moment as the API and exports show it: times in RFC 3339, amounts in units.
#[derive(Debug, Serialize)]
pub struct Touchpoint<'a> {
    pub event_id: &'a str,
    pub channel: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub occurred_at: Time,
    pub source_profile: u64,
    pub order_id: Option<&'a str>,
    pub total: Option<f64>,
    pub currency: Option<&'a str>,
    pub cart_id: Option<&'a str>,
    pub skus: &'a [String],
}

impl<'a> From<&'a Moment> for Touchpoint<'a> {
    fn from(m: &'a Moment) -> Self {
        Self {
            event_id: &m.event_id,
            channel: &m.channel,
            kind: &m.kind,
            occurred_at: Time(m.occurred_at),
            source_profile: m.source_profile,
            order_id: m.order_id.as_deref(),
            total: m.total_cents.map(amount),
            currency: m.currency.as_deref(),
            cart_id: m.cart_id.as_deref(),
            skus: &m.skus,
        }
    }
}

/// Every moment of a customer, oldest first.
pub fn of(store: &Store, customer_id: &str) -> Result<Vec<Moment>, StoreError> {
    Ok(TIMELINE
        .range(
            store,
            (customer_id, i64::MIN, ""),
            (customer_id, i64::MAX, LAST_ID),
            usize::MAX,
        )?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

/// Adds an event to its customer's timeline, within `max` moments.
pub fn record(
    store: &mut Store,
    customer_id: &str,
    source_profile: u64,
    facts: &EventFacts,
    max: usize,
) -> Result<(), StoreError> {
    let moment = Moment::of(facts, source_profile);
    let len = TIMELINE_LEN.get(store, customer_id)?.unwrap_or(0);
    TIMELINE.put(
        store,
        (customer_id, moment.occurred_at, &moment.event_id),
        &moment,
    )?;
    bound(store, customer_id, len as usize + 1, max)
}

/// Forgets the oldest moments of a customer beyond `max`, `len` being how many it has.
fn bound(
    store: &mut Store,
    customer_id: &str,
    mut len: usize,
    max: usize,
) -> Result<(), StoreError> {
    if len > max {
        let oldest = TIMELINE.range(
            store,
            (customer_id, i64::MIN, ""),
            (customer_id, i64::MAX, LAST_ID),
            len - max,
        )?;
        for ((_, at, id), _) in oldest {
            TIMELINE.remove(store, (customer_id, at, &id));
            len -= 1;
        }
    }
    put_len(store, customer_id, len)
}

fn put_len(store: &mut Store, customer_id: &str, len: usize) -> Result<(), StoreError> {
    if len == 0 {
        TIMELINE_LEN.remove(store, customer_id);
        Ok(())
    } else {
        TIMELINE_LEN.put(store, customer_id, &(len as u32))
    }
}

/// Forgets a customer's timeline; how many moments it held.
pub fn forget(store: &mut Store, customer_id: &str) -> Result<u64, StoreError> {
    let all = of(store, customer_id)?;
    for m in &all {
        TIMELINE.remove(store, (customer_id, m.occurred_at, &m.event_id));
    }
    TIMELINE_LEN.remove(store, customer_id);
    Ok(all.len() as u64)
}

/// Moves the moments of `from` that `moving` selects to `to` (all of them on a merge,
/// those of the moved source profiles on a split), within `max` for `to`.
pub fn move_moments(
    store: &mut Store,
    from: &str,
    to: &str,
    moving: impl Fn(&Moment) -> bool,
    max: usize,
) -> Result<(), StoreError> {
    let all = of(store, from)?;
    let (moved, kept): (Vec<Moment>, Vec<Moment>) = all.into_iter().partition(|m| moving(m));
    if moved.is_empty() {
        return Ok(());
    }
    for m in &moved {
        TIMELINE.remove(store, (from, m.occurred_at, &m.event_id));
        TIMELINE.put(store, (to, m.occurred_at, &m.event_id), m)?;
    }
    put_len(store, from, kept.len())?;
    let len = TIMELINE_LEN.get(store, to)?.unwrap_or(0) as usize + moved.len();
    bound(store, to, len, max)
}

/// Forgets the moments of source profiles that are forgotten (behavioural data expired).
pub fn forget_source_profiles(
    store: &mut Store,
    customer_id: &str,
    source_profiles: &[u64],
) -> Result<(), StoreError> {
    let gone: BTreeSet<u64> = source_profiles.iter().copied().collect();
    let all = of(store, customer_id)?;
    let before = all.len();
    let mut len = before;
    for m in all.iter().filter(|m| gone.contains(&m.source_profile)) {
        TIMELINE.remove(store, (customer_id, m.occurred_at, &m.event_id));
        len -= 1;
    }
    if len != before {
        put_len(store, customer_id, len)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Item, Order};

    fn facts(id: &str, at: i64) -> EventFacts {
        EventFacts {
            event_id: id.into(),
            channel: "web".into(),
            kind: "purchase".into(),
            occurred_at: at,
            identifiers: Vec::new(),
            person: None,
            attributes: Vec::new(),
            order: Some(Order {
                order_id: Some(format!("o-{id}")),
                total_cents: Some(1299),
                currency: Some("EUR".into()),
                items: vec![Item {
                    sku: "SKU-1".into(),
                    name: Some("a name".into()),
                    quantity: 1.0,
                    unit_price: None,
                }],
            }),
            cart: None,
            consents: Vec::new(),
        }
    }

    fn ids(store: &Store, customer: &str) -> Vec<String> {
        of(store, customer)
            .unwrap()
            .into_iter()
            .map(|m| m.event_id)
            .collect()
    }

    #[test]
    fn the_newest_are_kept_whatever_the_arrival_order() {
        let times = [5, 1, 4, 2, 3, 6];
        let mut a = Store::temporary().unwrap();
        for t in times {
            record(&mut a, "c", 1, &facts(&format!("e{t}"), t), 3).unwrap();
        }
        let mut b = Store::temporary().unwrap();
        for t in times.iter().rev() {
            record(&mut b, "c", 1, &facts(&format!("e{t}"), *t), 3).unwrap();
        }
        assert_eq!(ids(&a, "c"), ["e4", "e5", "e6"]);
        assert_eq!(ids(&a, "c"), ids(&b, "c"));
        assert_eq!(TIMELINE_LEN.get(&a, "c").unwrap(), Some(3));
        let m = &of(&a, "c").unwrap()[0];
        assert_eq!(
            (m.total_cents, m.skus.clone()),
            (Some(1299), vec!["SKU-1".to_string()])
        );
    }

    #[test]
    fn merges_splits_and_erasures_move_or_forget_moments() {
        let mut s = Store::temporary().unwrap();
        for (customer, sp, t) in [("a", 1, 1), ("a", 2, 2), ("b", 3, 3), ("b", 3, 4)] {
            record(&mut s, customer, sp, &facts(&format!("e{t}"), t), 3).unwrap();
        }
        // b merged into a: the newest three of the four kept.
        move_moments(&mut s, "b", "a", |_| true, 3).unwrap();
        assert_eq!(ids(&s, "a"), ["e2", "e3", "e4"]);
        assert!(ids(&s, "b").is_empty() && TIMELINE_LEN.get(&s, "b").unwrap().is_none());
        // Source profile 3 split off to c.
        move_moments(&mut s, "a", "c", |m| m.source_profile == 3, 3).unwrap();
        assert_eq!(
            (ids(&s, "a"), ids(&s, "c")),
            (vec!["e2".into()], vec!["e3".into(), "e4".into()])
        );
        forget_source_profiles(&mut s, "c", &[3]).unwrap();
        assert!(ids(&s, "c").is_empty());
        assert_eq!(forget(&mut s, "a").unwrap(), 1);
        s.commit().unwrap();
        assert!(s
            .scan_prefix(keys::profile::TIMELINE.bytes())
            .unwrap()
            .is_empty());
        assert!(s
            .scan_prefix(keys::profile::TIMELINE_LEN.bytes())
            .unwrap()
            .is_empty());
    }
}
