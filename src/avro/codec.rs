//! JSON documents ↔ Avro datums, guided by a schema.
//!
//! One set of rules for every topic, so that the JSON form and the Avro form of a record
//! carry the same information (a test proves it for every record type):
//!
//! | Avro | JSON |
//! |---|---|
//! | record | object; an absent field and `null` are the same; a field the schema does not have is an error when encoding |
//! | `["null", T]` and other unions | `null`, or the value of the first branch that fits (an integer fits `long` before `double`) |
//! | `map` | object |
//! | `long` `timestamp-millis` | RFC 3339 string (UTC when decoded) |
//! | `int` `date` | `YYYY-MM-DD` |
//! | `bytes` `decimal` (scale s) | number, rounded to s decimals |
//!
//! Decoding resolves the writer's schema to the reader's (Avro schema resolution), so
//! that older and newer producers are both read.

use std::collections::HashMap;

use apache_avro::schema::{DecimalSchema, Name, RecordSchema, UnionSchema};
use apache_avro::types::Value as Avro;
use apache_avro::{Decimal, Schema};
use serde_json::{Map, Number, Value as Json};

use super::schemas::TopicSchema;

/// Why a document and a schema do not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("field `{path}`: {problem}")]
    Shape { path: String, problem: String },
    #[error("avro: {0}")]
    Avro(String),
}

fn shape(path: &str, problem: impl Into<String>) -> CodecError {
    CodecError::Shape {
        path: if path.is_empty() {
            "(root)".into()
        } else {
            path.to_string()
        },
        problem: problem.into(),
    }
}

type Names = HashMap<Name, &'static Schema>;

/// Follows a named reference.
fn deref<'s>(schema: &'s Schema, names: &'s Names) -> &'s Schema {
    match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        other => other,
    }
}

// ----------------------------------------------------------------------------- encoding

/// The Avro body (no Confluent header) of a JSON document under `schema`.
pub fn encode(doc: &Json, schema: &TopicSchema) -> Result<Vec<u8>, CodecError> {
    let value = to_avro(doc, schema.schema, &schema.names, &mut String::new())?;
    let mut out = Vec::with_capacity(256);
    schema
        .writer
        .write_value_ref(&mut out, &value)
        .map_err(|e| CodecError::Avro(e.to_string()))?;
    Ok(out)
}

/// Converts a JSON value to the Avro value of `schema`.
pub fn to_avro(
    json: &Json,
    schema: &Schema,
    names: &Names,
    path: &mut String,
) -> Result<Avro, CodecError> {
    let schema = deref(schema, names);
    Ok(match (schema, json) {
        (Schema::Null, Json::Null) => Avro::Null,
        (Schema::Boolean, Json::Bool(b)) => Avro::Boolean(*b),
        (Schema::Int, Json::Number(n)) => Avro::Int(
            n.as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| shape(path, "expected a 32-bit integer"))?,
        ),
        (Schema::Long, Json::Number(n)) => Avro::Long(
            n.as_i64()
                .ok_or_else(|| shape(path, "expected an integer"))?,
        ),
        (Schema::Float, Json::Number(n)) => Avro::Float(n.as_f64().unwrap_or_default() as f32),
        (Schema::Double, Json::Number(n)) => Avro::Double(n.as_f64().unwrap_or_default()),
        (Schema::String, Json::String(s)) => Avro::String(s.clone()),
        (Schema::TimestampMillis, Json::String(s)) => Avro::TimestampMillis(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| shape(path, format!("not an rfc 3339 time: {e}")))?
                .timestamp_millis(),
        ),
        (Schema::TimestampMillis, Json::Number(n)) => Avro::TimestampMillis(
            n.as_i64()
                .ok_or_else(|| shape(path, "expected ms since the epoch"))?,
        ),
        (Schema::Date, Json::String(s)) => {
            let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|e| shape(path, format!("not a YYYY-MM-DD date: {e}")))?;
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            Avro::Date(
                i32::try_from((day - epoch).num_days())
                    .map_err(|_| shape(path, "date out of range"))?,
            )
        }
        (Schema::Decimal(d), Json::Number(_) | Json::String(_)) => decimal(json, d, path)?,
        (Schema::Array(a), Json::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            let len = path.len();
            for (i, item) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                out.push(to_avro(item, &a.items, names, path)?);
                path.truncate(len);
            }
            Avro::Array(out)
        }
        (Schema::Map(m), Json::Object(o)) => {
            let mut out = HashMap::with_capacity(o.len());
            for (k, v) in o {
                let len = path.len();
                push_key(path, k);
                out.insert(k.clone(), to_avro(v, &m.types, names, path)?);
                path.truncate(len);
            }
            Avro::Map(out)
        }
        (Schema::Record(r), Json::Object(o)) => record(r, o, names, path)?,
        (Schema::Union(u), _) => union(u, json, names, path)?,
        (schema, json) => {
            return Err(shape(
                path,
                format!("{} does not fit a {}", kind(json), schema_kind(schema)),
            ))
        }
    })
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn record(
    r: &RecordSchema,
    o: &Map<String, Json>,
    names: &Names,
    path: &mut String,
) -> Result<Avro, CodecError> {
    if let Some(extra) = o.keys().find(|k| !r.lookup.contains_key(k.as_str())) {
        let len = path.len();
        push_key(path, extra);
        let e = shape(path, format!("not a field of {}", r.name.name()));
        path.truncate(len);
        return Err(e);
    }
    let mut fields = Vec::with_capacity(r.fields.len());
    for f in &r.fields {
        let len = path.len();
        push_key(path, &f.name);
        let value = match o.get(&f.name) {
            Some(v) => to_avro(v, &f.schema, names, path)?,
            None => match &f.default {
                Some(default) => to_avro(default, &f.schema, names, path)?,
                None => to_avro(&Json::Null, &f.schema, names, path)
                    .map_err(|_| shape(path, "missing"))?,
            },
        };
        path.truncate(len);
        fields.push((f.name.clone(), value));
    }
    Ok(Avro::Record(fields))
}

