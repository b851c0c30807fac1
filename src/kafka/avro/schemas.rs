//! The schemas of `schemas/`, embedded in the binary and parsed once.
//!
//! One schema per input channel (`schemas/input/touchpoints.<channel>.avsc`; a channel
//! configured beyond the built-in eight reads `touchpoint.avsc`, the envelope with every
//! optional part), one for `gdpr.requests`, one for `identity.commands`, one per
//! reference topic (`reference.products`, `reference.stores`), and one per output topic
//! (`schemas/output/<topic>.avsc`). `touchpoints.dlq` has none: a dead letter keeps the
//! original bytes, whatever their format. The topics of the configured journeys
//! (`triggers.<journey>`) share one, `schemas/output/triggers.journey.avsc`: their records
//! have the same shape, and the journeys are only known at run time.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::Schema;

use super::codec;
use crate::engine::reference::RefTable;
use crate::model::output::Topic;

/// One schema file of `schemas/`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// `input` or `output`.
    pub dir: &'static str,
    /// The topic name without prefix (`touchpoints.web`), `touchpoint` for the generic
    /// touchpoint, or `triggers.journey` for every journey's topic.
    pub name: &'static str,
    pub text: &'static str,
}

macro_rules! schema_file {
    ($dir:literal, $name:literal) => {
        SchemaFile {
            dir: $dir,
            name: $name,
            text: include_str!(concat!("../../../schemas/", $dir, "/", $name, ".avsc")),
        }
    };
}

/// Every schema file, as compiled in.
pub const FILES: [SchemaFile; 23] = [
    schema_file!("input", "touchpoints.web"),
    schema_file!("input", "touchpoints.app"),
    schema_file!("input", "touchpoints.store"),
    schema_file!("input", "touchpoints.marketplace"),
    schema_file!("input", "touchpoints.social"),
    schema_file!("input", "touchpoints.crm"),
    schema_file!("input", "touchpoints.service"),
    schema_file!("input", "touchpoints.email"),
    schema_file!("input", "touchpoint"),
    schema_file!("input", "gdpr.requests"),
    schema_file!("input", "identity.commands"),
    schema_file!("input", "reference.products"),
    schema_file!("input", "reference.stores"),
    schema_file!("output", "touchpoints.resolved"),
    schema_file!("output", "identity.changes"),
    schema_file!("output", "profiles.merged"),
    schema_file!("output", "consent.changes"),
    schema_file!("output", "triggers.cart_abandoned"),
    schema_file!("output", "triggers.purchase_completed"),
    schema_file!("output", "triggers.lifecycle_changed"),
    schema_file!("output", "triggers.journey"),
    schema_file!("output", "audiences.changes"),
    schema_file!("output", "gdpr.receipts"),
];

/// The name of the generic touchpoint schema.
pub const GENERIC_TOUCHPOINT: &str = "touchpoint";

/// The name of the schema of every journey's topic (`triggers.<journey>`).
pub const JOURNEY: &str = "triggers.journey";

/// A parsed schema with what encoding and decoding against it need, prepared once.
pub struct TopicSchema {
    pub file: SchemaFile,
    pub schema: &'static Schema,
    /// Named types of the schema, to follow references.
    pub names: HashMap<Name, &'static Schema>,
    pub resolved: ResolvedSchema<'static>,
    /// Parsing canonical form: equal forms read each other without resolution.
    pub canonical: String,
    /// The schema compiled for the output writer.
    plan: codec::Plan,
}

impl std::fmt::Debug for TopicSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSchema")
            .field("name", &self.file.name)
            .finish_non_exhaustive()
    }
}

