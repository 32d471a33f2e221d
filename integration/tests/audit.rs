//! The audit filter inside the real Envoy.

// Helpers outside #[test] functions: a failure there is a failed test too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::thread;

use kavach_integration::envoy::{config_error_line, packaging, repo_root, Module, Packaging};
use kavach_integration::pki::TestCa;
use kavach_integration::{Behaviour, EchoServer, Envoy, EnvoySpec, FilterSpec, Request};
use serde_json::Value;

fn audit(config: &str) -> FilterSpec {
    FilterSpec::new(Module::Audit, config)
}

#[allow(clippy::panic)]
fn record(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a record ({e}): {line}"))
}

/// Runs `kavach verify` on `text`: (exit code, stdout).
#[allow(clippy::unwrap_used, clippy::expect_used)]
fn verify(text: &str) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!(
        "kavach-verify-{}-{}",
        std::process::id(),
        text.len()
    ));
    std::fs::write(&dir, text).unwrap();
    let out = Command::new(repo_root().join("target/release/kavach"))
        .arg("verify")
        .arg(&dir)
        .output()
        .expect("target/release/kavach is missing: run scripts/build.sh");
    let _ = std::fs::remove_file(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn it_replaces_forged_audit_headers_with_its_own() {
    let upstream = EchoServer::start("core").unwrap();
    let envoy = Envoy::start(&EnvoySpec::new(upstream.addr()).filter(audit("{}")));
    let resp = Request::get("/accounts/7")
        .header("x-audit-id", "forged-1")
        .header("x-audit-id", "forged-2")
        .header("x_audit_id", "forged-3")
        .header("x.audit.principal", "spiffe://bank.local/ns/admin/sa/root")
        .header("X-Audit-Region", "us-east")
        .header("x-auditor", "not ours")
        .send(envoy.addr())
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = resp.echoed().expect("reached the upstream");
    let ids = seen.header_values("x-audit-id");
    assert_eq!(ids.len(), 1, "{:?}", seen.headers);
    assert!(!ids[0].starts_with("forged"), "{}", ids[0]);
    assert_eq!(ids[0].len(), 36);
    assert!(seen.header_values("x_audit_id").is_empty());
    assert!(seen.header_values("x.audit.principal").is_empty());
    assert!(
        seen.header_values("x-audit-principal").is_empty(),
        "plain text has no principal"
    );
    assert_eq!(seen.header_values("x-audit-region"), vec!["in-west"]);
    assert_eq!(seen.header_values("x-audit-node"), vec!["kavach-test-node"]);
    assert!(seen
        .header("x-audit-source")
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(seen
        .header("x-audit-timestamp")
        .unwrap()
        .ends_with("+05:30"));
    assert_eq!(seen.header_values("x-auditor"), vec!["not ours"]);
    assert_eq!(
        envoy.counter("wasmcustom.kavach_audit_forged_headers_removed_total"),
        4
    );
}

#[test]
fn it_records_every_request_with_the_id_the_client_was_given() {
    let upstream = EchoServer::start("core").unwrap();
    let envoy = Envoy::start(
        &EnvoySpec::new(upstream.addr())
            .filter(audit(
                r#"{"return_audit_id": true, "query": "redact_values"}"#,
            ))
            .audit_access_log(),
    );
    let resp = Request::post(
        "/pay/4111111111111111?card=4111111111111111&otp=123456",
        "{}",
    )
    .send(envoy.addr())
    .unwrap();
    assert_eq!(resp.status, 200);
    let id = resp
        .header("x-audit-id")
        .expect("audit id returned")
        .to_string();
    let sent = resp.echoed().unwrap();
    assert_eq!(sent.header("x-audit-id"), Some(id.as_str()));
    let lines = envoy.wait_audit_lines(1);
    assert_eq!(lines.len(), 1);
    assert!(
        !lines[0].contains("4111111111111111"),
        "card number leaked: {}",
        lines[0]
    );
    let r = record(&lines[0]);
    assert_eq!(r["audit_id"], id.as_str());
    assert_eq!(r["method"], "POST");
    assert_eq!(
        r["path"],
        "/pay/411111******1111?card=<redacted>&otp=<redacted>"
    );
    assert_eq!(r["status"], 200);
    assert_eq!(r["cluster"], "upstream");
    assert_eq!(r["seq"], 0);
    assert!(r["duration_us"].as_u64().is_some());
    assert!(r["bytes_in"].as_u64().unwrap() > 0);
    assert!(r["bytes_out"].as_u64().unwrap() > 0);
    assert!(r["request_id"].as_str().is_some());
    assert_eq!(verify(&lines.join("\n")).0, 0);
}

#[test]
fn it_records_the_verified_mtls_identity() {
    let (ca, files) = TestCa::with_server_files().unwrap();
    let upstream = EchoServer::start("core").unwrap();
    let envoy = Envoy::start(
        &EnvoySpec::new(upstream.addr())
            .filter(audit("{}"))
            .mtls(files)
            .audit_access_log(),
    );
    let caller = "spiffe://bank.local/ns/payments/sa/checkout";
    let id = ca.client(caller).unwrap();
    let resp = Request::get("/v1/cards")
        .header("x-audit-principal", "spiffe://bank.local/ns/admin/sa/root")
        .send_tls(envoy.mtls_addr(), &ca.roots(), Some(&id))
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = resp.echoed().unwrap();
    assert_eq!(seen.header_values("x-audit-principal"), vec![caller]);
    let lines = envoy.wait_audit_lines(1);
    assert_eq!(record(&lines[0])["principal"], caller);
}

#[test]
fn it_writes_a_chain_per_worker_that_verifies_and_catches_any_edit() {
    let upstream = EchoServer::start("core").unwrap();
    let envoy = Envoy::start(
        &EnvoySpec::new(upstream.addr())
            .filter(audit("{}"))
            .audit_access_log()
            .concurrency(2),
    );
    let addr = envoy.addr();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..125 {
                    let r = Request::get(format!("/t{t}/r{i}")).send(addr).unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let lines = envoy.wait_audit_lines(1000);
    assert_eq!(lines.len(), 1000);
    let chains: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| record(l)["chain"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(chains.len(), 2, "one chain per worker");
    let text = lines.join("\n");
    let (code, out) = verify(&text);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 1000 record(s) in 2 chain(s)"), "{out}");

    // Any single edit is caught.
    let edited = text.replacen("\"GET\"", "\"PUT\"", 1);
    let (code, out) = verify(&edited);
    assert_eq!(code, 1);
    assert!(out.contains("FAIL at line 1: edited record"), "{out}");

    let mut dropped = lines.clone();
    dropped.remove(500);
    let (code, out) = verify(&dropped.join("\n"));
    assert_eq!(code, 1);
    assert!(out.contains("dropped records"), "{out}");

    // Swap two records of the same chain.
    let chain_of = |l: &str| record(l)["chain"].as_str().unwrap().to_string();
    let first = chain_of(&lines[10]);
    let j = (11..lines.len())
        .find(|j| chain_of(&lines[*j]) == first)
        .unwrap();
    let mut swapped = lines.clone();
    swapped.swap(10, j);
    let (code, out) = verify(&swapped.join("\n"));
    assert_eq!(code, 1);
    assert!(out.contains("reordered records"), "{out}");

    let mut inserted = lines.clone();
    inserted.insert(700, lines[300].clone());
    let (code, out) = verify(&inserted.join("\n"));
    assert_eq!(code, 1);
    assert!(out.contains("inserted record"), "{out}");
}

#[test]
fn it_survives_hostile_headers_and_keeps_serving() {
    let upstream = EchoServer::start("core").unwrap();
    let envoy = Envoy::start(
        &EnvoySpec::new(upstream.addr())
            .filter(audit("{}"))
            .audit_access_log(),
    );
    let huge = "a".repeat(50_000);
    let cases: Vec<Request> = vec![
        Request::get("/x").header("x-audit-id", b"\xff\xfe\x80".as_slice()),
        Request::get("/x").header("x-other", b"\xc3\x28 invalid utf-8".as_slice()),
        Request::get("/x").header("x-audit-id", ""),
        Request::get("/x").header("x-big", huge.as_bytes()),
        Request::get(format!("/{}", "p".repeat(8000))),
        (0..50).fold(Request::get("/dups"), |r, i| {
            r.header("x-audit-id", format!("v{i}"))
        }),
    ];
    for (i, req) in cases.iter().enumerate() {
        let resp = req.send(envoy.addr()).unwrap();
        assert_eq!(resp.status, 200, "case {i}: {}", resp.text());
        let seen = resp.echoed().unwrap();
        assert_eq!(seen.header_values("x-audit-id").len(), 1, "case {i}");
    }
    // The VM is alive: an ordinary request still works, and every request has a record.
    assert_eq!(
        Request::get("/after").send(envoy.addr()).unwrap().status,
        200
    );
    let lines = envoy.wait_audit_lines(cases.len() + 1);
    assert_eq!(lines.len(), cases.len() + 1);
    assert_eq!(verify(&lines.join("\n")).0, 0);
    assert!(lines.iter().all(|l| l.len() <= 16 * 1024));
}

#[test]
fn it_refuses_to_start_with_a_bad_config_and_names_the_field() {
    let upstream = EchoServer::start("core").unwrap();
    for (config, expected) in [
        (
            r#"{"headers": {"id": "x-request-id"}}"#,
            r#"headers.id: "x-request-id" must start with header_prefix "x-audit-""#,
        ),
        (
            r#"{"utc_offset": "IST"}"#,
            r#"utc_offset: "IST" is not a UTC offset"#,
        ),
        (r#"{"colector": {}}"#, "colector: unknown field `colector`"),
    ] {
        let failure = Envoy::try_start(&EnvoySpec::new(upstream.addr()).filter(audit(config)))
            .err()
            .unwrap_or_else(|| panic!("Envoy started with {config}"));
        let line = config_error_line(Module::Audit, 0, expected);
        assert!(
            failure.log.contains(&line),
            "expected {line:?} in:\n{}",
            failure.log
        );
    }
    // Not JSON at all.
    let failure = Envoy::try_start(&EnvoySpec::new(upstream.addr()).filter(audit("{not json")))
        .err()
        .expect("Envoy started with invalid JSON");
    assert!(
        failure.log.contains("invalid configuration: "),
        "{}",
        failure.log
    );
}

#[test]
fn it_sends_records_to_a_collector() {
    let upstream = EchoServer::start("core").unwrap();
    let collector = EchoServer::start("collector").unwrap();
    let envoy = Envoy::start(
        &EnvoySpec::new(upstream.addr())
            .cluster("audit_collector", collector.addr(), None)
            .filter(audit(
                r#"{"collector": {"cluster": "audit_collector", "flush_interval_ms": 50, "path": "/ingest"}}"#,
            )),
    );
    for i in 0..20 {
        assert_eq!(
            Request::get(format!("/r{i}"))
                .send(envoy.addr())
                .unwrap()
                .status,
            200
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut records: Vec<String> = Vec::new();
    while records.len() < 20 && std::time::Instant::now() < deadline {
        thread::sleep(std::time::Duration::from_millis(100));
        records = collector
            .received()
            .iter()
            .flat_map(|r| {
                String::from_utf8_lossy(&r.body)
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    assert_eq!(records.len(), 20);
    let posts = collector.received();
    assert!(posts
        .iter()
        .all(|r| r.method == "POST" && r.path == "/ingest"));
    assert_eq!(
        posts[0].header("content-type"),
        Some("application/x-ndjson")
    );
    assert_eq!(verify(&records.join("\n")).0, 0);
    assert_eq!(
        envoy.counter("wasmcustom.kavach_audit_collector_sent_total"),
        20
    );
}

#[test]
fn it_keeps_serving_when_the_collector_is_down_or_hangs() {
    let upstream = EchoServer::start("core").unwrap();
    let hung = EchoServer::start_with("hung", Behaviour::Hang).unwrap();
    // A port nothing listens on: bind, note it, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (name, addr) in [("dead", dead), ("hung", hung.addr())] {
        let envoy = Envoy::start(
            &EnvoySpec::new(upstream.addr())
                .cluster("audit_collector", addr, None)
                .filter(audit(
                    r#"{"collector": {"cluster": "audit_collector", "flush_interval_ms": 20,
                    "timeout_ms": 100, "backoff_base_ms": 10, "backoff_max_ms": 20,
                    "max_attempts": 2, "queue_max_records": 5}}"#,
                )),
        );
        for i in 0..30 {
            let started = std::time::Instant::now();
            let resp = Request::get(format!("/r{i}")).send(envoy.addr()).unwrap();
            assert_eq!(resp.status, 200, "{name}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{name}: request held up"
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while envoy.counter("wasmcustom.kavach_audit_collector_failed_total") < 2
            && std::time::Instant::now() < deadline
        {
            thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(
            envoy.counter("wasmcustom.kavach_audit_collector_failed_total") >= 2,
            "{name}"
        );
        assert!(
            envoy.counter("wasmcustom.kavach_audit_collector_dropped_total") >= 1,
            "{name}"
        );
        assert_eq!(
            envoy.counter("wasmcustom.kavach_audit_collector_sent_total"),
            0,
            "{name}"
        );
    }
}

/// Audit and PCI authorization (deny by default); one refused and one allowed request.
fn audited_pci(publish: bool) -> (Envoy, Vec<Value>, Vec<Vec<String>>, String) {
    let upstream = EchoServer::start("core").unwrap();
    let pci = FilterSpec::new(
        Module::PciAuthz,
        r#"{"policy_version": "p1", "trust_domain": "bank.local",
            "rules": [{"name": "cards", "methods": ["GET"], "paths": ["/v1/cards/*"]}]}"#,
    );
    let envoy = Envoy::start(
        &EnvoySpec::new(upstream.addr())
            .filter(audit("{}"))
            .filter(pci)
            .audit_access_log()
            .state_log(&["kavach.decision.pci_authz", "kavach.audit_id"])
            .bundle_publishes(publish),
    );
    let denied = Request::get("/v1/accounts/7").send(envoy.addr()).unwrap();
    assert_eq!(denied.status, 403, "{}", denied.text());
    let allowed = Request::get("/v1/cards/7").send(envoy.addr()).unwrap();
    assert_eq!(allowed.status, 200);
    let records: Vec<Value> = envoy
        .wait_audit_lines(2)
        .iter()
        .map(|l| record(l))
        .collect();
    let state = envoy.wait_state_lines(2);
    (envoy, records, state, denied.text())
}

#[test]
fn it_records_the_other_filters_decisions_whichever_way_they_travel() {
    for publish in [false, true] {
        let (_envoy, records, state, denial) = audited_pci(publish);
        let d = &records[0]["decisions"][0];
        assert_eq!(d["filter"], "pci_authz", "{d}");
        assert_eq!(d["outcome"], "deny", "{d}");
        assert_eq!(d["reason"], "no_rule_matched", "{d}");
        assert_eq!(d["policy_version"], "p1", "{d}");
        let id = records[0]["audit_id"].as_str().unwrap();
        assert!(
            denial.contains(id),
            "the denial quotes the record's audit id: {denial}"
        );
        let d = &records[1]["decisions"][0];
        assert_eq!(
            (&d["outcome"], &d["rule"]),
            (&"allow".into(), &"cards".into()),
            "{d}"
        );
        // Filter state: always between separate modules; in the bundle only when published.
        let published = packaging() == Packaging::Modules || publish;
        for (line, rec) in state.iter().zip(&records) {
            if published {
                let d: Value = serde_json::from_str(&line[0]).unwrap();
                assert_eq!(d, rec["decisions"][0], "filter state and record agree");
                assert_eq!(line[1], rec["audit_id"].as_str().unwrap());
            } else {
                assert_eq!(line, &["-", "-"], "nothing published: {line:?}");
            }
        }
    }
}
