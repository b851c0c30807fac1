//! A small Confluent-compatible Schema Registry, in memory, for tests and benchmarks (no
//! registry server can be installed on the machines these run on).
//!
//! It speaks the REST subset that `schema_registry_converter` and confluent-kafka's
//! `SchemaRegistryClient` use: `POST /subjects/{s}/versions` (register),
//! `POST /subjects/{s}` (lookup), `GET /subjects`, `GET /subjects/{s}/versions`,
//! `GET /subjects/{s}/versions/{v|latest}`, `GET /schemas/ids/{id}`,
//! `GET|PUT /config` and `/config/{s}`, `POST /compatibility/subjects/{s}/versions[/{v}]`.
//! Ids are global (the same schema text under two subjects has one id), compatibility
//! levels are checked with apache-avro's schema resolution rules (`BACKWARD` by
//! default), errors carry the registry's codes (40401, 40402, 40403, 409, 42201).
//! [`RegistryDouble::set_outage`] makes every call answer 503 until it is lifted.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[derive(Default)]
struct Registry {
    /// Schema text by id (ids from 1).
    schemas: Vec<(String, String)>,
    /// Ids of each subject's versions, oldest first.
    subjects: BTreeMap<String, Vec<u32>>,
    global_level: Option<String>,
    levels: BTreeMap<String, String>,
}

impl Registry {
    fn text(&self, id: u32) -> Option<&str> {
        self.schemas
            .get((id as usize).checked_sub(1)?)
            .map(|(t, _)| t.as_str())
    }

    fn level(&self, subject: &str) -> String {
        self.levels
            .get(subject)
            .or(self.global_level.as_ref())
            .cloned()
            .unwrap_or_else(|| "BACKWARD".into())
    }

    /// Whether `new` may follow the versions of `subject` at its compatibility level.
    fn compatible(
        &self,
        subject: &str,
        new: &Schema,
        only_version: Option<u32>,
    ) -> Result<(), String> {
        let level = self.level(subject);
        let versions = self.subjects.get(subject).cloned().unwrap_or_default();
        let against: Vec<u32> = match only_version {
            Some(v) => versions.get(v as usize - 1).copied().into_iter().collect(),
            None if level.ends_with("_TRANSITIVE") => versions,
            None => versions.last().copied().into_iter().collect(),
        };
        for id in against {
            let Some(old) = self.text(id).and_then(|t| Schema::parse_str(t).ok()) else {
                continue;
            };
            let backward = || SchemaCompatibility::can_read(&old, new).map(|_| ());
            let forward = || SchemaCompatibility::can_read(new, &old).map(|_| ());
            let result = match level.trim_end_matches("_TRANSITIVE") {
                "NONE" => Ok(()),
                "FORWARD" => forward(),
                "FULL" => backward().and_then(|_| forward()),
                _ => backward(),
            };
            result.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

struct Shared {
    registry: Mutex<Registry>,
    outage: AtomicBool,
    requests: AtomicU64,
}

/// A running registry double; stops when dropped.
pub struct RegistryDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RegistryDouble {
    /// Starts on a free loopback port, on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry::default()),
            outage: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        });
        let state = shared.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// While set, every call answers 503 (a registry outage).
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
    }

    /// Calls answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Registers a schema under a subject as a client would; returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        let mut r = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        register(&mut r, subject, schema).map_err(|(_, v)| v["message"].to_string())
    }

    /// Sets a compatibility level (`None`: the global one).
    pub fn set_level(&self, subject: Option<&str>, level: &str) {
        let mut r = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match subject {
            Some(s) => {
                r.levels.insert(s.into(), level.into());
            }
            None => r.global_level = Some(level.into()),
        }
    }

    /// The subjects and their version count.
    pub fn subjects(&self) -> BTreeMap<String, usize> {
        let r = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        r.subjects
            .iter()
            .map(|(s, v)| (s.clone(), v.len()))
            .collect()
    }
}

