//! Source text to tokens, each with its line and column (1-based, in characters).
//! Every limit on the size of the input is enforced here or in the parser, as a
//! [`CompileError`], before anything grows with it.

use std::fmt;

use super::expr::CompileError;
use super::{
    MAX_DIGITS, MAX_NAME_CHARS, MAX_NUMBER, MAX_SOURCE_BYTES, MAX_STRING_CHARS, MAX_TOKENS,
    MAX_WINDOW_MS,
};

/// A place in the source: line and column, both from 1, the column counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    pub fn error(self, message: impl Into<String>) -> CompileError {
        CompileError {
            line: self.line,
            column: self.column,
            message: message.into(),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kw {
    And,
    Or,
    Not,
    In,
    Contains,
    Where,
    True,
    False,
}

impl Kw {
    fn from_name(name: &str) -> Option<Kw> {
        Some(match name {
            "and" => Kw::And,
            "or" => Kw::Or,
            "not" => Kw::Not,
            "in" => Kw::In,
            "contains" => Kw::Contains,
            "where" => Kw::Where,
            "true" => Kw::True,
            "false" => Kw::False,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Kw::And => "and",
            Kw::Or => "or",
            Kw::Not => "not",
            Kw::In => "in",
            Kw::Contains => "contains",
            Kw::Where => "where",
            Kw::True => "true",
            Kw::False => "false",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Number(f64),
    /// A duration, in milliseconds (positive, at most [`MAX_WINDOW_MS`]).
    Duration(i64),
    Str(String),
    Name(String),
    Kw(Kw),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Star,
    Plus,
    Minus,
    Slash,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    End,
}

impl fmt::Display for Tok {
    /// The token as a message names it: "`(`", "the name `x`", "the end of the expression".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let punct = match self {
            Tok::Number(n) => return write!(f, "the number `{n}`"),
            Tok::Duration(ms) => return write!(f, "the duration `{}`", duration_text(*ms)),
            Tok::Str(s) => {
                let short: String = s.chars().take(20).collect();
                let more = if short.len() < s.len() { "..." } else { "" };
                f.write_str("the string ")?;
                super::value::write_string(f, &short)?;
                return f.write_str(more);
            }
            Tok::Name(n) => return write!(f, "the name `{n}`"),
            Tok::Kw(k) => return write!(f, "`{}`", k.as_str()),
            Tok::End => return f.write_str("the end of the expression"),
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Star => "*",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Slash => "/",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
        };
        write!(f, "`{punct}`")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
pub(super) const DAY_MS: i64 = 24 * HOUR_MS;

/// A duration as the language writes it, in its largest whole unit (`720h` is `30d`).
pub(super) fn duration_text(ms: i64) -> String {
    for (unit, size) in [("d", DAY_MS), ("h", HOUR_MS), ("m", MINUTE_MS)] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{}s", ms / SECOND_MS)
}

/// How a character is named in a message: itself in backquotes, or its code point when
/// it is not printable.
pub(super) fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

/// The tokens of `source`, ending with [`Tok::End`].
pub(super) fn lex(source: &str) -> Result<Vec<Token>, CompileError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(too_long(source));
    }
    Lexer {
        chars: source.chars().collect(),
        at: 0,
        pos: Pos::START,
        tokens: Vec::new(),
    }
    .run()
}

/// The error for a source over [`MAX_SOURCE_BYTES`], at the first character past it.
fn too_long(source: &str) -> CompileError {
    let mut pos = Pos::START;
    for (at, c) in source.char_indices() {
        if at >= MAX_SOURCE_BYTES {
            break;
        }
        pos = next_pos(pos, c);
    }
    pos.error(format!(
        "the expression is {} bytes long; at most {MAX_SOURCE_BYTES} are allowed",
        source.len()
    ))
}

fn next_pos(pos: Pos, c: char) -> Pos {
    if c == '\n' {
        Pos {
            line: pos.line.saturating_add(1),
            column: 1,
        }
    } else {
        Pos {
            line: pos.line,
            column: pos.column.saturating_add(1),
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    pos: Pos,
    tokens: Vec<Token>,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at.saturating_add(ahead)).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        self.pos = next_pos(self.pos, c);
        Some(c)
    }

    /// Consumes characters while `keep` holds; returns them.
    fn take_while(&mut self, keep: fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek().filter(|c| keep(*c)) {
            out.push(c);
            self.bump();
        }
        out
    }

    fn run(mut self) -> Result<Vec<Token>, CompileError> {
        loop {
            self.skip_blanks();
            let pos = self.pos;
            let Some(c) = self.peek() else {
                self.tokens.push(Token { tok: Tok::End, pos });
                return Ok(self.tokens);
            };
            if self.tokens.len() >= MAX_TOKENS {
                return Err(pos.error(format!(
                    "the expression is too long: at most {MAX_TOKENS} tokens are allowed"
                )));
            }
            let tok = if c.is_ascii_digit() {
                self.number(pos)?
            } else if is_name_start(c) {
                let name = self.take_while(is_name_char);
                if name.chars().count() > MAX_NAME_CHARS {
                    return Err(
                        pos.error(format!("a name is limited to {MAX_NAME_CHARS} characters"))
                    );
                }
                match Kw::from_name(&name) {
                    Some(kw) => Tok::Kw(kw),
                    None => Tok::Name(name),
                }
            } else if c == '"' {
                self.string(pos)?
            } else {
                self.bump();
                self.operator(c, pos)?
            };
            self.tokens.push(Token { tok, pos });
        }
    }

    /// Skips white space (space, tab, line feed, carriage return) and `#` comments.
    fn skip_blanks(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | '\r' => {
                    self.bump();
                }
                '#' => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    /// A one- or two-character operator or punctuation, `c` already consumed.
    fn operator(&mut self, c: char, pos: Pos) -> Result<Tok, CompileError> {
        let next = self.peek();
        let two = |lexer: &mut Self, tok| {
            lexer.bump();
            Ok(tok)
        };
        match (c, next) {
            ('(', _) => Ok(Tok::LParen),
            (')', _) => Ok(Tok::RParen),
            ('[', _) => Ok(Tok::LBracket),
            (']', _) => Ok(Tok::RBracket),
            (',', _) => Ok(Tok::Comma),
            ('.', _) => Ok(Tok::Dot),
            ('*', _) => Ok(Tok::Star),
            ('+', _) => Ok(Tok::Plus),
            ('-', _) => Ok(Tok::Minus),
            ('/', _) => Ok(Tok::Slash),
            ('=', Some('=')) => Err(pos.error("unexpected `==`: write `=` to compare")),
            ('=', _) => Ok(Tok::Eq),
            ('!', Some('=')) => two(self, Tok::Ne),
            ('!', _) => Err(pos.error("unexpected `!`: write `not` to negate, `!=` for unequal")),
            ('<', Some('=')) => two(self, Tok::Le),
            ('<', Some('>')) => Err(pos.error("unexpected `<>`: write `!=` for unequal")),
            ('<', _) => Ok(Tok::Lt),
            ('>', Some('=')) => two(self, Tok::Ge),
            ('>', _) => Ok(Tok::Gt),
            ('&', _) => Err(pos.error("unexpected `&`: write `and`")),
            ('|', _) => Err(pos.error("unexpected `|`: write `or`")),
            ('\'', _) => Err(pos.error("unexpected `'`: strings are written in double quotes")),
            (c, _) if c.is_control() => {
                Err(pos.error(format!("unexpected control character {}", describe_char(c))))
            }
            (c, _) => Err(pos.error(format!("unexpected character {}", describe_char(c)))),
        }
    }

    /// A number (`3`, `19.99`) or a duration (`30d`, `24h`, `15m`, `90s`).
    fn number(&mut self, pos: Pos) -> Result<Tok, CompileError> {
        let whole = self.take_while(|c| c.is_ascii_digit());
        let mut fraction = None;
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            fraction = Some(self.take_while(|c| c.is_ascii_digit()));
        }
        let text = match &fraction {
            Some(f) => format!("{whole}.{f}"),
            None => whole.clone(),
        };
        if self.peek().is_some_and(is_name_char) {
            let suffix = self.take_while(is_name_char);
            let unit = match suffix.as_str() {
                "d" => DAY_MS,
                "h" => HOUR_MS,
                "m" => MINUTE_MS,
                "s" => SECOND_MS,
                _ => {
                    return Err(pos.error(format!(
                        "`{}{}` is neither a number nor a duration: a duration is a whole number followed by d, h, m or s, as in `30d`",
                        shorten(&text),
                        shorten(&suffix)
                    )))
                }
            };
            if fraction.is_some() {
                return Err(pos.error(format!(
                    "`{}{suffix}`: a duration is a whole number followed by d, h, m or s, as in `30d`",
                    shorten(&text)
                )));
            }
            return duration(&whole, unit, pos).map(Tok::Duration);
        }
        let digits = whole.len() + fraction.as_ref().map_or(0, String::len);
        if digits > MAX_DIGITS {
            return Err(pos.error(format!(
                "the number `{}` has too many digits: at most {MAX_DIGITS} are allowed",
                shorten(&text)
            )));
        }
        match text.parse::<f64>() {
            Ok(value) if value <= MAX_NUMBER => Ok(Tok::Number(value)),
            _ => Err(pos.error(format!(
                "the number `{}` is too large: numbers are at most {MAX_NUMBER}",
                shorten(&text)
            ))),
        }
    }

    /// A string literal; `pos` is its opening quote.
    fn string(&mut self, pos: Pos) -> Result<Tok, CompileError> {
        let unterminated =
            || pos.error("unterminated string: the closing `\"` is missing on this line");
        self.bump();
        let mut out = String::new();
        let mut length = 0usize;
        loop {
            let at = self.pos;
            let c = match self.bump() {
                None | Some('\n') => return Err(unterminated()),
                Some('"') => return Ok(Tok::Str(out)),
                Some('\\') => match self.bump() {
                    Some(c @ ('"' | '\\')) => c,
                    None | Some('\n') => return Err(unterminated()),
                    Some(c) => {
                        return Err(at.error(format!(
                            "unknown escape `\\` then {}: a string allows only `\\\"` and `\\\\`",
                            describe_char(c)
                        )))
                    }
                },
                Some(c) if c.is_control() => {
                    return Err(at.error(format!(
                        "control character {} in a string",
                        describe_char(c)
                    )))
                }
                Some(c) => c,
            };
            length += 1;
            if length > MAX_STRING_CHARS {
                return Err(pos.error(format!(
                    "a string is limited to {MAX_STRING_CHARS} characters"
                )));
            }
            out.push(c);
        }
    }
}

/// `digits` times `unit` ms, within (0, [`MAX_WINDOW_MS`]].
fn duration(digits: &str, unit: i64, pos: Pos) -> Result<i64, CompileError> {
    let too_long = || {
        pos.error(format!(
            "a duration is at most {} days",
            MAX_WINDOW_MS / DAY_MS
        ))
    };
    if digits.len() > MAX_DIGITS {
        return Err(too_long());
    }
    let n: i64 = digits.parse().map_err(|_| too_long())?;
    let ms = n.checked_mul(unit).ok_or_else(too_long)?;
    if ms == 0 {
        return Err(pos.error("a duration must be longer than zero"));
    }
    if ms > MAX_WINDOW_MS {
        return Err(too_long());
    }
    Ok(ms)
}

/// At most 20 characters of `s`, for a message.
fn shorten(s: &str) -> String {
    if s.chars().count() <= 20 {
        s.to_string()
    } else {
        let head: String = s.chars().take(20).collect();
        format!("{head}...")
    }
}
