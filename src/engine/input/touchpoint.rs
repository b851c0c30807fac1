//! Parsing and validation of touchpoint events (contract §1, JSON form).
//!
//! [`parse`] turns the bytes of one record into a [`Touchpoint`] or a [`Rejection`] that
//! says precisely what is wrong. A rejection never touches state: the caller sends the
//! original bytes to `touchpoints.dlq` with the rejection as the `unicus.error` header.
//!
//! Unknown fields and unknown event types are not errors (producers evolve before
//! consumers do): they are kept in the raw document and counted.

use std::str::FromStr;

use serde_json::{Map, Value};

use super::json::read_object;
use super::special::SpecialTerms;
use crate::engine::config::EngineConfig;
use crate::model::output::rfc3339;
use crate::model::{
    Address, Cart, ConsentChannel, EventType, Item, Order, Person, Purpose, UnknownWord,
};

/// Why an event was refused. Messages are lower-case and name the offending field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("event is {size} bytes, more than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    /// A record without a value: empty bytes, whitespace, or a null Kafka value.
    #[error("the record has no value")]
    EmptyValue,
    #[error("not a json document: {0}")]
    NotJson(String),
    #[error("event is not a json object")]
    NotAnObject,
    /// A key twice in one object: which of the two values was meant is unknown.
    #[error("key `{key}` appears twice in the same object")]
    DuplicateKey { key: String },
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("field `{field}` is not an rfc 3339 time: {detail}")]
    BadTime { field: &'static str, detail: String },
    /// A time before `limits.min_event_time`, or after the record's reference time
    /// plus `limits.max_future_skew_ms` (see [`super::event_time`]).
    #[error(
        "field `{field}` is {}, outside the accepted range {} to {}",
        rfc3339(*.at),
        rfc3339(*.earliest),
        rfc3339(*.latest)
    )]
    TimeOutOfRange {
        field: &'static str,
        at: i64,
        earliest: i64,
        latest: i64,
    },
    #[error("field `{field}` is longer than {max} bytes")]
    TooLong { field: String, max: usize },
    #[error("field `{field}` has an invalid value: {detail}")]
    BadValue { field: String, detail: String },
    #[error("channel `{channel}` is not one of the configured channels")]
    UnknownChannel { channel: String },
    #[error("{count} identifiers, more than the limit of {max}")]
    TooManyIdentifiers { count: usize, max: usize },
    #[error("{count} attributes, more than the limit of {max}")]
    TooManyAttributes { count: usize, max: usize },
    #[error("special-category data is never stored: key `{key}`")]
    SpecialCategory { key: String },
    /// A well-formed command that cannot be carried out.
    #[error("command refused: {detail}")]
    Refused { detail: String },
    /// An Avro record that cannot be read (`reason`: `avro_unknown_schema`,
    /// `avro_incompatible_schema`, `avro_undecodable`, `avro_no_registry`).
    #[error("avro: {detail}")]
    Avro {
        reason: &'static str,
        detail: String,
    },
}

impl Rejection {
    /// Every reason [`Rejection::reason`] gives, so that metrics show each from the start.
    pub const REASONS: [&'static str; 19] = [
        "too_large",
        "empty_value",
        "not_json",
        "duplicate_key",
        "missing_field",
        "wrong_type",
        "bad_time",
        "time_out_of_range",
        "too_long",
        "bad_value",
        "unknown_channel",
        "too_many_identifiers",
        "too_many_attributes",
        "special_category",
        "command_refused",
        "avro_unknown_schema",
        "avro_incompatible_schema",
        "avro_undecodable",
        "avro_no_registry",
    ];

