use std::time::Duration;

use super::*;
use crate::decision::collect;
use crate::decision::Published;
use crate::decision::AUDIT_ID_PROPERTY;
use crate::testing::{LocalReply, MockHost};

const PEER: &[u8] = b"203.0.113.7:40000";

fn root(config: &str, host: &MockHost) -> Box<dyn FilterRoot> {
    match RateLimitFactory::configure(config.as_bytes(), host) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn rule(extra: &str) -> String {
    format!(
        r#"{{"rules":[{{"name":"per-client","key":["client_address"],"limit":3,"period_s":60{extra}}}]}}"#
    )
}

/// One request from `peer` with `headers` (plus method and path): what the filter did.
fn send(
    r: &dyn FilterRoot,
    host: &MockHost,
    peer: &[u8],
    headers: &[(&str, &[u8])],
) -> (Flow, Option<LocalReply>) {
    let mut all: Vec<(&str, &[u8])> = vec![(":method", b"GET"), (":path", b"/v1/orders/1")];
    all.extend_from_slice(headers);
    *host.request_headers.borrow_mut() = all
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    host.properties
        .borrow_mut()
        .retain(|k, _| !k.starts_with("kavach.decision."));
    host.set_property(&["source", "address"], peer);
    host.reply.borrow_mut().take();
    let mut s = r.new_stream();
    let flow = s.on_request_headers(host, true);
    (flow, host.reply.borrow_mut().take())
}

fn passes(r: &dyn FilterRoot, host: &MockHost, peer: &[u8], headers: &[(&str, &[u8])]) -> bool {
    match send(r, host, peer, headers) {
        (Flow::Continue, None) => true,
        (Flow::Stop, Some(reply)) => {
            assert_eq!(reply.status, 429, "{reply:?}");
            false
        }
        other => panic!("inconsistent: {other:?}"),
    }
}

fn count(
    r: &dyn FilterRoot,
    host: &MockHost,
    peer: &[u8],
    headers: &[(&str, &[u8])],
    n: usize,
) -> usize {
    (0..n).filter(|_| passes(r, host, peer, headers)).count()
}

fn header<'a>(reply: &'a LocalReply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn decision(host: &MockHost) -> Decision {
    match collect(host).as_slice() {
        [Published::Decision(d)] => d.clone(),
        other => panic!("expected one decision, got {other:?}"),
    }
}

#[test]
fn a_client_gets_its_limit_then_429_with_the_fields() {
    let host = MockHost::new();
    let r = root(&rule(r#","burst":1"#), &host);
    assert_eq!(count(&*r, &host, PEER, &[], 4), 4);
    let (flow, reply) = send(&*r, &host, PEER, &[]);
    assert_eq!(flow, Flow::Stop);
    let reply = reply.unwrap();
    assert_eq!(reply.status, 429);
    // 3 per 60 s: the next token in 20 s.
    assert_eq!(header(&reply, "retry-after"), Some("20"));
    assert_eq!(
        header(&reply, "ratelimit-policy"),
        Some("\"per-client\";q=3;w=60")
    );
    assert_eq!(header(&reply, "ratelimit"), Some("\"per-client\";r=0;t=20"));
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    assert_eq!(
        header(&reply, "x-ratelimit-limit"),
        None,
        "legacy fields are opt-in"
    );
    assert_eq!(
        reply.body,
        br#"{"error":"rate_limited","rule":"per-client","retry_after":20}"#
    );
    let d = decision(&host);
    assert_eq!(d.outcome, DecisionOutcome::Deny);
    assert_eq!(d.rule.as_deref(), Some("per-client"));
    assert_eq!(d.reason.as_deref(), Some("limited"));
    assert_eq!(
        crate::decision::detail_pairs(&d),
        vec![
            ("limit".to_string(), "3".to_string()),
            ("period_s".into(), "60".into()),
            ("burst".into(), "1".into()),
            ("retry_after".into(), "20".into())
        ]
    );
    assert_eq!(
        host.metric("kavach_ratelimit_allowed_total.rule.per-client"),
        4
    );
    assert_eq!(
        host.metric("kavach_ratelimit_limited_total.rule.per-client"),
        1
    );
    // Time heals: 20 s later exactly one more.
    host.advance(Duration::from_secs(20));
    assert_eq!(count(&*r, &host, PEER, &[], 3), 1);
}

#[test]
fn legacy_fields_and_the_audit_id_when_configured() {
    let host = MockHost::new();
    let r = root(
        r#"{"response_headers":{"legacy":true},"rules":[{"name":"a","key":[],"limit":1,"period_s":10}]}"#,
        &host,
    );
    assert!(passes(&*r, &host, PEER, &[]));
    host.set_property(
        &[AUDIT_ID_PROPERTY],
        b"3f0b7a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
    );
    let (_, reply) = send(&*r, &host, PEER, &[]);
    let reply = reply.unwrap();
    assert_eq!(header(&reply, "x-ratelimit-limit"), Some("1"));
    assert_eq!(header(&reply, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&reply, "x-ratelimit-reset"), Some("10"));
    assert_eq!(
        reply.body,
        br#"{"error":"rate_limited","rule":"a","retry_after":10,"audit_id":"3f0b7a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"}"#
    );
}

#[test]
fn clients_have_separate_buckets_and_the_filter_never_reads_forwarded_for() {
    let host = MockHost::new();
    let r = root(&rule(""), &host);
    assert_eq!(count(&*r, &host, PEER, &[], 5), 3);
    // The client address is Envoy's source.address; x-forwarded-for is Envoy's business.
    for fake in ["198.51.100.1", "10.0.0.1, 198.51.100.2", "::1"] {
        assert!(!passes(
            &*r,
            &host,
            PEER,
            &[("x-forwarded-for", fake.as_bytes())]
        ));
    }
    // Another port of the same address is the same client; another address is not.
    assert!(!passes(&*r, &host, b"203.0.113.7:1", &[]));
    assert_eq!(count(&*r, &host, b"203.0.113.8:40000", &[], 5), 3);
    // No usable address (a pipe): the rule's shared bucket for unidentified requests.
    assert_eq!(count(&*r, &host, b"/run/envoy.sock", &[], 5), 3);
    assert_eq!(
        host.metric("kavach_ratelimit_key_missing_total.rule.per-client"),
        5
    );
}

#[test]
fn an_ipv6_64_is_one_client_and_mapped_ipv4_is_ipv4() {
    let host = MockHost::new();
    let r = root(&rule(""), &host);
    assert!(passes(&*r, &host, b"[2001:db8:1:2::1]:1000", &[]));
    assert!(passes(&*r, &host, b"[2001:db8:1:2:aaaa::2]:1000", &[]));
    assert!(passes(
        &*r,
        &host,
        b"[2001:db8:1:2:ffff:ffff:ffff:ffff]:1",
        &[]
    ));
    assert!(!passes(&*r, &host, b"[2001:db8:1:2::9]:1000", &[]));
    assert!(passes(&*r, &host, b"[2001:db8:1:3::1]:1000", &[]));

    assert_eq!(count(&*r, &host, b"[::ffff:198.51.100.4]:9", &[], 2), 2);
    assert!(passes(&*r, &host, b"198.51.100.4:9", &[]));
    assert!(!passes(&*r, &host, b"198.51.100.4:10", &[]));
}

#[test]
fn two_workers_share_every_bucket() {
    // Two roots over one host: two VMs over one shared-data store.
    let host = MockHost::new();
    let a = root(&rule(""), &host);
    let b = root(&rule(""), &host);
    let admitted = (0..10)
        .filter(|i| passes(if i % 2 == 0 { &*a } else { &*b }, &host, PEER, &[]))
        .count();
    assert_eq!(admitted, 3);
}

#[test]
fn tiers_follow_the_header_and_unknown_tiers_get_the_default() {
    let host = MockHost::new();
    let r = root(
        r#"{"rules":[{"name":"api","key":["client_address"],
            "tiers":{"by":{"header":"x-tier"},"default":"standard",
                     "limits":{"premium":{"limit":5,"period_s":60},"standard":{"limit":2,"period_s":60}}}}]}"#,
        &host,
    );
    assert_eq!(count(&*r, &host, PEER, &[("x-tier", b"premium")], 10), 5);
    assert_eq!(count(&*r, &host, PEER, &[("x-tier", b"standard")], 1), 1);
    // Unknown, absent, duplicated: the default tier, the same bucket as "standard".
    assert!(passes(&*r, &host, PEER, &[("x-tier", b"gold")]));
    assert!(!passes(&*r, &host, PEER, &[]));
    assert!(!passes(
        &*r,
        &host,
        PEER,
        &[("x-tier", b"premium"), ("x-tier", b"premium")]
    ));
    let d = decision(&host);
    assert!(
        d.detail.contains(&("tier".into(), "standard".into())),
        "{d:?}"
    );
    let (_, reply) = send(&*r, &host, PEER, &[("x-tier", b"standard")]);
    assert_eq!(
        header(&reply.unwrap(), "ratelimit-policy"),
        Some("\"api\";q=2;w=60")
    );
}

