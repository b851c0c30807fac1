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

use apache_avro::schema::Name;
use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use serde_json::{Map, Number, Value as Json};

/// Why a document and a schema do not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    #[error("field `{path}`: {problem}")]
    Shape { path: String, problem: String },
    #[error("avro: {0}")]
    Avro(String),
    /// A number JSON cannot hold (a `NaN` or infinite double, a decimal wider than 128
    /// bits): the record's `bad_value`, like such a number in JSON text.
    #[error("field `{path}`: number out of range")]
    OutOfRange { path: String },
}

impl CodecError {
    /// The error of a value found inside `segment` (a field name, a map key, an index).
    fn within(self, segment: &str) -> Self {
        match self {
            CodecError::OutOfRange { path } if path.is_empty() => CodecError::OutOfRange {
                path: segment.into(),
            },
            CodecError::OutOfRange { path } if path.starts_with('[') => CodecError::OutOfRange {
                path: format!("{segment}{path}"),
            },
            CodecError::OutOfRange { path } => CodecError::OutOfRange {
                path: format!("{segment}.{path}"),
            },
            other => other,
        }
    }
}

fn out_of_range() -> CodecError {
    CodecError::OutOfRange {
        path: String::new(),
    }
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
///
/// Written straight from the document into bytes (Avro binary encoding) along the
/// schema's [`Plan`], without an intermediate `apache_avro` value: this is the hot path of
/// Avro output. The tests compare its bytes with those of `apache-avro` and decode them
/// with the Python Avro clients (interop).
pub fn encode(doc: &Json, plan: &Plan) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(256);
    Writer {
        plan,
        path: Vec::new(),
        out: &mut out,
    }
    .write(doc, plan.root)?;
    Ok(out)
}

/// A schema compiled for writing: named references resolved to node indices, the
/// fields of each record also listed by name, to be merged with the sorted keys of a JSON
/// object in one pass.
#[derive(Debug)]
pub struct Plan {
    nodes: Vec<Node>,
    root: usize,
}

#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
    TimestampMillis,
    Date,
    Decimal {
        precision: usize,
        scale: usize,
    },
    Array(usize),
    Map(usize),
    Record(RecordPlan),
    Union(Vec<usize>),
    /// A type the JSON forms never use (bytes, fixed, enum…): nothing fits it.
    Other,
}

#[derive(Debug, Default)]
struct RecordPlan {
    name: String,
    /// Name, node and default of each field, in the schema's order.
    fields: Vec<(String, usize, Option<Json>)>,
    /// Field positions sorted by field name.
    by_name: Vec<usize>,
}

impl Plan {
    /// Compiles `schema`, following references through `names`.
    pub fn new(schema: &Schema, names: &Names) -> Self {
        let mut plan = Plan {
            nodes: Vec::new(),
            root: 0,
        };
        let mut named = HashMap::new();
        plan.root = plan.compile(schema, names, &mut named);
        plan
    }

    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn compile(
        &mut self,
        schema: &Schema,
        names: &Names,
        named: &mut HashMap<Name, usize>,
    ) -> usize {
        let schema = deref(schema, names);
        match schema {
            Schema::Null => self.push(Node::Null),
            Schema::Boolean => self.push(Node::Boolean),
            Schema::Int => self.push(Node::Int),
            Schema::Long => self.push(Node::Long),
            Schema::Float => self.push(Node::Float),
            Schema::Double => self.push(Node::Double),
            Schema::String => self.push(Node::String),
            Schema::TimestampMillis => self.push(Node::TimestampMillis),
            Schema::Date => self.push(Node::Date),
            Schema::Decimal(d) => self.push(Node::Decimal {
                precision: d.precision,
                scale: d.scale,
            }),
            Schema::Array(a) => {
                let items = self.compile(&a.items, names, named);
                self.push(Node::Array(items))
            }
            Schema::Map(m) => {
                let values = self.compile(&m.types, names, named);
                self.push(Node::Map(values))
            }
            Schema::Union(u) => {
                let variants = u
                    .variants()
                    .iter()
                    .map(|v| self.compile(v, names, named))
                    .collect();
                self.push(Node::Union(variants))
            }
            Schema::Record(r) => {
                if let Some(&at) = named.get(&r.name) {
                    return at;
                }
                // Reserved before the fields, so that a recursive reference finds it.
                let at = self.push(Node::Record(RecordPlan::default()));
                named.insert(r.name.clone(), at);
                let fields: Vec<_> = r
                    .fields
                    .iter()
                    .map(|f| {
                        (
                            f.name.clone(),
                            self.compile(&f.schema, names, named),
                            f.default.clone(),
                        )
                    })
                    .collect();
                let mut by_name: Vec<usize> = (0..fields.len()).collect();
                by_name.sort_by(|&x, &y| fields[x].0.cmp(&fields[y].0));
                self.nodes[at] = Node::Record(RecordPlan {
                    name: r.name.name().to_string(),
                    fields,
                    by_name,
                });
                at
            }
            _ => self.push(Node::Other),
        }
    }

