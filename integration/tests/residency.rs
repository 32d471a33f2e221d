//! The residency filter inside the real Envoy: a mesh of clusters in four regions (in-west,
//! in-south, sg, us-east) and one untagged, each a real upstream that says who it is.
//!
//! The chain is audit → residency (decide) → CORS (makes Envoy resolve the route again) →
//! residency (recheck) → router, as in `envoy-config/residency.yaml`. "Nothing reached an
//! upstream" is asserted on connections accepted, not on complete requests: not even the request
//! headers may leave.

// A test crate: helpers outside #[test] functions may fail the test like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::thread::sleep;
use std::time::Duration;

use kavach_integration::envoy::{config_error_line, route_resolving_filter, Module};
use kavach_integration::{EchoServer, Envoy, EnvoySpec, FilterSpec, Request, Response};
use serde_json::{json, Value};

/// public < pii (re-routed into India) < payment (refused outside India).
const POLICY: &str = r#"{
  "policy_version": "2026-11-01",
  "classes": [
    {"name": "public", "allowed_regions": ["*"]},
    {"name": "pii", "allowed_regions": ["in-west", "in-south"], "action": "reroute",
     "reroute": {"header": "x-kavach-residency", "value": "in"}},
    {"name": "payment", "allowed_regions": ["in-west", "in-south"], "action": "deny"}
  ],
  "routes": {
    "pay": {"min_class": "payment"},
    "profile": {"min_class": "pii"},
    "failover": {"min_class": "payment"},
    "kyc": {"detect_body": true},
    "kyc_west": {"detect_body": true}
  },
  "body_detection": {
    "max_body_bytes": 4096,
    "detectors": {"card": "payment", "upi_vpa": "payment", "aadhaar": "pii", "pan": "pii"}
  }
}"#;

/// Long enough for Envoy to read what was sent as its own body frame.
const PAUSE: Duration = Duration::from_millis(300);

/// The same policy with one more top-level field.
fn policy_with(policy: &str, field: &str) -> String {
    let body = policy.trim_start().strip_prefix('{').unwrap();
    format!("{{{field},{body}")
}

fn route(name: &str, prefix: &str, cluster: &str) -> Value {
    json!({ "name": name, "match": { "prefix": prefix }, "route": { "cluster": cluster } })
}

/// A route taken when the residency filter set its re-route header; the header is removed
/// before the request is forwarded.
fn reroute(name: &str, value: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "match": { "prefix": "/", "headers": [
            { "name": "x-kavach-residency", "string_match": { "exact": value } }
        ] },
        "route": { "cluster": cluster },
        "request_headers_to_remove": ["x-kavach-residency"]
    })
}

struct Mesh {
    west: EchoServer,
    south: EchoServer,
    sg: EchoServer,
    us: EchoServer,
    untagged: EchoServer,
    envoy: Envoy,
}

/// How the residency filter sits in the chain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chain {
    /// decide → route-resolving filter → recheck.
    Full,
    /// decide → recheck, nothing in between that resolves the route again.
    NoRouteResolution,
    /// Envoy's gzip decompressor before the decide stage, then as `Full`.
    Decompressed,
}

impl Mesh {
    fn start(policy: &str) -> Mesh {
        Self::start_with(policy, Chain::Full, |s| s)
    }