#[test]
fn tiers_can_follow_the_verified_principal() {
    let host = MockHost::new();
    let r = root(
        r#"{"rules":[{"name":"p","key":["principal"],
            "tiers":{"by":{"principal":{"spiffe://bank/ns/pay/sa/gold":"gold"}},"default":"basic",
                     "limits":{"gold":{"limit":4,"period_s":60},"basic":{"limit":1,"period_s":60}}}}]}"#,
        &host,
    );
    host.set_property(Fact::PeerPrincipal.path(), b"spiffe://bank/ns/pay/sa/gold");
    assert_eq!(count(&*r, &host, PEER, &[], 6), 4);
    host.set_property(Fact::PeerPrincipal.path(), b"spiffe://bank/ns/pay/sa/other");
    assert_eq!(count(&*r, &host, PEER, &[], 3), 1);
}

#[test]
fn shadow_mode_counts_and_records_but_never_refuses() {
    let host = MockHost::new();
    let r = root(
        r#"{"mode":"shadow","rules":[{"name":"s","key":["client_address"],"limit":2,"period_s":60}]}"#,
        &host,
    );
    assert_eq!(count(&*r, &host, PEER, &[], 5), 5);
    assert_eq!(host.metric("kavach_ratelimit_allowed_total.rule.s"), 2);
    assert_eq!(
        host.metric("kavach_ratelimit_shadow_limited_total.rule.s"),
        3
    );
    assert_eq!(host.metric("kavach_ratelimit_limited_total.rule.s"), 0);
    let d = decision(&host);
    assert_eq!(d.outcome, DecisionOutcome::ShadowDeny);
    assert_eq!(d.reason.as_deref(), Some("limited"));
}