    /// A short, fixed reason for metrics labels (one of [`Rejection::REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::EmptyValue => "empty_value",
            Rejection::NotJson(_) | Rejection::NotAnObject => "not_json",
            Rejection::DuplicateKey { .. } => "duplicate_key",
            Rejection::Missing(_) => "missing_field",
            Rejection::WrongType { .. } => "wrong_type",
            Rejection::BadTime { .. } => "bad_time",
            Rejection::TimeOutOfRange { .. } => "time_out_of_range",
            Rejection::TooLong { .. } => "too_long",
            Rejection::BadValue { .. } => "bad_value",
            Rejection::UnknownChannel { .. } => "unknown_channel",
            Rejection::TooManyIdentifiers { .. } => "too_many_identifiers",
            Rejection::TooManyAttributes { .. } => "too_many_attributes",
            Rejection::SpecialCategory { .. } => "special_category",
            Rejection::Refused { .. } => "command_refused",
            Rejection::Avro { reason, .. } => reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsentEntry {
    pub purpose: Purpose,
    pub channel: ConsentChannel,
    pub granted: bool,
    /// The decision concerns one identifier only (an opt-out of one email address):
    /// `(type, raw value)`.
    pub identifier: Option<(String, String)>,
    /// The decision lapses at this time (ms since the epoch).
    pub expires_at: Option<i64>,
}

/// A validated touchpoint. `raw` keeps the whole document for `touchpoints.resolved`.
#[derive(Debug, Clone, PartialEq)]
pub struct Touchpoint {
    pub event_id: String,
    pub channel: String,
    pub kind: EventType,
    /// Milliseconds since the Unix epoch, UTC.
    pub occurred_at: i64,
    pub source: Option<String>,
    /// `(type, raw value)` in document order; types not configured are left out.
    pub identifiers: Vec<(String, String)>,
    pub person: Option<Person>,
    pub order: Option<Order>,
    pub cart: Option<Cart>,
    /// The product a page shows (`page.product_sku`): what a product view is about.
    pub product_sku: Option<String>,
    pub consent: Vec<ConsentEntry>,
    /// Scalar attributes, as text.
    pub attributes: Vec<(String, String)>,
    /// Fields this version does not know, ignored (counted by the caller).
    pub unknown_fields: u32,
    /// Identifier types this configuration does not know, ignored.
    pub unknown_identifier_types: u32,
    pub raw: Map<String, Value>,
}

const TOP_LEVEL: [&str; 14] = [
    "event_id",
    "channel",
    "type",
    "occurred_at",
    "source",
    "identifiers",
    "person",
    "order",
    "cart",
    "page",
    "consent",
    "attributes",
    // Fields unicus writes itself on `touchpoints.resolved`: a re-fed record is not odd.
    "customer_id",
    "resolution",
];

/// Parses and validates one event (builds a [`Parser`]; keep one for many events).
pub fn parse(bytes: &[u8], config: &EngineConfig) -> Result<Touchpoint, Rejection> {
    Parser::new(config).parse(bytes)
}

/// A parser with the deny-list of special categories prepared once.
pub struct Parser {
    config: EngineConfig,
    /// The special-category terms, in normal form.
    deny: SpecialTerms,
}

impl Parser {
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            deny: SpecialTerms::new(&config.special_categories),
            config: config.clone(),
        }
    }

    /// Parses and validates one event.
    pub fn parse(&self, bytes: &[u8]) -> Result<Touchpoint, Rejection> {
        parse_with(bytes, &self.config, &self.deny)
    }

    /// Validates one event already decoded into a document (from Avro), with the same
    /// rules as [`Parser::parse`] after the JSON text is read.
    pub fn parse_document(&self, raw: Map<String, Value>) -> Result<Touchpoint, Rejection> {
        validate(raw, &self.config, &self.deny).and_then(amounts_signed)
    }
}

fn parse_with(
    bytes: &[u8],
    config: &EngineConfig,
    deny: &SpecialTerms,
) -> Result<Touchpoint, Rejection> {
    let raw = json_object(bytes, config)?;
    validate(raw, config, deny).and_then(amounts_signed)
}