    fn start_with(policy: &str, chain: Chain, extra: impl FnOnce(EnvoySpec) -> EnvoySpec) -> Mesh {
        let west = EchoServer::start("in-west").unwrap();
        let south = EchoServer::start("in-south").unwrap();
        let sg = EchoServer::start("sg").unwrap();
        let us = EchoServer::start("us-east").unwrap();
        let untagged = EchoServer::start("untagged").unwrap();
        let mut spec = EnvoySpec::new(untagged.addr())
            .cluster("pay_mumbai", west.addr(), Some("in-west"))
            .cluster("pay_hyderabad", south.addr(), Some("in-south"))
            .cluster("pay_singapore", sg.addr(), Some("sg"))
            .cluster("pay_virginia", us.addr(), Some("us-east"))
            // Tagged in-west, but its host is the Singapore one (a locality failover).
            .cluster_with_host_region("pay_failover", sg.addr(), Some("in-west"), "sg")
            .route(reroute("reroute_in", "in", "pay_hyderabad"))
            .route(reroute("reroute_us", "us", "pay_virginia"))
            .route(route("kyc_west", "/west/kyc", "pay_mumbai"))
            .route(route("west", "/west", "pay_mumbai"))
            .route(route("pay", "/pay", "pay_singapore"))
            .route(route("profile", "/profile", "pay_singapore"))
            .route(route("kyc", "/kyc", "pay_singapore"))
            .route(route("public", "/public", "pay_virginia"))
            .route(route("failover", "/failover", "pay_failover"))
            .filter(FilterSpec::new(Module::Audit, "{}"));
        if chain == Chain::Decompressed {
            spec = spec.native_filter(gzip_decompressor());
        }
        spec = spec.filter(FilterSpec::new(Module::Residency, policy).hold_headers_for_body());
        if chain != Chain::NoRouteResolution {
            spec = spec.native_filter(route_resolving_filter());
        }
        let spec = spec
            .filter(
                FilterSpec::new(
                    Module::Residency,
                    policy_with(policy, r#""stage":"recheck""#),
                )
                .instance("recheck"),
            )
            .audit_access_log()
            .state_log(&["kavach.decision.residency"]);
        let envoy = Envoy::start(&extra(spec));
        Mesh {
            west,
            south,
            sg,
            us,
            untagged,
            envoy,
        }
    }

    /// Upstreams that accepted a connection, by name.
    fn reached(&self) -> Vec<&'static str> {
        [
            ("in-west", &self.west),
            ("in-south", &self.south),
            ("sg", &self.sg),
            ("us-east", &self.us),
            ("untagged", &self.untagged),
        ]
        .into_iter()
        .filter(|(_, e)| e.connections() > 0)
        .map(|(n, _)| n)
        .collect()
    }

    fn send(&self, req: Request) -> Response {
        req.send(self.envoy.addr()).unwrap()
    }

