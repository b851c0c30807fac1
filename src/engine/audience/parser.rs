//! Tokens to a typed tree, by recursive descent, one function per level of precedence.
//! The recursion is bounded by [`MAX_DEPTH`] levels of nesting, and every node by
//! [`MAX_DEPTH`] levels of tree below it.

use std::str::FromStr;

use super::expr::{
    Aggregate, AggregateKind, ArithOp, CmpOp, CompileError, EventFilter, Expr, Kind, Windows,
};
use super::lexer::{Kw, Pos, Tok, Token};
use super::value::{AllowedChannel, Type, Value};
use super::{FUNCTIONS, MAX_DEPTH};
use crate::model::{Channel, Purpose};

type Parsed = Result<Expr, CompileError>;

pub(super) struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    /// Levels of nesting being parsed now.
    nesting: usize,
    /// Inside the `where` of an aggregate: only event fields, literals and conditions.
    in_filter: bool,
    windows: Windows,
}

fn nested_too_deeply(pos: Pos) -> CompileError {
    pos.error(format!(
        "the expression is nested too deeply: at most {MAX_DEPTH} levels are allowed"
    ))
}

/// Makes a node, refusing a tree deeper than [`MAX_DEPTH`].
fn node(kind: Kind, pos: Pos, ty: Type) -> Parsed {
    let depth = kind.operand_depth() + 1;
    if depth > MAX_DEPTH {
        return Err(nested_too_deeply(pos));
    }
    Ok(Expr {
        kind,
        pos,
        ty,
        depth,
    })
}

/// The function name closest to `name`, if close enough to be a likely typo.
fn suggestion(name: &str) -> Option<&'static str> {
    FUNCTIONS
        .iter()
        .map(|f| (strsim::damerau_levenshtein(name, f), *f))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, f)| f)
}

impl<'a> Parser<'a> {
    /// `tokens` ends with [`Tok::End`], as [`lex`](super::lexer::lex) makes them.
    pub fn new(tokens: &'a [Token]) -> Self {
        Self {
            tokens,
            at: 0,
            nesting: 0,
            in_filter: false,
            windows: Windows::default(),
        }
    }

    pub fn into_windows(self) -> Vec<Aggregate> {
        self.windows.into_vec()
    }

