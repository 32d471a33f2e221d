use super::*;
use crate::pci::matcher::HeaderTest;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn env(name: &str) -> Option<String> {
    match name {
        "KAVACH_PCI_TOKEN_KEY" => Some(KEY.to_string()),
        "EMPTY_KEY" => Some(String::new()),
        "SHORT_KEY" => Some("short".to_string()),
        _ => None,
    }
}

fn parse(json: &str) -> Result<PciConfig, ConfigError> {
    PciConfig::parse_with_env(json.as_bytes(), &env)
}

fn err(json: &str) -> String {
    parse(json).unwrap_err().to_string()
}

/// A valid policy with `rules` spliced in.
fn with_rules(rules: &str) -> String {
    format!(r#"{{"policy_version":"v1","trust_domain":"bank.local","rules":[{rules}]}}"#)
}

/// A valid policy with extra top-level members.
fn with_top(extra: &str) -> String {
    format!(r#"{{"policy_version":"v1","trust_domain":"bank.local",{extra},"rules":[]}}"#)
}

const FULL: &str = r#"{
  "policy_version": "2026-11-01",
  "mode": "shadow",
  "trust_domain": "bank.local",
  "dot_segments": "resolve",
  "deny_status": 404,
  "xfcc": { "enabled": true, "trusted_proxies": ["spiffe://bank.local/ns/edge/sa/gateway"] },
  "token": { "header": "X-CDE-Token", "key_env": "KAVACH_PCI_TOKEN_KEY", "max_ttl_seconds": 600 },
  "rules": [
    { "name": "payments-api-read",
      "principals": ["spiffe://bank.local/ns/payments/sa/api", "spiffe://bank.local/ns/cde/*"],
      "methods": ["GET", "HEAD"],
      "paths": ["/v1/cards/*", "/v1/tokens/**"],
      "headers": [ {"name": "X-Tenant", "present": true}, {"name":"x-env","exact":"prod"},
                   {"name":"x-a","prefix":"abc"}, {"name":"x-b","regex":"^[0-9]+$"} ],
      "require_token": true,
      "allow_method_override": true,
      "not_before": "2026-11-01T00:00:00+05:30", "not_after": "2026-11-02T00:00:00+05:30"
    },
    { "name": "ops.health", "paths": ["/healthz"] }
  ]
}"#;

#[test]
fn a_full_policy_is_understood() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.policy_version, "2026-11-01");
    assert_eq!(c.mode, Mode::Shadow);
    assert_eq!(c.trust_domain, "bank.local");
    assert_eq!(c.dot_segments, DotSegments::Resolve);
    assert_eq!(c.deny_status, 404);
    assert_eq!(
        c.xfcc.as_ref().unwrap().trusted_proxies,
        vec!["spiffe://bank.local/ns/edge/sa/gateway".to_string()]
    );
    let t = c.token.as_ref().unwrap();
    assert_eq!(t.header, "x-cde-token");
    assert_eq!(t.key, KEY.as_bytes());
    assert_eq!(t.max_ttl_seconds, 600);
    assert!(
        !format!("{t:?}").contains(KEY),
        "the key must not be printed"
    );

    assert_eq!(c.rules.len(), 2);
    let r = &c.rules[0];
    assert_eq!(r.name, "payments-api-read");
    assert_eq!(r.principals.as_ref().unwrap().len(), 2);
    assert_eq!(
        r.methods.as_deref(),
        Some(&["GET".to_string(), "HEAD".to_string()][..])
    );
    assert_eq!(r.paths.as_ref().unwrap()[1].as_str(), "/v1/tokens/**");
    assert_eq!(r.headers[0].name, "x-tenant");
    assert!(matches!(r.headers[0].test, HeaderTest::Present(true)));
    assert!(matches!(&r.headers[1].test, HeaderTest::Exact(v) if v == b"prod"));
    assert!(matches!(&r.headers[2].test, HeaderTest::Prefix(v) if v == b"abc"));
    assert!(matches!(&r.headers[3].test, HeaderTest::Regex(_)));
    assert!(r.require_token && r.allow_method_override);
    assert_eq!(
        r.window.not_after.unwrap() - r.window.not_before.unwrap(),
        86_400_000_000_000
    );
    let ops = &c.rules[1];
    assert!(ops.principals.is_none() && ops.methods.is_none() && ops.headers.is_empty());
    assert!(!ops.require_token);

    let mut names: Vec<_> = c.decision_headers.values().cloned().collect();
    names.sort();
    assert_eq!(names, ["x-a", "x-b", "x-cde-token", "x-env", "x-tenant"]);
}

