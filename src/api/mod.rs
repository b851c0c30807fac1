//! The profile lookup API and the customer 360 page, served by `unicus run` on
//! `[api] listen` (off by default).
//!
//! Read-only over what the store has committed: each lookup reads one committed state
//! ([`Store::consistent`]: over a batch being applied, it reads that batch's writes), so
//! it never sees a batch half applied. A batch is visible once sled applies it, a few
//! milliseconds before its flush returns; a crash in between redoes the same batch from
//! the same inputs (the engine is deterministic), so what was shown comes back.
//!
//! | route | scope | answer |
//! |---|---|---|
//! | `GET /v1/customers/{id}` | `profiles:read` | the golden record; a merged-away id: 301 to the survivor |
//! | `GET /v1/customers?email=…` / `phone=…` / `identifier=type:value` | `profiles:read` | the golden record of the customer holding it, normalised as the engine does |
//! | `GET /v1/customers/{id}/explain` | `profiles:read` | source profiles, links with rule and weights, merge and split history |
//! | `GET /v1/customers/{id}/events?limit=` | `profiles:read` | the recent touchpoints, newest first (default 20, at most `limits.max_timeline_events` are kept) |
//! | `POST /v1/customers/{id}/split` | `commands:write` | a `split` record sent to `identity.commands` (202) |
//! | `GET /ui/` | none (the page asks for a token) | the customer 360 page |
//!
//! Without `pii:read`, emails, phones and addresses come back masked ([`mask`]). Errors
//! are `{"error": {"code", "message"}}` with a stable code. Each lookup writes one audit
//! line (target `unicus::api::audit`): the token's name, the route, the customer id and
//! the status, never the identifier asked for.

pub mod auth;
pub mod lookup;
pub mod mask;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::engine::config::EngineConfig;
use crate::engine::input::command::parse_command;
use crate::settings::api::{ApiSettings, Scope};
use crate::store::Store;
use crate::telemetry::metrics::Telemetry;
use auth::{Caller, Refusal, Tokens};
use lookup::{Found, LookupError, Lookups};
use mask::Masker;

/// Sends a record (key, JSON value) to `identity.commands`; the runtime gives one that
/// produces and awaits the acknowledgement.
pub type CommandSink = Arc<
    dyn Fn(String, Vec<u8>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    #[error("cannot listen on `{address}`: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

struct Api {
    lookups: Lookups,
    tokens: Tokens,
    masker: Masker,
    /// False while the store is being restored: lookups answer 503.
    ready: Arc<AtomicBool>,
    commands: Option<CommandSink>,
    max_request_bytes: usize,
    /// Where requests are counted and timed (`unicus_api_*`).
    telemetry: Option<Arc<Telemetry>>,
}

/// The running API; stops when dropped.
pub struct Server {
    /// The API's own threads: lookups never queue behind the engine's work, which runs
    /// on the caller's runtime.
    runtime: Option<tokio::runtime::Runtime>,
    pub address: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Threads of the API's runtime.
const API_THREADS: usize = 2;

/// Serves the API and the page on `settings.listen` (which must be set), over a
/// [`Store::reader`], until the returned [`Server`] is dropped.
pub async fn serve(
    settings: &ApiSettings,
    engine: &EngineConfig,
    reader: Store,
    ready: Arc<AtomicBool>,
    commands: Option<CommandSink>,
    telemetry: Option<Arc<Telemetry>>,
) -> Result<Server, ApiStartError> {
    let listen = settings.listen.clone().unwrap_or_default();
    let tokens = settings.all_tokens()?;
    let api = Arc::new(Api {
        lookups: Lookups::new(reader, engine),
        tokens: Tokens::new(settings, &tokens),
        masker: Masker::new(engine),
        ready,
        commands,
        max_request_bytes: settings.max_request_bytes,
        telemetry,
    });
    let listen_error = |source| ApiStartError::Listen {
        address: listen.clone(),
        source,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(API_THREADS)
        .thread_name("unicus-api")
        .enable_all()
        .build()
        .map_err(listen_error)?;
    let bound = runtime
        .spawn({
            let listen = listen.clone();
            async move { tokio::net::TcpListener::bind(&listen).await }
        })
        .await
        .map_err(|e| listen_error(std::io::Error::other(e)))?;
    let listener = bound.map_err(listen_error)?;
    let address = listener.local_addr().map_err(listen_error)?;
    let app = router(api, settings.max_request_bytes);
    runtime.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the API stopped");
        }
    });
    info!(%address, tokens = tokens.len(), "serving the lookup API on /v1 and the 360 page on /ui/");
    Ok(Server {
        runtime: Some(runtime),
        address,
    })
}