    fn token(&self) -> Option<&'a Token> {
        self.tokens.get(self.at).or_else(|| self.tokens.last())
    }

    fn peek(&self) -> &'a Tok {
        self.token().map_or(&Tok::End, |t| &t.tok)
    }

    fn peek_second(&self) -> &'a Tok {
        self.tokens.get(self.at + 1).map_or(&Tok::End, |t| &t.tok)
    }

    fn pos(&self) -> Pos {
        self.token().map_or(Pos::START, |t| t.pos)
    }

    fn bump(&mut self) -> &'a Tok {
        let tok = self.peek();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        tok
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    /// An error at the current token: "expected {what}, found {token}".
    fn expected(&self, what: &str) -> CompileError {
        self.pos()
            .error(format!("expected {what}, found {}", self.peek()))
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), CompileError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    /// After the expression: nothing.
    pub fn expect_end(&self) -> Result<(), CompileError> {
        match self.peek() {
            Tok::End => Ok(()),
            Tok::RParen => Err(self.pos().error("unexpected `)`: no `(` is open here")),
            _ => Err(self.expected("an operator or the end of the expression")),
        }
    }

    fn enter(&mut self) -> Result<(), CompileError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(nested_too_deeply(self.pos()));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    /// expression = or
    pub fn parse_expression(&mut self) -> Parsed {
        self.enter()?;
        let e = self.parse_or()?;
        self.leave();
        Ok(e)
    }

    /// Refuses an operand of `op` whose known type is not boolean.
    fn need_bool(op: &str, operand: &Expr) -> Result<(), CompileError> {
        if operand.ty.is_known() && operand.ty != Type::Bool {
            return Err(operand.pos.error(format!(
                "`{op}` needs true or false, but this is {}",
                operand.ty.describe()
            )));
        }
        Ok(())
    }

    /// or = and { "or" and }
    fn parse_or(&mut self) -> Parsed {
        self.junction(Kw::Or)
    }

    /// and = not { "and" not }
    fn parse_and(&mut self) -> Parsed {
        self.junction(Kw::And)
    }

    /// `and` or `or` chains, flattened: `a and (b and c)` is `a and b and c`.
    fn junction(&mut self, kw: Kw) -> Parsed {
        let (name, operand): (&str, fn(&mut Self) -> Parsed) = match kw {
            Kw::Or => ("or", Self::parse_and),
            _ => ("and", Self::parse_not),
        };
        let first = operand(self)?;
        if self.peek() != &Tok::Kw(kw) {
            return Ok(first);
        }
        let pos = first.pos;
        let mut items = Vec::new();
        let push = |items: &mut Vec<Expr>, e: Expr| -> Result<(), CompileError> {
            Self::need_bool(name, &e)?;
            match e.kind {
                Kind::And(inner) if kw == Kw::And => items.extend(inner),
                Kind::Or(inner) if kw == Kw::Or => items.extend(inner),
                kind => items.push(Expr { kind, ..e }),
            }
            Ok(())
        };
        push(&mut items, first)?;
        while self.eat(&Tok::Kw(kw)) {
            let next = operand(self)?;
            push(&mut items, next)?;
        }
        let kind = match kw {
            Kw::Or => Kind::Or(items),
            _ => Kind::And(items),
        };
        node(kind, pos, Type::Bool)
    }

    /// not = "not" not | comparison
    fn parse_not(&mut self) -> Parsed {
        if self.peek() != &Tok::Kw(Kw::Not) {
            return self.parse_comparison();
        }
        let pos = self.pos();
        self.bump();
        self.enter()?;
        let inner = self.parse_not()?;
        self.leave();
        Self::need_bool("not", &inner)?;
        node(Kind::Not(Box::new(inner)), pos, Type::Bool)
    }

    /// comparison = sum [ ( "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" ) sum
    ///                  | "in" list ]
    fn parse_comparison(&mut self) -> Parsed {
        let left = self.parse_sum()?;
        let op_pos = self.pos();
        let op = match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Kw(Kw::In) => {
                self.bump();
                let e = self.parse_in(left, op_pos)?;
                return self.no_chain(e);
            }
            Tok::Kw(Kw::Contains) => {
                self.bump();
                let right = self.parse_sum()?;
                for side in [&left, &right] {
                    if side.ty.is_known() && side.ty != Type::Text {
                        return Err(side.pos.error(format!(
                            "`contains` looks for a string in a string, but this is {}",
                            side.ty.describe()
                        )));
                    }
                }
                let pos = left.pos;
                let e = node(
                    Kind::Contains(Box::new(left), Box::new(right)),
                    pos,
                    Type::Bool,
                )?;
                return self.no_chain(e);
            }
            _ => return Ok(left),
        };
        self.bump();
        let right = self.parse_sum()?;
        if left.ty.is_known() && right.ty.is_known() && left.ty != right.ty {
            return Err(op_pos.error(format!(
                "`{}` compares {} with {}: both sides must be of the same type",
                op.as_str(),
                left.ty.describe(),
                right.ty.describe()
            )));
        }
        if op.orders() && (left.ty == Type::Bool || right.ty == Type::Bool) {
            return Err(op_pos.error(format!(
                "`{}` cannot order booleans: compare them with `=` or `!=`",
                op.as_str()
            )));
        }
        let pos = left.pos;
        let e = node(
            Kind::Compare(op, Box::new(left), Box::new(right)),
            pos,
            Type::Bool,
        )?;
        self.no_chain(e)
    }

    /// Refuses `a < b < c`.
    fn no_chain(&self, e: Expr) -> Parsed {
        match self.peek() {
            Tok::Eq
            | Tok::Ne
            | Tok::Lt
            | Tok::Le
            | Tok::Gt
            | Tok::Ge
            | Tok::Kw(Kw::In)
            | Tok::Kw(Kw::Contains) => Err(self.pos().error(format!(
                "comparisons cannot be chained: join them with `and` (found a second {})",
                self.peek()
            ))),
            _ => Ok(e),
        }
    }

    /// list = "[" literal { "," literal } "]"
    fn parse_in(&mut self, left: Expr, in_pos: Pos) -> Parsed {
        self.expect(&Tok::LBracket, "`[` and a list of values after `in`")?;
        if self.peek() == &Tok::RBracket {
            return Err(self
                .pos()
                .error("an empty list: `in` needs at least one value"));
        }
        let mut list = Vec::new();
        let mut list_type = Type::Unknown;
        loop {
            let pos = self.pos();
            let (value, ty) = self.list_item()?;
            if list_type.is_known() && ty != list_type {
                return Err(pos.error(format!(
                    "a list mixes {} with {}: its values must be of one type",
                    list_type.describe(),
                    ty.describe()
                )));
            }
            list_type = ty;
            list.push(value);
            if self.eat(&Tok::RBracket) {
                break;
            }
            self.expect(&Tok::Comma, "`,` or `]` in the list")?;
        }
        if left.ty.is_known() && left.ty != list_type {
            return Err(in_pos.error(format!(
                "`in` looks for {} in a list of {}: both must be of the same type",
                left.ty.describe(),
                match list_type {
                    Type::Number => "numbers",
                    Type::Text => "strings",
                    _ => "booleans",
                }
            )));
        }
        let pos = left.pos;
        node(Kind::In(Box::new(left), list), pos, Type::Bool)
    }

    /// A value of a list: a number (perhaps negative), a string, `true` or `false`.
    fn list_item(&mut self) -> Result<(Value, Type), CompileError> {
        let item = match self.peek() {
            Tok::Number(n) => (Value::Number(*n), Type::Number),
            Tok::Minus => {
                if let Tok::Number(n) = self.peek_second() {
                    self.bump();
                    (Value::Number(-*n), Type::Number)
                } else {
                    return Err(self.list_item_error());
                }
            }
            Tok::Str(s) => (Value::Text(s.clone()), Type::Text),
            Tok::Kw(Kw::True) => (Value::Bool(true), Type::Bool),
            Tok::Kw(Kw::False) => (Value::Bool(false), Type::Bool),
            _ => return Err(self.list_item_error()),
        };
        self.bump();
        Ok(item)
    }

    fn list_item_error(&self) -> CompileError {
        self.expected("a literal value in the list (a number, a string, true or false)")
    }

    /// sum = product { ( "+" | "-" ) product }
    fn parse_sum(&mut self) -> Parsed {
        let mut left = self.parse_product()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => return Ok(left),
            };
            let op_pos = self.pos();
            self.bump();
            let right = self.parse_product()?;
            left = self.arith(op, op_pos, left, right)?;
        }
    }

    /// product = unary { ( "*" | "/" ) unary }
    fn parse_product(&mut self) -> Parsed {
        let mut left = self.parse_unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                _ => return Ok(left),
            };
            let op_pos = self.pos();
            self.bump();
            let right = self.parse_unary()?;
            left = self.arith(op, op_pos, left, right)?;
        }
    }

    fn arith(&self, op: ArithOp, op_pos: Pos, left: Expr, right: Expr) -> Parsed {
        if self.in_filter {
            return Err(op_pos.error(format!(
                "`{}`: arithmetic is not allowed in an event filter",
                op.as_str()
            )));
        }
        for side in [&left, &right] {
            Self::need_number(op.as_str(), side)?;
        }
        let pos = left.pos;
        node(
            Kind::Arith(op, Box::new(left), Box::new(right)),
            pos,
            Type::Number,
        )
    }

    fn need_number(op: &str, operand: &Expr) -> Result<(), CompileError> {
        if operand.ty.is_known() && operand.ty != Type::Number {
            return Err(operand.pos.error(format!(
                "`{op}` needs numbers, but this is {}",
                operand.ty.describe()
            )));
        }
        Ok(())
    }

    /// unary = "-" unary | primary
    fn parse_unary(&mut self) -> Parsed {
        if self.peek() != &Tok::Minus {
            return self.parse_primary();
        }
        let pos = self.pos();
        self.bump();
        if let Tok::Number(n) = self.peek() {
            self.bump();
            return node(Kind::Literal(Value::Number(-*n)), pos, Type::Number);
        }
        if self.in_filter {
            return Err(pos.error("`-`: arithmetic is not allowed in an event filter"));
        }
        self.enter()?;
        let inner = self.parse_unary()?;
        self.leave();
        Self::need_number("-", &inner)?;
        node(Kind::Neg(Box::new(inner)), pos, Type::Number)
    }

    /// primary = number | string | "true" | "false" | path | call | "(" expression ")"
    fn parse_primary(&mut self) -> Parsed {
        let pos = self.pos();
        match self.peek() {
            Tok::Number(n) => {
                self.bump();
                node(Kind::Literal(Value::Number(*n)), pos, Type::Number)
            }
            Tok::Str(s) => {
                self.bump();
                node(Kind::Literal(Value::Text(s.clone())), pos, Type::Text)
            }
            Tok::Kw(Kw::True) => {
                self.bump();
                node(Kind::Literal(Value::Bool(true)), pos, Type::Bool)
            }
            Tok::Kw(Kw::False) => {
                self.bump();
                node(Kind::Literal(Value::Bool(false)), pos, Type::Bool)
            }
            Tok::Duration(_) => Err(pos.error(format!(
                "{} is not a value: a duration is allowed only as the window of `count` or `sum`",
                self.peek()
            ))),
            Tok::LParen => {
                self.bump();
                let mut inner = self.parse_expression()?;
                if !self.eat(&Tok::RParen) {
                    return Err(self.expected(&format!("`)` to close the `(` at {pos}")));
                }
                inner.pos = pos;
                Ok(inner)
            }
            Tok::Name(name) if self.peek_second() == &Tok::LParen => {
                self.bump();
                self.parse_call(name, pos)
            }
            Tok::Name(_) => {
                let path = self.parse_path("a field name")?;
                if self.in_filter {
                    if path.len() > 1 {
                        return Err(pos.error(format!(
                            "`{}`: an event filter reads the event's own fields, by a bare name such as `category`",
                            path.join(".")
                        )));
                    }
                    let name = path.into_iter().next().unwrap_or_default();
                    return node(Kind::EventField(name), pos, Type::Unknown);
                }
                node(Kind::Field(path), pos, Type::Unknown)
            }
            _ => Err(self.expected(
                "a value (a number, a string, true, false, a field, a function call or `(`)",
            )),
        }
    }

    /// path = name { "." name }
    fn parse_path(&mut self, what: &str) -> Result<Vec<String>, CompileError> {
        let mut path = Vec::new();
        loop {
            match self.peek() {
                Tok::Name(name) => {
                    path.push(name.clone());
                    self.bump();
                }
                _ => return Err(self.expected(what)),
            }
            if !self.eat(&Tok::Dot) {
                return Ok(path);
            }
        }
    }

    /// A call of `name` at `pos`; the current token is its `(`.
    fn parse_call(&mut self, name: &str, pos: Pos) -> Parsed {
        if !FUNCTIONS.contains(&name) {
            let hint = match suggestion(name) {
                Some(f) => format!("did you mean `{f}`? "),
                None => String::new(),
            };
            return Err(pos.error(format!(
                "unknown function `{name}`: {hint}the functions are {}",
                FUNCTIONS.join(", ")
            )));
        }
        if self.in_filter {
            return Err(pos.error(format!(
                "`{name}` cannot be used in an event filter: a filter compares the event's own fields, with and, or, not, in and contains"
            )));
        }
        self.bump();
        self.enter()?;
        let e = match name {
            "count" => self.parse_aggregate(false, pos)?,
            "sum" => self.parse_aggregate(true, pos)?,
            "allowed" => self.parse_allowed(pos)?,
            _ => {
                let usage = format!("a field path, as in `{name}(person.city)`");
                let path = self.parse_path(&usage)?;
                self.expect(&Tok::RParen, &format!("`)`: `{name}` takes one field path"))?;
                if name == "exists" {
                    node(Kind::Exists(path), pos, Type::Bool)?
                } else {
                    node(Kind::DaysSince(path), pos, Type::Number)?
                }
            }
        };
        self.leave();
        Ok(e)
    }

    /// The arguments of `count` or `sum` and the closing `)`:
    /// event_type [ "where" expression ] [ "," name ] "," duration ")"
    fn parse_aggregate(&mut self, sum: bool, pos: Pos) -> Parsed {
        let (name, usage) = if sum {
            ("sum", "as in `sum(purchase, amount, 90d)`")
        } else {
            ("count", "as in `count(purchase, 30d)`")
        };
        let (event_type, filter) =
            self.parse_events(&format!("as the first argument of `{name}`"))?;
        let kind = if sum {
            self.expect(
                &Tok::Comma,
                &format!("`,` then the field to add up, {usage}"),
            )?;
            let field = match self.peek() {
                Tok::Name(f) if self.peek_second() != &Tok::Dot => f.clone(),
                _ => {
                    return Err(self.expected(&format!(
                        "the event field to add up, a bare name such as `amount`, {usage}"
                    )))
                }
            };
            self.bump();
            AggregateKind::Sum { field }
        } else {
            AggregateKind::Count
        };
        self.expect(&Tok::Comma, &format!("`,` then the window, {usage}"))?;
        let window_ms = match self.peek() {
            Tok::Duration(ms) => *ms,
            _ => {
                return Err(self.expected(&format!(
                    "the window, a duration such as `30d`, `24h`, `15m` or `90s`, {usage}"
                )))
            }
        };
        self.bump();
        self.expect(&Tok::RParen, &format!("`)` after the window, {usage}"))?;
        let index = self.windows.add(kind, event_type, filter, window_ms);
        node(Kind::Aggregate(index), pos, Type::Number)
    }

    /// Events of a type, perhaps filtered: ( name | "*" ) [ "where" expression ].
    /// `place` says where they were expected, for the error.
    pub fn parse_events(
        &mut self,
        place: &str,
    ) -> Result<(Option<String>, Option<EventFilter>), CompileError> {
        let event_type = match self.peek() {
            Tok::Star => None,
            Tok::Name(t) => Some(t.clone()),
            _ => {
                return Err(self.expected(&format!(
                    "an event type (a name such as `purchase`, or `*` for every type) {place}"
                )))
            }
        };
        self.bump();
        let filter = if self.eat(&Tok::Kw(Kw::Where)) {
            self.in_filter = true;
            let condition = self.parse_expression()?;
            self.in_filter = false;
            Self::need_bool("where", &condition)?;
            Some(EventFilter::new(condition))
        } else {
            None
        };
        Ok((event_type, filter))
    }

    /// A duration alone.
    pub fn parse_duration(&mut self, what: &str) -> Result<i64, CompileError> {
        match self.peek() {
            Tok::Duration(ms) => {
                let ms = *ms;
                self.bump();
                Ok(ms)
            }
            _ => Err(self.expected(&format!(
                "{what}, a duration such as `30d`, `24h`, `15m` or `90s`"
            ))),
        }
    }

    /// The arguments of `allowed` and the closing `)`: string "," string ")".
    fn parse_allowed(&mut self, pos: Pos) -> Parsed {
        const USAGE: &str = "as in `allowed(\"marketing\", \"email\")`";
        let purpose = match self.peek() {
            Tok::Str(s) => Purpose::from_str(s).map_err(|e| self.pos().error(e.to_string()))?,
            _ => {
                return Err(self.expected(&format!(
                    "a purpose in double quotes as the first argument of `allowed`, {USAGE}"
                )))
            }
        };
        self.bump();
        self.expect(&Tok::Comma, &format!("`,` then a channel, {USAGE}"))?;
        let channel = match self.peek() {
            Tok::Str(s) if s == "any" => AllowedChannel::Any,
            Tok::Str(s) => match Channel::from_str(s) {
                Ok(c) => AllowedChannel::One(c),
                Err(_) => {
                    let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
                    return Err(self.pos().error(format!(
                        "`{s}` is not a channel (one of {}, or any)",
                        names.join(", ")
                    )));
                }
            },
            _ => {
                return Err(self.expected(&format!(
                    "a channel in double quotes as the second argument of `allowed`, {USAGE}"
                )))
            }
        };
        self.bump();
        self.expect(
            &Tok::RParen,
            &format!("`)`: `allowed` takes a purpose and a channel, {USAGE}"),
        )?;
        node(Kind::Allowed(purpose, channel), pos, Type::Bool)
    }
}