#[test]
fn defaults_are_strict() {
    let c = parse(&with_rules("")).unwrap();
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.dot_segments, DotSegments::Reject);
    assert_eq!(c.deny_status, 403);
    assert!(c.xfcc.is_none() && c.token.is_none() && c.rules.is_empty());
    assert!(c.decision_headers.is_empty());
    // A disabled xfcc section is checked, but not in force.
    let c = parse(&with_top(
        r#""xfcc":{"trusted_proxies":["spiffe://bank.local/ns/edge/sa/gw"]}"#,
    ))
    .unwrap();
    assert!(c.xfcc.is_none());
    // Token defaults; the token header is only a decision header once a rule needs it.
    let c = parse(&with_top(r#""token":{"key_env":"KAVACH_PCI_TOKEN_KEY"}"#)).unwrap();
    let t = c.token.unwrap();
    assert_eq!(
        (t.header.as_str(), t.max_ttl_seconds),
        ("x-cde-token", 3600)
    );
    assert!(c.decision_headers.is_empty());
}

#[test]
fn metric_names_are_safe() {
    assert_eq!(metric_name("payments-api-read"), "payments-api-read");
    assert_eq!(metric_name("Ops.Health_2"), "ops_health_2");
}

#[test]
fn errors_name_the_field_and_the_reason() {
    let p = "\"principals\":[\"spiffe://bank.local/ns/a/sa/b\"]";
    let cases: Vec<(String, String)> = vec![
        (
            with_rules(r#"{"name":"a","paths":["/a"]},{"name":"b","paths":["/x"]},{"name":"c","paths":["/v1/**/cards"]}"#),
            "rules[2].paths[0]: \"**\" may only be the last segment".into(),
        ),
        (
            with_rules(r#"{"name":"a","paths":["/v1/ca*"]}"#),
            "rules[0].paths[0]: \"/v1/ca*\": \"*\" and \"**\" must be a whole segment (no other wildcards)".into(),
        ),
        (
            with_rules(r#"{"name":"open","methods":["GET"]}"#),
            "rules[0]: rule \"open\" must constrain \"principals\" or \"paths\" (with neither it would open the CDE to every caller)".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"methods":[]}}"#)),
            "rules[0].methods: must not be an empty list (omit the field to allow any)".into(),
        ),
        (
            with_rules(r#"{"name":"a","principals":[]}"#),
            "rules[0].principals: must not be an empty list (omit the field to allow any)".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"headers":[]}}"#)),
            "rules[0].headers: must not be an empty list (omit the field to allow any)".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"methods":null}}"#)),
            "rules[0].methods: invalid type: null, expected a sequence at line 1 column 133".into(),
        ),
        (
            with_rules(r#"{"name":"a","principals":["spiffe://evil.local/ns/a"]}"#),
            "rules[0].principals[0]: \"spiffe://evil.local/ns/a\" is outside the trust domain (must start with \"spiffe://bank.local/\")".into(),
        ),
        (
            with_rules(r#"{"name":"a","principals":["spiffe://bank.local/ns/*/sa/x"]}"#),
            "rules[0].principals[0]: \"spiffe://bank.local/ns/*/sa/x\": \"*\" may only be the whole last segment".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p}}},{{"name":"b",{p}}},{{"name":"a",{p}}}"#)),
            "rules[2].name: duplicate rule name \"a\" (also rules[0].name)".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"Pay.Api",{p}}},{{"name":"pay_api",{p}}}"#)),
            "rules[1].name: \"pay_api\" and rules[0].name \"Pay.Api\" give the same metric name \"pay_api\"".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"",{p}}}"#)),
            "rules[0].name: must not be empty".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"pay api",{p}}}"#)),
            "rules[0].name: \"pay api\" must be 1 to 64 characters of A-Z a-z 0-9 _ . -".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"{}",{p}}}"#, "a".repeat(65))),
            format!("rules[0].name: \"{}\" must be 1 to 64 characters of A-Z a-z 0-9 _ . -", "a".repeat(65)),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"methods":["get ME"]}}"#)),
            "rules[0].methods[0]: \"get ME\" is not an HTTP method (1 to 32 token characters)".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"headers":[{{"name":"x-a"}}]}}"#)),
            "rules[0].headers[0]: needs exactly one of \"present\", \"exact\", \"prefix\", \"regex\"".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"headers":[{{"name":"x-a","exact":"1","prefix":"1"}}]}}"#)),
            "rules[0].headers[0]: needs exactly one of \"present\", \"exact\", \"prefix\", \"regex\"".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"headers":[{{"name":"x a","present":true}}]}}"#)),
            "rules[0].headers[0].name: \"x a\" is not a valid HTTP header name".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"headers":[{{"name":"x-b","regex":"(["}}]}}"#)),
            "rules[0].headers[0].regex: invalid regex: regex parse error: ([ ^ error: unclosed character class".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"headers":[{{"name":"x-b","prefix":""}}]}}"#)),
            "rules[0].headers[0].prefix: must not be empty (use \"present\": true)".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"headers":[{{"name":"x-t","present":true}}]}},{{"name":"b",{p},"headers":[{{"name":"X_T","present":false}}]}}"#)),
            "rules[1].headers[0].name: \"x_t\" is another spelling of \"x-t\" (rules[0].headers[0].name); use one spelling".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"require_token":true}}"#)),
            "rules[0].require_token: needs the \"token\" section of the policy".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"not_before":"2026-11-02T00:00:00+05:30","not_after":"2026-11-01T00:00:00+05:30"}}"#)),
            "rules[0].not_after: must be later than not_before".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"not_before":"2026-11-01T00:00:00+05:30","not_after":"2026-11-01T00:00:00+05:30"}}"#)),
            "rules[0].not_after: must be later than not_before".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"not_before":"2026-11-01"}}"#)),
            "rules[0].not_before: \"2026-11-01\" is not an RFC 3339 timestamp like \"2026-11-01T00:00:00+05:30\" (premature end of input)".into(),
        ),
        (
            with_rules(&format!(r#"{{"name":"a",{p},"path":["/x"]}}"#)),
            "rules[0].path: unknown field `path`, expected one of `name`, `principals`, `methods`, `paths`, `headers`, `require_token`, `allow_method_override`, `not_before`, `not_after` at line 1 column 125".into(),
        ),
        (
            with_rules(r#"{"name":"a","paths":["/v1//cards"]}"#),
            "rules[0].paths[0]: \"/v1//cards\" is not in canonical form; write \"/v1/cards\"".into(),
        ),
        (
            r#"{"policy_version":"","trust_domain":"bank.local","rules":[]}"#.into(),
            "policy_version: must not be empty".into(),
        ),
        (
            r#"{"policy_version":"v1","trust_domain":"Bank","rules":[]}"#.into(),
            "trust_domain: \"Bank\" is not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')".into(),
        ),
        (
            r#"{"policy_version":"v1","trust_domain":"bank.local"}"#.into(),
            "missing field `rules` at line 1 column 51".into(),
        ),
        (
            with_top(r#""deny_status":500"#),
            "deny_status: must be 403 or 404, got 500".into(),
        ),
        (
            with_top(r#""mode":"audit""#),
            "mode: unknown variant `audit`, expected `enforce` or `shadow` at line 1 column 65".into(),
        ),
        (
            with_top(r#""dot_segments":"keep""#),
            "dot_segments: unknown variant `keep`, expected `reject` or `resolve` at line 1 column 72".into(),
        ),
        (
            with_top(r#""xfcc":{"enabled":true}"#),
            "xfcc.trusted_proxies: must list at least one proxy when xfcc is enabled".into(),
        ),
        (
            with_top(r#""xfcc":{"enabled":true,"trusted_proxies":["spiffe://bank.local/ns/edge/*"]}"#),
            "xfcc.trusted_proxies[0]: \"spiffe://bank.local/ns/edge/*\" must be an exact SPIFFE ID, not a pattern".into(),
        ),
        (
            with_top(r#""token":{"key_env":"UNSET_KEY"}"#),
            "token.key_env: environment variable \"UNSET_KEY\" is not set or empty in the VM (vm_config.environment_variables)".into(),
        ),
        (
            with_top(r#""token":{"key_env":"EMPTY_KEY"}"#),
            "token.key_env: environment variable \"EMPTY_KEY\" is not set or empty in the VM (vm_config.environment_variables)".into(),
        ),
        (
            with_top(r#""token":{"key_env":"SHORT_KEY"}"#),
            "token.key_env: the key in \"SHORT_KEY\" is 5 bytes; at least 32 are needed".into(),
        ),
        (
            with_top(r#""token":{"key_env":""}"#),
            "token.key_env: must not be empty".into(),
        ),
        (
            with_top(r#""token":{"key_env":"KAVACH_PCI_TOKEN_KEY","max_ttl_seconds":0}"#),
            "token.max_ttl_seconds: must be between 1 and 86400, got 0".into(),
        ),
        (
            with_top(r#""token":{"key_env":"KAVACH_PCI_TOKEN_KEY","header":"x cde"}"#),
            "token.header: \"x cde\" is not a valid HTTP header name".into(),
        ),
    ];
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (json, want) in &cases {
        match parse(json) {
            Ok(_) => failures.push(format!("accepted: {json}")),
            Err(e) if e.to_string() != *want => {
                failures.push(format!("{json}\n   got: {e}\n  want: {want}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_table_is_bounded() {
    let rule = |i: usize| format!(r#"{{"name":"r{i}","paths":["/x"]}}"#);
    let many: Vec<String> = (0..=MAX_RULES).map(rule).collect();
    assert_eq!(
        err(&with_rules(&many.join(","))),
        "rules: at most 1024 rules, got 1025"
    );
    let enough: Vec<String> = (0..MAX_RULES).map(rule).collect();
    assert_eq!(
        parse(&with_rules(&enough.join(","))).unwrap().rules.len(),
        1024
    );

    let paths: Vec<String> = (0..=MAX_LIST).map(|i| format!("\"/p{i}\"")).collect();
    assert_eq!(
        err(&with_rules(&format!(
            r#"{{"name":"a","paths":[{}]}}"#,
            paths.join(",")
        ))),
        "rules[0].paths: at most 256 entries, got 257"
    );
    let proxies: Vec<String> = (0..=MAX_LIST)
        .map(|i| format!("\"spiffe://bank.local/gw{i}\""))
        .collect();
    assert_eq!(
        err(&with_top(&format!(
            r#""xfcc":{{"enabled":true,"trusted_proxies":[{}]}}"#,
            proxies.join(",")
        ))),
        "xfcc.trusted_proxies: at most 256 entries, got 257"
    );
    assert_eq!(
        err(&format!(
            r#"{{"policy_version":"{}","trust_domain":"bank.local","rules":[]}}"#,
            "v".repeat(129)
        )),
        "policy_version: longer than 128 bytes (129 bytes)"
    );
}

#[test]
fn the_token_key_is_read_from_the_process_environment() {
    // Unique names: tests run in parallel in one process.
    std::env::set_var("KAVACH_PCI_CONFIG_TEST_KEY", KEY);
    let c = PciConfig::parse(
        with_top(r#""token":{"key_env":"KAVACH_PCI_CONFIG_TEST_KEY"}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(c.token.unwrap().key, KEY.as_bytes());
    let e = PciConfig::parse(
        with_top(r#""token":{"key_env":"KAVACH_PCI_CONFIG_TEST_UNSET"}"#).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(e.path, "token.key_env");
}
