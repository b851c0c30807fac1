//! The compiled form of an expression: its tree, the windowed aggregates it reads, its
//! canonical text and its evaluation.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

use super::lexer::{self, duration_text, Pos, DAY_MS};
use super::parser::Parser;
use super::value::{write_string, AllowedChannel, Context, EventFields, Type, Value};
use crate::model::Purpose;

/// Why a source did not compile, and where (line and column from 1, the column counted
/// in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct CompileError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// Compiles an expression of any type: a computed trait.
pub fn compile_value(source: &str) -> Result<Compiled, CompileError> {
    let tokens = lexer::lex(source)?;
    let mut parser = Parser::new(&tokens);
    let root = parser.parse_expression()?;
    parser.expect_end()?;
    Ok(Compiled {
        root,
        windows: parser.into_windows(),
    })
}

/// The same as [`compile_value`].
pub fn compile(source: &str) -> Result<Compiled, CompileError> {
    compile_value(source)
}

/// Compiles the condition of an audience: an expression that is true or false. An
/// expression of another known type (a number, a string) is refused; one whose type is
/// known only when evaluated (a bare field) is accepted, and only `true` counts as true.
pub fn compile_condition(source: &str) -> Result<Compiled, CompileError> {
    let compiled = compile_value(source)?;
    let ty = compiled.root.ty;
    if ty.is_known() && ty != Type::Bool {
        return Err(compiled.root.pos.error(format!(
            "an audience condition must be true or false, but this expression gives {}",
            ty.describe()
        )));
    }
    Ok(compiled)
}

/// Compiles events of a type, perhaps filtered, as the first argument of `count`
/// takes them: `product_view where category = "escalade"`, `purchase`, `*`.
pub fn compile_events(source: &str) -> Result<EventPattern, CompileError> {
    let tokens = lexer::lex(source)?;
    let mut parser = Parser::new(&tokens);
    let (event_type, filter) = parser.parse_events("as the events to wait for")?;
    parser.expect_end()?;
    Ok(EventPattern { event_type, filter })
}

/// Compiles a duration alone (`24h`, `7d`): the same units and bounds as windows.
pub fn compile_duration(source: &str) -> Result<i64, CompileError> {
    let tokens = lexer::lex(source)?;
    let mut parser = Parser::new(&tokens);
    let ms = parser.parse_duration("a duration")?;
    parser.expect_end()?;
    Ok(ms)
}

/// Events of one type (or of every type), perhaps filtered: what a journey waits for.
#[derive(Debug, Clone)]
pub struct EventPattern {
    event_type: Option<String>,
    filter: Option<EventFilter>,
}

impl EventPattern {
    /// The filter after `where`, if any.
    pub fn filter(&self) -> Option<&EventFilter> {
        self.filter.as_ref()
    }

    /// Whether an event of `event_type` with these fields is one of these events.
    pub fn matches(&self, event_type: &str, event: &dyn EventFields) -> bool {
        self.event_type.as_deref().is_none_or(|t| t == event_type)
            && self.filter.as_ref().is_none_or(|f| f.matches(event))
    }
}

/// A compiled expression: evaluate it with [`Compiled::eval`] against a customer.
#[derive(Debug, Clone)]
pub struct Compiled {
    root: Expr,
    windows: Vec<Aggregate>,
}

impl Compiled {
    /// The distinct windowed aggregates the expression reads, in the order they first
    /// appear, each once. The engine keeps these per customer, and only these.
    pub fn windows(&self) -> &[Aggregate] {
        &self.windows
    }

    /// The type of the result as far as known without a customer.
    pub fn result_type(&self) -> Type {
        self.root.ty
    }

