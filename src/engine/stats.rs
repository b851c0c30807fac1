//! What the engine saw since it was opened, per process (not persisted): the counters
//! that `replay`, `demo` and the Prometheus metrics report.

use std::collections::BTreeMap;

/// What the engine saw since it was opened (not persisted: per process).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub consumed: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub accepted_by_channel: BTreeMap<String, u64>,
    pub unknown_fields: u64,
    pub unknown_types: u64,
    pub unknown_identifier_types: u64,
    pub junk_values: u64,
    pub unusable_values: u64,
    pub generic_values: u64,
    pub generic_skipped: u64,
    pub limit_dropped: u64,
    pub conflicts: u64,
    pub merges: u64,
    pub new_customers: u64,
    pub unresolved: u64,
    /// Events dropped because they carry an identifier of an erased customer.
    pub suppressed: u64,
    /// Person fields or attributes dropped by the minimisation allow-lists.
    pub minimised: u64,
    /// Consent entries naming an identifier that cannot be normalised.
    pub consent_dropped: u64,
    /// `consent.changes` records by `purpose/channel`.
    pub consent_changes: BTreeMap<String, u64>,
    /// Rights requests done, by kind (`export`, `erase`, `retention`, `not_found`).
    pub requests: BTreeMap<&'static str, u64>,
    /// Behavioural source profiles detached by retention.
    pub detached_source_profiles: u64,
    /// `triggers.cart_abandoned` records.
    pub carts_fired: u64,
    /// Abandoned carts without any allowed channel: no trigger.
    pub carts_suppressed: u64,
    /// `triggers.purchase_completed` records.
    pub purchases: u64,
    /// `triggers.lifecycle_changed` records.
    pub lifecycle_changes: u64,
    /// Consent decisions that lapsed.
    pub consents_expired: u64,
    pub outputs: BTreeMap<&'static str, u64>,
    /// Events not attached to the source profile of their anchor: its value is generic,
    /// or it is clearly somebody else's (the shop's phone, a family e-mail).
    pub anchors_refused: u64,
    /// Events that brought new person data and looked up fuzzy candidates.
    pub fuzzy_searches: u64,
    /// Source profiles compared by fuzzy matching.
    pub fuzzy_candidates: u64,
    /// Blocking keys that turned generic (shared by more than `matching.max_candidates`).
    pub generic_blocks: u64,
    /// Fuzzy links, by match rule.
    pub fuzzy_links: BTreeMap<String, u64>,
    /// `identity.changes` suggestions, by match rule.
    pub suggestions: BTreeMap<String, u64>,
    /// Splits done (`identity.commands`).
    pub splits: u64,
    /// What became of the records of each input source (a topic, or a file), for the
    /// reconciliation of what was consumed against what came out.
    pub by_source: BTreeMap<String, SourceCounts>,
    /// The number of source profiles of a customer after each change that added to them
    /// (creation, merge, a new source profile), counted per number: the over-merge signal.
    pub customer_source_profiles: BTreeMap<u32, u64>,
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
