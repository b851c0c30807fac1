//! Structure-aware generators of touchpoints, rights requests and identity commands from
//! small pools (ids repeat, customers merge), hostile values, and mutations of inputs.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::{select, Index};
use unicus::model::{EventType, SOURCE_CHANNELS};

use super::doc::J;

// ------------------------------------------------------------------------- values

/// Strings that have broken parsers, normalisers and key builders somewhere.
pub const NASTY: [&str; 34] = [
    "",
    " ",
    "\t\n",
    "\u{0}",
    "a\u{0}b",
    "\u{200b}",
    "\u{feff}",
    "\u{202e}dlrow",
    "\u{200f}שלום",
    "مرحبا",
    "ｆｕｌｌ－ｗｉｄｔｈ",
    "e\u{301}\u{301}\u{301}",
    "Å",
    "Å",
    "\u{1F600}\u{1F469}\u{200D}\u{1F469}\u{200D}\u{1F467}",
    "null",
    "true",
    "0",
    "-0",
    "1e309",
    "NaN",
    "\\",
    "\"",
    "\u{2028}\u{2029}",
    "\u{7f}\u{80}\u{9f}",
    "/",
    "%00",
    "../../etc/passwd",
    "'; DROP TABLE customers; --",
    "{\"a\":1}",
    "cus_",
    "İıŞş",
    "ß",
    "\u{fffd}",
];

/// Number literals, valid or not: out of range, too precise, negative zero, 2^64.
pub const NUMBERS: [&str; 28] = [
    "0",
    "-0",
    "1",
    "-1",
    "129.90",
    "-129.90",
    "0.005",
    "1e309",
    "-1e309",
    "1e-400",
    "18446744073709551616",
    "18446744073709551615",
    "9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775809",
    "1e12",
    "999999999999.99",
    "1.7976931348623157e308",
    "4.9e-324",
    "-0.0",
    "1E2",
    "NaN",
    "Infinity",
    "01",
    "1.",
    "+1",
    ".5",
    "0x10",
];

/// Times: valid ones, edges of the range, and near misses of RFC 3339.
pub const TIMES: [&str; 24] = [
    "2026-11-20T10:00:00Z",
    "2026-11-20T14:03:00+01:00",
    "2026-11-21T09:30:00.123Z",
    "2026-12-24T23:59:59.999999999Z",
    "2027-01-01T00:00:00Z",
    "2025-06-01T12:00:00-07:00",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "2026-11-20T10:00:00",
    "2026-11-20",
    "2026-02-30T00:00:00Z",
    "2016-12-31T23:59:60Z",
    "2026-11-20T10:00:00+25:00",
    "2026-11-20 10:00:00Z",
    "2026-11-20t10:00:00z",
    "+10000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "20261120T100000Z",
    "2026-11-20T10:00:00+14:00",
    "2026-11-20T10:00:00-23:59",
    "",
    "now",
];

/// Channels: those of the contract, then some that are not.
static CHANNELS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let others = [
        "foo",
        "kiosk",
        "WEB",
        "web ",
        "a-very-long-channel-name-that-goes-on-and-on-past-sixty-four-bytes-x",
    ];
    SOURCE_CHANNELS.into_iter().chain(others).collect()
});

/// Event types: those of the contract, one it does not know (kept as another type), then
/// some that are not types at all.
static TYPES: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let contract: &'static [EventType] = &EventType::ALL;
    let others = ["teleport", "PURCHASE", "", "purchase\u{0}"];
    contract
        .iter()
        .map(EventType::as_str)
        .chain(others)
        .collect()
});

/// Identifier types: the configured ones, and some that are not.
const ID_TYPES: [&str; 15] = [
    "email",
    "phone",
    "account_id",
    "loyalty_id",
    "device_id",
    "cookie_id",
    "social_handle",
    "marketplace_buyer_id",
    "cookie",
    "customer_number",
    "loyalty_card",
    "EMAIL",
    "",
    "e\u{301}mail",
    "health",
];

const EMAILS: [&str; 12] = [
    "a@example.org",
    " A@Example.ORG ",
    "b@example.org",
    "famille.dupont@gmail.com",
    "noreply@example.org",
    "a@b",
    "@",
    "not-an-email",
    "ａ@example.org",
    "a\u{200b}@example.org",
    "test@test.com",
    "a@example.org\u{0}",
];

