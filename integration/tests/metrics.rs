//! The bounded-metrics filter inside the real Envoy.

use std::time::{Duration, Instant};

use kavach_integration::envoy::{config_error_line, Module};
use kavach_integration::pki::TestCa;
use kavach_integration::prometheus::{metrics_stats_config, Scrape};
use kavach_integration::{load, Behaviour, EchoServer, Envoy, EnvoySpec, FilterSpec, Request};
use serde_json::json;

/// An Envoy with the metrics filter and the stats tags for `labels`, in front of `upstream`.
fn spec(upstream: &EchoServer, config: &str, labels: &[&str]) -> EnvoySpec {
    EnvoySpec::new(upstream.addr())
        .filter(FilterSpec::new(Module::Metrics, config))
        .stats_config(metrics_stats_config(labels))
}

fn named_route(name: &str, prefix: &str, cluster: &str) -> serde_json::Value {
    json!({ "name": name, "match": { "prefix": prefix }, "route": { "cluster": cluster } })
}

/// Labelled series of `name` (everything but the `(other)` series).
fn labelled<'a>(scrape: &'a Scrape, name: &str) -> Vec<&'a kavach_integration::prometheus::Sample> {
    scrape
        .series(name)
        .into_iter()
        .filter(|s| !s.labels.iter().any(|(_, v)| v == "(other)"))
        .collect()
}

fn other(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .series(name)
        .iter()
        .filter(|s| {
            !s.labels.is_empty() && s.labels.iter().all(|(k, v)| k == "le" || v == "(other)")
        })
        .map(|s| s.value)
        .sum()
}

fn overflow(scrape: &Scrape, metric: &str) -> Option<f64> {
    scrape.value("kavach_metrics_overflow_total", &[("metric", metric)])
}

const LABELS_CONFIG: &str = r#"{
  "path_templates": ["/pay/{payment_id}/refund"],
  "metrics": [
    { "name": "kavach_requests_total", "type": "counter", "max_series": 20,
      "labels": [ {"source": "route"}, {"source": "method"}, {"source": "status_class"},
                  {"source": "path"}, {"source": "header", "header": "x-tenant", "name": "tenant"} ] },
    { "name": "kavach_requests_by_caller_total", "type": "counter", "max_series": 5,
      "labels": [ {"source": "principal", "name": "caller"}, {"source": "cluster"}, {"source": "status_code"} ] },
    { "name": "kavach_request_duration_ms", "type": "histogram", "value": "duration_ms", "max_series": 5,
      "labels": [ {"source": "route"} ] },
    { "name": "kavach_response_bytes", "type": "histogram", "value": "response_bytes", "max_series": 5,
      "labels": [ {"source": "route"} ] }
  ]
}"#;

