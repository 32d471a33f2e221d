use super::*;
use crate::decision::{self, AUDIT_ID_PROPERTY};
use crate::testing::MockHost;

/// A detail of a decision by its published name.
fn detail<'a>(d: &'a Decision, key: &str) -> Option<&'a str> {
    d.detail
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// public < pii (re-routed into India) < payment (denied outside India).
const POLICY: &str = r#"{
  "policy_version": "2026-11-01",
  "classes": [
    {"name":"public","allowed_regions":["*"]},
    {"name":"pii","allowed_regions":["in-west","in-south"],"action":"reroute",
     "reroute":{"header":"x-kavach-residency","value":"in"}},
    {"name":"payment","allowed_regions":["in-west","in-south"],"action":"deny"}
  ],
  "cluster_regions": {"legacy_pay": "in-south"},
  "routes": {
    "pay": {"min_class":"payment"},
    "kyc": {"detect_body": true},
    "profile": {"min_class":"pii", "detect_body": true}
  },
  "body_detection": {
    "max_body_bytes": 64,
    "detectors": {"card":"payment","upi_vpa":"payment","aadhaar":"pii","pan":"pii"}
  }
}"#;

const REGION: &[&str] = &[
    "xds",
    "cluster_metadata",
    "filter_metadata",
    "kavach",
    "region",
];

fn policy_with(field: &str) -> String {
    let trimmed = POLICY.trim_end().trim_end_matches('}');
    format!("{trimmed}, {field} }}")
}

fn root(config: &str, host: &MockHost) -> Box<dyn FilterRoot> {
    match ResidencyFactory::configure(config.as_bytes(), host) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// A request on `route` to `cluster` (tagged `region` when given).
fn request(
    route: &str,
    cluster: &str,
    region: Option<&str>,
    headers: &[(&str, &[u8])],
) -> MockHost {
    let mut all: Vec<(&str, &[u8])> = vec![
        (":method", b"POST"),
        (":path", b"/v1/x"),
        (":authority", b"bank.local"),
    ];
    all.extend_from_slice(headers);
    let mut host = MockHost::new()
        .with_request(&all)
        .with_property(&["xds", "route_name"], route.as_bytes())
        .with_property(&["xds", "cluster_name"], cluster.as_bytes());
    if let Some(r) = region {
        host = host.with_property(REGION, r.as_bytes());
    }
    host
}

fn decision_of(host: &MockHost) -> Decision {
    let raw = host
        .property(&["kavach.decision.residency"])
        .expect("a decision was published");
    serde_json::from_slice(&raw).unwrap()
}

fn detail_of(host: &MockHost, key: &str) -> Option<String> {
    detail(&decision_of(host), key).map(str::to_string)
}

fn reply_of(host: &MockHost) -> (u32, serde_json::Value) {
    let r = host.reply.borrow().clone().expect("a local reply");
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

/// Simulates the response of the upstream at `addr` whose host is tagged `region`.
fn respond_from(host: &MockHost, addr: &str, region: Option<&str>) {
    host.set_property(&["upstream", "address"], addr.as_bytes());
    if let Some(r) = region {
        host.set_property(
            &[
                "xds",
                "upstream_host_metadata",
                "filter_metadata",
                "kavach",
                "region",
            ],
            r.as_bytes(),
        );
    }
}

fn metric(host: &MockHost, class: &str, decision: &str) -> i64 {
    host.metric(&format!(
        "kavach_residency.{class}.{decision}.requests_total"
    ))
}

#[test]
fn a_class_in_an_allowed_region_passes_with_its_residence() {
    let host = request(
        "any",
        "pay_mumbai",
        Some("in-west"),
        &[("x-data-class", b"payment")],
    );
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    assert_eq!(
        host.request_values("x-data-residence"),
        vec![b"in-west,in-south".to_vec()]
    );
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.reason.as_deref(), Some("region_allowed"));
    assert_eq!(d.policy_version.as_deref(), Some("2026-11-01"));
    assert_eq!(
        crate::decision::detail_pairs(&d),
        vec![
            ("class".to_string(), "payment".to_string()),
            ("source".into(), "header".into()),
            ("cluster".into(), "pay_mumbai".into()),
            ("region".into(), "in-west".into()),
            ("action".into(), "none".into()),
        ]
    );
    assert_eq!(metric(&host, "payment", "allow"), 1);
}

#[test]
fn a_class_outside_its_regions_is_denied_with_451_and_nothing_else() {
    let host = request("pay", "pay_singapore", Some("sg"), &[]);
    host.set_property(
        &[AUDIT_ID_PROPERTY],
        b"26ad8626-0000-4000-8000-000000000001",
    );
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Stop);
    let (status, body) = reply_of(&host);
    assert_eq!(status, 451);
    assert_eq!(
        body,
        serde_json::json!({"error":"unavailable_for_legal_reasons","class":"payment",
            "policy_version":"2026-11-01","audit_id":"26ad8626-0000-4000-8000-000000000001"})
    );
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reason.as_deref(), Some("region_not_allowed"));
    assert_eq!(detail_of(&host, "source").as_deref(), Some("route"));
    assert_eq!(detail_of(&host, "region").as_deref(), Some("sg"));
    assert_eq!(metric(&host, "payment", "deny"), 1);
    // Our own reply passes back through the filter untouched.
    assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
}