fn validate(
    raw: Map<String, Value>,
    config: &EngineConfig,
    deny: &SpecialTerms,
) -> Result<Touchpoint, Rejection> {
    check_tree(&raw, config, deny)?;
    let (event_id, channel) = event_id_and_channel(&raw, config)?;
    let kind = EventType::parse(required_str(&raw, "type")?);
    let occurred_at = parse_time(required_str(&raw, "occurred_at")?, "occurred_at")?;
    let source = opt_str(&raw, "source")?.map(String::from);

    let mut unknown_fields = raw
        .keys()
        .filter(|k| !TOP_LEVEL.contains(&k.as_str()))
        .count() as u32;

    let (identifiers, unknown_identifier_types) = parse_identifiers(&raw, config)?;
    let person = match object(&raw, "person")? {
        None => None,
        Some(p) => Some(parse_person(p, &mut unknown_fields)?),
    };
    let order = match object(&raw, "order")? {
        None => None,
        Some(o) => Some(parse_order(o)?),
    };
    let cart = match object(&raw, "cart")? {
        None => None,
        Some(c) => Some(Cart {
            cart_id: opt_str_in(c, "cart_id", "cart.cart_id")?.map(String::from),
            items: parse_items(c, "cart.items")?,
        }),
    };
    // Read where it is a string, ignored otherwise: `page` was never validated, and an
    // event accepted before must not be refused now for it.
    let product_sku = match object(&raw, "page") {
        Ok(Some(p)) => p
            .get("product_sku")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
        _ => None,
    };
    let consent = parse_consent(&raw)?;
    let attributes = match object(&raw, "attributes")? {
        None => Vec::new(),
        Some(a) => parse_attributes(a, config)?,
    };
    Ok(Touchpoint {
        event_id: event_id.to_string(),
        channel: channel.to_string(),
        kind,
        occurred_at,
        source,
        identifiers,
        person,
        order,
        cart,
        product_sku,
        consent,
        attributes,
        unknown_fields,
        unknown_identifier_types,
        raw,
    })
}

/// The event id and channel of an event, both required and bounded.
fn event_id_and_channel<'a>(
    raw: &'a Map<String, Value>,
    config: &EngineConfig,
) -> Result<(&'a str, &'a str), Rejection> {
    let event_id = required_str(raw, "event_id")?;
    if event_id.trim().is_empty() {
        return Err(Rejection::BadValue {
            field: "event_id".into(),
            detail: "empty".into(),
        });
    }
    if event_id.len() > config.limits.max_event_id_bytes {
        return Err(Rejection::TooLong {
            field: "event_id".into(),
            max: config.limits.max_event_id_bytes,
        });
    }
    let channel = required_str(raw, "channel")?;
    if channel.is_empty()
        || channel.len() > 64
        || !channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(Rejection::BadValue {
            field: "channel".into(),
            detail: "expected 1 to 64 lower-case ascii letters, digits, `_` or `-`".into(),
        });
    }
    if !config.channels.iter().any(|c| c == channel) {
        return Err(Rejection::UnknownChannel {
            channel: channel.into(),
        });
    }
    Ok((event_id, channel))
}

/// The JSON object of a record, within the size limit, read strictly (see
/// [`super::json`]).
pub(crate) fn json_object(
    bytes: &[u8],
    config: &EngineConfig,
) -> Result<Map<String, Value>, Rejection> {
    read_object(bytes, config.limits.max_event_bytes)
}

/// A required, non-blank string field, trimmed.
pub(crate) fn required_text<'a>(
    o: &'a Map<String, Value>,
    f: &'static str,
) -> Result<&'a str, Rejection> {
    match o.get(f) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(Rejection::Missing(f)),
        Some(_) => Err(Rejection::WrongType {
            field: f.into(),
            expected: "a string",
        }),
    }
}

/// The id of a request or command record: required, at most `max_event_id_bytes`.
pub(crate) fn record_id<'a>(
    o: &'a Map<String, Value>,
    f: &'static str,
    config: &EngineConfig,
) -> Result<&'a str, Rejection> {
    let id = required_text(o, f)?;
    if id.len() > config.limits.max_event_id_bytes {
        return Err(Rejection::TooLong {
            field: f.into(),
            max: config.limits.max_event_id_bytes,
        });
    }
    Ok(id)
}

/// An optional RFC 3339 time field.
pub(crate) fn optional_time(
    o: &Map<String, Value>,
    f: &'static str,
) -> Result<Option<i64>, Rejection> {
    match o.get(f) {
        Some(Value::String(t)) => Ok(Some(parse_time(t, f)?)),
        _ => Ok(None),
    }
}

/// Parses an RFC 3339 time to milliseconds since the epoch.
pub fn parse_time(s: &str, field: &'static str) -> Result<i64, Rejection> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Rejection::BadTime {
            field,
            detail: e.to_string(),
        })
}