#[test]
fn a_shadow_rule_beside_an_enforced_one() {
    let host = MockHost::new();
    let r = root(
        r#"{"rules":[
            {"name":"new","mode":"shadow","key":["client_address"],"limit":1,"period_s":60},
            {"name":"old","key":["client_address"],"limit":3,"period_s":60}]}"#,
        &host,
    );
    assert_eq!(count(&*r, &host, PEER, &[], 5), 3);
    assert_eq!(
        host.metric("kavach_ratelimit_shadow_limited_total.rule.new"),
        4
    );
    assert_eq!(host.metric("kavach_ratelimit_limited_total.rule.old"), 2);
}

#[test]
fn a_request_refused_by_one_rule_takes_nothing_from_the_others() {
    let host = MockHost::new();
    let r = root(
        r#"{"rules":[
            {"name":"per-client","key":["client_address"],"limit":5,"period_s":60},
            {"name":"per-key","key":[{"header":"x-api-key"}],"limit":2,"period_s":60}]}"#,
        &host,
    );
    assert_eq!(count(&*r, &host, PEER, &[("x-api-key", b"k1")], 4), 2);
    // per-key refused two: per-client gave those tokens back, so 3 remain for other keys.
    assert_eq!(count(&*r, &host, PEER, &[("x-api-key", b"k2")], 2), 2);
    assert_eq!(count(&*r, &host, PEER, &[("x-api-key", b"k3")], 2), 1);
    let d = decision(&host);
    assert_eq!(d.rule.as_deref(), Some("per-client"));
    assert_eq!(
        host.metric("kavach_ratelimit_allowed_total.rule.per-client"),
        5
    );
    assert_eq!(
        host.metric("kavach_ratelimit_limited_total.rule.per-key"),
        2
    );
}