const PHONES: [&str; 10] = [
    "06 12 34 56 78",
    "+33 6 12 34 56 78",
    "0612345678",
    "+33612345678",
    "01 00 00 00 00",
    "+1 (555) 010-0000",
    "000",
    "+999999999999999999999",
    "０６１２３４５６７８",
    "phone",
];

const IDS: [&str; 12] = [
    "CRM-1",
    "CRM-2",
    " crm-1 ",
    "FID-1",
    "mkp:A1",
    "twitter:@sophie_d",
    "@sophie_d",
    "c-1",
    "C-1",
    "d-1",
    "x",
    "CRM-1\u{200b}",
];

const FIRST_NAMES: [&str; 9] = [
    "Sophie",
    "sophie",
    "Sophi",
    "SOPHIE",
    "Zoé",
    "Zoe",
    "Jean-Pierre",
    "李",
    "O'Brien",
];
const LAST_NAMES: [&str; 7] = [
    "Dupont",
    "Dupond",
    "DUPONT",
    "Martin",
    "Müller",
    "Muller",
    "van der Berg",
];
const BIRTH_DATES: [&str; 8] = [
    "1985-04-12",
    "1985-12-04",
    "0000-01-01",
    "9999-12-31",
    "1985-02-30",
    "12/04/1985",
    "1985-04-12T00:00:00Z",
    "1985",
];

/// Attribute keys, among them the special-category look-alikes of the issue.
const ATTRIBUTE_KEYS: [&str; 20] = [
    "preferred_store",
    "newsletter",
    "size",
    "ｈｅａｌｔｈ",
    "heal\u{200b}th",
    "hеalth",
    "HÉALTH",
    "santé",
    "health",
    "healthCondition",
    "religion",
    "union_membership",
    "sexual orientation",
    "political-opinion",
    "ethnic_origin",
    "",
    "a.b",
    "\u{0}",
    "customer_id",
    "__proto__",
];

const PURPOSES: [&str; 8] = [
    "marketing",
    "personalization",
    "remarketing",
    "ab_testing",
    "analytics",
    "profiling",
    "spam",
    "",
];
const CONSENT_CHANNELS: [&str; 8] = ["email", "sms", "push", "phone", "post", "web", "all", "fax"];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = J> {
    select(pool).prop_map(J::s)
}

/// A string from `pool` mostly, else a hostile one.
fn text(pool: &'static [&'static str]) -> BoxedStrategy<J> {
    prop_oneof![
        16 => pick(pool),
        1 => pick(&NASTY),
        2 => "[a-zA-Z0-9 _.@+-]{0,24}".prop_map(J::Str),
    ]
    .boxed()
}

/// The first `good` entries of `pool` mostly, the rest (near misses) sometimes.
fn mostly(pool: &'static [&'static str], good: usize) -> BoxedStrategy<J> {
    prop_oneof![12 => pick(&pool[..good]), 1 => pick(&pool[good..])].boxed()
}

