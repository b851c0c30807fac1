//! The lookup API on a running instance fed through Kafka (rdkafka's in-process mock
//! cluster): lookups by id, email, phone and any identifier, normalised as the engine
//! does; a merged-away id redirected; explanations; tokens, scopes and masking; limits;
//! a split request that the instance then carries out; an erased person gone.

mod common;

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::http::{get, request, Answer};
use common::mock_cluster::{self, produce, read_partitions, start, Cluster, Running};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use unicus::api::auth::token_hash;
use unicus::model::SOURCE_CHANNELS;
use unicus::settings::api::{ApiToken, Scope};
use unicus::sim::generate::{GenerateOptions, Generator};

/// What the process logs, for the audit lines (one subscriber for the whole binary).
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || Capture(logs))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const READER: &str = "reader-token";
const AGENT: &str = "agent-token";
const OPS: &str = "ops-token";
const SLOW: &str = "slow-token";

fn token(name: &str, secret: &str, scopes: &[Scope]) -> ApiToken {
    ApiToken {
        name: name.into(),
        sha256: token_hash(secret),
        scopes: scopes.to_vec(),
    }
}

fn cluster(group: &str) -> Cluster {
    let mut c = mock_cluster::cluster(group, &SOURCE_CHANNELS);
    c.settings.api.listen = Some("127.0.0.1:0".into());
    c.settings.api.tokens = vec![
        token("reader", READER, &[Scope::ProfilesRead]),
        token("agent", AGENT, &[Scope::ProfilesRead, Scope::PiiRead]),
        token("ops", OPS, &[Scope::ProfilesRead, Scope::CommandsWrite]),
    ];
    c
}

