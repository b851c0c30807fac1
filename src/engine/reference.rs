//! Reference data joined in the stream, the Kafka Streams GlobalKTable way: the
//! retailer's product catalogue (`reference.products`, keyed by SKU) and its stores
//! (`reference.stores`, keyed by the `source` its shops' events name), each a compacted
//! topic of which every instance keeps a full copy in its store (`d/`). A record replaces
//! the entry of its key; a null value removes it. Events are never held for reference
//! data: a key that is not (yet) known reads as absent, and is counted.
//!
//! Values are JSON objects; unknown fields are ignored (a catalogue carries far more
//! than unicus reads), the fields read are checked and bounded:
//!
//! ```json
//! {"category_path": ["Sport", "Montagne", "Escalade"], "brand": "Simond", "price": 129.9, "currency": "EUR"}
//! {"name": "Lyon Part-Dieu", "city": "Lyon", "postal_code": "69003", "region": "Auvergne-Rhône-Alpes", "format": "megastore"}
//! ```
//!
//! `category_path` may also be one string, its levels separated by `>` or `/`.
//! In replay files, a reference record is a line `{"reference": "products", "key":
//! "CLIMB-42", "value": {...}}` (or `"value": null`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::config::EngineConfig;
use crate::engine::input::touchpoint::{json_object, Rejection};
use crate::store::{keys, Store, StoreError, Table};

/// The products of the catalogue by SKU.
const PRODUCTS: Table<String, Product> = Table::new(keys::reference::PRODUCTS);
/// The stores by source id.
const STORES: Table<String, StoreInfo> = Table::new(keys::reference::STORES);

/// The most levels of a category path.
pub const MAX_CATEGORY_LEVELS: usize = 8;
/// The longest text of a reference field, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;

/// A reference table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefTable {
    Products,
    Stores,
}

impl RefTable {
    pub const ALL: [RefTable; 2] = [RefTable::Products, RefTable::Stores];

    /// Its name in replay lines and metrics: `products`, `stores`.
    pub fn name(self) -> &'static str {
        match self {
            RefTable::Products => "products",
            RefTable::Stores => "stores",
        }
    }

    /// Its topic, without prefix: `reference.products`, `reference.stores`.
    pub fn topic(self) -> &'static str {
        match self {
            RefTable::Products => "reference.products",
            RefTable::Stores => "reference.stores",
        }
    }

    pub fn of_name(name: &str) -> Option<RefTable> {
        RefTable::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// A product of the catalogue, as unicus reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// From the widest category to the narrowest.
    pub category_path: Vec<String>,
    pub brand: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
}

/// A store, as unicus reads it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreInfo {
    pub name: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub region: Option<String>,
    pub format: Option<String>,
}

/// What a reference record says of its key.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Product(Product),
    Store(StoreInfo),
}

/// One reference record: its key's new entry, or its removal (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceUpdate {
    pub table: RefTable,
    pub key: String,
    pub entry: Option<Entry>,
}

/// Parses a record of a reference topic: the record's key and value bytes (none: a
/// tombstone, which removes the key).
pub fn parse_record(
    table: RefTable,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    config: &EngineConfig,
) -> Result<ReferenceUpdate, Rejection> {
    let key = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(Rejection::Missing("key"))?;
    let entry = match value {
        None => None,
        Some(bytes) => Some(entry(table, &json_object(bytes, config)?)?),
    };
    update(table, key, entry, config)
}

/// Parses a replay line `{"reference": "products", "key": ..., "value": {...} | null}`.
pub fn parse_line_document(
    doc: &Map<String, Value>,
    config: &EngineConfig,
) -> Result<ReferenceUpdate, Rejection> {
    let table = match doc.get("reference") {
        Some(Value::String(name)) => {
            RefTable::of_name(name.trim()).ok_or_else(|| Rejection::BadValue {
                field: "reference".into(),
                detail: format!("`{name}` is not a reference table (products, stores)"),
            })?
        }
        _ => {
            return Err(Rejection::WrongType {
                field: "reference".into(),
                expected: "the name of a reference table (products, stores)",
            })
        }
    };
    let key = match doc.get("key") {
        Some(Value::String(k)) if !k.trim().is_empty() => k.trim(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err(Rejection::Missing("key")),
        Some(_) => {
            return Err(Rejection::WrongType {
                field: "key".into(),
                expected: "a string",
            })
        }
    };
    let entry = match doc.get("value") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(entry(table, o)?),
        Some(_) => {
            return Err(Rejection::WrongType {
                field: "value".into(),
                expected: "an object, or null to remove the key",
            })
        }
    };
    update(table, key, entry, config)
}