    /// The residency decision of the `n`-th request (from 0), as Envoy's access log has it.
    fn decision(&self, n: usize) -> Value {
        let lines = self.envoy.wait_state_lines(n + 1);
        let line = lines
            .get(n)
            .unwrap_or_else(|| panic!("no line {n}: {lines:?}"));
        serde_json::from_str(&line[0]).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn counter(&self, class: &str, decision: &str) -> u64 {
        self.envoy.counter(&format!(
            "wasmcustom.kavach_residency.{class}.{decision}.requests_total"
        ))
    }
}

/// A decision's detail pairs as a map.
fn detail(d: &Value) -> serde_json::Map<String, Value> {
    d["detail"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| Some((p[0].as_str()?.to_string(), p[1].clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// Envoy's decompressor filter for gzip request bodies (responses left alone).
fn gzip_decompressor() -> Value {
    json!({
        "name": "envoy.filters.http.decompressor",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor",
            "decompressor_library": { "name": "gzip", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip"
            } },
            "response_direction_config": { "common_config": { "enabled": {
                "default_value": false, "runtime_key": "kavach.test.decompress_responses"
            } } }
        }
    })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn served_by(resp: &Response) -> String {
    resp.echoed()
        .unwrap_or_else(|| panic!("not from an upstream: {} {}", resp.status, resp.text()))
        .server
}

#[test]
fn it_lets_payment_data_reach_a_cluster_in_an_allowed_region() {
    let mesh = Mesh::start(POLICY);
    let resp = mesh
        .send(Request::post("/west/charge", r#"{"amount":100}"#).header("x-data-class", "payment"));
    assert_eq!(resp.status, 200);
    assert_eq!(served_by(&resp), "in-west");
    let seen = resp.echoed().unwrap();
    assert_eq!(
        seen.header_values("x-data-residence"),
        vec!["in-west,in-south"]
    );
    assert_eq!(mesh.reached(), vec!["in-west"]);
    let d = mesh.decision(0);
    assert_eq!(d["outcome"], "allow");
    assert_eq!(d["reason"], "region_allowed");
    let detail = detail(&d);
    assert_eq!(detail["class"], "payment");
    assert_eq!(detail["source"], "header");
    assert_eq!(detail["cluster"], "pay_mumbai");
    assert_eq!(detail["region"], "in-west");
    assert_eq!(detail["recheck_region"], "in-west");
    assert_eq!(mesh.counter("payment", "allow"), 1);
    assert_eq!(mesh.counter("payment", "recheck_allow"), 1);
}

#[test]
fn it_denies_payment_data_bound_for_singapore_with_451_and_nothing_leaves() {
    let mesh = Mesh::start(POLICY);
    let resp = mesh.send(Request::post("/pay/charge", r#"{"amount":100}"#));
    assert_eq!(resp.status, 451);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert!(resp.header("x-served-by").is_none());
    let body = resp.json();
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["audit_id", "class", "error", "policy_version"]);
    assert_eq!(body["error"], "unavailable_for_legal_reasons");
    assert_eq!(body["class"], "payment");
    assert_eq!(body["policy_version"], "2026-11-01");
    assert!(mesh.reached().is_empty(), "{:?}", mesh.reached());
    let d = mesh.decision(0);
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["reason"], "region_not_allowed");
    assert_eq!(detail(&d)["source"], "route");
    assert_eq!(detail(&d)["region"], "sg");
    assert_eq!(mesh.counter("payment", "deny"), 1);
    // The audit record has the same decision, under the id the client was given.
    let record: Value = serde_json::from_str(&mesh.envoy.wait_audit_lines(1)[0]).unwrap();
    assert_eq!(record["audit_id"], body["audit_id"]);
    assert_eq!(record["status"], 451);
    assert_eq!(record["decisions"][0]["filter"], "residency");
    assert_eq!(record["decisions"][0]["outcome"], "deny");
}

#[test]
fn it_reroutes_pii_to_an_in_region_cluster_and_rechecks_it() {
    let mesh = Mesh::start(POLICY);
    let resp = mesh.send(Request::get("/profile/42"));
    assert_eq!(resp.status, 200);
    assert_eq!(served_by(&resp), "in-south");
    let seen = resp.echoed().unwrap();
    assert!(seen.header_values("x-kavach-residency").is_empty());
    assert_eq!(
        seen.header_values("x-data-residence"),
        vec!["in-west,in-south"]
    );
    assert_eq!(mesh.reached(), vec!["in-south"]);
    let d = mesh.decision(0);
    assert_eq!(d["outcome"], "reroute");
    assert_eq!(d["reason"], "region_not_allowed");
    let detail = detail(&d);
    assert_eq!(detail["class"], "pii");
    assert_eq!(detail["cluster"], "pay_singapore");
    assert_eq!(detail["recheck_cluster"], "pay_hyderabad");
    assert_eq!(detail["recheck_region"], "in-south");
    assert_eq!(mesh.counter("pii", "reroute"), 1);
    assert_eq!(mesh.counter("pii", "recheck_allow"), 1);
}

/// What Envoy 1.40 does after a wasm filter changes a request header: it clears the route cache
/// but resolves the route again only when a filter asks for it. Without the CORS filter between
/// the stages, the recheck stage still sees the old cluster (Singapore) although the router then
/// sends the request to Hyderabad; the recheck refuses what it sees, so the request fails closed.
#[test]
fn it_sees_the_old_route_until_a_filter_resolves_it_again() {
    let mesh = Mesh::start_with(POLICY, Chain::NoRouteResolution, |s| s);
    let resp = mesh.send(Request::get("/profile/42"));
    assert_eq!(resp.status, 451);
    assert!(mesh.reached().is_empty());
    let d = mesh.decision(0);
    assert_eq!(d["reason"], "reroute_target_not_allowed");
    assert_eq!(detail(&d)["recheck_cluster"], "pay_singapore");
}

#[test]
fn it_denies_when_the_reroute_lands_outside_the_allowed_regions() {
    let policy = POLICY.replace(r#""value": "in""#, r#""value": "us""#);
    let mesh = Mesh::start(&policy);
    let resp = mesh.send(Request::get("/profile/42"));
    assert_eq!(resp.status, 451);
    assert_eq!(resp.json()["class"], "pii");
    assert!(mesh.reached().is_empty(), "{:?}", mesh.reached());
    let d = mesh.decision(0);
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["reason"], "reroute_target_not_allowed");
    assert_eq!(detail(&d)["recheck_cluster"], "pay_virginia");
    assert_eq!(detail(&d)["recheck_region"], "us-east");
    assert_eq!(mesh.counter("pii", "recheck_deny"), 1);
}

#[test]
fn it_treats_an_untagged_cluster_as_a_violation() {
    let mesh = Mesh::start(POLICY);
    let resp = mesh.send(Request::get("/statement").header("x-data-class", "payment"));
    assert_eq!(resp.status, 451);
    assert!(mesh.reached().is_empty());
    let d = mesh.decision(0);
    assert_eq!(d["reason"], "untagged_cluster");
    assert_eq!(detail(&d)["cluster"], "upstream");
    assert_eq!(detail(&d)["region"], "untagged");
    // Public data may go to an untagged cluster.
    let resp = mesh.send(Request::get("/statement"));
    assert_eq!(served_by(&resp), "untagged");
}

#[test]
fn it_holds_the_headers_and_finds_a_card_number_split_across_body_chunks() {
    let mesh = Mesh::start(POLICY);
    let mut req = Request::new("POST", "/kyc/submit")
        .header("content-type", "application/json")
        .start_chunked(mesh.envoy.addr())
        .unwrap();
    req.chunk(br#"{"name":"Asha","card":"4111 1111"#).unwrap();
    sleep(PAUSE);
    // Headers and the first chunk are with Envoy: nothing has gone upstream.
    assert!(mesh.reached().is_empty(), "{:?}", mesh.reached());
    req.chunk(br#" 1111 1111","amount":100}"#).unwrap();
    let resp = req.finish(&[]).unwrap();
    assert_eq!(resp.status, 451);
    assert_eq!(resp.json()["class"], "payment");
    assert!(mesh.reached().is_empty(), "{:?}", mesh.reached());
    let d = mesh.decision(0);
    let detail = detail(&d);
    assert_eq!(detail["source"], "body");
    assert_eq!(detail["detectors"], "card");
}

#[test]
fn it_forwards_an_inspected_body_intact_to_an_allowed_region() {
    let mesh = Mesh::start(POLICY);
    let chunks: [&[u8]; 3] = [
        br#"{"vpa":"asha@ok"#,
        br#"axis","uid":"9999 4105 7058","#,
        br#""email":"a@b.com"}"#,
    ];
    let resp = Request::new("POST", "/west/kyc")
        .send_chunked(mesh.envoy.addr(), &chunks, PAUSE)
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(served_by(&resp), "in-west");
    let sent: usize = chunks.iter().map(|c| c.len()).sum();
    assert_eq!(resp.echoed().unwrap().body_len, sent);
    let d = mesh.decision(0);
    assert_eq!(d["outcome"], "allow");
    let detail = detail(&d);
    assert_eq!(detail["class"], "payment");
    assert_eq!(detail["detectors"], "aadhaar,upi_vpa");
}

#[test]
fn it_decides_when_trailers_end_the_body() {
    let mesh = Mesh::start_with(POLICY, Chain::Full, EnvoySpec::http1_trailers);
    let mut req = Request::new("POST", "/kyc/submit")
        .start_chunked(mesh.envoy.addr())
        .unwrap();
    req.chunk(br#"{"card":"4111111111111111"}"#).unwrap();
    sleep(PAUSE);
    let resp = req.finish(&[("x-checksum", "abc")]).unwrap();
    assert_eq!(resp.status, 451);
    assert!(mesh.reached().is_empty(), "{:?}", mesh.reached());
    assert_eq!(detail(&mesh.decision(0))["detectors"], "card");
}

#[test]
fn it_streams_public_traffic_without_buffering() {
    let mesh = Mesh::start(POLICY);
    let mut req = Request::new("POST", "/public/upload")
        .start_chunked(mesh.envoy.addr())
        .unwrap();
    req.chunk(br#"{"card":"4111 1111 1111 1111","part":1"#)
        .unwrap();
    sleep(PAUSE);
    // No detection on this route: the request is already on its way while the body streams.
    assert_eq!(mesh.reached(), vec!["us-east"]);
    req.chunk(br#","part":2}"#).unwrap();
    let resp = req.finish(&[]).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(served_by(&resp), "us-east");
    let d = mesh.decision(0);
    assert_eq!(d["reason"], "unrestricted_class");
    assert!(detail(&d).get("detectors").is_none());
}

#[test]
fn it_does_not_let_a_declared_class_lower_the_route_floor() {
    let mesh = Mesh::start(POLICY);
    let resp = mesh.send(Request::post("/pay/charge", "{}").header("x-data-class", "public"));
    assert_eq!(resp.status, 451);
    assert_eq!(resp.json()["class"], "payment");
    assert!(mesh.reached().is_empty());
    assert_eq!(detail(&mesh.decision(0))["source"], "route");
}

#[test]
fn it_refuses_duplicated_empty_and_unknown_class_headers() {
    let mesh = Mesh::start(POLICY);
    let cases: [(Request, &str); 4] = [
        (
            Request::get("/west/a")
                .header("x-data-class", "public")
                .header("x-data-class", "payment"),
            "class_header_duplicated",
        ),
        (
            Request::get("/west/a").header("x-data-class", ""),
            "class_header_empty",
        ),
        (
            Request::get("/west/a").header("x-data-class", "secret"),
            "class_header_unknown",
        ),
        (
            Request::get("/west/a").header("x-data-class", b"pay\xffment"),
            "class_header_unknown",
        ),
    ];
    for (i, (req, reason)) in cases.into_iter().enumerate() {
        let resp = mesh.send(req);
        assert_eq!(resp.status, 400, "{reason}");
        assert_eq!(
            resp.json(),
            json!({"error":"invalid_data_class","policy_version":"2026-11-01",
                   "audit_id": resp.json()["audit_id"]})
        );
        assert_eq!(mesh.decision(i)["reason"], reason);
    }
    assert!(mesh.reached().is_empty());
    assert_eq!(mesh.counter("unclassified", "rejected"), 4);
    // Case and surrounding space do not matter.
    let resp = mesh.send(Request::get("/west/a").header("x-data-class", "  PayMent "));
    assert_eq!(served_by(&resp), "in-west");
    assert_eq!(detail(&mesh.decision(4))["class"], "payment");
}

#[test]
fn it_refuses_a_client_that_sends_the_reroute_header() {
    let mesh = Mesh::start(POLICY);
    let resp = mesh.send(Request::post("/pay/charge", "{}").header("x-kavach-residency", "in"));
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["error"], "invalid_routing_header");
    assert!(mesh.reached().is_empty());
    assert_eq!(mesh.decision(0)["reason"], "reroute_header_from_client");
}

#[test]
fn it_records_but_never_blocks_in_dry_run() {
    let mesh = Mesh::start(&policy_with(POLICY, r#""mode":"dry_run""#));
    let resp = mesh.send(Request::post("/pay/charge", "{}"));
    assert_eq!(resp.status, 200);
    assert_eq!(served_by(&resp), "sg");
    assert_eq!(
        resp.header("x-kavach-residency-dry-run"),
        Some("deny; class=payment")
    );
    // What enforcing would have done, and why: refused at the decide stage. The recheck and
    // the answer from Singapore neither rewrite the reason nor count it again.
    let d = mesh.decision(0);
    assert_eq!(d["outcome"], "shadow_deny", "{d}");
    assert_eq!(d["reason"], "region_not_allowed", "{d}");
    assert_eq!(detail(&d)["action"], "deny", "{d}");
    assert_eq!(mesh.counter("payment", "dry_run"), 1);
    assert_eq!(mesh.counter("payment", "recheck_dry_run"), 0);
    assert_eq!(mesh.counter("payment", "upstream_mismatch"), 0);

    let resp = mesh.send(Request::get("/profile/42"));
    assert_eq!(served_by(&resp), "sg", "dry run never re-routes");
    assert_eq!(
        resp.header("x-kavach-residency-dry-run"),
        Some("reroute; class=pii")
    );
    let resp = mesh.send(Request::get("/west/a").header("x-data-class", "secret"));
    assert_eq!(served_by(&resp), "in-west");
    assert_eq!(mesh.decision(2)["reason"], "class_header_unknown");
    // Payment data bound for the untagged cluster: enforcing would refuse it as untagged.
    let resp = mesh.send(Request::get("/elsewhere").header("x-data-class", "payment"));
    assert_eq!(served_by(&resp), "untagged");
    let d = mesh.decision(3);
    assert_eq!(d["reason"], "untagged_cluster", "{d}");
    assert_eq!(mesh.counter("payment", "dry_run"), 2);
    assert_eq!(mesh.counter("payment", "recheck_dry_run"), 0);
}

#[test]
fn it_replaces_an_answer_from_a_host_outside_the_allowed_regions() {
    let mesh = Mesh::start(POLICY);
    let resp = mesh.send(Request::get("/failover/balance"));
    assert_eq!(resp.status, 502);
    assert!(resp.header("x-served-by").is_none());
    let body = resp.json();
    assert_eq!(body["error"], "residency_violation");
    assert_eq!(body["class"], "payment");
    let d = mesh.decision(0);
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["reason"], "upstream_region_mismatch");
    let detail = detail(&d);
    assert_eq!(detail["region"], "in-west", "the cluster's tag passed");
    assert_eq!(
        detail["upstream_region"], "sg",
        "the host that answered did not"
    );
    assert_eq!(mesh.counter("payment", "upstream_mismatch"), 1);
    // Defence in depth: the request did reach that host; the answer never reached the client.
    assert_eq!(mesh.sg.received().len(), 1);
}

#[test]
fn it_publishes_counters_tagged_by_class_and_decision() {
    let mesh = Mesh::start_with(POLICY, Chain::Full, |s| {
        s.stats_tag(
            "kavach_class",
            r"^wasmcustom\.kavach_residency\.((.+?)\.)[a-z_]+\.requests_total$",
        )
        .stats_tag(
            "kavach_decision",
            r"^wasmcustom\.kavach_residency\.[^.]+\.(([a-z_]+)\.)requests_total$",
        )
    });
    mesh.send(Request::post("/pay/charge", "{}"));
    mesh.send(Request::get("/profile/1"));
    let text = mesh.envoy.prometheus_text();
    for line in [
        r#"kavach_residency_requests_total{kavach_class="payment",kavach_decision="deny"} 1"#,
        r#"kavach_residency_requests_total{kavach_class="pii",kavach_decision="reroute"} 1"#,
        r#"kavach_residency_requests_total{kavach_class="pii",kavach_decision="recheck_allow"} 1"#,
        r#"kavach_residency_requests_total{kavach_class="public",kavach_decision="allow"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
}

#[test]
fn it_refuses_to_start_with_an_invalid_policy() {
    let upstream = EchoServer::start("core").unwrap();
    let policy = POLICY.replace(
        r#""allowed_regions": ["in-west", "in-south"], "action": "deny""#,
        r#""allowed_regions": ["in-west", "sg"], "action": "deny""#,
    );
    let failure = Envoy::try_start(
        &EnvoySpec::new(upstream.addr()).filter(FilterSpec::new(Module::Residency, policy)),
    )
    .err()
    .expect("Envoy must refuse the policy");
    let expected = config_error_line(
        Module::Residency,
        0,
        "classes[2].allowed_regions: \"sg\" is not allowed for classes[1] (\"pii\"): a more sensitive class may not allow more regions",
    );
    assert!(
        failure.log.contains(&expected),
        "expected {expected:?} in:\n{}",
        failure.log
    );
}

#[test]
fn it_treats_a_body_in_a_content_coding_as_the_most_sensitive_class() {
    let mesh = Mesh::start(POLICY);
    let card = gzip(br#"{"card":"4111111111111111"}"#);
    let plain = gzip(br#"{"note":"nothing regulated"}"#);
    // Whatever coding, spelling or order: the detectors cannot read it, so it is payment data
    // (the most sensitive class) and may not leave India.
    let codings: &[&[&str]] = &[
        &["gzip"],
        &["deflate"],
        &["br"],
        &["zstd"],
        &["GZIP"],
        &["x-gzip"],
        &["identity, gzip"],
        &["identity", "gzip"],
        &["gzip", "identity"],
    ];
    let mut n = 0;
    for coding in codings {
        for body in [&card, &plain] {
            let mut req = Request::post("/kyc/submit", body);
            for c in *coding {
                req = req.header("content-encoding", c);
            }
            let resp = mesh.send(req);
            assert_eq!(resp.status, 451, "{coding:?}: {}", resp.text());
            let d = mesh.decision(n);
            n += 1;
            let detail = detail(&d);
            assert_eq!(detail["class"], "payment", "{coding:?} {d}");
            assert_eq!(detail["body"], "encoded", "{coding:?} {d}");
        }
    }
    assert!(mesh.reached().is_empty(), "{:?}", mesh.reached());
    // Identity is no coding: the body is read (nothing regulated: public, forwarded).
    let resp = mesh.send(
        Request::post("/kyc/submit", br#"{"note":"nothing regulated"}"#)
            .header("content-encoding", "identity"),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(detail(&mesh.decision(n))["class"], "public");
}

#[test]
fn it_reads_what_envoys_decompressor_in_front_of_it_decoded() {
    let mesh = Mesh::start_with(POLICY, Chain::Decompressed, |s| s);
    let card = gzip(br#"{"card":"4111111111111111"}"#);
    let resp = mesh.send(Request::post("/kyc/submit", &card).header("content-encoding", "gzip"));
    assert_eq!(resp.status, 451, "{}", resp.text());
    let detail0 = detail(&mesh.decision(0));
    assert_eq!(detail0["detectors"], "card", "found in the decoded body");
    assert!(!detail0.contains_key("body"), "{detail0:?}");
    // Nothing regulated in it: public, and the upstream gets the decoded body.
    let text = br#"{"note":"nothing regulated"}"#;
    let resp =
        mesh.send(Request::post("/kyc/submit", gzip(text)).header("content-encoding", "gzip"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.echoed().unwrap().body_len, text.len());
    assert_eq!(detail(&mesh.decision(1))["class"], "public");
    // A coding the decompressor does not decode is still unreadable here.
    let resp = mesh.send(Request::post("/kyc/submit", &card).header("content-encoding", "br"));
    assert_eq!(resp.status, 451);
    assert_eq!(detail(&mesh.decision(2))["body"], "encoded");
}

#[test]
fn it_decides_a_websocket_upgrade_at_once_instead_of_waiting_for_a_body() {
    let mesh = Mesh::start_with(POLICY, Chain::Full, EnvoySpec::websocket);
    let upgrade = |path: &str| {
        Request::get(path)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    };
    let started = std::time::Instant::now();
    // Bound for Singapore on a route with body detection: refused at once, as payment data.
    let resp = mesh.send(upgrade("/kyc/stream"));
    assert_eq!(resp.status, 451, "{}", resp.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let d = mesh.decision(0);
    assert_eq!(detail(&d)["body"], "stream", "{d}");
    assert!(mesh.reached().is_empty(), "{:?}", mesh.reached());
    // Bound for Mumbai: let through at once (the upgrade itself goes to the upstream).
    let started = std::time::Instant::now();
    let resp = mesh.send(upgrade("/west/kyc/stream"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(resp.status, 451, "{}", resp.text());
    assert_eq!(mesh.reached(), vec!["in-west"]);
    let d = mesh.decision(1);
    assert_eq!(d["outcome"], "allow", "{d}");
    assert_eq!(detail(&d)["body"], "stream", "{d}");
}