#[test]
fn a_reroute_class_gets_the_reroute_header_and_the_recheck_is_required() {
    let host = request("any", "profile_sg", Some("sg"), &[("x-data-class", b"pii")]);
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert_eq!(
        host.request_values("x-kavach-residency"),
        vec![b"in".to_vec()]
    );
    assert_eq!(decision_of(&host).outcome, Outcome::Reroute);
    assert_eq!(metric(&host, "pii", "reroute"), 1);
    // The upstream answered but no recheck stage confirmed the new cluster: the answer is
    // replaced, whatever the host says.
    respond_from(&host, "10.0.0.9:443", Some("in-south"));
    assert_eq!(s.on_response_headers(&host, false), Flow::Stop);
    let (status, body) = reply_of(&host);
    assert_eq!(status, 502);
    assert_eq!(
        body,
        serde_json::json!({"error":"residency_violation","class":"pii","policy_version":"2026-11-01"})
    );
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("reroute_not_rechecked")
    );
    assert_eq!(metric(&host, "pii", "upstream_mismatch"), 1);
}

#[test]
fn a_rechecked_reroute_answered_from_an_allowed_host_passes() {
    let host = request("any", "profile_sg", Some("sg"), &[("x-data-class", b"pii")]);
    let decide = root(POLICY, &host);
    let recheck = root(&policy_with(r#""stage":"recheck""#), &host);
    let mut s = decide.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    // Envoy resolved the route again: the request now goes to the Hyderabad cluster.
    host.set_property(&["xds", "cluster_name"], b"profile_hyd");
    host.set_property(REGION, b"in-south");
    assert_eq!(
        recheck.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    assert_eq!(
        detail_of(&host, "recheck_region").as_deref(),
        Some("in-south")
    );
    assert_eq!(metric(&host, "pii", "recheck_allow"), 1);
    respond_from(&host, "10.0.0.9:443", Some("in-south"));
    assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Reroute);
    assert_eq!(detail(&d, "upstream_region"), Some("in-south"));
    assert!(host.reply.borrow().is_none());
}

#[test]
fn the_recheck_denies_when_the_reroute_did_not_reach_an_allowed_cluster() {
    let host = request("any", "profile_sg", Some("sg"), &[("x-data-class", b"pii")]);
    let decide = root(POLICY, &host);
    let recheck = root(&policy_with(r#""stage":"recheck""#), &host);
    assert_eq!(
        decide.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    host.set_property(&["xds", "cluster_name"], b"profile_us");
    host.set_property(REGION, b"us-east");
    assert_eq!(
        recheck.new_stream().on_request_headers(&host, true),
        Flow::Stop
    );
    let (status, body) = reply_of(&host);
    assert_eq!(status, 451);
    assert_eq!(body["class"], "pii");
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reason.as_deref(), Some("reroute_target_not_allowed"));
    assert_eq!(detail(&d, "recheck_region"), Some("us-east"));
    assert_eq!(metric(&host, "pii", "recheck_deny"), 1);
}

#[test]
fn the_recheck_fails_closed_without_the_decide_stage() {
    let host = request("any", "c", Some("in-west"), &[]);
    let recheck = root(&policy_with(r#""stage":"recheck""#), &host);
    assert_eq!(
        recheck.new_stream().on_request_headers(&host, true),
        Flow::Stop
    );
    let (status, body) = reply_of(&host);
    assert_eq!(status, 500);
    assert_eq!(
        body,
        serde_json::json!({"error":"residency_not_evaluated","policy_version":"2026-11-01"})
    );
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("decide_stage_missing")
    );
    assert_eq!(metric(&host, "unclassified", "recheck_missing"), 1);

    // A decision from another policy version is not trusted either.
    let host = request("any", "c", Some("in-west"), &[]);
    let mut other = Decision::new(NAME, Outcome::Allow);
    other.policy_version = Some("2025-01-01".into());
    other.detail.push(("class".into(), "payment".into()));
    decision::publish(&host, &other);
    let recheck = root(&policy_with(r#""stage":"recheck""#), &host);
    assert_eq!(
        recheck.new_stream().on_request_headers(&host, true),
        Flow::Stop
    );
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("policy_version_mismatch")
    );
}

#[test]
fn untagged_clusters_fail_closed_unless_allowed() {
    let host = request("pay", "mystery", None, &[]);
    let r = root(POLICY, &host);
    assert_eq!(r.new_stream().on_request_headers(&host, true), Flow::Stop);
    assert_eq!(reply_of(&host).0, 451);
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("untagged_cluster")
    );
    assert_eq!(detail_of(&host, "region").as_deref(), Some("untagged"));

    let host = request("pay", "mystery", None, &[]);
    let r = root(&policy_with(r#""untagged_cluster":"allow""#), &host);
    assert_eq!(
        r.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("untagged_cluster_allowed")
    );
}

#[test]
fn the_static_cluster_map_wins_over_metadata() {
    // Metadata says sg, the policy's own map says in-south.
    let host = request("pay", "legacy_pay", Some("sg"), &[]);
    let r = root(POLICY, &host);
    assert_eq!(
        r.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    assert_eq!(detail_of(&host, "region").as_deref(), Some("in-south"));
}

#[test]
fn region_metadata_is_normalised_and_any_bytes_are_safe() {
    let host = request("pay", "c", Some("  IN-West "), &[]);
    let r = root(POLICY, &host);
    assert_eq!(
        r.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    let host = request("pay", "c\u{0}\n\u{7f}", Some("in-\u{fffd}\u{0}"), &[]);
    host.set_property(REGION, b"in-west\xff");
    assert_eq!(r.new_stream().on_request_headers(&host, true), Flow::Stop);
    assert_eq!(
        detail_of(&host, "cluster").as_deref(),
        Some("c\\x00\\x0a\\x7f")
    );
}

#[test]
fn no_cluster_means_nothing_leaves_and_is_allowed() {
    let host = MockHost::new().with_request(&[(":path", b"/"), ("x-data-class", b"payment")]);
    let r = root(POLICY, &host);
    assert_eq!(
        r.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("no_upstream_cluster")
    );
}

#[test]
fn public_requests_pass_untouched_and_a_forged_residence_is_removed() {
    let host = request(
        "any",
        "cdn_us",
        Some("us-east"),
        &[("x-data-residence", b"anywhere")],
    );
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    // A body is coming, but detection is off for this route: never held back.
    assert_eq!(s.on_request_headers(&host, false), Flow::Continue);
    assert_eq!(s.on_request_body(&host, 10, false), Flow::Continue);
    assert!(host.request_values("x-data-residence").is_empty());
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.reason.as_deref(), Some("unrestricted_class"));
    assert_eq!(detail(&d, "source"), Some("default"));
    assert_eq!(metric(&host, "public", "allow"), 1);
}

#[test]
fn a_client_sending_the_reroute_header_is_refused() {
    // Envoy routed on the client's header; nothing about this route can be trusted.
    let host = request(
        "reroute_in",
        "pay_hyd",
        Some("in-south"),
        &[("X-Kavach-Residency", b"in")],
    );
    let r = root(POLICY, &host);
    assert_eq!(r.new_stream().on_request_headers(&host, true), Flow::Stop);
    let (status, body) = reply_of(&host);
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error":"invalid_routing_header","policy_version":"2026-11-01"})
    );
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("reroute_header_from_client")
    );
    assert_eq!(metric(&host, "unclassified", "rejected"), 1);
}

#[test]
fn a_declared_class_below_the_route_floor_changes_nothing() {
    let host = request("pay", "pay_sg", Some("sg"), &[("x-data-class", b"public")]);
    let r = root(POLICY, &host);
    assert_eq!(r.new_stream().on_request_headers(&host, true), Flow::Stop);
    assert_eq!(reply_of(&host).0, 451);
    assert_eq!(detail_of(&host, "class").as_deref(), Some("payment"));
    assert_eq!(detail_of(&host, "source").as_deref(), Some("route"));
}

#[test]
fn a_declared_class_above_the_route_floor_raises_it() {
    let host = request("profile", "p", Some("sg"), &[("x-data-class", b"payment")]);
    let r = root(POLICY, &host);
    // Already the highest class: the body cannot raise it, so it is not held for.
    assert_eq!(r.new_stream().on_request_headers(&host, false), Flow::Stop);
    assert_eq!(reply_of(&host).0, 451);
    assert_eq!(detail_of(&host, "source").as_deref(), Some("header"));
}

#[test]
fn invalid_class_headers_are_refused_with_400() {
    let huge = vec![b'p'; 100_000];
    for (headers, reason) in [
        (
            vec![
                ("x-data-class", &b"payment"[..]),
                ("x-data-class", b"public"),
            ],
            "class_header_duplicated",
        ),
        (vec![("x-data-class", &b"   "[..])], "class_header_empty"),
        (
            vec![("x-data-class", &b"secret"[..])],
            "class_header_unknown",
        ),
        (
            vec![("x-data-class", &b"\xff\xfe"[..])],
            "class_header_unknown",
        ),
        (
            vec![("x-data-class", huge.as_slice())],
            "class_header_unknown",
        ),
    ] {
        let host = request("any", "c", Some("in-west"), &headers);
        let r = root(POLICY, &host);
        assert_eq!(r.new_stream().on_request_headers(&host, true), Flow::Stop);
        let (status, body) = reply_of(&host);
        assert_eq!(status, 400);
        assert_eq!(
            body,
            serde_json::json!({"error":"invalid_data_class","policy_version":"2026-11-01"})
        );
        let d = decision_of(&host);
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.reason.as_deref(), Some(reason));
        assert_eq!(metric(&host, "unclassified", "rejected"), 1);
    }
}

#[test]
fn body_detection_holds_the_headers_and_finds_a_card_split_across_chunks() {
    let host = request("kyc", "kyc_sg", Some("sg"), &[]);
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert!(
        host.property(&["kavach.decision.residency"]).is_none(),
        "no decision before the body"
    );
    *host.body.borrow_mut() = br#"{"card":"4111 1111"#.to_vec();
    let n = host.body.borrow().len();
    assert_eq!(s.on_request_body(&host, n, false), Flow::Stop);
    host.body.borrow_mut().extend_from_slice(br#" 1111 1111"}"#);
    let n = host.body.borrow().len();
    assert_eq!(s.on_request_body(&host, n, true), Flow::Stop);
    assert_eq!(reply_of(&host).0, 451);
    let d = decision_of(&host);
    assert_eq!(detail(&d, "class"), Some("payment"));
    assert_eq!(detail(&d, "source"), Some("body"));
    assert_eq!(detail(&d, "detectors"), Some("card"));
}

#[test]
fn body_detection_raises_to_the_most_sensitive_finding() {
    let host = request("kyc", "kyc_mumbai", Some("in-west"), &[]);
    *host.body.borrow_mut() = br#"{"pan":"ABCPE1234F","vpa":"shop@okaxis"}"#.to_vec();
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 40, true), Flow::Continue);
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(detail(&d, "class"), Some("payment"));
    assert_eq!(detail(&d, "detectors"), Some("pan,upi_vpa"));
}

#[test]
fn an_ordinary_body_keeps_the_lower_class() {
    let host = request("kyc", "kyc_us", Some("us-east"), &[]);
    *host.body.borrow_mut() =
        br#"{"email":"a@b.com","phone":"+91 98765 43210","pin":"560001"}"#.to_vec();
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 60, true), Flow::Continue);
    let d = decision_of(&host);
    assert_eq!(detail(&d, "class"), Some("public"));
    assert!(detail(&d, "detectors").is_none());
}

#[test]
fn trailers_end_the_body_and_the_decision_is_taken_there() {
    let host = request("kyc", "kyc_sg", Some("sg"), &[]);
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    *host.body.borrow_mut() = br#"{"uid":"9999 4105 7058"}"#.to_vec();
    assert_eq!(s.on_request_body(&host, 25, false), Flow::Stop);
    // pii is re-routed, not denied.
    assert_eq!(s.on_request_trailers(&host), Flow::Continue);
    assert_eq!(decision_of(&host).outcome, Outcome::Reroute);
    assert_eq!(detail_of(&host, "detectors").as_deref(), Some("aadhaar"));
}

#[test]
fn a_body_over_the_limit_is_treated_as_the_highest_class() {
    // Declared by Content-Length: decided at once, nothing buffered.
    let host = request("kyc", "kyc_sg", Some("sg"), &[("content-length", b"65")]);
    let r = root(POLICY, &host);
    assert_eq!(r.new_stream().on_request_headers(&host, false), Flow::Stop);
    assert_eq!(reply_of(&host).0, 451);
    assert_eq!(detail_of(&host, "body").as_deref(), Some("oversize"));
    assert_eq!(detail_of(&host, "class").as_deref(), Some("payment"));

    // Streamed: decided as soon as the buffer passes the limit.
    let host = request("kyc", "kyc_mumbai", Some("in-west"), &[]);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 65, false), Flow::Continue);
    assert_eq!(detail_of(&host, "class").as_deref(), Some("payment"));
    assert_eq!(detail_of(&host, "body").as_deref(), Some("oversize"));
    // Later chunks are not held.
    assert_eq!(s.on_request_body(&host, 200, true), Flow::Continue);
}