fn router(api: Arc<Api>, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/customers", get(by_identifier))
        .route("/v1/customers/{id}", get(customer))
        .route("/v1/customers/{id}/explain", get(explain))
        .route("/v1/customers/{id}/events", get(events))
        .route("/v1/customers/{id}/split", post(split))
        .merge(ui::routes())
        .fallback(not_found_route)
        .layer(axum::middleware::from_fn_with_state(api.clone(), measure))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(api)
}

/// Counts and times every request by its route (the path's pattern, so a bounded set of
/// labels) and status.
async fn measure(
    State(api): State<Arc<Api>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("other", |p| p.as_str())
        .to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(t) = &api.telemetry {
        t.api_request(
            &route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    response
}

/// An error as the API answers it: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    location: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            location: None,
        }
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such customer")
    }

    fn moved(to: &str, suffix: &str) -> Self {
        Self {
            location: Some(format!("/v1/customers/{to}{suffix}")),
            ..Self::new(
                StatusCode::MOVED_PERMANENTLY,
                "merged",
                format!("merged into {to}"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, json_body(&body)).into_response();
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::UnknownType(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "unknown_identifier_type",
                e.to_string(),
            ),
            LookupError::Unusable(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_identifier", e.to_string())
            }
            LookupError::Store(e) => {
                warn!(error = %e, "a lookup failed on the store");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the store could not be read",
                )
            }
        }
    }
}

type Answer = Result<Response, ApiError>;

impl Api {
    /// The caller of a request that needs `scope`, once the store is ready.
    fn admit(&self, headers: &HeaderMap, uri: &Uri, scope: Scope) -> Result<Caller, ApiError> {
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target > self.max_request_bytes {
            return Err(ApiError::new(
                StatusCode::URI_TOO_LONG,
                "request_too_large",
                format!(
                    "the request target is over {} bytes",
                    self.max_request_bytes
                ),
            ));
        }
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let caller = self
            .tokens
            .authenticate(authorization)
            .map_err(|r| match r {
                Refusal::Unauthenticated => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "a known bearer token is needed",
                ),
                Refusal::RateLimited => ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "over this token's rate: try again shortly",
                ),
            })?;
        if !caller.may(scope) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token lacks the `{}` scope", scope.name()),
            ));
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "restoring",
                "the store is being restored: try again shortly",
            ));
        }
        Ok(caller)
    }

    /// The document as this caller may see it.
    fn shown(&self, caller: &Caller, mut doc: Value) -> Response {
        if !caller.may(Scope::PiiRead) {
            self.masker.mask(&mut doc);
        }
        json_body(&doc).into_response()
    }
}

/// A JSON body with its content type.
fn json_body(doc: &Value) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(doc).unwrap_or_default(),
    )
}

/// One audit line per lookup: never the identifier asked for.
fn audit(caller: &Caller, route: &'static str, customer_id: Option<&str>, status: StatusCode) {
    info!(
        target: "unicus::api::audit",
        token = %caller.name,
        route,
        customer_id = customer_id.unwrap_or("-"),
        status = status.as_u16(),
        "lookup"
    );
}

async fn customer(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Answer {
    let caller = api.admit(&headers, &uri, Scope::ProfilesRead)?;
    by_id(&api, &caller, &id, "customer", "", |l, id| l.customer(id))
}

async fn explain(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Answer {
    let caller = api.admit(&headers, &uri, Scope::ProfilesRead)?;
    by_id(&api, &caller, &id, "explain", "/explain", |l, id| {
        l.explain(id)
    })
}

/// Touchpoints `/events` returns when the request names no limit.
const DEFAULT_EVENTS: usize = 20;

async fn events(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Answer {
    let caller = api.admit(&headers, &uri, Scope::ProfilesRead)?;
    let mut limit = DEFAULT_EVENTS;
    for (name, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match (name.as_ref(), value.parse::<usize>()) {
            ("limit", Ok(n)) if n >= 1 => limit = n,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the only parameter is limit, a number from 1",
                ))
            }
        }
    }
    by_id(&api, &caller, &id, "events", "/events", |l, id| {
        l.events(id, limit)
    })
}

