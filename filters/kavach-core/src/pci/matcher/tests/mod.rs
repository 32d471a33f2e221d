use super::*;

const TD: &str = "bank.local";

fn at() -> FieldPath {
    FieldPath::root().field("p")
}

fn principal(text: &str) -> PrincipalPattern {
    PrincipalPattern::parse(&at(), text, TD).unwrap()
}

fn path(text: &str) -> PathPattern {
    PathPattern::parse(&at(), text).unwrap()
}

#[test]
fn principal_matching_table() {
    let cases: &[(&str, &str, bool)] = &[
        (
            "spiffe://bank.local/ns/payments/sa/api",
            "spiffe://bank.local/ns/payments/sa/api",
            true,
        ),
        (
            "spiffe://bank.local/ns/payments/sa/api",
            "spiffe://bank.local/ns/payments/sa/api2",
            false,
        ),
        (
            "spiffe://bank.local/ns/payments/sa/api",
            "spiffe://bank.local/ns/payments/sa/API",
            false,
        ),
        (
            "spiffe://bank.local/ns/payments/sa/api",
            "spiffe://bank.local/ns/payments/sa/api/",
            false,
        ),
        (
            "spiffe://bank.local/ns/payments/sa/api",
            "spiffe://bank.local/ns/payments/sa",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/a",
            true,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/vault-1.x_y",
            true,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/a/b",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cdex/a",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/..",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/.",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/a?b",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local/ns/cde/*",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://evil.local/ns/cde/x",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "spiffe://bank.local.evil/ns/cde/x",
            false,
        ),
        (
            "spiffe://bank.local/ns/cde/*",
            "SPIFFE://bank.local/ns/cde/x",
            false,
        ),
        ("spiffe://bank.local/ns/cde/*", "", false),
        ("spiffe://bank.local/*", "spiffe://bank.local/web", true),
        ("spiffe://bank.local/*", "spiffe://bank.local/ns/web", false),
    ];
    for (pattern, id, want) in cases {
        assert_eq!(principal(pattern).matches(id), *want, "{pattern} vs {id}");
    }
}

#[test]
fn principal_patterns_are_validated() {
    let cases: &[(&str, &str)] = &[
        (
            "spiffe://evil.local/ns/a",
            "p: \"spiffe://evil.local/ns/a\" is outside the trust domain (must start with \"spiffe://bank.local/\")",
        ),
        (
            "spiffe://bank.local.evil/ns/a",
            "p: \"spiffe://bank.local.evil/ns/a\" is outside the trust domain (must start with \"spiffe://bank.local/\")",
        ),
        (
            "spiffe://bank.local",
            "p: \"spiffe://bank.local\" is outside the trust domain (must start with \"spiffe://bank.local/\")",
        ),
        (
            "spiffe://bank.local/",
            "p: \"spiffe://bank.local/\" has an empty path segment",
        ),
        (
            "spiffe://bank.local/ns//a",
            "p: \"spiffe://bank.local/ns//a\" has an empty path segment",
        ),
        (
            "spiffe://bank.local/ns/cde/",
            "p: \"spiffe://bank.local/ns/cde/\" has an empty path segment",
        ),
        (
            "spiffe://bank.local/ns/*/sa/api",
            "p: \"spiffe://bank.local/ns/*/sa/api\": \"*\" may only be the whole last segment",
        ),
        (
            "spiffe://bank.local/ns/cde*",
            "p: \"spiffe://bank.local/ns/cde*\": \"*\" may only be the whole last segment",
        ),
        (
            "spiffe://bank.local/ns/cde/**",
            "p: \"spiffe://bank.local/ns/cde/**\": \"*\" may only be the whole last segment",
        ),
        (
            "spiffe://bank.local/ns/../a",
            "p: \"spiffe://bank.local/ns/../a\": segment \"..\" is not a SPIFFE path segment (letters, digits, '.', '-', '_'; not \".\" or \"..\")",
        ),
        (
            "spiffe://bank.local/ns/a b",
            "p: \"spiffe://bank.local/ns/a b\": segment \"a b\" is not a SPIFFE path segment (letters, digits, '.', '-', '_'; not \".\" or \"..\")",
        ),
    ];
    for (text, want) in cases {
        let err = PrincipalPattern::parse(&at(), text, TD).unwrap_err();
        assert_eq!(err.to_string(), *want);
    }
    assert!(principal("spiffe://bank.local/ns/cde/*").is_pattern());
    assert!(!principal("spiffe://bank.local/ns/cde").is_pattern());
    let long = format!("spiffe://bank.local/{}", "a".repeat(3000));
    assert!(PrincipalPattern::parse(&at(), &long, TD).is_err());
}