fn update(
    table: RefTable,
    key: &str,
    entry: Option<Entry>,
    config: &EngineConfig,
) -> Result<ReferenceUpdate, Rejection> {
    if key.len() > config.limits.max_event_id_bytes {
        return Err(Rejection::TooLong {
            field: "key".into(),
            max: config.limits.max_event_id_bytes,
        });
    }
    Ok(ReferenceUpdate {
        table,
        key: key.to_string(),
        entry,
    })
}

fn entry(table: RefTable, o: &Map<String, Value>) -> Result<Entry, Rejection> {
    Ok(match table {
        RefTable::Products => Entry::Product(Product {
            category_path: category_path(o)?,
            brand: text(o, "brand")?,
            price: number(o, "price")?,
            currency: text(o, "currency")?,
        }),
        RefTable::Stores => Entry::Store(StoreInfo {
            name: text(o, "name")?,
            city: text(o, "city")?,
            postal_code: text(o, "postal_code")?,
            region: text(o, "region")?,
            format: text(o, "format")?,
        }),
    })
}

/// An optional text field, trimmed, at most [`MAX_TEXT_BYTES`]; blank is absent.
fn text(o: &Map<String, Value>, field: &'static str) -> Result<Option<String>, Rejection> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => bounded(s.trim(), field),
        Some(_) => Err(Rejection::WrongType {
            field: field.into(),
            expected: "a string",
        }),
    }
}

fn bounded(s: &str, field: &str) -> Result<Option<String>, Rejection> {
    if s.len() > MAX_TEXT_BYTES {
        return Err(Rejection::TooLong {
            field: field.into(),
            max: MAX_TEXT_BYTES,
        });
    }
    Ok((!s.is_empty()).then(|| s.to_string()))
}

fn number(o: &Map<String, Value>, field: &'static str) -> Result<Option<f64>, Rejection> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            _ => Err(Rejection::BadValue {
                field: field.into(),
                detail: "must be a number of at least 0".into(),
            }),
        },
        Some(_) => Err(Rejection::WrongType {
            field: field.into(),
            expected: "a number",
        }),
    }
}

/// `category_path`: an array of strings, or one string whose levels `>` or `/` part.
fn category_path(o: &Map<String, Value>) -> Result<Vec<String>, Rejection> {
    const FIELD: &str = "category_path";
    let levels: Vec<&str> = match o.get(FIELD) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s.split(['>', '/']).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or(Rejection::WrongType {
                    field: FIELD.into(),
                    expected: "an array of strings, or a string with levels parted by `>`",
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(Rejection::WrongType {
                field: FIELD.into(),
                expected: "an array of strings, or a string with levels parted by `>`",
            })
        }
    };
    if levels.len() > MAX_CATEGORY_LEVELS {
        return Err(Rejection::BadValue {
            field: FIELD.into(),
            detail: format!("at most {MAX_CATEGORY_LEVELS} levels"),
        });
    }
    let mut path = Vec::with_capacity(levels.len());
    for level in levels {
        path.extend(bounded(level.trim(), FIELD)?);
    }
    Ok(path)
}

/// Applies a reference record to the local copy.
pub fn apply(store: &mut Store, update: &ReferenceUpdate) -> Result<(), StoreError> {
    match (&update.entry, update.table) {
        (Some(Entry::Product(p)), _) => PRODUCTS.put(store, &update.key, p),
        (Some(Entry::Store(s)), _) => STORES.put(store, &update.key, s),
        (None, RefTable::Products) => {
            PRODUCTS.remove(store, &update.key);
            Ok(())
        }
        (None, RefTable::Stores) => {
            STORES.remove(store, &update.key);
            Ok(())
        }
    }
}

