//! What the engine saw since it was opened, per process (not persisted): every counter,
//! declared once in [`engine_counters!`], that `replay`, `demo` and the metrics report.

use std::collections::BTreeMap;

/// Every counter of the engine, declared once: its [`Stats`] field (doc comment, name,
/// type) and, when Prometheus shows it, its family. From this one table come the
/// fields of [`Stats`], [`Stats::absorb`] and the engine's entries of the metric
/// families (`telemetry/metrics/families.rs`): adding a counter is one entry here.
///
/// An entry is one of:
///
/// - `field: Type;`: counted, not exposed (or exposed by a family of its own kind, in
///   `families.rs`, like `by_source` and `customer_source_profiles`);
/// - `field: u64 => counter("name", "help");`: a plain count, one counter family;
/// - `field: BTreeMap<K, u64> => counters("name", "help", ["label"]);`: counts by key,
///   one labelled family, the key as its label (`by |key| [...]` gives other labels);
/// - `family => counters("name", "help", ["label"]) each { field = "value", ... };`:
///   plain counts that are the series of one family, each under a fixed label value,
///   shown at zero from the start of a run.
///
/// `$then! { $args fields { ... } families { ... } }` is called with the table sorted
/// (see [`sort_counters!`]): Prometheus family names and help text are plain strings,
/// so the engine does not depend on the metrics library.
macro_rules! engine_counters {
    ($then:ident $args:tt) => {
        $crate::engine::sort_counters! { $then $args [] []
            /// Records the engine was given, whatever became of them.
            consumed: u64;
            /// Touchpoints resolved (one `touchpoints.resolved` record each).
            accepted: u64;
            /// Inputs whose id was seen before: nothing changed.
            duplicates: u64;
            /// Seen marks of events forgotten after `limits.seen_events_days`.
            seen_marks_pruned: u64 => counter(
                "unicus_seen_marks_pruned_total",
                "Event ids forgotten after limits.seen_events_days (a later copy would count again).");
            /// Dead letters, by reason.
            rejected: BTreeMap<&'static str, u64>;
            /// Touchpoints resolved, by channel.
            accepted_by_channel: BTreeMap<String, u64>;
            /// Fields of touchpoints that the contract does not know.
            unknown_fields: u64;
            /// Touchpoints of an event type the contract does not know.
            unknown_types: u64;
            /// Identifiers of a type the configuration does not know.
            unknown_identifier_types: u64;
            values_ignored => counters(
                "unicus_identity_values_ignored_total",
                "Identifier values that did not link, by reason.",
                ["reason"]) each {
                /// Identifier values known to be junk (placeholders, test values).
                junk_values = "junk",
                /// Identifier values that cannot be normalised.
                unusable_values = "unusable",
                /// Identifier values not linked because they are generic.
                generic_skipped = "generic",
                /// Identifiers dropped because the customer holds its type's limit.
                limit_dropped = "limit",
            };
            /// Identifier values that turned generic.
            generic_values: u64 => counter(
                "unicus_identity_generic_values_total",
                "Identifier values that became generic and stopped linking.");
            /// Links refused by a guardrail.
            conflicts: u64 => counter(
                "unicus_identity_conflicts_refused_total",
                "Links refused by a guardrail (unique or weak identifier contradiction).");
            /// Customers merged into an older one (by events and by commands).
            merges: u64 => counter(
                "unicus_identity_merges_total",
                "Customers merged into an older one.");
            /// Customers created.
            new_customers: u64 => counter(
                "unicus_identity_new_customers_total",
                "Customers created.");
            /// Accepted touchpoints with no usable identifier nor person data.
            unresolved: u64 => counter(
                "unicus_identity_unresolved_events_total",
                "Accepted touchpoints with no usable identifier nor person data.");
            /// Events dropped because they carry an identifier of an erased customer.
            suppressed: u64;
            /// Person fields or attributes dropped by the minimisation allow-lists.
            minimised: u64;
            /// Consent entries naming an identifier that cannot be normalised.
            consent_dropped: u64;
            /// `consent.changes` records by `purpose/channel`.
            consent_changes: BTreeMap<String, u64> => counters(
                "unicus_consent_changes_total",
                "consent.changes records, by purpose and channel.",
                ["purpose", "channel"]) by |key| match key.split_once('/') {
                    Some((purpose, channel)) => [purpose.to_string(), channel.to_string()],
                    None => [key.clone(), "?".to_string()],
                };
            /// Rights requests done, by kind (`export`, `erase`, `retention`, `not_found`).
            requests: BTreeMap<&'static str, u64> => counters(
                "unicus_rights_requests_done_total",
                "Rights requests carried out, by kind (retention: expiries of the retention sweep).",
                ["kind"]);
            /// Behavioural source profiles detached by retention.
            detached_source_profiles: u64 => counter(
                "unicus_identity_source_profiles_detached_total",
                "Behavioural source profiles detached by retention.");
            triggers_fired => counters(
                "unicus_triggers_fired_total",
                "Trigger records published, by trigger.",
                ["trigger"]) each {
                /// `triggers.cart_abandoned` records.
                carts_fired = "cart_abandoned",
                /// `triggers.purchase_completed` records.
                purchases = "purchase_completed",
                /// `triggers.lifecycle_changed` records.
                lifecycle_changes = "lifecycle_changed",
            };
            triggers_suppressed => counters(
                "unicus_triggers_suppressed_total",
                "Triggers not sent: no allowed and reachable channel, or held back by a recent order.",
                ["trigger"]) each {
                /// Abandoned carts held back: no channel allowed, or an order within the
                /// cart journey's `suppress_after_purchase`.
                carts_suppressed = "cart_abandoned",
            };
            reference_applied => counters(
                "unicus_reference_updates_total",
                "Reference records applied to the local copy, by table.",
                ["table"]) each {
                /// `reference.products` records applied.
                reference_products = "products",
                /// `reference.stores` records applied.
                reference_stores = "stores",
            };
            /// Reference records that could not be read (their key keeps what it had).
            reference_rejected: u64 => counter(
                "unicus_reference_rejected_total",
                "Reference records that could not be read; their key keeps what it had.");
            reference_missed => counters(
                "unicus_reference_misses_total",
                "Events whose SKU or source the reference data does not know (read as absent), by table.",
                ["table"]) each {
                /// Events whose SKU is not in the catalogue.
                product_misses = "products",
                /// Events whose source is not a known store.
                store_misses = "stores",
            };
            /// `audiences.changes` records: customers entering or leaving an audience.
            audience_changes: u64 => counter(
                "unicus_audience_changes_total",
                "Customers that entered or left an audience of the configuration.");
            /// `triggers.<journey>` records of the configuration's journeys.
            journey_triggers: u64 => counter(
                "unicus_journey_triggers_total",
                "Journey triggers published on triggers.<journey>.");
            /// Journey waits that came to their due time without a trigger: capped,
            /// after a recent purchase, or no channel allowed.
            journey_suppressed: u64 => counter(
                "unicus_journey_suppressed_total",
                "Journey triggers not sent: capped, after a recent purchase, or no allowed channel.");
            /// Consent decisions that lapsed.
            consents_expired: u64 => counter(
                "unicus_consent_expired_total",
                "Consent decisions that lapsed.");
            bounds_dropped => counters(
                "unicus_bounds_dropped_total",
                "What the store stopped keeping at a bound of [engine.limits], by what.",
                ["what"]) each {
                /// Attribute keys forgotten beyond `max_attributes_per_customer`.
                attributes_dropped = "attribute",
                /// Carts forgotten beyond `activation.max_carts`.
                carts_dropped = "cart",
                /// Items of cart snapshots beyond `max_cart_items`.
                cart_items_dropped = "cart_item",
                /// Orders or returns left out of the totals: a currency beyond
                /// `max_currencies_per_customer`.
                currencies_dropped = "currency",
                /// Consent decisions about one identifier beyond `max_identifier_consents`.
                identifier_consents_dropped = "identifier_consent",
                /// Merged ids, and their aliases, beyond `max_merged_ids`.
                merged_ids_dropped = "merged_id",
                /// Merge and split history entries beyond `max_merge_log`.
                merge_log_dropped = "merge_log",
                /// Purchased items beyond `max_recent_purchases`.
                purchases_dropped = "recent_purchase",
                /// Orders and returns beyond `max_orders_kept`.
                orders_dropped = "order",
                /// `identity.changes` conflict records beyond `max_conflicts_per_event`
                /// (the refusals themselves are in `conflicts`).
                conflict_records_dropped = "conflict_record",
            };
            /// Output records, by topic (golden records coalesced in their batch left out).
            outputs: BTreeMap<&'static str, u64>;
            /// Golden records replaced by a later one of the same customer in the same
            /// batch, not published (`coalesce_profiles`).
            profiles_coalesced: u64 => counter(
                "unicus_profiles_coalesced_total",
                "Golden records replaced by a later one of the same customer in the same batch, not published.");
            /// Events not attached to the source profile of their anchor: its value is
            /// generic, or it is clearly somebody else's (the shop's phone, a family e-mail).
            anchors_refused: u64 => counter(
                "unicus_identity_anchors_refused_total",
                "Events kept off their anchor's source profile: a generic value, or clearly another person.");
            /// Events that brought new person data and looked up fuzzy candidates.
            fuzzy_searches: u64 => counter(
                "unicus_identity_fuzzy_searches_total",
                "Events that brought new person data and looked up fuzzy candidates.");
            /// Source profiles compared by fuzzy matching.
            fuzzy_candidates: u64 => counter(
                "unicus_identity_fuzzy_candidates_total",
                "Source profiles compared by fuzzy matching.");
            /// Blocking keys that turned generic (shared by more than
            /// `matching.max_candidates`).
            generic_blocks: u64 => counter(
                "unicus_identity_generic_blocking_keys_total",
                "Blocking keys shared by more than matching.max_candidates, no longer used.");
            /// Fuzzy links, by match rule.
            fuzzy_links: BTreeMap<String, u64> => counters(
                "unicus_identity_fuzzy_links_total",
                "Links made by a fuzzy match rule (person data, no shared identifier), by rule.",
                ["rule"]);
            /// `identity.changes` suggestions, by match rule.
            suggestions: BTreeMap<String, u64> => counters(
                "unicus_identity_suggestions_total",
                "Fuzzy matches suggested (not applied), by rule.",
                ["rule"]);
            /// Splits done (`identity.commands`).
            splits: u64 => counter(
                "unicus_identity_splits_total",
                "Customers split by an operator's command.");
            /// What became of the records of each input source (a topic, or a file), for
            /// the reconciliation of what was consumed against what came out.
            by_source: BTreeMap<String, SourceCounts>;
            /// The number of source profiles of a customer after each change that added to
            /// them (creation, merge, a new source profile), counted per number: the
            /// over-merge signal.
            customer_source_profiles: BTreeMap<u32, u64>;
        }
    };
}
pub(crate) use engine_counters;

