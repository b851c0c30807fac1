//! Avro input for the fuzz suite: writer schemas in an in-memory registry, looked up once,
//! and Confluent-framed records encoded from generated documents, then mutated.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use unicus::kafka::avro::registry::InputFormats;
use unicus::kafka::avro::schemas::{catalogue, SchemaFile, TopicSchema};
use unicus::model::SOURCE_CHANNELS;
use unicus::settings::avro::SchemaRegistrySettings;
use unicus::sim::registry_double::RegistryDouble;

use super::doc::J;
use super::gen;
use super::harness::{Entry, Op};

/// The input topics records are given on: every channel, one that has no schema of its
/// own (read with the generic touchpoint schema), requests and commands.
pub const TOPICS: [&str; 11] = [
    "touchpoints.web",
    "touchpoints.app",
    "touchpoints.store",
    "touchpoints.marketplace",
    "touchpoints.social",
    "touchpoints.crm",
    "touchpoints.service",
    "touchpoints.email",
    "touchpoints.kiosk",
    "gdpr.requests",
    "identity.commands",
];

/// A schema id no registry knows.
pub const UNKNOWN_ID: u32 = 9_999;

/// The registry, the writer schemas registered in it (by id, in a fixed order, so that
/// the ids in the corpus stay valid) and the runtime's decoder with all of them looked up.
pub struct AvroWorld {
    pub formats: InputFormats,
    pub writers: Vec<(u32, &'static TopicSchema)>,
    _registry: RegistryDouble,
    _runtime: tokio::runtime::Runtime,
}

impl AvroWorld {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let registry = runtime.block_on(RegistryDouble::start()).expect("registry");
        let c = catalogue();
        let mut schemas: Vec<(String, &'static TopicSchema)> = SOURCE_CHANNELS
            .iter()
            .map(|ch| (format!("touchpoints.{ch}-value"), c.input(ch)))
            .collect();
        schemas.push(("touchpoint-value".into(), c.input("kiosk")));
        schemas.push(("gdpr.requests-value".into(), c.requests()));
        schemas.push(("identity.commands-value".into(), c.commands()));
        // An older producer of web events, without its last three fields: read by
        // schema resolution, not by the direct decoder.
        schemas.push(("older-web-value".into(), older_web()));
        let writers: Vec<(u32, &'static TopicSchema)> = schemas
            .iter()
            .map(|(subject, s)| (registry.register(subject, s.text()).expect("register"), *s))
            .collect();
        let formats = InputFormats::new(
            &SchemaRegistrySettings {
                url: registry.url(),
                ..SchemaRegistrySettings::default()
            },
            "",
            &SOURCE_CHANNELS.map(String::from),
            "gdpr.requests",
            "identity.commands",
        )
        .expect("input formats");
        let ids: Vec<u32> = writers
            .iter()
            .map(|(id, _)| *id)
            .chain([UNKNOWN_ID])
            .collect();
        let framed: Vec<(&str, Vec<u8>)> = TOPICS
            .iter()
            .flat_map(|t| {
                ids.iter()
                    .map(move |id| (*t, unicus::kafka::avro::frame(*id, &[])))
            })
            .collect();
        let wanted = formats.unknown_ids(framed.iter().map(|(t, b)| (*t, b.as_slice())));
        runtime
            .block_on(formats.prepare(&wanted))
            .expect("writer schemas looked up");
        Self {
            formats,
            writers,
            _registry: registry,
            _runtime: runtime,
        }
    }
}

/// The web schema less `page`, `cart`, `order` and `referrer`.
fn older_web() -> &'static TopicSchema {
    let mut schema: Value = serde_json::from_str(catalogue().input("web").text()).expect("schema");
    schema["name"] = Value::String("OlderWeb".into());
    let fields = schema["fields"].as_array_mut().expect("fields");
    fields.retain(|f| {
        !["page", "cart", "order", "referrer"].contains(&f["name"].as_str().unwrap_or(""))
    });
    let text: &'static str = Box::leak(schema.to_string().into_boxed_str());
    Box::leak(Box::new(
        TopicSchema::parse(SchemaFile {
            dir: "input",
            name: "older-web",
            text,
        })
        .expect("older web schema"),
    ))
}

/// Longs that are out of every range: of chrono, of a day count, of an index.
const EXTREME_LONGS: [i64; 12] = [
    i64::MIN,
    i64::MAX,
    -1,
    0,
    1 << 31,
    -(1 << 31) - 1,
    253_402_300_800_000,
    -62_167_219_200_001,
    8_210_266_876_800_000,
    1 << 53,
    i64::MAX / 1000,
    -(1 << 62),
];

/// A change to an Avro body.
#[derive(Clone, Debug)]
pub enum AvroMutation {
    Bytes(gen::Mutation),
    /// A zig-zag varint inserted (a huge length, count or union branch).
    Varint(Index, i64),
    /// A touchpoint's `occurred_at` (its fourth field) replaced.
    Time(i64),
    /// The record cut inside its 5-byte header.
    ShortHeader(u8),
    /// The document sent as JSON text on the topic instead.
    AsJson,
}

fn avro_mutation() -> BoxedStrategy<AvroMutation> {
    let long = prop_oneof![
        3 => proptest::sample::select(&EXTREME_LONGS[..]),
        1 => any::<i64>(),
    ];
    prop_oneof![
        6 => gen::mutation().prop_map(AvroMutation::Bytes),
        3 => (any::<Index>(), long.clone()).prop_map(|(i, v)| AvroMutation::Varint(i, v)),
        2 => long.prop_map(AvroMutation::Time),
        1 => (0u8..5).prop_map(AvroMutation::ShortHeader),
        1 => Just(AvroMutation::AsJson),
    ]
    .boxed()
}

/// A record on an input topic: a generated document of the writer schema's kind,
/// encoded, framed, mutated (or random bytes after a real header). The writer is mostly
/// the topic's own schema, sometimes an older one, another topic's, or an unknown id.
pub fn avro_op(writers: &[(u32, &'static TopicSchema)]) -> BoxedStrategy<Op> {
    let writers = writers.to_vec();
    proptest::sample::select(&TOPICS[..])
        .prop_flat_map(move |topic| {
            let own = reader_name(topic);
            let of = |name: &str| writers.iter().copied().filter(|(_, s)| s.file.name == name).collect::<Vec<_>>();
            let (own, older) = (of(own), of("older-web"));
            let writer = prop_oneof![
                14 => proptest::sample::select(own).prop_map(Some),
                2 => proptest::sample::select(older).prop_map(Some),
                3 => proptest::sample::select(writers.clone()).prop_map(Some),
                1 => Just(None),
            ];
            (Just(topic), writer)
        })
        .prop_flat_map(|(topic, writer)| {
            let doc = match writer.map(|(_, s)| s.file.name) {
                Some("gdpr.requests") => gen::request(),
                Some("identity.commands") => gen::command(),
                _ => gen::touchpoint(),
            };
            (
                Just(topic),
                Just(writer),
                doc,
                prop_oneof![
                    3 => Just(Vec::new()),
                    2 => prop::collection::vec(avro_mutation(), 1..3),
                ],
                prop_oneof![12 => Just(None), 1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some)],
                prop_oneof![1 => Just(None), 1 => (1_600_000_000_000i64..1_900_000_000_000).prop_map(Some)],
            )
        })
        .prop_map(|(topic, writer, doc, mutations, random_body, timestamp)| {
            AvroSpec {
                topic,
                writer,
                doc,
                mutations,
                random_body,
                timestamp,
            }
            .op()
        })
        .boxed()
}

/// The name of the schema the runtime reads a topic with.
fn reader_name(topic: &str) -> &str {
    match topic {
        "gdpr.requests" | "identity.commands" => topic,
        t if SOURCE_CHANNELS
            .iter()
            .any(|c| t.strip_prefix("touchpoints.") == Some(c)) =>
        {
            t
        }
        _ => "touchpoint",
    }
}

/// What an Avro record is made of, before it is written.
#[derive(Debug)]
struct AvroSpec {
    topic: &'static str,
    /// The writer schema and its id; `None`: an id no registry knows.
    writer: Option<(u32, &'static TopicSchema)>,
    doc: J,
    mutations: Vec<AvroMutation>,
    random_body: Option<Vec<u8>>,
    timestamp: Option<i64>,
}

impl AvroSpec {
    fn op(self) -> Op {
        let (id, schema) = match self.writer {
            Some((id, schema)) => (id, Some(schema)),
            None => (UNKNOWN_ID, None),
        };
        let text = self.doc.render();
        let mut body = match (&self.random_body, schema) {
            (Some(random), _) => random.clone(),
            (None, Some(s)) => serde_json::from_slice::<Value>(&text)
                .ok()
                .and_then(|v| s.encode(&v).ok())
                .unwrap_or_else(|| text.clone()),
            (None, None) => text.clone(),
        };
        let mut bytes = None;
        for m in &self.mutations {
            match m {
                AvroMutation::Bytes(m) => gen::mutate_bytes(&mut body, m),
                AvroMutation::Varint(i, v) => {
                    let at = i.index(body.len() + 1);
                    body.splice(at..at, zigzag(*v));
                }
                AvroMutation::Time(v) => replace_fourth_long(&mut body, *v),
                AvroMutation::ShortHeader(n) => {
                    bytes = Some(unicus::kafka::avro::frame(id, &[])[..*n as usize].to_vec())
                }
                AvroMutation::AsJson => bytes = Some(text.clone()),
            }
        }
        Op::Input {
            entry: Entry::Topic(self.topic),
            bytes: bytes.unwrap_or_else(|| unicus::kafka::avro::frame(id, &body)),
            timestamp: self.timestamp,
            key: None,
        }
    }
}

/// The zig-zag varint of a long, as Avro writes it.
pub fn zigzag(v: i64) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Reads one zig-zag varint at the start of `bytes`: its value and length.
fn read_long(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut z = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64 ^ -((z & 1) as i64), i + 1));
        }
    }
    None
}

/// Replaces the long after three strings (a touchpoint's `occurred_at`), if the body
/// has that shape.
fn replace_fourth_long(body: &mut Vec<u8>, v: i64) {
    let mut at = 0;
    for _ in 0..3 {
        let Some((len, n)) = read_long(&body[at..]) else {
            return;
        };
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        at += n + len;
        if at > body.len() {
            return;
        }
    }
    let Some((_, n)) = read_long(&body[at..]) else {
        return;
    };
    body.splice(at..at + n, zigzag(v));
}
