//! The PCI authorization filter inside the real Envoy, with a real mTLS listener.

use kavach_core::pci::mint_token;
use kavach_integration::envoy::{config_error_line, Module};
use kavach_integration::pki::TestCa;
use kavach_integration::{EchoServer, Envoy, EnvoySpec, FilterSpec, Request, Response};
use serde_json::Value;

const TOKEN_KEY: &str = "test-only-key-0123456789abcdef0123456789";
const CHECKOUT: &str = "spiffe://bank.local/ns/payments/sa/checkout";
const TOKENIZER: &str = "spiffe://bank.local/ns/payments/sa/tokenizer";
const REPORTS: &str = "spiffe://bank.local/ns/payments/sa/reports";

fn policy(mode: &str) -> String {
    format!(
        r#"{{
  "policy_version": "2026-11-01",
  "mode": "{mode}",
  "trust_domain": "bank.local",
  "token": {{"header": "x-cde-token", "key_env": "KAVACH_PCI_TOKEN_KEY"}},
  "rules": [
    {{"name": "checkout-read-cards", "principals": ["{CHECKOUT}"], "methods": ["GET"], "paths": ["/v1/cards/*"]}},
    {{"name": "cde-workloads", "principals": ["spiffe://bank.local/ns/cde/*"], "methods": ["GET", "POST"], "paths": ["/v1/**"]}},
    {{"name": "tokenizer-write", "principals": ["{TOKENIZER}"], "methods": ["POST"], "paths": ["/v1/tokens"], "require_token": true}},
    {{"name": "break-glass-expired", "principals": ["spiffe://bank.local/ns/ops/sa/oncall"], "paths": ["/v1/**"],
      "not_before": "2020-01-01T00:00:00+05:30", "not_after": "2020-01-02T00:00:00+05:30"}},
    {{"name": "break-glass-active", "principals": ["spiffe://bank.local/ns/ops/sa/sre"], "paths": ["/v1/**"],
      "not_before": "2020-01-01T00:00:00Z", "not_after": "2099-01-01T00:00:00Z"}},
    {{"name": "reports-by-tenant", "principals": ["{REPORTS}"], "methods": ["GET"], "paths": ["/v1/reports"],
      "headers": [{{"name": "x-tenant", "regex": "^[a-z]+$"}}]}}
  ]
}}"#
    )
}

/// Envoy with audit then PCI authz, plain and mTLS listeners, one echo upstream.
struct Cde {
    ca: TestCa,
    upstream: EchoServer,
    envoy: Envoy,
}

impl Cde {
    fn start(mode: &str) -> Cde {
        Self::with_policy(policy(mode), |spec| spec)
    }

    fn with_policy(policy: String, extra: impl FnOnce(EnvoySpec) -> EnvoySpec) -> Cde {
        let (ca, files) = TestCa::with_server_files().unwrap();
        let upstream = EchoServer::start("cde").unwrap();
        let envoy = Envoy::start(&extra(
            EnvoySpec::new(upstream.addr())
                .filter(FilterSpec::new(Module::Audit, "{}"))
                .filter(
                    FilterSpec::new(Module::PciAuthz, policy)
                        .env("KAVACH_PCI_TOKEN_KEY", TOKEN_KEY),
                )
                .mtls(files)
                .audit_access_log(),
        ));
        Cde {
            ca,
            upstream,
            envoy,
        }
    }

    fn as_(&self, spiffe_id: &str, req: Request) -> Response {
        let id = self.ca.client(spiffe_id).unwrap();
        req.send_tls(self.envoy.mtls_addr(), &self.ca.roots(), Some(&id))
            .unwrap_or_else(|e| panic!("{spiffe_id}: {e}"))
    }

    fn upstream_hits(&self) -> usize {
        self.upstream.received().len()
    }
}

fn assert_denied(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.text());
    assert!(resp.echoed().is_none(), "{what}: reached the upstream");
    let body: Value = resp.json();
    assert_eq!(body["policy_version"], "2026-11-01", "{what}: {body}");
    assert!(
        body["audit_id"].as_str().is_some_and(|id| id.len() == 36),
        "{what}: {body}"
    );
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{what}: no policy details leak: {body}");
}