#[test]
fn trust_domain_membership_is_exact() {
    assert!(in_trust_domain("spiffe://bank.local/ns/a", TD));
    assert!(!in_trust_domain("spiffe://bank.local.evil/ns/a", TD));
    assert!(!in_trust_domain("spiffe://evil.local/ns/a", TD));
    assert!(!in_trust_domain("spiffe://bank.local", TD));
    assert!(!in_trust_domain("https://bank.local/ns/a", TD));
    assert!(!in_trust_domain("spiffe://BANK.local/ns/a", TD));
    assert!(trust_domain(&at(), "bank.local").is_ok());
    assert_eq!(
        trust_domain(&at(), "Bank.local").unwrap_err().to_string(),
        "p: \"Bank.local\" is not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')"
    );
    assert_eq!(
        trust_domain(&at(), "").unwrap_err().to_string(),
        "p: must not be empty"
    );
    assert!(trust_domain(&at(), "bank.local/x").is_err());
}

#[test]
fn methods_are_tokens_and_case_sensitive() {
    for ok in ["GET", "HEAD", "PROPFIND", "M-SEARCH", "get"] {
        assert_eq!(method(&at(), ok).unwrap(), ok);
    }
    for bad in ["", "GE T", "GET\n", "GÉT", "(GET)", &"A".repeat(33)] {
        assert!(method(&at(), bad).is_err(), "{bad:?}");
    }
    // The stored method is compared byte for byte, so `get` never matches `GET`.
    assert_ne!(method(&at(), "get").unwrap().as_bytes(), b"GET");
}

#[test]
fn path_glob_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("/v1/cards", "/v1/cards", true),
        ("/v1/cards", "/v1/cards/", false),
        ("/v1/cards", "/v1/card", false),
        ("/v1/cards", "/v1/cardsx", false),
        ("/v1/cards/", "/v1/cards/", true),
        ("/v1/cards/", "/v1/cards", false),
        ("/v1/cards/*", "/v1/cards/42", true),
        ("/v1/cards/*", "/v1/cards/", false),
        ("/v1/cards/*", "/v1/cards", false),
        ("/v1/cards/*", "/v1/cards/42/", false),
        ("/v1/cards/*", "/v1/cards/42/cvv", false),
        ("/v1/*/cvv", "/v1/42/cvv", true),
        ("/v1/*/cvv", "/v1/cvv", false),
        ("/v1/tokens/**", "/v1/tokens", true),
        ("/v1/tokens/**", "/v1/tokens/", true),
        ("/v1/tokens/**", "/v1/tokens/a", true),
        ("/v1/tokens/**", "/v1/tokens/a/b/c/", true),
        ("/v1/tokens/**", "/v1/tokensx", false),
        ("/v1/tokens/**", "/v1", false),
        ("/v1/*/**", "/v1/a", true),
        ("/v1/*/**", "/v1/a/b", true),
        ("/v1/*/**", "/v1/", false),
        ("/**", "/", true),
        ("/**", "/anything/at/all", true),
        ("/", "/", true),
        ("/", "/a", false),
        ("/*", "/", false),
        ("/*", "/a", true),
        ("/a%20b/*", "/a%20b/c", true),
        ("/a%20b/*", "/a b/c", false),
        ("/v1/cards/*", "v1/cards/42", false),
    ];
    for (pattern, p, want) in cases {
        assert_eq!(path(pattern).matches(p), *want, "{pattern} vs {p}");
    }
    assert_eq!(path("/v1/cards/*").as_str(), "/v1/cards/*");
}

#[test]
fn path_patterns_are_validated() {
    let cases: &[(&str, &str)] = &[
        ("/v1/**/x", "p: \"**\" may only be the last segment"),
        ("/**/**", "p: \"**\" may only be the last segment"),
        (
            "/v1/ca*",
            "p: \"/v1/ca*\": \"*\" and \"**\" must be a whole segment (no other wildcards)",
        ),
        (
            "/v1/***",
            "p: \"/v1/***\": \"*\" and \"**\" must be a whole segment (no other wildcards)",
        ),
        ("v1/cards", "p: \"v1/cards\" must start with \"/\""),
        ("", "p: \"\" must start with \"/\""),
        (
            "/v1//cards",
            "p: \"/v1//cards\" is not in canonical form; write \"/v1/cards\"",
        ),
        (
            "/v1/c%61rds",
            "p: \"/v1/c%61rds\" is not in canonical form; write \"/v1/cards\"",
        ),
        (
            "/a%3bb",
            "p: \"/a%3bb\" is not in canonical form; write \"/a%3Bb\"",
        ),
        (
            "/v1/cards?x=1",
            "p: \"/v1/cards?x=1\" is not in canonical form; write \"/v1/cards\"",
        ),
        (
            "/v1/../cards",
            "p: \"/v1/../cards\" is not a canonical path (dot_segment)",
        ),
        (
            "/v1/%2F",
            "p: \"/v1/%2F\" is not a canonical path (encoded_slash)",
        ),
        (
            "/v1;x",
            "p: \"/v1;x\" is not a canonical path (path_parameter)",
        ),
        ("/v1/#", "p: \"/v1/#\" is not a canonical path (fragment)"),
    ];
    for (text, want) in cases {
        let err = PathPattern::parse(&at(), text).unwrap_err();
        assert_eq!(err.to_string(), *want);
    }
    assert!(PathPattern::parse(&at(), &format!("/{}", "a".repeat(3000))).is_err());
}

mod conditions;
