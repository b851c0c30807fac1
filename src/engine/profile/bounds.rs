//! Bounds on what a customer profile keeps across its source profiles: the attribute
//! keys (the most recently stated) and the currencies of its order totals.
//!
//! Each is kept per customer, over every source profile, since the golden record shows
//! their union; the counts of what went are returned for `unicus_bounds_dropped_total`.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::profile::CustomerProfile;

/// The prefix of attribute fields among a source profile's fields.
const ATTRIBUTE: &str = "attributes.";

/// Keeps the `max` attribute keys of a customer most recently stated (event time, then
/// event id, then key: deterministic), forgetting the others in every source profile.
/// Returns how many keys were forgotten.
pub fn keep_latest_attributes(profile: &mut CustomerProfile, max: usize) -> u64 {
    let mut latest: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    for facts in profile.source_profiles.values() {
        for (name, v) in facts.fields.range(ATTRIBUTE.to_string()..) {
            if !name.starts_with(ATTRIBUTE) {
                break;
            }
            let stated = (v.at, v.event_id.as_str());
            let e = latest.entry(name.as_str()).or_insert(stated);
            *e = (*e).max(stated);
        }
    }
    if latest.len() <= max {
        return 0;
    }
    let mut by_recency: Vec<(&str, (i64, &str))> = latest.into_iter().collect();
    by_recency.sort_by(|a, b| (b.1, b.0).cmp(&(a.1, a.0)));
    let gone: BTreeSet<String> = by_recency[max..]
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for facts in profile.source_profiles.values_mut() {
        facts.fields.retain(|name, _| !gone.contains(name));
    }
    gone.len() as u64
}

/// Whether a customer's order totals may take `currency`: one it has already, or room
/// for one more within `max`.
pub fn currency_fits(profile: &CustomerProfile, currency: &str, max: usize) -> bool {
    let mut held: BTreeSet<&str> = BTreeSet::new();
    for facts in profile.source_profiles.values() {
        for c in facts.order_cents.keys().chain(facts.return_cents.keys()) {
            if c == currency {
                return true;
            }
            held.insert(c);
        }
    }
    held.len() < max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::profile::event::FieldData;
    use crate::engine::profile::{FieldValue, SourceFacts};

    fn stated(at: i64) -> FieldValue {
        FieldValue {
            data: FieldData::Text("x".into()),
            channel: "web".into(),
            at,
            event_id: format!("e{at}"),
        }
    }

    #[test]
    fn the_most_recently_stated_attributes_are_kept_across_source_profiles() {
        let mut profile = CustomerProfile::default();
        let mut a = SourceFacts::default();
        a.fields.insert("first_name".into(), stated(0));
        a.fields.insert("attributes.old".into(), stated(1));
        a.fields.insert("attributes.shared".into(), stated(2));
        let mut b = SourceFacts::default();
        b.fields.insert("attributes.shared".into(), stated(9));
        b.fields.insert("attributes.mid".into(), stated(5));
        profile.source_profiles.insert(1, a);
        profile.source_profiles.insert(2, b);

        assert_eq!(keep_latest_attributes(&mut profile, 3), 0);
        assert_eq!(keep_latest_attributes(&mut profile, 2), 1);
        let names: Vec<&str> = profile
            .source_profiles
            .values()
            .flat_map(|f| f.fields.keys().map(String::as_str))
            .collect();
        // `shared` is recent through `b`, so `a`'s older statement of it stays too.
        assert_eq!(
            names,
            [
                "attributes.shared",
                "first_name",
                "attributes.mid",
                "attributes.shared"
            ]
        );
    }

    #[test]
    fn a_new_currency_fits_only_below_the_bound() {
        let mut profile = CustomerProfile::default();
        let mut a = SourceFacts::default();
        a.order_cents.insert("EUR".into(), 100);
        a.return_cents.insert("USD".into(), 10);
        profile.source_profiles.insert(1, a);
        assert!(currency_fits(&profile, "EUR", 2));
        assert!(currency_fits(&profile, "USD", 2));
        assert!(!currency_fits(&profile, "GBP", 2));
        assert!(currency_fits(&profile, "GBP", 3));
    }
}
