use super::*;
use crate::audit::record::unseal;
use crate::audit::verify::verify;
use crate::decision::{publish, Decision, Outcome, AUDIT_ID_PROPERTY};
use crate::testing::MockHost;

fn root(config: &str, host: &MockHost) -> Box<dyn FilterRoot> {
    match AuditFactory::configure(config.as_bytes(), host) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn request(pairs: &[(&str, &[u8])]) -> MockHost {
    let mut all: Vec<(&str, &[u8])> = vec![
        (":method", b"GET"),
        (":path", b"/accounts/42?card=4111111111111111&x=1"),
        (":authority", b"bank.local"),
    ];
    all.extend_from_slice(pairs);
    MockHost::new()
        .with_request(&all)
        .with_property(
            &["connection", "uri_san_peer_certificate"],
            b"spiffe://bank.local/ns/pay/sa/api",
        )
        .with_property(&["source", "address"], b"10.1.2.3:40000")
        .with_property(&["xds", "node", "id"], b"edge-1")
        .with_property(&["xds", "node", "metadata", "region"], b"in-west")
}

fn record_of(host: &MockHost) -> Record {
    let line = host.property(&[RECORD_PROPERTY]).unwrap();
    let sealed = unseal(std::str::from_utf8(&line).unwrap()).unwrap();
    serde_json::from_str(&sealed.body).unwrap()
}

#[test]
fn forged_audit_headers_are_removed_in_every_spelling() {
    let host = request(&[
        ("x-audit-id", b"forged-1"),
        ("x-audit-id", b"forged-2"),
        ("x_audit_principal", b"spiffe://evil"),
        ("x.audit.region", b"us"),
        ("x-audit-extra", b"x"),
        ("x-auditor", b"kept"),
    ]);
    let r = root("", &host);
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    let ids = host.request_values("x-audit-id");
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], b"forged-1");
    assert!(host.request_values("x_audit_principal").is_empty());
    assert!(host.request_values("x.audit.region").is_empty());
    assert!(host.request_values("x-audit-extra").is_empty());
    assert_eq!(host.request_values("x-auditor"), vec![b"kept".to_vec()]);
    assert_eq!(
        host.request_values("x-audit-principal"),
        vec![b"spiffe://bank.local/ns/pay/sa/api".to_vec()]
    );
    assert_eq!(
        host.request_values("x-audit-region"),
        vec![b"in-west".to_vec()]
    );
    assert_eq!(
        host.request_values("x-audit-node"),
        vec![b"edge-1".to_vec()]
    );
    assert_eq!(
        host.request_values("x-audit-source"),
        vec![b"10.1.2.3:40000".to_vec()]
    );
    let ts = String::from_utf8(host.request_values("x-audit-timestamp").remove(0)).unwrap();
    assert!(ts.ends_with("+05:30"), "{ts}");
    assert_eq!(host.metric("kavach_audit_forged_headers_removed_total"), 4);
}

#[test]
fn audit_ids_are_uuids_and_unique() {
    let host = request(&[]);
    let r = root("", &host);
    let mut a = r.new_stream();
    a.on_request_headers(&host, true);
    let first = host.request_values("x-audit-id").remove(0);
    a.on_request_headers(&host, true);
    let second = host.request_values("x-audit-id").remove(0);
    assert_ne!(first, second);
    assert!(is_uuid(&first));
    assert_eq!(first[14], b'8', "RFC 9562 version 8");
    assert!(
        matches!(first[19], b'8' | b'9' | b'a' | b'b'),
        "RFC 9562 variant"
    );
    assert_eq!(host.property(&[AUDIT_ID_PROPERTY]).unwrap(), second);
}