/// Whether a JSON value can go into a (non-union) schema, without converting it.
fn fits(json: &Json, schema: &Schema) -> bool {
    match (schema, json) {
        (Schema::Null, Json::Null) | (Schema::Boolean, Json::Bool(_)) => true,
        (Schema::Int | Schema::Long, Json::Number(n)) => n.is_i64(),
        (Schema::Float | Schema::Double | Schema::Decimal(_), Json::Number(_)) => true,
        (Schema::TimestampMillis, Json::Number(n)) => n.is_i64(),
        (
            Schema::String | Schema::TimestampMillis | Schema::Date | Schema::Decimal(_),
            Json::String(_),
        ) => true,
        (Schema::Array(_), Json::Array(_)) => true,
        (Schema::Map(_) | Schema::Record(_) | Schema::Ref { .. }, Json::Object(_)) => true,
        _ => false,
    }
}

fn union(
    u: &UnionSchema,
    json: &Json,
    names: &Names,
    path: &mut String,
) -> Result<Avro, CodecError> {
    let variants = u.variants();
    let found = variants
        .iter()
        .position(|v| fits(json, deref(v, names)))
        .ok_or_else(|| {
            shape(
                path,
                format!(
                    "{} fits none of {}",
                    kind(json),
                    variants
                        .iter()
                        .map(schema_kind)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let value = to_avro(json, &variants[found], names, path)?;
    Ok(Avro::Union(found as u32, Box::new(value)))
}

fn decimal(json: &Json, d: &DecimalSchema, path: &str) -> Result<Avro, CodecError> {
    let x = match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
    .ok_or_else(|| shape(path, "expected a decimal number"))?;
    let unscaled = (x * 10f64.powi(d.scale as i32)).round();
    if unscaled.abs() >= 10f64.powi(d.precision as i32) {
        return Err(shape(
            path,
            format!("{x} does not fit decimal({}, {})", d.precision, d.scale),
        ));
    }
    Ok(Avro::Decimal(Decimal::from(minimal_be(unscaled as i128))))
}

/// Two's-complement big-endian bytes of `n`, without redundant sign bytes.
fn minimal_be(n: i128) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut start = 0;
    while start < bytes.len() - 1 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xFF && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn schema_kind(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.name()),
        Schema::Ref { name } => format!("record {}", name.name()),
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

// ----------------------------------------------------------------------------- decoding

/// What decoding keeps of a record field whose value is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    /// Every field of the schema is in the document (null when absent).
    Keep,
    /// Null fields are left out, as a JSON producer would (touchpoints the engine reads).
    Drop,
}

/// Converts an Avro value of `schema` (the reader's, after resolution) to JSON.
pub fn to_json(
    value: Avro,
    schema: &Schema,
    names: &Names,
    nulls: Nulls,
) -> Result<Json, CodecError> {
    let schema = deref(schema, names);
    Ok(match (value, schema) {
        (Avro::Null, _) => Json::Null,
        (Avro::Boolean(b), _) => Json::Bool(b),
        (Avro::Int(i), _) => Json::from(i),
        (Avro::Long(i), _) => Json::from(i),
        (Avro::Float(f), _) => float(f64::from(f)),
        (Avro::Double(f), _) => float(f),
        (Avro::String(s) | Avro::Enum(_, s), _) => Json::String(s),
        (Avro::TimestampMillis(ms), _) => Json::String(crate::output::rfc3339(ms)),
        (Avro::TimestampMicros(us), _) => Json::String(crate::output::rfc3339(us / 1000)),
        (Avro::Date(days), _) => Json::String(
            (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
                + chrono::Duration::days(i64::from(days)))
            .format("%Y-%m-%d")
            .to_string(),
        ),
        (Avro::Decimal(d), Schema::Decimal(ds)) => {
            let bytes: Vec<u8> = Vec::try_from(&d).map_err(|e| CodecError::Avro(e.to_string()))?;
            if bytes.len() > 16 {
                return Err(CodecError::Avro("decimal wider than 128 bits".into()));
            }
            let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                0xFF
            } else {
                0
            };
            let mut wide = [fill; 16];
            wide[16 - bytes.len()..].copy_from_slice(&bytes);
            float(i128::from_be_bytes(wide) as f64 / 10f64.powi(ds.scale as i32))
        }
        (Avro::Union(i, v), Schema::Union(u)) => {
            let branch = u
                .variants()
                .get(i as usize)
                .ok_or_else(|| CodecError::Avro(format!("union branch {i} out of range")))?;
            to_json(*v, branch, names, nulls)?
        }
        (Avro::Array(items), Schema::Array(a)) => Json::Array(
            items
                .into_iter()
                .map(|v| to_json(v, &a.items, names, nulls))
                .collect::<Result<_, _>>()?,
        ),
        (Avro::Map(m), Schema::Map(ms)) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(k, to_json(v, &ms.types, names, nulls)?);
            }
            Json::Object(out)
        }
        (Avro::Record(fields), Schema::Record(r)) => {
            let mut out = Map::new();
            for ((name, v), f) in fields.into_iter().zip(&r.fields) {
                let v = to_json(v, &f.schema, names, nulls)?;
                if nulls == Nulls::Keep || !v.is_null() {
                    out.insert(name, v);
                }
            }
            Json::Object(out)
        }
        (value, schema) => {
            return Err(CodecError::Avro(format!(
                "value {value:?} does not match schema {}",
                schema_kind(schema)
            )))
        }
    })
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::schemas::{catalogue, TopicSchema};
    use serde_json::json;

    fn round_trip(doc: &Json, ts: &TopicSchema) -> Json {
        let body = encode(doc, ts).unwrap();
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(ts.schema)
            .resolved_writer_schemata(ts.resolved.clone())
            .build()
            .unwrap();
        let value = reader.read_value(&mut &body[..]).unwrap();
        to_json(value, ts.schema, &ts.names, Nulls::Drop).unwrap()
    }

    #[test]
    fn a_touchpoint_round_trips_with_times_dates_and_money() {
        let ts = catalogue().input("store");
        let doc = json!({
            "event_id": "pos-1", "channel": "store", "type": "purchase",
            "occurred_at": "2026-11-20T13:03:00Z",
            "identifiers": {"email": "a@b.fr", "cookie_id": ["c1", "c2"]},
            "person": {"first_name": "Sophie", "birth_date": "1985-04-12",
                       "address": {"city": "Paris"}},
            "order": {"order_id": "T-1", "total": 129.9, "currency": "EUR",
                      "items": [{"sku": "A", "quantity": 1.0, "unit_price": 12.3456}]},
            "attributes": {"store": "Paris 11", "visits": 3, "ratio": 0.5, "vip": true},
        });
        assert_eq!(round_trip(&doc, ts), doc);
    }

    #[test]
    fn negative_and_large_decimals_keep_their_value() {
        for n in [
            0i128,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            65_535,
            -1_000_000_007,
        ] {
            let d = Decimal::from(minimal_be(n));
            let bytes: Vec<u8> = Vec::try_from(&d).unwrap();
            let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0 };
            let mut wide = [fill; 16];
            wide[16 - bytes.len()..].copy_from_slice(&bytes);
            assert_eq!(i128::from_be_bytes(wide), n);
        }
    }

    #[test]
    fn a_field_the_schema_does_not_have_is_named_in_the_error() {
        let ts = catalogue().input("web");
        let doc = json!({"event_id": "a", "channel": "web", "type": "login",
            "occurred_at": "2026-01-01T00:00:00Z", "person": {"shoe_size": 38}});
        assert_eq!(
            encode(&doc, ts).unwrap_err().to_string(),
            "field `person.shoe_size`: not a field of Person"
        );
        let doc = json!({"event_id": "a", "channel": "web", "type": "login",
            "occurred_at": "yesterday"});
        assert!(encode(&doc, ts)
            .unwrap_err()
            .to_string()
            .starts_with("field `occurred_at`"));
        let doc = json!({"channel": "web", "type": "login", "occurred_at": "2026-01-01T00:00:00Z"});
        assert_eq!(
            encode(&doc, ts).unwrap_err().to_string(),
            "field `event_id`: missing"
        );
    }
}
