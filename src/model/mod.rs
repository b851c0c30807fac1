//! The shared vocabulary of every stage: identifiers, the parts of an event, the output
//! records and their topics. It depends on no other module of the crate.
pub mod output;
