use super::*;
use crate::decision::{collect, Published, AUDIT_ID_PROPERTY, MAX_DECISION_BYTES};
use crate::host::MetricKind;
use crate::pci::identity::PEER_PRINCIPAL_PROPERTY;
use crate::pci::token::mint_token;
use crate::testing::MockHost;

const API: &str = "spiffe://bank.local/ns/payments/sa/api";
const KEY: &str = "filter-test-key-filter-test-key!";
const AUDIT_ID: &str = "3f0b7a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
/// The mock host's clock, in seconds.
const NOW: u64 = 1_764_115_030;

fn policy(extra: &str, rules: &str) -> String {
    format!(
        r#"{{"policy_version":"2026-11-01","trust_domain":"bank.local",{extra}"rules":[{rules}]}}"#
    )
}

const READ_RULE: &str = r#"{"name":"payments-api-read",
   "principals":["spiffe://bank.local/ns/payments/sa/api"],"methods":["GET"],"paths":["/v1/cards/*"]}"#;
const TOKEN_RULE: &str = r#"{"name":"tokens.write",
   "principals":["spiffe://bank.local/ns/payments/sa/api"],"methods":["POST"],"paths":["/v1/tokens"],
   "require_token":true}"#;

fn rules() -> String {
    format!("{READ_RULE},{TOKEN_RULE}")
}

fn root_with(config: &str, host: &MockHost) -> PciAuthzRoot {
    let cfg = PciConfig::parse_with_env(config.as_bytes(), &|name| {
        (name == "KEY").then(|| KEY.to_string())
    })
    .unwrap();
    PciAuthzRoot::new(cfg, host)
}

fn enforce(host: &MockHost) -> PciAuthzRoot {
    root_with(&policy(r#""token":{"key_env":"KEY"},"#, &rules()), host)
}

fn request(method: &str, path: &[u8], principal: Option<&str>) -> MockHost {
    let host = MockHost::new().with_request(&[
        (":method", method.as_bytes()),
        (":path", path),
        (":authority", b"cde.bank.local"),
    ]);
    match principal {
        Some(p) => host.with_property(&PEER_PRINCIPAL_PROPERTY, p.as_bytes()),
        None => host,
    }
}

fn decision_of(host: &MockHost) -> Decision {
    match collect(host).as_slice() {
        [Published::Decision(d)] => d.clone(),
        other => panic!("expected one decision, got {other:?}"),
    }
}

fn detail(d: &Decision, key: &str) -> Option<String> {
    d.detail
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn reply_body(host: &MockHost) -> String {
    String::from_utf8(host.reply.borrow().as_ref().unwrap().body.clone()).unwrap()
}

#[test]
fn an_allowed_request_is_published_with_its_rule() {
    let host = request("GET", b"/v1//cards/%34%32?x=1", Some(API));
    let root = enforce(&host);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    let d = decision_of(&host);
    assert_eq!(d.filter, "pci_authz");
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.rule.as_deref(), Some("payments-api-read"));
    assert_eq!(d.reason, None);
    assert_eq!(d.policy_version.as_deref(), Some("2026-11-01"));
    assert_eq!(detail(&d, "principal").as_deref(), Some(API));
    assert_eq!(detail(&d, "path").as_deref(), Some("/v1/cards/42"));
    assert_eq!(detail(&d, "via"), None);
    assert_eq!(
        host.metric("kavach_pci_allow_total.rule.payments-api-read"),
        1
    );
    assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
    assert!(host.response_headers.borrow().is_empty());
}

#[test]
fn a_denied_request_gets_403_json_with_version_and_audit_id() {
    let host = request("DELETE", b"/v1/cards/42", Some(API))
        .with_property(&[AUDIT_ID_PROPERTY], AUDIT_ID.as_bytes());
    let root = enforce(&host);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Stop);
    let reply = host.reply.borrow().clone().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.headers,
        vec![("content-type".to_string(), b"application/json".to_vec())]
    );
    assert_eq!(
        reply_body(&host),
        format!(
            r#"{{"error":"access_denied","policy_version":"2026-11-01","audit_id":"{AUDIT_ID}"}}"#
        )
    );
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reason.as_deref(), Some("no_rule_matched"));
    assert_eq!(d.rule, None);
    assert_eq!(detail(&d, "path").as_deref(), Some("/v1/cards/42"));
    assert_eq!(
        host.metric("kavach_pci_deny_total.reason.no_rule_matched"),
        1
    );
    assert_eq!(host.metric("kavach_pci_shadow_deny_total"), 0);
    s.on_response_headers(&host, true);
    assert!(host.response_headers.borrow().is_empty());
}

#[test]
fn the_body_has_no_audit_id_without_the_audit_filter() {
    let host = request("GET", b"/v1/cards/42", None);
    let root = enforce(&host);
    root.new_stream().on_request_headers(&host, true);
    assert_eq!(
        reply_body(&host),
        r#"{"error":"access_denied","policy_version":"2026-11-01"}"#
    );
    let d = decision_of(&host);
    assert_eq!(detail(&d, "principal"), None);
    assert_eq!(
        crate::decision::detail_pairs(&d),
        vec![("path".to_string(), "/v1/cards/42".to_string())]
    );
}

