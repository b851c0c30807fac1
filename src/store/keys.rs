//! Every key of the store, declared once, grouped by the one part of unicus that owns it;
//! a part reads and writes only its own. Changing one changes the store format.
//!
//! Each owner keeps everything under its namespace (`r/` resolve, `p/` profile, ...) and
//! declares here its tables (a prefix with the shape of its keys) and its cells (single
//! values); the value types are the owner's, given where it builds its [`Table`]s and
//! [`Cell`]s from these declarations. The tests below check that no key is a prefix of
//! another and that only an owner's code names its keys.
//!
//! [`Table`]: super::Table
//! [`Cell`]: super::Cell

use super::table::{CellKey, Namespace, TablePrefix};

/// An owner as the checks below see it.
#[cfg_attr(not(test), allow(dead_code))]
struct Owner {
    name: &'static str,
    namespace: &'static [u8],
    /// The source files (or directories, ending in `/`) that may name its keys.
    code: &'static [&'static str],
    keys: &'static [&'static [u8]],
}

macro_rules! declaration {
    (table $key:ty) => { TablePrefix<$key> };
    (cell) => { CellKey };
    (@new table $bytes:literal) => { TablePrefix::new($bytes) };
    (@new cell $bytes:literal) => { CellKey::new($bytes) };
}

