//! The rate-limit filter inside the real Envoy.

use std::sync::{Arc, Barrier};
use std::thread;

use kavach_integration::envoy::config_error_line;
use kavach_integration::pki::TestCa;
use kavach_integration::{Connection, EchoServer, Envoy, EnvoySpec, FilterSpec, Module, Request};
use serde_json::{json, Value};

fn ratelimit(config: &Value) -> FilterSpec {
    FilterSpec::new(Module::Ratelimit, config.to_string())
}

/// An edge Envoy (the client address is the connection's peer) with the filter.
fn start(upstream: &EchoServer, config: &Value, concurrency: u32) -> Envoy {
    Envoy::start(&edge(upstream, config, 0).concurrency(concurrency))
}

/// An edge Envoy with `trusted_hops` proxies in front of it.
fn edge(upstream: &EchoServer, config: &Value, trusted_hops: u32) -> EnvoySpec {
    EnvoySpec::new(upstream.addr())
        .filter(ratelimit(config))
        .edge(trusted_hops)
}

/// One rule with `rule`'s fields added to a name and a key.
fn one_rule(rule: Value) -> Value {
    let mut r = json!({ "name": "per-client", "key": ["client_address"] });
    if let (Some(r), Some(extra)) = (r.as_object_mut(), rule.as_object()) {
        r.extend(extra.clone());
    }
    json!({ "rules": [r] })
}

fn status(envoy: &Envoy, req: Request) -> u16 {
    req.send(envoy.addr()).map(|r| r.status).unwrap_or(0)
}

fn statuses(envoy: &Envoy, n: usize, req: impl Fn(usize) -> Request) -> Vec<u16> {
    (0..n).map(|i| status(envoy, req(i))).collect()
}

fn counter(envoy: &Envoy, what: &str, rule: &str) -> u64 {
    envoy.counter(&format!(
        "wasmcustom.kavach_ratelimit_{what}_total.rule.{rule}"
    ))
}

/// Connections each Envoy worker accepted, from the listener's per-worker stats.
fn connections_per_worker(envoy: &Envoy) -> Vec<u64> {
    let (_, body) = envoy
        .admin_get("/stats?filter=worker_[0-9]+\\.downstream_cx_total")
        .unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("listener.127.0.0.1_"))
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(_, v)| v.trim().parse().ok())
        .collect()
}

