//! The customer 360 page in a real browser: headless Chromium driven over WebDriver
//! (ChromeDriver), against a running instance fed through Kafka (the in-process mock
//! cluster). It searches Sophie Dupont as a service agent would, checks what the page
//! shows, requests a split, and writes a screenshot as the test's artefact.
//!
//! Chromium and ChromeDriver are Debian's, installed and exported by `scripts/test.sh`
//! (`UNICUS_CHROMIUM`, `UNICUS_CHROMEDRIVER`); skipped without them unless
//! `UNICUS_REQUIRE_TOOLS` is set.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::http::request;
use common::mock_cluster::{self, produce, start};
use serde_json::{json, Value};
use unicus::api::auth::token_hash;
use unicus::model::SOURCE_CHANNELS;
use unicus::settings::api::{ApiToken, Scope};
use unicus::sim::generate::{GenerateOptions, Generator};

const AGENT: &str = "agent-token";
const MARKETER: &str = "marketer-token";

fn tool(var: &str) -> Option<PathBuf> {
    let found = std::env::var(var)
        .ok()
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if found.is_none() {
        if std::env::var("UNICUS_REQUIRE_TOOLS").is_ok_and(|v| v != "0") {
            panic!("UNICUS_REQUIRE_TOOLS is set but {var} is not an existing file: run scripts/test.sh");
        }
        eprintln!("skipped: {var} not set (run scripts/test.sh)");
    }
    found
}

/// ChromeDriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    address: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(chromedriver: &PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(address).is_ok()
                && request(address, "GET", "/status", None, None).status == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, address }
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let answer = request(self.address, method, path, None, body.as_deref());
        let v = answer.json();
        assert!(answer.status < 300, "{method} {path}: {}", answer.body);
        v["value"].clone()
    }
}

/// A browser session: headless Chromium with a fresh profile, no network of its own.
struct Session<'a> {
    driver: &'a Driver,
    id: String,
    _profile: tempfile::TempDir,
}

