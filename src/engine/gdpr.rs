//! GDPR by design: rights requests, the suppression list of erased identifiers, keyed
//! hashes and pseudonymised output.
//!
//! - A request (`gdpr.requests`) is parsed with the other inputs
//!   ([`crate::engine::input::request`]); the engine runs it through resolve and profile.
//! - Identifiers of erased customers are kept only as keyed hashes
//!   (HMAC-SHA256 with the deployment's `gdpr.hash_key`, or a random key generated once
//!   and kept in the store) so that an old event replayed later is recognised and
//!   dropped instead of bringing the person back.
//! - Pseudonymised topics carry the same keyed hash instead of identifier values, and no
//!   person fields.
//!
//! Store tables (namespace `g/`, declared in [`crate::store::keys`]): the generated hash
//! key, the suppression list and its size, and the rights requests done.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde_json::Value;
use sha2::Sha256;

use crate::engine::config::{EngineConfig, ErasedIdentifiers};
use crate::model::Ident;
use crate::store::{keys, Cell, Store, StoreError, Table};

/// The key of the keyed hashes when none is configured, generated once.
const GENERATED_KEY: Cell<Vec<u8>> = Cell::new(keys::gdpr::HASH_KEY);
/// The size of the suppression list.
const SUPPRESSED_COUNT: Cell<u64> = Cell::new(keys::gdpr::SUPPRESSED_COUNT);
/// The suppression list, by keyed hash.
const SUPPRESSED: Table<String, ()> = Table::new(keys::gdpr::SUPPRESSED);
/// Rights requests done, by `request_id`.
const REQUESTS_DONE: Table<String, ()> = Table::new(keys::gdpr::REQUESTS_DONE);

/// Whether the request `request_id` was done (a request is done once).
pub(crate) fn request_done(store: &Store, request_id: &str) -> Result<bool, StoreError> {
    REQUESTS_DONE.contains(store, request_id)
}

/// Marks the request `request_id` done.
pub(crate) fn mark_request_done(store: &mut Store, request_id: &str) -> Result<(), StoreError> {
    REQUESTS_DONE.put(store, request_id, &())
}

/// The key of the keyed hashes: the configured one, else the one kept in the store.
pub fn hash_key(store: &Store, config: &EngineConfig) -> Result<Option<Vec<u8>>, StoreError> {
    if !config.gdpr.hash_key.is_empty() {
        return Ok(Some(config.gdpr.hash_key.as_bytes().to_vec()));
    }
    GENERATED_KEY.get(store)
}

/// The key of the keyed hashes, generated (and staged in the store) if there is none.
pub fn hash_key_or_generate(
    store: &mut Store,
    config: &EngineConfig,
) -> Result<Vec<u8>, StoreError> {
    if let Some(k) = hash_key(store, config)? {
        return Ok(k);
    }
    let mut k = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut k);
    GENERATED_KEY.put(store, &k)?;
    Ok(k)
}