/// Walks every key and string: bounded string sizes, no special-category key.
fn check_tree(
    map: &Map<String, Value>,
    config: &EngineConfig,
    deny: &SpecialTerms,
) -> Result<(), Rejection> {
    fn walk(
        v: &Value,
        path: &mut String,
        config: &EngineConfig,
        deny: &SpecialTerms,
    ) -> Result<(), Rejection> {
        match v {
            Value::String(s) if s.len() > config.limits.max_string_bytes => {
                Err(Rejection::TooLong {
                    field: path.clone(),
                    max: config.limits.max_string_bytes,
                })
            }
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, path, config, deny)),
            Value::Object(m) => {
                for (k, child) in m {
                    check_key(k, path, config, deny)?;
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    walk(child, path, config, deny)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    let mut path = String::new();
    for (k, child) in map {
        path.clear();
        check_key(k, &path, config, deny)?;
        path.push_str(k);
        walk(child, &mut path, config, deny)?;
    }
    Ok(())
}

/// A key of the document at `path`: bounded like any text (a key is copied out with the
/// event), and naming no special category.
fn check_key(
    key: &str,
    path: &str,
    config: &EngineConfig,
    deny: &SpecialTerms,
) -> Result<(), Rejection> {
    if key.len() > config.limits.max_string_bytes {
        return Err(Rejection::TooLong {
            field: field_of_key(path, key),
            max: config.limits.max_string_bytes,
        });
    }
    if names_special_category(key, deny) {
        return Err(Rejection::SpecialCategory { key: key.into() });
    }
    Ok(())
}

/// The field a rejection names for `key` under `path`, the key cut to a few dozen bytes:
/// the reason travels in a header, which must not carry the oversized key itself.
fn field_of_key(path: &str, key: &str) -> String {
    const SHOWN: usize = 32;
    let mut end = key.len().min(SHOWN);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    let ellipsis = if end < key.len() { "…" } else { "" };
    let dot = if path.is_empty() { "" } else { "." };
    format!("{path}{dot}{}{ellipsis}", &key[..end])
}

/// The scalar attributes of an event as text, within the limits of an event: at most
/// `max_attributes` keys (more is refused rather than cut: the keys of a JSON object have
/// no order to keep "the first" by, and a dead letter tells the producer), keys and values
/// bounded in length. Objects and arrays as values are ignored, but count as keys.
fn parse_attributes(
    a: &Map<String, Value>,
    config: &EngineConfig,
) -> Result<Vec<(String, String)>, Rejection> {
    let l = &config.limits;
    if a.len() > l.max_attributes {
        return Err(Rejection::TooManyAttributes {
            count: a.len(),
            max: l.max_attributes,
        });
    }
    let mut out = Vec::with_capacity(a.len());
    for (k, v) in a {
        if k.len() > l.max_attribute_key_bytes {
            return Err(Rejection::TooLong {
                field: field_of_key("attributes", k),
                max: l.max_attribute_key_bytes,
            });
        }
        let Some(text) = scalar_text(v) else {
            continue;
        };
        if text.len() > l.max_attribute_value_bytes {
            return Err(Rejection::TooLong {
                field: format!("attributes.{k}"),
                max: l.max_attribute_value_bytes,
            });
        }
        out.push((k.clone(), text));
    }
    Ok(out)
}

fn names_special_category(key: &str, deny: &SpecialTerms) -> bool {
    // Fast path: keys of the contract are short ascii words, most of them known.
    !TOP_LEVEL.contains(&key) && deny.matches(key)
}

fn required_str<'a>(m: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, Rejection> {
    match m.get(field) {
        None | Some(Value::Null) => Err(Rejection::Missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Rejection::WrongType {
            field: field.into(),
            expected: "a string",
        }),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Rejection> {
    opt_str_in(m, field, field)
}

fn opt_str_in<'a>(
    m: &'a Map<String, Value>,
    field: &str,
    path: &str,
) -> Result<Option<&'a str>, Rejection> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::WrongType {
            field: path.into(),
            expected: "a string or null",
        }),
    }
}