fn time() -> BoxedStrategy<J> {
    prop_oneof![
        12 => (0i64..86_400 * 400).prop_map(|s| {
            let t = chrono::DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap_or_default();
            J::Str(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        }),
        1 => pick(&TIMES),
    ]
    .boxed()
}

/// A value of another type than expected, or a hostile one of the same.
pub fn hostile() -> BoxedStrategy<J> {
    prop_oneof![
        3 => select(&NUMBERS[..]).prop_map(|n| J::Num(n.to_string())),
        3 => pick(&NASTY),
        1 => pick(&TIMES),
        1 => Just(J::Null),
        1 => any::<bool>().prop_map(J::Bool),
        1 => Just(J::Arr(Vec::new())),
        1 => Just(J::Obj(Vec::new())),
        1 => Just(J::Num("1".repeat(400))),
        1 => Just(J::Num(format!("-{}.{}", "9".repeat(200), "0".repeat(200)))),
        1 => select(&[4096usize, 4097, 70_000][..]).prop_map(|n| J::Str("x".repeat(n))),
        1 => (select(&[10usize, 127, 128, 129, 1_000, 100_000][..]), any::<bool>())
            .prop_map(|(depth, objects)| J::Raw(nested(depth, objects))),
        1 => select(&INVALID_UTF8[..]).prop_map(|b| {
            let mut s = b"\"a".to_vec();
            s.extend_from_slice(b);
            s.push(b'"');
            J::Raw(s)
        }),
        1 => select(&[r#""\ud800""#, r#""\udc00x""#, r#""\u0000""#, r#""\uFFFF""#][..])
            .prop_map(|s| J::Raw(s.as_bytes().to_vec())),
    ]
    .boxed()
}

/// `depth` nested arrays (or objects), as text: deeper than any recursion should go.
pub fn nested(depth: usize, objects: bool) -> Vec<u8> {
    let (open, close): (&[u8], &[u8]) = if objects {
        (b"{\"a\":", b"}")
    } else {
        (b"[", b"]")
    };
    let mut out = Vec::with_capacity(depth * (open.len() + close.len()) + 1);
    for _ in 0..depth {
        out.extend_from_slice(open);
    }
    out.push(b'1');
    for _ in 0..depth {
        out.extend_from_slice(close);
    }
    out
}

/// Byte sequences that are not UTF-8: a lone continuation, an overlong encoding, a
/// surrogate, a truncated sequence, bytes never used.
pub const INVALID_UTF8: [&[u8]; 7] = [
    &[0x80],
    &[0xc0, 0xaf],
    &[0xed, 0xa0, 0x80],
    &[0xe2, 0x82],
    &[0xff],
    &[0xfe, 0xff],
    &[0xf4, 0x90, 0x80, 0x80],
];

fn maybe<T: std::fmt::Debug + Clone + 'static>(
    p_absent: u32,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![p_absent => Just(None), 10 - p_absent => s.prop_map(Some)].boxed()
}

/// A value of a field, hostile once in a while.
fn field(s: impl Strategy<Value = J> + 'static) -> BoxedStrategy<J> {
    prop_oneof![40 => s, 1 => hostile()].boxed()
}

fn identifier_value(kind: &'static str) -> BoxedStrategy<J> {
    let pool: &'static [&'static str] = match kind {
        "email" => &EMAILS,
        "phone" => &PHONES,
        _ => &IDS,
    };
    prop_oneof![
        20 => text(pool),
        3 => prop::collection::vec(text(pool).boxed(), 0..3).prop_map(J::Arr),
        1 => Just(J::Null),
        1 => hostile(),
    ]
    .boxed()
}

fn identifiers() -> BoxedStrategy<J> {
    prop::collection::vec(
        prop_oneof![8 => select(&ID_TYPES[..8]), 1 => select(&ID_TYPES[8..])]
            .prop_flat_map(|k| identifier_value(k).prop_map(move |v| (k.to_string(), v))),
        0..5,
    )
    .prop_map(J::Obj)
    .boxed()
}

fn person() -> BoxedStrategy<J> {
    let address = (
        maybe(
            3,
            text(&["12 rue de la Paix", "12, Rue de la Paix", "1 Main St"]),
        ),
        maybe(3, text(&["75002", "75 002", "00000", "99999999999"])),
        maybe(3, text(&["Paris", "PARIS", "Saint-Étienne"])),
        maybe(3, text(&["FR", "fr", "France", "XX"])),
    )
        .prop_map(|(line1, postal_code, city, country)| {
            J::obj(vec![
                ("line1", line1),
                ("line2", Some(J::Null)),
                ("postal_code", postal_code),
                ("city", city),
                ("country", country),
            ])
        });
    (
        maybe(2, field(text(&FIRST_NAMES))),
        maybe(2, field(text(&LAST_NAMES))),
        maybe(4, field(text(&BIRTH_DATES))),
        maybe(5, field(address)),
    )
        .prop_map(|(first_name, last_name, birth_date, address)| {
            J::obj(vec![
                ("first_name", first_name),
                ("last_name", last_name),
                ("birth_date", birth_date),
                ("address", address),
            ])
        })
        .boxed()
}

fn items() -> BoxedStrategy<J> {
    let item = (
        field(text(&["CLIMB-42", "SKU-1", " ", "sku\u{0}"])),
        maybe(5, field(text(&["Chaussons d'escalade", "Corde"]))),
        maybe(3, field((0i64..5).prop_map(|n| J::Num(n.to_string())))),
        maybe(
            3,
            field(
                (-500i64..50_000)
                    .prop_map(|c| J::Num(format!("{}.{:02}", c / 100, (c % 100).abs()))),
            ),
        ),
    )
        .prop_map(|(sku, name, quantity, unit_price)| {
            J::obj(vec![
                ("sku", Some(sku)),
                ("name", name),
                ("quantity", quantity),
                ("unit_price", unit_price),
            ])
        });
    prop::collection::vec(item, 0..4).prop_map(J::Arr).boxed()
}

fn order() -> BoxedStrategy<J> {
    (
        maybe(2, field(text(&["T-881", "T-882", " t-881 "]))),
        maybe(
            2,
            field((-20_000i64..200_000).prop_map(|c| J::Num(format!("{}", c as f64 / 100.0)))),
        ),
        maybe(3, field(mostly(&["EUR", "eur", "USD", "EURO", "€"], 3))),
        maybe(4, field(items())),
    )
        .prop_map(|(order_id, total, currency, items)| {
            J::obj(vec![
                ("order_id", order_id),
                ("total", total),
                ("currency", currency),
                ("items", items),
            ])
        })
        .boxed()
}

fn consent() -> BoxedStrategy<J> {
    let entry = (
        field(mostly(&PURPOSES, 6)),
        field(mostly(&CONSENT_CHANNELS, 7)),
        field(any::<bool>().prop_map(J::Bool)),
        maybe(
            7,
            field(select(&["email", "phone"][..]).prop_flat_map(|k| {
                identifier_value(k)
                    .prop_map(move |v| J::obj(vec![("type", Some(J::s(k))), ("value", Some(v))]))
            })),
        ),
        maybe(7, field(time())),
    )
        .prop_map(|(purpose, channel, granted, identifier, expires_at)| {
            J::obj(vec![
                ("purpose", Some(purpose)),
                ("channel", Some(channel)),
                ("granted", Some(granted)),
                ("identifier", identifier),
                ("expires_at", expires_at),
            ])
        });
    prop::collection::vec(entry, 0..3).prop_map(J::Arr).boxed()
}

fn attributes() -> BoxedStrategy<J> {
    let value = prop_oneof![
        4 => text(&["Paris 11", "M", "yes"]),
        1 => any::<i32>().prop_map(|n| J::Num(n.to_string())),
        1 => any::<bool>().prop_map(J::Bool),
        1 => hostile(),
    ];
    prop_oneof![
        24 => prop::collection::vec((mostly(&ATTRIBUTE_KEYS, 3), value), 0..5).prop_map(|kv| {
            J::Obj(kv.into_iter().map(|(k, v)| (key_text(k), v)).collect())
        }),
        1 => (1usize..=200).prop_map(|n| {
            J::Obj((0..n).map(|i| (format!("k{i}"), J::Num(i.to_string()))).collect())
        }),
        1 => Just(J::Obj(vec![("k".repeat(500 * 1024), J::s("v"))])),
    ]
    .boxed()
}

fn key_text(j: J) -> String {
    match j {
        J::Str(s) => s,
        other => String::from_utf8_lossy(&other.render()).into_owned(),
    }
}

/// Event ids from a small pool, so that some repeat (duplicates), or hostile ones.
fn event_id() -> BoxedStrategy<J> {
    prop_oneof![
        40 => (0u8..16).prop_map(|n| J::Str(format!("e-{n}"))),
        1 => pick(&NASTY),
        1 => select(&[128usize, 129, 1000][..]).prop_map(|n| J::Str("e".repeat(n))),
        1 => hostile(),
    ]
    .boxed()
}

/// A touchpoint (contract §1): required fields most of the time, optional ones often.
pub fn touchpoint() -> BoxedStrategy<J> {
    let head = (
        maybe(0, event_id()),
        maybe(0, field(mostly(&CHANNELS, SOURCE_CHANNELS.len()))),
        maybe(0, field(mostly(&TYPES, EventType::ALL.len() + 1))),
        maybe(0, field(time())),
        maybe(7, field(text(&["pos-paris-11", "front-1"]))),
    );
    let body = (
        maybe(1, field(identifiers())),
        maybe(5, field(person())),
        maybe(7, field(order())),
        maybe(
            8,
            field(prop::collection::vec(items(), 1..2).prop_map(|mut i| {
                J::obj(vec![("cart_id", Some(J::s("K-19"))), ("items", i.pop())])
            })),
        ),
        maybe(
            8,
            field(Just(J::obj(vec![(
                "url",
                Some(J::s("https://shop.example/p/1")),
            )]))),
        ),
        maybe(7, field(consent())),
        maybe(6, field(attributes())),
        maybe(9, field(hostile())),
    );
    (head, body)
        .prop_map(
            |(
                (event_id, channel, kind, occurred_at, source),
                (identifiers, person, order, cart, page, consent, attributes, unknown),
            )| {
                J::obj(vec![
                    ("event_id", event_id),
                    ("channel", channel),
                    ("type", kind),
                    ("occurred_at", occurred_at),
                    ("source", source),
                    ("identifiers", identifiers),
                    ("person", person),
                    ("order", order),
                    ("cart", cart),
                    ("page", page),
                    ("consent", consent),
                    ("attributes", attributes),
                    ("loyalty_tier", unknown),
                ])
            },
        )
        .boxed()
}

/// A customer id: one the engine gave (a placeholder the harness fills in, possibly a
/// merged-away id), or one it never gave.
fn customer_id() -> BoxedStrategy<J> {
    prop_oneof![
        6 => (0u8..6).prop_map(|n| J::Str(format!("@CUS{n}@"))),
        3 => (0u8..3).prop_map(|n| J::Str(format!("@MERGED{n}@"))),
        1 => Just(J::s("cus_nobody")),
        1 => pick(&NASTY),
    ]
    .boxed()
}

fn subject_identifier() -> BoxedStrategy<J> {
    prop_oneof![12 => select(&ID_TYPES[..8]), 1 => select(&ID_TYPES[8..])]
        .prop_flat_map(|k| {
            (field(Just(J::s(k))), identifier_value(k))
                .prop_map(|(t, v)| J::obj(vec![("type", Some(t)), ("value", Some(v))]))
        })
        .boxed()
}

/// A rights request (`gdpr.requests`): erase or export, by identifier or customer id.
pub fn request() -> BoxedStrategy<J> {
    (
        maybe(
            0,
            prop_oneof![8 => (0u8..8).prop_map(|n| J::Str(format!("r-{n}"))), 1 => hostile()],
        ),
        maybe(0, field(mostly(&["erase", "export", "forget", "ERASE"], 2))),
        prop_oneof![
            1 => maybe(0, field(subject_identifier())).prop_map(|i| (i, None)),
            1 => maybe(0, field(customer_id())).prop_map(|c| (None, c)),
            1 => (maybe(2, subject_identifier()), maybe(2, customer_id())),
        ],
        maybe(6, field(time())),
    )
        .prop_map(
            |(request_id, kind, (identifier, customer_id), requested_at)| {
                J::obj(vec![
                    ("request_id", request_id),
                    ("kind", kind),
                    ("identifier", identifier),
                    ("customer_id", customer_id),
                    ("requested_at", requested_at),
                ])
            },
        )
        .boxed()
}

/// An operator command (`identity.commands`): a split or a merge.
pub fn command() -> BoxedStrategy<J> {
    let id = maybe(
        0,
        prop_oneof![8 => (0u8..8).prop_map(|n| J::Str(format!("c-{n}"))), 1 => hostile()],
    );
    // Mostly the customer that holds the identifier: a split that can be carried out.
    let holder = prop_oneof![3 => Just(J::s("@HOLDER@")), 2 => customer_id()];
    let split = (
        maybe(1, field(holder)),
        maybe(1, field(subject_identifier())),
    )
        .prop_map(|(c, i)| {
            vec![
                ("kind", Some(J::s("split"))),
                ("customer_id", c),
                ("identifier", i),
            ]
        });
    let ids = prop_oneof![
        6 => (0u8..4, 0u8..4).prop_map(|(a, b)| J::Arr(vec![J::Str(format!("@CUS{a}@")), J::Str(format!("@CUS{b}@"))])),
        1 => prop::collection::vec(customer_id(), 0..4).prop_map(J::Arr),
    ];
    let merge = maybe(1, field(ids))
        .prop_map(|ids| vec![("kind", Some(J::s("merge"))), ("customer_ids", ids)]);
    let other = field(pick(&["explode", "", "SPLIT"])).prop_map(|k| vec![("kind", Some(k))]);
    (
        id,
        prop_oneof![4 => split, 4 => merge, 1 => other],
        maybe(5, field(text(&["two people behind one family address"]))),
        maybe(6, field(time())),
    )
        .prop_map(|(command_id, mut fields, reason, requested_at)| {
            fields.insert(0, ("command_id", command_id));
            fields.push(("reason", reason));
            fields.push(("requested_at", requested_at));
            J::obj(fields)
        })
        .boxed()
}

// ---------------------------------------------------------------------- mutations

/// A change to an input, of its tree (before rendering) or of its bytes (after).
#[derive(Clone, Debug)]
pub enum Mutation {
    /// A node replaced by a hostile value (type confusion, huge number, deep nesting...).
    Replace(Index, J),
    /// A key of an object repeated with another value.
    DuplicateKey(Index, Index, J),
    /// A field of an object removed.
    Remove(Index, Index),
    FlipByte(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    /// A UTF-8 byte order mark before the text.
    Bom,
    /// Something after the document.
    Trailing(Vec<u8>),
}

/// Bytes that change what a JSON text means: a NUL, a BOM, structure, an escape.
const SPECIAL_BYTES: [&[u8]; 10] = [
    b"\0",
    b"\xef\xbb\xbf",
    b"{",
    b"}",
    b"\"",
    b",",
    b"\\",
    b"[",
    b":",
    b"\\u",
];

pub fn mutation() -> BoxedStrategy<Mutation> {
    let bytes = prop_oneof![
        select(&INVALID_UTF8[..]).prop_map(<[u8]>::to_vec),
        select(&SPECIAL_BYTES[..]).prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        4 => (any::<Index>(), hostile()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => (any::<Index>(), any::<Index>(), hostile()).prop_map(|(o, k, v)| Mutation::DuplicateKey(o, k, v)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(o, k)| Mutation::Remove(o, k)),
        2 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::FlipByte(i, x)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), bytes.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => Just(Mutation::Bom),
        1 => bytes.prop_map(Mutation::Trailing),
    ]
    .boxed()
}

/// Applies the tree mutations, renders, then applies the byte mutations in order.
pub fn apply(mut doc: J, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Replace(i, v) => {
                let n = i.index(doc.count());
                if let Some(node) = doc.node_mut(n) {
                    *node = v.clone();
                }
            }
            Mutation::DuplicateKey(o, k, v) => {
                let objects = doc.objects();
                if objects > 0 {
                    let mut n = o.index(objects);
                    if let Some(fields) = doc.object_mut(&mut n) {
                        if !fields.is_empty() {
                            let key = fields[k.index(fields.len())].0.clone();
                            fields.push((key, v.clone()));
                        }
                    }
                }
            }
            Mutation::Remove(o, k) => {
                let objects = doc.objects();
                if objects > 0 {
                    let mut n = o.index(objects);
                    if let Some(fields) = doc.object_mut(&mut n) {
                        if !fields.is_empty() {
                            fields.remove(k.index(fields.len()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut bytes = doc.render();
    for m in mutations {
        mutate_bytes(&mut bytes, m);
    }
    bytes
}

/// Applies a byte-level mutation (tree mutations do nothing here).
pub fn mutate_bytes(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::FlipByte(i, x) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        Mutation::Truncate(i) => {
            let at = i.index(bytes.len() + 1);
            bytes.truncate(at);
        }
        Mutation::Insert(i, b) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Delete(i, n) if !bytes.is_empty() => {
            let at = i.index(bytes.len());
            let end = (at + *n as usize).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::Bom => {
            bytes.splice(0..0, [0xef, 0xbb, 0xbf]);
        }
        Mutation::Trailing(b) => bytes.extend_from_slice(b),
        _ => {}
    }
}