/// HMAC-SHA256 of `type \0 value`, in lower-case hex.
pub fn keyed_hash(hash_key: &[u8], kind: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(hash_key).expect("hmac takes keys of any length");
    mac.update(kind.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    let mut out = String::with_capacity(64);
    for b in mac.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Identifiers on the suppression list. Free when nobody was ever erased.
pub fn suppressed(
    store: &Store,
    config: &EngineConfig,
    ids: &[Ident],
) -> Result<Vec<Ident>, StoreError> {
    if config.gdpr.erased_identifiers == ErasedIdentifiers::Accept
        || SUPPRESSED_COUNT.get(store)?.unwrap_or(0) == 0
    {
        return Ok(Vec::new());
    }
    let Some(k) = hash_key(store, config)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for id in ids {
        if SUPPRESSED.contains(store, &keyed_hash(&k, &id.kind, &id.value))? {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// Puts identifiers on the suppression list (if the policy is to suppress); returns how
/// many were added.
pub fn suppress(
    store: &mut Store,
    config: &EngineConfig,
    ids: &[Ident],
) -> Result<u64, StoreError> {
    if config.gdpr.erased_identifiers == ErasedIdentifiers::Accept || ids.is_empty() {
        return Ok(0);
    }
    let k = hash_key_or_generate(store, config)?;
    let mut added = 0;
    for id in ids {
        let hash = keyed_hash(&k, &id.kind, &id.value);
        if !SUPPRESSED.contains(store, &hash)? {
            SUPPRESSED.put(store, &hash, &())?;
            added += 1;
        }
    }
    let n = SUPPRESSED_COUNT.get(store)?.unwrap_or(0) + added;
    SUPPRESSED_COUNT.put(store, &n)?;
    Ok(added)
}

/// Size of the suppression list.
pub fn suppressed_count(store: &Store) -> Result<u64, StoreError> {
    Ok(SUPPRESSED_COUNT.get(store)?.unwrap_or(0))
}

/// Replaces identifier values by keyed hashes (`h:<hex>`) and drops person fields, in
/// any record shape of the pseudonymisable topics: `identifiers` as a map of values or
/// of lists of values, or as a list of `{type, value}`; `identifier` as `{type, value}`.
pub fn pseudonymise(value: &mut Value, hash_key: &[u8]) {
    let Value::Object(o) = value else {
        return;
    };
    if o.contains_key("person") {
        o.insert("person".into(), Value::Null);
    }
    for (name, v) in o.iter_mut() {
        match (name.as_str(), v) {
            ("identifiers", Value::Object(m)) => {
                for (kind, vals) in m.iter_mut() {
                    match vals {
                        Value::String(s) => *s = hashed(hash_key, kind, s),
                        Value::Array(a) => {
                            for s in a.iter_mut() {
                                if let Value::String(s) = s {
                                    *s = hashed(hash_key, kind, s);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            ("identifiers", Value::Array(a)) => a.iter_mut().for_each(|id| typed(id, hash_key)),
            ("identifier", id @ Value::Object(_)) => typed(id, hash_key),
            (_, child @ (Value::Object(_) | Value::Array(_))) => {
                if let Value::Array(a) = child {
                    a.iter_mut().for_each(|c| pseudonymise(c, hash_key));
                } else {
                    pseudonymise(child, hash_key);
                }
            }
            _ => {}
        }
    }
}

fn typed(id: &mut Value, hash_key: &[u8]) {
    let Value::Object(m) = id else {
        return;
    };
    let kind = m
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(Value::String(s)) = m.get_mut("value") {
        *s = hashed(hash_key, &kind, s);
    }
}

fn hashed(hash_key: &[u8], kind: &str, value: &str) -> String {
    format!("h:{}", keyed_hash(hash_key, kind, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyed_hashes_depend_on_key_type_and_value() {
        let h = keyed_hash(b"k1", "email", "a@b.fr");
        assert_eq!(h.len(), 64);
        assert_eq!(h, keyed_hash(b"k1", "email", "a@b.fr"));
        assert_ne!(h, keyed_hash(b"k2", "email", "a@b.fr"));
        assert_ne!(h, keyed_hash(b"k1", "phone", "a@b.fr"));
    }

    #[test]
    fn pseudonymised_records_keep_no_identifier_value_or_person_field() {
        let mut v = json!({
            "customer_id": "cus_1",
            "identifiers": {"email": ["a@b.fr"], "phone": "+33612345678"},
            "person": {"first_name": "Sophie"},
            "merge": {"identifiers": [{"type": "email", "value": "a@b.fr"}]},
            "identifier": {"type": "email", "value": "a@b.fr"},
        });
        pseudonymise(&mut v, b"k");
        let text = v.to_string();
        assert!(!text.contains("a@b.fr") && !text.contains("+336") && !text.contains("Sophie"));
        let h = format!("h:{}", keyed_hash(b"k", "email", "a@b.fr"));
        assert_eq!(v["identifiers"]["email"][0], json!(h));
        assert_eq!(v["merge"]["identifiers"][0]["value"], json!(h));
        assert_eq!(v["identifier"]["value"], json!(h));
        assert_eq!(v["customer_id"], json!("cus_1"));
    }
}