impl TopicSchema {
    /// Parses a schema. The parsed schema lives as long as the process (schemas are parsed
    /// once, at start, and a bounded number of times).
    pub fn parse(file: SchemaFile) -> Result<Self, apache_avro::Error> {
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(file.text)?));
        let resolved = ResolvedSchema::try_from(schema)?;
        let names = resolved
            .get_names()
            .iter()
            .map(|(n, s)| (n.clone(), *s))
            .collect();
        let plan = codec::Plan::new(schema, &names);
        Ok(Self {
            file,
            schema,
            names,
            canonical: schema.canonical_form(),
            resolved,
            plan,
        })
    }

    /// Writes a JSON document as an Avro datum of this schema ([`codec::encode`]).
    pub fn encode(&self, doc: &serde_json::Value) -> Result<Vec<u8>, codec::CodecError> {
        codec::encode(doc, &self.plan)
    }

    /// Reads an Avro datum written with this very schema ([`codec::decode_direct`]).
    pub fn decode_direct(&self, body: &[u8], nulls: codec::Nulls) -> Option<serde_json::Value> {
        codec::decode_direct(body, &self.plan, nulls)
    }

    /// The schema's JSON text as registered.
    pub fn text(&self) -> &'static str {
        self.file.text
    }
}

/// Every embedded schema, by name.
pub struct Catalogue {
    by_name: HashMap<&'static str, TopicSchema>,
}

impl Catalogue {
    /// The schema a record of the input topic of `channel` is read with.
    pub fn input(&self, channel: &str) -> &TopicSchema {
        let name = format!("touchpoints.{channel}");
        self.by_name
            .get(name.as_str())
            .unwrap_or_else(|| &self.by_name[GENERIC_TOUCHPOINT])
    }

    /// The schema of `gdpr.requests`.
    pub fn requests(&self) -> &TopicSchema {
        &self.by_name["gdpr.requests"]
    }

    /// The schema of `identity.commands`.
    pub fn commands(&self) -> &TopicSchema {
        &self.by_name["identity.commands"]
    }

    /// The value schema of a reference topic (`reference.products`, `reference.stores`).
    pub fn reference(&self, table: RefTable) -> &TopicSchema {
        &self.by_name[table.topic()]
    }

    /// The value schema of an output topic (none for the dead-letter topic); every
    /// journey's topic has [`JOURNEY`].
    pub fn output(&self, topic: Topic) -> Option<&TopicSchema> {
        match topic {
            Topic::Journey(_) => self.by_name.get(JOURNEY),
            _ => self.by_name.get(topic.name()),
        }
    }

    /// A schema by file name (`touchpoints.web`, `touchpoint`, `profiles.merged`...).
    pub fn get(&self, name: &str) -> Option<&TopicSchema> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TopicSchema> {
        FILES.iter().map(|f| &self.by_name[f.name])
    }
}

