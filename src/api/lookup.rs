//! The reads the API makes, over what the store has committed: the same resolve and
//! profile code the engine runs, on a reader of the store, each lookup between two batches
//! ([`Store::consistent`]).

use std::sync::Mutex;

use serde_json::Value;

use crate::engine::config::EngineConfig;
use crate::engine::profile::timeline::{self, Touchpoint};
use crate::engine::profile::Profiler;
use crate::engine::resolve::Resolver;
use crate::store::{Store, StoreError};

/// What a customer id names.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Record(Value),
    /// A customer merged into another: the one it is part of now.
    Moved(String),
    /// No such customer (never seen, erased, or expired).
    Absent,
}

/// Why an identifier cannot be looked up.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("`{0}` is not a configured identifier type")]
    UnknownType(String),
    #[error("the value is not a valid `{0}` once normalised")]
    Unusable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What each lookup needs, kept for the next one: the parts are cheap to keep and not
/// to share between threads.
struct Reader {
    store: Store,
    resolver: Resolver,
    profiler: Profiler,
}

/// A reader's parts as one lookup reads them, on one committed state.
struct Parts<'a> {
    store: &'a Store,
    resolver: &'a Resolver,
    profiler: &'a Profiler,
}

pub struct Lookups {
    config: EngineConfig,
    /// A reader to make more from, one per concurrent lookup.
    template: Mutex<Store>,
    idle: Mutex<Vec<Reader>>,
}

impl Lookups {
    /// Lookups over `reader` (a [`Store::reader`]) and the readers made from it.
    pub fn new(reader: Store, config: &EngineConfig) -> Self {
        Self {
            config: config.clone(),
            template: Mutex::new(reader),
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn with<T>(
        &self,
        mut read: impl FnMut(&Parts) -> Result<T, LookupError>,
    ) -> Result<T, LookupError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut reader = match idle {
            Some(r) => r,
            None => Reader {
                store: self
                    .template
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reader()?,
                resolver: Resolver::new(&self.config),
                profiler: Profiler::new(&self.config),
            },
        };
        let Reader {
            store,
            resolver,
            profiler,
        } = &mut reader;
        let result = store.consistent(|store| {
            read(&Parts {
                store,
                resolver,
                profiler,
            })
        });
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reader);
        result
    }

    /// What `read` makes of a live customer id; where a merged-away id went.
    fn by_id(
        &self,
        id: &str,
        mut read: impl FnMut(&Parts) -> Result<Option<Value>, StoreError>,
    ) -> Result<Found, LookupError> {
        self.with(|r| {
            Ok(match r.resolver.current_id(r.store, id)? {
                None => Found::Absent,
                Some(current) if current != id => Found::Moved(current),
                Some(_) => read(r)?.map_or(Found::Absent, Found::Record),
            })
        })
    }

    /// The golden record of a customer id, or where it went.
    pub fn customer(&self, id: &str) -> Result<Found, LookupError> {
        self.by_id(id, |r| r.profiler.golden_record_now(r.store, id))
    }

    /// The customer holding an identifier, normalised as resolution does, and its golden
    /// record.
    pub fn find(&self, kind: &str, raw: &str) -> Result<Option<(String, Value)>, LookupError> {
        if !self.config.identifiers.contains_key(kind) {
            return Err(LookupError::UnknownType(kind.to_string()));
        }
        self.with(|r| {
            let Some(id) = r.resolver.normalise_identifier(kind, raw) else {
                return Err(LookupError::Unusable(kind.to_string()));
            };
            let Some(customer) = r.resolver.customer_of(r.store, &id)? else {
                return Ok(None);
            };
            Ok(r.profiler
                .golden_record_now(r.store, &customer)?
                .map(|record| (customer, record)))
        })
    }

    /// Why a customer is made of its source profiles: links, rules, merge history.
    pub fn explain(&self, id: &str) -> Result<Found, LookupError> {
        self.by_id(id, |r| r.resolver.explain(r.store, id))
    }

    /// A customer's most recent touchpoints, newest first, at most `limit`.
    pub fn events(&self, id: &str, limit: usize) -> Result<Found, LookupError> {
        self.by_id(id, |r| {
            let moments = timeline::of(r.store, id)?;
            let events: Vec<Touchpoint> = moments
                .iter()
                .rev()
                .take(limit)
                .map(Touchpoint::from)
                .collect();
            Ok(Some(serde_json::json!({
                "customer_id": id,
                "events": serde_json::to_value(&events).unwrap_or_default(),
            })))
        })
    }
}
