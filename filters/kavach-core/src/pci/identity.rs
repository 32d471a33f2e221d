//! Who is calling: the verified mTLS peer, or (only behind a trusted proxy) the client that proxy
//! vouches for in `x-forwarded-client-cert`.

use crate::headers::alias_eq;
use crate::host::{Fact, Headers, Host};

/// Property holding the URI SAN of the verified peer certificate.
pub const PEER_PRINCIPAL_PROPERTY: [&str; 2] = ["connection", "uri_san_peer_certificate"];

/// The header a trusted proxy forwards its client's certificate details in.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

/// Most elements (proxy hops) an XFCC value may have.
pub const MAX_XFCC_ELEMENTS: usize = 32;

/// XFCC settings that are in force (`enabled: true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XfccConfig {
    /// SPIFFE IDs of the proxies whose XFCC header is believed.
    pub trusted_proxies: Vec<String>,
    pub elements: XfccElements,
}

/// Which element of an XFCC value names the caller.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XfccElements {
    /// Only a value of exactly one element names a caller; more than one is ambiguous. Two
    /// header lines that a proxy merged, and a client's own XFCC that a `FORWARD_ONLY` proxy
    /// passed on with another element, look alike: neither is believed.
    #[default]
    Single,
    /// The last element names the caller: the one a trusted proxy in `APPEND_FORWARD` mode
    /// appended for its own peer (elements before it came from further away).
    Last,
}

/// The identity a request is judged by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The caller's SPIFFE ID, if it has one.
    pub principal: Option<String>,
    /// The trusted proxy the principal was taken from (XFCC), if any.
    pub via: Option<String>,
}

/// The identity cannot be determined without guessing (duplicate or unparsable XFCC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousIdentity;

/// The verified peer's URI SAN: None when absent, empty or not UTF-8.
pub fn peer_principal(host: &dyn Host) -> Option<String> {
    host.fact(Fact::PeerPrincipal)
        .and_then(|v| std::str::from_utf8(&v).ok().map(str::to_string))
}

/// Decides the identity of a request whose direct peer is `peer`.
///
/// Behind a trusted proxy the principal is the `URI` of the last XFCC element (the client of
/// that proxy); a trusted proxy that forwards no XFCC header (or one without `URI`) vouches for
/// nobody, so the request has no principal rather than the proxy's own.
pub fn resolve(
    peer: Option<String>,
    headers: &Headers,
    xfcc: Option<&XfccConfig>,
) -> Result<Identity, AmbiguousIdentity> {
    let trusted = match (xfcc, peer.as_deref()) {
        (Some(cfg), Some(p)) => cfg.trusted_proxies.iter().any(|t| t == p),
        _ => false,
    };
    if !trusted {
        return Ok(Identity {
            principal: peer,
            via: None,
        });
    }
    // Every spelling of the header counts: a second one, or another spelling
    // (`x_forwarded_client_cert`, which some servers read as the same header), is ambiguous.
    let mut values = headers.iter().filter(|(n, _)| alias_eq(n, XFCC_HEADER));
    let principal = match (values.next(), values.next()) {
        (None, _) => None,
        (Some((name, value)), None) if name.eq_ignore_ascii_case(XFCC_HEADER) => {
            let elements = xfcc.map_or(XfccElements::Single, |c| c.elements);
            caller_uri(value, elements)?
        }
        _ => return Err(AmbiguousIdentity),
    };
    Ok(Identity {
        principal,
        via: peer,
    })
}

/// The `URI` field of the element of an XFCC value that names the caller (see
/// [`XfccElements`]). Err when the value does not parse, has more elements than `elements`
/// allows, or that element has several `URI` fields.
pub fn caller_uri(
    value: &[u8],
    elements: XfccElements,
) -> Result<Option<String>, AmbiguousIdentity> {
    let text = std::str::from_utf8(value).map_err(|_| AmbiguousIdentity)?;
    let (fields, count) = last_element(text).ok_or(AmbiguousIdentity)?;
    if count > 1 && elements == XfccElements::Single {
        return Err(AmbiguousIdentity);
    }
    let mut uri = None;
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("uri") {
            if uri.is_some() {
                return Err(AmbiguousIdentity);
            }
            uri = Some(value);
        }
    }
    Ok(uri.filter(|u| !u.is_empty()))
}

