//! Inputs of the engine, parsed and validated once: touchpoints (contract §1) and
//! identity commands; a record that fails goes to the dead-letter topic with its reason.
pub mod command;
pub mod touchpoint;
