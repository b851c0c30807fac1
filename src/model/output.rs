//! Output records the engine decides, independent of how they are written
//! (Kafka topics, the replay file, tests).

use serde::{Serialize, Serializer};
use serde_json::Value;

/// The output topics of the contract (§2). Names take a configurable prefix at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Resolved,
    IdentityChanges,
    ProfilesMerged,
    ConsentChanges,
    CartAbandoned,
    PurchaseCompleted,
    LifecycleChanged,
    AudiencesChanges,
    Dlq,
    GdprReceipts,
    /// `triggers.<name>` of a journey of the configuration: the topic's whole name
    /// ([`Topic::journey`]).
    Journey(&'static str),
}

impl Topic {
    pub const ALL: [Topic; 10] = [
        Topic::Resolved,
        Topic::IdentityChanges,
        Topic::ProfilesMerged,
        Topic::ConsentChanges,
        Topic::CartAbandoned,
        Topic::PurchaseCompleted,
        Topic::LifecycleChanged,
        Topic::AudiencesChanges,
        Topic::Dlq,
        Topic::GdprReceipts,
    ];

    /// The topic's name without prefix.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Resolved => "touchpoints.resolved",
            Topic::IdentityChanges => "identity.changes",
            Topic::ProfilesMerged => "profiles.merged",
            Topic::ConsentChanges => "consent.changes",
            Topic::CartAbandoned => "triggers.cart_abandoned",
            Topic::PurchaseCompleted => "triggers.purchase_completed",
            Topic::LifecycleChanged => "triggers.lifecycle_changed",
            Topic::AudiencesChanges => "audiences.changes",
            Topic::Dlq => "touchpoints.dlq",
            Topic::GdprReceipts => "gdpr.receipts",
            Topic::Journey(name) => name,
        }
    }

    /// The topic of the journey `name`: `triggers.<name>`. Names are kept once for the
    /// life of the process (a configuration has at most a few hundred journeys).
    pub fn journey(name: &str) -> Topic {
        use std::collections::BTreeSet;
        use std::sync::{Mutex, OnceLock};
        static NAMES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
        let topic = format!("triggers.{name}");
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(kept) = names.get(topic.as_str()) {
            return Topic::Journey(kept);
        }
        let kept: &'static str = Box::leak(topic.into_boxed_str());
        names.insert(kept);
        Topic::Journey(kept)
    }

    /// Every output topic of a configuration: those of the contract and one per journey
    /// run (the cart journey's is the contract's `triggers.cart_abandoned`).
    pub fn outputs(config: &crate::engine::config::EngineConfig) -> Vec<Topic> {
        let journeys = config
            .journeys
            .iter()
            .filter(|(name, j)| j.enabled && !j.is_cart(name));
        Topic::ALL
            .into_iter()
            .chain(journeys.map(|(name, _)| Topic::journey(name)))
            .collect()
    }
}

/// The value of an output record.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    /// A null value: on a compacted topic, deletes the key.
    Tombstone,
    /// Bytes passed through untouched (dead letters keep the original record).
    Raw(Vec<u8>),
    /// The golden record of the record's key as of this clock (ms), not built yet: with
    /// coalescing on, [`crate::engine::Engine::handle_batched`] leaves it to
    /// [`crate::engine::Engine::end_batch`], which builds it once per customer from the
    /// batch's final state. Never written: a writer that meets one refuses it.
    Deferred(i64),
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub topic: Topic,
    pub key: Option<String>,
    pub payload: Payload,
    pub headers: Vec<(String, String)>,
}

impl OutputRecord {
    pub fn json(topic: Topic, key: impl Into<String>, value: Value) -> Self {
        Self {
            topic,
            key: Some(key.into()),
            payload: Payload::Json(value),
            headers: Vec::new(),
        }
    }

    pub fn tombstone(topic: Topic, key: impl Into<String>) -> Self {
        Self {
            topic,
            key: Some(key.into()),
            payload: Payload::Tombstone,
            headers: Vec::new(),
        }
    }

    /// Writes the line of the replay format (contract §3), without a newline, straight
    /// from the record (no copy of the value).
    pub fn write_replay_line(&self, out: &mut impl std::io::Write) -> serde_json::Result<()> {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            topic: &'static str,
            key: &'a Option<String>,
            value: ReplayValue<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            headers: Option<std::collections::BTreeMap<&'a str, &'a str>>,
        }
        enum ReplayValue<'a> {
            Json(&'a Value),
            Null,
            Text(std::borrow::Cow<'a, str>),
        }
        impl serde::Serialize for ReplayValue<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self {
                    ReplayValue::Json(v) => v.serialize(s),
                    ReplayValue::Null => s.serialize_none(),
                    ReplayValue::Text(t) => s.serialize_str(t),
                }
            }
        }
        let value = match &self.payload {
            Payload::Json(v) => ReplayValue::Json(v),
            Payload::Tombstone => ReplayValue::Null,
            Payload::Raw(bytes) => ReplayValue::Text(String::from_utf8_lossy(bytes)),
            Payload::Deferred(_) => {
                return Err(serde::ser::Error::custom(
                    "a golden record written before its batch ended",
                ))
            }
        };
        let headers = (!self.headers.is_empty()).then(|| {
            self.headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        });
        serde_json::to_writer(
            out,
            &Line {
                topic: self.topic.name(),
                key: &self.key,
                value,
                headers,
            },
        )
    }
}

/// One day in milliseconds, the unit of every retention and lifecycle period.
pub const DAY_MS: i64 = 86_400_000;

/// The day (UTC, since the epoch) of a time in ms; 0 for a time before the epoch.
pub fn day_of(ms: i64) -> u32 {
    (ms.max(0) / DAY_MS).min(i64::from(u32::MAX)) as u32
}

/// The times (ms since the epoch) RFC 3339 can state: years 0000 to 9999.
pub const RFC3339_MS: std::ops::RangeInclusive<i64> = -62_167_219_200_000..=253_402_300_799_999;

/// Formats event time (ms since the epoch) as RFC 3339 UTC.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A typed output record as the JSON value of [`Payload::Json`]. serde_json keeps object
/// keys sorted, so the order of a record's fields does not matter.
pub fn to_json(record: &impl Serialize) -> Value {
    // Output records are plain data with text keys: turning one into a value cannot fail.
    serde_json::to_value(record).expect("output records serialise to JSON")
}

/// An event time (ms since the epoch), written as RFC 3339 ([`rfc3339`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub i64);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(self.0))
    }
}
