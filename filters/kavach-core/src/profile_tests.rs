//! Where a request's cost goes inside the bundle, outside Envoy: the benchmark's chain
//! (scripts/lib/bench.py: the same five configurations, the same request) run natively
//! through a host that counts every call by kind. `scripts/profile-chain.sh` runs this under
//! callgrind for instruction counts per function; the counts of host calls, each of which
//! costs 0.3-1.6 µs in Envoy (docs/performance.md), print to stdout.
//!
//! Ignored by default: it measures, it does not check.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::chain;
use crate::context::ContextStream;
use crate::filter::HttpFilter;
use crate::filters;
use crate::host::{HeaderMap, Headers, Host, HostLayer, MetricKind, NullHost};
use crate::testing::{CountingHost, MockHost};

/// The benchmark's chain: keep in step with CONFIGS in scripts/lib/bench.py.
const BENCH_CHAIN: &str = r#"{"chain": [
 {"filter": "audit", "config": {"utc_offset": "+05:30", "return_audit_id": true, "query": "redact_values"}},
 {"filter": "residency", "config": {"policy_version": "bench-2026-11-26", "classes": [
    {"name": "public", "allowed_regions": ["*"]},
    {"name": "pii", "allowed_regions": ["in-west", "in-south"], "action": "deny"},
    {"name": "payment", "allowed_regions": ["in-west", "in-south"], "action": "deny"}],
    "routes": {"payments": {"min_class": "payment"}}}},
 {"filter": "pci_authz", "config": {"policy_version": "bench-2026-11-26", "trust_domain": "bank.local",
    "rules": [RULES
      {"name": "cards-read", "methods": ["GET"], "paths": ["/v1/cards/*"],
       "headers": [{"name": "x-tenant", "regex": "^[a-z]+$"}]}]}},
 {"filter": "ratelimit", "config": {"response_headers": {"ietf": true, "on_allowed": true},
    "rules": [{"name": "per-client", "key": ["client_address"], "limit": 1000000000,
               "period_s": 1, "slots": 65536}]}},
 {"filter": "metrics", "config": {"max_total_series": 1500, "metrics": [
    {"name": "kavach_requests_total", "type": "counter", "max_series": 1000,
     "labels": [{"source": "route"}, {"source": "method"}, {"source": "status_class"}, {"source": "path"}]},
    {"name": "kavach_request_duration_ms", "type": "histogram", "value": "duration_ms",
     "max_series": 200, "labels": [{"source": "route"}, {"source": "status_class"}]}]}}
]}"#;

/// The benchmark's chain, or only the filters named in `KAVACH_PROFILE_FILTERS` (comma-separated).
fn bench_chain() -> String {
    let rules: String = (0..20)
        .map(|i| {
            format!(
                r#"{{"name": "svc-{i}", "principals": ["spiffe://bank.local/ns/team{i}/sa/api"],
                    "methods": ["GET", "POST"], "paths": ["/v1/team{i}/**"]}},"#
            )
        })
        .collect();
    let all = BENCH_CHAIN.replace("RULES", &rules);
    let Ok(only) = std::env::var("KAVACH_PROFILE_FILTERS") else {
        return all;
    };
    let mut v: serde_json::Value = serde_json::from_str(&all).unwrap();
    let wanted: Vec<&str> = only.split(',').collect();
    v["chain"]
        .as_array_mut()
        .unwrap()
        .retain(|l| wanted.contains(&l["filter"].as_str().unwrap_or_default()));
    v.to_string()
}

/// The benchmark's request, as Envoy hands it to a filter.
const BENCH_REQUEST: [(&str, &str); 9] = [
    (":method", "GET"),
    (":path", "/v1/cards/4242"),
    (":authority", "127.0.0.1:10000"),
    (":scheme", "http"),
    ("x-tenant", "acme"),
    ("x-bench", "1"),
    ("user-agent", "kavach-bench"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "5d2c6a1e-8d0b-4f7a-9a51-0c2f7d9b1e42"),
];
const BENCH_RESPONSE: [(&str, &str); 3] = [
    (":status", "200"),
    ("content-length", "2"),
    ("content-type", "text/plain"),
];