    fn describe(&self, node: usize) -> String {
        match &self.nodes[node] {
            Node::Record(r) => format!("record {}", r.name),
            Node::Decimal { precision, scale } => format!("decimal({precision}, {scale})"),
            Node::Null => "null".into(),
            Node::Boolean => "boolean".into(),
            Node::Int => "int".into(),
            Node::Long => "long".into(),
            Node::Float => "float".into(),
            Node::Double => "double".into(),
            Node::String => "string".into(),
            Node::TimestampMillis => "timestampmillis".into(),
            Node::Date => "date".into(),
            Node::Array(_) => "array".into(),
            Node::Map(_) => "map".into(),
            Node::Union(_) => "union".into(),
            Node::Other => "unsupported type".into(),
        }
    }

    /// Whether a JSON value can go into a (non-union) node, without converting it.
    fn fits(&self, json: &Json, node: usize) -> bool {
        match (&self.nodes[node], json) {
            (Node::Null, Json::Null) | (Node::Boolean, Json::Bool(_)) => true,
            (Node::Int | Node::Long | Node::TimestampMillis, Json::Number(n)) => n.is_i64(),
            (Node::Float | Node::Double | Node::Decimal { .. }, Json::Number(_)) => true,
            (
                Node::String | Node::TimestampMillis | Node::Date | Node::Decimal { .. },
                Json::String(_),
            ) => true,
            (Node::Array(_), Json::Array(_)) => true,
            (Node::Map(_) | Node::Record(_), Json::Object(_)) => true,
            _ => false,
        }
    }
}

/// One step of the path to a value, rendered only in an error.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

struct Writer<'a, 'o> {
    plan: &'a Plan,
    path: Vec<Step<'a>>,
    out: &'o mut Vec<u8>,
}