#[test]
fn it_shows_every_series_with_its_labels_on_the_prometheus_endpoint() {
    let dir = std::env::temp_dir().join(format!("kavach-metrics-pki-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("kavach test ca").unwrap();
    let upstream = EchoServer::start("core").unwrap();
    let ledger = EchoServer::start_with("ledger", Behaviour::Status(404)).unwrap();
    let envoy = Envoy::start(
        &spec(
            &upstream,
            LABELS_CONFIG,
            &[
                "route",
                "method",
                "status_class",
                "path",
                "tenant",
                "caller",
                "cluster",
                "status_code",
            ],
        )
        .cluster("ledger", ledger.addr(), None)
        .route(named_route("payments", "/pay", "upstream"))
        .route(named_route("ledger", "/ledger", "ledger"))
        .route(json!({ "name": "down", "match": { "prefix": "/down" },
                       "direct_response": { "status": 503 } }))
        .mtls(ca.server_files(&dir).unwrap()),
    );
    let send = |r: Request| r.send(envoy.addr()).unwrap().status;
    for _ in 0..3 {
        assert_eq!(
            send(Request::get("/pay/42?card=4111111111111111").header("x-tenant", "acme")),
            200
        );
    }
    assert_eq!(
        send(Request::post("/pay/7/refund", "{}").header("x-tenant", "acme.in")),
        200
    );
    assert_eq!(send(Request::get("/ledger/2024-01-15")), 404);
    assert_eq!(
        send(Request::new("DELETE", "/down/now").header("x-tenant", "a\"b{c}")),
        503
    );
    // Bad header values used as a label: placeholders, never the bytes.
    assert_eq!(
        send(Request::get("/pay").header("x-tenant", b"\xff\xfe")),
        200
    );
    assert_eq!(
        send(
            Request::get("/pay")
                .header("x-tenant", "a")
                .header("x-tenant", "b")
        ),
        200
    );
    assert_eq!(
        send(Request::get("/pay").header("x-tenant", "t".repeat(200))),
        200
    );
    // A verified mTLS caller.
    let caller = ca
        .client("spiffe://bank.local/ns/payments/sa/checkout")
        .unwrap();
    let resp = Request::get("/pay/99")
        .send_tls(envoy.mtls_addr(), &ca.roots(), Some(&caller))
        .unwrap();
    assert_eq!(resp.status, 200);

    let scrape = envoy.wait_prometheus(Duration::from_secs(20), |s| {
        s.sum("kavach_request_duration_ms_count") >= 10.0 && s.sum("kavach_requests_total") >= 10.0
    });
    assert!(scrape.unparsed.is_empty(), "{:?}", scrape.unparsed);
    let requests = |route: &str, method: &str, class: &str, path: &str, tenant: &str| {
        scrape.value(
            "kavach_requests_total",
            &[
                ("route", route),
                ("method", method),
                ("status_class", class),
                ("path", path),
                ("tenant", tenant),
            ],
        )
    };
    assert_eq!(
        requests("payments", "GET", "2xx", "/pay/:id", "acme"),
        Some(3.0)
    );
    assert_eq!(
        requests(
            "payments",
            "POST",
            "2xx",
            "/pay/:payment_id/refund",
            "acme_in"
        ),
        Some(1.0)
    );
    assert_eq!(
        requests("ledger", "GET", "4xx", "/ledger/:id", "(none)"),
        Some(1.0)
    );
    assert_eq!(
        requests("down", "DELETE", "5xx", "/down/now", "a_b_c_"),
        Some(1.0)
    );
    assert_eq!(
        requests("payments", "GET", "2xx", "/pay", "(invalid)"),
        Some(1.0)
    );
    assert_eq!(
        requests("payments", "GET", "2xx", "/pay", "(multiple)"),
        Some(1.0)
    );
    assert_eq!(
        requests("payments", "GET", "2xx", "/pay", "(too_long)"),
        Some(1.0)
    );
    assert_eq!(
        requests("payments", "GET", "2xx", "/pay/:id", "(none)"),
        Some(1.0)
    );
    assert_eq!(
        scrape.value(
            "kavach_requests_by_caller_total",
            &[
                ("caller", "spiffe://bank_local/ns/payments/sa/checkout"),
                ("cluster", "upstream"),
                ("status_code", "200")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value(
            "kavach_requests_by_caller_total",
            &[
                ("caller", "(none)"),
                ("cluster", "ledger"),
                ("status_code", "404")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value(
            "kavach_requests_by_caller_total",
            &[
                ("caller", "(none)"),
                ("cluster", "(none)"),
                ("status_code", "503")
            ]
        ),
        Some(1.0),
        "a direct response has no cluster"
    );
    assert_eq!(
        scrape.value("kavach_request_duration_ms_count", &[("route", "payments")]),
        Some(8.0)
    );
    assert_eq!(
        scrape.value("kavach_response_bytes_count", &[("route", "down")]),
        Some(1.0)
    );
    let bytes = scrape
        .value("kavach_response_bytes_sum", &[("route", "payments")])
        .unwrap();
    assert!(
        bytes > 8.0 * 100.0,
        "echo bodies are hundreds of bytes: {bytes}"
    );
    assert_eq!(overflow(&scrape, "kavach_requests_total"), Some(0.0));
    assert_eq!(
        scrape.value(
            "kavach_metrics_series",
            &[("metric", "kavach_requests_total")]
        ),
        Some(8.0),
        "eight combinations"
    );
    // Nothing of the query string, no raw value with a quote or brace, anywhere.
    let (_, text) = envoy.admin_get("/stats/prometheus").unwrap();
    assert!(!text.contains("4111111111111111"));
    assert!(!text.contains("a\\\"b"));
    assert!(!text.contains("{c}"));
}

const CARDINALITY_CONFIG: &str = r#"{
  "max_total_series": 400,
  "metrics": [
    { "name": "kavach_requests_total", "type": "counter", "max_series": 100,
      "labels": [ {"source": "route"}, {"source": "method"}, {"source": "status_class"},
                  {"source": "path"}, {"source": "header", "header": "x-tenant", "name": "tenant"} ] },
    { "name": "kavach_request_duration_ms", "type": "histogram", "value": "duration_ms",
      "max_series": 20, "labels": [ {"source": "route"}, {"source": "path"} ] },
    { "name": "kavach_requests_by_method_total", "type": "counter", "max_series": 50,
      "labels": [ {"source": "method"}, {"source": "status_class"} ] }
  ]
}"#;

/// Lower-case letters only, so the automatic templating keeps it as a word.
fn word(mut i: usize) -> String {
    let mut s = String::new();
    loop {
        s.push(char::from(b'a' + (i % 26) as u8));
        i /= 26;
        if i == 0 {
            return s;
        }
    }
}

/// Envoy's HTTP/1 codec itself refuses non-standard methods (400 before any filter runs), so
/// the methods vary over the standard ones that carry a response body.
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Request `i`: its own path (a word segment and an id), host and tenant.
fn distinct_request(i: usize) -> Request {
    let method = METHODS[i % 6];
    let route = ["a", "b", "c", "d", "e"][i % 5];
    Request::new(method, format!("/{route}/item-{}/{i}?trace={i}", word(i)))
        .header("host", format!("h{i}.bank.test"))
        .header("x-tenant", format!("t-{}", word(i * 7)))
}

#[test]
fn it_caps_series_under_100k_distinct_requests_and_counts_the_rest_exactly() {
    let upstream = EchoServer::start("core").unwrap();
    let mut spec = spec(
        &upstream,
        CARDINALITY_CONFIG,
        &["route", "method", "status_class", "path", "tenant"],
    )
    .concurrency(2);
    for name in ["a", "b", "c", "d"] {
        spec = spec.route(named_route(name, &format!("/{name}/"), "upstream"));
    }
    let spec = spec.route(json!({ "name": "e", "match": { "prefix": "/e/" },
                                  "direct_response": { "status": 404 } }));
    let envoy = Envoy::start(&spec);

    // Warm up: budgets fill, connection pools and buffers reach their working size.
    let warmup = load::run(envoy.addr(), 5_000, 16, |i| distinct_request(1_000_000 + i));
    assert_eq!(warmup.errors, 0, "{:?}", warmup.error_samples);
    let rss_before = envoy.rss_kib().unwrap();

    let started = Instant::now();
    let report = load::run(envoy.addr(), 100_000, 16, distinct_request);
    let elapsed = started.elapsed();
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    let sent = (warmup.answered() + report.answered()) as f64;
    eprintln!(
        "100000 requests in {elapsed:?} ({:.0}/s); statuses {:?}",
        100_000.0 / elapsed.as_secs_f64(),
        report.statuses
    );

    let scrape = envoy.wait_prometheus(Duration::from_secs(30), |s| {
        s.sum("kavach_requests_total") == sent
            && s.sum("kavach_requests_by_method_total") == sent
            && s.sum("kavach_request_duration_ms_count") == sent
    });
    let rss_after = envoy.rss_kib().unwrap();
    eprintln!(
        "VmRSS {rss_before} KiB before, {rss_after} KiB after ({:+} KiB)",
        rss_after as i64 - rss_before as i64
    );
    assert!(scrape.unparsed.is_empty(), "{:?}", scrape.unparsed);

    // Every request is in exactly one series of each metric.
    assert_eq!(scrape.sum("kavach_requests_total"), sent);
    assert_eq!(scrape.sum("kavach_requests_by_method_total"), sent);
    assert_eq!(scrape.sum("kavach_request_duration_ms_count"), sent);

    // Distinct combinations: no two workers can both spend budget on one, so the budget is
    // spent exactly, and never passed.
    for (metric, max) in [
        ("kavach_requests_total", 100.0),
        ("kavach_request_duration_ms_count", 20.0),
    ] {
        let own = labelled(&scrape, metric);
        assert_eq!(own.len() as f64, max, "{metric}");
        let rest = other(&scrape, metric);
        let base = metric.trim_end_matches("_count");
        assert_eq!(overflow(&scrape, base), Some(rest), "{metric}");
        assert_eq!(
            own.iter().map(|s| s.value).sum::<f64>() + rest,
            sent,
            "{metric}"
        );
        assert_eq!(
            scrape.value("kavach_metrics_series", &[("metric", base)]),
            Some(max)
        );
    }
    // The small vocabulary fits: per method and status class, nothing overflows.
    assert_eq!(
        overflow(&scrape, "kavach_requests_by_method_total"),
        Some(0.0)
    );
    let by_method = labelled(&scrape, "kavach_requests_by_method_total");
    assert_eq!(by_method.len(), 6 * 2, "{by_method:?}");
    let method_total = |m: &str| {
        by_method
            .iter()
            .filter(|s| s.label("method") == Some(m))
            .map(|s| s.value)
            .sum::<f64>()
    };
    let expected =
        |m: usize, n: usize, offset: usize| (offset..offset + n).filter(|i| i % 6 == m).count();
    for (m, name) in METHODS.iter().enumerate() {
        let want = expected(m, 100_000, 0) + expected(m, 5_000, 1_000_000);
        assert_eq!(method_total(name), want as f64, "{name}");
    }
    // Labels render: the first admitted series are real label values, templated.
    let sample = labelled(&scrape, "kavach_requests_total")[0];
    assert!(
        sample.label("path").unwrap().ends_with("/:id"),
        "{sample:?}"
    );
    assert!(
        sample.label("tenant").unwrap().starts_with("t-"),
        "{sample:?}"
    );

    // Memory stays flat: all the growth a cardinality explosion would cause is absent.
    assert!(
        rss_after < rss_before + 32 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn it_refuses_to_start_when_the_budgets_exceed_the_global_ceiling() {
    let upstream = EchoServer::start("core").unwrap();
    let config = r#"{ "max_total_series": 150, "metrics": [
        { "name": "kavach_requests_total", "type": "counter", "max_series": 100, "labels": [{"source": "route"}] },
        { "name": "kavach_request_duration_ms", "type": "histogram", "value": "duration_ms",
          "max_series": 50, "labels": [{"source": "route"}] } ] }"#;
    let failure = match Envoy::try_start(&spec(&upstream, config, &["route"])) {
        Ok(_) => panic!("Envoy started with budgets over the ceiling"),
        Err(f) => f,
    };
    let expected = config_error_line(
        Module::Metrics,
        0,
        "metrics[1].max_series: the budgets add up to at least 152 series (each metric's max_series plus its \"(other)\" series), over max_total_series 150",
    );
    assert!(
        failure.log.contains(&expected),
        "expected {expected:?} in:\n{}",
        failure.log
    );
}
