//! `unicus schemas check`: the compatibility guard of `schemas/`.
//!
//! Every schema `schemas/{input,output}/<name>.avsc` must be able to read the data written
//! with each of its previous versions, kept as `schemas/history/<name>/v<N>.avsc`
//! (Avro schema resolution, apache-avro's `SchemaCompatibility`): old records stay in the
//! topics (`profiles.merged` is compacted and kept), so every kept version counts, not
//! only the last. Also checked: every field has a `doc`, every schema has a history, and a
//! named type used by several files (`unicus.common.Address`...) is the same in all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::schema::{ResolvedSchema, Schema};
use apache_avro::schema_compatibility::SchemaCompatibility;

/// What the check found for one schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub name: String,
    /// Latest kept version, if any.
    pub latest: Option<u32>,
    /// True if the schema is the latest kept version, unchanged.
    pub unchanged: bool,
    pub problems: Vec<String>,
}

/// The whole check of a `schemas/` directory.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    /// Problems across files (named types that differ).
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.verdicts.iter().all(|v| v.problems.is_empty())
    }

    /// One line per schema, then the problems.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for v in &self.verdicts {
            let state = if v.problems.is_empty() {
                "ok  "
            } else {
                "FAIL"
            };
            let note = match (v.latest, v.unchanged) {
                (Some(n), true) => format!("unchanged since v{n}"),
                (Some(n), false) => format!(
                    "changed, reads every version up to v{n}: keep it as v{} when released",
                    n + 1
                ),
                (None, _) => "no history".into(),
            };
            out += &format!("{state} {} ({note})\n", v.name);
            for p in &v.problems {
                out += &format!("     {p}\n");
            }
        }
        for p in &self.problems {
            out += &format!("FAIL {p}\n");
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read `{path}`: {source}")]
pub struct CheckError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn read(path: &Path) -> Result<String, CheckError> {
    std::fs::read_to_string(path).map_err(|source| CheckError {
        path: path.to_path_buf(),
        source,
    })
}

/// `*.avsc` files of a directory, sorted.
fn avsc_files(dir: &Path) -> Result<Vec<PathBuf>, CheckError> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(CheckError {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    files.sort();
    Ok(files)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Fields without a `doc`, by path.
fn undocumented(json: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(o) => {
            if let Some(serde_json::Value::Array(fields)) = o.get("fields") {
                let record = o.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                for f in fields {
                    let name = f.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                    let here = format!("{path}{record}.{name}");
                    if f.get("doc")
                        .and_then(|d| d.as_str())
                        .is_none_or(|d| d.trim().is_empty())
                    {
                        out.push(here.clone());
                    }
                    if let Some(t) = f.get("type") {
                        undocumented(t, "", out);
                    }
                }
            }
            for k in ["items", "values"] {
                if let Some(t) = o.get(k) {
                    undocumented(t, path, out);
                }
            }
        }
        serde_json::Value::Array(branches) => {
            branches.iter().for_each(|b| undocumented(b, path, out))
        }
        _ => {}
    }
}

/// The canonical form of a named type with the named types inside it by name only, so
/// that a type defined inline in one file and referenced by name in another compare equal
/// (each named type is compared on its own).
fn shallow_form(schema: &Schema) -> String {
    fn walk(v: &mut serde_json::Value, depth: usize) {
        match v {
            serde_json::Value::Object(o) => {
                let named = matches!(
                    o.get("type").and_then(|t| t.as_str()),
                    Some("record" | "enum" | "fixed")
                );
                if named && depth > 0 {
                    if let Some(name) = o.get("name").cloned() {
                        *v = name;
                        return;
                    }
                }
                o.values_mut().for_each(|c| walk(c, depth + 1));
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|c| walk(c, depth + 1)),
            _ => {}
        }
    }
    let mut json: serde_json::Value =
        serde_json::from_str(&schema.canonical_form()).unwrap_or_default();
    walk(&mut json, 0);
    json.to_string()
}

/// Checks `dir` (the repository's `schemas/`).
pub fn check(dir: &Path) -> Result<Report, CheckError> {
    let mut report = Report::default();
    // Named type -> (canonical form, first file defining it).
    let mut named: BTreeMap<String, (String, String)> = BTreeMap::new();
    for sub in ["input", "output"] {
        for path in avsc_files(&dir.join(sub))? {
            let name = stem(&path);
            let mut verdict = Verdict {
                name: format!("{sub}/{name}"),
                latest: None,
                unchanged: false,
                problems: Vec::new(),
            };
            let text = read(&path)?;
            let current = match Schema::parse_str(&text) {
                Ok(s) => s,
                Err(e) => {
                    verdict.problems.push(format!("does not parse: {e}"));
                    report.verdicts.push(verdict);
                    continue;
                }
            };
            let mut missing_docs = Vec::new();
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
                undocumented(&json, "", &mut missing_docs);
            }
            for m in missing_docs {
                verdict.problems.push(format!("field `{m}` has no doc"));
            }
            if let Ok(resolved) = ResolvedSchema::try_from(&current) {
                for (n, s) in resolved.get_names() {
                    let form = shallow_form(s);
                    match named.get(&n.fullname(None)) {
                        Some((f, first)) if *f != form => report.problems.push(format!(
                            "named type {} differs between {first} and {sub}/{name}",
                            n.fullname(None)
                        )),
                        Some(_) => {}
                        None => {
                            named.insert(n.fullname(None), (form, format!("{sub}/{name}")));
                        }
                    }
                }
            }
            let mut versions: Vec<(u32, PathBuf)> = avsc_files(&dir.join("history").join(&name))?
                .into_iter()
                .filter_map(|p| {
                    let n = stem(&p).strip_prefix('v')?.parse().ok()?;
                    Some((n, p))
                })
                .collect();
            versions.sort();
            if versions.is_empty() {
                verdict.problems.push(format!(
                    "no previous version kept: add history/{name}/v1.avsc (a copy of it) when it is first published"
                ));
            }
            for (n, p) in &versions {
                let old = match Schema::parse_str(&read(p)?) {
                    Ok(s) => s,
                    Err(e) => {
                        verdict.problems.push(format!("v{n} does not parse: {e}"));
                        continue;
                    }
                };
                if let Err(e) = SchemaCompatibility::can_read(&old, &current) {
                    verdict.problems.push(format!(
                        "not backward compatible with v{n}: data written with v{n} cannot be read: {e}"
                    ));
                }
                verdict.latest = Some(*n);
                verdict.unchanged = old.canonical_form() == current.canonical_form();
            }
            report.verdicts.push(verdict);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    const V1: &str = r#"{"type":"record","name":"T","doc":"t","fields":[{"name":"a","type":"string","doc":"a"}]}"#;
    const ADDS_OPTIONAL: &str = r#"{"type":"record","name":"T","doc":"t","fields":[{"name":"a","type":"string","doc":"a"},{"name":"b","type":["null","long"],"default":null,"doc":"b"}]}"#;
    const ADDS_REQUIRED: &str = r#"{"type":"record","name":"T","doc":"t","fields":[{"name":"a","type":"string","doc":"a"},{"name":"b","type":"long","doc":"b"}]}"#;

    #[test]
    fn an_optional_field_passes_and_a_required_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "history/t/v1.avsc", V1);
        write(dir.path(), "output/t.avsc", ADDS_OPTIONAL);
        let report = check(dir.path()).unwrap();
        assert!(report.ok(), "{}", report.describe());
        assert_eq!(report.verdicts[0].latest, Some(1));
        assert!(!report.verdicts[0].unchanged);

        write(dir.path(), "output/t.avsc", ADDS_REQUIRED);
        let report = check(dir.path()).unwrap();
        assert!(!report.ok());
        assert!(
            report
                .describe()
                .contains("not backward compatible with v1"),
            "{}",
            report.describe()
        );
    }

    #[test]
    fn undocumented_fields_and_missing_history_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "input/u.avsc",
            r#"{"type":"record","name":"U","fields":[{"name":"x","type":{"type":"record","name":"X","fields":[{"name":"y","type":"int"}]},"doc":"x"}]}"#,
        );
        let text = check(dir.path()).unwrap().describe();
        assert!(text.contains("field `X.y` has no doc"), "{text}");
        assert!(text.contains("no previous version kept"), "{text}");
    }
}