#[test]
fn a_body_over_the_limit_can_be_rejected_with_413() {
    let config = POLICY.replace(
        r#""max_body_bytes": 64,"#,
        r#""max_body_bytes": 64, "oversize": "reject_413","#,
    );
    let host = request("kyc", "kyc_mumbai", Some("in-west"), &[]);
    let r = root(&config, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 100, false), Flow::Stop);
    let (status, body) = reply_of(&host);
    assert_eq!(status, 413);
    assert_eq!(
        body,
        serde_json::json!({"error":"payload_too_large","policy_version":"2026-11-01"})
    );
    assert_eq!(decision_of(&host).reason.as_deref(), Some("body_too_large"));
    assert_eq!(metric(&host, "public", "rejected"), 1);
}

#[test]
fn dry_run_records_and_marks_but_never_blocks_or_reroutes() {
    let config = policy_with(r#""mode":"dry_run""#);
    let host = request("pay", "pay_sg", Some("sg"), &[]);
    let r = root(&config, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::ShadowDeny);
    assert_eq!(d.reason.as_deref(), Some("region_not_allowed"));
    assert_eq!(metric(&host, "payment", "dry_run"), 1);
    respond_from(&host, "10.0.0.7:443", Some("sg"));
    assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    assert_eq!(
        host.response_headers.borrow().clone(),
        vec![(
            "x-kavach-residency-dry-run".to_string(),
            b"deny; class=payment".to_vec()
        )]
    );

    let host = request("any", "p_sg", Some("sg"), &[("x-data-class", b"pii")]);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert!(host.request_values("x-kavach-residency").is_empty());
    s.on_response_headers(&host, false);
    assert_eq!(
        host.response_headers.borrow()[0].1,
        b"reroute; class=pii".to_vec()
    );

    // An invalid class header is recorded, not refused.
    let host = request("any", "c", Some("sg"), &[("x-data-class", b"nope")]);
    let r = root(&config, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("class_header_unknown")
    );
    assert_eq!(metric(&host, "unclassified", "dry_run"), 1);
}

#[test]
fn an_answer_from_a_host_outside_the_allowed_regions_is_replaced() {
    // The cluster is tagged in-west, but locality failover picked a host in Singapore.
    let host = request("pay", "pay_mumbai", Some("in-west"), &[]);
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    respond_from(&host, "10.9.0.1:443", Some("sg"));
    host.response_headers
        .borrow_mut()
        .push(("x-served-by".into(), b"sg".to_vec()));
    assert_eq!(s.on_response_headers(&host, false), Flow::Stop);
    let (status, body) = reply_of(&host);
    assert_eq!(status, 502);
    assert_eq!(body["error"], "residency_violation");
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reason.as_deref(), Some("upstream_region_mismatch"));
    assert_eq!(detail(&d, "upstream_region"), Some("sg"));
    assert_eq!(metric(&host, "payment", "upstream_mismatch"), 1);
}