macro_rules! owners {
    ($(
        $(#[$owner_doc:meta])*
        $owner:ident under $namespace:literal, used in [$($code:literal),+] {
            $( $(#[$doc:meta])* $kind:ident $name:ident $(<$key:ty>)? = $bytes:literal; )*
        }
    )*) => {
        $(
            $(#[$owner_doc])*
            pub mod $owner {
                use super::*;

                /// Everything this owner keeps is under it.
                pub const NAMESPACE: Namespace = Namespace::new($namespace);
                $(
                    $(#[$doc])*
                    pub const $name: declaration!($kind $($key)?) =
                        declaration!(@new $kind $bytes);
                )*
            }
        )*

        #[cfg_attr(not(test), allow(dead_code))]
        const OWNERS: &[Owner] = &[$(Owner {
            name: stringify!($owner),
            namespace: $namespace,
            code: &[$($code),+],
            keys: &[$($bytes),*],
        }),*];
    };
}

owners! {
    /// The engine itself.
    engine under b"e/", used in ["src/engine/mod.rs", "src/engine/handle.rs"] {
        /// The layout version of the store.
        cell FORMAT = b"e/format";
        /// Events seen (by `event_id`): a redelivered event changes nothing.
        /// Events seen: the day (UTC, since the epoch) each was received (nothing in
        /// the marks written before 2026-12-07).
        table SEEN_EVENTS<String> = b"e/seen/";
        /// Where the sweep of `SEEN_EVENTS` that forgets marks older than
        /// `limits.seen_events_days` stands.
        cell SEEN_SWEEP = b"e/seen_sweep";
        /// The engine's event-time clock: the latest time stated by an accepted
        /// touchpoint. A request or command that states no time of its own is done at it.
        cell INPUT_CLOCK = b"e/clock";
    }

    /// Resolve: the identity graph.
    resolve under b"r/", used in ["src/engine/resolve/"] {
        /// Source profiles by number.
        table SOURCE_PROFILES<u64> = b"r/sp/";
        /// Customers by id: their source profiles and identifiers.
        table CUSTOMERS<String> = b"r/cu/";
        /// Identifier (type, value) → source profiles holding it.
        table IDENTIFIER_INDEX<(String, String)> = b"r/ix/";
        /// Anchors: a channel's identifier (channel, type, value) → its source profile.
        table ANCHORS<(String, String, String)> = b"r/sk/";
        /// Blocking keys of fuzzy matching (by the first 8 bytes of their SHA-256) →
        /// source profiles.
        table BLOCKING_KEYS<u64> = b"r/bk/";
        /// Merge logs by customer.
        table MERGE_LOGS<String> = b"r/mg/";
        /// Aliases: the id of a merged-away customer → the survivor.
        table ALIASES<String> = b"r/al/";
        /// The last source profile number given.
        cell NEXT_SOURCE_PROFILE = b"r/next_source_profile";
        /// The last customer sequence number given.
        cell NEXT_CUSTOMER_SEQ = b"r/next_customer_seq";
        /// Live customers.
        cell LIVE_CUSTOMERS = b"r/live_customers";
        /// The last split token given.
        cell NEXT_SPLIT_TOKEN = b"r/next_split_token";
    }

    /// Profile: everything keyed by customer id.
    profile under b"p/", used in ["src/engine/profile/"] {
        /// Customer profiles by id.
        table PROFILES<String> = b"p/cu/";
        /// The profile stage's event-time clock.
        cell CLOCK = b"p/clock";
        /// Customers by last-seen day (retention of inactive customers).
        table INACTIVE_INDEX<(u32, String)> = b"p/ls/";
        /// Behavioural source profiles by last-seen day (their retention).
        table BEHAVIOURAL_INDEX<(u32, u64)> = b"p/lb/";
        /// Timers by (due time, customer, kind): abandoned carts, lifecycle, consent expiry.
        table TIMERS<(i64, String, String)> = b"p/tm/";
        /// Timers fired so far: all those due at or before it.
        cell TIMERS_DONE = b"p/timers_done";
        /// No timer is due before it after `TIMERS_DONE` (`i64::MAX`: none is set);
        /// absent, the timers are read to know.
        cell TIMERS_NEXT = b"p/timers_next";
        /// Recent touchpoints of each customer, in one record.
        table TIMELINE<String> = b"p/tr/";
        /// Audiences, traits and windowed aggregates by customer (only when the
        /// configuration defines audiences or traits).
        table AUDIENCES<String> = b"p/au/";
        /// Enrichment facts by customer (only when `[engine.enrichment]` is on).
        table ENRICHMENT<String> = b"p/en/";
        /// Format 3: recent touchpoints by (customer, event time, event id); read only
        /// to move them to `TIMELINE`.
        table MOMENTS_OF_FORMAT_3<(String, i64, String)> = b"p/tl/";
        /// Format 3: touchpoints kept per customer; read only to remove them.
        table TIMELINE_LEN_OF_FORMAT_3<String> = b"p/tn/";
    }

    /// GDPR: rights requests and the suppression list.
    gdpr under b"g/", used in ["src/engine/gdpr.rs"] {
        /// The generated key of the keyed hashes.
        cell HASH_KEY = b"g/key";
        /// Identifiers suppressed so far.
        cell SUPPRESSED_COUNT = b"g/suppressed";
        /// Rights requests done (by `request_id`).
        table REQUESTS_DONE<String> = b"g/rq/";
        /// Suppressed identifiers by keyed hash.
        table SUPPRESSED<String> = b"g/sup/";
    }

    /// Reference data: every instance's full copy of the reference topics.
    reference under b"d/", used in ["src/engine/reference.rs"] {
        /// The product catalogue by SKU (`reference.products`).
        table PRODUCTS<String> = b"d/pr/";
        /// Stores by source id (`reference.stores`).
        table STORES<String> = b"d/st/";
    }

    /// Identity commands.
    commands under b"x/", used in ["src/engine/input/command.rs"] {
        /// Operator commands done (by `command_id`).
        table COMMANDS_DONE<String> = b"x/cmd/";
    }

    /// The Kafka runtime, staged in the engine's batch so both are durable in one write.
    kafka_runtime under b"k/", used in ["src/kafka/runtime/"] {
        /// Output records of a batch (by sequence number) not yet known to be acknowledged.
        table OUTBOX<u64> = b"k/outbox/";
        /// The last outbox sequence number given.
        cell OUTBOX_SEQ = b"k/outbox_seq";
        /// Where the input of an outbox entry's batch ends, per partition (the offsets
        /// its commit gives), by the entry's sequence number.
        table OUTBOX_INPUT<u64> = b"k/outbox_input/";
        /// The store keys each entry's batch wrote, sent again to the changelog on
        /// start if its batch was not committed.
        table OUTBOX_KEYS<u64> = b"k/outbox_keys/";
        /// Set once the store is in step with the changelog (restored from it, or
        /// copied to it); removed when a run keeps no changelog.
        cell CHANGELOG_SYNCED = b"k/changelog_synced";
        /// Set while the store is being restored from the changelog: a restore cut by
        /// a crash is done again, not taken for a newer copy.
        cell CHANGELOG_RESTORING = b"k/changelog_restoring";
        /// The changelog offset the store is in step with: the next record to read
        /// (written with each batch once its changelog records are acknowledged, and as
        /// a standby applies the changelog).
        cell CHANGELOG_NEXT = b"k/changelog_next";
        /// The id this store wrote its last term as the deployment's writer under
        /// (each changelog batch end carries its writer's id).
        cell CHANGELOG_WRITER = b"k/changelog_writer";
        /// The writer whose term the store's place on the changelog is in (the last
        /// writer's fence read): batches of any other writer after it are a deposed
        /// writer's, never applied.
        cell CHANGELOG_TERM = b"k/changelog_term";
    }

    /// Keys of stores of format 2 and before, read (never written) by the engine only to
    /// name the format of a store it refuses.
    legacy under b"m/", used in ["src/engine/mod.rs"] {
        /// The layout version of a store of format 2.
        cell STORE_FORMAT = b"m/store_format";
    }
}

/// Tables read by range on the event path: their staged keys are also kept in order.
pub(crate) const ORDERED: [&[u8]; 3] = [
    profile::TIMERS.bytes(),
    profile::INACTIVE_INDEX.bytes(),
    profile::BEHAVIOURAL_INDEX.bytes(),
];

/// Tables written on the event path whose entries are then read by range or hardly ever
/// read one by one (a seen mark only when an event comes again): the read cache keeps
/// none of their keys, so that it keeps what is read. One new seen mark and about three
/// index and timer keys per event would otherwise take most of its budget.
pub(crate) const UNCACHED: [&[u8]; 4] = [
    engine::SEEN_EVENTS.bytes(),
    ORDERED[0],
    ORDERED[1],
    ORDERED[2],
];

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn all_keys() -> Vec<(&'static str, &'static [u8])> {
        OWNERS
            .iter()
            .flat_map(|o| o.keys.iter().map(move |k| (o.name, *k)))
            .collect()
    }

    #[test]
    fn no_key_is_a_prefix_of_another() {
        let keys = all_keys();
        for (i, (owner, k)) in keys.iter().enumerate() {
            for (other_owner, other) in &keys[i + 1..] {
                assert!(
                    !k.starts_with(other) && !other.starts_with(k),
                    "{} ({owner}) and {} ({other_owner}) overlap",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(other)
                );
            }
        }
    }

    #[test]
    fn each_owner_keeps_its_keys_under_its_own_namespace() {
        for (i, o) in OWNERS.iter().enumerate() {
            assert!(o.namespace.ends_with(b"/"), "{}", o.name);
            for k in o.keys {
                assert!(
                    k.starts_with(o.namespace) && k.len() > o.namespace.len(),
                    "{} of {} is outside its namespace",
                    String::from_utf8_lossy(k),
                    o.name
                );
            }
            for other in &OWNERS[i + 1..] {
                assert!(
                    !o.namespace.starts_with(other.namespace)
                        && !other.namespace.starts_with(o.namespace),
                    "{} and {} share a namespace",
                    o.name,
                    other.name
                );
            }
        }
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Owners named as `keys::<owner>` in a text (a whole word after `keys::`).
    fn owners_named(text: &str) -> Vec<&str> {
        text.match_indices("keys::")
            .filter(|(at, _)| {
                let before = text[..*at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
            .map(|(at, _)| {
                let rest = &text[at + "keys::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn only_an_owner_names_its_keys() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        for file in files {
            let name = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if name.starts_with("src/store/") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for named in owners_named(&text) {
                // A grouped or glob import would hide which owner's keys are used.
                assert!(!named.is_empty(), "{name}: import keys one owner at a time");
                let owner = OWNERS.iter().find(|o| o.name == named);
                let owner = owner.unwrap_or_else(|| panic!("{name}: no owner `{named}`"));
                assert!(
                    owner
                        .code
                        .iter()
                        .any(|c| name == *c || (c.ends_with('/') && name.starts_with(c))),
                    "{name} uses the keys of {named}, which only {:?} may use",
                    owner.code
                );
            }
        }
    }
}