/// Many clients at once: `threads` kept-alive connections (the kernel spreads them over the
/// workers), opened first, then all sending `per_thread` requests back to back at the same
/// moment. Returns how many passed, how many got 429, and anything else.
fn hammer(envoy: &Envoy, threads: usize, per_thread: usize) -> (usize, usize, Vec<u16>) {
    let barrier = Arc::new(Barrier::new(threads));
    let addr = envoy.addr();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut conn = Connection::open(addr).ok();
                barrier.wait();
                (0..per_thread)
                    .map(|_| {
                        let req = Request::get("/orders");
                        let sent = conn.as_mut().map(|c| c.send(&req));
                        match sent {
                            Some(Ok(r)) => r.status,
                            // A connection Envoy closed: the request is sent again on a new one.
                            _ => {
                                conn = Connection::open(addr).ok();
                                conn.as_mut()
                                    .and_then(|c| c.send(&req).ok())
                                    .map_or(0, |r| r.status)
                            }
                        }
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let all: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let ok = all.iter().filter(|s| **s == 200).count();
    let limited = all.iter().filter(|s| **s == 429).count();
    let other = all.into_iter().filter(|s| *s != 200 && *s != 429).collect();
    (ok, limited, other)
}

/// A fresh bucket of 150 + 50 burst, hit by 800 requests on 32 connections at once: exactly
/// 200 pass, whatever the number of workers. (A period of a day: refill adds nothing during
/// the test. Envoy answers admitted requests itself, so that requests overlap as much as
/// possible inside the filter.)
#[allow(clippy::unwrap_used)]
fn exactly_the_limit_passes(concurrency: u32) {
    let upstream = EchoServer::start("core").unwrap();
    let config = one_rule(json!({ "limit": 150, "burst": 50, "period_s": 86400 }));
    let mut spec = edge(&upstream, &config, 0).concurrency(concurrency);
    spec.routes.push(json!({
        "match": { "path": "/orders" }, "direct_response": { "status": 200 }
    }));
    let envoy = Envoy::start(&spec);
    let (ok, limited, other) = hammer(&envoy, 32, 25);
    assert!(other.is_empty(), "unexpected statuses {other:?}");
    assert_eq!(ok, 200, "admitted");
    assert_eq!(limited, 600, "refused");
    assert_eq!(counter(&envoy, "allowed", "per-client"), 200);
    assert_eq!(counter(&envoy, "limited", "per-client"), 600);
    assert_eq!(counter(&envoy, "cas_exhausted", "per-client"), 0);
    let workers = connections_per_worker(&envoy);
    assert_eq!(workers.len(), concurrency as usize, "{workers:?}");
    assert!(
        workers.iter().filter(|n| **n > 0).count() >= 2,
        "the requests must really be spread over workers: {workers:?}"
    );
}

#[test]
fn it_admits_exactly_the_limit_across_2_workers() {
    exactly_the_limit_passes(2);
}

#[test]
fn it_admits_exactly_the_limit_across_4_workers() {
    exactly_the_limit_passes(4);
}

#[test]
fn it_answers_429_with_retry_after_and_the_ratelimit_fields() {
    let upstream = EchoServer::start("core").unwrap();
    let mut config = one_rule(json!({ "limit": 2, "burst": 1, "period_s": 60 }));
    config["response_headers"] = json!({ "legacy": true, "on_allowed": true });
    let envoy = start(&upstream, &config, 1);

    let first = Request::get("/orders").send(envoy.addr()).unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"per-client\";q=2;w=60")
    );
    // 2 per minute: a token every 30 s; full again 30 s after the first request.
    assert_eq!(first.header("ratelimit"), Some("\"per-client\";r=2;t=30"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("2"));
    assert_eq!(statuses(&envoy, 2, |_| Request::get("/orders")), [200, 200]);

    let refused = Request::get("/orders").send(envoy.addr()).unwrap();
    assert_eq!(refused.status, 429);
    assert!(refused.header("x-served-by").is_none(), "a local reply");
    let retry = refused
        .header("retry-after")
        .unwrap_or_default()
        .to_string();
    assert!(retry == "30" || retry == "29", "retry-after {retry}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"per-client\";q=2;w=60")
    );
    assert_eq!(
        refused.header("ratelimit"),
        Some(format!("\"per-client\";r=0;t={retry}").as_str())
    );
    assert_eq!(refused.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-reset"), Some(retry.as_str()));
    assert_eq!(refused.header("content-type"), Some("application/json"));
    assert_eq!(
        refused.json(),
        json!({ "error": "rate_limited", "rule": "per-client", "retry_after": retry.parse::<u64>().unwrap() })
    );
    assert_eq!(
        upstream.received().len(),
        3,
        "the refused request never reached the upstream"
    );
}

#[test]
fn it_keeps_a_client_in_its_bucket_whatever_forwarded_for_it_sends() {
    let upstream = EchoServer::start("core").unwrap();
    let envoy = start(
        &upstream,
        &one_rule(json!({ "limit": 3, "period_s": 3600 })),
        2,
    );
    let spoof = |i: usize| {
        Request::get("/orders")
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("x-real-ip", format!("198.51.100.{i}"))
    };
    assert_eq!(statuses(&envoy, 6, spoof), [200, 200, 200, 429, 429, 429]);
    let many = |i: usize| {
        Request::get("/orders").header(
            "x-forwarded-for",
            format!("10.0.0.{i}, 203.0.113.{i}, [2001:db8::{i}]"),
        )
    };
    assert_eq!(statuses(&envoy, 3, many), [429, 429, 429]);
}

#[test]
fn it_takes_the_client_from_forwarded_for_only_through_trusted_hops() {
    let upstream = EchoServer::start("core").unwrap();
    let config = one_rule(json!({ "limit": 2, "period_s": 3600 }));
    // One trusted proxy in front (xff_num_trusted_hops: 1 on the connection manager).
    let envoy = Envoy::start(&edge(&upstream, &config, 1).concurrency(2));
    let from = |xff: &'static str| move |_| Request::get("/orders").header("x-forwarded-for", xff);
    assert_eq!(statuses(&envoy, 3, from("198.51.100.9")), [200, 200, 429]);
    // Entries left of the one our proxy appended are the client's own: no escape.
    assert_eq!(
        statuses(&envoy, 2, from("1.1.1.1, 198.51.100.9")),
        [429, 429]
    );
    // One /64 is one client; ::ffff:a.b.c.d is a.b.c.d.
    assert_eq!(statuses(&envoy, 2, from("2001:db8:5:6::1")), [200, 200]);
    assert_eq!(statuses(&envoy, 1, from("2001:db8:5:6:ffff::2")), [429]);
    assert_eq!(statuses(&envoy, 1, from("::ffff:198.51.100.9")), [429]);
    assert_eq!(statuses(&envoy, 2, from("198.51.100.10")), [200, 200]);
}

#[test]
fn it_picks_the_limit_from_the_callers_tier() {
    let upstream = EchoServer::start("core").unwrap();
    let config = json!({ "rules": [{
        "name": "partners",
        "key": [{ "header": "x-partner-id" }],
        "tiers": {
            "by": { "header": "x-partner-tier" },
            "default": "standard",
            "limits": {
                "premium": { "limit": 5, "period_s": 3600 },
                "standard": { "limit": 2, "period_s": 3600 }
            }
        }
    }]});
    let envoy = start(&upstream, &config, 2);
    let partner = |id: &'static str, tier: Option<&'static str>| {
        move |_| {
            let r = Request::get("/orders").header("x-partner-id", id);
            match tier {
                Some(t) => r.header("x-partner-tier", t),
                None => r,
            }
        }
    };
    assert_eq!(
        statuses(&envoy, 6, partner("p1", Some("premium"))),
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(
        statuses(&envoy, 3, partner("p2", Some("standard"))),
        [200, 200, 429]
    );
    // Unknown or missing tier: the default one (and its bucket).
    assert_eq!(statuses(&envoy, 1, partner("p2", Some("platinum"))), [429]);
    assert_eq!(statuses(&envoy, 1, partner("p2", None)), [429]);
    let refused = partner("p2", None)(0).send(envoy.addr()).unwrap();
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"partners\";q=2;w=3600")
    );
}

