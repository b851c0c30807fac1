//! The Kafka edge of unicus: the runtime that drives the engine from per-channel topics
//! to the output topics, and Avro with the Schema Registry.
pub mod avro;
pub mod runtime;