#[test]
fn it_lets_an_allowed_principal_method_and_path_reach_the_upstream() {
    let cde = Cde::start("enforce");
    let resp = cde.as_(CHECKOUT, Request::get("/v1/cards/4242"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = resp.echoed().unwrap();
    assert_eq!(seen.path, "/v1/cards/4242");
    assert_eq!(seen.header("x-audit-principal"), Some(CHECKOUT));
    // The decision is in the audit record.
    let lines = cde.envoy.wait_audit_lines(1);
    let record: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(record["decisions"][0]["filter"], "pci_authz");
    assert_eq!(record["decisions"][0]["outcome"], "allow");
    assert_eq!(record["decisions"][0]["rule"], "checkout-read-cards");
    assert_eq!(record["decisions"][0]["policy_version"], "2026-11-01");
    assert_eq!(
        cde.envoy
            .counter("wasmcustom.kavach_pci_allow_total.rule.checkout-read-cards"),
        1
    );
}

#[test]
fn it_denies_every_other_combination_before_the_upstream() {
    let cde = Cde::start("enforce");
    let cases: &[(&str, &str, &str)] = &[
        (CHECKOUT, "POST", "/v1/cards/4242"),    // method not allowed
        (CHECKOUT, "GET", "/v1/cards/4242/cvv"), // `*` is one segment
        (CHECKOUT, "GET", "/v1/accounts"),       // path not allowed
        (
            "spiffe://bank.local/ns/marketing/sa/web",
            "GET",
            "/v1/cards/4242",
        ), // other namespace
        (
            "spiffe://evil.local/ns/payments/sa/checkout",
            "GET",
            "/v1/cards/4242",
        ), // other trust domain
        ("spiffe://bank.local/ns/cde/a/b", "GET", "/v1/cards/4242"), // `*` is exactly one segment
        (
            "spiffe://bank.local/ns/ops/sa/oncall",
            "GET",
            "/v1/cards/4242",
        ), // break-glass expired
    ];
    for (who, method, path) in cases {
        let resp = cde.as_(who, Request::new(method, path));
        assert_denied(&resp, 403, &format!("{who} {method} {path}"));
    }
    // Methods are case-sensitive (Envoy's HTTP/1 codec already answers 400 to a lower-case one).
    let lower = cde.as_(CHECKOUT, Request::new("get", "/v1/cards/4242"));
    assert!(
        matches!(lower.status, 400 | 403) && lower.echoed().is_none(),
        "{}",
        lower.status
    );
    // No certificate on the plain-text listener: no principal, denied.
    let resp = Request::get("/v1/cards/4242")
        .send(cde.envoy.addr())
        .unwrap();
    assert_denied(&resp, 403, "plain text");
    // No client certificate on the mTLS listener: the handshake itself fails.
    let no_cert =
        Request::get("/v1/cards/4242").send_tls(cde.envoy.mtls_addr(), &cde.ca.roots(), None);
    assert!(no_cert.is_err() || no_cert.is_ok_and(|r| r.status != 200));
    assert_eq!(cde.upstream_hits(), 0);
    // A forged identity header changes nothing.
    let resp = Request::get("/v1/cards/4242")
        .header("x-forwarded-client-cert", format!("URI={CHECKOUT}"))
        .send(cde.envoy.addr())
        .unwrap();
    assert_denied(&resp, 403, "forged xfcc");
    assert_eq!(cde.upstream_hits(), 0);
    assert!(
        cde.envoy
            .counter("wasmcustom.kavach_pci_deny_total.reason.no_rule_matched")
            >= 9
    );
}

#[test]
fn it_refuses_ambiguous_paths_instead_of_matching_a_looser_form() {
    let cde = Cde::start("enforce");
    // Allowed for cde workloads: /v1/** ; each trick must be refused, not normalised into /v1/...
    let who = "spiffe://bank.local/ns/cde/vault";
    for path in [
        "/v1/cards/%2e%2e/%2e%2e/admin",
        "/v1/cards/..%2Fadmin",
        "/v1/cards/1%2F2",
        "/v1/cards/1%5C2",
        "/v1/cards/%252e%252e/admin",
        "/v1/cards/1;jsessionid=abc",
        "/v1/./cards",
        "/v1/cards/%00",
    ] {
        let resp = cde.as_(who, Request::get(path));
        assert!(
            resp.status == 400 || resp.status == 403,
            "{path}: {} {}",
            resp.status,
            resp.text()
        );
        assert!(resp.echoed().is_none(), "{path} reached the upstream");
    }
    assert_eq!(cde.upstream_hits(), 0);
    // Unreserved characters are decoded once, and the canonical path is what matched.
    let resp = cde.as_(CHECKOUT, Request::get("/v1/cards/%34%32"));
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn it_denies_duplicated_decision_headers_and_method_overrides() {
    let cde = Cde::start("enforce");
    let ok = cde.as_(
        REPORTS,
        Request::get("/v1/reports").header("x-tenant", "acme"),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let dup = cde.as_(
        REPORTS,
        Request::get("/v1/reports")
            .header("x-tenant", "acme")
            .header("x-tenant", "other"),
    );
    assert_denied(&dup, 403, "duplicate x-tenant");
    let alias = cde.as_(
        REPORTS,
        Request::get("/v1/reports")
            .header("x-tenant", "acme")
            .header("x_tenant", "evil"),
    );
    assert_denied(&alias, 403, "x_tenant alias");
    let bad_utf8 = cde.as_(
        REPORTS,
        Request::get("/v1/reports").header("x-tenant", b"\xff\xfe".as_slice()),
    );
    assert_denied(&bad_utf8, 403, "invalid utf-8");
    let overridden = cde.as_(
        CHECKOUT,
        Request::get("/v1/cards/4242").header("x-http-method-override", "DELETE"),
    );
    assert_denied(&overridden, 403, "method override");
    assert_eq!(cde.upstream_hits(), 1);
}

#[test]
fn it_requires_a_valid_token_bound_to_the_caller() {
    let cde = Cde::start("enforce");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let post = |token: Option<String>| {
        let mut r = Request::post("/v1/tokens", "{}");
        if let Some(t) = token {
            r = r.header("x-cde-token", t);
        }
        cde.as_(TOKENIZER, r)
    };
    assert_denied(&post(None), 403, "no token");
    assert_denied(
        &post(Some(mint_token(TOKEN_KEY.as_bytes(), TOKENIZER, now - 10))),
        403,
        "expired",
    );
    assert_denied(
        &post(Some(mint_token(TOKEN_KEY.as_bytes(), CHECKOUT, now + 300))),
        403,
        "other principal",
    );
    assert_denied(
        &post(Some(mint_token(
            b"another-key-0123456789abcdef012345",
            TOKENIZER,
            now + 300,
        ))),
        403,
        "wrong key",
    );
    assert_denied(&post(Some("v1.garbage".into())), 403, "malformed");
    let ok = post(Some(mint_token(TOKEN_KEY.as_bytes(), TOKENIZER, now + 300)));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(cde.upstream_hits(), 1);
}

#[test]
fn it_grants_break_glass_access_only_inside_its_window() {
    let cde = Cde::start("enforce");
    let active = cde.as_(
        "spiffe://bank.local/ns/ops/sa/sre",
        Request::get("/v1/anything"),
    );
    assert_eq!(active.status, 200);
    let expired = cde.as_(
        "spiffe://bank.local/ns/ops/sa/oncall",
        Request::get("/v1/anything"),
    );
    assert_denied(&expired, 403, "expired break-glass");
}

#[test]
fn it_records_but_never_blocks_in_shadow_mode() {
    let cde = Cde::start("shadow");
    let resp = Request::get("/v1/cards/4242")
        .send(cde.envoy.addr())
        .unwrap();
    assert_eq!(resp.status, 200, "shadow mode passes");
    assert_eq!(resp.header("x-kavach-pci-shadow"), Some("deny"));
    let allowed = cde.as_(CHECKOUT, Request::get("/v1/cards/4242"));
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("x-kavach-pci-shadow"), None);
    let lines = cde.envoy.wait_audit_lines(2);
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["decisions"][0]["outcome"], "shadow_deny");
    assert_eq!(first["decisions"][0]["reason"], "no_rule_matched");
    assert_eq!(
        cde.envoy.counter("wasmcustom.kavach_pci_shadow_deny_total"),
        1
    );
}

#[test]
fn it_refuses_a_malformed_policy_and_names_the_field() {
    let upstream = EchoServer::start("cde").unwrap();
    let bad = r#"{"policy_version": "v1", "trust_domain": "bank.local",
        "rules": [{"name": "r", "principals": ["spiffe://bank.local/ns/a/sa/b"], "paths": ["/v1/**/x"]}]}"#;
    let failure = Envoy::try_start(
        &EnvoySpec::new(upstream.addr()).filter(FilterSpec::new(Module::PciAuthz, bad)),
    )
    .err()
    .expect("Envoy must refuse the policy");
    let expected = config_error_line(
        Module::PciAuthz,
        0,
        r#"rules[0].paths[0]: "**" may only be the last segment"#,
    );
    assert!(
        failure.log.contains(&expected),
        "expected {expected:?} in:\n{}",
        failure.log
    );

    // The token key lives in the VM environment; without it the filter fails closed.
    let failure = Envoy::try_start(
        &EnvoySpec::new(upstream.addr())
            .filter(FilterSpec::new(Module::PciAuthz, policy("enforce"))),
    )
    .err()
    .expect("Envoy must refuse a policy whose token key is missing");
    assert!(failure.log.contains("token.key_env"), "{}", failure.log);
}

const GATEWAY: &str = "spiffe://bank.local/ns/edge/sa/gateway";
const SRE: &str = "spiffe://bank.local/ns/ops/sa/sre";
const XFCC: &str = "x-forwarded-client-cert";

/// The policy believing the gateway's XFCC, with `elements` as given.
fn xfcc_policy(elements: &str) -> String {
    policy("enforce").replacen(
        r#""trust_domain": "bank.local","#,
        &format!(
            r#""trust_domain": "bank.local",
  "xfcc": {{"enabled": true, "trusted_proxies": ["{GATEWAY}"], "elements": "{elements}"}},"#
        ),
        1,
    )
}

/// Behind a trusted front proxy: the mTLS listener passes the gateway's XFCC on unchanged.
fn behind_gateway(elements: &str) -> Cde {
    Cde::with_policy(xfcc_policy(elements), |spec| {
        spec.forward_client_cert("FORWARD_ONLY")
    })
}

#[test]
fn it_believes_one_xfcc_element_from_the_gateway_and_never_a_merged_or_respelled_one() {
    let cde = behind_gateway("single");
    let checkout = format!("URI={CHECKOUT}");
    let sre = format!("URI={SRE}");
    let get = || Request::get("/v1/cards/1");
    // One element from the trusted gateway: the checkout service, allowed by its own rule.
    let resp = cde.as_(GATEWAY, get().header(XFCC, &checkout));
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Two lines (Envoy may merge them), both orders; one line of two elements, both orders;
    // another spelling beside it or alone: no caller is believed, never the break-glass one.
    let ambiguous = [
        get().header(XFCC, &checkout).header(XFCC, &sre),
        get().header(XFCC, &sre).header(XFCC, &checkout),
        get().header(XFCC, format!("{checkout},{sre}")),
        get().header(XFCC, format!("{sre},{checkout}")),
        get()
            .header(XFCC, &checkout)
            .header("x_forwarded_client_cert", &sre),
        get()
            .header("x_forwarded_client_cert", &sre)
            .header(XFCC, &checkout),
        get().header("x_forwarded_client_cert", &sre),
    ];
    let n = ambiguous.len();
    for (i, req) in ambiguous.into_iter().enumerate() {
        assert_denied(&cde.as_(GATEWAY, req), 403, &format!("case {i}"));
    }
    let records = cde.envoy.wait_audit_lines(n + 1);
    for line in &records[1..] {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["decisions"][0]["reason"], "ambiguous_identity", "{r}");
    }
    assert_eq!(cde.upstream_hits(), 1);
}

#[test]
fn with_elements_last_the_element_the_gateway_appended_is_the_caller() {
    let cde = behind_gateway("last");
    let checkout = format!("URI={CHECKOUT}");
    let sre = format!("URI={SRE}");
    // The last element is the caller: the break-glass SRE here (allowed on /v1/**)...
    let resp = cde.as_(
        GATEWAY,
        Request::post("/v1/accounts/7", "{}").header(XFCC, format!("{checkout},{sre}")),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    // ... and the checkout service there (which may not POST).
    let resp = cde.as_(
        GATEWAY,
        Request::post("/v1/accounts/7", "{}").header(XFCC, format!("{sre},{checkout}")),
    );
    assert_denied(&resp, 403, "checkout last");
    // Another spelling stays ambiguous in this mode too.
    let resp = cde.as_(
        GATEWAY,
        Request::get("/v1/cards/1")
            .header(XFCC, &checkout)
            .header("x_forwarded_client_cert", &sre),
    );
    assert_denied(&resp, 403, "respelled");
}
