//! Who is calling: the verified mTLS peer, or (only behind a trusted proxy) the client that proxy
//! vouches for in `x-forwarded-client-cert`.

use crate::headers::{single, Single};
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
    let principal = match single(headers, XFCC_HEADER) {
        Single::Absent => None,
        Single::Duplicated => return Err(AmbiguousIdentity),
        Single::One(value) => last_element_uri(value)?,
    };
    Ok(Identity {
        principal,
        via: peer,
    })
}

/// The `URI` field of the last element of an XFCC value. Err when the value does not parse or
/// that element has several `URI` fields.
pub fn last_element_uri(value: &[u8]) -> Result<Option<String>, AmbiguousIdentity> {
    let text = std::str::from_utf8(value).map_err(|_| AmbiguousIdentity)?;
    let fields = last_element(text).ok_or(AmbiguousIdentity)?;
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
fn last_element(text: &str) -> Option<Vec<(String, String)>> {
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
            None => return Some(fields),
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
        let ok = |v: &str| last_element_uri(v.as_bytes());
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
        assert_eq!(last_element_uri(b"URI=\xff"), Err(AmbiguousIdentity));
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