impl Drop for RegistryDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Answer = (StatusCode, Value);

fn error(status: StatusCode, code: u32, message: &str) -> Answer {
    (status, json!({"error_code": code, "message": message}))
}

fn register(r: &mut Registry, subject: &str, text: &str) -> Result<u32, Answer> {
    let parsed = Schema::parse_str(text).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            42201,
            &format!("Invalid schema: {e}"),
        )
    })?;
    let canonical = parsed.canonical_form();
    let existing = r
        .schemas
        .iter()
        .position(|(_, c)| *c == canonical)
        .map(|i| i as u32 + 1);
    if let Some(id) = existing {
        if r.subjects.get(subject).is_some_and(|v| v.contains(&id)) {
            return Ok(id);
        }
    }
    r.compatible(subject, &parsed, None).map_err(|e| {
        error(
            StatusCode::CONFLICT,
            409,
            &format!("Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {e}"),
        )
    })?;
    let id = match existing {
        Some(id) => id,
        None => {
            r.schemas.push((text.to_string(), canonical));
            r.schemas.len() as u32
        }
    };
    r.subjects.entry(subject.to_string()).or_default().push(id);
    Ok(id)
}

fn version_answer(r: &Registry, subject: &str, version: &str) -> Answer {
    let Some(versions) = r.subjects.get(subject) else {
        return error(
            StatusCode::NOT_FOUND,
            40401,
            &format!("Subject '{subject}' not found."),
        );
    };
    let index = match version {
        "latest" | "-1" => versions.len().checked_sub(1),
        v => v.parse::<usize>().ok().and_then(|v| v.checked_sub(1)),
    };
    match index.and_then(|i| versions.get(i).map(|id| (i, *id))) {
        Some((i, id)) => (
            StatusCode::OK,
            json!({"subject": subject, "version": i + 1, "id": id, "schema": r.text(id)}),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            40402,
            &format!("Version {version} not found."),
        ),
    }
}

