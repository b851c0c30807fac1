use std::cell::Cell;
use std::collections::HashMap;

use super::*;
use crate::model::{Channel, Purpose};

const DAY: i64 = 24 * 60 * 60 * 1000;

/// A customer as the tests see one: fields by dotted path, aggregates by key.
#[derive(Default)]
struct Customer {
    fields: HashMap<String, Value>,
    aggregates: HashMap<String, f64>,
    allowed: Vec<(Purpose, AllowedChannel)>,
    now: i64,
    now_reads: Cell<usize>,
}

impl Customer {
    fn at(now: i64) -> Self {
        Self {
            now,
            ..Self::default()
        }
    }

    fn field(mut self, path: &str, value: Value) -> Self {
        self.fields.insert(path.to_string(), value);
        self
    }

    fn aggregate(mut self, key: &str, value: f64) -> Self {
        self.aggregates.insert(key.to_string(), value);
        self
    }

    fn allow(mut self, purpose: Purpose, channel: AllowedChannel) -> Self {
        self.allowed.push((purpose, channel));
        self
    }
}

impl Context for Customer {
    fn field(&self, path: &[&str]) -> Value {
        self.fields
            .get(&path.join("."))
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn aggregate(&self, aggregate: &Aggregate, now_ms: i64) -> f64 {
        assert_eq!(now_ms, self.now);
        self.aggregates
            .get(aggregate.key().as_str())
            .copied()
            .unwrap_or(0.0)
    }

    fn allowed(&self, purpose: Purpose, channel: AllowedChannel) -> bool {
        self.allowed.contains(&(purpose, channel))
    }

    fn now_ms(&self) -> i64 {
        self.now_reads.set(self.now_reads.get() + 1);
        self.now
    }
}

struct Event(Vec<(&'static str, Value)>);

impl EventFields for Event {
    fn event_field(&self, name: &str) -> Value {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Value::Null, |(_, v)| v.clone())
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

fn num(n: f64) -> Value {
    Value::Number(n)
}

fn compiled(source: &str) -> Compiled {
    compile_value(source).unwrap_or_else(|e| panic!("{source:?} does not compile: {e}"))
}

/// The value of `source` for `customer`.
fn value_for(source: &str, customer: &Customer) -> Value {
    compiled(source).eval(customer)
}

/// The value of `source` for a customer with nothing.
fn value(source: &str) -> Value {
    value_for(source, &Customer::default())
}

fn error(source: &str) -> CompileError {
    match compile_value(source) {
        Ok(c) => panic!("{source:?} compiled, to {}", c.canonical()),
        Err(e) => e,
    }
}

/// `source` fails at `line`, `column`, with a message holding `part`.
#[track_caller]
fn assert_error(source: &str, line: u32, column: u32, part: &str) {
    let e = error(source);
    assert!(
        e.line == line && e.column == column && e.message.contains(part),
        "{source:?}: expected line {line}, column {column}, containing {part:?}; got {e}"
    );
}

const ESCALADE: &str = r#"count(product_view where category = "escalade", 30d)"#;

#[test]
fn the_issue_example_compiles_and_evaluates() {
    let source = r#"count(product_view where category = "escalade", 30d) >= 3 and allowed("marketing", "email")"#;
    let audience = compile_condition(source).unwrap();
    assert_eq!(audience.result_type(), Type::Bool);
    assert_eq!(audience.windows().len(), 1);
    let window = &audience.windows()[0];
    assert_eq!(window.key().as_str(), ESCALADE);
    assert_eq!(window.kind(), &AggregateKind::Count);
    assert_eq!(window.event_type(), Some("product_view"));
    assert_eq!(window.window_ms(), 30 * DAY);
    assert_eq!(
        window.filter().map(EventFilter::text),
        Some(r#"category = "escalade""#)
    );
    assert_eq!(audience.canonical(), source);

    let email = AllowedChannel::One(Channel::Email);
    let fan = Customer::at(0)
        .aggregate(ESCALADE, 3.0)
        .allow(Purpose::Marketing, email);
    assert!(audience.eval_condition(&fan));
    assert_eq!(audience.eval(&fan), Value::Bool(true));

    let casual = Customer::at(0)
        .aggregate(ESCALADE, 2.0)
        .allow(Purpose::Marketing, email);
    assert!(!audience.eval_condition(&casual));
    let sms_only = Customer::at(0)
        .aggregate(ESCALADE, 9.0)
        .allow(Purpose::Marketing, AllowedChannel::One(Channel::Sms))
        .allow(Purpose::Analytics, email);
    assert!(!audience.eval_condition(&sms_only));
    assert_eq!(audience.eval(&sms_only), Value::Bool(false));
}

#[test]
fn operators_bind_by_precedence_and_associate_left() {
    for (source, want) in [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("10 - 4 - 3", 3.0),
        ("10 - (4 - 3)", 9.0),
        ("24 / 4 / 2", 3.0),
        ("2 * 3 + 4 * 5", 26.0),
        ("1 - 2 + 3", 2.0),
        ("-2 * 3", -6.0),
        ("-(2 + 3) * 2", -10.0),
        ("- -4", 4.0),
        ("2 - -3", 5.0),
        ("10 / 4", 2.5),
        ("19.99 * 2", 39.98),
    ] {
        assert_eq!(value(source), num(want), "{source}");
    }
    for (source, want) in [
        ("true or false and false", true),
        ("(true or false) and false", false),
        ("false and false or true", true),
        ("not false and false", false),
        ("not (false and false)", true),
        ("not 1 = 2", true),
        ("not not true", true),
        ("1 + 1 = 2 and 2 * 2 = 4", true),
        ("(1 < 2) = true", true),
        ("1 + 2 * 3 > 6 or false", true),
    ] {
        assert_eq!(value(source), Value::Bool(want), "{source}");
    }
    for (source, canonical) in [
        ("a or b and c", "a or b and c"),
        ("(a or b) and c", "(a or b) and c"),
        ("a and (b and c)", "a and b and c"),
        ("(a and b) and c", "a and b and c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("(a * b) + c", "a * b + c"),
        ("a * (b + c)", "a * (b + c)"),
        ("not (a = 1)", "not a = 1"),
        ("(not a) = true", "(not a) = true"),
        ("((a))", "a"),
        ("-(a)", "-a"),
    ] {
        assert_eq!(compiled(source).canonical(), canonical, "{source}");
    }
}

#[test]
fn in_contains_and_not() {
    let stage = "lifecycle_stage in [\"active\", \"at_risk\"]";
    for (stage_value, want) in [
        (text("active"), true),
        (text("at_risk"), true),
        (text("churned"), false),
        (num(3.0), false),
        (Value::Null, false),
    ] {
        let c = Customer::default().field("lifecycle_stage", stage_value.clone());
        assert_eq!(value_for(stage, &c), Value::Bool(want), "{stage_value:?}");
    }
    let c = Customer::default().field("orders.count", num(-3.0));
    assert_eq!(
        value_for("orders.count in [1, 2, -3]", &c),
        Value::Bool(true)
    );
    assert_eq!(value_for("orders.count in [3]", &c), Value::Bool(false));
    assert_eq!(value("true in [false, true]"), Value::Bool(true));

    let contains = "person.city contains \"ar\"";
    for (city, want) in [
        (text("Paris"), true),
        (text("Lyon"), false),
        (text("PARIS"), false),
        (num(1.0), false),
        (Value::Null, false),
    ] {
        let c = Customer::default().field("person.city", city.clone());
        assert_eq!(value_for(contains, &c), Value::Bool(want), "{city:?}");
    }
    assert_eq!(value(r#""escalade" contains "cal""#), Value::Bool(true));
    assert_eq!(value(r#""é" contains """#), Value::Bool(true));

    let c = Customer::default().field("person.city", text("Paris"));
    assert_eq!(value_for("not exists(person.city)", &c), Value::Bool(false));
    assert_eq!(value_for("not exists(person.zip)", &c), Value::Bool(true));
    assert_eq!(value("not true"), Value::Bool(false));
    assert_eq!(value("not false"), Value::Bool(true));
}

#[test]
fn null_and_other_types_compare_false_even_with_not_equal() {
    let c = Customer::default()
        .field("person.city", text("Paris"))
        .field("flag", Value::Bool(true))
        .field("other_flag", Value::Bool(false))
        .field("nan", num(f64::NAN));
    for (source, want) in [
        ("missing = 1", Value::Bool(false)),
        ("missing != 1", Value::Bool(false)),
        ("missing < 1", Value::Bool(false)),
        ("missing >= 1", Value::Bool(false)),
        ("missing = missing", Value::Bool(false)),
        ("not (missing = 1)", Value::Bool(true)),
        ("missing in [1, 2]", Value::Bool(false)),
        ("missing contains \"a\"", Value::Bool(false)),
        ("not missing", Value::Bool(true)),
        ("missing and true", Value::Bool(false)),
        ("missing or true", Value::Bool(true)),
        ("missing + 1", Value::Null),
        ("-missing", Value::Null),
        ("exists(missing)", Value::Bool(false)),
        ("exists(person.city)", Value::Bool(true)),
        ("person.city = 3", Value::Bool(false)),
        ("person.city != 3", Value::Bool(false)),
        ("person.city > 3", Value::Bool(false)),
        ("person.city != \"Lyon\"", Value::Bool(true)),
        ("person.city != \"Paris\"", Value::Bool(false)),
        ("person.city > \"Lyon\"", Value::Bool(true)),
        ("flag = true", Value::Bool(true)),
        ("flag != other_flag", Value::Bool(true)),
        ("flag > other_flag", Value::Bool(false)),
        ("person.city + 1", Value::Null),
        ("nan = nan", Value::Bool(false)),
        ("nan != 1", Value::Bool(false)),
        ("missing", Value::Null),
    ] {
        assert_eq!(value_for(source, &c), want, "{source}");
    }
    // A condition reads only `true` as true.
    let flag = compile_condition("flag").unwrap();
    assert_eq!(flag.result_type(), Type::Unknown);
    assert!(flag.eval_condition(&c));
    assert!(!compile_condition("person.city").unwrap().eval_condition(&c));
    assert!(!compile_condition("missing").unwrap().eval_condition(&c));
    // Times order.
    let c = Customer::default()
        .field("signup_at", Value::Time(5))
        .field("last_seen_at", Value::Time(9));
    assert_eq!(value_for("signup_at < last_seen_at", &c), Value::Bool(true));
    assert_eq!(value_for("signup_at = 5", &c), Value::Bool(false));
}

#[test]
fn division_by_zero_and_overflow_give_null() {
    assert_eq!(value("1 / 0"), Value::Null);
    assert_eq!(value("0 / 0"), Value::Null);
    assert_eq!(value("1 / 0 > 0"), Value::Bool(false));
    assert_eq!(value("1 / 0 = 1 / 0"), Value::Bool(false));
    assert_eq!(value("not (1 / 0 = 1)"), Value::Bool(true));
    assert_eq!(value("(1 / 0) + 1"), Value::Null);
    let c = Customer::default()
        .field("orders.total", num(120.0))
        .field("orders.count", num(0.0));
    assert_eq!(value_for("orders.total / orders.count", &c), Value::Null);
    let c = c.field("orders.count", num(4.0));
    assert_eq!(value_for("orders.total / orders.count", &c), num(30.0));
    let huge = vec!["1000000000000000"; 22].join(" * ");
    assert_eq!(value(&huge), Value::Null);
    assert_eq!(value(&format!("-({huge})")), Value::Null);
}

#[test]
fn days_since_counts_whole_days_to_now() {
    let now = 100 * DAY + 12 * 60 * 60 * 1000;
    let c = Customer::at(now)
        .field("orders.last_at", Value::Time(0))
        .field("future", Value::Time(now + 1))
        .field("name", text("x"));
    assert_eq!(value_for("days_since(orders.last_at)", &c), num(100.0));
    assert_eq!(value_for("days_since(future)", &c), num(-1.0));
    assert_eq!(value_for("days_since(name)", &c), Value::Null);
    assert_eq!(value_for("days_since(missing)", &c), Value::Null);
    assert_eq!(
        value_for("days_since(orders.last_at) > 60", &c),
        Value::Bool(true)
    );
    assert_eq!(
        value_for("days_since(missing) > 60", &c),
        Value::Bool(false)
    );
}

#[test]
fn an_evaluation_reads_the_time_once_and_the_aggregates_it_names() {
    let c = Customer::at(7 * DAY)
        .field("a", Value::Time(0))
        .aggregate("count(*, 7d)", 4.0)
        .aggregate("sum(purchase, amount, 90d)", 250.5);
    let e = compiled("days_since(a) + days_since(a) + count(*, 7d) + count(*, 168h)");
    assert_eq!(e.windows().len(), 1);
    assert_eq!(e.eval(&c), num(22.0));
    assert_eq!(c.now_reads.get(), 1);
    assert_eq!(value_for("sum(purchase, amount, 90d)", &c), num(250.5));
    assert_eq!(value_for("count(purchase, 1d)", &c), num(0.0));
    let all = Customer::default().allow(Purpose::Profiling, AllowedChannel::Any);
    assert_eq!(
        value_for(r#"allowed("profiling", "any")"#, &all),
        Value::Bool(true)
    );
    assert_eq!(
        value_for(r#"allowed("profiling", "web")"#, &all),
        Value::Bool(false)
    );
}

#[test]
fn types_are_known_where_they_can_be() {
    for (source, ty) in [
        ("count(*, 1d)", Type::Number),
        ("sum(purchase, amount, 1d) / 2", Type::Number),
        ("days_since(a)", Type::Number),
        (r#"allowed("marketing", "email")"#, Type::Bool),
        ("exists(a)", Type::Bool),
        ("a.b", Type::Unknown),
        (r#""x""#, Type::Text),
        ("-a", Type::Number),
        ("a = 1", Type::Bool),
    ] {
        assert_eq!(compiled(source).result_type(), ty, "{source}");
    }
    assert!(compile_value("orders.total / 2").is_ok());
    let e = compile_condition("\n  orders.total / 2").unwrap_err();
    assert_eq!((e.line, e.column), (2, 3));
    assert_eq!(
        e.message,
        "an audience condition must be true or false, but this expression gives a number"
    );
    assert!(compile_condition(r#""yes""#).is_err());
}

/// `assert_error` for `compile_value`, the opposite sense: compiles.
#[track_caller]
fn assert_compiles(source: &str) {
    if let Err(e) = compile_value(source) {
        panic!("{source:?}: {e}");
    }
}

#[test]
fn errors_give_line_column_and_what_was_expected() {
    let e = error("orders.count > 1\n  and cout(purchase, 30d) > 0");
    assert_eq!(
        e.to_string(),
        "line 2, column 7: unknown function `cout`: did you mean `count`? the functions are count, sum, allowed, exists, days_since"
    );
    assert_eq!((e.line, e.column), (2, 7));
    // Columns count characters, not bytes.
    let e = error(r#"person.city = "é" and frobnicate(x)"#);
    assert_eq!((e.line, e.column), (1, 23));
    assert!(!e.message.contains("did you mean"), "{e}");
    assert_error(
        "\"ü\" = \"ü\"\n and \"€€\" = 1",
        2,
        11,
        "`=` compares a string with a number",
    );
    assert_error(
        "a = 1 and\n\t\"日本\" = é",
        2,
        9,
        "unexpected character `é`",
    );

    let cases: &[(&str, u32, u32, &str)] = &[
        // characters
        ("a = 1 ; b", 1, 7, "unexpected character `;`"),
        ("a = 1\u{7}", 1, 6, "unexpected control character U+0007"),
        (
            "a = \"x\u{1}y\"",
            1,
            7,
            "control character U+0001 in a string",
        ),
        ("a = \u{a0}1", 1, 5, "unexpected character U+00A0"),
        ("a == 1", 1, 3, "write `=` to compare"),
        ("a && b", 1, 3, "write `and`"),
        ("a || b", 1, 3, "write `or`"),
        ("!a", 1, 1, "write `not`"),
        ("a <> 1", 1, 3, "write `!=`"),
        ("a = 'x'", 1, 5, "double quotes"),
        // strings
        ("a = \"abc", 1, 5, "unterminated string"),
        ("a = 1 and\n b = \"abc\n\"", 2, 6, "unterminated string"),
        ("a = \"abc\\", 1, 5, "unterminated string"),
        (r#"a = "x\ny""#, 1, 7, "unknown escape"),
        // numbers and durations
        ("a = 99999999999999999999", 1, 5, "too many digits"),
        ("a = 0.12345678901234567", 1, 5, "too many digits"),
        ("a = 9999999999999999", 1, 5, "too large"),
        ("a = 1e400", 1, 5, "neither a number nor a duration"),
        (
            "count(purchase, 30x) > 1",
            1,
            17,
            "neither a number nor a duration",
        ),
        (
            "count(purchase, 1.5d) > 1",
            1,
            17,
            "a whole number followed by d, h, m or s",
        ),
        ("count(purchase, 0d) > 1", 1, 17, "longer than zero"),
        ("count(purchase, 3651d) > 1", 1, 17, "at most 3650 days"),
        ("count(purchase, 87601h) > 1", 1, 17, "at most 3650 days"),
        (
            "count(purchase, 99999999999999999999s)",
            1,
            17,
            "at most 3650 days",
        ),
        (
            "days_since(x) > 30d",
            1,
            17,
            "a duration is allowed only as the window",
        ),
        // types
        (
            r#"count(product_view, 30d) >= "x""#,
            1,
            26,
            "`>=` compares a number with a string",
        ),
        (
            r#""a" + 1"#,
            1,
            1,
            "`+` needs numbers, but this is a string",
        ),
        (
            "1 * (2 = 2)",
            1,
            5,
            "`*` needs numbers, but this is a boolean",
        ),
        (r#"-"a""#, 1, 2, "`-` needs numbers"),
        (
            "not 3",
            1,
            5,
            "`not` needs true or false, but this is a number",
        ),
        ("1 and true", 1, 1, "`and` needs true or false"),
        (
            r#"true or "x""#,
            1,
            9,
            "`or` needs true or false, but this is a string",
        ),
        ("true < false", 1, 6, "cannot order booleans"),
        ("a >= (1 = 1)", 1, 3, "cannot order booleans"),
        (
            r#"a in [1, "2"]"#,
            1,
            10,
            "a list mixes a number with a string",
        ),
        (
            r#""x" in [1, 2]"#,
            1,
            5,
            "`in` looks for a string in a list of numbers",
        ),
        ("a in []", 1, 7, "an empty list"),
        ("a in [b]", 1, 7, "expected a literal value in the list"),
        ("a in [1, 2", 1, 11, "expected `,` or `]`"),
        ("a in 1", 1, 6, "expected `[`"),
        (
            "a contains 3",
            1,
            12,
            "`contains` looks for a string in a string",
        ),
        // structure
        ("1 < 2 < 3", 1, 7, "comparisons cannot be chained"),
        ("a = 1 in [1]", 1, 7, "comparisons cannot be chained"),
        (
            "(1 + 2",
            1,
            7,
            "expected `)` to close the `(` at line 1, column 1, found the end of the expression",
        ),
        ("1 + 2)", 1, 6, "unexpected `)`"),
        (
            "a = 1 b",
            1,
            7,
            "expected an operator or the end of the expression, found the name `b`",
        ),
        ("", 1, 1, "expected a value"),
        ("a =", 1, 4, "expected a value"),
        ("where = 1", 1, 1, "expected a value"),
        ("person. = 1", 1, 9, "expected a field name"),
        ("a..b", 1, 3, "expected a field name"),
        ("1.", 1, 2, "expected an operator"),
        // functions
        ("count(purchase) > 1", 1, 15, "expected `,` then the window"),
        (
            "count(purchase, 30d, 1)",
            1,
            20,
            "expected `)` after the window",
        ),
        ("count(30d)", 1, 7, "expected an event type"),
        ("count(purchase, amount)", 1, 17, "expected the window"),
        ("count(purchase where, 1d)", 1, 21, "expected a value"),
        ("count(purchase, 1d", 1, 19, "expected `)` after the window"),
        (
            "sum(purchase, 30d)",
            1,
            15,
            "expected the event field to add up",
        ),
        (
            "sum(purchase, order.amount, 30d)",
            1,
            15,
            "expected the event field to add up",
        ),
        (
            "sum(purchase, amount)",
            1,
            21,
            "expected `,` then the window",
        ),
        ("summ(purchase, amount, 1d)", 1, 1, "did you mean `sum`?"),
        ("exists(3)", 1, 8, "expected a field path"),
        ("exists(a, b)", 1, 9, "`exists` takes one field path"),
        ("days_since()", 1, 12, "expected a field path"),
        (
            r#"allowed("spam", "email")"#,
            1,
            9,
            "`spam` is not a consent purpose (one of marketing, personalization",
        ),
        (
            r#"allowed("marketing", "fax")"#,
            1,
            22,
            "`fax` is not a channel (one of email, sms, push, phone, post, web, or any)",
        ),
        (
            r#"allowed(marketing, "email")"#,
            1,
            9,
            "expected a purpose in double quotes",
        ),
        (
            r#"allowed("marketing")"#,
            1,
            20,
            "expected `,` then a channel",
        ),
        (
            r#"allowed("marketing", "email", "x")"#,
            1,
            29,
            "`allowed` takes a purpose and a channel",
        ),
        // event filters
        (
            "count(x where count(y, 1d) > 1, 1d)",
            1,
            15,
            "`count` cannot be used in an event filter",
        ),
        (
            r#"count(x where allowed("marketing", "email"), 1d)"#,
            1,
            15,
            "`allowed` cannot be used in an event filter",
        ),
        (
            "count(x where exists(a), 1d)",
            1,
            15,
            "`exists` cannot be used in an event filter",
        ),
        (
            r#"count(x where person.city = "a", 1d)"#,
            1,
            15,
            "an event filter reads the event's own fields",
        ),
        (
            "count(x where amount * 2 > 10, 1d)",
            1,
            22,
            "arithmetic is not allowed in an event filter",
        ),
        (
            "count(x where -amount > 10, 1d)",
            1,
            15,
            "arithmetic is not allowed in an event filter",
        ),
        (
            "count(x where 3, 1d)",
            1,
            15,
            "`where` needs true or false, but this is a number",
        ),
        (
            "sum(x where a = 1 or 2, amount, 1d)",
            1,
            22,
            "`or` needs true or false",
        ),
    ];
    for (source, line, column, part) in cases {
        assert_error(source, *line, *column, part);
    }
    let name = "a".repeat(MAX_NAME_CHARS + 1);
    assert_error(&name, 1, 1, "a name is limited to 128 characters");
    assert_compiles(&"a".repeat(MAX_NAME_CHARS));
    let long = format!("a = \"{}\"", "x".repeat(MAX_STRING_CHARS + 1));
    assert_error(&long, 1, 5, "a string is limited to 1024 characters");
    assert_compiles(&format!("a = \"{}\"", "é".repeat(MAX_STRING_CHARS)));
    // What is right next to the errors compiles.
    for source in [
        "count(purchase, 3650d) > 1",
        "count(purchase, 87600h) > 1",
        "a = 999999999999999",
        "a = 0.123456789012345",
        "count(x where amount > -10 and amount in [-1, 2], 1d)",
        r#"a = "x\"y\\z""#,
        "a = 1 # a comment\n and b = 2 # another",
        "\r\n\ta\r\n=\t1\r\n",
    ] {
        assert_compiles(source);
    }
    assert_eq!(value(r#""x\"y\\z" = "x\"y\\z""#), Value::Bool(true));
}

#[test]
fn hostile_sources_are_refused_cleanly() {
    // 100,000 nested parentheses: refused before parsing.
    let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(error(&deep).message.contains("bytes long"));
    assert!(compile_value(&"(".repeat(100_000)).is_err());
    // Within the size limits, nesting is bounded at its own limit.
    let deep = format!("{}1{}", "(".repeat(1_000), ")".repeat(1_000));
    assert_error(&deep, 1, 65, "nested too deeply: at most 64 levels");
    let ok = format!(
        "{}1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(value(&ok), num(1.0));
    assert_error(
        &format!("{}true", "not ".repeat(1_000)),
        1,
        257,
        "nested too deeply",
    );
    assert_error(
        &format!("{}a", "-".repeat(1_000)),
        1,
        65,
        "nested too deeply",
    );
    assert_error(
        &format!("{}exists(a)", "count(x where ".repeat(100)),
        1,
        15,
        "`count` cannot be used in an event filter",
    );
    // A long chain of operators is a deep tree: bounded too.
    let chain = format!("1{}", " + 1".repeat(2_000));
    assert!(error(&chain).message.contains("nested too deeply"));
    let ok = format!("1{}", " + 1".repeat(MAX_DEPTH - 1));
    assert_eq!(value(&ok), num(MAX_DEPTH as f64));
    // `and` and `or` are flat: long chains are fine.
    let flat = format!("true{}", " and true".repeat(2_000));
    assert_eq!(value(&flat), Value::Bool(true));
    // Too many tokens.
    let many = format!("1{}", " + 1".repeat(3_000));
    let e = error(&many);
    assert!(e.message.contains("at most 4096 tokens"), "{e}");
    assert_eq!((e.line, e.column), (1, 1 + 4 * 2_048));
    // 10 MB.
    let e = error(&"x".repeat(10 * 1024 * 1024));
    assert_eq!(
        e.to_string(),
        "line 1, column 65537: the expression is 10485760 bytes long; at most 65536 are allowed"
    );
    let e = error(&"\n".repeat(10 * 1024 * 1024));
    assert_eq!((e.line, e.column), (65_537, 1));
    let e = error(&"é".repeat(5 * 1024 * 1024));
    assert_eq!((e.line, e.column), (1, 32_769));
    // Huge numbers, long strings, unterminated strings.
    assert!(error(&"9".repeat(60_000))
        .message
        .contains("too many digits"));
    assert!(error(&format!("count(x, {}d)", "9".repeat(60_000)))
        .message
        .contains("at most 3650 days"));
    assert!(error(&format!("\"{}", "x".repeat(60_000)))
        .message
        .contains("limited to 1024"));
    assert!(error("\"").message.contains("unterminated"));
    // Every control character, anywhere.
    let source = r#"count(a where b = "c", 1d) > 2 and d in ["e"]"#;
    let chars: Vec<char> = source.chars().collect();
    for c in (0u32..0x20)
        .chain([0x7f, 0x85, 0x2028])
        .filter_map(char::from_u32)
    {
        assert!(compile_value(&c.to_string()).is_err() || c.is_whitespace());
        for at in 0..=chars.len() {
            let mut s: String = chars[..at].iter().collect();
            s.push(c);
            s.extend(&chars[at..]);
            let _ = compile_value(&s);
        }
    }
    assert!(error("\0").message.contains("U+0000"));
}

/// A small deterministic generator, for the no-panic test.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % below
    }
}

#[test]
fn no_input_panics_at_compile_or_evaluation() {
    let sources = [
        r#"count(product_view where category = "escalade" and not (brand in ["x", "y"]), 30d) >= 3 and allowed("marketing", "email")"#,
        r#"sum(purchase where channel contains "web", amount, 90d) / (orders.count - 1) > -2.5 or days_since(a.b) <= 7"#,
        "exists(x) and (1 + 2 * 3 - 4 / 5 != 6 or not true)",
    ];
    let c = Customer::default().field("orders.count", num(1.0));
    let check = |s: &str| {
        if let Ok(e) = compile_value(s) {
            let _ = e.eval(&c);
            // The canonical form means the same.
            let again = compile_value(&e.canonical())
                .unwrap_or_else(|err| panic!("{s:?} -> {:?}: {err}", e.canonical()));
            assert_eq!(again.canonical(), e.canonical());
        }
    };
    for source in sources {
        let chars: Vec<char> = source.chars().collect();
        for at in 0..=chars.len() {
            check(&chars[..at].iter().collect::<String>());
            let mut cut = chars.clone();
            if at < cut.len() {
                cut.remove(at);
                check(&cut.iter().collect::<String>());
            }
        }
    }
    let pieces = [
        "(",
        ")",
        "[",
        "]",
        ",",
        ".",
        "*",
        "+",
        "-",
        "/",
        "=",
        "!=",
        "<",
        ">=",
        " ",
        "\n",
        "and",
        "or",
        "not",
        "in",
        "contains",
        "where",
        "true",
        "false",
        "count",
        "sum",
        "allowed",
        "exists",
        "days_since",
        "a",
        "b.c",
        "1",
        "2.5",
        "0",
        "30d",
        "\"x\"",
        "\"marketing\"",
        "\"email\"",
        "é",
        "\"",
        "\\",
        "#",
    ];
    let mut rng = Lcg(22);
    for _ in 0..5_000 {
        let n = 1 + rng.next(24);
        let s: String = (0..n)
            .map(|_| pieces[rng.next(pieces.len())])
            .collect::<Vec<_>>()
            .join(if rng.next(2) == 0 { " " } else { "" });
        check(&s);
    }
}

#[test]
fn windows_are_deduplicated_by_a_canonical_key() {
    let twice = compiled(
        r#"count(product_view where category="escalade",30d)>=3
           or count( product_view  where (category = "escalade") , 720h ) > 10"#,
    );
    assert_eq!(twice.windows().len(), 1);
    assert_eq!(twice.windows()[0].key().as_str(), ESCALADE);
    let c = Customer::default().aggregate(ESCALADE, 3.0);
    assert_eq!(twice.eval(&c), Value::Bool(true));

    let other = compiled(
        "# the same aggregate in another definition\ncount(product_view\n\twhere category = \"escalade\", 30d) / 2",
    );
    assert_eq!(other.windows()[0].key(), twice.windows()[0].key());

    let keys = |source: &str| -> Vec<String> {
        compiled(source)
            .windows()
            .iter()
            .map(|w| w.key().to_string())
            .collect()
    };
    assert_eq!(
        keys("count(x where a = 1 and (b = 2 and c = 3), 1d)"),
        keys("count(x where (a = 1 and b = 2) and c = 3, 24h)")
    );
    assert_eq!(
        keys("count(x where a = 1 and (b = 2 and c = 3), 1d)"),
        ["count(x where a = 1 and b = 2 and c = 3, 1d)"]
    );
    assert_eq!(
        keys("sum(purchase, amount, 90d) > 0 or count(*, 7d) > 1 or count(purchase, 7d) > 0 or count(*, 604800s) > 2"),
        ["sum(purchase, amount, 90d)", "count(*, 7d)", "count(purchase, 7d)"]
    );
    assert_eq!(
        keys("count(a, 90s) + count(a, 120s) + count(a, 1440m) + count(a, 36h) + count(a, 61s)"),
        [
            "count(a, 90s)",
            "count(a, 2m)",
            "count(a, 1d)",
            "count(a, 36h)",
            "count(a, 61s)"
        ]
    );
    assert_eq!(
        keys(
            r#"sum(purchase where channel in ["web","app"] and not(name="a\"b" or amount<-1), amount,1d)"#
        ),
        [
            r#"sum(purchase where channel in ["web", "app"] and not (name = "a\"b" or amount < -1), amount, 1d)"#
        ]
    );
    // Different aggregates stay apart.
    assert_eq!(
        keys("count(purchase, 1d) + sum(purchase, amount, 1d) + count(purchase where a = 1, 1d) + count(purchase where a = 2, 1d) + count(purchase, 2d) + count(Purchase, 1d)")
            .len(),
        6
    );
}

#[test]
fn event_filters_match_sample_events() {
    let audience = compiled(
        r#"count(product_view where category = "escalade" and amount >= 10 and channel in ["web", "app"] and not (brand = "x") and sku contains "ESC-", 30d) > 0"#,
    );
    let window = &audience.windows()[0];
    let filter = window.filter().unwrap();
    let event = |changes: &[(&'static str, Value)]| {
        let mut fields = vec![
            ("category", text("escalade")),
            ("amount", num(12.0)),
            ("channel", text("web")),
            ("sku", text("ESC-42")),
        ];
        for (name, v) in changes {
            fields.retain(|(n, _)| n != name);
            fields.push((*name, v.clone()));
        }
        Event(fields)
    };
    assert!(filter.matches(&event(&[])));
    assert!(filter.matches(&event(&[("channel", text("app"))])));
    assert!(filter.matches(&event(&[("brand", text("y"))])));
    assert!(filter.matches(&event(&[("amount", num(10.0))])));
    for change in [
        ("category", text("velo")),
        ("amount", num(9.99)),
        ("amount", text("20")),
        ("amount", Value::Null),
        ("channel", text("store")),
        ("brand", text("x")),
        ("sku", text("VEL-1")),
        ("category", Value::Null),
    ] {
        assert!(
            !filter.matches(&event(std::slice::from_ref(&change))),
            "{change:?}"
        );
    }
    assert!(window.matches("product_view", &event(&[])));
    assert!(!window.matches("purchase", &event(&[])));
    assert_eq!(window.contribution("product_view", &event(&[])), Some(1.0));
    assert_eq!(
        window.contribution("product_view", &event(&[("brand", text("x"))])),
        None
    );

    let any = compiled("count(*, 1d)");
    let any = &any.windows()[0];
    assert!(any.filter().is_none() && any.event_type().is_none());
    assert!(any.matches("login", &Event(vec![])));

    let spend = compiled(r#"sum(purchase where channel = "web", amount, 30d)"#);
    let spend = &spend.windows()[0];
    assert_eq!(
        spend.kind(),
        &AggregateKind::Sum {
            field: "amount".to_string()
        }
    );
    let web = |amount: Value| Event(vec![("channel", text("web")), ("amount", amount)]);
    assert_eq!(spend.contribution("purchase", &web(num(12.5))), Some(12.5));
    assert_eq!(spend.contribution("purchase", &web(text("12.5"))), None);
    assert_eq!(spend.contribution("purchase", &web(Value::Null)), None);
    assert_eq!(spend.contribution("return", &web(num(12.5))), None);
    let store = Event(vec![("channel", text("store")), ("amount", num(3.0))]);
    assert_eq!(spend.contribution("purchase", &store), None);
}

/// How `source` moves as `count(a, 7d)` grows, by [`Compiled::moves`].
fn moves_with_a(source: &str) -> Moves {
    compiled(source).moves(&|leaf| match leaf {
        Leaf::Aggregate(key) if key.as_str() == "count(a, 7d)" => Moves::UP,
        _ => Moves::NONE,
    })
}

#[test]
fn moves_follow_the_operators() {
    for (source, expected) in [
        ("count(a, 7d) >= 3", Moves::UP),
        ("count(a, 7d) < 3", Moves::DOWN),
        ("not (count(a, 7d) < 3)", Moves::UP),
        ("3 > count(a, 7d)", Moves::DOWN),
        ("count(b, 7d) - count(a, 7d) > 0", Moves::DOWN),
        ("-count(a, 7d) <= -2", Moves::UP),
        ("count(a, 7d) >= 1 and count(b, 7d) = 0", Moves::UP),
        ("count(a, 7d) >= 1 or count(a, 7d) < 0", Moves::BOTH),
        ("count(a, 7d) = 2", Moves::BOTH),
        ("count(a, 7d) != 2", Moves::BOTH),
        ("count(a, 7d) * 2 > 3", Moves::BOTH),
        ("count(a, 7d) / 2 > 3", Moves::BOTH),
        ("count(a, 7d) in [1, 2]", Moves::BOTH),
        ("count(b, 7d) >= 1", Moves::NONE),
        ("days_since(t) > 3 and orders.count >= 1", Moves::NONE),
    ] {
        assert_eq!(moves_with_a(source), expected, "{source}");
    }
}

/// What `moves` says is never contradicted by an evaluation: wherever the condition
/// turns as `count(a, 7d)` grows by one, it said it could turn that way.
#[test]
fn moves_are_never_contradicted_by_an_evaluation() {
    let sources = [
        "count(a, 7d) >= 3",
        "count(a, 7d) < 3",
        "not (count(a, 7d) > 2) or count(b, 7d) >= 1",
        "count(a, 7d) - count(b, 7d) > 0",
        "count(b, 7d) - count(a, 7d) >= 0",
        "-count(a, 7d) <= -2",
        "count(a, 7d) + 10 > count(b, 7d) * 4",
        "count(a, 7d) = 2",
        "count(a, 7d) * 2 > 3",
        "count(a, 7d) >= 1 and count(b, 7d) = 0",
        "days_since(t) > 3 and count(a, 7d) >= 1",
        "not (days_since(t) > 3 or count(a, 7d) < 2)",
        "count(a, 7d) / count(b, 7d) >= 1",
    ];
    let mut turns = 0;
    for source in sources {
        let moves = moves_with_a(source);
        let c = compiled(source);
        for b in [0.0, 1.0, 3.0] {
            for t in [0, 10 * DAY] {
                let at = |a: f64| {
                    let customer = Customer::at(5 * DAY)
                        .field("t", Value::Time(t))
                        .aggregate("count(a, 7d)", a)
                        .aggregate("count(b, 7d)", b);
                    c.eval_condition(&customer)
                };
                for a in -3..=6 {
                    let (before, after) = (at(f64::from(a)), at(f64::from(a + 1)));
                    if before != after {
                        turns += 1;
                        let direction = if after { Moves::UP } else { Moves::DOWN };
                        assert!(moves.can(direction), "{source}: a {a} -> {}, b {b}", a + 1);
                    }
                }
            }
        }
    }
    assert!(turns > 20, "the values tried turn the conditions: {turns}");
}