#[test]
fn quoted_values_are_escaped_in_the_body() {
    let host =
        request("GET", b"/x", Some(API)).with_property(&[AUDIT_ID_PROPERTY], b"id\"},\"x\":\"\n");
    let cfg = policy("", r#"{"name":"a","paths":["/v1"]}"#).replace("2026-11-01", "v\\\"1");
    let root = root_with(&cfg, &host);
    root.new_stream().on_request_headers(&host, true);
    let body: serde_json::Value = serde_json::from_str(&reply_body(&host)).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "error": "access_denied",
            "policy_version": "v\"1",
            "audit_id": "id\"},\"x\":\"\\x0a",
        })
    );
}

#[test]
fn deny_status_404_is_honoured_but_bad_paths_get_400() {
    let cfg = policy(r#""deny_status":404,"#, r#"{"name":"a","paths":["/v1"]}"#);
    let host = request("GET", b"/v2", Some(API));
    root_with(&cfg, &host)
        .new_stream()
        .on_request_headers(&host, true);
    assert_eq!(host.reply.borrow().as_ref().unwrap().status, 404);

    let host = request("GET", b"/v1/a%2Fb", Some(API))
        .with_property(&[AUDIT_ID_PROPERTY], AUDIT_ID.as_bytes());
    let root = root_with(&cfg, &host);
    assert_eq!(
        root.new_stream().on_request_headers(&host, true),
        Flow::Stop
    );
    assert_eq!(host.reply.borrow().as_ref().unwrap().status, 400);
    assert_eq!(
        reply_body(&host),
        format!(
            r#"{{"error":"bad_request","policy_version":"2026-11-01","audit_id":"{AUDIT_ID}"}}"#
        )
    );
    let d = decision_of(&host);
    assert_eq!(d.reason.as_deref(), Some("ambiguous_path:encoded_slash"));
    assert_eq!(detail(&d, "path").as_deref(), Some("-"));
    assert_eq!(detail(&d, "principal").as_deref(), Some(API));
    assert_eq!(
        host.metric("kavach_pci_deny_total.reason.ambiguous_path"),
        1
    );
}

#[test]
fn shadow_mode_never_blocks_and_marks_the_response() {
    let cfg = policy(r#""mode":"shadow","#, READ_RULE);
    let host = request("GET", b"/v1/cards/42/cvv", Some(API));
    let root = root_with(&cfg, &host);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    let d = decision_of(&host);
    assert_eq!(d.outcome, Outcome::ShadowDeny);
    assert_eq!(d.reason.as_deref(), Some("no_rule_matched"));
    assert_eq!(s.on_response_headers(&host, false), Flow::Continue);
    assert_eq!(
        *host.response_headers.borrow(),
        vec![(SHADOW_HEADER.to_string(), b"deny".to_vec())]
    );
    assert_eq!(host.metric("kavach_pci_shadow_deny_total"), 1);
    assert_eq!(
        host.metric("kavach_pci_deny_total.reason.no_rule_matched"),
        0
    );

    // Bad paths are not blocked either.
    let host = request("GET", b"/v1/cards/%2e%2e", Some(API));
    let mut s = root_with(&cfg, &host).new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert!(host.reply.borrow().is_none());
    assert_eq!(
        decision_of(&host).reason.as_deref(),
        Some("ambiguous_path:dot_segment")
    );

    // An allowed request is not marked.
    let host = request("GET", b"/v1/cards/42", Some(API));
    let mut s = root_with(&cfg, &host).new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    assert_eq!(decision_of(&host).outcome, Outcome::Allow);
    s.on_response_headers(&host, false);
    assert!(host.response_headers.borrow().is_empty());
}

#[test]
fn an_empty_rule_list_denies_everything() {
    for (method, path, principal) in [
        ("GET", b"/v1/cards/42".as_slice(), Some(API)),
        ("GET", b"/", None),
        ("POST", b"/healthz", Some("spiffe://bank.local/ns/x/sa/y")),
    ] {
        let host = request(method, path, principal);
        let root = root_with(&policy("", ""), &host);
        assert_eq!(
            root.new_stream().on_request_headers(&host, true),
            Flow::Stop
        );
        assert_eq!(host.reply.borrow().as_ref().unwrap().status, 403);
        assert_eq!(
            decision_of(&host).reason.as_deref(),
            Some("no_rule_matched")
        );
    }
}

#[test]
fn a_duplicated_path_is_a_malformed_request() {
    let host = MockHost::new()
        .with_request(&[
            (":method", b"GET"),
            (":path", b"/v1/cards/42"),
            (":path", b"/admin"),
        ])
        .with_property(&PEER_PRINCIPAL_PROPERTY, API.as_bytes());
    let root = enforce(&host);
    assert_eq!(
        root.new_stream().on_request_headers(&host, true),
        Flow::Stop
    );
    assert_eq!(host.reply.borrow().as_ref().unwrap().status, 403);
    let d = decision_of(&host);
    assert_eq!(d.reason.as_deref(), Some("malformed_request"));
    assert_eq!(detail(&d, "path").as_deref(), Some("-"));
    assert_eq!(
        host.metric("kavach_pci_deny_total.reason.malformed_request"),
        1
    );
}

#[test]
fn tokens_are_checked_against_the_host_clock() {
    let token = mint_token(KEY.as_bytes(), API, NOW + 300);
    let host = request("POST", b"/v1/tokens", Some(API));
    host.request_headers
        .borrow_mut()
        .push(("x-cde-token".into(), token.clone().into_bytes()));
    let root = enforce(&host);
    assert_eq!(
        root.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    assert_eq!(decision_of(&host).rule.as_deref(), Some("tokens.write"));
    assert_eq!(host.metric("kavach_pci_allow_total.rule.tokens_write"), 1);

    host.advance(std::time::Duration::from_secs(301));
    assert_eq!(
        root.new_stream().on_request_headers(&host, true),
        Flow::Stop
    );
    assert_eq!(decision_of(&host).reason.as_deref(), Some("token_expired"));
    assert_eq!(host.metric("kavach_pci_deny_total.reason.token_expired"), 1);
}

#[test]
fn counters_are_defined_at_configure_time() {
    let host = MockHost::new();
    let _root = enforce(&host);
    let mut names: Vec<String> = host.metrics.borrow().iter().map(|m| m.0.clone()).collect();
    names.sort();
    let mut want = vec![
        "kavach_pci_allow_total.rule.payments-api-read".to_string(),
        "kavach_pci_allow_total.rule.tokens_write".to_string(),
        "kavach_pci_shadow_deny_total".to_string(),
    ];
    want.extend(
        DenyReason::KINDS
            .iter()
            .map(|k| format!("kavach_pci_deny_total.reason.{k}")),
    );
    want.sort();
    assert_eq!(names, want);
    assert!(host
        .metrics
        .borrow()
        .iter()
        .all(|m| m.1 == MetricKind::Counter));
}

#[test]
fn huge_facts_still_fit_in_a_decision() {
    let principal = format!("spiffe://bank.local/ns/{}", "\"".repeat(3000));
    let path = format!("/{}", "\"".repeat(5000));
    let host = request("GET", path.as_bytes(), Some(&principal));
    enforce(&host).new_stream().on_request_headers(&host, true);
    let raw = host.property(&["kavach.decision.pci_authz"]).unwrap();
    assert!(raw.len() <= MAX_DECISION_BYTES, "{}", raw.len());
    let d = decision_of(&host);
    assert_eq!(d.reason.as_deref(), Some("no_rule_matched"));
    assert!(detail(&d, "path").unwrap().ends_with("..."));
}

#[test]
fn the_factory_reads_the_key_from_the_environment() {
    assert_eq!(PciAuthzFactory::NAME, "pci_authz");
    let host = MockHost::new();
    std::env::set_var("KAVACH_PCI_FILTER_TEST_KEY", KEY);
    let cfg = policy(
        r#""token":{"key_env":"KAVACH_PCI_FILTER_TEST_KEY"},"#,
        &rules(),
    );
    let root = match PciAuthzFactory::configure(cfg.as_bytes(), &host) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(root.name(), "pci_authz");
    let cfg = policy(
        r#""token":{"key_env":"KAVACH_PCI_FILTER_TEST_UNSET"},"#,
        &rules(),
    );
    let err = PciAuthzFactory::configure(cfg.as_bytes(), &host)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "token.key_env: environment variable \"KAVACH_PCI_FILTER_TEST_UNSET\" is not set or empty in the VM (vm_config.environment_variables)"
    );
    assert!(PciAuthzFactory::configure(b"", &host).is_err());
}

#[test]
fn xfcc_identity_is_recorded() {
    let gw = "spiffe://bank.local/ns/edge/sa/gateway";
    let cfg = policy(
        &format!(r#""xfcc":{{"enabled":true,"trusted_proxies":["{gw}"]}},"#),
        r#"{"name":"a","principals":["spiffe://bank.local/ns/payments/sa/api"],"paths":["/v1/**"]}"#,
    );
    let host = request("GET", b"/v1/x", Some(gw));
    host.request_headers.borrow_mut().push((
        "x-forwarded-client-cert".into(),
        format!("By={gw};URI={API}").into_bytes(),
    ));
    let root = root_with(&cfg, &host);
    assert_eq!(
        root.new_stream().on_request_headers(&host, true),
        Flow::Continue
    );
    let d = decision_of(&host);
    assert_eq!(detail(&d, "principal").as_deref(), Some(API));
    assert_eq!(detail(&d, "via").as_deref(), Some(gw));
}