/// The embedded schemas, parsed on first use.
///
/// # Panics
/// If an embedded schema does not parse: they are checked by the tests.
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue {
        by_name: FILES
            .iter()
            .map(|f| {
                let parsed = TopicSchema::parse(*f)
                    .unwrap_or_else(|e| panic!("embedded schema {}.avsc: {e}", f.name));
                (f.name, parsed)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_parses_and_every_output_topic_but_the_dlq_has_one() {
        let c = catalogue();
        assert_eq!(c.iter().count(), FILES.len());
        for t in Topic::ALL {
            assert_eq!(c.output(t).is_some(), t != Topic::Dlq, "{}", t.name());
        }
        assert_eq!(c.input("web").file.name, "touchpoints.web");
        assert_eq!(c.input("kiosk").file.name, GENERIC_TOUCHPOINT);
        // Any journey's topic, whatever its name: journeys are configured, not built in.
        assert!(c.output(Topic::journey("x")).is_some());
        assert_eq!(
            c.output(Topic::journey("browse_no_cart"))
                .map(|s| s.file.name),
            Some(JOURNEY)
        );
    }

    /// A `triggers.<journey>` record as the engine writes it in JSON.
    fn journey_trigger() -> serde_json::Value {
        use crate::model::output::{rfc3339, DAY_MS};
        let entered = 1_772_357_400_000; // 2026-03-01T09:30:00Z
        serde_json::json!({
            "trigger_id": format!("browse_no_cart:c-1:{entered}"),
            "customer_id": "c-1",
            "journey": "browse_no_cart",
            "entered_at": rfc3339(entered),
            "entry_event_id": "e-42",
            "due_at": rfc3339(entered + DAY_MS),
            "purpose": "marketing",
            "channels_allowed": ["email", "sms"],
            "at": rfc3339(entered + DAY_MS + 250),
        })
    }

    /// What apache-avro's generic reader (a writer schema resolved to `schema`) reads of
    /// `body`, as JSON.
    fn generic_read(schema: &TopicSchema, body: &[u8], nulls: codec::Nulls) -> serde_json::Value {
        let value = apache_avro::reader::datum::GenericDatumReader::builder(schema.schema)
            .resolved_writer_schemata(schema.resolved.clone())
            .build()
            .unwrap()
            .read_value(&mut &body[..])
            .unwrap();
        codec::to_json(value, schema.schema, &schema.names, nulls).unwrap()
    }

    #[test]
    fn a_journey_trigger_goes_to_avro_and_back_unchanged() {
        let schema = catalogue()
            .output(Topic::journey("browse_no_cart"))
            .unwrap();
        let doc = journey_trigger();
        let body = schema.encode(&doc).unwrap();
        for nulls in [codec::Nulls::Keep, codec::Nulls::Drop] {
            assert_eq!(schema.decode_direct(&body, nulls), Some(doc.clone()));
        }
        // What the generic reader (a writer schema resolved to this one) reads, too.
        assert_eq!(generic_read(schema, &body, codec::Nulls::Keep), doc);
        // A field missing is refused, not written as a default.
        let mut partial = doc.clone();
        partial.as_object_mut().unwrap().remove("due_at");
        assert!(schema.encode(&partial).is_err());
    }

    /// A reference record, as Avro and back, reads as its JSON form: the engine parses
    /// the decoded document into the same entry as the JSON text.
    #[test]
    fn reference_records_go_to_avro_and_back_and_read_as_their_json_form() {
        use crate::engine::config::EngineConfig;
        use crate::engine::reference::parse_record;
        let config = EngineConfig::default();
        let cases = [
            (
                RefTable::Products,
                serde_json::json!({"category_path": ["Sport", "Montagne", "escalade"],
                    "brand": "Simond", "price": 129.9, "currency": "EUR"}),
            ),
            (
                RefTable::Products,
                serde_json::json!({"category_path": [], "price": 0.5}),
            ),
            (
                RefTable::Stores,
                serde_json::json!({"name": "Part-Dieu", "city": "Lyon", "postal_code": "69003",
                    "region": "Auvergne-Rhône-Alpes", "format": "megastore"}),
            ),
            // Every field is optional.
            (RefTable::Stores, serde_json::json!({})),
            (RefTable::Products, serde_json::json!({})),
        ];
        for (table, doc) in cases {
            let schema = catalogue().reference(table);
            assert_eq!(schema.file.name, table.topic());
            assert_eq!(schema.file.dir, "input");
            let body = schema.encode(&doc).unwrap();
            let decoded = schema.decode_direct(&body, codec::Nulls::Drop);
            assert_eq!(decoded.as_ref(), Some(&doc), "{doc}");
            // What the generic reader (a writer schema resolved to this one) reads, too.
            assert_eq!(generic_read(schema, &body, codec::Nulls::Drop), doc);
            let as_avro = serde_json::to_vec(&decoded.unwrap()).unwrap();
            let as_json = serde_json::to_vec(&doc).unwrap();
            assert_eq!(
                parse_record(table, Some(b"K-1"), Some(&as_avro), &config),
                parse_record(table, Some(b"K-1"), Some(&as_json), &config),
            );
            assert!(parse_record(table, Some(b"K-1"), Some(&as_avro), &config).is_ok());
        }
        // A field of the wrong type is refused, not written.
        let products = catalogue().reference(RefTable::Products);
        assert!(products
            .encode(&serde_json::json!({"price": "cher"}))
            .is_err());
        assert!(products
            .encode(&serde_json::json!({"category_path": [1, 2]}))
            .is_err());
    }
}
