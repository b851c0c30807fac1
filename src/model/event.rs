//! The parts of a touchpoint every stage speaks of: event kinds, addresses, person data,
//! order and cart lines (the consent vocabulary is in [`super::consent`]).

use serde::{Deserialize, Serialize};

/// The source channels of the contract (§1), the default of `kafka.channels`: one input
/// topic `touchpoints.<channel>` each, and the values an event's `channel` may take.
pub const SOURCE_CHANNELS: [&str; 8] = [
    "web",
    "app",
    "store",
    "marketplace",
    "social",
    "crm",
    "service",
    "email",
];

/// Declares [`EventType`] from one list of `Variant = "wire_name"` pairs: the enum,
/// [`EventType::ALL`], [`EventType::parse`] and [`EventType::as_str`].
macro_rules! event_types {
    ($($variant:ident = $name:literal,)+) => {
        /// Event types of the contract. Anything else is [`EventType::Other`] and kept.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum EventType {
            $($variant,)+
            Other(String),
        }

        impl EventType {
            /// Every type of the contract, in its order ([`EventType::Other`] aside).
            pub const ALL: [EventType; [$($name,)+].len()] = [$(EventType::$variant,)+];

            pub fn parse(s: &str) -> Self {
                match s {
                    $($name => EventType::$variant,)+
                    other => EventType::Other(other.to_string()),
                }
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(EventType::$variant => $name,)+
                    EventType::Other(s) => s,
                }
            }
        }
    };
}

event_types! {
    PageView = "page_view",
    ProductView = "product_view",
    Search = "search",
    CartAdd = "cart_add",
    CartRemove = "cart_remove",
    CheckoutStarted = "checkout_started",
    Purchase = "purchase",
    Return = "return",
    FormSubmit = "form_submit",
    AccountCreated = "account_created",
    AccountUpdated = "account_updated",
    Login = "login",
    StoreVisit = "store_visit",
    SocialInteraction = "social_interaction",
    SupportTicket = "support_ticket",
    EmailOpen = "email_open",
    EmailClick = "email_click",
    ConsentUpdate = "consent_update",
}

/// Postal address as sent (display form; normalised keys are derived when matching).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
}

impl Address {
    pub fn is_empty(&self) -> bool {
        self.line1.is_none()
            && self.line2.is_none()
            && self.postal_code.is_none()
            && self.city.is_none()
            && self.state.is_none()
            && self.country.is_none()
    }
}

/// Person data as sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub birth_date: Option<String>,
    pub address: Option<Address>,
}

/// An order line or cart line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub name: Option<String>,
    pub quantity: f64,
    pub unit_price: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: Option<String>,
    /// Total in cents (rounded), so that sums are exact and deterministic.
    pub total_cents: Option<i64>,
    pub currency: Option<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    pub cart_id: Option<String>,
    pub items: Vec<Item>,
}

#[cfg(test)]
mod tests {
    use super::EventType;

    #[test]
    fn every_type_of_the_contract_is_listed_once_and_reads_back() {
        let names: Vec<&str> = EventType::ALL.iter().map(EventType::as_str).collect();
        for (kind, name) in EventType::ALL.iter().zip(&names) {
            assert_eq!(&EventType::parse(name), kind);
            assert!(!matches!(kind, EventType::Other(_)), "{name}");
        }
        let distinct: std::collections::BTreeSet<&&str> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
    }
}