#[test]
fn it_picks_the_tier_and_the_bucket_from_the_verified_mtls_identity() {
    let dir = std::env::temp_dir().join(format!("kavach-rl-pki-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("kavach test ca").unwrap();
    let upstream = EchoServer::start("core").unwrap();
    let gold = "spiffe://bank.local/ns/payments/sa/checkout";
    let config = json!({ "rules": [{
        "name": "per-workload",
        "key": ["principal"],
        "when_key_missing": "deny",
        "tiers": {
            "by": { "principal": { gold: "gold" } },
            "default": "basic",
            "limits": {
                "gold": { "limit": 4, "period_s": 3600 },
                "basic": { "limit": 1, "period_s": 3600 }
            }
        }
    }]});
    let envoy = Envoy::start(&edge(&upstream, &config, 0).mtls(ca.server_files(&dir).unwrap()));
    let roots = ca.roots();
    let calls = |spiffe_id: &str, n: usize| -> Vec<u16> {
        let id = ca.client(spiffe_id).unwrap();
        (0..n)
            .map(|_| {
                Request::get("/v1/cards")
                    // A claimed identity means nothing: only the verified certificate counts.
                    .header(
                        "x-forwarded-client-cert",
                        "URI=spiffe://bank.local/ns/admin/sa/root",
                    )
                    .send_tls(envoy.mtls_addr(), &roots, Some(&id))
                    .map_or(0, |r| r.status)
            })
            .collect()
    };
    assert_eq!(calls(gold, 5), [200, 200, 200, 200, 429]);
    assert_eq!(
        calls("spiffe://bank.local/ns/payments/sa/refunds", 2),
        [200, 429]
    );
    // Plain text has no verified identity: refused as unidentified.
    assert_eq!(status(&envoy, Request::get("/v1/cards")), 400);
}

#[test]
fn it_counts_and_records_but_never_refuses_in_shadow_mode() {
    let upstream = EchoServer::start("core").unwrap();
    let mut config = one_rule(json!({ "limit": 2, "period_s": 3600 }));
    config["mode"] = json!("shadow");
    let envoy = Envoy::start(
        &EnvoySpec::new(upstream.addr())
            .filter(FilterSpec::new(Module::Audit, "{}"))
            .filter(ratelimit(&config))
            .edge(0)
            .audit_access_log(),
    );
    assert_eq!(statuses(&envoy, 5, |_| Request::get("/orders")), [200; 5]);
    assert_eq!(upstream.received().len(), 5);
    assert_eq!(counter(&envoy, "allowed", "per-client"), 2);
    assert_eq!(counter(&envoy, "shadow_limited", "per-client"), 3);
    assert_eq!(counter(&envoy, "limited", "per-client"), 0);
    let lines = envoy.wait_audit_lines(5);
    let outcomes: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or(Value::Null))
        .map(|r| r["decisions"][0]["outcome"].clone())
        .collect();
    assert_eq!(
        outcomes,
        [
            "allow",
            "allow",
            "shadow_deny",
            "shadow_deny",
            "shadow_deny"
        ]
    );
    let last: Value = serde_json::from_str(&lines[4]).unwrap();
    assert_eq!(last["decisions"][0]["rule"], "per-client");
    assert_eq!(last["decisions"][0]["reason"], "limited");
}

#[test]
fn it_never_picks_one_of_duplicate_or_invalid_key_headers() {
    let upstream = EchoServer::start("core").unwrap();
    let config = json!({ "rules": [{
        "name": "per-key", "key": [{ "header": "x-api-key" }], "limit": 2, "period_s": 3600
    }]});
    let envoy = start(&upstream, &config, 2);
    let with = |values: &'static [&'static [u8]]| {
        move |_| {
            values
                .iter()
                .fold(Request::get("/orders"), |r, v| r.header("x-api-key", v))
        }
    };
    // Duplicates, absent, empty and invalid values all land in the rule's one shared bucket.
    assert_eq!(statuses(&envoy, 1, with(&[b"a", b"b"])), [200]);
    assert_eq!(statuses(&envoy, 1, with(&[])), [200]);
    assert_eq!(statuses(&envoy, 1, with(&[b"c", b"d"])), [429]);
    assert_eq!(statuses(&envoy, 1, with(&[b"   "])), [429]);
    assert_eq!(statuses(&envoy, 1, with(&[b"k\xff\xfe"])), [429]);
    assert_eq!(counter(&envoy, "key_missing", "per-key"), 5);
    // A proper key has its own bucket.
    assert_eq!(statuses(&envoy, 3, with(&[b"key-1"])), [200, 200, 429]);
}