#[test]
fn request_id_is_used_only_when_configured_and_well_formed() {
    let rid = b"3f0b7a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    let host = request(&[("x-request-id", rid)]);
    let r = root(r#"{"audit_id_from_request_id":true}"#, &host);
    r.new_stream().on_request_headers(&host, true);
    assert_eq!(host.request_values("x-audit-id"), vec![rid.to_vec()]);

    let host = request(&[("x-request-id", b"not-a-uuid\r\n")]);
    let r = root(r#"{"audit_id_from_request_id":true}"#, &host);
    r.new_stream().on_request_headers(&host, true);
    assert!(is_uuid(&host.request_values("x-audit-id")[0]));
}

#[test]
fn no_principal_header_without_a_verified_certificate() {
    let host = MockHost::new().with_request(&[
        (":method", b"GET"),
        (":path", b"/"),
        ("x-audit-principal", b"spiffe://forged"),
    ]);
    let r = root("", &host);
    r.new_stream().on_request_headers(&host, true);
    assert!(host.request_values("x-audit-principal").is_empty());
}

#[test]
fn the_record_has_the_request_the_response_and_the_decisions() {
    let host = request(&[("x-request-id", b"rid-1")])
        .with_property(&["response", "code"], &200i64.to_le_bytes())
        .with_property(&["request", "total_size"], &123i64.to_le_bytes())
        .with_property(&["response", "total_size"], &456i64.to_le_bytes())
        .with_property(&["request", "duration"], &2_500_000i64.to_le_bytes())
        .with_property(&["xds", "cluster_name"], b"accounts");
    let r = root("", &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    host.advance(std::time::Duration::from_micros(2500));
    let mut d = Decision::new("pci_authz", Outcome::Allow);
    d.rule = Some("payments-read".into());
    d.policy_version = Some("v7".into());
    publish(&host, &d);
    s.on_log(&host);
    let rec = record_of(&host);
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.path, "/accounts/42", "query dropped by default");
    assert_eq!(rec.authority, "bank.local");
    assert_eq!(rec.status, Some(200));
    assert_eq!(rec.duration_us, Some(2500));
    assert_eq!((rec.bytes_in, rec.bytes_out), (Some(123), Some(456)));
    assert_eq!(rec.cluster.as_deref(), Some("accounts"));
    assert_eq!(
        rec.principal.as_deref(),
        Some("spiffe://bank.local/ns/pay/sa/api")
    );
    assert_eq!(rec.request_id.as_deref(), Some("rid-1"));
    assert_eq!(rec.region.as_deref(), Some("in-west"));
    assert_eq!(rec.decisions, vec![d]);
    assert_eq!(rec.seq, 0);
    assert_eq!(host.metric("kavach_audit_records_total"), 1);
}

#[test]
fn query_values_are_redacted_when_configured_and_cards_never_appear() {
    let host = request(&[]);
    let r = root(r#"{"query":"redact_values"}"#, &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    s.on_log(&host);
    assert_eq!(
        record_of(&host).path,
        "/accounts/42?card=<redacted>&x=<redacted>"
    );

    let host = MockHost::new().with_request(&[
        (":method", b"GET"),
        (":path", b"/cards/4111-1111-1111-1111/uid/999941057058"),
    ]);
    let r = root("", &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    s.on_log(&host);
    let line = String::from_utf8(host.property(&[RECORD_PROPERTY]).unwrap()).unwrap();
    assert!(!line.contains("4111-1111-1111-1111"));
    assert!(!line.contains("999941057058"));
    assert_eq!(
        record_of(&host).path,
        "/cards/4111-11**-****-1111/uid/XXXXXXXX7058"
    );
}

#[test]
fn hostile_values_are_escaped_and_bounded() {
    let mut evil = b"/p\r\nx-injected: 1\x00\xff".to_vec();
    evil.extend(std::iter::repeat_n(b'a', 100_000));
    let host = MockHost::new()
        .with_request(&[(":method", b"GET"), (":path", &evil), (":authority", b"")])
        .with_property(
            &["connection", "uri_san_peer_certificate"],
            b"spiffe://x\r\nevil: 1",
        );
    let r = root("", &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    let principal = host.request_values("x-audit-principal").remove(0);
    assert!(!principal.contains(&b'\r') && !principal.contains(&b'\n'));
    assert!(principal.len() <= 512);
    s.on_log(&host);
    let line = String::from_utf8(host.property(&[RECORD_PROPERTY]).unwrap()).unwrap();
    assert!(line.len() <= 16 * 1024);
    assert!(!line.contains('\n') && !line.contains('\r'));
    assert!(record_of(&host)
        .path
        .starts_with("/p\\x0d\\x0ax-injected: 1\\x00\u{fffd}"));
}

#[test]
fn records_of_one_vm_form_a_verifiable_chain() {
    let host = request(&[]);
    let r = root("", &host);
    let mut lines = Vec::new();
    for _ in 0..20 {
        let mut s = r.new_stream();
        s.on_request_headers(&host, true);
        s.on_log(&host);
        lines.push(String::from_utf8(host.property(&[RECORD_PROPERTY]).unwrap()).unwrap());
    }
    let report = verify(&lines.join("\n"), None);
    assert_eq!(report.first_problem, None);
    assert_eq!(report.verified, 20);
}

#[test]
fn a_request_answered_before_audit_ran_is_still_recorded() {
    let host = MockHost::new()
        .with_property(&["request", "method"], b"POST")
        .with_property(&["request", "path"], b"/pay?x=1")
        .with_property(&["response", "code"], &403i64.to_le_bytes());
    let r = root("", &host);
    let mut s = r.new_stream();
    s.on_log(&host);
    let rec = record_of(&host);
    assert_eq!(
        (rec.method.as_str(), rec.path.as_str(), rec.status),
        ("POST", "/pay", Some(403))
    );
    assert!(is_uuid(rec.audit_id.as_bytes()));
}

#[test]
fn the_audit_id_goes_back_to_the_client_when_configured() {
    let host = request(&[]);
    let r = root(r#"{"return_audit_id":true}"#, &host);
    let mut s = r.new_stream();
    s.on_request_headers(&host, true);
    s.on_response_headers(&host, true);
    let sent = host.request_values("x-audit-id");
    let back: Vec<_> = host
        .response_headers
        .borrow()
        .iter()
        .filter(|(n, _)| n == "x-audit-id")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(back, sent);
}

#[test]
fn a_missing_chain_key_refuses_to_start() {
    let host = MockHost::new();
    let err = AuditFactory::configure(br#"{"chain_key_env":"KAVACH_TEST_UNSET_KEY"}"#, &host)
        .err()
        .unwrap();
    assert!(err
        .to_string()
        .starts_with("chain_key_env: environment variable \"KAVACH_TEST_UNSET_KEY\" is not set"));
}

#[test]
fn the_collector_gets_batches_and_counts_failures() {
    let host = request(&[]);
    let mut r = root(
        r#"{"collector":{"cluster":"audit_sink","batch_max_records":10}}"#,
        &host,
    );
    assert_eq!(r.tick_period_ms(), Some(1000));
    for _ in 0..3 {
        let mut s = r.new_stream();
        s.on_request_headers(&host, true);
        s.on_log(&host);
    }
    r.on_tick(&host);
    let calls = host.calls.borrow().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "audit_sink");
    assert_eq!(calls[0].1.iter().filter(|b| **b == b'\n').count(), 3);
    host.call_status.set(None); // timeout
    assert!(r.on_http_call_response(&host, 1));
    assert_eq!(host.metric("kavach_audit_collector_failed_total"), 1);
    host.advance(std::time::Duration::from_millis(600));
    r.on_tick(&host);
    host.call_status.set(Some(204));
    assert!(r.on_http_call_response(&host, 2));
    assert_eq!(host.metric("kavach_audit_collector_sent_total"), 3);
    assert!(!r.on_http_call_response(&host, 99), "not our token");
}
