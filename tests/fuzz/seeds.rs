//! The corpus of tests/fuzz/corpus/, replayed before any generated input: JSON scenarios
//! through every JSON entry point, Avro records on their topic as the runtime decodes them.

use std::path::{Path, PathBuf};

use unicus::engine::InputKind;

use super::avro::{AvroWorld, TOPICS};
use super::harness::{Entry, Harness, Op};

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus")
}

/// The files of a corpus directory, in name order.
pub fn files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(dir))
        .unwrap_or_else(|e| panic!("corpus directory {dir}: {e}"))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// A corpus record: its bytes, and the broker timestamp it comes with.
pub struct Seed {
    pub bytes: Vec<u8>,
    pub timestamp: Option<i64>,
}

/// The records of a JSON corpus file: its non-blank lines, trimmed as replay trims them.
/// A line `#timestamp=<ms>` is no record: it gives the next record its broker timestamp.
pub fn lines(bytes: &[u8]) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut timestamp = None;
    for line in bytes.split(|b| *b == b'\n').map(<[u8]>::trim_ascii) {
        if let Some(t) = line.strip_prefix(b"#timestamp=") {
            let t = std::str::from_utf8(t).ok().and_then(|t| t.parse().ok());
            timestamp = Some(t.expect("#timestamp= takes a number of milliseconds"));
        } else if !line.is_empty() {
            out.push(Seed {
                bytes: line.to_vec(),
                timestamp: timestamp.take(),
            });
        }
    }
    out
}

/// The entry points a JSON scenario is run through, each over a fresh engine: as a
/// replay file, as records of their own kind's topic (text, then decoded document), and
/// each on the topic of another kind.
pub fn json_passes(line: &[u8]) -> [Entry; 4] {
    let natural = InputKind::of_line(line).unwrap_or(InputKind::Touchpoint);
    let other = match natural {
        InputKind::Touchpoint => InputKind::Request,
        InputKind::Request => InputKind::Command,
        InputKind::Command => InputKind::Touchpoint,
        InputKind::Reference => InputKind::Touchpoint,
    };
    [
        Entry::Line,
        Entry::Typed(natural),
        Entry::Document(natural),
        Entry::Typed(other),
    ]
}

/// A scenario's operations for one pass: a commit every four records.
pub fn scenario(records: &[Seed], pass: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for (i, r) in records.iter().enumerate() {
        ops.push(Op::Input {
            entry: json_passes(&r.bytes)[pass],
            bytes: r.bytes.clone(),
            timestamp: r.timestamp,
            key: None,
        });
        if i % 4 == 3 {
            ops.push(Op::Commit);
        }
    }
    ops
}

/// Replays the whole corpus; returns how many inputs it gave, or the first failure.
pub fn replay(world: &AvroWorld) -> Result<u64, String> {
    let mut inputs = 0;
    for path in files("json") {
        let records = lines(&std::fs::read(&path).expect("corpus file"));
        for pass in 0..4 {
            let mut h = Harness::new(None);
            h.run(&scenario(&records, pass))
                .map_err(|e| format!("corpus {} (pass {pass}): {e}", path.display()))?;
            inputs += records.len() as u64;
        }
    }
    for path in files("avro") {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let topic = name
            .split_once("--")
            .and_then(|(t, _)| TOPICS.iter().find(|k| **k == t))
            .unwrap_or_else(|| {
                panic!("corpus avro/{name}: the name must start with a topic and `--`")
            });
        let op = Op::Input {
            entry: Entry::Topic(topic),
            bytes: std::fs::read(&path).expect("corpus file"),
            timestamp: None,
            key: None,
        };
        Harness::new(Some(&world.formats))
            .run(&[op])
            .map_err(|e| format!("corpus {}: {e}", path.display()))?;
        inputs += 1;
    }
    Ok(inputs)
}
