use super::*;

const KEY: &str = "k3y-for-tests-k3y-for-tests-k3y!";
const API: &str = "spiffe://bank.local/ns/payments/sa/api";
const VAULT: &str = "spiffe://bank.local/ns/cde/vault";
const TENANT: &str = "spiffe://bank.local/ns/tenant/sa/app";
const BATCH: &str = "spiffe://bank.local/ns/batch/sa/job";
const LEGACY: &str = "spiffe://bank.local/ns/legacy/sa/app";
const GATEWAY: &str = "spiffe://bank.local/ns/edge/sa/gateway";
/// 2025-11-25T23:57:10Z, the mock host's clock.
const NOW: u64 = 1_764_115_030;
/// 2026-11-01T00:00:00+05:30 and one day later: the `batch` rule's window.
const WINDOW_START: u64 = 1_793_471_400;
const WINDOW_END: u64 = WINDOW_START + 86_400;

const POLICY: &str = r#"{
  "policy_version": "p1",
  "trust_domain": "bank.local",
  "xfcc": { "enabled": true, "trusted_proxies": ["spiffe://bank.local/ns/edge/sa/gateway"] },
  "token": { "key_env": "KEY", "max_ttl_seconds": 600 },
  "rules": [
    { "name": "cards-read",
      "principals": ["spiffe://bank.local/ns/payments/sa/api", "spiffe://bank.local/ns/cde/*"],
      "methods": ["GET", "HEAD"], "paths": ["/v1/cards/*"] },
    { "name": "tokens-write", "principals": ["spiffe://bank.local/ns/payments/sa/api"],
      "methods": ["POST"], "paths": ["/v1/tokens/**"], "require_token": true },
    { "name": "tenant", "principals": ["spiffe://bank.local/ns/tenant/sa/app"],
      "paths": ["/v1/tenant/**"],
      "headers": [ {"name": "x-tenant", "present": true}, {"name": "x-env", "exact": "prod"},
                   {"name": "x-debug", "present": false}, {"name": "x-acct", "regex": "^[0-9]+$"},
                   {"name": "x-region", "prefix": "in-"} ] },
    { "name": "batch", "principals": ["spiffe://bank.local/ns/batch/sa/job"], "paths": ["/v1/batch"],
      "not_before": "2026-11-01T00:00:00+05:30", "not_after": "2026-11-02T00:00:00+05:30" },
    { "name": "legacy", "principals": ["spiffe://bank.local/ns/legacy/sa/app"], "methods": ["POST"],
      "paths": ["/v1/legacy/**"], "allow_method_override": true },
    { "name": "health", "methods": ["GET"], "paths": ["/healthz"] }
  ]
}"#;

fn policy() -> PciConfig {
    PciConfig::parse_with_env(POLICY.as_bytes(), &|name| {
        (name == "KEY").then(|| KEY.to_string())
    })
    .unwrap()
}

struct Case {
    name: &'static str,
    peer: Option<&'static str>,
    headers: Vec<(&'static str, Vec<u8>)>,
    now: u64,
    /// Ok(rule name) or Err(reason as published).
    want: Result<&'static str, String>,
}

fn case(
    name: &'static str,
    peer: Option<&'static str>,
    method: &str,
    path: &[u8],
    extra: &[(&'static str, &[u8])],
    want: Result<&'static str, &str>,
) -> Case {
    let mut headers = vec![
        (":method", method.as_bytes().to_vec()),
        (":path", path.to_vec()),
        (":authority", b"cde.bank.local".to_vec()),
    ];
    headers.extend(extra.iter().map(|(n, v)| (*n, v.to_vec())));
    Case {
        name,
        peer,
        headers,
        now: NOW,
        want: want.map_err(str::to_string),
    }
}

fn at(mut c: Case, now: u64) -> Case {
    c.now = now;
    c
}

fn run(cfg: &PciConfig, c: &Case) -> Evaluation {
    let headers: Headers = c
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let now = i64::try_from(c.now).unwrap() * 1_000_000_000;
    evaluate(cfg, &headers, c.peer.map(str::to_string), now)
}

fn outcome(cfg: &PciConfig, ev: &Evaluation) -> Result<String, String> {
    match ev.verdict {
        Verdict::Allow { rule } => Ok(cfg.rules[rule].name.clone()),
        Verdict::Deny(r) => Err(r.to_string()),
    }
}

fn check(cases: Vec<Case>) {
    let cfg = policy();
    let mut failures = Vec::new();
    for c in &cases {
        let got = outcome(&cfg, &run(&cfg, c));
        if got != c.want.clone().map(str::to_string) {
            failures.push(format!("{}: got {got:?}, want {:?}", c.name, c.want));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const NO: Result<&str, &str> = Err("no_rule_matched");

mod access;
mod requests;

#[test]
fn an_empty_policy_denies_everything() {
    let cfg = PciConfig::parse_with_env(
        br#"{"policy_version":"p0","trust_domain":"bank.local","rules":[]}"#,
        &|_| None,
    )
    .unwrap();
    for (peer, path) in [
        (Some(API), "/v1/cards/1"),
        (None, "/"),
        (Some(VAULT), "/healthz"),
    ] {
        let c = case("", peer, "GET", path.as_bytes(), &[], NO);
        assert_eq!(
            run(&cfg, &c).verdict,
            Verdict::Deny(DenyReason::NoRuleMatched)
        );
    }
}

#[test]
fn reasons_render_and_classify() {
    use crate::path_canon::PathError;
    assert_eq!(
        DenyReason::AmbiguousPath(PathError::EncodedSlash).to_string(),
        "ambiguous_path:encoded_slash"
    );
    assert!(DenyReason::AmbiguousPath(PathError::Fragment).is_bad_request());
    assert!(!DenyReason::MalformedRequest.is_bad_request());
    assert_eq!(
        DenyReason::Token(TokenError::Expired).to_string(),
        "token_expired"
    );
    let all = [
        DenyReason::MalformedRequest,
        DenyReason::AmbiguousPath(PathError::Empty),
        DenyReason::AmbiguousIdentity,
        DenyReason::DuplicateHeader,
        DenyReason::MethodOverride,
        DenyReason::Token(TokenError::Missing),
        DenyReason::Token(TokenError::Malformed),
        DenyReason::Token(TokenError::Expired),
        DenyReason::Token(TokenError::BadSignature),
        DenyReason::Token(TokenError::TtlTooLong),
        DenyReason::NoRuleMatched,
    ];
    let kinds: Vec<&str> = all.iter().map(|r| r.kind()).collect();
    assert_eq!(kinds, DenyReason::KINDS);
}
