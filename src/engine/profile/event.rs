//! What profile derives from an event resolve hands on: person fields in display form
//! (those minimisation keeps), order totals, the cart.

use serde::{Deserialize, Serialize};

use crate::engine::config::Gdpr;
use crate::engine::handoff::{ConsentStatement, EventFacts};
use crate::engine::normalise;
use crate::model::{Address, EventType, Ident, Item, Order, Person};

/// A person field as one source states it, in display form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FieldData {
    Text(String),
    Address(Address),
}

/// What the profile stage keeps of an order or a return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFacts {
    pub order_id: Option<String>,
    pub total_cents: i64,
    pub currency: String,
    pub items: Vec<Item>,
}

/// The facts of one accepted event that the profile stage needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileEvent {
    pub event_id: String,
    pub channel: String,
    pub kind: String,
    /// Milliseconds since the epoch (event time).
    pub occurred_at: i64,
    /// Identifiers that resolve attached to the customer with this event.
    pub identifiers: Vec<Ident>,
    /// Person fields (`first_name`, `last_name`, `birth_date`, `address`,
    /// `attributes.<key>`) in display form.
    pub fields: Vec<(String, FieldData)>,
    pub purchase: Option<OrderFacts>,
    pub refund: Option<OrderFacts>,
    /// Consent decisions the event states.
    pub consents: Vec<ConsentStatement>,
    /// The cart as the event shows it (its whole content).
    pub cart: Option<CartFacts>,
    /// The product a page shows (`page.product_sku`).
    pub product_sku: Option<String>,
    /// The event's `source` (a store's id for a shop's events).
    pub source: Option<String>,
}

/// A cart snapshot: its id (`cart` when the event names none) and every item in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CartFacts {
    pub cart_id: String,
    pub items: Vec<Item>,
}

impl ProfileEvent {
    /// The order the event states: its purchase, or its return.
    pub fn order(&self) -> Option<&OrderFacts> {
        self.purchase.as_ref().or(self.refund.as_ref())
    }

    /// The profile's view of an event: its person fields and attributes in display form,
    /// those the minimisation allow-lists keep (the others counted in `minimised`), its
    /// order as a purchase or a refund, its cart.
    pub fn from_facts(facts: &EventFacts, gdpr: &Gdpr, minimised: &mut u64) -> Self {
        let (purchase, refund) = match EventType::parse(&facts.kind) {
            EventType::Purchase => (facts.order.as_ref().map(order_facts), None),
            EventType::Return => (None, facts.order.as_ref().map(order_facts)),
            _ => (None, None),
        };
        ProfileEvent {
            event_id: facts.event_id.clone(),
            channel: facts.channel.clone(),
            kind: facts.kind.clone(),
            occurred_at: facts.occurred_at,
            identifiers: facts.identifiers.clone(),
            fields: allowed_fields(facts, gdpr, minimised),
            purchase,
            refund,
            consents: facts.consents.clone(),
            cart: facts.cart.as_ref().map(|c| CartFacts {
                cart_id: c.cart_id.clone().unwrap_or_else(|| "cart".into()),
                items: c.items.clone(),
            }),
            product_sku: facts.product_sku.clone(),
            source: facts.source.clone(),
        }
    }
}

/// The event's person fields in display form and its attributes, those the
/// minimisation allow-lists keep (the others counted).
fn allowed_fields(
    facts: &EventFacts,
    gdpr: &Gdpr,
    minimised: &mut u64,
) -> Vec<(String, FieldData)> {
    let mut fields = facts.person.as_ref().map(person_fields).unwrap_or_default();
    for (k, v) in &facts.attributes {
        if !v.trim().is_empty() {
            fields.push((format!("attributes.{k}"), FieldData::Text(v.clone())));
        }
    }
    let before = fields.len();
    fields.retain(|(name, _)| match name.strip_prefix("attributes.") {
        Some(attr) => gdpr.attribute_allowed(attr),
        None => gdpr.person_field_allowed(name),
    });
    *minimised += (before - fields.len()) as u64;
    fields
}

/// A person's names and birth date in display form, and its address.
fn person_fields(p: &Person) -> Vec<(String, FieldData)> {
    let mut fields = Vec::new();
    let text = [
        (
            "first_name",
            &p.first_name,
            normalise::name_display as fn(&str) -> _,
        ),
        ("last_name", &p.last_name, normalise::name_display),
        ("birth_date", &p.birth_date, normalise::birth_date),
    ];
    for (name, raw, f) in text {
        if let Some(v) = raw.as_deref().and_then(|r| f(r).ok()) {
            fields.push((name.to_string(), FieldData::Text(v)));
        }
    }
    if let Some(a) = p.address.as_ref().and_then(display_address) {
        fields.push(("address".to_string(), FieldData::Address(a)));
    }
    fields
}

/// An address in display form: postal code and country normalised where they can be,
/// the other parts as names are displayed; `None` when nothing is left.
fn display_address(a: &Address) -> Option<Address> {
    let mut a = a.clone();
    let country = a
        .country
        .as_deref()
        .and_then(|c| normalise::country(c).ok());
    if let Some(pc) = a.postal_code.as_deref() {
        if let Ok(n) = normalise::postal_code(pc, country.as_deref()) {
            a.postal_code = Some(n);
        }
    }
    if country.is_some() {
        a.country = country;
    }
    for part in [&mut a.line1, &mut a.line2, &mut a.city, &mut a.state] {
        if let Some(s) = part {
            *part = normalise::name_display(s).ok();
        }
    }
    (!a.is_empty()).then_some(a)
}

/// A purchase's or a return's order: its total in cents (summed from the items when the
/// event states none), its currency (EUR when it states none).
fn order_facts(o: &Order) -> OrderFacts {
    OrderFacts {
        order_id: o.order_id.clone(),
        total_cents: o.total_cents.unwrap_or_else(|| {
            o.items
                .iter()
                .map(|i| (i.quantity * i.unit_price.unwrap_or(0.0) * 100.0).round() as i64)
                .sum()
        }),
        currency: o.currency.clone().unwrap_or_else(|| "EUR".into()),
        items: o.items.clone(),
    }
}