/// Parses `k=v;k="v, with; specials",k=v` and returns the fields of the last element. Quoted
/// values may contain `,` `;` `=` and backslash-escaped characters. None on any syntax error,
/// an empty element, or more than [`MAX_XFCC_ELEMENTS`] elements.
fn last_element(text: &str) -> Option<(Vec<(String, String)>, usize)> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut elements = 1;
    let mut fields: Vec<(String, String)> = Vec::new();
    loop {
        let key_start = i;
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        {
            i += 1;
        }
        let key = text.get(key_start..i).filter(|k| !k.is_empty())?;
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        let mut value = Vec::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        value.push(*b.get(i + 1)?);
                        i += 2;
                    }
                    c => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else {
            while let Some(c) = b.get(i).filter(|c| !b",;\"".contains(c)) {
                value.push(*c);
                i += 1;
            }
        }
        let value = String::from_utf8(value).ok()?;
        if value.chars().any(char::is_control) {
            return None;
        }
        fields.push((key.to_string(), value));
        match b.get(i) {
            None => return Some((fields, elements)),
            Some(b';') => {}
            Some(b',') => {
                elements += 1;
                if elements > MAX_XFCC_ELEMENTS {
                    return None;
                }
                fields.clear();
            }
            Some(_) => return None,
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: &str = "spiffe://bank.local/ns/edge/sa/gateway";
    const CLIENT: &str = "spiffe://bank.local/ns/payments/sa/api";

    fn xfcc() -> XfccConfig {
        XfccConfig {
            trusted_proxies: vec![GW.to_string()],
            elements: XfccElements::Single,
        }
    }

    fn headers(pairs: &[(&str, &[u8])]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn xfcc_uri_table() {
        // The parser's table, read as `last` (any number of elements); `single` is below.
        let ok = |v: &str| caller_uri(v.as_bytes(), XfccElements::Last);
        let cases: &[(&str, Result<Option<&str>, AmbiguousIdentity>)] = &[
            ("URI=spiffe://a/b", Ok(Some("spiffe://a/b"))),
            ("uri=spiffe://a/b", Ok(Some("spiffe://a/b"))),
            (
                "By=spiffe://bank.local/gw;Hash=abc;URI=spiffe://a/b",
                Ok(Some("spiffe://a/b")),
            ),
            (
                "By=x;Hash=h;Subject=\"CN=a, O=b; c\";URI=spiffe://a/b;DNS=a.local",
                Ok(Some("spiffe://a/b")),
            ),
            (
                "URI=spiffe://first/x,URI=spiffe://last/y",
                Ok(Some("spiffe://last/y")),
            ),
            ("URI=spiffe://first/x,Hash=abc", Ok(None)),
            ("URI=\"spiffe://a/b\"", Ok(Some("spiffe://a/b"))),
            (
                "Subject=\"a\\\"b\";URI=spiffe://a/b",
                Ok(Some("spiffe://a/b")),
            ),
            ("URI=", Ok(None)),
            ("Hash=abc", Ok(None)),
            ("URI=spiffe://a/b;URI=spiffe://c/d", Err(AmbiguousIdentity)),
            ("", Err(AmbiguousIdentity)),
            ("URI", Err(AmbiguousIdentity)),
            ("=x", Err(AmbiguousIdentity)),
            ("URI=spiffe://a/b;", Err(AmbiguousIdentity)),
            ("URI=spiffe://a/b,", Err(AmbiguousIdentity)),
            (",URI=spiffe://a/b", Err(AmbiguousIdentity)),
            ("URI=\"spiffe://a/b", Err(AmbiguousIdentity)),
            ("URI=\"a\"b", Err(AmbiguousIdentity)),
            ("URI=a\"b", Err(AmbiguousIdentity)),
            ("URI=spiffe://a/b, URI=spiffe://c/d", Err(AmbiguousIdentity)),
            ("Subject=\"a\\", Err(AmbiguousIdentity)),
            ("URI=\"a\\\nb\"", Err(AmbiguousIdentity)),
        ];
        for (value, want) in cases {
            assert_eq!(ok(value), want.map(|o| o.map(str::to_string)), "{value:?}");
        }
        assert_eq!(
            caller_uri(b"URI=\xff", XfccElements::Last),
            Err(AmbiguousIdentity)
        );
        // `single`: one element only; any second element, in either order, is ambiguous.
        for (value, want) in cases {
            let one = !value.contains(',') || value.contains('"');
            let want = if one { *want } else { Err(AmbiguousIdentity) };
            assert_eq!(
                caller_uri(value.as_bytes(), XfccElements::Single),
                want.map(|o| o.map(str::to_string)),
                "{value:?}"
            );
        }
        let many = vec!["Hash=a"; MAX_XFCC_ELEMENTS + 1].join(",");
        assert_eq!(ok(&many), Err(AmbiguousIdentity));
        let enough = vec!["Hash=a"; MAX_XFCC_ELEMENTS].join(",");
        assert_eq!(ok(&enough), Ok(None));
    }

    #[test]
    fn xfcc_is_believed_only_from_a_trusted_proxy() {
        let value = format!("By={GW};URI={CLIENT}");
        let h = headers(&[(XFCC_HEADER, value.as_bytes())]);
        let cfg = xfcc();
        // Trusted proxy: the forwarded client is the principal.
        assert_eq!(
            resolve(Some(GW.into()), &h, Some(&cfg)),
            Ok(Identity {
                principal: Some(CLIENT.into()),
                via: Some(GW.into())
            })
        );
        // Any other peer: the header is ignored entirely, even when it is garbage.
        let other = "spiffe://bank.local/ns/x/sa/y";
        for h in [
            h.clone(),
            headers(&[(XFCC_HEADER, b"garbage"), (XFCC_HEADER, b"x")]),
        ] {
            assert_eq!(
                resolve(Some(other.into()), &h, Some(&cfg)),
                Ok(Identity {
                    principal: Some(other.into()),
                    via: None
                })
            );
            assert_eq!(resolve(None, &h, Some(&cfg)), Ok(Identity::default()));
        }
        // XFCC disabled: the peer, always.
        assert_eq!(
            resolve(Some(GW.into()), &h, None),
            Ok(Identity {
                principal: Some(GW.into()),
                via: None
            })
        );
    }

    #[test]
    fn every_spelling_count_and_order_of_the_header_is_seen() {
        const BREAK_GLASS: &str = "spiffe://bank.local/ns/ops/sa/sre";
        let one = format!("URI={CLIENT}");
        let two = format!("URI={BREAK_GLASS},URI={CLIENT}");
        let two_reversed = format!("URI={CLIENT},URI={BREAK_GLASS}");
        let single = xfcc();
        let last = XfccConfig {
            elements: XfccElements::Last,
            ..xfcc()
        };
        let ambiguous: &[&[(&str, &[u8])]] = &[
            // Two lines, both orders.
            &[
                (XFCC_HEADER, one.as_bytes()),
                (XFCC_HEADER, b"URI=spiffe://bank.local/ns/ops/sa/sre"),
            ],
            &[
                (XFCC_HEADER, b"URI=spiffe://bank.local/ns/ops/sa/sre"),
                (XFCC_HEADER, one.as_bytes()),
            ],
            // Another spelling beside it, either order, or alone.
            &[
                (XFCC_HEADER, one.as_bytes()),
                ("x_forwarded_client_cert", two.as_bytes()),
            ],
            &[
                ("x_forwarded_client_cert", two.as_bytes()),
                (XFCC_HEADER, one.as_bytes()),
            ],
            &[("x.forwarded.client.cert", one.as_bytes())],
            &[("x_forwarded_client_cert", one.as_bytes())],
        ];
        for h in ambiguous {
            for cfg in [&single, &last] {
                assert_eq!(
                    resolve(Some(GW.into()), &headers(h), Some(cfg)),
                    Err(AmbiguousIdentity),
                    "{h:?}"
                );
            }
        }
        // One line of two elements, both orders: ambiguous under `single`; under `last` the
        // element the proxy appended.
        for (value, caller) in [(&two, CLIENT), (&two_reversed, BREAK_GLASS)] {
            let h = headers(&[(XFCC_HEADER, value.as_bytes())]);
            assert_eq!(
                resolve(Some(GW.into()), &h, Some(&single)),
                Err(AmbiguousIdentity)
            );
            assert_eq!(
                resolve(Some(GW.into()), &h, Some(&last)),
                Ok(Identity {
                    principal: Some(caller.into()),
                    via: Some(GW.into())
                })
            );
        }
        // One element, one line, in any letter case of the name: the caller.
        let h = headers(&[("X-Forwarded-Client-Cert", one.as_bytes())]);
        assert_eq!(
            resolve(Some(GW.into()), &h, Some(&single)).map(|i| i.principal),
            Ok(Some(CLIENT.to_string()))
        );
    }

    #[test]
    fn a_trusted_proxy_with_bad_or_no_xfcc() {
        let cfg = xfcc();
        let dup = headers(&[
            (XFCC_HEADER, b"URI=spiffe://a/b"),
            (XFCC_HEADER, b"URI=spiffe://c/d"),
        ]);
        assert_eq!(
            resolve(Some(GW.into()), &dup, Some(&cfg)),
            Err(AmbiguousIdentity)
        );
        let mixed_case = headers(&[
            (XFCC_HEADER, b"URI=spiffe://a/b"),
            ("X-Forwarded-Client-Cert", b"URI=spiffe://c/d"),
        ]);
        assert_eq!(
            resolve(Some(GW.into()), &mixed_case, Some(&cfg)),
            Err(AmbiguousIdentity)
        );
        let bad = headers(&[(XFCC_HEADER, b"URI=\"unterminated")]);
        assert_eq!(
            resolve(Some(GW.into()), &bad, Some(&cfg)),
            Err(AmbiguousIdentity)
        );
        // No header: the proxy vouches for nobody, and is not itself the principal.
        assert_eq!(
            resolve(Some(GW.into()), &Vec::new(), Some(&cfg)),
            Ok(Identity {
                principal: None,
                via: Some(GW.into())
            })
        );
    }

    #[test]
    fn the_peer_principal_must_be_non_empty_utf8() {
        use crate::testing::MockHost;
        let host = MockHost::new().with_property(&PEER_PRINCIPAL_PROPERTY, CLIENT.as_bytes());
        assert_eq!(peer_principal(&host).as_deref(), Some(CLIENT));
        let host = MockHost::new().with_property(&PEER_PRINCIPAL_PROPERTY, b"");
        assert_eq!(peer_principal(&host), None);
        let host = MockHost::new().with_property(&PEER_PRINCIPAL_PROPERTY, b"spiffe://\xff/x");
        assert_eq!(peer_principal(&host), None);
        assert_eq!(peer_principal(&MockHost::new()), None);
    }
}