#[test]
fn it_can_refuse_requests_it_cannot_identify() {
    let upstream = EchoServer::start("core").unwrap();
    let config = json!({ "rules": [{
        "name": "per-key", "key": [{ "header": "x-api-key" }], "when_key_missing": "deny",
        "limit": 2, "period_s": 3600
    }]});
    let envoy = start(&upstream, &config, 1);
    let resp = Request::get("/orders")
        .header("x-api-key", "a")
        .header("x-api-key", "b")
        .send(envoy.addr())
        .unwrap();
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json(),
        json!({ "error": "rate_limit_key_missing", "rule": "per-key" })
    );
    assert_eq!(status(&envoy, Request::get("/orders")), 400);
    assert_eq!(
        status(&envoy, Request::get("/orders").header("x-api-key", "a")),
        200
    );
    assert!(upstream.received().len() == 1);
}

#[test]
fn it_limits_only_the_routes_paths_and_methods_a_rule_names() {
    let upstream = EchoServer::start("core").unwrap();
    let config = json!({ "rules": [{
        "name": "orders", "key": ["client_address"], "limit": 1, "period_s": 3600,
        "match": { "routes": ["orders"], "paths": ["/v1/orders/*"], "methods": ["POST"] }
    }]});
    let mut spec = edge(&upstream, &config, 0);
    spec.routes.push(json!({
        "name": "orders", "match": { "prefix": "/v1/orders" }, "route": { "cluster": "upstream" }
    }));
    let envoy = Envoy::start(&spec);
    let post = |path: &'static str| move |_| Request::post(path, "{}");
    assert_eq!(statuses(&envoy, 2, post("/v1/orders/1")), [200, 429]);
    // Another spelling of a matching path is the same path.
    assert_eq!(statuses(&envoy, 1, post("/v1/orders//./2?x=1")), [429]);
    // Other methods, paths outside the glob, other routes: not limited.
    assert_eq!(
        statuses(&envoy, 2, |_| Request::get("/v1/orders/1")),
        [200, 200]
    );
    assert_eq!(statuses(&envoy, 2, post("/v1/orders/1/items")), [200, 200]);
    assert_eq!(statuses(&envoy, 2, post("/v2/orders/1")), [200, 200]);
}

