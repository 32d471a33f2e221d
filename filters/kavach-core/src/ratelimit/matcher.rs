//! Which requests a rule applies to: route names, path globs and methods.
//!
//! Paths are compared in a canonical form, so that `/v1//orders/./1`, `/v1/%6Frders/1` and
//! `/v1/orders/1?x` all meet a rule written for `/v1/orders/*`: a client must not escape a
//! limit by spelling a path differently from how the service will read it.

pub use crate::path_glob::PathPattern;
use crate::text::{hex_value, is_unreserved};

/// The path of a request target in canonical form: query and fragment dropped, percent-encoded
/// unreserved characters decoded (`%6F` is `o`), other escapes kept with upper-case hex (`%2f`
/// stays an escaped slash, `%2F`), repeated slashes merged, `.` and `..` segments resolved (never
/// above the root). Invalid UTF-8 never panics: bytes are handled as bytes.
pub fn canonical_path(raw: &str) -> String {
    let end = raw.find(['?', '#']).unwrap_or(raw.len());
    let bytes = raw.as_bytes().get(..end).unwrap_or_default();
    // Most paths are canonical already: no escapes, no empty or dot segments.
    let segments = bytes.split(|b| *b == b'/').skip(1);
    let last = segments.clone().count().saturating_sub(1);
    let canonical = bytes.first() == Some(&b'/')
        && !bytes.contains(&b'%')
        && segments
            .enumerate()
            .all(|(i, seg)| !matches!(seg, b"." | b"..") && (!seg.is_empty() || i == last));
    if canonical {
        return raw.get(..end).unwrap_or_default().to_string();
    }
    canonical_slow(bytes)
}

/// [`canonical_path`] of a path (query and fragment already cut) the long way.
fn canonical_slow(bytes: &[u8]) -> String {
    // Decode unreserved escapes, normalise the hex case of the others.
    let mut decoded: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or_default();
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                let c = hi * 16 + lo;
                if is_unreserved(c) {
                    decoded.push(c);
                } else {
                    decoded.extend_from_slice(format!("%{c:02X}").as_bytes());
                }
                i += 3;
                continue;
            }
        }
        decoded.push(b);
        i += 1;
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = Vec::with_capacity(decoded.len() + 1);
    for seg in &out {
        path.push(b'/');
        path.extend_from_slice(seg);
    }
    if path.is_empty() || (decoded.ends_with(b"/") && !out.is_empty()) {
        path.push(b'/');
    }
    String::from_utf8(path).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A rule's match: every given condition must hold; an empty list means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matcher {
    pub routes: Vec<String>,
    pub paths: Vec<PathPattern>,
    pub methods: Vec<String>,
}

