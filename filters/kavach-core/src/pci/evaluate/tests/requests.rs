//! Principals, methods, paths, header conditions and validity windows.

use super::*;

#[test]
fn principals_methods_and_paths() {
    let foreign = Some("spiffe://evil.local/ns/payments/sa/api");
    check(vec![
        case(
            "api reads a card",
            Some(API),
            "GET",
            b"/v1/cards/42",
            &[],
            Ok("cards-read"),
        ),
        case(
            "HEAD too",
            Some(API),
            "HEAD",
            b"/v1/cards/42",
            &[],
            Ok("cards-read"),
        ),
        case(
            "cde workload",
            Some(VAULT),
            "GET",
            b"/v1/cards/42",
            &[],
            Ok("cards-read"),
        ),
        case(
            "cde two deep",
            Some("spiffe://bank.local/ns/cde/a/b"),
            "GET",
            b"/v1/cards/42",
            &[],
            NO,
        ),
        case(
            "cde empty",
            Some("spiffe://bank.local/ns/cde/"),
            "GET",
            b"/v1/cards/42",
            &[],
            NO,
        ),
        case(
            "lower-case method",
            Some(API),
            "get",
            b"/v1/cards/42",
            &[],
            NO,
        ),
        case(
            "other method",
            Some(API),
            "DELETE",
            b"/v1/cards/42",
            &[],
            NO,
        ),
        case("trailing slash", Some(API), "GET", b"/v1/cards/", &[], NO),
        case(
            "two segments",
            Some(API),
            "GET",
            b"/v1/cards/42/cvv",
            &[],
            NO,
        ),
        case(
            "query ignored",
            Some(API),
            "GET",
            b"/v1/cards/42?x=../..",
            &[],
            Ok("cards-read"),
        ),
        case(
            "decoded digits",
            Some(API),
            "GET",
            b"/v1/c%61rds/%34%32",
            &[],
            Ok("cards-read"),
        ),
        case(
            "merged slashes",
            Some(API),
            "GET",
            b"//v1//cards//42",
            &[],
            Ok("cards-read"),
        ),
        case("no principal", None, "GET", b"/v1/cards/42", &[], NO),
        case(
            "other workload",
            Some(TENANT),
            "GET",
            b"/v1/cards/42",
            &[],
            NO,
        ),
        case(
            "open rule, no principal",
            None,
            "GET",
            b"/healthz",
            &[],
            Ok("health"),
        ),
        case(
            "open rule, our principal",
            Some(TENANT),
            "GET",
            b"/healthz",
            &[],
            Ok("health"),
        ),
        case(
            "open rule, foreign principal",
            foreign,
            "GET",
            b"/healthz",
            &[],
            NO,
        ),
        case(
            "look-alike trust domain",
            Some("spiffe://bank.local.evil/ns/cde/x"),
            "GET",
            b"/healthz",
            &[],
            NO,
        ),
        case(
            "not a spiffe id",
            Some("https://bank.local/x"),
            "GET",
            b"/healthz",
            &[],
            NO,
        ),
    ]);
}

#[test]
fn malformed_requests_and_paths() {
    let cfg = policy();
    let mut dup_path = case(
        "",
        Some(API),
        "GET",
        b"/v1/cards/1",
        &[(":path", b"/v1/cards/2")],
        NO,
    );
    dup_path.want = Err("malformed_request".into());
    let mut no_method = case("", Some(API), "GET", b"/v1/cards/1", &[], NO);
    no_method.headers.retain(|(n, _)| *n != ":method");
    no_method.want = Err("malformed_request".into());
    let mut no_path = case("", Some(API), "GET", b"/v1/cards/1", &[], NO);
    no_path.headers.retain(|(n, _)| *n != ":path");
    no_path.want = Err("malformed_request".into());
    let bad = |name, path: &'static [u8], reason: &'static str| {
        case(name, Some(API), "GET", path, &[], Err(reason))
    };
    check(vec![
        dup_path,
        no_method,
        no_path,
        case(
            "empty method",
            Some(API),
            "",
            b"/v1/cards/1",
            &[],
            Err("malformed_request"),
        ),
        bad(
            "dot-dot",
            b"/v1/tokens/../cards/1",
            "ambiguous_path:dot_segment",
        ),
        bad(
            "encoded dot-dot",
            b"/v1/cards/%2e%2e/x",
            "ambiguous_path:dot_segment",
        ),
        bad(
            "encoded slash",
            b"/v1/cards/a%2Fb",
            "ambiguous_path:encoded_slash",
        ),
        bad(
            "double encoding",
            b"/v1/cards/a%252Fb",
            "ambiguous_path:double_encoding",
        ),
        bad(
            "path parameter",
            b"/v1/cards/1;jsessionid=x",
            "ambiguous_path:path_parameter",
        ),
        bad("backslash", b"/v1/cards\\1", "ambiguous_path:backslash"),
        bad("fragment", b"/v1/cards/1#x", "ambiguous_path:fragment"),
        bad("nul", b"/v1/cards/%00", "ambiguous_path:control"),
        bad(
            "non-ascii",
            b"/v1/cards/\xe0\xa4\x95",
            "ambiguous_path:non_ascii",
        ),
        bad("asterisk", b"*", "ambiguous_path:not_absolute"),
    ]);
    // The canonical path is recorded when there is one.
    let ev = run(
        &cfg,
        &case("", Some(API), "GET", b"//v1/cards/%34%32?q", &[], NO),
    );
    assert_eq!(ev.path.as_deref(), Some("/v1/cards/42"));
    assert_eq!(ev.principal.as_deref(), Some(API));
    let ev = run(&cfg, &case("", Some(API), "GET", b"/v1/%2f", &[], NO));
    assert_eq!(ev.path, None);
    assert_eq!(ev.principal.as_deref(), Some(API));
}

