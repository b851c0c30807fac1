//! Consent: one decision per purpose × channel (optionally per identifier) on each
//! customer, and the rules that combine them.
//!
//! - **Newer wins.** A decision replaces the one of the same key only if it is at least as
//!   recent (event time); at the same instant a denial wins. An older event never
//!   overrides a newer decision, whatever order the events arrive in.
//! - **Most specific and most recent applies.** For purpose `p` and channel `c`, the
//!   decisions that apply are `(p, c)` and `(p, all)`, and for one identifier also those
//!   naming it; the most recent applies, a denial winning ties. Expired decisions do not
//!   apply. No decision: the purpose's default (`implied` purposes are allowed until
//!   denied, the others need a grant).
//! - **Merges are restrictive.** When two customers merge, a denial on either side wins
//!   per key (the latest time is kept), and a denial of `(p, all)` on one side also denies
//!   every channel the other side had granted for `p`.
//!
//! - **Bounded.** Decisions about one identifier are kept up to a number per customer:
//!   beyond, grants are forgotten before denials, the oldest first (a "no" is the last
//!   thing forgotten), and the key falls back to the purpose's default (cause `limit`).
//!
//! The module is pure: the profile stage stores [`Consents`] inside the customer profile
//! and turns the returned [`Change`]s into `consent.changes` records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{ConsentChannel, Ident, Purpose};

/// Of the decisions about one identifier, the keys beyond the `max` kept: grants go
/// before denials, the oldest first, the key breaking ties.
fn beyond_bound<'a>(
    decisions: impl Iterator<Item = (&'a ConsentKey, &'a Decision)>,
    max: usize,
) -> Vec<ConsentKey> {
    let mut about_one: Vec<(&ConsentKey, &Decision)> =
        decisions.filter(|(k, _)| k.identifier.is_some()).collect();
    if about_one.len() <= max {
        return Vec::new();
    }
    about_one.sort_by(|(ka, a), (kb, b)| {
        (!a.granted, a.at, &a.event_id, ka).cmp(&(!b.granted, b.at, &b.event_id, kb))
    });
    let excess = about_one.len() - max;
    about_one[..excess]
        .iter()
        .map(|(k, _)| (*k).clone())
        .collect()
}

/// Keeps a source profile's statements about single identifiers to `max`, like
/// [`Consents::forget_beyond`]. Returns how many were forgotten.
pub fn forget_statements_beyond(statements: &mut Vec<(ConsentKey, Decision)>, max: usize) -> u64 {
    let gone = beyond_bound(statements.iter().map(|(k, d)| (k, d)), max);
    statements.retain(|(k, _)| !gone.contains(k));
    gone.len() as u64
}

/// What a decision is about. Ordered by purpose, channel and identifier as strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsentKey {
    pub purpose: Purpose,
    pub channel: ConsentChannel,
    /// The decision concerns this identifier only.
    pub identifier: Option<Ident>,
}

impl ConsentKey {
    /// A text form for timer keys: `purpose \0 channel \0 type \0 value`.
    pub fn encode(&self) -> String {
        let (t, v) = self
            .identifier
            .as_ref()
            .map_or(("", ""), |i| (i.kind.as_str(), i.value.as_str()));
        format!("{}\0{}\0{t}\0{v}", self.purpose, self.channel)
    }

    /// The key of [`ConsentKey::encode`]; `None` if `s` is not one.
    pub fn decode(s: &str) -> Option<ConsentKey> {
        let mut parts = s.splitn(4, '\0');
        let (purpose, channel) = (parts.next()?, parts.next()?);
        let (t, v) = (parts.next()?, parts.next()?);
        Some(ConsentKey {
            purpose: purpose.parse().ok()?,
            channel: channel.parse().ok()?,
            identifier: (!t.is_empty()).then(|| Ident::new(t, v)),
        })
    }
}

/// One decision of the person, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub granted: bool,
    /// Event time of the decision (ms since the epoch).
    pub at: i64,
    /// Channel of the event that carried it.
    pub source_channel: String,
    pub event_id: String,
    pub expires_at: Option<i64>,
}

impl Decision {
    fn in_force(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }

    /// Whether `self` should replace `other`: more recent, a denial winning ties.
    pub fn supersedes(&self, other: &Decision) -> bool {
        (self.at, !self.granted) > (other.at, !other.granted)
    }
}

/// Why a decision changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An event of the customer stated it.
    Event,
    /// Two customers merged and the restrictive combination changed it.
    Merge,
    /// The decision reached its `expires_at`: the purpose's default applies again.
    Expiry,
    /// A split gave each side only the decisions its own source profiles stated.
    Split,
    /// Decisions about single identifiers beyond the customer's bound were forgotten.
    Limit,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Event => "event",
            Cause::Merge => "merge",
            Cause::Expiry => "expiry",
            Cause::Split => "split",
            Cause::Limit => "limit",
        }
    }
}

/// One effective change of a decision: the state of a key went from `previous` to
/// `decision.granted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: ConsentKey,
    pub decision: Decision,
    /// `None`: there was no decision for this key.
    pub previous: Option<bool>,
    pub cause: Cause,
}

/// A customer's decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consents {
    pub decisions: BTreeMap<ConsentKey, Decision>,
}

impl Consents {
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
    }

    /// Records a decision stated by an event. Returns the change when the state of the
    /// key changed; a restatement (or an older decision) changes no state.
    pub fn apply(&mut self, key: ConsentKey, decision: Decision) -> Option<Change> {
        let previous = match self.decisions.get(&key) {
            Some(old) if !decision.supersedes(old) => return None,
            Some(old) => Some(old.granted),
            None => None,
        };
        let change = (previous != Some(decision.granted)).then(|| Change {
            key: key.clone(),
            decision: decision.clone(),
            previous,
            cause: Cause::Event,
        });
        self.decisions.insert(key, decision);
        change
    }

    /// Folds the decisions of a customer merged into this one, restrictively. Returns
    /// the changes of this customer's state, in key order.
    pub fn merge(&mut self, other: Consents) -> Vec<Change> {
        let before = self.decisions.clone();
        // Denials of a whole purpose on the other side, to apply to this side's grants.
        let other_all_denials: Vec<(Purpose, Decision)> = other
            .decisions
            .iter()
            .filter(|(k, d)| {
                k.channel == ConsentChannel::All && k.identifier.is_none() && !d.granted
            })
            .map(|(k, d)| (k.purpose, d.clone()))
            .collect();
        let own_all_denials: Vec<(Purpose, Decision)> = self
            .decisions
            .iter()
            .filter(|(k, d)| {
                k.channel == ConsentChannel::All && k.identifier.is_none() && !d.granted
            })
            .map(|(k, d)| (k.purpose, d.clone()))
            .collect();
        let other_keys: Vec<ConsentKey> = other.decisions.keys().cloned().collect();
        for (key, theirs) in other.decisions {
            let combined = match self.decisions.get(&key) {
                None => theirs,
                Some(mine) => restrictive(mine, &theirs),
            };
            self.decisions.insert(key, combined);
        }
        // A purpose denied on all channels by one side denies the other side's grants.
        for (denials, side_keys) in [
            (&other_all_denials, before.keys().cloned().collect()),
            (&own_all_denials, other_keys),
        ] {
            for (purpose, denial) in denials {
                for key in side_keys.iter().filter(|k| k.purpose == *purpose) {
                    if let Some(d) = self.decisions.get_mut(key) {
                        if d.granted {
                            *d = restrictive(d, denial);
                        }
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for (key, d) in &self.decisions {
            let previous = before.get(key).map(|b| b.granted);
            if previous != Some(d.granted) {
                changes.push(Change {
                    key: key.clone(),
                    decision: d.clone(),
                    previous,
                    cause: Cause::Merge,
                });
            }
        }
        changes
    }

    /// The decisions stated by a set of source profiles, combined as one customer's
    /// (newer wins, a denial winning ties); those expired by `now` are left out. What
    /// a side of a split keeps.
    pub fn from_statements<'a>(
        statements: impl Iterator<Item = &'a (ConsentKey, Decision)>,
        now: i64,
    ) -> Consents {
        let mut all: Vec<&(ConsentKey, Decision)> =
            statements.filter(|(_, d)| d.in_force(now)).collect();
        all.sort_by(|a, b| {
            (a.1.at, !a.1.granted, &a.1.event_id).cmp(&(b.1.at, !b.1.granted, &b.1.event_id))
        });
        let mut c = Consents::default();
        for (k, d) in all {
            c.apply(k.clone(), d.clone());
        }
        c
    }

    /// The changes from `before` to `self` (cause `split`): a key gone falls back to
    /// its purpose's default (`implied`).
    pub fn changes_since(
        &self,
        before: &Consents,
        implied: impl Fn(Purpose) -> bool,
        at: i64,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for (key, d) in &self.decisions {
            let previous = before.decisions.get(key).map(|b| b.granted);
            if previous != Some(d.granted) {
                out.push(Change {
                    key: key.clone(),
                    decision: d.clone(),
                    previous,
                    cause: Cause::Split,
                });
            }
        }
        for (key, old) in &before.decisions {
            if self.decisions.contains_key(key) {
                continue;
            }
            let default = implied(key.purpose);
            if old.granted != default {
                out.push(Change {
                    key: key.clone(),
                    decision: Decision {
                        granted: default,
                        at,
                        expires_at: None,
                        ..old.clone()
                    },
                    previous: Some(old.granted),
                    cause: Cause::Split,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The decision that applies to `purpose` on `channel` (for one identifier if
    /// given) at `now`, if any.
    pub fn applicable(
        &self,
        purpose: Purpose,
        channel: ConsentChannel,
        identifier: Option<&Ident>,
        now: i64,
    ) -> Option<&Decision> {
        // A linear pass: a customer has a few dozen decisions at most, and borrowed
        // comparisons cost less than building keys for map lookups.
        let mut best: Option<&Decision> = None;
        for (k, d) in &self.decisions {
            let applies = k.purpose == purpose
                && (k.channel == channel || k.channel == ConsentChannel::All)
                && k.identifier.as_ref().is_none_or(|i| Some(i) == identifier)
                && d.in_force(now);
            if applies && best.is_none_or(|b| d.supersedes(b)) {
                best = Some(d);
            }
        }
        best
    }

    /// Removes a decision that expired by `now`; the change to the default state.
    pub fn expire(&mut self, key: &ConsentKey, now: i64, implied: bool) -> Option<Change> {
        let d = self.decisions.get(key)?;
        if d.in_force(now) {
            return None;
        }
        let d = self.decisions.remove(key)?;
        let previous = Some(d.granted);
        (previous != Some(implied)).then(|| Change {
            key: key.clone(),
            decision: Decision {
                granted: implied,
                at: d.expires_at.unwrap_or(now),
                expires_at: None,
                ..d
            },
            previous,
            cause: Cause::Expiry,
        })
    }

    /// Whether `purpose` is allowed on `channel` (for one identifier if given).
    pub fn allowed(
        &self,
        purpose: Purpose,
        channel: ConsentChannel,
        identifier: Option<&Ident>,
        implied: bool,
        now: i64,
    ) -> bool {
        match self.applicable(purpose, channel, identifier, now) {
            Some(d) => d.granted,
            None => implied,
        }
    }

    /// Forgets the decisions about one identifier beyond `max` (see [`beyond_bound`]).
    /// Returns the changes back to each forgotten key's default (`implied`) at `at`,
    /// cause `limit`, and how many were forgotten.
    pub fn forget_beyond(
        &mut self,
        max: usize,
        implied: impl Fn(Purpose) -> bool,
        at: i64,
    ) -> (Vec<Change>, u64) {
        let gone = beyond_bound(self.decisions.iter(), max);
        let mut changes = Vec::new();
        for key in &gone {
            let Some(d) = self.decisions.remove(key) else {
                continue;
            };
            let default = implied(key.purpose);
            if d.granted != default {
                changes.push(Change {
                    key: key.clone(),
                    decision: Decision {
                        granted: default,
                        at,
                        expires_at: None,
                        ..d
                    },
                    previous: Some(d.granted),
                    cause: Cause::Limit,
                });
            }
        }
        (changes, gone.len() as u64)
    }

    /// Whether the person explicitly denied `purpose` (on every channel, or on `all`).
    pub fn denied_purpose(&self, purpose: Purpose, now: i64) -> bool {
        self.applicable(purpose, ConsentChannel::All, None, now)
            .is_some_and(|d| !d.granted)
    }
}

/// The restrictive combination of two decisions of the same key: a denial wins, the
/// latest time is kept.
fn restrictive(a: &Decision, b: &Decision) -> Decision {
    let latest = a.at.max(b.at);
    let base = match (a.granted, b.granted) {
        (true, true) => {
            if b.supersedes(a) {
                b
            } else {
                a
            }
        }
        (false, true) => a,
        (true, false) => b,
        (false, false) => {
            if b.supersedes(a) {
                b
            } else {
                a
            }
        }
    };
    Decision {
        at: latest,
        expires_at: if base.granted { base.expires_at } else { None },
        ..base.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(purpose: &str) -> Purpose {
        purpose.parse().unwrap()
    }

    fn ch(channel: &str) -> ConsentChannel {
        channel.parse().unwrap()
    }

    fn key(purpose: &str, channel: &str) -> ConsentKey {
        ConsentKey {
            purpose: p(purpose),
            channel: ch(channel),
            identifier: None,
        }
    }

    fn dec(granted: bool, at: i64, source: &str) -> Decision {
        Decision {
            granted,
            at,
            source_channel: source.into(),
            event_id: format!("{source}-{at}"),
            expires_at: None,
        }
    }

    #[test]
    fn an_older_decision_never_overrides_a_newer_one() {
        let mut c = Consents::default();
        assert!(c
            .apply(key("marketing", "email"), dec(false, 20, "store"))
            .is_some());
        assert_eq!(
            c.apply(key("marketing", "email"), dec(true, 10, "web")),
            None
        );
        assert!(!c.allowed(p("marketing"), ch("email"), None, false, 30));
        let change = c
            .apply(key("marketing", "email"), dec(true, 30, "web"))
            .unwrap();
        assert_eq!(change.previous, Some(false));
        assert!(c.allowed(p("marketing"), ch("email"), None, false, 30));
    }

    #[test]
    fn a_restatement_is_not_a_change_and_a_denial_wins_a_tie() {
        let mut c = Consents::default();
        c.apply(key("marketing", "sms"), dec(true, 10, "web"));
        assert_eq!(c.apply(key("marketing", "sms"), dec(true, 20, "app")), None);
        assert!(c
            .apply(key("marketing", "sms"), dec(false, 20, "store"))
            .is_some());
        assert_eq!(c.apply(key("marketing", "sms"), dec(true, 20, "web")), None);
        assert!(!c.allowed(p("marketing"), ch("sms"), None, false, 25));
    }

    #[test]
    fn the_most_recent_of_channel_and_all_applies() {
        let mut c = Consents::default();
        c.apply(key("marketing", "all"), dec(false, 10, "store"));
        c.apply(key("marketing", "email"), dec(true, 20, "web"));
        assert!(c.allowed(p("marketing"), ch("email"), None, false, 30));
        assert!(!c.allowed(p("marketing"), ch("sms"), None, true, 30));
        c.apply(key("marketing", "all"), dec(false, 40, "service"));
        assert!(!c.allowed(p("marketing"), ch("email"), None, false, 50));
        assert!(c.denied_purpose(p("marketing"), 50));
        assert!(c.allowed(p("analytics"), ch("web"), None, true, 50));
        assert!(!c.allowed(p("ab_testing"), ch("web"), None, false, 50));
    }

    #[test]
    fn expired_decisions_fall_back_to_the_default() {
        let mut c = Consents::default();
        let mut d = dec(true, 10, "web");
        d.expires_at = Some(100);
        c.apply(key("remarketing", "web"), d);
        assert!(c.allowed(p("remarketing"), ch("web"), None, false, 99));
        assert!(!c.allowed(p("remarketing"), ch("web"), None, false, 100));
    }

    #[test]
    fn an_expired_grant_goes_back_to_the_default_once() {
        let mut c = Consents::default();
        let mut d = dec(true, 10, "web");
        d.expires_at = Some(100);
        let k = key("marketing", "email");
        c.apply(k.clone(), d);
        assert_eq!(c.expire(&k, 99, false), None);
        let change = c.expire(&k, 100, false).unwrap();
        assert_eq!(
            (change.previous, change.decision.granted),
            (Some(true), false)
        );
        assert_eq!(change.cause, Cause::Expiry);
        assert!(c.is_empty());
        assert_eq!(c.expire(&k, 200, false), None);
        let with_id = ConsentKey {
            identifier: Some(Ident::new("email", "a@b.fr")),
            ..k
        };
        assert_eq!(ConsentKey::decode(&with_id.encode()), Some(with_id));
    }

    #[test]
    fn an_identifier_decision_applies_to_that_identifier_only() {
        let mut c = Consents::default();
        c.apply(key("marketing", "email"), dec(true, 10, "web"));
        let old = Ident::new("email", "old@example.com");
        let new = Ident::new("email", "new@example.com");
        c.apply(
            ConsentKey {
                identifier: Some(old.clone()),
                ..key("marketing", "email")
            },
            dec(false, 20, "email"),
        );
        assert!(!c.allowed(p("marketing"), ch("email"), Some(&old), false, 30));
        assert!(c.allowed(p("marketing"), ch("email"), Some(&new), false, 30));
    }

    #[test]
    fn a_merge_of_granted_and_denied_is_denied_at_the_latest_time() {
        let mut web = Consents::default();
        web.apply(key("marketing", "email"), dec(true, 50, "web"));
        let mut store = Consents::default();
        store.apply(key("marketing", "email"), dec(false, 10, "store"));
        let changes = web.merge(store);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].previous, Some(true));
        assert!(!changes[0].decision.granted);
        assert_eq!(changes[0].decision.at, 50);
        assert_eq!(changes[0].decision.source_channel, "store");
        assert_eq!(changes[0].cause, Cause::Merge);
        assert!(!web.allowed(p("marketing"), ch("email"), None, false, 60));
    }

    #[test]
    fn a_merge_with_a_purpose_denied_everywhere_denies_the_other_side_grants() {
        let mut a = Consents::default();
        a.apply(key("marketing", "sms"), dec(true, 50, "app"));
        a.apply(key("analytics", "web"), dec(true, 50, "web"));
        let mut b = Consents::default();
        b.apply(key("marketing", "all"), dec(false, 10, "store"));
        let changes = a.merge(b);
        let keys: Vec<(&str, &str, Option<bool>, bool)> = changes
            .iter()
            .map(|c| {
                (
                    c.key.purpose.as_str(),
                    c.key.channel.as_str(),
                    c.previous,
                    c.decision.granted,
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                ("marketing", "all", None, false),
                ("marketing", "sms", Some(true), false)
            ]
        );
        assert!(!a.allowed(p("marketing"), ch("sms"), None, false, 60));
        assert!(a.allowed(p("analytics"), ch("web"), None, true, 60));
    }

    #[test]
    fn merging_is_the_same_whichever_side_survives() {
        let mut a = Consents::default();
        a.apply(key("marketing", "email"), dec(true, 50, "web"));
        a.apply(key("profiling", "all"), dec(false, 5, "crm"));
        let mut b = Consents::default();
        b.apply(key("marketing", "all"), dec(false, 10, "store"));
        b.apply(key("profiling", "all"), dec(true, 60, "web"));
        let mut ab = a.clone();
        ab.merge(b.clone());
        let mut ba = b;
        ba.merge(a);
        assert_eq!(ab, ba);
    }

    #[test]
    fn stored_keys_are_encoded_as_when_their_words_were_strings() {
        // The store holds keys by postcard: typed words must not change its format.
        #[derive(Serialize)]
        struct TextKey<'a> {
            purpose: &'a str,
            channel: &'a str,
            identifier: Option<Ident>,
        }
        let key = ConsentKey {
            identifier: Some(Ident::new("email", "a@b.fr")),
            ..key("ab_testing", "all")
        };
        let text = TextKey {
            purpose: "ab_testing",
            channel: "all",
            identifier: Some(Ident::new("email", "a@b.fr")),
        };
        let bytes = postcard::to_allocvec(&key).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&text).unwrap());
        assert_eq!(postcard::from_bytes::<ConsentKey>(&bytes).unwrap(), key);
    }
}
