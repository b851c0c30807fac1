//! unicus: a live single customer view (*vue client unique*) inside a Kafka stream.
//!
//! The data path, one module per step:
//!
//! | module | step |
//! |---|---|
//! | [`event`] | parse and validate a touchpoint (contract §1); rejections go to the DLQ |
//! | [`normalise`] | emails, E.164 phones, names, addresses to comparable forms |
//! | [`resolve`] | the identity graph: source profiles, links, guardrails, merges, splits |
//! | [`matching`] | fuzzy matching: blocking keys, field similarities, match rules |
//! | [`handoff`] | the narrow, serialisable interface from resolve to profile |
//! | [`profile`] | everything keyed by customer id: golden record, order stats, lifecycle |
//! | [`activation`] | carts, purchases, RFM / lifetime value / VIP, lifecycle stages, timers |
//! | [`consent`] | consent decisions per purpose × channel and how they combine |
//! | [`gdpr`] | rights requests, suppression list, keyed hashes, pseudonymised output |
//! | [`output`] | output records for the topics of the contract (§2) |
//! | [`engine`] | drives the steps for one record; dedupe by `event_id`; batch commit |
//! | [`store`] | the embedded sled store, one atomic write per batch |
//!
//! Around the engine: [`replay`] (a file in, a file out, contract §3), [`generate`]
//! (a seeded synthetic stream), [`config`], [`accuracy`] (identity resolution scored
//! against a labelled stream), the Kafka [`runtime`] and its telemetry ([`metrics`]:
//! Prometheus metrics, health and readiness over HTTP). The engine holds no Kafka type.
pub mod accuracy;
pub mod activation;
pub mod avro;
pub mod bench;
pub mod command;
pub mod config;
pub mod consent;
pub mod demo;
pub mod engine;
pub mod event;
pub mod gdpr;
pub mod generate;
pub mod handoff;
pub mod identity_records;
pub mod logging;
pub mod matching;
pub mod metrics;
pub mod normalise;
pub mod output;
pub mod profile;
pub mod replay;
pub mod resolve;
pub mod runtime;
pub mod settings;
pub mod store;
