//! Rights requests (`gdpr.requests`): `{request_id, kind: erase|export, identifier:
//! {type, value}}`, or `customer_id` instead of `identifier`, parsed and validated.

use serde_json::Value;

use crate::engine::config::EngineConfig;
use crate::engine::handoff::RequestKind;
use crate::engine::input::touchpoint::{
    json_object, optional_time, record_id, required_text as text, Rejection,
};

/// Who a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `(type, raw value)`, normalised by resolve.
    Identifier(String, String),
    CustomerId(String),
}

/// A parsed rights request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub request_id: String,
    pub kind: RequestKind,
    pub subject: Subject,
    /// When the person asked (ms), if the request says.
    pub requested_at: Option<i64>,
}

/// Parses a `gdpr.requests` record.
pub fn parse_request(bytes: &[u8], config: &EngineConfig) -> Result<Request, Rejection> {
    let o = json_object(bytes, config)?;
    parse_request_document(&o, config)
}

/// Validates a request already decoded into a document (from Avro).
pub fn parse_request_document(
    o: &serde_json::Map<String, Value>,
    config: &EngineConfig,
) -> Result<Request, Rejection> {
    let request_id = record_id(o, "request_id", config)?;
    let kind = match text(o, "kind")? {
        "erase" => RequestKind::Erase,
        "export" => RequestKind::Export,
        other => {
            return Err(Rejection::BadValue {
                field: "kind".into(),
                detail: format!("`{other}` is not one of erase, export"),
            })
        }
    };
    let subject = match (o.get("identifier"), o.get("customer_id")) {
        (Some(Value::Object(id)), _) => {
            let kind = text(id, "type")?;
            if !config.identifiers.contains_key(kind) {
                return Err(Rejection::BadValue {
                    field: "identifier.type".into(),
                    detail: format!("`{kind}` is not a configured identifier type"),
                });
            }
            Subject::Identifier(kind.to_string(), text(id, "value")?.to_string())
        }
        (Some(Value::Null) | None, Some(Value::String(c))) if !c.trim().is_empty() => {
            Subject::CustomerId(c.trim().to_string())
        }
        (Some(Value::Null) | None, _) => return Err(Rejection::Missing("identifier")),
        (Some(_), _) => {
            return Err(Rejection::WrongType {
                field: "identifier".into(),
                expected: "an object {type, value}",
            })
        }
    };
    let requested_at = optional_time(o, "requested_at")?;
    Ok(Request {
        request_id: request_id.to_string(),
        kind,
        subject,
        requested_at,
    })
}

/// Whether a line of a replay file is a rights request rather than a touchpoint.
pub fn looks_like_request(bytes: &[u8]) -> bool {
    super::InputKind::of_line(bytes) == Some(super::InputKind::Request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_bad_ones_named() {
        let c = EngineConfig::default();
        let r = parse_request(
            br#"{"request_id":"r1","kind":"erase","identifier":{"type":"email","value":"a@b.fr"}}"#,
            &c,
        )
        .unwrap();
        assert_eq!(r.kind, RequestKind::Erase);
        assert_eq!(
            r.subject,
            Subject::Identifier("email".into(), "a@b.fr".into())
        );
        let r = parse_request(
            br#"{"request_id":"r2","kind":"export","customer_id":"cus_1"}"#,
            &c,
        )
        .unwrap();
        assert_eq!(r.subject, Subject::CustomerId("cus_1".into()));
        let bad = |s: &str| parse_request(s.as_bytes(), &c).unwrap_err().to_string();
        assert_eq!(
            bad(r#"{"request_id":"r","kind":"forget","customer_id":"c"}"#),
            "field `kind` has an invalid value: `forget` is not one of erase, export"
        );
        assert_eq!(
            bad(r#"{"request_id":"r","kind":"erase"}"#),
            "missing required field `identifier`"
        );
        assert_eq!(
            bad(r#"{"request_id":"r","kind":"erase","identifier":{"type":"iban","value":"x"}}"#),
            "field `identifier.type` has an invalid value: `iban` is not a configured identifier type"
        );
        assert!(looks_like_request(br#"{"request_id":"r","kind":"erase"}"#));
        assert!(!looks_like_request(br#"{"event_id":"e","request_id":"r"}"#));
    }
}
