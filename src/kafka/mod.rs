//! The Kafka edge of unicus: the runtime that drives the engine from per-channel topics
//! to the output topics, Avro with the Schema Registry, and the service settings.
pub mod avro;
pub mod runtime;
pub mod settings;