    /// The expression in canonical form: the same for sources that differ only in
    /// spacing, comments, redundant parentheses or the unit of a window.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        write_expr(&mut out, &self.root, 0, &self.windows);
        out
    }

    /// The value of the expression for the customer of `ctx`, at `ctx.now_ms()`.
    pub fn eval(&self, ctx: &dyn Context) -> Value {
        let now = ctx.now_ms();
        let env = Env::Record {
            ctx,
            now,
            days_now: ctx.days_now_ms().unwrap_or(now),
            windows: &self.windows,
        };
        eval(&self.root, &env)
    }

    /// Whether the customer of `ctx` is in the audience: the value is `true`.
    pub fn eval_condition(&self, ctx: &dyn Context) -> bool {
        self.eval(ctx).is_true()
    }

    /// The paths of the record the expression calls `days_since` on: with a time there,
    /// its value may change from one day to the next with nothing else changing.
    pub fn days_since_paths(&self) -> Vec<Vec<String>> {
        let mut paths = Vec::new();
        visit(&self.root, &mut |e| {
            if let Kind::DaysSince(path) = &e.kind {
                paths.push(path.clone());
            }
        });
        paths
    }

    /// The first names of the record's paths the expression reads (`orders` for
    /// `orders.count`), each once: what of the record an evaluation needs.
    pub fn record_fields(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        visit(&self.root, &mut |e| {
            if let Kind::Field(path) | Kind::Exists(path) | Kind::DaysSince(path) = &e.kind {
                if let Some(first) = path.first().filter(|f| !names.contains(f)) {
                    names.push(first.clone());
                }
            }
        });
        names
    }

    /// The first path of the record that `refuse` refuses, as a compile error at its
    /// place with `why`; `Ok` when it refuses none.
    pub fn refuse_paths(
        &self,
        refuse: impl Fn(&[String]) -> bool,
        why: &str,
    ) -> Result<(), CompileError> {
        let mut refused = None;
        visit(&self.root, &mut |e| {
            if let Kind::Field(path) | Kind::Exists(path) | Kind::DaysSince(path) = &e.kind {
                if refused.is_none() && refuse(path) {
                    refused = Some(e.pos.error(format!("`{}`: {why}", path.join("."))));
                }
            }
        });
        refused.map_or(Ok(()), Err)
    }
}

/// How a value moves when one quantity grows: a set of directions. [`Moves::NONE`]: it
/// does not depend on it; [`Moves::UP`]: it can only grow with it (for a condition,
/// false can turn true, never the reverse); [`Moves::DOWN`]: it can only shrink;
/// [`Moves::BOTH`]: either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Moves(u8);

impl Moves {
    pub const NONE: Moves = Moves(0);
    pub const UP: Moves = Moves(1);
    pub const DOWN: Moves = Moves(2);
    pub const BOTH: Moves = Moves(3);

    /// Either of the two.
    pub fn or(self, other: Moves) -> Moves {
        Moves(self.0 | other.0)
    }

    /// When the quantity shrinks instead: up is down.
    pub fn flip(self) -> Moves {
        Moves(((self.0 & 1) << 1) | ((self.0 & 2) >> 1))
    }

    /// Whether it depends on the quantity at all.
    pub fn any(self) -> bool {
        self.0 != 0
    }

    /// Whether it can move in `direction` ([`Moves::UP`] or [`Moves::DOWN`]).
    pub fn can(self, direction: Moves) -> bool {
        self.0 & direction.0 != 0
    }

    /// [`Moves::BOTH`] if it depends on the quantity at all: what an operation that is
    /// not monotone (`=`, `in`, `*`) makes of its operands' moves.
    pub fn either(self) -> Moves {
        if self.any() {
            Moves::BOTH
        } else {
            Moves::NONE
        }
    }
}

