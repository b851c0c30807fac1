//! Every key prefix of the store, declared once, each owned by one part of unicus: a
//! part reads and writes only under its own prefixes. Changing one changes the store format.
//!
//! Keys are `prefix` followed by the key's parts (see [`super::key`]). The prefixes
//! under `m/` are single counters, named by their owner below.

// The engine itself.
/// Events seen (by `event_id`): a redelivered event changes nothing.
pub const SEEN_EVENTS: &str = "e/";
/// The engine's event-time clock: the latest time stated by an accepted touchpoint. A
/// request or command that states no time of its own is done at this time.
pub const INPUT_CLOCK: &[u8] = b"i/clock";
/// The layout version of the store.
pub const STORE_FORMAT: &[u8] = b"m/store_format";

// Resolve: the identity graph.
/// Source profiles by number.
pub const SOURCE_PROFILES: &[u8] = b"r/sp/";
/// Customers by id: their source profiles and identifiers.
pub const CUSTOMERS: &str = "r/cu/";
/// Identifier value → source profiles holding it.
pub const IDENTIFIER_INDEX: &str = "r/ix/";
/// Anchors: a channel's identifier → its source profile.
pub const ANCHORS: &str = "r/sk/";
/// Blocking keys of fuzzy matching → source profiles.
pub const BLOCKING_KEYS: &[u8] = b"r/bk/";
/// Merge logs by customer.
pub const MERGE_LOGS: &str = "r/mg/";
/// Aliases: the id of a merged-away customer → the survivor.
pub const ALIASES: &str = "r/al/";
/// The next source profile number.
pub const NEXT_SOURCE_PROFILE: &[u8] = b"m/next_source_profile";
/// The next customer sequence number (also the sign of a store written before formats).
pub const NEXT_CUSTOMER_SEQ: &[u8] = b"m/next_customer_seq";
/// Live customers.
pub const LIVE_CUSTOMERS: &[u8] = b"m/customers";
/// The next split token.
pub const NEXT_SPLIT_TOKEN: &[u8] = b"m/next_split_token";

// Profile: everything keyed by customer id.
/// Customer profiles by id.
pub const PROFILES: &str = "p/cu/";
/// The profile stage's event-time clock.
pub const CLOCK: &[u8] = b"p/clock";
/// Customers by last-seen time (retention of inactive customers).
pub const INACTIVE_INDEX: &[u8] = b"p/ls/";
/// Behavioural source profiles by last-seen time (their retention).
pub const BEHAVIOURAL_INDEX: &[u8] = b"p/lb/";
/// Timers by due time (abandoned carts, lifecycle, consent expiry).
pub const TIMERS: &[u8] = b"p/tm/";
/// Timers fired so far.
pub const TIMERS_DONE: &[u8] = b"p/timers_done";

// GDPR: rights requests and the suppression list.
/// The generated key of the keyed hashes.
pub const HASH_KEY: &[u8] = b"g/key";
/// Identifiers suppressed so far.
pub const SUPPRESSED_COUNT: &[u8] = b"g/suppressed";
/// Rights requests done (by `request_id`).
pub const REQUESTS_DONE: &str = "g/rq/";
/// Suppressed identifiers by keyed hash.
pub const SUPPRESSED: &str = "g/sup/";

// Identity commands.
/// Operator commands done (by `command_id`).
pub const COMMANDS_DONE: &str = "x/cmd/";

// The Kafka runtime, staged in the engine's batch so both are durable in one write.
/// Output records of a batch not yet known to be acknowledged.
pub const OUTBOX: &[u8] = b"o/";
/// The next outbox sequence number.
pub const OUTBOX_SEQ: &[u8] = b"m/outbox_seq";

/// Tables read by range on the event path: their staged keys are also kept in order.
pub const ORDERED: [&[u8]; 3] = [TIMERS, INACTIVE_INDEX, BEHAVIOURAL_INDEX];