#[test]
fn it_refuses_to_start_on_a_bad_configuration() {
    let upstream = EchoServer::start("core").unwrap();
    let config = json!({ "rules": [{
        "name": "per client", "key": ["client_address"], "limit": 1, "period_s": 60
    }]});
    let spec = EnvoySpec::new(upstream.addr()).filter(ratelimit(&config));
    let failure = match Envoy::try_start(&spec) {
        Err(f) => f,
        Ok(_) => panic!("Envoy started with an invalid rule name"),
    };
    let expected = config_error_line(
        Module::Ratelimit,
        0,
        "rules[0].name: \"per client\" must be 1 to 64 characters from A-Z a-z 0-9 _ -",
    );
    assert!(failure.log.contains(&expected), "{}", failure.log);
}

/// Sends `keys` requests to `path`, each with a distinct `x-client` value, over kept-alive
/// connections from `threads` threads; returns how many were refused.
#[allow(clippy::panic)]
fn flood(envoy: &Envoy, path: &'static str, first: usize, keys: usize, threads: usize) -> usize {
    let addr = envoy.addr();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            thread::spawn(move || {
                let mut conn = Connection::open(addr).ok();
                let mut refused = 0;
                for k in (first + t..first + keys).step_by(threads) {
                    let req = Request::get(path).header("x-client", format!("flood-{k}"));
                    let resp = match conn.as_mut().map(|c| c.send(&req)) {
                        Some(Ok(r)) => r,
                        _ => {
                            // Reconnect once (Envoy may close an idle or old connection).
                            conn = Connection::open(addr).ok();
                            match conn.as_mut().map(|c| c.send(&req)) {
                                Some(Ok(r)) => r,
                                _ => panic!("flood request {k} failed"),
                            }
                        }
                    };
                    if resp.status == 429 {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

/// Distinct keys sent after warm-up (`KAVACH_RATELIMIT_FLOOD_KEYS`, default 100 000; the
/// documented measurement used 1 000 000).
fn flood_keys() -> usize {
    std::env::var("KAVACH_RATELIMIT_FLOOD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn it_keeps_memory_flat_and_limits_correct_under_a_flood_of_distinct_keys() {
    let upstream = EchoServer::start("core").unwrap();
    // Two tables of 4096 slots: buckets that stay partly used for a day (a flood fills the
    // table and is refused), and buckets that are full again after a second (a flood keeps
    // replacing them: every request writes).
    let config = json!({ "rules": [
        { "name": "daily", "match": { "paths": ["/daily"] }, "key": [{ "header": "x-client" }],
          "limit": 3, "period_s": 86400, "slots": 4096 },
        { "name": "churn", "match": { "paths": ["/churn"] }, "key": [{ "header": "x-client" }],
          "limit": 1, "period_s": 1, "slots": 4096 }
    ]});
    // Admitted requests are answered by Envoy itself: the flood measures Envoy, not the upstream.
    let mut spec = edge(&upstream, &config, 0).concurrency(2);
    for path in ["/daily", "/churn"] {
        spec.routes.push(json!({
            "match": { "path": path }, "direct_response": { "status": 200 }
        }));
    }
    let envoy = Envoy::start(&spec);
    let rss_start = envoy.rss_kib().unwrap_or(0);
    let client = |id: &'static str| move |_| Request::get("/daily").header("x-client", id);
    // An abusive client, throttled; a quiet one with tokens left.
    assert_eq!(statuses(&envoy, 4, client("abuser")), [200, 200, 200, 429]);
    assert_eq!(statuses(&envoy, 1, client("quiet")), [200]);

    // Warm-up: more keys than slots in both tables, so every allocation has happened once.
    flood(&envoy, "/daily", 0, 10_000, 8);
    flood(&envoy, "/churn", 0, 10_000, 8);
    let rss_warm = envoy.rss_kib().unwrap_or(0);
    let keys = flood_keys() / 2;
    let daily_refused = flood(&envoy, "/daily", 10_000, keys, 8);
    let churn_refused = flood(&envoy, "/churn", 10_000, keys, 8);
    let rss_after = envoy.rss_kib().unwrap_or(0);
    eprintln!(
        "envoy VmRSS: {rss_start} KiB at start, {rss_warm} KiB after warm-up (20000 keys), \
         {rss_after} KiB after {} more distinct keys; refused: daily {daily_refused}/{keys}, \
         churn {churn_refused}/{keys}",
        2 * keys
    );

    // Every daily bucket is partly used for a day: new keys find no slot and are refused
    // (fail closed) rather than handed a fresh bucket.
    assert!(
        daily_refused > keys * 9 / 10,
        "{daily_refused} of {keys} refused"
    );
    assert!(counter(&envoy, "table_full", "daily") >= daily_refused as u64);
    // Churn buckets are full again after a second and get replaced: new keys get in.
    let churn_allowed = counter(&envoy, "allowed", "churn");
    assert!(
        churn_allowed > 4096,
        "{churn_allowed} churn keys admitted: more than the slots, so full buckets were replaced"
    );
    assert_eq!(
        churn_allowed + counter(&envoy, "table_full", "churn"),
        (10_000 + keys) as u64,
        "every churn request was either admitted or refused for a full table"
    );
    // The clients that were there before keep their buckets, limits unchanged.
    let abuser = client("abuser")(0).send(envoy.addr()).unwrap();
    assert_eq!(abuser.status, 429);
    let retry: u64 = abuser
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        retry > 3600,
        "refused by its own bucket (retry-after {retry}), not by a full table"
    );
    assert_eq!(statuses(&envoy, 3, client("quiet")), [200, 200, 429]);
    // Memory: the tables were allocated when the filter was configured; keys add nothing.
    assert!(rss_start > 0 && rss_after > 0, "VmRSS not readable");
    assert!(
        rss_after < rss_warm + 8 * 1024,
        "Envoy grew from {rss_warm} KiB to {rss_after} KiB over {} distinct keys",
        2 * keys
    );
}

// ---- global rules: a rate-limit service shared by several Envoys ----

mod global {
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener};

    use kavach_integration::rls::{Limit, RlsServer, Unit};

    use super::*;

    /// Per-client rule decided by the service; the local fallback allows 2 per hour.
    fn config(failure_mode: &str, timeout_ms: u64) -> Value {
        json!({
            "response_headers": { "on_allowed": true },
            "rules": [{
                "name": "orders", "global": true, "key": [{ "header": "x-client" }],
                "limit": 2, "period_s": 3600
            }],
            "rate_limit_service": {
                "cluster": "rls", "domain": "kavach",
                "timeout_ms": timeout_ms, "failure_mode": failure_mode
            }
        })
    }

    fn envoy(upstream: &EchoServer, rls: SocketAddr, config: &Value) -> Envoy {
        Envoy::start(
            &edge(upstream, config, 0)
                .grpc_cluster("rls", rls)
                .state_log(&["kavach.decision.ratelimit"]),
        )
    }

    /// A value of a published decision's `detail` (a list of [name, value] pairs).
    fn detail(d: &Value, name: &str) -> Option<String> {
        d["detail"].as_array()?.iter().find_map(|pair| {
            (pair[0] == name).then(|| pair[1].as_str().unwrap_or_default().to_string())
        })
    }

    fn from(client: &str) -> Request {
        Request::get("/orders").header("x-client", client)
    }

    /// An address nothing listens on.
    fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    #[test]
    fn two_envoys_share_the_services_count() {
        // Hour-long windows: no window boundary falls inside the test.
        let rls = RlsServer::start(
            "kavach",
            vec![Limit::new(
                "orders-per-client",
                &[("rule", Some("orders")), ("x-client", None)],
                5,
                Unit::Hour,
            )],
        );
        let upstream = EchoServer::start("upstream").unwrap();
        let a = envoy(&upstream, rls.addr(), &config("deny", 1000));
        let b = envoy(&upstream, rls.addr(), &config("deny", 1000));
        let mut got = Vec::new();
        for i in 0..8 {
            let e = if i % 2 == 0 { &a } else { &b };
            got.push(from("alice").send(e.addr()).unwrap());
        }
        let codes: Vec<u16> = got.iter().map(|r| r.status).collect();
        assert_eq!(
            codes,
            [200, 200, 200, 200, 200, 429, 429, 429],
            "5 in all, across both"
        );
        // The service's limit and count reach the client.
        assert_eq!(
            got[0].header("ratelimit-policy"),
            Some("\"orders\";q=5;w=3600")
        );
        assert!(got[4]
            .header("ratelimit")
            .unwrap()
            .starts_with("\"orders\";r=0;t="));
        let refused = &got[5];
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some("\"orders\";q=5;w=3600")
        );
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
        assert_eq!(refused.json()["error"], "rate_limited");
        // Another client has its own count, on either Envoy.
        assert_eq!(from("bob").send(b.addr()).unwrap().status, 200);
        // What the service was asked: the rule and the client's canonical key.
        let seen = rls.seen();
        assert_eq!(seen.len(), 9);
        assert_eq!(seen[0].domain, "kavach");
        assert_eq!(
            seen[0].descriptors,
            vec![vec![
                ("rule".to_string(), "orders".to_string()),
                ("x-client".into(), "alice".into())
            ]]
        );
        assert_eq!(seen[8].descriptors[0][1].1, "bob");
        assert_eq!(
            counter(&a, "limited", "orders") + counter(&b, "limited", "orders"),
            3
        );
        let lines = a.wait_state_lines(4);
        let first: Value = serde_json::from_str(&lines[0][0]).unwrap();
        assert_eq!(first["outcome"], "allow", "{first}");
        assert_eq!(detail(&first, "service").as_deref(), Some("ok"), "{first}");
        assert_eq!(detail(&first, "remaining").as_deref(), Some("4"), "{first}");
    }

    #[test]
    fn a_service_that_is_down_gets_the_failure_mode() {
        let upstream = EchoServer::start("upstream").unwrap();
        let down = closed_port();
        // deny: 503 and the reason, never the upstream.
        let e = envoy(&upstream, down, &config("deny", 500));
        let r = from("alice").send(e.addr()).unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["error"], "rate_limit_service_unavailable");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(upstream.received().is_empty());
        assert_eq!(counter(&e, "service_errors", "orders"), 1);
        let d: Value = serde_json::from_str(&e.wait_state_lines(1)[0][0]).unwrap();
        assert_eq!(d["reason"], "service_unavailable", "{d}");
        assert_eq!(detail(&d, "service").as_deref(), Some("unavailable"), "{d}");
        drop(e);
        // allow: through.
        let e = envoy(&upstream, down, &config("allow", 500));
        assert_eq!(statuses(&e, 3, |_| from("alice")), [200, 200, 200]);
        drop(e);
        // local: this Envoy's own bucket (2 per hour).
        let e = envoy(&upstream, down, &config("local", 500));
        assert_eq!(statuses(&e, 3, |_| from("alice")), [200, 200, 429]);
        assert_eq!(counter(&e, "service_errors", "orders"), 3);
    }

    #[test]
    fn a_service_that_hangs_times_out_into_the_failure_mode() {
        let rls = RlsServer::hanging();
        let upstream = EchoServer::start("upstream").unwrap();
        let e = envoy(&upstream, rls.addr(), &config("deny", 200));
        let r = from("alice").send(e.addr()).unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        // Envoy ends a call that outlives its timeout with UNAVAILABLE, as for a refused
        // connection: the record cannot tell the two apart.
        let d: Value = serde_json::from_str(&e.wait_state_lines(1)[0][0]).unwrap();
        assert_eq!(detail(&d, "service").as_deref(), Some("unavailable"), "{d}");
        assert_eq!(rls.seen().len(), 1, "the call reached the service");
        drop(e);
        let e = envoy(&upstream, rls.addr(), &config("local", 200));
        assert_eq!(statuses(&e, 3, |_| from("alice")), [200, 200, 429]);
        // Clients that leave while their request waits for the service: the late answer (the
        // timeout) finds no request, and Envoy goes on serving.
        for _ in 0..5 {
            let mut c = std::net::TcpStream::connect(e.addr()).unwrap();
            c.write_all(b"GET /orders HTTP/1.1\r\nhost: x\r\nx-client: carol\r\n\r\n")
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(statuses(&e, 1, |_| from("dave")), [200]);
        assert!(!e.log().contains("panicked"), "{}", e.log());
    }

    #[test]
    fn a_request_body_waits_with_the_headers() {
        let rls = RlsServer::start("kavach", Vec::new());
        let upstream = EchoServer::start("upstream").unwrap();
        let e = envoy(&upstream, rls.addr(), &config("deny", 1000));
        let r = Request::post("/orders", vec![b'x'; 100_000])
            .header("x-client", "alice")
            .send(e.addr())
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echoed().unwrap().body_len, 100_000);
    }

    #[test]
    fn global_configuration_errors_name_the_field() {
        let upstream = EchoServer::start("upstream").unwrap();
        let mut bad = config("deny", 50);
        bad["rate_limit_service"]["failure_mode"] = json!("open");
        let spec = edge(&upstream, &bad, 0);
        let f = Envoy::try_start(&spec).err().expect("refused");
        let line = config_error_line(
            Module::Ratelimit,
            0,
            "rate_limit_service.failure_mode: unknown variant `open`, expected one of `deny`, `allow`, `local`",
        );
        assert!(f.log.contains(&line), "{line}\n{}", f.log);
    }

    /// The filter's hand-written RLS v3 encoding against Envoy's generated protos (prost), both
    /// ways.
    #[test]
    fn the_filters_messages_are_envoys_rls_v3_messages() {
        use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
            rate_limit, Code, DescriptorStatus, RateLimit,
        };
        use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
        use kavach_core::ratelimit::rls;
        use prost::Message;

        let d = |entries: &[(&str, &str)], hits| rls::Descriptor {
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hits,
        };
        let ours = rls::encode_request(
            "kavach",
            &[
                d(
                    &[("rule", "a"), ("principal", "spiffe://bank/ns/x/sa/y")],
                    3,
                ),
                d(&[("rule", "b"), ("x-client", "ä-unicode")], 1),
            ],
        );
        let theirs = RateLimitRequest::decode(ours.as_slice()).unwrap();
        assert_eq!(theirs.domain, "kavach");
        assert_eq!(theirs.hits_addend, 0, "costs differ: per descriptor only");
        type Entries = Vec<(String, String)>;
        let got: Vec<(Entries, Option<u64>)> = theirs
            .descriptors
            .iter()
            .map(|x| {
                (
                    x.entries
                        .iter()
                        .map(|e| (e.key.clone(), e.value.clone()))
                        .collect(),
                    x.hits_addend.map(|h| h.value),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    vec![
                        ("rule".to_string(), "a".to_string()),
                        ("principal".into(), "spiffe://bank/ns/x/sa/y".into())
                    ],
                    Some(3)
                ),
                (
                    vec![
                        ("rule".into(), "b".into()),
                        ("x-client".into(), "ä-unicode".into())
                    ],
                    None
                ),
            ]
        );

        let answer = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![
                DescriptorStatus {
                    code: Code::Ok as i32,
                    current_limit: Some(RateLimit {
                        name: "orders".into(),
                        requests_per_unit: 100,
                        unit: rate_limit::Unit::Hour as i32,
                    }),
                    limit_remaining: 41,
                    duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: 1200,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                DescriptorStatus {
                    code: Code::OverLimit as i32,
                    ..Default::default()
                },
            ],
            raw_body: b"ignored".to_vec(),
            ..Default::default()
        };
        let decoded = rls::decode_response(&answer.encode_to_vec()).unwrap();
        assert_eq!(decoded.overall, rls::Code::OverLimit);
        assert_eq!(decoded.statuses.len(), 2);
        let first = &decoded.statuses[0];
        assert_eq!(first.code, rls::Code::Ok);
        assert_eq!(
            first.current_limit,
            Some(rls::CurrentLimit {
                requests_per_unit: 100,
                unit_s: 3600,
                name: "orders".into()
            })
        );
        assert_eq!((first.remaining, first.reset_s), (41, Some(1200)));
        assert_eq!(decoded.statuses[1].code, rls::Code::OverLimit);
        assert_eq!(decoded.statuses[1].reset_s, None);
    }
}
