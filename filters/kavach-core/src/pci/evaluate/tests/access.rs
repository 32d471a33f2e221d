//! Method override, tokens and XFCC identity.

use super::*;
use crate::pci::token::mint_token;

#[test]
fn method_override() {
    let o = "method_override";
    check(vec![
        case(
            "override header",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[("x-http-method-override", b"DELETE")],
            Err(o),
        ),
        case(
            "x-http-method",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[("x-http-method", b"GET")],
            Err(o),
        ),
        case(
            "x-method-override",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[("x-method-override", b"GET")],
            Err(o),
        ),
        case(
            "alias spelling",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[("X_HTTP_Method_Override", b"PUT")],
            Err(o),
        ),
        case(
            "dotted spelling",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[("x.method.override", b"PUT")],
            Err(o),
        ),
        case(
            "empty value still counts",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[("x-http-method", b"")],
            Err(o),
        ),
        case(
            "nothing would match anyway",
            None,
            "GET",
            b"/nowhere",
            &[("x-http-method", b"GET")],
            Err(o),
        ),
        case(
            "allowed by the rule",
            Some(LEGACY),
            "POST",
            b"/v1/legacy/x",
            &[("x-http-method-override", b"DELETE")],
            Ok("legacy"),
        ),
        case(
            "real method still decides",
            Some(LEGACY),
            "DELETE",
            b"/v1/legacy/x",
            &[("x-http-method-override", b"POST")],
            Err(o),
        ),
        case(
            "similar names are not overrides",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[("x-http-methods", b"DELETE")],
            Ok("cards-read"),
        ),
    ]);
}

#[test]
fn tokens() {
    let key = KEY.as_bytes();
    let good = mint_token(key, API, NOW + 60);
    let leak = |s: String| -> &'static [u8] { Box::leak(s.into_bytes().into_boxed_slice()) };
    let tok = |name, value: &'static [u8], want| {
        case(
            name,
            Some(API),
            "POST",
            b"/v1/tokens/new",
            &[("x-cde-token", value)],
            want,
        )
    };
    let mut tampered = good.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'Q' } else { b'A' };
    check(vec![
        tok("valid", leak(good.clone()), Ok("tokens-write")),
        case(
            "missing",
            Some(API),
            "POST",
            b"/v1/tokens/new",
            &[],
            Err("token_missing"),
        ),
        tok("empty", b"", Err("token_missing")),
        tok(
            "expired",
            leak(mint_token(key, API, NOW - 1)),
            Err("token_expired"),
        ),
        tok(
            "ttl too long",
            leak(mint_token(key, API, NOW + 601)),
            Err("token_ttl_too_long"),
        ),
        tok(
            "other principal",
            leak(mint_token(key, VAULT, NOW + 60)),
            Err("token_bad_signature"),
        ),
        tok(
            "other key",
            leak(mint_token(
                b"another-key-another-key-another!",
                API,
                NOW + 60,
            )),
            Err("token_bad_signature"),
        ),
        tok(
            "tampered",
            leak(String::from_utf8(tampered).unwrap()),
            Err("token_bad_signature"),
        ),
        tok("malformed", b"v1.abc.def", Err("token_malformed")),
        tok("invalid utf-8", b"v1.\xff.x", Err("token_malformed")),
        case(
            "duplicated",
            Some(API),
            "POST",
            b"/v1/tokens/new",
            &[
                ("x-cde-token", leak(good.clone())),
                ("x-cde-token", leak(good.clone())),
            ],
            Err("duplicate_header"),
        ),
        case(
            "alias spelling",
            Some(API),
            "POST",
            b"/v1/tokens/new",
            &[("x_cde_token", leak(good.clone()))],
            Err("duplicate_header"),
        ),
        // The token is only asked for when everything else matched.
        case(
            "wrong path, no token",
            Some(API),
            "POST",
            b"/v1/other",
            &[],
            NO,
        ),
        case(
            "no principal",
            None,
            "POST",
            b"/v1/tokens/new",
            &[("x-cde-token", leak(good.clone()))],
            NO,
        ),
        // Rules without require_token do not need one.
        case(
            "no token for reads",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[],
            Ok("cards-read"),
        ),
    ]);
}

#[test]
fn identity_from_xfcc() {
    let cfg = policy();
    let xfcc = |v: &'static [u8]| ("x-forwarded-client-cert", v);
    let via_gw = |name, extra: &[(&'static str, &[u8])], want| {
        case(name, Some(GATEWAY), "GET", b"/v1/cards/1", extra, want)
    };
    let api_xfcc: &[u8] = b"By=spiffe://bank.local/ns/edge/sa/gateway;Hash=ab;URI=spiffe://bank.local/ns/payments/sa/api";
    check(vec![
        via_gw("client of the gateway", &[xfcc(api_xfcc)], Ok("cards-read")),
        // Two elements in one value (lines a proxy merged, or a client's own XFCC passed on):
        // by default no element is believed, in either order.
        via_gw(
            "two elements, the api last",
            &[xfcc(
                b"URI=spiffe://bank.local/ns/x/sa/y,URI=spiffe://bank.local/ns/payments/sa/api",
            )],
            Err("ambiguous_identity"),
        ),
        via_gw(
            "two elements, the api first",
            &[xfcc(
                b"URI=spiffe://bank.local/ns/payments/sa/api,URI=spiffe://bank.local/ns/x/sa/y",
            )],
            Err("ambiguous_identity"),
        ),
        via_gw(
            "another spelling beside it",
            &[xfcc(api_xfcc), ("x_forwarded_client_cert", api_xfcc)],
            Err("ambiguous_identity"),
        ),
        via_gw("gateway vouches for nobody", &[], NO),
        via_gw(
            "duplicated",
            &[xfcc(api_xfcc), xfcc(api_xfcc)],
            Err("ambiguous_identity"),
        ),
        via_gw(
            "unparsable",
            &[xfcc(b"URI=\"spiffe://x")],
            Err("ambiguous_identity"),
        ),
        case(
            "untrusted peer's xfcc is ignored",
            Some(TENANT),
            "GET",
            b"/v1/cards/1",
            &[xfcc(api_xfcc)],
            NO,
        ),
        case(
            "untrusted peer, garbage xfcc",
            Some(API),
            "GET",
            b"/v1/cards/1",
            &[xfcc(b"\"")],
            Ok("cards-read"),
        ),
        case(
            "a bad path outranks a bad identity",
            Some(GATEWAY),
            "GET",
            b"/v1/%2f",
            &[xfcc(b"\"")],
            Err("ambiguous_path:encoded_slash"),
        ),
    ]);
    let ev = run(&cfg, &via_gw("", &[xfcc(api_xfcc)], NO));
    assert_eq!(ev.principal.as_deref(), Some(API));
    assert_eq!(ev.via.as_deref(), Some(GATEWAY));
    let ev = run(&cfg, &via_gw("", &[xfcc(b"\"")], NO));
    assert_eq!((ev.principal, ev.via.as_deref()), (None, Some(GATEWAY)));
}