/// A leaf of an expression whose value may move with time: what [`Compiled::moves`]
/// asks about.
#[derive(Debug, Clone, Copy)]
pub enum Leaf<'a> {
    /// A windowed aggregate, by key.
    Aggregate(&'a AggregateKey),
    /// `days_since(path)`.
    DaysSince(&'a [String]),
    /// A path of the record.
    Field(&'a [String]),
    /// `exists(path)`.
    Exists(&'a [String]),
}

impl Compiled {
    /// How the expression's value moves when one quantity grows, given how each of its
    /// leaves moves with it (`leaf`): the monotonicity of the operators composed
    /// (`and`, `or`, `+`, `<`... keep or turn the direction; `=`, `!=`, `in`, `contains`,
    /// `*` and `/` give either). A conservative answer: [`Moves::NONE`] only when the
    /// value cannot change with it, [`Moves::UP`] only when it cannot shrink.
    pub fn moves(&self, leaf: &dyn Fn(Leaf<'_>) -> Moves) -> Moves {
        moves(&self.root, &self.windows, leaf)
    }
}

/// [`Compiled::moves`] of `e`. Recursion is bounded by the depth of the tree.
fn moves(e: &Expr, windows: &[Aggregate], leaf: &dyn Fn(Leaf<'_>) -> Moves) -> Moves {
    let of = |e: &Expr| moves(e, windows, leaf);
    match &e.kind {
        Kind::Literal(_) | Kind::EventField(_) | Kind::Allowed(..) => Moves::NONE,
        Kind::Field(path) => leaf(Leaf::Field(path)),
        Kind::Exists(path) => leaf(Leaf::Exists(path)),
        Kind::DaysSince(path) => leaf(Leaf::DaysSince(path)),
        Kind::Aggregate(i) => windows
            .get(*i)
            .map_or(Moves::NONE, |a| leaf(Leaf::Aggregate(&a.key))),
        Kind::Not(inner) | Kind::Neg(inner) => of(inner).flip(),
        Kind::And(items) | Kind::Or(items) => {
            items.iter().fold(Moves::NONE, |m, item| m.or(of(item)))
        }
        Kind::Compare(op, a, b) => match op {
            CmpOp::Gt | CmpOp::Ge => of(a).or(of(b).flip()),
            CmpOp::Lt | CmpOp::Le => of(a).flip().or(of(b)),
            CmpOp::Eq | CmpOp::Ne => of(a).or(of(b)).either(),
        },
        Kind::In(a, _) => of(a).either(),
        Kind::Contains(a, b) => of(a).or(of(b)).either(),
        Kind::Arith(op, a, b) => match op {
            ArithOp::Add => of(a).or(of(b)),
            ArithOp::Sub => of(a).or(of(b).flip()),
            ArithOp::Mul | ArithOp::Div => of(a).or(of(b)).either(),
        },
    }
}

/// Calls `f` on every node of `e` (a walk of bounded depth: see [`Expr`]).
fn visit(e: &Expr, f: &mut impl FnMut(&Expr)) {
    f(e);
    for operand in e.kind.operands() {
        visit(operand, f);
    }
}

/// The stable identity of a windowed aggregate: its canonical text, such as
/// `count(product_view where category = "escalade", 30d)`. Two definitions that use the
/// same aggregate, however written, give equal keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateKey(String);

impl AggregateKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AggregateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an aggregate computes over the events of its window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    /// How many there are (`count`).
    Count,
    /// The sum of a numeric field (`sum`); events where it is not a number add nothing.
    Sum { field: String },
}

/// One `count(...)` or `sum(...)`: the customer's events of a type, perhaps filtered,
/// over a window ending now.
#[derive(Debug, Clone)]
pub struct Aggregate {
    kind: AggregateKind,
    events: EventPattern,
    window_ms: i64,
    key: AggregateKey,
}

impl PartialEq for Aggregate {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Aggregate {}

impl Aggregate {
    fn new(
        kind: AggregateKind,
        event_type: Option<String>,
        filter: Option<EventFilter>,
        window_ms: i64,
    ) -> Self {
        let mut key = String::new();
        key.push_str(match kind {
            AggregateKind::Count => "count(",
            AggregateKind::Sum { .. } => "sum(",
        });
        key.push_str(event_type.as_deref().unwrap_or("*"));
        if let Some(filter) = &filter {
            key.push_str(" where ");
            key.push_str(filter.text());
        }
        if let AggregateKind::Sum { field } = &kind {
            key.push_str(", ");
            key.push_str(field);
        }
        key.push_str(", ");
        key.push_str(&duration_text(window_ms));
        key.push(')');
        Self {
            kind,
            events: EventPattern { event_type, filter },
            window_ms,
            key: AggregateKey(key),
        }
    }

    pub fn key(&self) -> &AggregateKey {
        &self.key
    }

    pub fn kind(&self) -> &AggregateKind {
        &self.kind
    }

    /// The event type counted; `None` for every type (`*`).
    pub fn event_type(&self) -> Option<&str> {
        self.events.event_type.as_deref()
    }

    pub fn filter(&self) -> Option<&EventFilter> {
        self.events.filter.as_ref()
    }

    /// The length of the window, in milliseconds (positive, at most
    /// [`MAX_WINDOW_MS`](super::MAX_WINDOW_MS)).
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Whether an event of `event_type` with these fields counts in this aggregate.
    pub fn matches(&self, event_type: &str, event: &dyn EventFields) -> bool {
        self.events.matches(event_type, event)
    }

    /// What the event adds to the aggregate: 1 for a count, the field for a sum; `None`
    /// when it does not count or its field is not a number.
    pub fn contribution(&self, event_type: &str, event: &dyn EventFields) -> Option<f64> {
        if !self.matches(event_type, event) {
            return None;
        }
        match &self.kind {
            AggregateKind::Count => Some(1.0),
            AggregateKind::Sum { field } => match event.event_field(field) {
                Value::Number(n) if n.is_finite() => Some(n),
                _ => None,
            },
        }
    }
}

/// The `where` condition of an aggregate, over the fields of one event.
#[derive(Debug, Clone)]
pub struct EventFilter {
    expr: Expr,
    text: String,
}

impl EventFilter {
    pub(super) fn new(expr: Expr) -> Self {
        let mut text = String::new();
        write_expr(&mut text, &expr, 0, &[]);
        Self { expr, text }
    }

    /// Whether the event passes the condition (is `true`: a field that is absent or of
    /// another type makes its comparison false).
    pub fn matches(&self, event: &dyn EventFields) -> bool {
        eval(&self.expr, &Env::Event(event)).is_true()
    }

    /// The condition in canonical form.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The event fields the condition reads, each once.
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        visit(&self.expr, &mut |e| {
            if let Kind::EventField(name) = &e.kind {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        });
        names
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    pub fn orders(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }

    fn precedence(self) -> u8 {
        match self {
            ArithOp::Add | ArithOp::Sub => 5,
            ArithOp::Mul | ArithOp::Div => 6,
        }
    }
}

/// A node of the tree: what it is, where its source starts, its static type, and the
/// depth of the tree below it (bounded by [`MAX_DEPTH`](super::MAX_DEPTH), so that every
/// walk of the tree is of bounded recursion).
#[derive(Debug, Clone)]
pub(super) struct Expr {
    pub kind: Kind,
    pub pos: Pos,
    pub ty: Type,
    pub depth: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Literal(Value),
    /// A path in the customer's record.
    Field(Vec<String>),
    /// A field of the event, in an event filter.
    EventField(String),
    Not(Box<Expr>),
    /// Two or more operands, none of them an `And`.
    And(Vec<Expr>),
    /// Two or more operands, none of them an `Or`.
    Or(Vec<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// A non-empty list of literals.
    In(Box<Expr>, Vec<Value>),
    Contains(Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    /// An index into the windows of the expression.
    Aggregate(usize),
    Allowed(Purpose, AllowedChannel),
    Exists(Vec<String>),
    DaysSince(Vec<String>),
}

impl Kind {
    /// The depth of the deepest operand.
    pub fn operand_depth(&self) -> usize {
        self.operands().iter().map(|e| e.depth).max().unwrap_or(0)
    }

    /// The node's operands, in order.
    fn operands(&self) -> Vec<&Expr> {
        match self {
            Kind::Literal(_)
            | Kind::Field(_)
            | Kind::EventField(_)
            | Kind::Aggregate(_)
            | Kind::Allowed(..)
            | Kind::Exists(_)
            | Kind::DaysSince(_) => Vec::new(),
            Kind::Not(e) | Kind::Neg(e) | Kind::In(e, _) => vec![e],
            Kind::And(es) | Kind::Or(es) => es.iter().collect(),
            Kind::Compare(_, a, b) | Kind::Contains(a, b) | Kind::Arith(_, a, b) => vec![a, b],
        }
    }

    /// How tightly the node binds when written: an operand binding less tightly than its
    /// place needs is parenthesised.
    fn precedence(&self) -> u8 {
        match self {
            Kind::Or(_) => 1,
            Kind::And(_) => 2,
            Kind::Not(_) => 3,
            Kind::Compare(..) | Kind::In(..) | Kind::Contains(..) => 4,
            Kind::Arith(op, ..) => op.precedence(),
            Kind::Neg(_) => 7,
            Kind::Literal(Value::Number(n)) if n.is_sign_negative() => 7,
            _ => 8,
        }
    }
}

/// Writes `e` in canonical form, parenthesised if it binds less tightly than `needs`.
fn write_expr(out: &mut String, e: &Expr, needs: u8, windows: &[Aggregate]) {
    let own = e.kind.precedence();
    let parens = own < needs;
    if parens {
        out.push('(');
    }
    match &e.kind {
        Kind::Literal(v) => write_value(out, v),
        Kind::Field(path) => out.push_str(&path.join(".")),
        Kind::EventField(name) => out.push_str(name),
        Kind::Not(inner) => {
            out.push_str("not ");
            write_expr(out, inner, own, windows);
        }
        Kind::And(items) | Kind::Or(items) => {
            let sep = if matches!(e.kind, Kind::And(_)) {
                " and "
            } else {
                " or "
            };
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(sep);
                }
                write_expr(out, item, own + 1, windows);
            }
        }
        Kind::Compare(op, a, b) => {
            write_expr(out, a, own + 1, windows);
            let _ = write!(out, " {} ", op.as_str());
            write_expr(out, b, own + 1, windows);
        }
        Kind::In(a, list) => {
            write_expr(out, a, own + 1, windows);
            out.push_str(" in [");
            for (n, v) in list.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write_value(out, v);
            }
            out.push(']');
        }
        Kind::Contains(a, b) => {
            write_expr(out, a, own + 1, windows);
            out.push_str(" contains ");
            write_expr(out, b, own + 1, windows);
        }
        Kind::Arith(op, a, b) => {
            write_expr(out, a, own, windows);
            let _ = write!(out, " {} ", op.as_str());
            write_expr(out, b, own + 1, windows);
        }
        Kind::Neg(inner) => {
            out.push('-');
            write_expr(out, inner, own, windows);
        }
        Kind::Aggregate(i) => match windows.get(*i) {
            Some(a) => out.push_str(a.key.as_str()),
            None => out.push_str("null"),
        },
        Kind::Allowed(purpose, channel) => {
            let _ = write!(
                out,
                "allowed(\"{}\", \"{}\")",
                purpose.as_str(),
                channel.as_str()
            );
        }
        Kind::Exists(path) => {
            let _ = write!(out, "exists({})", path.join("."));
        }
        Kind::DaysSince(path) => {
            let _ = write!(out, "days_since({})", path.join("."));
        }
    }
    if parens {
        out.push(')');
    }
}

fn write_value(out: &mut String, v: &Value) {
    let _ = match v {
        Value::Text(s) => write_string(out, s),
        other => write!(out, "{other}"),
    };
}

/// Where an evaluation reads its fields.
enum Env<'a> {
    Record {
        ctx: &'a dyn Context,
        now: i64,
        /// What `days_since` counts to.
        days_now: i64,
        windows: &'a [Aggregate],
    },
    Event(&'a dyn EventFields),
}

fn path_value(env: &Env<'_>, path: &[String]) -> Value {
    match env {
        Env::Record { ctx, .. } => {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            ctx.field(&segments)
        }
        Env::Event(_) => Value::Null,
    }
}

/// The value of `e`. Recursion is bounded by the depth of the tree.
fn eval(e: &Expr, env: &Env<'_>) -> Value {
    match &e.kind {
        Kind::Literal(v) => v.clone(),
        Kind::Field(path) => path_value(env, path),
        Kind::EventField(name) => match env {
            Env::Event(event) => event.event_field(name),
            Env::Record { .. } => Value::Null,
        },
        Kind::Not(inner) => Value::Bool(!eval(inner, env).is_true()),
        Kind::And(items) => Value::Bool(items.iter().all(|i| eval(i, env).is_true())),
        Kind::Or(items) => Value::Bool(items.iter().any(|i| eval(i, env).is_true())),
        Kind::Compare(op, a, b) => Value::Bool(compare(*op, &eval(a, env), &eval(b, env))),
        Kind::In(a, list) => {
            let v = eval(a, env);
            Value::Bool(list.iter().any(|item| compare(CmpOp::Eq, &v, item)))
        }
        Kind::Contains(a, b) => Value::Bool(match (eval(a, env), eval(b, env)) {
            (Value::Text(a), Value::Text(b)) => a.contains(b.as_str()),
            _ => false,
        }),
        Kind::Arith(op, a, b) => match (eval(a, env), eval(b, env)) {
            (Value::Number(a), Value::Number(b)) => match op {
                ArithOp::Add => Value::number(a + b),
                ArithOp::Sub => Value::number(a - b),
                ArithOp::Mul => Value::number(a * b),
                ArithOp::Div if b == 0.0 => Value::Null,
                ArithOp::Div => Value::number(a / b),
            },
            _ => Value::Null,
        },
        Kind::Neg(inner) => match eval(inner, env) {
            Value::Number(n) => Value::number(-n),
            _ => Value::Null,
        },
        Kind::Aggregate(i) => match env {
            Env::Record {
                ctx, now, windows, ..
            } => match windows.get(*i) {
                Some(a) => Value::number(ctx.aggregate(a, *now)),
                None => Value::Null,
            },
            Env::Event(_) => Value::Null,
        },
        Kind::Allowed(purpose, channel) => match env {
            Env::Record { ctx, .. } => Value::Bool(ctx.allowed(*purpose, *channel)),
            Env::Event(_) => Value::Bool(false),
        },
        Kind::Exists(path) => Value::Bool(!path_value(env, path).is_null()),
        Kind::DaysSince(path) => match (path_value(env, path), env) {
            (Value::Time(t), Env::Record { days_now, .. }) => {
                Value::Number(days_now.saturating_sub(t).div_euclid(DAY_MS) as f64)
            }
            _ => Value::Null,
        },
    }
}

/// `a op b`: false with null, with values of different types, and for an order between
/// booleans.
fn compare(op: CmpOp, a: &Value, b: &Value) -> bool {
    if op.orders() && (matches!(a, Value::Bool(_)) || matches!(b, Value::Bool(_))) {
        return false;
    }
    let Some(order) = a.compare(b) else {
        return false;
    };
    match op {
        CmpOp::Eq => order == Ordering::Equal,
        CmpOp::Ne => order != Ordering::Equal,
        CmpOp::Lt => order == Ordering::Less,
        CmpOp::Le => order != Ordering::Greater,
        CmpOp::Gt => order == Ordering::Greater,
        CmpOp::Ge => order != Ordering::Less,
    }
}

/// The aggregates of one expression, each once.
#[derive(Debug, Default)]
pub(super) struct Windows(Vec<Aggregate>);

impl Windows {
    /// The index of the aggregate, added if new.
    pub fn add(
        &mut self,
        kind: AggregateKind,
        event_type: Option<String>,
        filter: Option<EventFilter>,
        window_ms: i64,
    ) -> usize {
        let aggregate = Aggregate::new(kind, event_type, filter, window_ms);
        match self.0.iter().position(|a| a.key == aggregate.key) {
            Some(i) => i,
            None => {
                self.0.push(aggregate);
                self.0.len() - 1
            }
        }
    }

    pub fn into_vec(self) -> Vec<Aggregate> {
        self.0
    }
}