#[test]
fn header_conditions() {
    let ok: &[(&str, &[u8])] = &[
        ("x-tenant", b"t1"),
        ("x-env", b"prod"),
        ("x-acct", b"12345"),
        ("x-region", b"in-west"),
    ];
    let with = |extra: &[(&'static str, &'static [u8])]| {
        let mut h: Vec<(&'static str, &'static [u8])> = vec![
            ("x-tenant", b"t1"),
            ("x-env", b"prod"),
            ("x-acct", b"12345"),
            ("x-region", b"in-west"),
        ];
        for (n, v) in extra {
            h.retain(|(m, _)| m != n);
            h.push((n, v));
        }
        h
    };
    let without = |name: &str| -> Vec<(&'static str, &'static [u8])> {
        with(&[]).into_iter().filter(|(n, _)| *n != name).collect()
    };
    let t = |name, h: &[(&'static str, &[u8])], want| {
        case(name, Some(TENANT), "GET", b"/v1/tenant/a", h, want)
    };
    let dup = Err("duplicate_header");
    let mut duplicated = with(&[]);
    duplicated.push(("x-tenant", b"t2"));
    let mut mixed_case = with(&[]);
    mixed_case.push(("X-Env", b"prod"));
    check(vec![
        t("all conditions hold", ok, Ok("tenant")),
        t("tenant missing", &without("x-tenant"), NO),
        t(
            "empty tenant is present",
            &with(&[("x-tenant", b"")]),
            Ok("tenant"),
        ),
        t("env differs in case", &with(&[("x-env", b"Prod")]), NO),
        t("env missing", &without("x-env"), NO),
        t("debug must be absent", &with(&[("x-debug", b"1")]), NO),
        t("acct not digits", &with(&[("x-acct", b"12a")]), NO),
        t("acct invalid utf-8", &with(&[("x-acct", b"12\xff")]), NO),
        t(
            "region prefix",
            &with(&[("x-region", b"in-")]),
            Ok("tenant"),
        ),
        t(
            "region prefix missing",
            &with(&[("x-region", b"us-in-")]),
            NO,
        ),
        t(
            "region invalid utf-8 after prefix",
            &with(&[("x-region", b"in-\xff")]),
            Ok("tenant"),
        ),
        t("duplicated", &duplicated, dup),
        t("duplicated in another case", &mixed_case, dup),
        t(
            "alias spelling of an absent-only header",
            &with(&[("x_debug", b"1")]),
            dup,
        ),
        t(
            "alias spelling of a required header",
            &with(&[("x.env", b"prod")]),
            dup,
        ),
        case(
            "duplicates deny regardless of rules",
            None,
            "GET",
            b"/healthz",
            &[("x-acct", b"1"), ("x-acct", b"2")],
            dup,
        ),
        case(
            "unrelated duplicates are fine",
            None,
            "GET",
            b"/healthz",
            &[("accept", b"a"), ("accept", b"b")],
            Ok("health"),
        ),
    ]);
}

#[test]
fn validity_windows() {
    let b = |name, now| at(case(name, Some(BATCH), "GET", b"/v1/batch", &[], NO), now);
    let allow = |mut c: Case| {
        c.want = Ok("batch");
        c
    };
    check(vec![
        b("long before", NOW),
        b("one second before", WINDOW_START - 1),
        allow(b("at the start", WINDOW_START)),
        allow(b("inside", WINDOW_START + 3600)),
        allow(b("last second", WINDOW_END - 1)),
        b("at the end", WINDOW_END),
        b("after", WINDOW_END + 86_400),
    ]);
}
