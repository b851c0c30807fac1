//! The shared vocabulary of every stage: identifiers, event parts, consent purposes and
//! channels, output records and their topics. It depends on no other module of the crate.
pub mod consent;
pub mod event;
pub mod field;
pub mod ident;
pub mod output;
pub mod records;

pub use consent::{Channel, ConsentChannel, Purpose, UnknownWord};
pub use event::{Address, Cart, EventType, Item, Order, Person, SOURCE_CHANNELS};
pub use field::Field;
pub use ident::Ident;
