//! A customer's recent touchpoints: what the lookup API's `/events`, the 360 page and
//! exports show. Minimised: the channel, type and time of each event, its source
//! profile, and for orders and carts the ids, amounts and SKUs; never an identifier or
//! person data. At most `limits.max_timeline_events` per customer, the oldest by event
//! time forgotten first, so which ones are kept does not depend on arrival order.
//! Merges, splits, expiries and erasures move or forget them with the customer.
//!
//! A customer's moments are one record, in order: an event reads and writes one key,
//! where a key per moment cost a range read to find the oldest and two more writes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::records::amount;
use crate::engine::handoff::EventFacts;
use crate::model::output::Time;
use crate::store::{keys, Store, StoreError, Table};

/// Each customer's moments, oldest first by (event time, event id).
const TIMELINE: Table<String, Vec<Moment>> = Table::new(keys::profile::TIMELINE);
/// Stores of format 3 kept a key per moment by (customer, event time, event id)...
const MOMENTS_OF_FORMAT_3: Table<(String, i64, String), Moment> =
    Table::new(keys::profile::MOMENTS_OF_FORMAT_3);
/// ...and how many each customer had: both read once, to move them to [`TIMELINE`].
const TIMELINE_LEN_OF_FORMAT_3: Table<String, u32> =
    Table::new(keys::profile::TIMELINE_LEN_OF_FORMAT_3);

/// SKUs kept of one order or cart.
const MAX_SKUS: usize = 20;

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

    /// Where it stands in a customer's timeline.
    fn order(&self) -> (i64, &str) {
        (self.occurred_at, &self.event_id)
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
    Ok(TIMELINE.get(store, customer_id)?.unwrap_or_default())
}

/// Writes a customer's moments (none: the record goes).
fn put(store: &mut Store, customer_id: &str, moments: &[Moment]) -> Result<(), StoreError> {
    if moments.is_empty() {
        TIMELINE.remove(store, customer_id);
        Ok(())
    } else {
        TIMELINE.put(store, customer_id, moments)
    }
}

/// Puts `moment` in its place among `moments` (in place of one with the same time and
/// id), then forgets the oldest beyond `max`.
fn insert(moments: &mut Vec<Moment>, moment: Moment, max: usize) {
    match moments.binary_search_by(|m| m.order().cmp(&moment.order())) {
        Ok(at) => moments[at] = moment,
        Err(at) => moments.insert(at, moment),
    }
    bound(moments, max);
}

/// Forgets the oldest moments beyond `max`.
fn bound(moments: &mut Vec<Moment>, max: usize) {
    if moments.len() > max {
        moments.drain(..moments.len() - max);
    }
}

/// Adds an event to its customer's timeline, within `max` moments.
pub fn record(
    store: &mut Store,
    customer_id: &str,
    source_profile: u64,
    facts: &EventFacts,
    max: usize,
) -> Result<(), StoreError> {
    let mut moments = of(store, customer_id)?;
    insert(&mut moments, Moment::of(facts, source_profile), max);
    put(store, customer_id, &moments)
}

/// Forgets a customer's timeline; how many moments it held.
pub fn forget(store: &mut Store, customer_id: &str) -> Result<u64, StoreError> {
    let held = of(store, customer_id)?.len();
    TIMELINE.remove(store, customer_id);
    Ok(held as u64)
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
    let (moved, kept): (Vec<Moment>, Vec<Moment>) =
        of(store, from)?.into_iter().partition(|m| moving(m));
    if moved.is_empty() {
        return Ok(());
    }
    put(store, from, &kept)?;
    let mut moments = of(store, to)?;
    moments.extend(moved);
    moments.sort_by(|a, b| a.order().cmp(&b.order()));
    moments.dedup_by(|a, b| a.order() == b.order());
    bound(&mut moments, max);
    put(store, to, &moments)
}

/// Forgets the moments of source profiles that are forgotten (behavioural data expired).
pub fn forget_source_profiles(
    store: &mut Store,
    customer_id: &str,
    source_profiles: &[u64],
) -> Result<(), StoreError> {
    let gone: BTreeSet<u64> = source_profiles.iter().copied().collect();
    let mut moments = of(store, customer_id)?;
    let before = moments.len();
    moments.retain(|m| !gone.contains(&m.source_profile));
    if moments.len() != before {
        put(store, customer_id, &moments)?;
    }
    Ok(())
}

/// Moves the timelines of a store of format 3 (a key per moment) to one record per
/// customer, staged with the batch; how many customers' timelines moved. A one-off at
/// the first start after an upgrade, which holds the old moments in memory at once.
pub fn migrate_from_format_3(store: &mut Store) -> Result<u64, StoreError> {
    let mut customers = 0;
    let mut current: Option<(String, Vec<Moment>)> = None;
    let entries = MOMENTS_OF_FORMAT_3.scan(store)?;
    for ((customer_id, at, event_id), moment) in entries {
        MOMENTS_OF_FORMAT_3.remove(store, (&customer_id, at, &event_id));
        match &mut current {
            Some((c, moments)) if *c == customer_id => moments.push(moment),
            _ => {
                if let Some((c, moments)) = current.take() {
                    put(store, &c, &moments)?;
                    customers += 1;
                }
                current = Some((customer_id, vec![moment]));
            }
        }
    }
    if let Some((c, moments)) = current {
        put(store, &c, &moments)?;
        customers += 1;
    }
    for (customer_id, _) in TIMELINE_LEN_OF_FORMAT_3.scan(store)? {
        TIMELINE_LEN_OF_FORMAT_3.remove(store, &customer_id);
    }
    Ok(customers)
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
            product_sku: None,
            source: None,
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
        assert_eq!(of(&a, "c").unwrap(), of(&b, "c").unwrap());
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
        assert!(ids(&s, "b").is_empty() && TIMELINE.get(&s, "b").unwrap().is_none());
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
    }

    #[test]
    fn timelines_of_format_3_move_to_one_record_per_customer() {
        let mut s = Store::temporary().unwrap();
        let mut expected = Vec::new();
        for (customer, t) in [("a", 2), ("a", 1), ("ab", 3), ("b", 4)] {
            let m = Moment::of(&facts(&format!("e{t}"), t), 1);
            MOMENTS_OF_FORMAT_3
                .put(&mut s, (customer, t, &m.event_id), &m)
                .unwrap();
            expected.push((customer, m));
        }
        TIMELINE_LEN_OF_FORMAT_3.put(&mut s, "a", &2u32).unwrap();
        TIMELINE_LEN_OF_FORMAT_3.put(&mut s, "ab", &1u32).unwrap();
        TIMELINE_LEN_OF_FORMAT_3.put(&mut s, "b", &1u32).unwrap();
        s.commit().unwrap();
        assert_eq!(migrate_from_format_3(&mut s).unwrap(), 3);
        s.commit().unwrap();
        assert_eq!(ids(&s, "a"), ["e1", "e2"]);
        assert_eq!(ids(&s, "ab"), ["e3"]);
        assert_eq!(of(&s, "b").unwrap(), [expected[3].1.clone()]);
        for old in [
            keys::profile::MOMENTS_OF_FORMAT_3.bytes(),
            keys::profile::TIMELINE_LEN_OF_FORMAT_3.bytes(),
        ] {
            assert!(s.scan_prefix(old).unwrap().is_empty());
        }
        // A new event lands among the moved moments.
        record(&mut s, "a", 1, &facts("e0", 0), 2).unwrap();
        assert_eq!(ids(&s, "a"), ["e1", "e2"]);
    }
}