impl<'a> Session<'a> {
    fn new(driver: &'a Driver, chromium: &PathBuf) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1500",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let v = driver.call("POST", "/session", Some(caps));
        Self {
            driver,
            id: v["sessionId"].as_str().unwrap().to_string(),
            _profile: profile,
        }
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    fn go(&self, url: &str) {
        self.driver
            .call("POST", &self.path("/url"), Some(json!({"url": url})));
    }

    fn element(&self, css: &str) -> String {
        let v = self.driver.call(
            "POST",
            &self.path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.driver.call(
            "POST",
            &self.path(&format!("/element/{e}/clear")),
            Some(json!({})),
        );
        self.driver.call(
            "POST",
            &self.path(&format!("/element/{e}/value")),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.driver.call(
            "POST",
            &self.path(&format!("/element/{e}/click")),
            Some(json!({})),
        );
    }

    /// The text an element shows (`textContent`, hidden or not).
    fn text(&self, css: &str) -> String {
        let v = self.driver.call(
            "POST",
            &self.path("/execute/sync"),
            Some(json!({
                "script": "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                "args": [css]
            })),
        );
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the element's text satisfies `check`.
    fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let t = self.text(css);
            if check(&t) {
                return t;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: `{css}` shows {t:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self) -> Vec<u8> {
        let v = self.driver.call("GET", &self.path("/screenshot"), None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = request(
            self.driver.address,
            "DELETE",
            &format!("/session/{}", self.id),
            None,
            None,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_agent_finds_sophie_dupont_on_the_360_page() {
    let (Some(chromium), Some(chromedriver)) =
        (tool("UNICUS_CHROMIUM"), tool("UNICUS_CHROMEDRIVER"))
    else {
        return;
    };
    let mut c = mock_cluster::cluster("g-ui", &SOURCE_CHANNELS);
    c.settings.api.listen = Some("127.0.0.1:0".into());
    // The story is dated July 2026: a wall-clock tick would age Sophie's purchase out
    // of "recently purchased" while the page is looked at.
    c.settings.engine.activation.tick_interval_ms = 86_400_000;
    // An audience and two traits of the configuration, shown on the page.
    c.settings.engine.audiences = [
        (
            "climbers".to_string(),
            r#"sum(purchase where sku = "CLIMB-42", items, 365d) >= 1"#.to_string(),
        ),
        ("never_shown".to_string(), "orders.count > 1000".to_string()),
    ]
    .into();
    c.settings.engine.traits = [
        (
            "spent_year".to_string(),
            "sum(purchase, amount, 365d)".to_string(),
        ),
        ("home_city".to_string(), "person.address.city".to_string()),
    ]
    .into();
    // The enriched golden record: Sophie's address is in Paris, her purchase dear.
    c.settings.engine.enrichment.enabled = true;
    c.settings.api.tokens = vec![
        ApiToken {
            name: "agent".into(),
            sha256: token_hash(AGENT),
            scopes: vec![Scope::ProfilesRead, Scope::PiiRead, Scope::CommandsWrite],
        },
        ApiToken {
            name: "marketer".into(),
            sha256: token_hash(MARKETER),
            scopes: vec![Scope::ProfilesRead],
        },
    ];
    let lines: Vec<String> = Generator::new(GenerateOptions {
        seed: 7,
        customers: 100,
        events: 600,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    let n = lines.len() as u64;
    produce(&c, lines).await;
    let mut running = start(&c.settings);
    // Their batches committed: the page shows committed state only.
    running
        .until_committed(Duration::from_secs(60), n as f64)
        .await;
    running
        .until(Duration::from_secs(30), "the API listening", |s| {
            s.api_endpoint.lock().unwrap().is_some()
        })
        .await;
    let api = running.stats.api_endpoint.lock().unwrap().unwrap();
    let commands_topic = c.settings.kafka.commands_topic();
    let brokers = c.settings.kafka.brokers.clone();

    let shown = tokio::task::spawn_blocking(move || {
        // The instance answers once its batches are committed.
        let started = Instant::now();
        let sophie = loop {
            let a = request(
                api,
                "GET",
                "/v1/customers?email=sophie.dupont@gmail.com",
                Some(AGENT),
                None,
            );
            if a.status == 200 {
                break a.json();
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{}", a.body);
            std::thread::sleep(Duration::from_millis(100));
        };
        let driver = Driver::start(&chromedriver);
        let page = Session::new(&driver, &chromium);
        page.go(&format!("http://{api}/ui/"));
        page.type_into("#token", AGENT);
        page.type_into("#q", "Sophie.Dupont@Gmail.com");
        page.click("#search");
        let name = page.wait_text("#name", "the golden record shown", |t| !t.is_empty());
        assert_eq!(name, "Sophie Dupont");
        assert_eq!(
            page.text("#customer-id"),
            sophie["customer_id"].as_str().unwrap()
        );
        let identifiers = page.text("#identifiers");
        for shown in [
            "sophie.dupont@gmail.com",
            "+33612345678",
            "FID-99812",
            "twitter:sophie_d",
        ] {
            assert!(identifiers.contains(shown), "{shown} not in {identifiers}");
        }
        let person = page.text("#person");
        assert!(
            person.contains("12 rue de la Paix") && person.contains("from store"),
            "{person}"
        );
        let consents = page.text("#consents");
        assert!(
            consents.contains("marketing") && consents.contains("granted"),
            "{consents}"
        );
        let channels = page.text("#channels");
        for channel in ["store", "web", "social"] {
            assert!(channels.contains(channel), "{channels}");
        }
        let kpis = page.text("#kpis");
        assert!(
            kpis.contains("129.9 EUR") && kpis.contains("RFM512"),
            "{kpis}"
        );
        let purchased = page.text("#purchased");
        assert!(purchased.contains("CLIMB-42"), "{purchased:?}");
        let audiences = page.text("#audiences-card");
        for shown in ["climbers", "spent_year", "129.9", "home_city", "Paris"] {
            assert!(audiences.contains(shown), "{shown} not in {audiences}");
        }
        assert!(!audiences.contains("never_shown"), "{audiences}");
        let enrichment = page.text("#enrichment-card");
        for shown in [
            "home region",
            "Île-de-France",
            "from address",
            "price band",
            "high",
        ] {
            assert!(enrichment.contains(shown), "{shown} not in {enrichment}");
        }
        let graph = page.wait_text("#graph", "the merge graph drawn", |t| {
            t.contains("source profiles")
        });
        for joined in ["store", "web", "social", "identifier"] {
            assert!(graph.contains(joined), "{joined} not in the graph: {graph}");
        }
        let timeline = page.text("#timeline");
        for shown in [
            "purchase",
            "order T-881",
            "129.9 EUR",
            "CLIMB-42",
            "account_created",
        ] {
            assert!(
                timeline.contains(shown),
                "{shown} not in the timeline: {timeline}"
            );
        }
        let screenshot = page.screenshot();

        // The split request goes to identity.commands.
        page.type_into("#split-identifier", "phone:+33612345678");
        page.type_into("#split-reason", "shared family phone");
        page.click("#split");
        let sent = page.wait_text("#split-status", "the split sent", |t| !t.is_empty());
        assert!(sent.starts_with("sent as api-split-agent-"), "{sent}");

        // A marketer without pii:read sees the same customer masked; an unknown email
        // is said so.
        page.type_into("#token", MARKETER);
        page.click("#search");
        page.wait_text("#identifiers", "the masked record shown", |t| {
            t.contains("s***@gmail.com")
        });
        assert!(!page.text("#result").contains("sophie.dupont@"));
        page.type_into("#q", "nobody.here@laposte.net");
        page.click("#search");
        page.wait_text("#status", "the error shown", |t| t.contains("not_found"));
        screenshot
    })
    .await
    .unwrap();

    assert_eq!(&shown[..8], b"\x89PNG\r\n\x1a\n", "a PNG screenshot");
    assert!(
        shown.len() > 20_000,
        "a page with content: {} bytes",
        shown.len()
    );
    let artefact = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("customer-360.png");
    std::fs::write(&artefact, &shown).unwrap();
    eprintln!("screenshot of the 360 page: {}", artefact.display());

    let commands = mock_cluster::read_partitions(&brokers, &commands_topic, 1);
    assert_eq!(commands.len(), 1, "one split request sent");
    running.stop().await;
}