impl<'a> Writer<'a, '_> {
    fn error(&self, problem: impl Into<String>) -> CodecError {
        let mut path = String::new();
        for step in &self.path {
            match step {
                Step::Key(k) => push_key(&mut path, k),
                Step::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        shape(&path, problem)
    }

    fn long(&mut self, n: i64) {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            self.out.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.out.push(z as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.long(b.len() as i64);
        self.out.extend_from_slice(b);
    }

    /// Writes a JSON value as the Avro datum of `node`.
    fn write(&mut self, json: &'a Json, node: usize) -> Result<(), CodecError> {
        let plan = self.plan;
        match (&plan.nodes[node], json) {
            (Node::Null, Json::Null) => {}
            (Node::Boolean, Json::Bool(b)) => self.out.push(u8::from(*b)),
            (Node::Int, Json::Number(n)) => {
                let i = n
                    .as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| self.error("expected a 32-bit integer"))?;
                self.long(i.into())
            }
            (Node::Long, Json::Number(n)) => {
                let i = n
                    .as_i64()
                    .ok_or_else(|| self.error("expected an integer"))?;
                self.long(i)
            }
            (Node::Float, Json::Number(n)) => self
                .out
                .extend_from_slice(&(n.as_f64().unwrap_or_default() as f32).to_le_bytes()),
            (Node::Double, Json::Number(n)) => self
                .out
                .extend_from_slice(&n.as_f64().unwrap_or_default().to_le_bytes()),
            (Node::String, Json::String(s)) => self.bytes(s.as_bytes()),
            (Node::TimestampMillis, Json::String(s)) => {
                let ms = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| self.error(format!("not an rfc 3339 time: {e}")))?
                    .timestamp_millis();
                self.long(ms)
            }
            (Node::TimestampMillis, Json::Number(n)) => {
                let ms = n
                    .as_i64()
                    .ok_or_else(|| self.error("expected ms since the epoch"))?;
                self.long(ms)
            }
            (Node::Date, Json::String(s)) => {
                let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|e| self.error(format!("not a YYYY-MM-DD date: {e}")))?;
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                let days = i32::try_from((day - epoch).num_days())
                    .map_err(|_| self.error("date out of range"))?;
                self.long(days.into())
            }
            (&Node::Decimal { precision, scale }, Json::Number(_) | Json::String(_)) => {
                let unscaled = decimal(json, precision, scale).map_err(|p| self.error(p))?;
                self.bytes(&minimal_be(unscaled))
            }
            (&Node::Array(items), Json::Array(values)) => {
                if !values.is_empty() {
                    self.long(values.len() as i64);
                    for (i, v) in values.iter().enumerate() {
                        self.path.push(Step::Index(i));
                        self.write(v, items)?;
                        self.path.pop();
                    }
                }
                self.out.push(0);
            }
            (&Node::Map(values), Json::Object(o)) => {
                if !o.is_empty() {
                    self.long(o.len() as i64);
                    for (k, v) in o {
                        self.path.push(Step::Key(k));
                        self.bytes(k.as_bytes());
                        self.write(v, values)?;
                        self.path.pop();
                    }
                }
                self.out.push(0);
            }
            (Node::Record(r), Json::Object(o)) => self.record(r, o)?,
            (Node::Union(variants), _) => {
                let Some(found) = variants.iter().position(|&v| plan.fits(json, v)) else {
                    let names: Vec<String> = variants.iter().map(|&v| plan.describe(v)).collect();
                    return Err(self.error(format!(
                        "{} fits none of {}",
                        kind(json),
                        names.join(", ")
                    )));
                };
                self.long(found as i64);
                self.write(json, variants[found])?;
            }
            (_, json) => {
                return Err(self.error(format!(
                    "{} does not fit a {}",
                    kind(json),
                    plan.describe(node)
                )))
            }
        }
        Ok(())
    }

    /// A record: the object's sorted keys merged with the fields sorted by name, then
    /// the values written in the schema's order.
    fn record(&mut self, r: &'a RecordPlan, o: &'a Map<String, Json>) -> Result<(), CodecError> {
        let mut values: Vec<Option<&'a Json>> = vec![None; r.fields.len()];
        let mut by_name = r.by_name.iter().peekable();
        for (k, v) in o {
            loop {
                match by_name.peek().map(|&&i| (i, r.fields[i].0.as_str().cmp(k))) {
                    Some((_, std::cmp::Ordering::Less)) => {
                        by_name.next();
                    }
                    Some((i, std::cmp::Ordering::Equal)) => {
                        values[i] = Some(v);
                        by_name.next();
                        break;
                    }
                    _ => {
                        self.path.push(Step::Key(k));
                        return Err(self.error(format!("not a field of {}", r.name)));
                    }
                }
            }
        }
        for ((name, node, default), value) in r.fields.iter().zip(values) {
            self.path.push(Step::Key(name));
            match value.or(default.as_ref()) {
                Some(v) => self.write(v, *node)?,
                None => {
                    let mark = self.out.len();
                    if self.write(&Json::Null, *node).is_err() {
                        self.out.truncate(mark);
                        return Err(self.error("missing"));
                    }
                }
            }
            self.path.pop();
        }
        Ok(())
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// The unscaled value of a decimal, or the problem.
fn decimal(json: &Json, precision: usize, scale: usize) -> Result<i128, String> {
    let x = match json {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
    .ok_or("expected a decimal number")?;
    let unscaled = (x * 10f64.powi(scale as i32)).round();
    if unscaled.abs() >= 10f64.powi(precision as i32) {
        return Err(format!("{x} does not fit decimal({precision}, {scale})"));
    }
    Ok(unscaled as i128)
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

/// Decodes the Avro body of a datum written with the reader's own schema (the usual
/// case: the producer uses unicus's schema), straight into JSON along the schema's
/// [`Plan`], with the rules of [`to_json`]. `None` when the bytes are not such a datum
/// (short, bad UTF-8, bytes left over, a type the plan does not read): the caller then
/// decodes with `apache-avro`, which says what is wrong.
pub fn decode_direct(body: &[u8], plan: &Plan, nulls: Nulls) -> Option<Json> {
    let mut reader = Reader {
        plan,
        bytes: body,
        nulls,
    };
    let doc = reader.read(plan.root)?;
    reader.bytes.is_empty().then_some(doc)
}

struct Reader<'a, 'b> {
    plan: &'a Plan,
    bytes: &'b [u8],
    nulls: Nulls,
}

impl Reader<'_, '_> {
    fn long(&mut self) -> Option<i64> {
        let mut z = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            z |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Some((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let n = usize::try_from(self.long()?).ok()?;
        std::str::from_utf8(self.take(n)?).ok().map(str::to_string)
    }

    /// The item count of the next block of an array or map (0: the end).
    fn block(&mut self) -> Option<usize> {
        let n = self.long()?;
        if n < 0 {
            self.long()?; // the block's size in bytes
        }
        usize::try_from(n.unsigned_abs()).ok()
    }

    fn read(&mut self, node: usize) -> Option<Json> {
        let plan = self.plan;
        Some(match &plan.nodes[node] {
            Node::Null => Json::Null,
            Node::Boolean => Json::Bool(*self.take(1)?.first()? != 0),
            Node::Int | Node::Long => Json::from(self.long()?),
            Node::Float => float(f64::from(f32::from_le_bytes(
                self.take(4)?.try_into().ok()?,
            )))?,
            Node::Double => float(f64::from_le_bytes(self.take(8)?.try_into().ok()?))?,
            Node::String => Json::String(self.string()?),
            Node::TimestampMillis => Json::String(timestamp_text(self.long()?)?),
            Node::Date => Json::String(date_text(self.long()?)?),
            &Node::Decimal { scale, .. } => {
                let n = usize::try_from(self.long()?).ok()?;
                let unscaled = unscaled_decimal(self.take(n)?)?;
                float(unscaled as f64 / 10f64.powi(scale as i32))?
            }
            &Node::Array(items) => {
                let mut out = Vec::new();
                loop {
                    let n = self.block()?;
                    if n == 0 {
                        break Json::Array(out);
                    }
                    for _ in 0..n {
                        out.push(self.read(items)?);
                    }
                }
            }
            &Node::Map(values) => {
                let mut out = Map::new();
                loop {
                    let n = self.block()?;
                    if n == 0 {
                        break Json::Object(out);
                    }
                    for _ in 0..n {
                        let k = self.string()?;
                        out.insert(k, self.read(values)?);
                    }
                }
            }
            Node::Record(r) => {
                let mut out = Map::new();
                for (name, field, _) in &r.fields {
                    let v = self.read(*field)?;
                    if self.nulls == Nulls::Keep || !v.is_null() {
                        out.insert(name.clone(), v);
                    }
                }
                Json::Object(out)
            }
            Node::Union(variants) => {
                let i = usize::try_from(self.long()?).ok()?;
                self.read(*variants.get(i)?)?
            }
            Node::Other => return None,
        })
    }
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
        (Avro::Float(f), _) => float(f64::from(f)).ok_or_else(out_of_range)?,
        (Avro::Double(f), _) => float(f).ok_or_else(out_of_range)?,
        (Avro::String(s) | Avro::Enum(_, s), _) => Json::String(s),
        (Avro::TimestampMillis(ms), _) => Json::String(
            timestamp_text(ms)
                .ok_or_else(|| CodecError::Avro(format!("timestamp {ms} ms out of range")))?,
        ),
        (Avro::TimestampMicros(us), _) => Json::String(
            timestamp_text(us / 1000)
                .ok_or_else(|| CodecError::Avro(format!("timestamp {us} µs out of range")))?,
        ),
        (Avro::Date(days), _) => Json::String(
            date_text(days.into())
                .ok_or_else(|| CodecError::Avro(format!("date {days} out of range")))?,
        ),
        (Avro::Decimal(d), Schema::Decimal(ds)) => {
            let bytes: Vec<u8> = Vec::try_from(&d).map_err(|e| CodecError::Avro(e.to_string()))?;
            let unscaled = unscaled_decimal(&bytes).ok_or_else(out_of_range)?;
            float(unscaled as f64 / 10f64.powi(ds.scale as i32)).ok_or_else(out_of_range)?
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
                .enumerate()
                .map(|(i, v)| {
                    to_json(v, &a.items, names, nulls).map_err(|e| e.within(&format!("[{i}]")))
                })
                .collect::<Result<_, _>>()?,
        ),
        (Avro::Map(m), Schema::Map(ms)) => {
            let mut out = Map::new();
            for (k, v) in m {
                let v = to_json(v, &ms.types, names, nulls).map_err(|e| e.within(&k))?;
                out.insert(k, v);
            }
            Json::Object(out)
        }
        (Avro::Record(fields), Schema::Record(r)) => {
            let mut out = Map::new();
            for ((name, v), f) in fields.into_iter().zip(&r.fields) {
                let v = to_json(v, &f.schema, names, nulls).map_err(|e| e.within(&name))?;
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

/// `YYYY-MM-DD` of an Avro `date` (days since 1970-01-01); `None` out of chrono's range.
/// A `timestamp-millis` as RFC 3339 text; `None` outside the years 0000–9999 that the
/// text form can hold (never silently another time).
fn timestamp_text(ms: i64) -> Option<String> {
    use chrono::Datelike;
    let t = chrono::DateTime::from_timestamp_millis(ms)?;
    (0..=9999)
        .contains(&t.year())
        .then(|| crate::model::output::rfc3339(ms))
}

fn date_text(days: i64) -> Option<String> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let day = epoch.checked_add_signed(chrono::TimeDelta::try_days(days)?)?;
    Some(day.format("%Y-%m-%d").to_string())
}

/// The value of two's-complement big-endian bytes (`None`: wider than 128 bits).
fn unscaled_decimal(bytes: &[u8]) -> Option<i128> {
    if bytes.len() > 16 {
        return None;
    }
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xFF
    } else {
        0
    };
    let mut wide = [fill; 16];
    wide[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(wide))
}

/// A finite double as JSON (`None` for `NaN` and the infinities, which JSON cannot hold).
fn float(f: f64) -> Option<Json> {
    Number::from_f64(f).map(Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::avro::schemas::{catalogue, TopicSchema};
    use apache_avro::Decimal;
    use serde_json::json;

    /// [`super::encode`] along a topic schema's plan.
    fn encode(doc: &Json, ts: &TopicSchema) -> Result<Vec<u8>, CodecError> {
        ts.encode(doc)
    }

    /// [`super::decode_direct`] along a topic schema's plan.
    fn decode_direct(body: &[u8], ts: &TopicSchema, nulls: Nulls) -> Option<Json> {
        ts.decode_direct(body, nulls)
    }

    /// The bytes `apache-avro` writes for `value` under `schema`.
    fn reference_bytes(schema: &Schema, value: Avro) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    #[test]
    fn a_timestamp_that_rfc_3339_cannot_hold_is_refused_not_rewritten() {
        let text = r#"{"type": "record", "name": "T", "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}"#;
        let schema = Schema::parse_str(text).unwrap();
        let ts = TopicSchema::parse(crate::kafka::avro::schemas::SchemaFile {
            dir: "output",
            name: "t",
            text,
        })
        .unwrap();
        for ms in [i64::MAX, i64::MIN, 253_402_300_800_000, -62_167_219_200_001] {
            let bytes = reference_bytes(
                &schema,
                Avro::Record(vec![("at".into(), Avro::TimestampMillis(ms))]),
            );
            assert_eq!(decode_direct(&bytes, &ts, Nulls::Keep), None, "{ms}");
            let value = Avro::Record(vec![("at".into(), Avro::TimestampMillis(ms))]);
            assert!(
                to_json(value, &schema, &Names::new(), Nulls::Keep).is_err(),
                "{ms}"
            );
        }
        let bytes = reference_bytes(
            &schema,
            Avro::Record(vec![("at".into(), Avro::TimestampMillis(0))]),
        );
        assert_eq!(
            decode_direct(&bytes, &ts, Nulls::Keep),
            Some(json!({"at": "1970-01-01T00:00:00Z"}))
        );
    }

    #[test]
    fn the_direct_writer_writes_the_bytes_apache_avro_writes() {
        let text = r#"{"type": "record", "name": "T", "fields": [
            {"name": "small", "type": "long"}, {"name": "negative", "type": "long"},
            {"name": "big", "type": "long"}, {"name": "count", "type": "int"},
            {"name": "maybe", "type": ["null", "string"]},
            {"name": "absent", "type": ["null", "string"], "default": null},
            {"name": "items", "type": {"type": "array", "items": "int"}},
            {"name": "none", "type": {"type": "array", "items": "string"}},
            {"name": "scores", "type": {"type": "map", "values": "double"}},
            {"name": "money", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
            {"name": "debt", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "born", "type": {"type": "int", "logicalType": "date"}},
            {"name": "flag", "type": "boolean"}, {"name": "ratio", "type": "float"},
            {"name": "nested", "type": ["null", {"type": "record", "name": "N", "fields": [
                {"name": "s", "type": "string"}]}]}
        ]}"#;
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(text).unwrap()));
        let ts = TopicSchema::parse(crate::kafka::avro::schemas::SchemaFile {
            dir: "output",
            name: "t",
            text,
        })
        .unwrap();
        let doc = json!({"small": 1, "negative": -65, "big": 1_i64 << 40, "count": 300,
            "maybe": "é", "items": [1, -2, 3], "none": [], "scores": {"jw": 0.5},
            "money": 129.9, "debt": -1.28, "at": "2026-11-20T13:03:00.250+01:00",
            "born": "1985-04-12", "flag": true, "ratio": 0.25, "nested": {"s": "x"}});
        let value = Avro::Record(vec![
            ("small".into(), Avro::Long(1)),
            ("negative".into(), Avro::Long(-65)),
            ("big".into(), Avro::Long(1 << 40)),
            ("count".into(), Avro::Int(300)),
            (
                "maybe".into(),
                Avro::Union(1, Box::new(Avro::String("é".into()))),
            ),
            ("absent".into(), Avro::Union(0, Box::new(Avro::Null))),
            (
                "items".into(),
                Avro::Array(vec![Avro::Int(1), Avro::Int(-2), Avro::Int(3)]),
            ),
            ("none".into(), Avro::Array(vec![])),
            (
                "scores".into(),
                Avro::Map([("jw".to_string(), Avro::Double(0.5))].into()),
            ),
            (
                "money".into(),
                Avro::Decimal(Decimal::from(minimal_be(12_990))),
            ),
            (
                "debt".into(),
                Avro::Decimal(Decimal::from(minimal_be(-128))),
            ),
            ("at".into(), Avro::TimestampMillis(1_795_176_180_250)),
            ("born".into(), Avro::Date(5_580)),
            ("flag".into(), Avro::Boolean(true)),
            ("ratio".into(), Avro::Float(0.25)),
            (
                "nested".into(),
                Avro::Union(
                    1,
                    Box::new(Avro::Record(vec![("s".into(), Avro::String("x".into()))])),
                ),
            ),
        ]);
        let bytes = encode(&doc, &ts).unwrap();
        assert_eq!(bytes, reference_bytes(schema, value));
        let mut expected = doc.clone();
        expected["at"] = json!("2026-11-20T12:03:00.250Z");
        expected["debt"] = json!(-1.28);
        assert_eq!(
            decode_direct(&bytes, &ts, Nulls::Drop),
            Some(expected.clone())
        );
        assert_eq!(
            round_trip(&doc, &ts),
            expected,
            "apache-avro reads the same"
        );
        assert_eq!(
            decode_direct(&bytes[..bytes.len() - 1], &ts, Nulls::Drop),
            None
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_direct(&longer, &ts, Nulls::Drop), None);
        assert_eq!(date_text(5_580).as_deref(), Some("1985-04-12"));
        assert_eq!(
            date_text(i64::from(i32::MAX)),
            None,
            "out of range, no panic"
        );
    }

    #[test]
    fn a_map_of_union_values_and_an_optional_array_round_trip_exactly() {
        let text = r#"{"type": "record", "name": "G", "fields": [
            {"name": "id", "type": "string"},
            {"name": "audiences", "type": ["null", {"type": "array", "items": "string"}], "default": null},
            {"name": "traits", "type": ["null", {"type": "map", "values": ["null", "boolean", "double", "string"]}], "default": null}
        ]}"#;
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(text).unwrap()));
        let ts = TopicSchema::parse(crate::kafka::avro::schemas::SchemaFile {
            dir: "output",
            name: "g",
            text,
        })
        .unwrap();
        let doc = json!({"id": "cus_1", "audiences": ["big_spenders", "escalade_fans"],
            "traits": {"avg_basket": 64.95, "is_vip": true, "home_city": "Lyon",
                       "last_order": "2026-11-20T13:03:00Z", "unknown": null, "none": false}});
        let union = |i: u32, v: Avro| Avro::Union(i, Box::new(v));
        let value = Avro::Record(vec![
            ("id".into(), Avro::String("cus_1".into())),
            (
                "audiences".into(),
                union(
                    1,
                    Avro::Array(vec![
                        Avro::String("big_spenders".into()),
                        Avro::String("escalade_fans".into()),
                    ]),
                ),
            ),
            (
                "traits".into(),
                union(
                    1,
                    Avro::Map(
                        [
                            ("avg_basket".to_string(), union(2, Avro::Double(64.95))),
                            (
                                "home_city".to_string(),
                                union(3, Avro::String("Lyon".into())),
                            ),
                            ("is_vip".to_string(), union(1, Avro::Boolean(true))),
                            (
                                "last_order".to_string(),
                                union(3, Avro::String("2026-11-20T13:03:00Z".into())),
                            ),
                            ("none".to_string(), union(1, Avro::Boolean(false))),
                            ("unknown".to_string(), union(0, Avro::Null)),
                        ]
                        .into(),
                    ),
                ),
            ),
        ]);
        let bytes = encode(&doc, &ts).unwrap();
        // A map's entries in the order the JSON object keeps them (sorted keys).
        let reference = reference_bytes(schema, value.clone());
        assert_eq!(bytes.len(), reference.len());
        let via_apache = |body: &[u8]| {
            let reader = apache_avro::reader::datum::GenericDatumReader::builder(ts.schema)
                .resolved_writer_schemata(ts.resolved.clone())
                .build()
                .unwrap();
            reader.read_value(&mut &body[..]).unwrap()
        };
        assert_eq!(via_apache(&bytes), via_apache(&reference));
        for nulls in [Nulls::Drop, Nulls::Keep] {
            assert_eq!(
                decode_direct(&bytes, &ts, nulls),
                Some(doc.clone()),
                "a null trait stays"
            );
        }
        assert_eq!(round_trip(&doc, &ts), doc, "apache-avro reads the same");
        // An integer trait is a double: the same number.
        let integer = json!({"id": "cus_1", "traits": {"orders": 3}});
        assert_eq!(
            decode_direct(&encode(&integer, &ts).unwrap(), &ts, Nulls::Drop),
            Some(json!({"id": "cus_1", "traits": {"orders": 3.0}}))
        );
        // Without the fields: absent and null are the same datum, and come back absent.
        let bare = json!({"id": "cus_1"});
        let bytes = encode(&bare, &ts).unwrap();
        assert_eq!(
            bytes,
            encode(
                &json!({"id": "cus_1", "audiences": null, "traits": null}),
                &ts
            )
            .unwrap()
        );
        assert_eq!(decode_direct(&bytes, &ts, Nulls::Drop), Some(bare.clone()));
        assert_eq!(round_trip(&bare, &ts), bare);
        assert_eq!(
            decode_direct(&bytes, &ts, Nulls::Keep),
            Some(json!({"id": "cus_1", "audiences": null, "traits": null}))
        );
        // Empty collections are not null.
        let empty = json!({"id": "cus_1", "audiences": [], "traits": {}});
        assert_eq!(round_trip(&empty, &ts), empty);
        assert_eq!(
            decode_direct(&encode(&empty, &ts).unwrap(), &ts, Nulls::Drop),
            Some(empty)
        );
        // Nothing else fits a trait.
        assert!(encode(&json!({"id": "c", "traits": {"x": [1]}}), &ts)
            .unwrap_err()
            .to_string()
            .starts_with("field `traits.x`: an array fits none of"));
    }

    /// The `enrichment` of a golden record as the engine serialises it, under the
    /// `enrichment` field of the compiled-in `profiles.merged` schema (in a record of its
    /// own): every field set, and a sparse one (empty lists, nulls, a channel without
    /// engagement), come back exactly, the direct writer writing what `apache-avro`
    /// writes; `null` and absent are the same datum.
    #[test]
    fn a_golden_record_enrichment_round_trips_exactly() {
        use crate::engine::profile::enrichment::{Contact, Enriched, HomeStore, Stated};
        use crate::model::output::{Time, Topic};
        use crate::model::{Channel, Purpose};

        let golden: Json =
            serde_json::from_str(catalogue().output(Topic::ProfilesMerged).unwrap().text())
                .unwrap();
        let field = golden["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "enrichment")
            .expect("profiles.merged has enrichment")
            .clone();
        assert_eq!(field["default"], Json::Null);
        let text: &'static str = Box::leak(
            json!({"type": "record", "name": "G", "namespace": "unicus.test", "fields": [field]})
                .to_string()
                .into_boxed_str(),
        );
        let ts = TopicSchema::parse(crate::kafka::avro::schemas::SchemaFile {
            dir: "output",
            name: "g",
            text,
        })
        .unwrap();

        let t = |s: &str| {
            Time(
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap()
                    .timestamp_millis(),
            )
        };
        let full = Enriched::example();
        let sparse = Enriched {
            categories: Vec::new(),
            brands: Vec::new(),
            top_category: None,
            top_brand: None,
            home_store: Some(Stated {
                value: HomeStore {
                    store: "pos-1".into(),
                    name: None,
                    city: None,
                    region: None,
                    events: 1,
                },
                source: "store_events",
                at: t("2026-10-10T15:00:00Z"),
            }),
            home_region: None,
            price_band: None,
            contact: [(
                Purpose::Marketing,
                Contact {
                    value: Channel::Sms,
                    source: "consent",
                    at: None,
                    hour: None,
                    score: 0.0,
                },
            )]
            .into(),
            next_purchase: None,
        };
        let apache = |body: &[u8]| {
            apache_avro::reader::datum::GenericDatumReader::builder(ts.schema)
                .resolved_writer_schemata(ts.resolved.clone())
                .build()
                .unwrap()
                .read_value(&mut &body[..])
                .unwrap()
        };
        for (enriched, has_nulls) in [(full, false), (sparse, true)] {
            let doc = json!({ "enrichment": serde_json::to_value(&enriched).unwrap() });
            let bytes = encode(&doc, &ts).unwrap();
            let value = apache(&bytes);
            // The same datum as apache-avro writes it (a map's entries in another order).
            let reference = reference_bytes(ts.schema, value.clone());
            assert_eq!(reference.len(), bytes.len());
            assert_eq!(apache(&reference), value);
            assert_eq!(
                to_json(value, ts.schema, &ts.names, Nulls::Keep).unwrap(),
                doc,
                "apache-avro reads it back"
            );
            assert_eq!(decode_direct(&bytes, &ts, Nulls::Keep), Some(doc.clone()));
            // Read as the runtime reads Avro, only null fields are left out.
            let dropped = decode_direct(&bytes, &ts, Nulls::Drop).unwrap();
            assert_eq!(dropped == doc, !has_nulls);
        }

        // Off (absent) and denied (null): the same datum, read back as null or absent.
        let bytes = encode(&json!({}), &ts).unwrap();
        assert_eq!(bytes, encode(&json!({"enrichment": null}), &ts).unwrap());
        assert_eq!(
            decode_direct(&bytes, &ts, Nulls::Keep),
            Some(json!({"enrichment": null}))
        );
        assert_eq!(decode_direct(&bytes, &ts, Nulls::Drop), Some(json!({})));
        assert_eq!(round_trip(&json!({}), &ts), json!({}));
        // A shape the serde form never has is refused with its path.
        let wrong = json!({"enrichment": {"categories": [], "brands": [], "contact": {"marketing": {"value": "email", "source": "consent", "score": "high"}}}});
        assert!(encode(&wrong, &ts)
            .unwrap_err()
            .to_string()
            .starts_with("field `enrichment.contact.marketing.score`"));
    }

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
            assert_eq!(unscaled_decimal(&bytes), Some(n));
        }
    }

    #[test]
    fn numbers_json_cannot_hold_are_out_of_range_with_their_path() {
        let text = r#"{"type": "record", "name": "R", "fields": [
            {"name": "scores", "type": {"type": "map", "values": "double"}},
            {"name": "money", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 2}]}
        ]}"#;
        let schema = Schema::parse_str(text).unwrap();
        let names = HashMap::new();
        let record = |score: f64, money: Avro| {
            Avro::Record(vec![
                (
                    "scores".into(),
                    Avro::Map([("jw".to_string(), Avro::Double(score))].into()),
                ),
                ("money".into(), Avro::Union(1, Box::new(money))),
            ])
        };
        let cents = |bytes: Vec<u8>| Avro::Decimal(Decimal::from(bytes));
        let read = |v| to_json(v, &schema, &names, Nulls::Drop);
        assert!(read(record(0.5, cents(vec![1]))).is_ok());
        for (value, path) in [
            (record(f64::NAN, cents(vec![1])), "scores.jw"),
            (record(f64::INFINITY, cents(vec![1])), "scores.jw"),
            (record(0.5, cents(vec![1; 17])), "money"),
        ] {
            assert_eq!(
                read(value),
                Err(CodecError::OutOfRange { path: path.into() })
            );
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
