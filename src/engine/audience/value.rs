//! What an expression computes, and what it reads: the values, their static types, and
//! the two traits the engine implements ([`Context`] for a customer, [`EventFields`] for
//! one event).

use std::cmp::Ordering;
use std::fmt;

use super::expr::Aggregate;
use crate::model::{Channel, Purpose};

/// A value an expression computes or reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Absent: a field the record does not hold, a division by zero, an undefined result.
    Null,
    Bool(bool),
    /// Always finite when the language computes it (a non-finite result is `Null`).
    Number(f64),
    Text(String),
    /// A point in time, in milliseconds since the Unix epoch.
    Time(i64),
}

impl Value {
    /// Whether the value counts as true where a condition is expected: only `true` does;
    /// `false`, `null` and every other value count as false.
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A number, `Null` when it is not finite.
    pub(super) fn number(n: f64) -> Value {
        if n.is_finite() {
            Value::Number(n)
        } else {
            Value::Null
        }
    }

    /// How two values of the same kind compare; `None` for null, for values of different
    /// kinds, and for numbers that are not comparable (the evaluation uses the order of
    /// booleans for `=` and `!=` only).
    pub(super) fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => a.partial_cmp(b),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Time(a), Value::Time(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// The value as the language writes it (a time, which has no literal, as `time <ms>`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(s) => write_string(f, s),
            Value::Time(t) => write!(f, "time {t}"),
        }
    }
}

/// A string literal as the language writes it: in double quotes, `"` and `\` escaped.
pub(super) fn write_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.write_char('\\')?;
        }
        out.write_char(c)?;
    }
    out.write_char('"')
}

/// The type of an expression as far as the compiler knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Bool,
    Number,
    Text,
    /// Known only when evaluated: a field of the record or of an event.
    Unknown,
}

impl Type {
    /// The type as messages name it, with its article.
    pub fn describe(self) -> &'static str {
        match self {
            Type::Bool => "a boolean (true or false)",
            Type::Number => "a number",
            Type::Text => "a string",
            Type::Unknown => "a field value",
        }
    }

    pub(super) fn is_known(self) -> bool {
        self != Type::Unknown
    }
}

/// The channel an `allowed(purpose, channel)` asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllowedChannel {
    /// That channel.
    One(Channel),
    /// At least one channel (`"any"`).
    Any,
}

impl AllowedChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            AllowedChannel::One(c) => c.as_str(),
            AllowedChannel::Any => "any",
        }
    }
}

/// What an expression reads of one customer. The engine implements it over the golden
/// record, the consents and its windowed counts; the evaluation only calls it.
pub trait Context {
    /// The value at `path` in the customer's record (`["rfm", "frequency"]`), `Null` when
    /// absent. Times are [`Value::Time`].
    fn field(&self, path: &[&str]) -> Value;

    /// The value of one of [`Compiled::windows`](super::Compiled::windows) (matched by
    /// [`Aggregate::key`]) over the window ending at `now_ms`: the number of events, or
    /// the sum of the field.
    fn aggregate(&self, aggregate: &Aggregate, now_ms: i64) -> f64;

    /// Whether the customer may be contacted for `purpose` on `channel` now (on at least
    /// one channel for [`AllowedChannel::Any`]).
    fn allowed(&self, purpose: Purpose, channel: AllowedChannel) -> bool;

    /// The time of the evaluation, in milliseconds since the Unix epoch. Read once per
    /// evaluation.
    fn now_ms(&self) -> i64;

    /// The time `days_since` counts to when not the time of the evaluation: the engine
    /// asks when the days alone would change a value (everything else as now).
    fn days_now_ms(&self) -> Option<i64> {
        None
    }
}

/// The fields of one event, as an event filter (`count(... where ...)`) reads them.
pub trait EventFields {
    /// The event's field `name` (`category`, `amount`), `Null` when absent.
    fn event_field(&self, name: &str) -> Value;
}