fn object<'a>(
    m: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, Rejection> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(Rejection::WrongType {
            field: field.into(),
            expected: "an object or null",
        }),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_identifiers(
    raw: &Map<String, Value>,
    config: &EngineConfig,
) -> Result<(Vec<(String, String)>, u32), Rejection> {
    let Some(ids) = object(raw, "identifiers")? else {
        return Ok((Vec::new(), 0));
    };
    let mut out = Vec::new();
    let mut unknown = 0;
    for (kind, v) in ids {
        let known = config.identifiers.contains_key(kind);
        let mut push = |s: &str| {
            if known {
                out.push((kind.clone(), s.to_string()));
            }
        };
        match v {
            Value::Null => {}
            Value::String(s) => push(s),
            Value::Array(values) => {
                for item in values {
                    match item {
                        Value::String(s) => push(s),
                        Value::Null => {}
                        _ => {
                            return Err(Rejection::WrongType {
                                field: format!("identifiers.{kind}"),
                                expected: "a string, an array of strings or null",
                            })
                        }
                    }
                }
            }
            _ => {
                return Err(Rejection::WrongType {
                    field: format!("identifiers.{kind}"),
                    expected: "a string, an array of strings or null",
                })
            }
        }
        if !known && !v.is_null() {
            unknown += 1;
        }
        if out.len() > config.limits.max_identifiers {
            break;
        }
    }
    if out.len() > config.limits.max_identifiers {
        return Err(Rejection::TooManyIdentifiers {
            count: out.len(),
            max: config.limits.max_identifiers,
        });
    }
    Ok((out, unknown))
}

fn parse_person(p: &Map<String, Value>, unknown: &mut u32) -> Result<Person, Rejection> {
    const KNOWN: [&str; 4] = ["first_name", "last_name", "birth_date", "address"];
    *unknown += p.keys().filter(|k| !KNOWN.contains(&k.as_str())).count() as u32;
    let address = match p.get("address") {
        None | Some(Value::Null) => None,
        Some(Value::Object(a)) => {
            const FIELDS: [&str; 6] = ["line1", "line2", "postal_code", "city", "state", "country"];
            *unknown += a.keys().filter(|k| !FIELDS.contains(&k.as_str())).count() as u32;
            let get = |f: &str| -> Result<Option<String>, Rejection> {
                Ok(opt_str_in(a, f, &format!("person.address.{f}"))?.map(String::from))
            };
            let address = Address {
                line1: get("line1")?,
                line2: get("line2")?,
                postal_code: get("postal_code")?,
                city: get("city")?,
                state: get("state")?,
                country: get("country")?,
            };
            (!address.is_empty()).then_some(address)
        }
        Some(_) => {
            return Err(Rejection::WrongType {
                field: "person.address".into(),
                expected: "an object or null",
            })
        }
    };
    Ok(Person {
        first_name: opt_str_in(p, "first_name", "person.first_name")?.map(String::from),
        last_name: opt_str_in(p, "last_name", "person.last_name")?.map(String::from),
        birth_date: opt_str_in(p, "birth_date", "person.birth_date")?.map(String::from),
        address,
    })
}

fn number(v: Option<&Value>, field: &str) -> Result<Option<f64>, Rejection> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 1e12 => Ok(Some(f)),
            _ => Err(Rejection::BadValue {
                field: field.into(),
                detail: "number out of range".into(),
            }),
        },
        // Money is often sent as a decimal string to avoid binary floats.
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f.abs() < 1e12 => Ok(Some(f)),
            _ => Err(Rejection::WrongType {
                field: field.into(),
                expected: "a number",
            }),
        },
        Some(_) => Err(Rejection::WrongType {
            field: field.into(),
            expected: "a number",
        }),
    }
}

fn parse_items(m: &Map<String, Value>, path: &str) -> Result<Vec<Item>, Rejection> {
    let items = match m.get("items") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(Rejection::WrongType {
                field: path.into(),
                expected: "an array",
            })
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(Rejection::WrongType {
                field: format!("{path}[{i}]"),
                expected: "an object",
            });
        };
        let sku = match o.get("sku") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            _ => return Err(Rejection::Missing("items[].sku")),
        };
        let quantity = number(o.get("quantity"), &format!("{path}[{i}].quantity"))?.unwrap_or(1.0);
        out.push(Item {
            sku,
            name: opt_str_in(o, "name", &format!("{path}[{i}].name"))?.map(String::from),
            quantity,
            unit_price: number(o.get("unit_price"), &format!("{path}[{i}].unit_price"))?,
        });
    }
    Ok(out)
}