#[test]
fn requests_without_a_usable_key_share_one_bucket() {
    let host = MockHost::new();
    let r = root(
        r#"{"rules":[{"name":"k","key":[{"header":"x-api-key"}],"limit":2,"period_s":60}]}"#,
        &host,
    );
    assert!(passes(
        &*r,
        &host,
        PEER,
        &[("x-api-key", b"a"), ("x-api-key", b"b")]
    ));
    assert!(passes(&*r, &host, PEER, &[]));
    // Absent, duplicated, empty, invalid UTF-8, control characters: all the same bucket.
    for bad in [
        vec![
            ("x-api-key", b"c".as_slice()),
            ("X-Api-Key", b"d".as_slice()),
        ],
        vec![],
        vec![("x-api-key", b"  ".as_slice())],
        vec![("x-api-key", b"\xff\xfe".as_slice())],
        vec![("x-api-key", b"a\x01b".as_slice())],
    ] {
        assert!(!passes(&*r, &host, PEER, &bad), "{bad:?}");
    }
    assert_eq!(host.metric("kavach_ratelimit_key_missing_total.rule.k"), 7);
    // Keys are trimmed; case is kept.
    assert_eq!(count(&*r, &host, PEER, &[("x-api-key", b" K1 ")], 3), 2);
    assert!(!passes(&*r, &host, PEER, &[("x-api-key", b"K1")]));
    assert!(passes(&*r, &host, PEER, &[("x-api-key", b"k1")]));
}

#[test]
fn a_rule_can_refuse_requests_it_cannot_identify() {
    let host = MockHost::new();
    let r = root(
        r#"{"rules":[{"name":"k","key":[{"header_lowercase":"x-user"}],"when_key_missing":"deny","limit":1,"period_s":60}]}"#,
        &host,
    );
    let (flow, reply) = send(&*r, &host, PEER, &[("x-user", b"a"), ("x-user", b"b")]);
    assert_eq!(flow, Flow::Stop);
    let reply = reply.unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        br#"{"error":"rate_limit_key_missing","rule":"k"}"#
    );
    let d = decision(&host);
    assert_eq!(d.reason.as_deref(), Some("key_missing"));
    assert!(d.detail.contains(&("key".into(), "duplicated".into())));
    assert!(passes(&*r, &host, PEER, &[("x-user", b"Alice")]));
    assert!(!passes(&*r, &host, PEER, &[("x-user", b"ALICE")]));
}

#[test]
fn rules_apply_only_where_they_match() {
    let host = MockHost::new().with_property(Fact::RouteName.path(), b"orders");
    let r = root(
        r#"{"rules":[{"name":"m","key":[],"limit":1,"period_s":60,
            "match":{"routes":["orders"],"paths":["/v1/orders/*"],"methods":["GET"]}}]}"#,
        &host,
    );
    assert!(passes(&*r, &host, PEER, &[]));
    assert!(!passes(&*r, &host, PEER, &[]));
    // Another path: no rule, no decision.
    *host.request_headers.borrow_mut() = vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), b"/v1/accounts/1".to_vec()),
    ];
    host.properties
        .borrow_mut()
        .retain(|k, _| !k.starts_with("kavach.decision."));
    assert_eq!(
        r.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    assert!(collect(&host).is_empty());
    // A spelling of the same path is still the same path.
    *host.request_headers.borrow_mut() = vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), b"/v1//orders/./%31?x=1".to_vec()),
    ];
    assert_eq!(r.new_stream().on_request_headers(&host, true), Flow::Stop);
    // Another route name: no match.
    host.set_property(Fact::RouteName.path(), b"payments");
    assert_eq!(
        r.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
}

#[test]
fn responses_that_pass_can_carry_the_fields() {
    let host = MockHost::new();
    let r = root(
        r#"{"response_headers":{"on_allowed":true,"legacy":true},"rules":[
            {"name":"minute","key":["client_address"],"limit":10,"period_s":60},
            {"name":"second","key":["client_address"],"limit":2,"period_s":1},
            {"name":"quiet","mode":"shadow","key":["client_address"],"limit":100,"period_s":60}]}"#,
        &host,
    );
    let (flow, _) = send(&*r, &host, PEER, &[]);
    assert_eq!(flow, Flow::Continue);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    host.response_headers
        .borrow_mut()
        .push(("ratelimit".into(), b"\"upstream\";r=1".to_vec()));
    s.on_response_headers(&host, true);
    let got = |n: &str| {
        host.response_headers
            .borrow()
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    };
    // Closest to refusing first; shadow rules are never shown.
    assert_eq!(
        got("ratelimit-policy"),
        ["\"second\";q=2;w=1, \"minute\";q=10;w=60"]
    );
    assert_eq!(
        got("ratelimit"),
        ["\"second\";r=0;t=1, \"minute\";r=8;t=12"]
    );
    assert_eq!(got("x-ratelimit-remaining"), ["0"]);
    assert_eq!(got("x-ratelimit-limit"), ["2"]);
}

