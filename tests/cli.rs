//! The `unicus` command as a user runs it: generate, replay twice with a kept store,
//! profile lookups, configuration errors.

use std::process::Command;

fn unicus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_unicus"))
        .args(args)
        .env_remove("UNICUS_LOG")
        .output()
        .unwrap()
}

#[test]
fn generate_replay_and_profile_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let out = unicus(&[
        "generate",
        "--customers",
        "200",
        "--events",
        "3000",
        "--seed",
        "5",
        "-o",
        &p("ev.jsonl"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(p("ev.jsonl"))
            .unwrap()
            .lines()
            .count(),
        3000
    );

    let out = unicus(&[
        "replay",
        "--input",
        &p("ev.jsonl"),
        "--output",
        &p("o1.jsonl"),
        "--state",
        &p("store"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("3000 records"), "{summary}");
    assert!(summary.contains("customers:"), "{summary}");

    // Same input, fresh store: same bytes. Same input, kept store: nothing new.
    let out = unicus(&[
        "replay",
        "--input",
        &p("ev.jsonl"),
        "--output",
        &p("o2.jsonl"),
    ]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(p("o1.jsonl")).unwrap(),
        std::fs::read(p("o2.jsonl")).unwrap()
    );
    let out = unicus(&[
        "replay",
        "--input",
        &p("ev.jsonl"),
        "--output",
        &p("o3.jsonl"),
        "--state",
        &p("store"),
    ]);
    assert!(out.status.success());
    let again = std::fs::read_to_string(p("o3.jsonl")).unwrap();
    assert!(
        again.lines().all(|l| l.contains("\"touchpoints.dlq\"")),
        "only dead letters come again"
    );

    let by_email = unicus(&[
        "profile",
        "--store",
        &p("store"),
        "--email",
        " Sophie.Dupont@GMAIL.com",
    ]);
    assert!(
        by_email.status.success(),
        "{}",
        String::from_utf8_lossy(&by_email.stderr)
    );
    let g: serde_json::Value = serde_json::from_slice(&by_email.stdout).unwrap();
    assert_eq!(g["identifiers"]["loyalty_id"][0], "FID-99812");
    let id = g["customer_id"].as_str().unwrap();
    for args in [
        vec!["--phone", "06 12 34 56 78"],
        vec!["--customer-id", id],
        vec!["--identifier", "account_id:CRM-000123"],
    ] {
        let mut all = vec!["profile", "--store", p("store").leak()];
        all.extend(args);
        let out = unicus(&all);
        assert!(out.status.success(), "{all:?}");
        let same: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(same["customer_id"], id);
    }
    let nobody = unicus(&[
        "profile",
        "--store",
        &p("store"),
        "--email",
        "nobody@nowhere.fr",
    ]);
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no customer holds that identifier"));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[kafka]\nbrokerz = \"x\"\n").unwrap();
    let out = unicus(&["check-config", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("brokerz"));
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/unicus.toml");
    let out = unicus(&["check-config", "--config", example, "--brokers", "k1:9092"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("brokers = \"k1:9092\""));
    let help = unicus(&["--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in [
        "demo",
        "run",
        "replay",
        "generate",
        "profile",
        "check-config",
        "bench",
    ] {
        assert!(text.contains(cmd), "--help mentions {cmd}");
    }
}

#[test]
fn replay_reads_the_engine_table_of_the_run_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let line = |id: &str, name: &str| {
        format!(
            r#"{{"event_id":"{id}","channel":"store","type":"purchase","occurred_at":"2026-11-01T10:00:00Z","identifiers":{{"phone":"01 43 57 89 12"}},"person":{{"first_name":"{name}"}}}}"#
        )
    };
    std::fs::write(
        &input,
        [line("a", "Alice"), line("b", "Bruno"), line("c", "Chloé")].join("\n"),
    )
    .unwrap();
    let config = dir.path().join("unicus.toml");
    std::fs::write(&config, "[engine.guardrails]\ngeneric_after_people = 1\n").unwrap();
    let out_path = dir.path().join("out.jsonl");
    let out = unicus(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(
        text.contains("\"generic_value\""),
        "the second person makes the phone generic at 1"
    );
}

#[test]
fn gdpr_export_and_erase_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(
        p("ev.jsonl"),
        concat!(
            r#"{"event_id":"e1","channel":"web","type":"login","occurred_at":"2026-11-01T00:00:00Z","identifiers":{"email":"ana@example.org","account_id":"A-1"},"person":{"first_name":"Ana"}}"#,
            "\n",
            r#"{"event_id":"e2","channel":"web","type":"login","occurred_at":"2026-11-02T00:00:00Z","identifiers":{"email":"bo@example.org"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(unicus(&[
        "replay",
        "--input",
        &p("ev.jsonl"),
        "--output",
        &p("o.jsonl"),
        "--state",
        &p("store"),
    ]));
    ok(unicus(&[
        "gdpr",
        "export",
        "--store",
        &p("store"),
        "--identifier",
        "email:ANA@example.org",
        "--output",
        &p("export.json"),
    ]));
    let export = std::fs::read_to_string(p("export.json")).unwrap();
    assert!(export.contains("A-1") && export.contains("Ana") && !export.contains("bo@"));
    let printed = ok(unicus(&[
        "gdpr",
        "erase",
        "--store",
        &p("store"),
        "--identifier",
        "account_id:A-1",
        "--request-id",
        "dpo-7",
    ]));
    assert!(printed.contains(r#""topic":"gdpr.receipts""#), "{printed}");
    assert!(printed.contains(r#""request_id":"dpo-7""#), "{printed}");
    let out = unicus(&[
        "profile",
        "--store",
        &p("store"),
        "--email",
        "ana@example.org",
    ]);
    assert!(!out.status.success());
    ok(unicus(&[
        "profile",
        "--store",
        &p("store"),
        "--email",
        "bo@example.org",
    ]));
    let out = unicus(&[
        "gdpr",
        "erase",
        "--store",
        &p("store"),
        "--identifier",
        "iban:FR76",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("iban"));
}

#[test]
fn replay_now_bounds_the_times_a_line_may_state_and_fixes_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::write(
        p("ev.jsonl"),
        concat!(
            r#"{"event_id":"e1","channel":"web","type":"login","occurred_at":"2026-11-20T10:00:00Z","identifiers":{"email":"ana@example.org"}}"#,
            "\n",
            r#"{"event_id":"e2","channel":"web","type":"login","occurred_at":"2026-12-08T00:00:00Z","identifiers":{"email":"ana@example.org"}}"#,
            "\n",
            r#"{"request_id":"r1","kind":"export","identifier":{"type":"email","value":"ana@example.org"}}"#,
            "\n",
        ),
    )
    .unwrap();
    let replay = |now: &str, out: &str| {
        let o = unicus(&[
            "replay",
            "--input",
            &p("ev.jsonl"),
            "--output",
            &p(out),
            "--now",
            now,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read_to_string(p(out)).unwrap()
    };
    let early = replay("2026-12-06T00:00:00Z", "o1.jsonl");
    assert_eq!(early, replay("2026-12-06T00:00:00Z", "o2.jsonl"));
    let dead: Vec<serde_json::Value> = early
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["topic"] == "touchpoints.dlq")
        .collect();
    assert_eq!(dead.len(), 1, "{early}");
    assert_eq!(
        dead[0]["headers"]["unicus.error.reason"],
        "time_out_of_range"
    );
    assert!(
        early.contains(r#""done_at":"2026-11-20T10:00:00Z""#),
        "{early}"
    );

    // Read two days later, the same line is in range: the receipt follows it.
    let later = replay("2026-12-08T00:00:00Z", "o3.jsonl");
    assert!(!later.contains("touchpoints.dlq"), "{later}");
    assert!(
        later.contains(r#""done_at":"2026-12-08T00:00:00Z""#),
        "{later}"
    );

    let bad = unicus(&[
        "replay",
        "--input",
        &p("ev.jsonl"),
        "--output",
        &p("o4.jsonl"),
        "--now",
        "tomorrow",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--now takes an RFC 3339 time"), "{err}");
}

#[test]
fn the_demo_serves_the_api_and_the_page_until_interrupted() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo-store");
    let mut child = Command::new(env!("CARGO_BIN_EXE_unicus"))
        .args([
            "demo",
            "--events",
            "2000",
            "--customers",
            "200",
            "--api",
            "127.0.0.1:0",
            "--store",
            store.to_str().unwrap(),
        ])
        .env("UNICUS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.starts_with("customer 360 page: "))
        .expect("the page's address is printed");
    // customer 360 page: http://ADDRESS/ui/ (token TOKEN)
    let address = first
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let token = first.split("(token ").nth(1).unwrap().trim_end_matches(')');
    let mut s = std::net::TcpStream::connect(address).unwrap();
    write!(
        s,
        "GET /v1/customers?email=sophie.dupont@gmail.com HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"first_name\"") && answer.contains("Sophie"));
    // Ctrl-C: the demo stops and prints its summary.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.iter().any(|l| l.contains("customers")), "{rest:?}");
    // The catalogue and stores were read before the first event.
    assert!(
        rest.iter()
            .any(|l| l.contains("reference data: 28 products and 12 stores")),
        "{rest:?}"
    );
}

#[test]
fn an_audience_that_does_not_compile_stops_the_start_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("unicus.toml");
    std::fs::write(
        &config,
        "[engine.audiences]\nfans = \"\"\"\ncount(product_view, 30d) >= 3\n  and cout(purchase, 7d) > 1\"\"\"\n",
    )
    .unwrap();
    let input = dir.path().join("ev.jsonl");
    std::fs::write(&input, "").unwrap();
    for args in [
        vec![
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--output",
            "-",
        ],
        vec!["check-config"],
    ] {
        let mut args = args;
        args.extend(["--config", config.to_str().unwrap()]);
        let out = unicus(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("engine.audiences.fans: line 2, column 7: unknown function `cout`"),
            "{args:?}: {err}"
        );
    }
}

/// `unicus demo --instances 3`: one writer takes the first half of the stream, is
/// stopped, a standby is elected and takes the second half; the stores of the two
/// instances left hold the same customers.
#[test]
fn the_demo_runs_three_instances_with_a_handover() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("demo-store");
    let out = unicus(&[
        "--log-level",
        "warn",
        "demo",
        "--instances",
        "3",
        "--events",
        "4000",
        "--customers",
        "400",
        "--store",
        store.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("instance 0 stopped after 2000 events"),
        "{text}"
    );
    let elected = text
        .lines()
        .find(|l| l.contains("elected the writer"))
        .unwrap_or_else(|| panic!("no handover in {text}"));
    let writer: usize = elected
        .trim_start_matches("instance ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        text.contains(&format!(
            "instance {writer}: 2000 events consumed as the writer"
        )),
        "{text}"
    );
    let counts = text
        .lines()
        .find(|l| l.starts_with("customers in the stores"))
        .unwrap_or_else(|| panic!("no store counts in {text}"));
    let list = &counts[counts.find('[').unwrap() + 1..counts.find(']').unwrap()];
    let n: Vec<i64> = list.split(", ").map(|c| c.parse().unwrap()).collect();
    assert_eq!(n.len(), 2, "{counts}");
    assert!(n[0] > 0 && n[0] == n[1], "{counts}");
    assert!(store.join("instance-0").exists() && store.join("instance-2").exists());
}