/// The catalogue's product of a SKU, if known.
pub fn product(store: &Store, sku: &str) -> Result<Option<Product>, StoreError> {
    PRODUCTS.get(store, sku)
}

/// The store of a source id, if known.
pub fn store_info(store: &Store, source: &str) -> Result<Option<StoreInfo>, StoreError> {
    STORES.get(store, source)
}

/// The event fields that reference data gives, by table: what a filter reads as
/// `category`, `brand`... (see `engine::profile::audiences`).
pub const PRODUCT_FIELDS: [&str; 4] = ["category", "category_path", "brand", "price"];
pub const STORE_FIELDS: [&str; 4] = ["store_city", "store_region", "store_format", "store_name"];

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EngineConfig {
        EngineConfig::default()
    }

    #[test]
    fn products_and_stores_parse_with_their_bounds() {
        let u = parse_record(
            RefTable::Products,
            Some(b"CLIMB-42"),
            Some(br#"{"category_path": "Sport > Montagne>Escalade", "brand": " Simond ", "price": 129.9, "ean": "123"}"#),
            &config(),
        )
        .unwrap();
        assert_eq!(
            u.entry,
            Some(Entry::Product(Product {
                category_path: vec!["Sport".into(), "Montagne".into(), "Escalade".into()],
                brand: Some("Simond".into()),
                price: Some(129.9),
                currency: None,
            }))
        );
        let removal = parse_record(RefTable::Stores, Some(b"pos-lyon-3"), None, &config()).unwrap();
        assert_eq!(removal.entry, None);
        let bad = |value: &[u8]| {
            parse_record(RefTable::Products, Some(b"X"), Some(value), &config())
                .unwrap_err()
                .to_string()
        };
        assert!(bad(br#"{"price": -1}"#).contains("price"));
        assert!(bad(br#"{"price": "12"}"#).contains("price"));
        assert!(bad(br#"{"category_path": [1]}"#).contains("category_path"));
        assert!(bad(br#"{"category_path": "a>b>c>d>e>f>g>h>i"}"#).contains("at most 8"));
        let long = format!(r#"{{"brand": "{}"}}"#, "x".repeat(300));
        assert!(bad(long.as_bytes()).contains("longer than 256"));
        assert!(parse_record(RefTable::Products, None, Some(b"{}"), &config()).is_err());
        let long_key = "k".repeat(1000);
        assert!(parse_record(
            RefTable::Products,
            Some(long_key.as_bytes()),
            Some(b"{}"),
            &config()
        )
        .is_err());
    }

    #[test]
    fn replay_lines_name_their_table() {
        let doc = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        let u = parse_line_document(
            &doc(r#"{"reference": "stores", "key": "pos-lyon-3", "value": {"city": "Lyon"}}"#),
            &config(),
        )
        .unwrap();
        assert_eq!(u.table, RefTable::Stores);
        assert_eq!(
            u.entry,
            Some(Entry::Store(StoreInfo {
                city: Some("Lyon".into()),
                ..StoreInfo::default()
            }))
        );
        assert!(parse_line_document(
            &doc(r#"{"reference": "prices", "key": "a", "value": {}}"#),
            &config()
        )
        .is_err());
        assert!(parse_line_document(
            &doc(r#"{"reference": "products", "key": "a", "value": 3}"#),
            &config()
        )
        .is_err());
    }

    #[test]
    fn an_update_replaces_and_a_removal_forgets() {
        let mut store = Store::temporary().unwrap();
        let put = |brand: &str| ReferenceUpdate {
            table: RefTable::Products,
            key: "CLIMB-42".into(),
            entry: Some(Entry::Product(Product {
                brand: Some(brand.into()),
                ..Product::default()
            })),
        };
        apply(&mut store, &put("A")).unwrap();
        apply(&mut store, &put("B")).unwrap();
        assert_eq!(
            product(&store, "CLIMB-42")
                .unwrap()
                .unwrap()
                .brand
                .as_deref(),
            Some("B")
        );
        apply(
            &mut store,
            &ReferenceUpdate {
                table: RefTable::Products,
                key: "CLIMB-42".into(),
                entry: None,
            },
        )
        .unwrap();
        assert_eq!(product(&store, "CLIMB-42").unwrap(), None);
    }
}