fn bench_request(host: &CountingHost) {
    let pairs = |p: &[(&str, &str)]| -> Headers {
        p.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    *host.inner.request_headers.borrow_mut() = pairs(&BENCH_REQUEST);
    *host.inner.response_headers.borrow_mut() = pairs(&BENCH_RESPONSE);
    host.inner
        .properties
        .borrow_mut()
        .retain(|k, _| !k.starts_with("kavach."));
}

/// A host whose own work is next to nothing, so that instructions counted under callgrind are
/// the filters' (what Envoy does for each call is measured by scripts/probe-host.sh): the null
/// host (writes that go nowhere, shared data in memory) answering the benchmark's request, its
/// properties, a clock and metric ids.
struct PlainHost {
    null: NullHost,
    request: Headers,
    response: Headers,
    clock: Cell<u64>,
}

impl PlainHost {
    fn new() -> Self {
        let pairs = |p: &[(&str, &str)]| -> Headers {
            p.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        PlainHost {
            null: NullHost::default(),
            request: pairs(&BENCH_REQUEST),
            response: pairs(&BENCH_RESPONSE),
            clock: Cell::new(1_764_115_030_000_000_000),
        }
    }
}

impl HostLayer for PlainHost {
    fn inner(&self) -> &dyn Host {
        &self.null
    }
    fn now(&self) -> SystemTime {
        self.clock.set(self.clock.get() + 1000);
        UNIX_EPOCH + Duration::from_nanos(self.clock.get())
    }
    /// As the SDK hands headers to a VM: a fresh copy.
    fn headers(&self, map: HeaderMap) -> Headers {
        match map {
            HeaderMap::Request => self.request.clone(),
            HeaderMap::Response => self.response.clone(),
        }
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let v: &[u8] = match path {
            ["source", "address"] => b"127.0.0.1:51000",
            ["destination", "address"] => b"127.0.0.1:10000",
            ["xds", "route_name"] => b"bench",
            ["response", "code"] => return Some(200i64.to_le_bytes().to_vec()),
            ["response", "total_size"] => return Some(120i64.to_le_bytes().to_vec()),
            ["request", "total_size"] => return Some(180i64.to_le_bytes().to_vec()),
            ["request", "duration"] => return Some(250_000i64.to_le_bytes().to_vec()),
            _ => return None,
        };
        Some(v.to_vec())
    }
    /// Counters exist, so the filters' increments run.
    fn define_metric(&self, _kind: MetricKind, _name: &str) -> Option<u32> {
        Some(1)
    }
}

/// The benchmark's chain with the plain host, `KAVACH_PROFILE_REQUESTS` times: what
/// scripts/profile-chain.sh runs under callgrind for instructions per request.
#[test]
#[ignore = "a measurement: scripts/profile-chain.sh"]
fn profile_bench_chain_plain() {
    let requests: u64 = std::env::var("KAVACH_PROFILE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let host = PlainHost::new();
    let root = chain::configure(filters::ALL, bench_chain().as_bytes(), &host)
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..requests {
        let mut s = ContextStream::new(root.as_ref());
        s.on_request_headers(&host, true);
        s.on_response_headers(&host, false);
        s.on_log(&host);
    }
}

#[test]
#[ignore = "a measurement: scripts/profile-chain.sh"]
fn profile_bench_chain() {
    let requests: u64 = std::env::var("KAVACH_PROFILE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let host = CountingHost::new(MockHost::new());
    for (path, value) in [
        (&["source", "address"][..], &b"127.0.0.1:51000"[..]),
        (&["destination", "address"], b"127.0.0.1:10000"),
        (&["xds", "route_name"], b"bench"),
        (&["xds", "cluster_name"], b""),
        (&["response", "code"], &200i64.to_le_bytes()),
        (&["response", "total_size"], &120i64.to_le_bytes()),
        (&["request", "total_size"], &180i64.to_le_bytes()),
        (&["request", "duration"], &250_000i64.to_le_bytes()),
    ] {
        host.inner.set_property(path, value);
    }
    let root = chain::configure(filters::ALL, bench_chain().as_bytes(), &host)
        .unwrap_or_else(|e| panic!("{e}"));
    host.calls.borrow_mut().clear();
    for _ in 0..requests {
        bench_request(&host);
        // As the module's adapter drives it: through the request context.
        let mut s = ContextStream::new(root.as_ref());
        s.on_request_headers(&host, true);
        s.on_response_headers(&host, false);
        s.on_log(&host);
        assert!(host.inner.reply.borrow_mut().take().is_none());
    }
    if let Some(record) = host.inner.properties.borrow().get("kavach.audit.record") {
        println!(
            "last record ({} bytes): {}",
            record.len(),
            String::from_utf8_lossy(record)
        );
    }
    let calls = host.calls.borrow();
    let total: u64 = calls.values().sum();
    println!("host calls per request ({requests} requests):");
    for (what, n) in calls.iter() {
        println!("  {:6.2}  {what}", *n as f64 / requests as f64);
    }
    println!("  {:6.2}  in all", total as f64 / requests as f64);
}
