//! Masking for callers without `pii:read`: emails, phones and addresses.
//!
//! Applied to the JSON the API answers (golden records, explanations), by shape:
//! - an identifier `{"type": t, "value": v}` or a map `identifiers: {t: [v, ...]}` whose
//!   type normalises as an email or a phone: `s***@example.com`, `+33*******78`;
//! - an `address` (a golden record's stated value, or an address object): street lines and
//!   postal code masked, city, state and country kept (a region, not a place to knock);
//! - the `street` and `postal_code` match keys of a source profile.
//!
//! Names are kept: the scope is what reaches a person directly (mail box, phone,
//! door), and a 360 page without names could not be searched by a service agent.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::engine::config::EngineConfig;
use crate::engine::normalise::Normaliser;

const HIDDEN: &str = "***";

/// Which identifier types carry an email or a phone, from the engine's configuration.
#[derive(Debug, Clone)]
pub struct Masker {
    emails: BTreeSet<String>,
    phones: BTreeSet<String>,
}

impl Masker {
    pub fn new(config: &EngineConfig) -> Self {
        let of = |n: Normaliser| {
            config
                .identifiers
                .iter()
                .filter(|(_, t)| t.normaliser == n)
                .map(|(name, _)| name.clone())
                .collect()
        };
        Self {
            emails: of(Normaliser::Email),
            phones: of(Normaliser::Phone),
        }
    }

    /// Masks `doc` in place.
    pub fn mask(&self, doc: &mut Value) {
        match doc {
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask(v)),
            Value::Object(map) => self.mask_object(map),
            _ => {}
        }
    }

    fn mask_object(&self, map: &mut Map<String, Value>) {
        let kind = map.get("type").and_then(Value::as_str).map(str::to_string);
        if let (Some(kind), Some(Value::String(value))) = (kind, map.get_mut("value")) {
            *value = self.mask_identifier(&kind, value);
        }
        for (key, child) in map.iter_mut() {
            match (key.as_str(), &mut *child) {
                ("identifiers", Value::Object(by_type)) => {
                    for (kind, values) in by_type.iter_mut() {
                        if let Value::Array(values) = values {
                            for v in values.iter_mut() {
                                if let Value::String(s) = v {
                                    *s = self.mask_identifier(kind, s);
                                }
                            }
                        }
                    }
                }
                ("address", Value::Object(address)) => {
                    // A stated field ({value, source, at}) or the address itself.
                    match address.get_mut("value") {
                        Some(Value::Object(inner)) => mask_address(inner),
                        _ => mask_address(address),
                    }
                }
                ("street" | "postal_code", Value::String(s)) => *s = HIDDEN.into(),
                _ => self.mask(child),
            }
        }
    }

    fn mask_identifier(&self, kind: &str, value: &str) -> String {
        if self.emails.contains(kind) {
            mask_email(value)
        } else if self.phones.contains(kind) {
            mask_phone(value)
        } else {
            value.to_string()
        }
    }
}

fn mask_address(address: &mut Map<String, Value>) {
    for key in ["line1", "line2", "postal_code", "street"] {
        if let Some(v) = address.get_mut(key) {
            if !v.is_null() {
                *v = Value::String(HIDDEN.into());
            }
        }
    }
}

/// The first character of the local part and the domain.
fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}{HIDDEN}@{domain}")
        }
        None => HIDDEN.into(),
    }
}

/// The country code of an E.164 number (`+` and up to two digits) and its last two
/// digits.
fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 7 {
        return HIDDEN.into();
    }
    let head = if chars[0] == '+' { 3 } else { 0 };
    let tail = 2;
    let middle = chars.len() - head - tail;
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(middle));
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn emails_phones_and_addresses_are_masked_wherever_they_are() {
        let masker = Masker::new(&EngineConfig::default());
        let mut doc = json!({
            "identifiers": {"email": ["sophie.dupont@gmail.com"], "phone": ["+33612345678"],
                            "loyalty_id": ["FID-99812"]},
            "person": {
                "first_name": {"value": "Sophie"},
                "address": {"value": {"line1": "12 rue de la Paix", "line2": null,
                                      "postal_code": "75002", "city": "Paris", "country": "FR"}}
            },
            "source_profiles": [{
                "identifiers": [{"type": "email", "value": "sophie.dupont@gmail.com"},
                                {"type": "cookie_id", "value": "c-1"}],
                "match_keys": {"street": "12 rue de la paix", "postal_code": "75002", "city": "paris"}
            }],
            "consents_by_identifier": [{"identifier": {"type": "phone", "value": "+33612345678"}}]
        });
        masker.mask(&mut doc);
        let text = doc.to_string();
        for secret in ["dupont@", "612345678", "rue de la", "75002"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(doc["identifiers"]["email"][0], "s***@gmail.com");
        assert_eq!(doc["identifiers"]["phone"][0], "+33*******78");
        assert_eq!(doc["identifiers"]["loyalty_id"][0], "FID-99812");
        assert_eq!(doc["person"]["address"]["value"]["city"], "Paris");
        assert_eq!(doc["person"]["address"]["value"]["line2"], Value::Null);
        assert_eq!(doc["person"]["first_name"]["value"], "Sophie");
        assert_eq!(doc["source_profiles"][0]["identifiers"][1]["value"], "c-1");
        assert_eq!(
            doc["consents_by_identifier"][0]["identifier"]["value"],
            "+33*******78"
        );
    }
}