/// A lookup of a customer by id on `route` (`suffix` after the id in its path), audited.
/// On the API's own worker: a few keys that sled mostly holds in memory, never a wait for
/// a batch (the reader reads over one being applied); a fraction of a millisecond, less
/// than a hand-off to a blocking thread would cost.
fn by_id(
    api: &Api,
    caller: &Caller,
    id: &str,
    route: &'static str,
    suffix: &str,
    read: impl FnOnce(&Lookups, &str) -> Result<Found, LookupError>,
) -> Answer {
    let found = read(&api.lookups, id).map_err(ApiError::from);
    record_answer(api, caller, route, id, found, suffix)
}

/// The answer to a lookup by customer id, audited.
fn record_answer(
    api: &Api,
    caller: &Caller,
    route: &'static str,
    id: &str,
    found: Result<Found, ApiError>,
    suffix: &str,
) -> Answer {
    // The id asked for is logged only when it names a customer (live or merged): what a
    // caller typed in its place could be anything, an email among others.
    let (answer, known) = match found {
        Ok(Found::Record(doc)) => (Ok(api.shown(caller, doc)), true),
        Ok(Found::Moved(to)) => (Err(ApiError::moved(&to, suffix)), true),
        Ok(Found::Absent) => (Err(ApiError::not_found()), false),
        Err(e) => (Err(e), false),
    };
    let status = answer.as_ref().map_or_else(|e| e.status, |r| r.status());
    audit(caller, route, known.then_some(id), status);
    answer
}

async fn by_identifier(State(api): State<Arc<Api>>, headers: HeaderMap, uri: Uri) -> Answer {
    let caller = api.admit(&headers, &uri, Scope::ProfilesRead)?;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let (kind, value) = match query.as_slice() {
        [(name, value)] if name == "email" || name == "phone" => (name.clone(), value.clone()),
        [(name, typed)] if name == "identifier" => match typed.split_once(':') {
            Some((kind, value)) if !kind.is_empty() && !value.is_empty() => {
                (kind.to_string(), value.to_string())
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "identifier is `type:value`",
                ))
            }
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of email, phone or identifier=type:value",
            ))
        }
    };
    // On the API's own worker, as `by_id`.
    let found = api.lookups.find(&kind, &value).map_err(ApiError::from);
    let (customer_id, answer) = match found {
        Ok(Some((id, doc))) => (Some(id), Ok(api.shown(&caller, doc))),
        Ok(None) => (None, Err(ApiError::not_found())),
        Err(e) => (None, Err(e)),
    };
    let status = answer.as_ref().map_or_else(|e| e.status, |r| r.status());
    audit(&caller, "find", customer_id.as_deref(), status);
    answer
}

/// `POST /v1/customers/{id}/split` with `{"identifier": {"type", "value"} | "type:value",
/// "reason"}`: a `split` record on `identity.commands`, validated as the engine will.
async fn split(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let caller = api.admit(&headers, &uri, Scope::CommandsWrite)?;
    let body = body.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("the body is over {} bytes", api.max_request_bytes),
        )
    })?;
    let bad = |m: &str| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let asked: Value = serde_json::from_slice(&body).map_err(|_| bad("the body is not JSON"))?;
    let identifier = match asked.get("identifier") {
        Some(Value::String(typed)) => match typed.split_once(':') {
            Some((t, v)) => json!({"type": t, "value": v}),
            None => return Err(bad("identifier is `type:value` or {type, value}")),
        },
        Some(o @ Value::Object(_)) => o.clone(),
        _ => return Err(bad("identifier is `type:value` or {type, value}")),
    };
    let reason = asked.get("reason").and_then(Value::as_str);
    let now = chrono::Utc::now().timestamp_millis();
    // Unique per request: the engine does a command id once.
    let command_id = format!("api-split-{}-{}", caller.name, ulid::Ulid::new());
    let command = json!({
        "command_id": command_id, "kind": "split", "customer_id": id,
        "identifier": identifier, "reason": reason, "requested_at": now,
    });
    let bytes = serde_json::to_vec(&command).unwrap_or_default();
    if let Err(e) = parse_command(&bytes, api.lookups.config()) {
        return Err(bad(&e.to_string()));
    }
    let Some(send) = &api.commands else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "no command topic on this instance",
        ));
    };
    let answer = match send(id.clone(), bytes).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            json_body(&json!({"command_id": command_id, "topic": "identity.commands"})),
        )
            .into_response()),
        Err(e) => {
            warn!(error = %e, "a split command could not be sent");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the command could not be sent: try again",
            ))
        }
    };
    let status = answer.as_ref().map_or_else(|e| e.status, |r| r.status());
    audit(&caller, "split", Some(&id), status);
    answer
}

async fn not_found_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
}
