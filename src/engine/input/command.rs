//! Operator commands on the identity graph, from `identity.commands` (or the `split`
//! and `merge` subcommands):
//!
//! ```json
//! {"command_id": "ops-17", "kind": "split", "customer_id": "cus_…",
//!  "identifier": {"type": "email", "value": "famille.dupont@gmail.com"},
//!  "reason": "two people behind one family address"}
//! {"command_id": "ops-18", "kind": "merge", "customer_ids": ["cus_…", "cus_…"]}
//! ```
//!
//! A split moves the source profiles carrying the identifier to a new customer and
//! remembers that the two sides must not be linked again by the same evidence; a merge
//! joins two customers and lifts such a decision between them. `requested_at` (RFC 3339)
//! is optional; a command id is done once. A command that cannot be parsed, or that
//! cannot be carried out (unknown customer, nothing to move), is a dead letter with its
//! reason.

use serde_json::Value;

use crate::engine::config::EngineConfig;
use crate::engine::input::touchpoint::{
    json_object, optional_time, record_id, required_text as text, Rejection,
};
use crate::store::{keys, Store, StoreError, Table};

/// Commands done, by `command_id`.
const COMMANDS_DONE: Table<String, ()> = Table::new(keys::commands::COMMANDS_DONE);

/// What the operator asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// Move the source profiles of `customer_id` that carry `(type, raw value)` to a new
    /// customer.
    Split {
        customer_id: String,
        identifier: (String, String),
    },
    /// Join two customers (the older survives).
    Merge { customer_ids: [String; 2] },
}

/// A parsed `identity.commands` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub command_id: String,
    pub kind: CommandKind,
    pub reason: Option<String>,
    /// When the operator decided (ms), if the command says.
    pub requested_at: Option<i64>,
}

/// Parses an `identity.commands` record.
pub fn parse_command(bytes: &[u8], config: &EngineConfig) -> Result<Command, Rejection> {
    let o = json_object(bytes, config)?;
    parse_command_document(&o, config)
}

/// Validates a command already decoded into a document (from Avro).
pub fn parse_command_document(
    o: &serde_json::Map<String, Value>,
    config: &EngineConfig,
) -> Result<Command, Rejection> {
    let command_id = record_id(o, "command_id", config)?;
    let kind = match text(o, "kind")? {
        "split" => {
            let customer_id = text(o, "customer_id")?.to_string();
            let Some(Value::Object(id)) = o.get("identifier") else {
                return Err(match o.get("identifier") {
                    None | Some(Value::Null) => Rejection::Missing("identifier"),
                    Some(_) => Rejection::WrongType {
                        field: "identifier".into(),
                        expected: "an object {type, value}",
                    },
                });
            };
            let kind = text(id, "type")?;
            if !config.identifiers.contains_key(kind) {
                return Err(Rejection::BadValue {
                    field: "identifier.type".into(),
                    detail: format!("`{kind}` is not a configured identifier type"),
                });
            }
            CommandKind::Split {
                customer_id,
                identifier: (kind.to_string(), text(id, "value")?.to_string()),
            }
        }
        "merge" => {
            let ids: Vec<&str> = match o.get("customer_ids") {
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                None | Some(Value::Null) => return Err(Rejection::Missing("customer_ids")),
                Some(_) => {
                    return Err(Rejection::WrongType {
                        field: "customer_ids".into(),
                        expected: "an array of two customer ids",
                    })
                }
            };
            match ids.as_slice() {
                [a, b] if a != b && !a.trim().is_empty() && !b.trim().is_empty() => {
                    CommandKind::Merge {
                        customer_ids: [a.trim().to_string(), b.trim().to_string()],
                    }
                }
                _ => {
                    return Err(Rejection::BadValue {
                        field: "customer_ids".into(),
                        detail: "two different customer ids are needed".into(),
                    })
                }
            }
        }
        other => {
            return Err(Rejection::BadValue {
                field: "kind".into(),
                detail: format!("`{other}` is not one of split, merge"),
            })
        }
    };
    let reason = match o.get("reason") {
        Some(Value::String(r)) if !r.trim().is_empty() => Some(r.trim().to_string()),
        _ => None,
    };
    let requested_at = optional_time(o, "requested_at")?;
    Ok(Command {
        command_id: command_id.to_string(),
        kind,
        reason,
        requested_at,
    })
}

/// Whether a line of a replay file is an operator command rather than a touchpoint.
pub fn looks_like_command(bytes: &[u8]) -> bool {
    super::InputKind::of_line(bytes) == Some(super::InputKind::Command)
}

/// Whether the command `command_id` was done (a command is done once).
pub(crate) fn command_done(store: &Store, command_id: &str) -> Result<bool, StoreError> {
    COMMANDS_DONE.contains(store, command_id)
}

/// Marks the command `command_id` done.
pub(crate) fn mark_command_done(store: &mut Store, command_id: &str) -> Result<(), StoreError> {
    COMMANDS_DONE.put(store, command_id, &())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Command, Rejection> {
        parse_command(s.as_bytes(), &EngineConfig::default())
    }

    #[test]
    fn split_and_merge_commands_parse() {
        let c = parse(r#"{"command_id":"c1","kind":"split","customer_id":"cus_A","identifier":{"type":"email","value":"a@b.fr"},"reason":"two people"}"#).unwrap();
        assert_eq!(
            c.kind,
            CommandKind::Split {
                customer_id: "cus_A".into(),
                identifier: ("email".into(), "a@b.fr".into())
            }
        );
        assert_eq!(c.reason.as_deref(), Some("two people"));
        let c = parse(r#"{"command_id":"c2","kind":"merge","customer_ids":["cus_A","cus_B"],"requested_at":"2026-11-20T10:00:00Z"}"#).unwrap();
        assert!(matches!(c.kind, CommandKind::Merge { .. }));
        assert!(c.requested_at.is_some());
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        let reason = |s: &str| parse(s).unwrap_err().to_string();
        assert!(reason(r#"{"kind":"split"}"#).contains("command_id"));
        assert!(reason(r#"{"command_id":"c","kind":"explode"}"#).contains("split, merge"));
        assert!(
            reason(r#"{"command_id":"c","kind":"split","customer_id":"x","identifier":{"type":"shoe_size","value":"42"}}"#)
                .contains("shoe_size")
        );
        assert!(
            reason(r#"{"command_id":"c","kind":"merge","customer_ids":["a","a"]}"#)
                .contains("two different")
        );
        assert!(reason("not json").contains("json"));
        assert!(looks_like_command(br#"{"command_id":"c","kind":"merge"}"#));
        assert!(!looks_like_command(br#"{"event_id":"e","command_id":"c"}"#));
    }
}
