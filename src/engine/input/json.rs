//! Strict reading of a record's JSON text into a document, in one pass: a duplicate key
//! at any depth, an empty value and a number out of range each get their own reason.
//!
//! `serde_json` keeps the last of two equal keys silently, so the document is built by
//! a visitor of its own that refuses the second. A leading UTF-8 byte-order mark (written
//! by some Windows tools) is skipped: it says nothing about the document.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use super::touchpoint::Rejection;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The JSON object of one record, at most `max_bytes` long.
pub(crate) fn read_object(bytes: &[u8], max_bytes: usize) -> Result<Map<String, Value>, Rejection> {
    if bytes.len() > max_bytes {
        return Err(Rejection::TooLarge {
            size: bytes.len(),
            max: max_bytes,
        });
    }
    let text = bytes.strip_prefix(BOM).unwrap_or(bytes);
    if text
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Err(Rejection::EmptyValue);
    }
    let trail = RefCell::new(Trail::default());
    let mut de = serde_json::Deserializer::from_slice(text);
    let read = Doc { trail: &trail }
        .deserialize(&mut de)
        .and_then(|doc| de.end().map(|()| doc));
    match read {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Rejection::NotAnObject),
        Err(e) => Err(trail.into_inner().rejection(e)),
    }
}

/// Where reading stopped, filled on the way out of a failure: the innermost key first.
#[derive(Default)]
struct Trail {
    segments: Vec<Segment>,
    duplicate: bool,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl Trail {
    fn path(&self) -> String {
        let mut path = String::new();
        for segment in self.segments.iter().rev() {
            match segment {
                Segment::Key(k) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                }
                Segment::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        path
    }

    fn rejection(self, e: serde_json::Error) -> Rejection {
        if self.duplicate {
            return Rejection::DuplicateKey { key: self.path() };
        }
        // serde_json names this failure in its message only ("number out of range at line
        // 1 column 9"); a unit test pins the wording.
        if e.to_string().starts_with("number out of range") {
            return Rejection::BadValue {
                field: self.path(),
                detail: "number out of range".into(),
            };
        }
        Rejection::NotJson(e.to_string())
    }
}

/// Builds a [`Value`] like `serde_json`'s own, but refuses a key seen twice in an object.
#[derive(Clone, Copy)]
struct Doc<'t> {
    trail: &'t RefCell<Trail>,
}

impl<'de> DeserializeSeed<'de> for Doc<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Doc<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a json value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => items.push(v),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    self.trail
                        .borrow_mut()
                        .segments
                        .push(Segment::Index(items.len()));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match map.next_value_seed(self) {
                Ok(v) => v,
                Err(e) => {
                    self.trail.borrow_mut().segments.push(Segment::Key(key));
                    return Err(e);
                }
            };
            match out.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(first) => {
                    let mut trail = self.trail.borrow_mut();
                    trail.duplicate = true;
                    trail.segments.push(Segment::Key(first.key().clone()));
                    return Err(A::Error::custom("duplicate key"));
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<Map<String, Value>, Rejection> {
        read_object(s.as_bytes(), 1 << 20)
    }

    #[test]
    fn a_document_reads_as_serde_json_reads_it() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615,"d":"é\n"}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(Value::Object(read(text).unwrap()), expected);
    }

    #[test]
    fn a_duplicate_key_is_named_with_its_path() {
        assert_eq!(
            read(r#"{"a":1,"a":2}"#),
            Err(Rejection::DuplicateKey { key: "a".into() })
        );
        assert_eq!(
            read(r#"{"o":{"items":[{"sku":"x"},{"sku":"y","sku":"z"}]}}"#),
            Err(Rejection::DuplicateKey {
                key: "o.items[1].sku".into()
            })
        );
        // Equal keys in different objects are not duplicates.
        read(r#"{"a":{"k":1},"b":{"k":1}}"#).unwrap();
    }

    #[test]
    fn numbers_out_of_range_are_bad_values_of_their_field() {
        let huge = "9".repeat(400);
        for (text, field) in [
            (r#"{"order":{"total":1e309}}"#.to_string(), "order.total"),
            (format!(r#"{{"x":[0,-{huge}]}}"#), "x[1]"),
        ] {
            assert_eq!(
                read(&text),
                Err(Rejection::BadValue {
                    field: field.into(),
                    detail: "number out of range".into()
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn empty_values_byte_order_marks_and_bad_text() {
        assert_eq!(read(""), Err(Rejection::EmptyValue));
        assert_eq!(read(" \r\n"), Err(Rejection::EmptyValue));
        assert_eq!(read("\u{feff}"), Err(Rejection::EmptyValue));
        assert_eq!(read("\u{feff}{\"a\":1}").unwrap()["a"], 1);
        assert!(matches!(read("{\"a\":1} x"), Err(Rejection::NotJson(_))));
        assert!(matches!(read("{\"a\":"), Err(Rejection::NotJson(_))));
        assert_eq!(read("null"), Err(Rejection::NotAnObject));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(
            read(&format!("{{\"a\":{deep}}}")),
            Err(Rejection::NotJson(_))
        ));
    }
}