/// Amounts are positive (a total or a unit price may be 0, a quantity may not), except in
/// a return's order, which may state them as negative (the refund convention): they are
/// read there as the amounts returned. Elsewhere a negative amount is a `bad_value`
/// naming its field.
fn amounts_signed(mut t: Touchpoint) -> Result<Touchpoint, Rejection> {
    let bad = |field: String, detail: &str| Rejection::BadValue {
        field,
        detail: detail.into(),
    };
    let check_items = |items: &[Item], path: &str| {
        for (i, item) in items.iter().enumerate() {
            if item.quantity <= 0.0 {
                return Err(bad(format!("{path}[{i}].quantity"), "must be more than 0"));
            }
            if item.unit_price.is_some_and(|p| p < 0.0) {
                return Err(bad(format!("{path}[{i}].unit_price"), "negative"));
            }
        }
        Ok(())
    };
    if let Some(cart) = &t.cart {
        check_items(&cart.items, "cart.items")?;
    }
    match &mut t.order {
        Some(order) if t.kind == EventType::Return => {
            order.total_cents = order.total_cents.map(i64::abs);
            for item in &mut order.items {
                item.quantity = item.quantity.abs();
                item.unit_price = item.unit_price.map(f64::abs);
            }
        }
        Some(order) => {
            if order.total_cents.is_some_and(|c| c < 0) {
                return Err(bad("order.total".into(), "negative"));
            }
            check_items(&order.items, "order.items")?;
        }
        None => {}
    }
    Ok(t)
}

fn parse_order(o: &Map<String, Value>) -> Result<Order, Rejection> {
    let currency = opt_str_in(o, "currency", "order.currency")?;
    if let Some(c) = currency {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Rejection::BadValue {
                field: "order.currency".into(),
                detail: "expected an iso 4217 code such as EUR".into(),
            });
        }
    }
    Ok(Order {
        order_id: opt_str_in(o, "order_id", "order.order_id")?.map(|s| s.trim().to_string()),
        total_cents: number(o.get("total"), "order.total")?.map(|t| (t * 100.0).round() as i64),
        currency: currency.map(|c| c.to_ascii_uppercase()),
        items: parse_items(o, "order.items")?,
    })
}

fn parse_consent(raw: &Map<String, Value>) -> Result<Vec<ConsentEntry>, Rejection> {
    let entries = match raw.get("consent") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(Rejection::WrongType {
                field: "consent".into(),
                expected: "an array",
            })
        }
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Value::Object(o) => parse_consent_entry(i, o),
            _ => Err(Rejection::WrongType {
                field: format!("consent[{i}]"),
                expected: "an object",
            }),
        })
        .collect()
}

/// One entry of the `consent` array, the `i`-th.
fn parse_consent_entry(i: usize, o: &Map<String, Value>) -> Result<ConsentEntry, Rejection> {
    let granted = match o.get("granted") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(Rejection::WrongType {
                field: format!("consent[{i}].granted"),
                expected: "true or false",
            })
        }
    };
    let identifier = match o.get("identifier") {
        None | Some(Value::Null) => None,
        Some(Value::Object(id)) => match (id.get("type"), id.get("value")) {
            (Some(Value::String(t)), Some(Value::String(v))) if !v.trim().is_empty() => {
                Some((t.clone(), v.clone()))
            }
            _ => {
                return Err(Rejection::WrongType {
                    field: format!("consent[{i}].identifier"),
                    expected: "an object with string `type` and non-empty `value`",
                })
            }
        },
        Some(_) => {
            return Err(Rejection::WrongType {
                field: format!("consent[{i}].identifier"),
                expected: "an object",
            })
        }
    };
    let expires_at = match o.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(parse_time(t, "consent.expires_at")?),
        Some(_) => {
            return Err(Rejection::WrongType {
                field: format!("consent[{i}].expires_at"),
                expected: "an RFC 3339 time",
            })
        }
    };
    Ok(ConsentEntry {
        purpose: consent_word(i, o, "purpose")?,
        channel: consent_word(i, o, "channel")?,
        granted,
        identifier,
        expires_at,
    })
}

