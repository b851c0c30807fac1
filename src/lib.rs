//! unicus: a live single customer view (*vue client unique*) inside a Kafka stream.
//!
//! The folders follow the data path:
//!
//! | module | what it owns |
//! |---|---|
//! | [`model`] | the shared vocabulary: identifiers, event kinds, addresses, output records and topics; depends on nothing |
//! | [`engine`] | the pure, deterministic core: input parsing, normalisation, [`engine::resolve`] (the identity graph), the hand-off, [`engine::profile`] (everything keyed by customer id), GDPR; no Kafka, no tokio |
//! | [`store`] | the embedded sled store: typed tables, every key prefix declared once, one atomic write per batch |
//! | [`telemetry`] | Prometheus metrics, health and readiness, logging |
//! | [`kafka`] | the runtime: per-channel topics → engine → output topics, Avro and the Schema Registry |
//! | [`api`] | the profile lookup API and the customer 360 page over committed state (`[api]`), bearer tokens with scopes, masking |
//! | [`settings`] | the configuration file of the service (Kafka, runtime, engine, Schema Registry, logs), validated as a whole |
//! | [`replay`] | the same engine over a file of JSON events (contract §3) |
//! | [`sim`] | tools around the engine: the synthetic generator, the demo, benchmarks, the registry double |
//! | [`cli`] | what each subcommand of the binary does, as library calls (`main.rs` only parses arguments) |
//!
//! The engine holds no Kafka type; [`kafka`], [`replay`] and the tests all drive the same
//! [`engine::Engine`]. [`sim`] is used by the binary and the tests, never by the engine.
pub mod api;
pub mod cli;
pub mod engine;
pub mod generations;
pub mod kafka;
pub mod model;
pub mod replay;
pub mod settings;
pub mod sim;
pub mod store;
pub mod telemetry;