#[test]
fn the_upstream_locality_is_used_when_the_host_has_no_metadata() {
    let host = request("pay", "pay_mumbai", Some("in-west"), &[]);
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    respond_from(&host, "10.9.0.1:443", None);
    host.set_property(&["upstream", "locality", "region"], b"us-east");
    assert_eq!(s.on_response_headers(&host, false), Flow::Stop);
    assert_eq!(
        detail_of(&host, "upstream_region").as_deref(),
        Some("us-east")
    );
}

#[test]
fn an_untagged_upstream_host_is_allowed_unless_configured_otherwise() {
    let host = request("pay", "pay_mumbai", Some("in-west"), &[]);
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    respond_from(&host, "10.9.0.1:443", None);
    assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
    assert_eq!(
        detail_of(&host, "upstream_region").as_deref(),
        Some("untagged")
    );

    let config = policy_with(r#""upstream_check": {"untagged_host": "violation"}"#);
    let host = request("pay", "pay_mumbai", Some("in-west"), &[]);
    let r = root(&config, &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    respond_from(&host, "10.9.0.1:443", None);
    assert_eq!(s.on_response_headers(&host, false), Flow::Stop);
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("untagged_upstream_host")
    );
}

#[test]
fn a_local_reply_from_another_filter_is_not_checked_as_an_upstream_answer() {
    let host = request("pay", "pay_mumbai", Some("in-west"), &[]);
    let r = root(POLICY, &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    // No upstream address: nothing was served by a host.
    assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    assert!(detail_of(&host, "upstream_region").is_none());
}

#[test]
fn counters_cover_every_class_and_decision_from_the_start() {
    let host = MockHost::new();
    let _decide = root(POLICY, &host);
    let _recheck = root(&policy_with(r#""stage":"recheck""#), &host);
    let names: Vec<String> = host
        .metrics
        .borrow()
        .iter()
        .map(|(n, _, _)| n.clone())
        .collect();
    // 4 rows (3 classes + unclassified) × (6 decide + 4 recheck decisions).
    assert_eq!(names.len(), 40);
    assert!(names.contains(&"kavach_residency.payment.deny.requests_total".to_string()));
    assert!(names.contains(&"kavach_residency.unclassified.rejected.requests_total".to_string()));
    assert!(names.contains(&"kavach_residency.pii.recheck_deny.requests_total".to_string()));
}

/// The request headers (a body follows) of a request on the `kyc` route (body detection on) to
/// `cluster` in `region`: what the filter answers must be `expected`.
fn headers_to(cluster: &str, region: &str, headers: &[(&str, &[u8])], expected: Flow) -> MockHost {
    let host = request("kyc", cluster, Some(region), headers);
    let r = root(POLICY, &host);
    assert_eq!(
        r.new_stream().on_request_headers(&host, false),
        expected,
        "{headers:?}"
    );
    host
}

#[test]
fn a_body_in_a_content_coding_is_the_most_sensitive_class_without_waiting_for_it() {
    // Every coding, any case, any spelling of the header name, alone or listed with others,
    // in one header or two: the detectors cannot read it.
    let cases: &[&[(&str, &[u8])]] = &[
        &[("content-encoding", b"gzip")],
        &[("content-encoding", b"deflate")],
        &[("content-encoding", b"br")],
        &[("content-encoding", b"zstd")],
        &[("content-encoding", b"compress")],
        &[("content-encoding", b"x-gzip")],
        &[("content-encoding", b"GZIP")],
        &[("content-encoding", b" gzip ")],
        &[("content-encoding", b"identity, gzip")],
        &[("content-encoding", b"gzip, identity")],
        &[
            ("content-encoding", b"identity"),
            ("content-encoding", b"br"),
        ],
        &[
            ("content-encoding", b"br"),
            ("content-encoding", b"identity"),
        ],
        &[("Content-Encoding", b"gzip")],
        &[("content_encoding", b"gzip")],
        &[("content.encoding", b"deflate")],
        &[("content-encoding", b"\xff\xfe")],
    ];
    for headers in cases {
        let host = headers_to("kyc_sg", "sg", headers, Flow::Stop);
        assert_eq!(reply_of(&host).0, 451, "{headers:?}");
        let d = decision_of(&host);
        assert_eq!(detail(&d, "class"), Some("payment"), "{headers:?}");
        assert_eq!(detail(&d, "source"), Some("body"), "{headers:?}");
        assert_eq!(detail(&d, "body"), Some("encoded"), "{headers:?}");
    }
    // identity (or nothing) is readable: the body is held and inspected.
    for headers in [
        &[("content-encoding", &b"identity"[..])][..],
        &[("content-encoding", b"IDENTITY"), ("content-encoding", b"")],
        &[],
    ] {
        let host = request("kyc", "kyc_sg", Some("sg"), headers);
        let r = root(POLICY, &host);
        let mut s = r.new_stream();
        assert_eq!(
            s.on_request_headers(&host, false),
            Flow::Stop,
            "{headers:?}"
        );
        assert!(
            host.reply.borrow().is_none(),
            "held for the body: {headers:?}"
        );
    }
}

#[test]
fn upgrades_connect_and_grpc_are_decided_on_the_headers_never_held() {
    let cases: &[&[(&str, &[u8])]] = &[
        &[("upgrade", b"websocket"), ("connection", b"Upgrade")],
        &[("Upgrade", b"h2c")],
        &[(":method", b"CONNECT")],
        &[(":protocol", b"websocket")],
        &[("content-type", b"application/grpc")],
        &[("content-type", b"application/grpc+proto")],
        &[("content-type", b"Application/GRPC-web")],
    ];
    for headers in cases {
        // Allowed region: the request goes on at once, classified as the highest class.
        let host = headers_to("kyc_mumbai", "in-west", headers, Flow::Continue);
        let d = decision_of(&host);
        assert_eq!(detail(&d, "class"), Some("payment"), "{headers:?}");
        assert_eq!(detail(&d, "body"), Some("stream"), "{headers:?}");
        // Out of region: refused at once.
        let host = headers_to("kyc_sg", "sg", headers, Flow::Stop);
        assert_eq!(reply_of(&host).0, 451, "{headers:?}");
    }
}

#[test]
fn dry_run_records_what_enforcing_would_have_done_through_recheck_and_answer() {
    // Each case: where the request is bound, and the reason enforcing would refuse it with.
    // An untagged cluster; a region outside the class's (the decide stage refuses both, so the
    // recheck and the answer change neither the reason nor the counts).
    let dry = policy_with(r#""mode":"dry_run""#);
    let recheck_cfg = format!(
        "{}, \"stage\":\"recheck\" }}",
        dry.trim_end().trim_end_matches('}')
    );
    for (cluster, region, reason) in [
        ("pay_untagged", None, "untagged_cluster"),
        ("pay_sg", Some("sg"), "region_not_allowed"),
    ] {
        let host = request("pay", cluster, region, &[]);
        let decide = root(&dry, &host);
        let recheck = root(&recheck_cfg, &host);
        let mut s = decide.new_stream();
        assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
        assert_eq!(
            recheck.new_stream().on_request_headers(&host, true),
            Flow::Continue
        );
        respond_from(&host, "10.0.0.7:443", Some("sg"));
        assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
        assert!(host.reply.borrow().is_none(), "dry run never blocks");
        let d = decision_of(&host);
        assert_eq!(d.outcome, Outcome::ShadowDeny, "{cluster}");
        assert_eq!(d.reason.as_deref(), Some(reason), "{cluster}");
        assert_eq!(detail(&d, "action"), Some("deny"), "{cluster}");
        assert_eq!(metric(&host, "payment", "dry_run"), 1, "{cluster}");
        for not_counted in ["recheck_dry_run", "upstream_mismatch", "recheck_allow"] {
            assert_eq!(
                metric(&host, "payment", not_counted),
                0,
                "{cluster}: {not_counted}"
            );
        }
    }
    // Allowed at the decide stage and changed before the recheck: the recheck's own finding.
    let host = request("pay", "pay_mumbai", Some("in-west"), &[]);
    let decide = root(&dry, &host);
    let recheck = root(&recheck_cfg, &host);
    assert_eq!(
        decide.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    host.set_property(&["xds", "cluster_name"], b"pay_sg");
    host.set_property(REGION, b"sg");
    assert_eq!(
        recheck.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::ShadowDeny);
    assert_eq!(d.reason.as_deref(), Some("destination_changed"));
    assert_eq!(metric(&host, "payment", "recheck_dry_run"), 1);
}