/// Field `f` of the `i`-th consent entry, a word of the consent vocabulary.
fn consent_word<T: FromStr<Err = UnknownWord>>(
    i: usize,
    o: &Map<String, Value>,
    f: &str,
) -> Result<T, Rejection> {
    match o.get(f) {
        Some(Value::String(s)) => s.parse().map_err(|e: UnknownWord| Rejection::BadValue {
            field: format!("consent[{i}].{f}"),
            detail: format!("`{}` is not one of {}", e.value, e.allowed),
        }),
        _ => Err(Rejection::WrongType {
            field: format!("consent[{i}].{f}"),
            expected: "a string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EngineConfig {
        EngineConfig::default()
    }

    const SOPHIE: &str = r#"{"event_id":"pos-1","channel":"store","type":"purchase",
        "occurred_at":"2026-11-20T14:03:00+01:00","source":"pos-paris-11",
        "identifiers":{"email":"Sophie.Dupont@Gmail.com","phone":"06 12 34 56 78","fax":"x"},
        "person":{"first_name":"Sophie","last_name":"Dupont","shoe_size":38,
          "address":{"line1":"12 rue de la Paix","postal_code":"75002","city":"Paris","country":"FR"}},
        "order":{"order_id":"T-881","total":129.90,"currency":"eur",
          "items":[{"sku":"CLIMB-42","quantity":1,"unit_price":129.90}]},
        "consent":[{"purpose":"marketing","channel":"email","granted":false}],
        "app_version":"5.2","attributes":{"preferred_store":"Paris 11"}}"#;

    #[test]
    fn contract_example_parses_with_unknowns_counted() {
        let t = parse(SOPHIE.as_bytes(), &cfg()).unwrap();
        assert_eq!(t.event_id, "pos-1");
        assert_eq!(t.kind, EventType::Purchase);
        assert_eq!(t.occurred_at, 1_795_179_780_000);
        assert_eq!(t.identifiers.len(), 2);
        assert_eq!(t.unknown_identifier_types, 1);
        assert_eq!(t.unknown_fields, 2, "app_version and person.shoe_size");
        let o = t.order.unwrap();
        assert_eq!(o.total_cents, Some(12990));
        assert_eq!(o.currency.as_deref(), Some("EUR"));
        assert_eq!(t.consent[0].purpose, "marketing");
        assert!(!t.consent[0].granted);
        assert_eq!(
            t.attributes,
            vec![("preferred_store".into(), "Paris 11".into())]
        );
    }

    #[test]
    fn unknown_type_is_kept_as_generic_touchpoint() {
        let t = parse(
            br#"{"event_id":"a","channel":"web","type":"wishlist_add","occurred_at":"2026-01-01T00:00:00Z"}"#,
            &cfg(),
        )
        .unwrap();
        assert_eq!(t.kind, EventType::Other("wishlist_add".into()));
    }

    fn reject(s: &str) -> Rejection {
        parse(s.as_bytes(), &cfg()).unwrap_err()
    }

    #[test]
    fn required_fields_and_times_are_checked_with_precise_reasons() {
        assert_eq!(
            reject(r#"{"channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z"}"#),
            Rejection::Missing("event_id")
        );
        assert!(matches!(
            reject(r#"{"event_id":"a","channel":"web","type":"login","occurred_at":"yesterday"}"#),
            Rejection::BadTime {
                field: "occurred_at",
                ..
            }
        ));
        assert!(matches!(reject("{not json"), Rejection::NotJson(_)));
        assert_eq!(reject("[1,2]"), Rejection::NotAnObject);
        assert!(matches!(
            reject(
                r#"{"event_id":7,"channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z"}"#
            ),
            Rejection::WrongType { .. }
        ));
        assert!(matches!(
            reject(
                r#"{"event_id":"a","channel":"Web Shop","type":"login","occurred_at":"2026-01-01T00:00:00Z"}"#
            ),
            Rejection::BadValue { .. }
        ));
    }

    #[test]
    fn sizes_are_bounded() {
        let long_id = "x".repeat(129);
        let e = format!(
            r#"{{"event_id":"{long_id}","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z"}}"#
        );
        assert!(matches!(reject(&e), Rejection::TooLong { .. }));
        let long_name = "y".repeat(4097);
        let e = format!(
            r#"{{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z","person":{{"first_name":"{long_name}"}}}}"#
        );
        assert_eq!(
            reject(&e),
            Rejection::TooLong {
                field: "person.first_name".into(),
                max: 4096
            }
        );
        let ids: Vec<String> = (0..65).map(|i| format!("\"c{i}\"")).collect();
        let e = format!(
            r#"{{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z","identifiers":{{"cookie_id":[{}]}}}}"#,
            ids.join(",")
        );
        assert!(matches!(
            reject(&e),
            Rejection::TooManyIdentifiers { count: 65, .. }
        ));
        let big = vec![b' '; 1024 * 1024 + 1];
        assert!(matches!(
            parse(&big, &cfg()),
            Err(Rejection::TooLarge { .. })
        ));
    }

    #[test]
    fn attributes_and_keys_are_bounded_with_the_field_named() {
        let event = |attributes: &str| {
            format!(
                r#"{{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z","attributes":{{{attributes}}}}}"#
            )
        };
        let many: Vec<String> = (0..65).map(|i| format!(r#""k{i}":"v""#)).collect();
        assert_eq!(
            reject(&event(&many.join(","))),
            Rejection::TooManyAttributes { count: 65, max: 64 }
        );
        let ok = parse(event(&many[..64].join(",")).as_bytes(), &cfg()).unwrap();
        assert_eq!(ok.attributes.len(), 64);
        let long_key = "k".repeat(129);
        assert_eq!(
            reject(&event(&format!(r#""{long_key}":"v""#))),
            Rejection::TooLong {
                field: format!("attributes.{}…", "k".repeat(32)),
                max: 128
            }
        );
        let long_value = "v".repeat(257);
        assert_eq!(
            reject(&event(&format!(r#""tier":"{long_value}""#))),
            Rejection::TooLong {
                field: "attributes.tier".into(),
                max: 256
            }
        );
        // A key anywhere is text like any other: an oversized one is refused, and the
        // reason does not carry it.
        let huge_key = "é".repeat(250_000);
        let e = format!(
            r#"{{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z","{huge_key}":1}}"#
        );
        let r = reject(&e);
        assert_eq!(r.reason(), "too_long");
        assert!(r.to_string().len() < 120, "{r}");
    }

    #[test]
    fn special_category_keys_are_rejected_anywhere_but_not_lookalikes() {
        for key in [
            "religion",
            "healthCondition",
            "health_condition",
            "ethnic_origin",
            "Political-Opinion",
            "union_membership",
        ] {
            let e = format!(
                r#"{{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z","attributes":{{"{key}":"x"}}}}"#
            );
            assert!(
                matches!(reject(&e), Rejection::SpecialCategory { .. }),
                "{key}"
            );
        }
        let e = r#"{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z","person":{"sexual_orientation":"x"}}"#;
        assert!(matches!(reject(e), Rejection::SpecialCategory { .. }));
        let ok = r#"{"event_id":"a","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z","attributes":{"trace_id":"x","healthy_snacks":"y"}}"#;
        parse(ok.as_bytes(), &cfg()).unwrap();
    }

    #[test]
    fn bad_consent_is_rejected_with_the_entry_named() {
        let e = r#"{"event_id":"a","channel":"web","type":"consent_update","occurred_at":"2026-01-01T00:00:00Z","consent":[{"purpose":"spam","channel":"email","granted":true}]}"#;
        assert_eq!(
            reject(e).to_string(),
            "field `consent[0].purpose` has an invalid value: `spam` is not one of marketing, personalization, remarketing, ab_testing, analytics, profiling"
        );
    }

    #[test]
    fn every_reason_is_listed_for_the_metrics() {
        let rejections = [
            Rejection::TooLarge { size: 2, max: 1 },
            Rejection::EmptyValue,
            Rejection::NotJson(String::new()),
            Rejection::DuplicateKey { key: "a".into() },
            Rejection::UnknownChannel {
                channel: "kiosk".into(),
            },
            Rejection::NotAnObject,
            Rejection::Missing("event_id"),
            Rejection::WrongType {
                field: "x".into(),
                expected: "a string",
            },
            Rejection::BadTime {
                field: "occurred_at",
                detail: String::new(),
            },
            Rejection::TimeOutOfRange {
                field: "occurred_at",
                at: 0,
                earliest: 1,
                latest: 2,
            },
            Rejection::TooLong {
                field: "x".into(),
                max: 1,
            },
            Rejection::BadValue {
                field: "x".into(),
                detail: String::new(),
            },
            Rejection::TooManyIdentifiers { count: 2, max: 1 },
            Rejection::TooManyAttributes { count: 2, max: 1 },
            Rejection::SpecialCategory {
                key: "health".into(),
            },
        ];
        for r in rejections {
            assert!(Rejection::REASONS.contains(&r.reason()), "{r:?}");
        }
    }
}