/// Sorts the entries of [`engine_counters!`] into the fields of [`Stats`] and the
/// entries of the `families!` table, one entry at a time, then calls
/// `$then! { $args fields { $(doc field: Type,)* } families { $(family entry;)* } }`.
macro_rules! sort_counters {
    ($then:ident $args:tt [$($fields:tt)*] [$($families:tt)*]) => {
        $then! { $args fields { $($fields)* } families { $($families)* } }
    };
    // Plain counts under the fixed label values of one family.
    ($then:ident $args:tt [$($fields:tt)*] [$($families:tt)*]
        $family:ident => counters($name:literal, $help:literal, [$label:literal]) each {
            $( $(#[$doc:meta])* $field:ident = $value:literal ),+ $(,)?
        };
        $($rest:tt)*
    ) => {
        $crate::engine::sort_counters! { $then $args
            [$($fields)* $( $(#[$doc])* $field: u64, )+]
            [$($families)* $family: counters($name, $help, [$label]) => each($($value = $field),+);]
            $($rest)*
        }
    };
    // Counted, not exposed here.
    ($then:ident $args:tt [$($fields:tt)*] [$($families:tt)*]
        $(#[$doc:meta])* $field:ident: $ty:ty;
        $($rest:tt)*
    ) => {
        $crate::engine::sort_counters! { $then $args
            [$($fields)* $(#[$doc])* $field: $ty,]
            [$($families)*]
            $($rest)*
        }
    };
    // A plain count.
    ($then:ident $args:tt [$($fields:tt)*] [$($families:tt)*]
        $(#[$doc:meta])* $field:ident: $ty:ty => counter($name:literal, $help:literal);
        $($rest:tt)*
    ) => {
        $crate::engine::sort_counters! { $then $args
            [$($fields)* $(#[$doc])* $field: $ty,]
            [$($families)* $field: counter($name, $help) => stat($field);]
            $($rest)*
        }
    };
    // Counts by key, the key as the one label.
    ($then:ident $args:tt [$($fields:tt)*] [$($families:tt)*]
        $(#[$doc:meta])* $field:ident: $ty:ty => counters($name:literal, $help:literal, [$label:literal]);
        $($rest:tt)*
    ) => {
        $crate::engine::sort_counters! { $then $args
            [$($fields)* $(#[$doc])* $field: $ty,]
            [$($families)* $field: counters($name, $help, [$label])
                => stat_by($field, |key| [key.to_string()]);]
            $($rest)*
        }
    };
    // Counts by key, labelled by `$labels(key)`.
    ($then:ident $args:tt [$($fields:tt)*] [$($families:tt)*]
        $(#[$doc:meta])* $field:ident: $ty:ty
            => counters($name:literal, $help:literal, [$($label:literal),+]) by $labels:expr;
        $($rest:tt)*
    ) => {
        $crate::engine::sort_counters! { $then $args
            [$($fields)* $(#[$doc])* $field: $ty,]
            [$($families)* $field: counters($name, $help, [$($label),+]) => stat_by($field, $labels);]
            $($rest)*
        }
    };
}
pub(crate) use sort_counters;

/// Declares [`Stats`] and its [`Stats::absorb`] from the fields of the table.
macro_rules! stats {
    ([] fields { $( $(#[$doc:meta])* $field:ident: $ty:ty, )* } families $families:tt) => {
        /// What the engine saw since it was opened (not persisted: per process). The same
        /// type carries what one step of a stage counted (resolve's [`Resolution`],
        /// profile's [`Profiled`]), which the engine adds up with [`Stats::absorb`].
        ///
        /// [`Resolution`]: crate::engine::resolve::Resolution
        /// [`Profiled`]: crate::engine::profile::Profiled
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct Stats {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl Stats {
            /// Adds every counter of `step` (what one step counted) to these.
            pub fn absorb(&mut self, step: Stats) {
                $( Tally::absorb(&mut self.$field, step.$field); )*
            }
        }
    };
}

engine_counters!(stats []);

/// A count that adds up: a number, or counts by key.
trait Tally {
    fn absorb(&mut self, other: Self);
}

impl Tally for u64 {
    fn absorb(&mut self, other: u64) {
        *self += other;
    }
}

impl<K: Ord, V: Tally + Default> Tally for BTreeMap<K, V> {
    fn absorb(&mut self, other: Self) {
        for (key, value) in other {
            self.entry(key).or_default().absorb(value);
        }
    }
}

impl Tally for SourceCounts {
    fn absorb(&mut self, other: Self) {
        self.accepted.absorb(other.accepted);
        self.rejected.absorb(other.rejected);
        self.duplicates.absorb(other.duplicates);
        self.suppressed.absorb(other.suppressed);
    }
}

impl Stats {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// One line on fuzzy matching, for the summaries of `replay` and `demo`.
    pub fn fuzzy_summary(&self) -> String {
        let by_rule = |m: &BTreeMap<String, u64>| -> String {
            let total: u64 = m.values().sum();
            if m.is_empty() {
                return "0".into();
            }
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("{total} ({})", parts.join(", "))
        };
        format!(
            "fuzzy matching: {} events looked for candidates, {} compared; links {}; suggestions {}; generic blocking keys {}; splits {}",
            self.fuzzy_searches,
            self.fuzzy_candidates,
            by_rule(&self.fuzzy_links),
            by_rule(&self.suggestions),
            self.generic_blocks,
            self.splits
        )
    }

    pub(crate) fn source(&mut self, topic: &str) -> &mut SourceCounts {
        if !self.by_source.contains_key(topic) {
            self.by_source
                .insert(topic.to_string(), SourceCounts::default());
        }
        self.by_source.get_mut(topic).expect("inserted above")
    }
}

/// What became of the records of one input source. Every record the engine is given
/// counts once, in exactly one of these.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceCounts {
    /// Touchpoints resolved (one `touchpoints.resolved` record each), or rights
    /// requests carried out.
    pub accepted: u64,
    /// Dead letters, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// An `event_id` or `request_id` seen before: nothing changed.
    pub duplicates: u64,
    /// Events of an erased person: dropped, nothing published.
    pub suppressed: u64,
}

impl SourceCounts {
    pub fn total(&self) -> u64 {
        self.accepted + self.rejected.values().sum::<u64>() + self.duplicates + self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_adds_counts_and_merges_counts_by_key() {
        let mut total = Stats {
            merges: 2,
            fuzzy_links: [("name_address".to_string(), 1)].into_iter().collect(),
            ..Stats::default()
        };
        total.source("touchpoints.web").accepted = 3;
        let mut step = Stats {
            merges: 1,
            carts_fired: 4,
            fuzzy_links: [("name_address".to_string(), 2), ("name_dob".to_string(), 1)]
                .into_iter()
                .collect(),
            customer_source_profiles: [(2, 1)].into_iter().collect(),
            ..Stats::default()
        };
        step.source("touchpoints.web").accepted = 1;
        *step
            .source("touchpoints.app")
            .rejected
            .entry("not_json")
            .or_default() += 1;

        total.absorb(step);
        assert_eq!(total.merges, 3);
        assert_eq!(total.carts_fired, 4);
        assert_eq!(total.fuzzy_links["name_address"], 3);
        assert_eq!(total.fuzzy_links["name_dob"], 1);
        assert_eq!(total.customer_source_profiles[&2], 1);
        assert_eq!(total.by_source["touchpoints.web"].accepted, 4);
        assert_eq!(total.by_source["touchpoints.app"].rejected["not_json"], 1);

        let before = total.clone();
        total.absorb(Stats::default());
        assert_eq!(total, before, "an empty step changes nothing");
    }
}