#[test]
fn a_clock_going_backwards_gives_no_extra_requests() {
    let host = MockHost::new();
    let r = root(&rule(""), &host);
    assert_eq!(count(&*r, &host, PEER, &[], 3), 3);
    host.now.set(host.now.get() - 3_600_000_000_000);
    assert_eq!(count(&*r, &host, PEER, &[], 3), 0);
    host.now
        .set(host.now.get() + 3_600_000_000_000 + 20_000_000_000);
    assert_eq!(count(&*r, &host, PEER, &[], 3), 1);
}

#[test]
fn a_full_table_refuses_new_clients_and_says_why() {
    let host = MockHost::new();
    let r = root(
        r#"{"probes":1,"rules":[{"name":"t","key":[{"header":"x-k"}],"limit":1,"period_s":3600,"slots":64}]}"#,
        &host,
    );
    let mut refused = 0;
    for i in 0..200 {
        let k = format!("key-{i}");
        if !passes(&*r, &host, PEER, &[("x-k", k.as_bytes())]) {
            refused += 1;
            let d = decision(&host);
            assert_eq!(d.reason.as_deref(), Some("table_full"));
        }
    }
    assert!(refused >= 136, "at most 64 keys fit, {refused} refused");
    assert_eq!(
        host.metric("kavach_ratelimit_table_full_total.rule.t"),
        refused
    );
    // Memory: the table and the seed, nothing per key.
    assert_eq!(host.shared.entries.borrow().len(), 65);
}

#[test]
fn route_and_principal_keys() {
    let host = MockHost::new();
    let r = root(
        r#"{"rules":[{"name":"rp","key":["route","principal"],"limit":1,"period_s":60}]}"#,
        &host,
    );
    host.set_property(Fact::RouteName.path(), b"orders");
    host.set_property(Fact::PeerPrincipal.path(), b"spiffe://bank/a");
    assert!(passes(&*r, &host, PEER, &[]));
    assert!(!passes(&*r, &host, PEER, &[]));
    host.set_property(Fact::PeerPrincipal.path(), b"spiffe://bank/b");
    assert!(passes(&*r, &host, PEER, &[]));
    host.set_property(Fact::RouteName.path(), b"payments");
    assert!(passes(&*r, &host, PEER, &[]));
    // No verified principal: the shared bucket of unidentified requests.
    host.properties
        .borrow_mut()
        .remove(&Fact::PeerPrincipal.path().join("\u{0}"));
    assert!(passes(&*r, &host, PEER, &[]));
    assert!(!passes(&*r, &host, PEER, &[]));
}

