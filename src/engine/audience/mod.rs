//! The expression language of computed traits and audiences: small expressions over a
//! customer's golden record, consents and windowed event counts, compiled once at start
//! and evaluated per customer.
//!
//! ```text
//! count(product_view where category = "escalade", 30d) >= 3 and allowed("marketing", "email")
//! ```
//!
//! An audience is a condition, true or false ([`compile_condition`]); a computed trait
//! is an expression of any type ([`compile_value`]). A source that does not compile is
//! refused with its line and column ([`CompileError`]):
//!
//! ```text
//! line 2, column 7: unknown function `cout`: did you mean `count`? the functions are count, sum, allowed, exists, days_since
//! ```
//!
//! # Values
//!
//! A value is `null`, a boolean, a number, a string, or a time (read from the record:
//! there is no time literal). A field the customer does not have is `null`.
//!
//! * Numbers: `3`, `19.99`, `-2` (decimal; no exponent; at most 16 digits and at most
//!   10^15).
//! * Strings: in double quotes, on one line, `\"` and `\\` the only escapes, at most 1,024
//!   characters: `"escalade"`, `"say \"hi\""`.
//! * Booleans: `true`, `false`.
//! * Durations: a whole number and a unit, `s`, `m`, `h` or `d`: `90s`, `15m`, `24h`,
//!   `30d`; longer than zero, at most 3,650 days. A duration is only ever the window of
//!   `count` or `sum` (`720h` and `30d` are the same window).
//!
//! # Fields
//!
//! A dotted path names a field of the golden record: `lifecycle_stage`, `rfm.frequency`,
//! `orders.total`, `person.city`, `attributes.loyalty_tier`. The compiler does not know
//! the record's schema: a path is resolved when evaluated, and `null` if absent. Names
//! are ASCII letters, digits and `_`, not starting with a digit, at most 128 characters;
//! the keywords (`and`, `or`, `not`, `in`, `contains`, `where`, `true`, `false`) are not
//! names.
//!
//! `geo.commune`, `geo.departement`, `geo.departement_code` and `geo.region` are not in
//! the record: the engine reads them from the postal code of the person's address (in
//! France), with the table of `engine::geography`.
//!
//! # Operators
//!
//! From the loosest to the tightest binding:
//!
//! | operators | meaning |
//! |---|---|
//! | `or` | either is true |
//! | `and` | both are true |
//! | `not` | negation |
//! | `=` `!=` `<` `<=` `>` `>=` `in [...]` `contains` | comparison (not chainable: `a < b < c` is an error) |
//! | `+` `-` | addition, subtraction (left to right) |
//! | `*` `/` | multiplication, division (left to right) |
//! | `-` | negation of a number |
//!
//! Parentheses group. `not a = b` is `not (a = b)`; `a or b and c` is `a or (b and c)`.
//!
//! * **Conditions are two-valued.** Where a condition is expected (`and`, `or`, `not`,
//!   `where`, an audience), only `true` counts as true: `false`, `null` and any other
//!   value count as false. `not` of anything but `true` is `true`.
//! * **A comparison with `null`, or between values of different types, is false; this
//!   includes `!=`.** `person.city != "Paris"` holds for a customer whose city is known
//!   and is not Paris; write `not (person.city = "Paris")` to also take those with no
//!   city. `<`, `<=`, `>`, `>=` order numbers, strings (by code point) and times;
//!   booleans compare only with `=` and `!=`.
//! * `x in [v1, v2, ...]` is `x = v1 or x = v2 or ...`; the list holds literals of one
//!   type, at least one.
//! * `a contains b`: the string `a` holds the string `b` (case matters); false otherwise.
//! * Arithmetic takes numbers; with `null` or any other value it gives `null`, as does a
//!   division by zero or a result too large to represent.
//!
//! Types are checked when compiling where both sides are known: `count(x, 30d) >= "3"`,
//! `"a" + 1`, `not 3` and `orders.count in [1, "2"]` are errors. Fields have a type
//! known only when evaluated, so `person.city = 3` compiles (and is false for a city
//! that is a string).
//!
//! # Functions
//!
//! * `count(<event type> [where <filter>], <window>)`: the number of the customer's events
//!   of that type in the window ending now. The event type is a name (`product_view`,
//!   `purchase`, `cart_add`) or `*` for every type.
//! * `sum(<event type> [where <filter>], <field>, <window>)`: the sum of the event field
//!   (a bare name such as `amount`) over the same events; events where it is not a
//!   number add nothing.
//! * `allowed("<purpose>", "<channel>")`: whether the customer may be contacted for that
//!   purpose on that channel now. The purposes and channels are those of the consent
//!   contract ([`Purpose`](crate::model::Purpose), [`Channel`](crate::model::Channel)): purposes `marketing`, `personalization`,
//!   `remarketing`, `ab_testing`, `analytics`, `profiling`; channels `email`, `sms`,
//!   `push`, `phone`, `post`, `web`, and `any` (at least one channel).
//! * `exists(<path>)`: whether the field is present (not `null`).
//! * `days_since(<path>)`: whole days from the time in the field to now (rounded down;
//!   negative for a time to come), `null` if the field is absent or not a time.
//!
//! The filter of `count` and `sum` reads the fields of each event, by bare name
//! (`category`, `channel`, `sku`, `brand`, `amount`), with literals, comparisons, `in`,
//! `contains`, `and`, `or`, `not` and parentheses: no paths of the record, no functions,
//! no arithmetic. Every `count` and `sum` is a windowed aggregate the engine keeps per
//! customer ([`Compiled::windows`]); the same aggregate, however written, has the same
//! [`AggregateKey`] and is kept once.
//!
//! Any other function name is an error, as is a call with the wrong arguments.
//!
//! # Grammar
//!
//! In EBNF; white space (space, tab, line breaks) separates tokens, and `#` starts a
//! comment running to the end of the line.
//!
//! ```text
//! expression = or ;
//! or         = and , { "or" , and } ;
//! and        = not , { "and" , not } ;
//! not        = "not" , not | comparison ;
//! comparison = sum , [ ( "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" ) , sum
//!                    | "in" , list ] ;
//! list       = "[" , literal , { "," , literal } , "]" ;
//! literal    = [ "-" ] , number | string | "true" | "false" ;
//! sum        = product , { ( "+" | "-" ) , product } ;
//! product    = unary , { ( "*" | "/" ) , unary } ;
//! unary      = "-" , unary | primary ;
//! primary    = number | string | "true" | "false" | call | path
//!            | "(" , expression , ")" ;
//! path       = name , { "." , name } ;
//! call       = "count" , "(" , events , "," , duration , ")"
//!            | "sum" , "(" , events , "," , name , "," , duration , ")"
//!            | "allowed" , "(" , string , "," , string , ")"
//!            | "exists" , "(" , path , ")"
//!            | "days_since" , "(" , path , ")" ;
//! events     = ( name | "*" ) , [ "where" , expression ] ;   (* the filter *)
//!
//! name       = ( letter | "_" ) , { letter | digit | "_" } ;  (* not a keyword *)
//! number     = digit , { digit } , [ "." , digit , { digit } ] ;
//! duration   = digit , { digit } , ( "s" | "m" | "h" | "d" ) ;
//! string     = '"' , { character - ( '"' | "\" | line break ) | '\"' | "\\" } , '"' ;
//! ```
//!
//! # Examples
//!
//! ```text
//! # Escalade fans who may be emailed
//! count(product_view where category = "escalade", 30d) >= 3
//!   and allowed("marketing", "email")
//!
//! # Big spenders of the quarter
//! sum(purchase where channel in ["web", "app"], amount, 90d) > 500
//!
//! # Lapsed customers
//! lifecycle_stage = "active" and days_since(orders.last_at) > 60
//!
//! # Average basket (a computed trait: a number, or null without orders)
//! orders.total / orders.count
//! ```
//!
//! # Limits
//!
//! A source is at most [`MAX_SOURCE_BYTES`] bytes and [`MAX_TOKENS`] tokens, nested at
//! most [`MAX_DEPTH`] levels deep; beyond, it is a compile error, never a crash.
//! Evaluation is deterministic: it reads only its [`Context`] (the time included), and
//! never fails.

mod expr;
mod lexer;
mod parser;
mod value;

#[cfg(test)]
mod tests;

pub use expr::{
    compile, compile_condition, compile_duration, compile_events, compile_value, Aggregate,
    AggregateKey, AggregateKind, CompileError, Compiled, EventFilter, EventPattern, Leaf, Moves,
};
pub use value::{AllowedChannel, Context, EventFields, Type, Value};

/// The longest source, in bytes.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// The most tokens in a source.
pub const MAX_TOKENS: usize = 4_096;
/// The deepest nesting: of parentheses, calls, `not`, `-`, and of the tree of operators.
pub const MAX_DEPTH: usize = 64;
/// The longest string literal, in characters.
pub const MAX_STRING_CHARS: usize = 1_024;
/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// The most digits in a number or a duration.
pub const MAX_DIGITS: usize = 16;
/// The largest number literal.
pub const MAX_NUMBER: f64 = 1e15;
/// The longest window: 3,650 days, in milliseconds.
pub const MAX_WINDOW_MS: i64 = 3_650 * 24 * 60 * 60 * 1_000;

/// The functions of the language.
pub const FUNCTIONS: [&str; 5] = ["count", "sum", "allowed", "exists", "days_since"];
