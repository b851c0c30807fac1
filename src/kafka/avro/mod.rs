//! Avro and the Confluent Schema Registry, at the edges of the engine.
//!
//! The engine only knows JSON documents ([`serde_json::Value`]). This module turns
//! Confluent-framed Avro (magic byte `0`, 4-byte big-endian schema id, Avro body) into the
//! same document the JSON parser reads, and an engine output record into the Avro datum of
//! its topic's schema. Nothing here runs inside [`crate::engine`]: the runtime decodes
//! before the engine step and encodes after it.
//!
//! | module | what |
//! |---|---|
//! | [`schemas`] | the schemas of `schemas/`, embedded in the binary: one per input channel, per reference topic and per output topic |
//! | [`codec`] | JSON document ↔ Avro datum, guided by a schema (logical types for times, decimals for money) |
//! | [`registry`] | the registry client: writer schemas by id (cached) for input and reference topics, output schemas registered at start |
//! | [`crate::sim::registry_double`] | a small in-memory Confluent-compatible registry, for tests and benchmarks (in `sim`) |
//! | [`check`] | `unicus schemas check`: every schema backward compatible with its previous version |
//! | [`crate::settings::avro`] | the `[schema_registry]` and `[output]` settings (in `settings`) |
//!
//! Mapping rules (also in `schemas/README.md`): an absent JSON field and `null` are the
//! same; times are RFC 3339 strings in JSON and `timestamp-millis` in Avro (the instant is
//! kept, the UTC offset is not); money is a JSON number and an Avro `decimal` (scale 2,
//! unit prices scale 4); where the contract is open (the touchpoint inside
//! `touchpoints.resolved`, the export document of `gdpr.receipts`) the Avro field is the
//! JSON text.

pub mod check;
pub mod codec;

pub mod registry;
pub mod schemas;

/// The magic byte of the Confluent wire format.
pub const MAGIC: u8 = 0;

/// Splits a Confluent-framed record into its schema id and Avro body.
pub fn unframe(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [MAGIC, a, b, c, d, body @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => None,
    }
}

/// Prefixes an Avro body with the Confluent header of `schema_id`.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// True if a record value is in the Confluent wire format (JSON starts with `{`).
pub fn is_framed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_unframes_the_confluent_header() {
        let framed = frame(258, &[6, 7]);
        assert_eq!(framed, vec![0, 0, 0, 1, 2, 6, 7]);
        assert_eq!(unframe(&framed), Some((258, &[6u8, 7][..])));
        assert!(is_framed(&framed));
        assert_eq!(unframe(&[0, 0, 1]), None, "a short header is not a frame");
        assert_eq!(unframe(b"{\"a\":1}"), None);
        assert!(!is_framed(b"{}"));
    }
}