#[test]
fn configuring_makes_the_table_and_refuses_bad_configs() {
    let host = MockHost::new();
    let _r = root(&rule(r#","slots":128"#), &host);
    assert_eq!(host.shared.entries.borrow().len(), 129);
    assert!(
        host.logs
            .borrow()
            .iter()
            .any(|(_, m)| m
                == "ratelimit: 1 rules (0 global), 128 slots (128 created by this worker)")
    );
    let _again = root(&rule(r#","slots":128"#), &host);
    assert!(host
        .logs
        .borrow()
        .iter()
        .any(|(_, m)| m.ends_with("(0 created by this worker)")));
    match RateLimitFactory::configure(br#"{"rules":[]}"#, &host) {
        Err(e) => assert_eq!(e.to_string(), "rules: at least one rule is required"),
        Ok(_) => panic!("accepted"),
    }
}

// ---- global rules (the rate-limit service) ----

use crate::ratelimit::rls::wire;

const SERVICE_JSON: &str =
    r#""rate_limit_service":{"cluster":"rls","domain":"kavach","timeout_ms":40"#;

fn global_config(rule_extra: &str, service_extra: &str) -> String {
    format!(
        r#"{{"response_headers":{{"on_allowed":true}},"rules":[{{"name":"g","global":true,"key":["client_address"],"limit":2,"period_s":60{rule_extra}}}],{SERVICE_JSON}{service_extra}}}}}"#
    )
}

/// Sends a request that waits for the service; returns the stream and the call's token.
fn start_global(r: &dyn FilterRoot, host: &MockHost) -> (Box<dyn HttpFilter>, u32) {
    *host.request_headers.borrow_mut() = vec![
        (":method".into(), b"GET".to_vec()),
        (":path".into(), b"/v1/orders/1".to_vec()),
    ];
    host.properties
        .borrow_mut()
        .retain(|k, _| !k.starts_with("kavach.decision."));
    host.set_property(&["source", "address"], PEER);
    host.reply.borrow_mut().take();
    let mut s = r.new_stream();
    assert_eq!(
        s.on_request_headers(host, true),
        Flow::Stop,
        "waits for the service"
    );
    assert!(host.reply.borrow().is_none());
    let token = 1000 + u32::try_from(host.grpc_calls.borrow().len()).unwrap();
    (s, token)
}

fn answer(s: &mut dyn HttpFilter, host: &MockHost, token: u32, bytes: Vec<u8>) -> Flow {
    let n = bytes.len();
    *host.grpc_answer.borrow_mut() = bytes;
    s.on_grpc_response(host, token, 0, n)
}

#[test]
fn a_global_rule_asks_the_service_with_descriptors_built_from_its_key() {
    let host = MockHost::new();
    let r = root(&global_config(r#","cost":2"#, ""), &host);
    let (mut s, token) = start_global(&*r, &host);
    let call = host.grpc_calls.borrow()[0].clone();
    assert_eq!(call.cluster, "rls");
    assert_eq!(call.service, "envoy.service.ratelimit.v3.RateLimitService");
    assert_eq!(call.method, "ShouldRateLimit");
    assert_eq!(call.timeout, Duration::from_millis(40));
    let (domain, descriptors, hits) = wire::request(&call.message);
    assert_eq!(domain, "kavach");
    assert_eq!(hits, 2);
    assert_eq!(descriptors.len(), 1);
    assert_eq!(descriptors[0].hits, 2);
    assert_eq!(
        descriptors[0].entries,
        vec![
            ("rule".to_string(), "g".to_string()),
            ("remote_address".into(), "203.0.113.7".into())
        ]
    );
    // Body and trailers wait with the headers.
    assert_eq!(s.on_request_body(&host, 10, false), Flow::Stop);
    assert_eq!(s.on_request_trailers(&host), Flow::Stop);
    // Someone else's answer changes nothing.
    assert_eq!(s.on_grpc_response(&host, token + 7, 0, 0), Flow::Stop);
    // OK, 10 per minute, 7 left, window resets in 42 s.
    let ok = wire::response(1, &[(1, Some((10, 2, "g-limit")), 7, 42)]);
    assert_eq!(answer(&mut *s, &host, token, ok), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    assert_eq!(s.on_request_body(&host, 10, true), Flow::Continue);
    let d = decision(&host);
    assert_eq!(d.outcome, DecisionOutcome::Allow);
    assert_eq!(
        crate::decision::detail_pairs(&d),
        vec![
            ("limit".to_string(), "10".to_string()),
            ("period_s".into(), "60".into()),
            ("scope".into(), "global".into()),
            ("remaining".into(), "7".into()),
            ("service".into(), "ok".into()),
        ]
    );
    // The service's numbers reach the client.
    s.on_response_headers(&host, false);
    let resp = host.response_headers.borrow().clone();
    let get = |n: &str| {
        resp.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(get("ratelimit-policy").as_deref(), Some("\"g\";q=10;w=60"));
    assert_eq!(get("ratelimit").as_deref(), Some("\"g\";r=7;t=42"));
    assert_eq!(host.metric("kavach_ratelimit_allowed_total.rule.g"), 1);
    // A second answer for the same call is ignored.
    assert_eq!(s.on_grpc_response(&host, token, 0, 0), Flow::Stop);
}

#[test]
fn over_limit_from_the_service_is_a_429_with_its_reset() {
    let host = MockHost::new();
    let r = root(&global_config("", ""), &host);
    let (mut s, token) = start_global(&*r, &host);
    let over = wire::response(2, &[(2, Some((5, 1, "g")), 0, 1)]);
    assert_eq!(answer(&mut *s, &host, token, over), Flow::Stop);
    let reply = host.reply.borrow_mut().take().unwrap();
    assert_eq!(reply.status, 429);
    assert_eq!(header(&reply, "retry-after"), Some("1"));
    assert_eq!(header(&reply, "ratelimit-policy"), Some("\"g\";q=5;w=1"));
    assert_eq!(header(&reply, "ratelimit"), Some("\"g\";r=0;t=1"));
    let d = decision(&host);
    assert_eq!(d.outcome, DecisionOutcome::Deny);
    assert_eq!(d.reason.as_deref(), Some("limited"));
    assert!(d.detail.contains(&("service".into(), "over_limit".into())));
    assert_eq!(host.metric("kavach_ratelimit_limited_total.rule.g"), 1);
    // Without per-descriptor statuses the overall code decides.
    let (mut s, token) = start_global(&*r, &host);
    assert_eq!(
        answer(&mut *s, &host, token, wire::response(2, &[])),
        Flow::Stop
    );
    assert_eq!(host.reply.borrow_mut().take().unwrap().status, 429);
}

#[test]
fn when_the_service_fails_the_failure_mode_decides() {
    let failures: [(&str, u32, Vec<u8>); 4] = [
        ("timeout", 4, Vec::new()),
        ("unavailable", 14, Vec::new()),
        ("bad_answer", 0, vec![0x0b, 0xff]),
        ("bad_answer", 0, wire::response(0, &[])),
    ];
    for (what, status, bytes) in failures {
        // deny: 503, never the upstream.
        let host = MockHost::new();
        let r = root(&global_config("", r#","failure_mode":"deny""#), &host);
        let (mut s, token) = start_global(&*r, &host);
        *host.grpc_answer.borrow_mut() = bytes.clone();
        assert_eq!(
            s.on_grpc_response(&host, token, status, bytes.len()),
            Flow::Stop
        );
        let reply = host.reply.borrow_mut().take().unwrap();
        assert_eq!(reply.status, 503, "{what}");
        assert_eq!(header(&reply, "retry-after"), Some("1"));
        assert_eq!(
            reply.body,
            br#"{"error":"rate_limit_service_unavailable","rule":"g","retry_after":1}"#
        );
        let d = decision(&host);
        assert_eq!(d.reason.as_deref(), Some("service_unavailable"));
        assert!(d.detail.contains(&("service".into(), what.into())), "{d:?}");
        assert_eq!(
            host.metric("kavach_ratelimit_service_errors_total.rule.g"),
            1
        );
        assert_eq!(
            host.shared.entries.borrow().len(),
            1,
            "deny keeps no local buckets (seed only)"
        );

        // allow: through, and the record says why nothing was checked.
        let host = MockHost::new();
        let r = root(&global_config("", r#","failure_mode":"allow""#), &host);
        let (mut s, token) = start_global(&*r, &host);
        *host.grpc_answer.borrow_mut() = bytes.clone();
        assert_eq!(
            s.on_grpc_response(&host, token, status, bytes.len()),
            Flow::Continue
        );
        assert!(host.reply.borrow().is_none());
        let d = decision(&host);
        assert_eq!(d.outcome, DecisionOutcome::Allow);
        assert_eq!(
            crate::decision::detail_pairs(&d),
            vec![("service".to_string(), what.to_string())]
        );

        // local (the default): this Envoy's bucket of the rule, 2 per minute.
        let host = MockHost::new();
        let r = root(&global_config("", ""), &host);
        let mut passed = 0;
        for _ in 0..4 {
            let (mut s, token) = start_global(&*r, &host);
            *host.grpc_answer.borrow_mut() = bytes.clone();
            if s.on_grpc_response(&host, token, status, bytes.len()) == Flow::Continue {
                passed += 1;
            } else {
                assert_eq!(host.reply.borrow_mut().take().unwrap().status, 429);
            }
        }
        assert_eq!(passed, 2, "{what}");
        assert_eq!(
            host.metric("kavach_ratelimit_service_errors_total.rule.g"),
            4
        );
    }
}

#[test]
fn a_missing_cluster_fails_at_once_without_holding_the_request() {
    let host = MockHost::new();
    host.grpc_refused.set(true);
    let r = root(&global_config("", r#","failure_mode":"deny""#), &host);
    let (flow, reply) = send(&*r, &host, PEER, &[]);
    assert_eq!(flow, Flow::Stop);
    assert_eq!(reply.unwrap().status, 503);
    assert!(decision(&host)
        .detail
        .contains(&("service".into(), "not_started".into())));
    let warnings: Vec<String> = host
        .logs
        .borrow()
        .iter()
        .filter(|(l, _)| *l == LogLevel::Warn)
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("not_started"), "{warnings:?}");
    send(&*r, &host, PEER, &[]);
    let warned = host
        .logs
        .borrow()
        .iter()
        .filter(|(l, _)| *l == LogLevel::Warn)
        .count();
    assert_eq!(warned, 1, "warned once, then counted");
}

#[test]
fn local_rules_refuse_before_the_service_is_asked() {
    let host = MockHost::new();
    let config = format!(
        r#"{{"rules":[{{"name":"l","key":["client_address"],"limit":1,"period_s":60}},{{"name":"g","global":true,"key":["client_address"],"limit":9,"period_s":60}}],{SERVICE_JSON}}}}}"#
    );
    let r = root(&config, &host);
    let (mut s, token) = start_global(&*r, &host);
    assert_eq!(
        answer(&mut *s, &host, token, wire::response(1, &[(1, None, 3, 9)])),
        Flow::Continue
    );
    let (flow, reply) = send(&*r, &host, PEER, &[]);
    assert_eq!((flow, reply.unwrap().status), (Flow::Stop, 429));
    assert_eq!(
        host.grpc_calls.borrow().len(),
        1,
        "the second request never reached the service"
    );
    // A global refusal gives the local rule its token back.
    let host = MockHost::new();
    let r = root(&config.replace(r#""limit":1,"#, r#""limit":2,"#), &host);
    for _ in 0..3 {
        let (mut s, token) = start_global(&*r, &host);
        assert_eq!(
            answer(&mut *s, &host, token, wire::response(2, &[(2, None, 0, 9)])),
            Flow::Stop
        );
    }
    let (mut s, token) = start_global(&*r, &host);
    assert_eq!(
        answer(&mut *s, &host, token, wire::response(1, &[(1, None, 3, 9)])),
        Flow::Continue
    );
}

#[test]
fn shadow_global_rules_record_but_never_refuse() {
    let host = MockHost::new();
    let r = root(&global_config(r#","mode":"shadow""#, ""), &host);
    let (mut s, token) = start_global(&*r, &host);
    assert_eq!(
        answer(&mut *s, &host, token, wire::response(2, &[(2, None, 0, 3)])),
        Flow::Continue
    );
    assert!(host.reply.borrow().is_none());
    let d = decision(&host);
    assert_eq!(d.outcome, DecisionOutcome::ShadowDeny);
    assert_eq!(
        host.metric("kavach_ratelimit_shadow_limited_total.rule.g"),
        1
    );
}

#[test]
fn tiers_and_unidentified_requests_in_descriptors() {
    let host = MockHost::new();
    let config = format!(
        r#"{{"rules":[{{"name":"partners","global":true,"key":[{{"header":"x-partner-id"}}],"tiers":{{"by":{{"header":"x-tier"}},"default":"std","limits":{{"std":{{"limit":5,"period_s":1}},"gold":{{"limit":50,"period_s":1}}}}}}}}],{SERVICE_JSON}}}}}"#
    );
    let r = root(&config, &host);
    let descriptor = |headers: &[(&str, &[u8])]| {
        let (flow, _) = send(&*r, &host, PEER, headers);
        assert_eq!(flow, Flow::Stop);
        let message = host.grpc_calls.borrow().last().unwrap().message.clone();
        wire::request(&message).1[0].entries.clone()
    };
    let e = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        descriptor(&[("x-partner-id", b" Acme "), ("x-tier", b"gold")]),
        e(&[
            ("rule", "partners"),
            ("tier", "gold"),
            ("x-partner-id", "Acme")
        ])
    );
    assert_eq!(
        descriptor(&[]),
        e(&[("rule", "partners"), ("tier", "std"), ("key", "missing")])
    );
}