impl Matcher {
    /// `path` is canonical; `route` is looked up only when the matcher needs it.
    pub fn matches(
        &self,
        method: &str,
        path: &str,
        route: &mut dyn FnMut() -> Option<String>,
    ) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return false;
        }
        if !self.paths.is_empty() && !self.paths.iter().any(|g| g.matches(path)) {
            return false;
        }
        if !self.routes.is_empty() {
            let Some(r) = route() else {
                return false;
            };
            if !self.routes.contains(&r) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FieldPath;

    #[test]
    fn the_short_way_and_the_long_way_agree_on_every_path() {
        // Every path of up to four segments drawn from ordinary, empty, dot and escaped ones,
        // with and without a trailing slash, a query or a fragment.
        let parts = ["a", "", ".", "..", "b.c", "%41", "%2e", "~x"];
        let mut paths = vec![String::new(), "/".to_string(), "a".to_string()];
        for n in 1..=4u32 {
            for k in 0..parts.len().pow(n) {
                let mut p = String::new();
                let mut k = k;
                for _ in 0..n {
                    p.push('/');
                    p.push_str(parts[k % parts.len()]);
                    k /= parts.len();
                }
                for tail in ["", "/", "?q=1", "#f"] {
                    paths.push(format!("{p}{tail}"));
                }
            }
        }
        for p in &paths {
            let end = p.find(['?', '#']).unwrap_or(p.len());
            assert_eq!(
                canonical_path(p),
                canonical_slow(&p.as_bytes()[..end]),
                "{p:?}"
            );
        }
    }

    fn glob(s: &str) -> PathPattern {
        PathPattern::parse(&FieldPath::root().field("paths").index(0), s).unwrap()
    }

    fn glob_err(s: &str) -> String {
        PathPattern::parse(&FieldPath::root().field("paths").index(0), s)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn paths_are_canonicalised_before_matching() {
        assert_eq!(canonical_path("/v1//orders/./1?x=1#f"), "/v1/orders/1");
        assert_eq!(canonical_path("/v1/%6Frders/%31"), "/v1/orders/1");
        assert_eq!(canonical_path("/v1/a%2fb"), "/v1/a%2Fb");
        assert_eq!(canonical_path("/v1/x/../../../orders"), "/orders");
        assert_eq!(canonical_path("/v1/orders/"), "/v1/orders/");
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path("/.."), "/");
        assert_eq!(canonical_path("/%zz/%4"), "/%zz/%4");
        assert_eq!(canonical_path("/caf\u{e9}"), "/caf\u{e9}");
    }

    #[test]
    fn globs_match_whole_segments() {
        let g = glob("/v1/orders/*");
        assert!(g.matches("/v1/orders/1"));
        assert!(!g.matches("/v1/orders"));
        assert!(!g.matches("/v1/orders/1/items"));
        assert!(!g.matches("/v1/ordersx/1"));
        let g = glob("/v1/**");
        assert!(g.matches("/v1"));
        assert!(g.matches("/v1/"));
        assert!(g.matches("/v1/a/b/c"));
        assert!(!g.matches("/v2/a"));
        assert!(glob("/**").matches("/"));
        assert!(glob("/**").matches("/anything/at/all"));
        assert!(glob("/").matches("/"));
        assert!(!glob("/").matches("/a"));
    }

    #[test]
    fn evasive_spellings_still_match() {
        let g = glob("/v1/orders/*");
        for p in [
            "/v1//orders/1",
            "/v1/./orders/1",
            "/v1/%6frders/1",
            "/v1/x/../orders/1?a=b",
        ] {
            assert!(g.matches(&canonical_path(p)), "{p}");
        }
    }

    #[test]
    fn bad_globs_are_refused_with_the_reason() {
        assert_eq!(
            glob_err("/v1/**/x"),
            "paths[0]: \"**\" may only be the last segment"
        );
        assert_eq!(glob_err("v1/*"), "paths[0]: \"v1/*\" must start with \"/\"");
        assert_eq!(
            glob_err("/v1/ord*"),
            "paths[0]: \"/v1/ord*\": \"*\" and \"**\" must be a whole segment (no other wildcards)"
        );
        assert_eq!(
            glob_err("/v1//x"),
            "paths[0]: \"/v1//x\" is not in canonical form; write \"/v1/x\""
        );
        assert_eq!(
            glob_err("/v1/%6Frders"),
            "paths[0]: \"/v1/%6Frders\" is not in canonical form; write \"/v1/orders\""
        );
    }

    #[test]
    fn a_star_is_one_non_empty_segment() {
        assert!(!glob("/v1/orders/*").matches("/v1/orders/"));
    }

    #[test]
    fn all_conditions_must_hold_and_routes_are_looked_up_lazily() {
        let m = Matcher {
            routes: vec!["orders".into()],
            paths: vec![glob("/v1/**")],
            methods: vec!["POST".into()],
        };
        let mut looked = 0;
        let mut route = || {
            looked += 1;
            Some("orders".to_string())
        };
        assert!(m.matches("POST", "/v1/x", &mut route));
        assert!(!m.matches("GET", "/v1/x", &mut route));
        assert!(!m.matches("POST", "/v2/x", &mut route));
        assert_eq!(looked, 1);
        assert!(!m.matches("POST", "/v1/x", &mut || None));
        assert!(!m.matches("POST", "/v1/x", &mut || Some("other".into())));
        assert!(Matcher::default().matches("GET", "/", &mut || None));
    }
}