/// The generated stream with the Sophie Dupont story.
fn stream() -> Vec<String> {
    Generator::new(GenerateOptions {
        seed: 7,
        customers: 100,
        events: 600,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect()
}

async fn started(c: &Cluster, events: usize) -> (Running, SocketAddr) {
    let mut running = start(&c.settings);
    running
        .until(Duration::from_secs(60), "all events consumed", |s| {
            s.consumed.load(std::sync::atomic::Ordering::Relaxed) >= events as u64
        })
        .await;
    // Their batches committed too: the API answers from committed state only.
    running
        .until_committed(Duration::from_secs(10), events as f64)
        .await;
    running
        .until(Duration::from_secs(30), "the API listening", |s| {
            s.api_endpoint.lock().unwrap().is_some()
        })
        .await;
    let address = running.stats.api_endpoint.lock().unwrap().unwrap();
    // The API answers 503 `restoring` until the store is in step with its changelog,
    // which is before the instance is ready.
    let metrics = running.stats.telemetry.endpoint().unwrap();
    eventually("the instance ready", move || {
        let a = request(metrics, "GET", "/readyz", None, None);
        (a.status == 200).then_some(a)
    })
    .await;
    (running, address)
}

/// Runs blocking HTTP calls off the runtime's workers.
async fn call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Asks until `check` holds (the instance commits its batch a moment after it consumed).
async fn eventually(
    what: &str,
    check: impl Fn() -> Option<Answer> + Clone + Send + 'static,
) -> Answer {
    poll(what, check).await
}

/// Asks until `check` gives a value (off the runtime's workers; 10 s at most).
async fn poll<T: Send + 'static>(
    what: &str,
    check: impl Fn() -> Option<T> + Clone + Send + 'static,
) -> T {
    for _ in 0..200 {
        if let Some(v) = call(check.clone()).await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

async fn send(c: &Cluster, topic: &str, value: &str) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &c.settings.kafka.brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<(), str>::to(topic).payload(value),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_follow_the_engine_and_tokens_decide_what_is_shown() {
    let logs = captured_logs();
    let c = cluster("g-api");
    let mut sophie_id = String::new();
    let lines = stream();
    let n = lines.len();
    produce(&c, lines).await;
    let (running, api) = started(&c, n).await;

    // By email as the person typed it: normalised the way the engine does.
    let by_email = eventually("Sophie found by email", move || {
        let a = get(
            api,
            "/v1/customers?email=%20Sophie.Dupont%40Gmail.com",
            AGENT,
        );
        (a.status == 200).then_some(a)
    })
    .await;
    let sophie = by_email.json();
    let id = sophie["customer_id"].as_str().unwrap().to_string();
    sophie_id.clone_from(&id);
    assert_eq!(sophie["identifiers"]["email"][0], "sophie.dupont@gmail.com");
    assert_eq!(sophie["identifiers"]["phone"][0], "+33612345678");
    assert_eq!(
        by_email.headers["content-type"], "application/json",
        "{:?}",
        by_email.headers
    );
    for target in [
        "/v1/customers?phone=06%2012%2034%2056%2078".to_string(),
        "/v1/customers?identifier=loyalty_id:FID-99812".to_string(),
        format!("/v1/customers/{id}"),
    ] {
        let a = call(move || get(api, &target, AGENT)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.json()["customer_id"], id.as_str());
    }

    // Without pii:read: emails, phones and the street address masked.
    let masked =
        call(move || get(api, "/v1/customers?email=sophie.dupont@gmail.com", READER)).await;
    assert_eq!(masked.status, 200);
    for secret in ["sophie.dupont@", "612345678", "rue de la Paix", "75002"] {
        assert!(
            !masked.body.contains(secret),
            "{secret} shown: {}",
            masked.body
        );
    }
    assert_eq!(masked.json()["identifiers"]["email"][0], "s***@gmail.com");
    assert_eq!(masked.json()["person"]["first_name"]["value"], "Sophie");

    // The explanation: the source profiles from the store, the web and the social
    // network, how each joined, and the merges.
    let target = format!("/v1/customers/{id}/explain");
    let explained = call(move || get(api, &target, READER)).await;
    assert_eq!(explained.status, 200, "{}", explained.body);
    let x = explained.json();
    let channels: std::collections::BTreeSet<&str> = x["source_profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sp| sp["channel"].as_str().unwrap())
        .collect();
    for channel in ["store", "web", "social"] {
        assert!(channels.contains(channel), "{channels:?}");
    }
    assert!(
        !explained.body.contains("sophie.dupont@"),
        "masked in explanations too"
    );

    // The recent touchpoints, newest first, within the limit asked for.
    let target = format!("/v1/customers/{id}/events?limit=4");
    let events = call(move || get(api, &target, READER)).await;
    assert_eq!(events.status, 200, "{}", events.body);
    let list = events.json()["events"].as_array().unwrap().clone();
    assert_eq!(list.len(), 4, "{list:?}");
    let times: Vec<&str> = list
        .iter()
        .map(|e| e["occurred_at"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert!(!events.body.contains('@'), "no identifier in the timeline");
    let target = format!("/v1/customers/{id}/events?limit=1000");
    let all = call(move || get(api, &target, READER)).await.json();
    let channels: std::collections::BTreeSet<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    for channel in ["store", "web", "social"] {
        assert!(channels.contains(channel), "{channels:?}");
    }
    let story = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == "story-0001")
        .cloned()
        .expect("the first store purchase is kept");
    assert_eq!(story["order_id"], "T-881");
    assert_eq!(story["total"], 129.9);
    assert_eq!(story["skus"][0], "CLIMB-42");

    // A merged-away id: 301 to the customer it is part of, for both routes. The merge
    // is made here, one event at a time: the topics of the channels are consumed in no
    // fixed order, so the generated stream may join its sources without merging.
    let luc = [
        r#"{"event_id":"luc-1","channel":"email","type":"email_open","occurred_at":"2026-08-10T10:00:00Z","source":"esp-newsletter","identifiers":{"email":"luc.martin@example.fr"}}"#,
        r#"{"event_id":"luc-2","channel":"service","type":"support_ticket","occurred_at":"2026-08-10T11:00:00Z","source":"callcenter","identifiers":{"phone":"06 98 76 54 32"}}"#,
        r#"{"event_id":"luc-3","channel":"crm","type":"account_updated","occurred_at":"2026-08-10T12:00:00Z","source":"crm-central","identifiers":{"email":"luc.martin@example.fr","phone":"+33698765432"}}"#,
    ];
    let lookup = |target: &'static str| {
        move || {
            let a = get(api, target, READER);
            (a.status == 200).then(|| a.json()["customer_id"].as_str().unwrap().to_string())
        }
    };
    produce(&c, vec![luc[0].to_string()]).await;
    let by_email = lookup("/v1/customers?email=luc.martin@example.fr");
    let first = poll("Luc found by email", by_email).await;
    produce(&c, vec![luc[1].to_string()]).await;
    let by_phone = lookup("/v1/customers?phone=%2B33698765432");
    let second = poll("Luc found by phone", by_phone).await;
    assert_ne!(first, second, "two customers before the link");
    produce(&c, vec![luc[2].to_string()]).await;
    let survivor = poll("the two merged", move || {
        let (e, p) = (by_email()?, by_phone()?);
        (e == p).then_some(e)
    })
    .await;
    let old = if survivor == first { second } else { first };
    let target = format!("/v1/customers/{survivor}/explain");
    let luc_explained = call(move || get(api, &target, READER)).await.json();
    assert_eq!(
        luc_explained["merged_ids"][0],
        old.as_str(),
        "{luc_explained}"
    );
    let (moved, moved_explain) = call({
        let old = old.clone();
        move || {
            (
                get(api, &format!("/v1/customers/{old}"), READER),
                get(api, &format!("/v1/customers/{old}/explain"), READER),
            )
        }
    })
    .await;
    assert_eq!(moved.status, 301);
    assert_eq!(moved.code(), "merged");
    assert_eq!(
        moved.headers["location"],
        format!("/v1/customers/{survivor}")
    );
    assert_eq!(
        moved_explain.headers["location"],
        format!("/v1/customers/{survivor}/explain")
    );

    // Errors: JSON with a stable code.
    let errors = call(move || {
        let long = format!("/v1/customers/{}", "x".repeat(9000));
        vec![
            (
                request(api, "GET", "/v1/customers/cus_nobody", None, None),
                401,
                "unauthenticated",
            ),
            (
                get(api, "/v1/customers/cus_nobody", "wrong-token"),
                401,
                "unauthenticated",
            ),
            (
                get(api, "/v1/customers/cus_nobody", READER),
                404,
                "not_found",
            ),
            (
                get(api, "/v1/customers?email=claire.petit@laposte.net", READER),
                404,
                "not_found",
            ),
            (
                get(api, "/v1/customers?identifier=shoe_size:42", READER),
                400,
                "unknown_identifier_type",
            ),
            (
                get(api, "/v1/customers?email=not-an-email", READER),
                400,
                "invalid_identifier",
            ),
            (
                get(api, "/v1/customers?email=a@b.fr&phone=0612345678", READER),
                400,
                "bad_request",
            ),
            (
                get(api, "/v1/customers?identifier=email", READER),
                400,
                "bad_request",
            ),
            (get(api, &long, READER), 414, "request_too_large"),
            (get(api, "/v2/anything", READER), 404, "no_route"),
            (
                get(api, "/v1/customers/cus_x/events?limit=0", READER),
                400,
                "bad_request",
            ),
            (
                get(api, "/v1/customers/cus_x/events?from=1", READER),
                400,
                "bad_request",
            ),
            (
                request(
                    api,
                    "POST",
                    "/v1/customers/cus_x/split",
                    Some(READER),
                    Some("{}"),
                ),
                403,
                "forbidden",
            ),
        ]
    })
    .await;
    for (answer, status, code) in errors {
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (status, code),
            "{}",
            answer.body
        );
    }
    let unauthenticated = call(move || request(api, "GET", "/v1/customers/x", None, None)).await;
    assert_eq!(unauthenticated.headers["www-authenticate"], "Bearer");

    // A split request through the API: validated, sent to identity.commands, carried
    // out by the instance: Sophie's phone now names another customer.
    let target = format!("/v1/customers/{id}/split");
    let refused = call({
        let target = target.clone();
        move || {
            request(
                api,
                "POST",
                &target,
                Some(OPS),
                Some(r#"{"identifier": "shoe_size:42"}"#),
            )
        }
    })
    .await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (400, "bad_request")
    );
    let accepted = call(move || {
        request(
            api,
            "POST",
            &target,
            Some(OPS),
            Some(r#"{"identifier": "phone:+33612345678", "reason": "shared family phone"}"#),
        )
    })
    .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let commands = read_partitions(
        &c.settings.kafka.brokers,
        &c.settings.kafka.commands_topic(),
        1,
    );
    assert_eq!(commands.len(), 1);
    let command: Value = serde_json::from_slice(commands[0].1.as_ref().unwrap()).unwrap();
    assert_eq!(command["kind"], "split");
    assert_eq!(command["customer_id"], id.as_str());
    assert_eq!(command["command_id"], accepted.json()["command_id"]);
    let id2 = id.clone();
    eventually("the split carried out", move || {
        let a = get(api, "/v1/customers?phone=%2B33612345678", AGENT);
        (a.status == 200 && a.json()["customer_id"] != id2.as_str()).then_some(a)
    })
    .await;

    // Erasure of both customers (Sophie and the one split off her): gone from the API,
    // by id and by identifier, nothing of them answered.
    let split_off = call(move || get(api, "/v1/customers?phone=%2B33612345678", AGENT)).await;
    let split_off = split_off.json()["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (n, customer) in [&id, &split_off].into_iter().enumerate() {
        send(
            &c,
            &c.settings.kafka.requests_topic(),
            &format!(r#"{{"request_id":"dpo-{n}","kind":"erase","customer_id":"{customer}"}}"#),
        )
        .await;
    }
    let target = format!("/v1/customers/{split_off}");
    eventually("the erased persons gone", move || {
        let a = get(api, &target, AGENT);
        (a.status == 404).then_some(a)
    })
    .await;
    let answers = call(move || {
        [
            format!("/v1/customers/{id}"),
            format!("/v1/customers/{id}/explain"),
            format!("/v1/customers/{id}/events"),
            "/v1/customers?email=sophie.dupont@gmail.com".into(),
            "/v1/customers?phone=%2B33612345678".into(),
            "/v1/customers?identifier=loyalty_id:FID-99812".into(),
        ]
        .map(|t| get(api, &t, AGENT))
    })
    .await;
    for a in answers {
        assert_eq!(
            (a.status, a.code().as_str()),
            (404, "not_found"),
            "{}",
            a.body
        );
        assert!(!a.body.to_lowercase().contains("sophie"), "{}", a.body);
    }

    // One audit line per lookup, with the token's name, never what was asked for.
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let audit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("unicus::api::audit"))
        .collect();
    assert!(audit.len() >= 20, "{} audit lines", audit.len());
    assert!(audit
        .iter()
        .any(|l| l.contains("token=agent") && l.contains(&sophie_id)));
    for secret in [
        "sophie",
        "612345678",
        "12 34 56",
        "FID-99812",
        "claire.petit",
        "shoe_size",
        "cus_nobody",
        "luc.martin",
        "98765432",
    ] {
        assert!(
            !text.to_lowercase().contains(&secret.to_lowercase()),
            "`{secret}` in the logs"
        );
    }

    // Every request counted by its route's pattern and status, and timed.
    let exposition = running.stats.telemetry.exposition();
    for series in [
        r#"unicus_api_requests_total{route="/v1/customers/{id}",status="200"}"#,
        r#"unicus_api_requests_total{route="/v1/customers/{id}",status="301"}"#,
        r#"unicus_api_requests_total{route="/v1/customers/{id}",status="401"}"#,
        r#"unicus_api_requests_total{route="/v1/customers",status="200"}"#,
        r#"unicus_api_requests_total{route="/v1/customers/{id}/split",status="202"}"#,
        r#"unicus_api_requests_total{route="other",status="404"}"#,
    ] {
        assert!(exposition.contains(series), "{series} missing");
    }
    assert!(exposition.contains("unicus_api_request_duration_seconds_count"));

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_is_refused_and_the_page_is_served() {
    let mut c = cluster("g-api-rate");
    c.settings
        .api
        .tokens
        .push(token("slow", SLOW, &[Scope::ProfilesRead]));
    c.settings.api.rate_per_second = 1;
    c.settings.api.burst = 3;
    let (running, api) = started(&c, 0).await;
    let answers = call(move || {
        (0..5)
            .map(|_| get(api, "/v1/customers/cus_nobody", SLOW).status)
            .collect::<Vec<u16>>()
    })
    .await;
    assert_eq!(&answers[..3], &[404, 404, 404], "{answers:?}");
    assert_eq!(answers[4], 429, "{answers:?}");
    // Another token has its own bucket.
    let other = call(move || get(api, "/v1/customers/cus_nobody", READER)).await;
    assert_eq!(other.status, 404);

    let page = call(move || request(api, "GET", "/ui/", None, None)).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.body.contains("customer 360") && page.body.contains("/ui/app.js"));
    assert!(page.headers["content-security-policy"].contains("default-src 'self'"));
    let script = call(move || request(api, "GET", "/ui/app.js", None, None)).await;
    assert_eq!(script.status, 200);
    assert!(
        !script.body.contains("innerHTML"),
        "values are written as text only"
    );
    running.stop().await;
}
