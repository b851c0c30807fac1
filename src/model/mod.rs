//! The shared vocabulary of every stage: identifiers, the parts of an event, the output
//! records and their topics. It depends on no other module of the crate.
pub mod event;
pub mod field;
pub mod ident;
pub mod output;
pub mod records;

pub use event::{
    Address, Cart, EventType, Item, Order, Person, CONSENT_CHANNELS, CONSENT_PURPOSES,
    REACHABLE_CHANNELS,
};
pub use field::Field;
pub use ident::Ident;