async fn handle(state: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (status, body) = if state.outage.load(Ordering::SeqCst) {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            50301,
            "registry outage (test double)",
        )
    } else {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let bytes = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mut r = state.registry.lock().unwrap_or_else(|e| e.into_inner());
        route(&mut r, &method, &path, &body)
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn decode(segment: &str) -> String {
    segment.replace("%2F", "/").replace("%2f", "/")
}

fn route(r: &mut Registry, method: &Method, path: &str, body: &Value) -> Answer {
    let parts: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let schema_text = body.get("schema").and_then(Value::as_str);
    match (method, parts.as_slice()) {
        (&Method::GET, ["subjects"]) => {
            (StatusCode::OK, json!(r.subjects.keys().collect::<Vec<_>>()))
        }
        (&Method::GET, ["subjects", s, "versions"]) => match r.subjects.get(*s) {
            Some(v) => (StatusCode::OK, json!((1..=v.len()).collect::<Vec<_>>())),
            None => error(
                StatusCode::NOT_FOUND,
                40401,
                &format!("Subject '{s}' not found."),
            ),
        },
        (&Method::GET, ["subjects", s, "versions", v]) => version_answer(r, s, v),
        (&Method::POST, ["subjects", s, "versions"]) => match schema_text {
            None => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                "Invalid schema: no `schema`",
            ),
            Some(text) => match register(r, s, text) {
                Ok(id) => (StatusCode::OK, json!({"id": id})),
                Err(e) => e,
            },
        },
        (&Method::POST, ["subjects", s]) => {
            let Some(versions) = r.subjects.get(*s) else {
                return error(
                    StatusCode::NOT_FOUND,
                    40401,
                    &format!("Subject '{s}' not found."),
                );
            };
            let canonical = schema_text
                .and_then(|t| Schema::parse_str(t).ok())
                .map(|p| p.canonical_form());
            let found = versions.iter().enumerate().find(|(_, id)| {
                canonical.as_deref() == r.schemas.get(**id as usize - 1).map(|(_, c)| c.as_str())
            });
            match found {
                Some((i, id)) => (
                    StatusCode::OK,
                    json!({"subject": s, "version": i + 1, "id": id, "schema": r.text(*id)}),
                ),
                None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
            }
        }
        (&Method::GET, ["schemas", "ids", id]) => match id.parse().ok().and_then(|id| r.text(id)) {
            Some(text) => (StatusCode::OK, json!({"schema": text})),
            None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
        },
        (&Method::GET, ["config"]) => (StatusCode::OK, json!({"compatibilityLevel": r.level("")})),
        (&Method::GET, ["config", s]) => match r.levels.get(*s) {
            Some(l) => (StatusCode::OK, json!({"compatibilityLevel": l})),
            None => error(
                StatusCode::NOT_FOUND,
                40408,
                &format!("Subject '{s}' does not have subject-level compatibility configured"),
            ),
        },
        (&Method::PUT, ["config", rest @ ..]) if rest.len() <= 1 => {
            let Some(level) = body.get("compatibility").and_then(Value::as_str) else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42203,
                    "Invalid compatibility level",
                );
            };
            const LEVELS: [&str; 7] = [
                "NONE",
                "BACKWARD",
                "BACKWARD_TRANSITIVE",
                "FORWARD",
                "FORWARD_TRANSITIVE",
                "FULL",
                "FULL_TRANSITIVE",
            ];
            if !LEVELS.contains(&level) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    42203,
                    "Invalid compatibility level",
                );
            }
            match rest.first() {
                Some(s) => r.levels.insert(s.to_string(), level.into()),
                None => r.global_level.replace(level.into()),
            };
            (StatusCode::OK, json!({"compatibility": level}))
        }
        (&Method::POST, ["compatibility", "subjects", s, "versions", tail @ ..])
            if tail.len() <= 1 =>
        {
            let Some(new) = schema_text.and_then(|t| Schema::parse_str(t).ok()) else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "Invalid schema");
            };
            let version = match tail.first() {
                None => None,
                Some(v) => match version_answer(r, s, v) {
                    (StatusCode::OK, answer) => answer["version"].as_u64().map(|v| v as u32),
                    not_found => return not_found,
                },
            };
            let verdict = r.compatible(s, &new, version);
            (
                StatusCode::OK,
                json!({"is_compatible": verdict.is_ok(), "messages": verdict.err().into_iter().collect::<Vec<_>>()}),
            )
        }
        _ => error(
            StatusCode::NOT_FOUND,
            404,
            &format!("no route {method} {path}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"}]}"#;
    const V2: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null}]}"#;
    const BREAKING: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"},{"name":"c","type":"long"}]}"#;

    #[test]
    fn ids_are_global_and_compatibility_is_checked_at_registration() {
        let mut r = Registry::default();
        assert_eq!(register(&mut r, "x-value", V1), Ok(1));
        assert_eq!(
            register(&mut r, "x-value", V1),
            Ok(1),
            "registering again gives the same id"
        );
        assert_eq!(
            register(&mut r, "y-value", V1),
            Ok(1),
            "the same schema under another subject"
        );
        assert_eq!(register(&mut r, "x-value", V2), Ok(2));
        let (status, body) = register(&mut r, "x-value", BREAKING).unwrap_err();
        assert_eq!(
            (status, body["error_code"].as_u64()),
            (StatusCode::CONFLICT, Some(409))
        );
        r.levels.insert("x-value".into(), "NONE".into());
        assert_eq!(register(&mut r, "x-value", BREAKING), Ok(3));
        let (_, latest) = version_answer(&r, "x-value", "latest");
        assert_eq!(
            (latest["version"].as_u64(), latest["id"].as_u64()),
            (Some(3), Some(3))
        );
        let (status, body) = version_answer(&r, "nope-value", "latest");
        assert_eq!(
            (status, body["error_code"].as_u64()),
            (StatusCode::NOT_FOUND, Some(40401))
        );
    }
}
