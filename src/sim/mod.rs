//! Tools around the engine, never used by it: the seeded synthetic generator, the demo
//! on an in-process cluster, the benchmarks and an in-memory Schema Registry double.
pub mod accuracy;
pub mod adversarial;
pub mod bench;
pub mod bench_api;
pub mod bench_audiences;
pub mod compare;
pub mod demo;
pub mod febrl;
pub mod generate;
pub mod partition;
pub mod registry_double;
