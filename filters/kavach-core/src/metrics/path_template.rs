//! Templated paths: `/users/8812/orders?page=2` becomes `/users/:id/orders`.
//!
//! A raw path is the classic cardinality bomb: every id, token or trace id in it is a new
//! series. The path label is therefore never the raw path:
//! 1. The query string and fragment are dropped, always.
//! 2. Configured templates are tried first, in order (`/users/{id}/orders`): a `{name}` segment
//!    matches any one non-empty segment and is shown as `:name`.
//! 3. Otherwise every segment that looks like an identifier becomes `:id` (see
//!    [`is_identifier`]); the other segments stay, with characters outside `A-Z a-z 0-9 _ -`
//!    replaced by `_`. So `:` appears in a path label only as a placeholder.
//!
//! The result is still bounded by the metric's series budget; templating only makes the budget
//! go to useful series.

use crate::config::{ConfigError, FieldPath};
use crate::text::is_uuid;

use super::label::{self, INVALID, TOO_LONG};

/// Most segments in a template or in a path that gets a label of its own.
pub const MAX_SEGMENTS: usize = 32;
/// Longest raw path (without the query) that is templated; longer ones are `(too_long)`.
pub const MAX_RAW_PATH_BYTES: usize = 8192;
/// Longest parameter name in a template.
const MAX_PARAM_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// A validated path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    /// The label value of every path it matches (`/users/:id/orders`).
    rendered: String,
}

impl Template {
    /// Parses `/users/{id}/orders`; the error names `at` and the reason.
    pub fn parse(at: &FieldPath, text: &str) -> Result<Template, ConfigError> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(at.error(format!("{text:?} must start with '/'")));
        };
        if text.contains(['?', '#']) {
            return Err(at.error(format!(
                "{text:?} must not contain a query or fragment (they never reach a label)"
            )));
        }
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() > MAX_SEGMENTS {
            return Err(at.error(format!("{text:?} has more than {MAX_SEGMENTS} segments")));
        }
        let mut segments = Vec::with_capacity(parts.len());
        let mut rendered = String::with_capacity(text.len());
        for part in parts {
            rendered.push('/');
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if !is_param_name(name) {
                    return Err(at.error(format!(
                        "{{{name}}} in {text:?}: a parameter name is 1 to {MAX_PARAM_BYTES} of a-z, 0-9 and _, starting with a letter or _"
                    )));
                }
                segments.push(Segment::Param);
                rendered.push(':');
                rendered.push_str(name);
            } else if part.contains(['{', '}']) {
                return Err(at.error(format!(
                    "{part:?} in {text:?}: a parameter must be a whole segment, like {{id}}"
                )));
            } else {
                segments.push(Segment::Literal(part.to_string()));
                push_literal(&mut rendered, part);
            }
        }
        label::defuse_builtin_tags(&mut rendered);
        Ok(Template { segments, rendered })
    }

    /// The label value of the paths this template matches.
    pub fn rendered(&self) -> &str {
        &self.rendered
    }

    fn matches(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self.segments.iter().zip(segments).all(|(t, s)| match t {
                Segment::Literal(l) => l == s,
                Segment::Param => !s.is_empty(),
            })
    }
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_PARAM_BYTES
}

/// Appends a literal segment with every character outside `A-Z a-z 0-9 _ -` as `_`.
fn push_literal(out: &mut String, segment: &str) {
    out.extend(segment.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '_'
        }
    }));
}

/// The path label for a raw `:path` (query and fragment included, any bytes).
pub fn path_label(raw: &[u8], templates: &[Template], max_bytes: usize) -> String {
    let end = raw
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(raw.len());
    let path = &raw[..end];
    if path.is_empty() {
        return label::EMPTY.into();
    }
    if path.len() > MAX_RAW_PATH_BYTES {
        return TOO_LONG.into();
    }
    let Ok(text) = std::str::from_utf8(path) else {
        return INVALID.into();
    };
    let Some(rest) = text.strip_prefix('/') else {
        // `*` (OPTIONS) or anything else that is not an origin-form path.
        return label::label_value(path, max_bytes);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() > MAX_SEGMENTS {
        return TOO_LONG.into();
    }
    let mut out = match templates.iter().find(|t| t.matches(&segments)) {
        Some(t) => t.rendered.clone(),
        None => {
            let mut out = String::with_capacity(text.len());
            for s in &segments {
                out.push('/');
                if is_identifier(s) {
                    out.push_str(":id");
                } else {
                    push_literal(&mut out, s);
                }
            }
            out
        }
    };
    label::defuse_builtin_tags(&mut out);
    if out.len() > max_bytes {
        return TOO_LONG.into();
    }
    out
}

/// Whether a path segment is data rather than part of the route: numbers, UUIDs, long hex
/// strings (hashes, trace ids), e-mail addresses, and tokens (base64 and friends). Words,
/// versions (`v1`, `v2.1`), kebab- and snake-case names and camelCase names stay.
pub fn is_identifier(segment: &str) -> bool {
    let b = segment.as_bytes();
    let n = b.len();
    if n == 0 {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == n || is_uuid(b) || segment.contains('@') {
        return true;
    }
    if n >= 16 && b.iter().all(u8::is_ascii_hexdigit) {
        return true;
    }
    // Order numbers, dates, phone numbers, base32/base36 tokens: several digits in a longer
    // segment (`ORD20240101`, `2024-01-15`, `+919876543210`).
    if n >= 8 && digits >= 3 {
        return true;
    }
    if n >= 64 {
        return true;
    }
    // Random mixed-case tokens change character class (upper, lower, digit) at most
    // characters; words and camelCase names rarely do (`getAccountBalance`: 4 of 16).
    n >= 16 && class_change_ratio(b) >= 0.4
}

/// Share of neighbouring letter/digit pairs whose class (upper, lower, digit) differs;
/// other characters are skipped.
fn class_change_ratio(b: &[u8]) -> f64 {
    let class = |c: u8| {
        if c.is_ascii_uppercase() {
            Some(0u8)
        } else if c.is_ascii_lowercase() {
            Some(1)
        } else if c.is_ascii_digit() {
            Some(2)
        } else {
            None
        }
    };
    let classes: Vec<u8> = b.iter().filter_map(|c| class(*c)).collect();
    if classes.len() < 2 {
        return 0.0;
    }
    let changes = classes.windows(2).filter(|w| w[0] != w[1]).count();
    changes as f64 / (classes.len() - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(list: &[&str]) -> Vec<Template> {
        list.iter()
            .enumerate()
            .map(|(i, t)| Template::parse(&FieldPath::root().index(i), t).unwrap())
            .collect()
    }

    fn label(raw: &str) -> String {
        path_label(raw.as_bytes(), &[], 128)
    }

    #[test]
    fn identifiers_become_placeholders() {
        let cases = [
            ("/users/42", "/users/:id"),
            ("/users/0/orders/7", "/users/:id/orders/:id"),
            (
                "/payments/3f0b7a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
                "/payments/:id",
            ),
            (
                "/payments/3F0B7A8E-1C2D-4E5F-8A9B-0C1D2E3F4A5B/refund",
                "/payments/:id/refund",
            ),
            ("/traces/4bf92f3577b34da6a3ce929d0e0e4736", "/traces/:id"),
            (
                "/files/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "/files/:id",
            ),
            ("/tokens/eyJhbGciOiJIUzI1NiJ9", "/tokens/:id"),
            ("/sessions/Xk9fQ2mZpaLwTbaR", "/sessions/:id"),
            ("/orders/ORD20240101", "/orders/:id"),
            ("/reports/2024-01-15", "/reports/:id"),
            ("/vpa/+919876543210", "/vpa/:id"),
            ("/customers/priya.k@bank.example", "/customers/:id"),
            ("/otp/mfrggzdfmztwq2lknnwg23tp", "/otp/:id"),
            ("/blob/", "/blob/"),
        ];
        for (raw, want) in cases {
            assert_eq!(label(raw), want, "{raw}");
        }
        let long = format!("/x/{}", "a".repeat(64));
        assert_eq!(label(&long), "/x/:id");
    }

    #[test]
    fn near_misses_stay_literal() {
        for raw in [
            "/",
            "/v1",
            "/v2/health",
            "/health",
            "/api/v2/users",
            "/oauth2/token",
            "/sdk/v1_2_3",
            "/getAccountBalance",
            "/getAccountBalanceForCustomer",
            "/customer-accounts-summary",
            "/deadbeef",
            "/cafe/feed",
            "/i18n/en",
            "/x509",
            "/ipv4-addresses",
            "/sha256",
            "/UPI/collect",
            "/a/b/",
            "/a//b",
        ] {
            assert_eq!(label(raw), raw, "{raw}");
        }
        assert_eq!(label("/v2.1/app.min.js"), "/v2_1/app_min_js");
        assert_eq!(
            label("/.well-known/openid-configuration"),
            "/_well-known/openid-configuration"
        );
    }

    #[test]
    fn the_query_and_fragment_never_reach_the_label() {
        assert_eq!(label("/accounts?card=4111111111111111"), "/accounts");
        assert_eq!(label("/accounts/42?x=1#frag"), "/accounts/:id");
        assert_eq!(label("/a#?b"), "/a");
        assert_eq!(label("?only=query"), label::EMPTY);
    }

    #[test]
    fn configured_templates_win_in_order() {
        let t = templates(&[
            "/users/{user_id}/orders",
            "/users/{user_id}/{section}",
            "/v1/cards/{card}",
        ]);
        let l = |raw: &str| path_label(raw.as_bytes(), &t, 128);
        assert_eq!(l("/users/alice/orders?page=2"), "/users/:user_id/orders");
        assert_eq!(l("/users/alice/profile"), "/users/:user_id/:section");
        assert_eq!(l("/v1/cards/4111111111111111"), "/v1/cards/:card");
        // No template: the automatic rules apply.
        assert_eq!(l("/users/42"), "/users/:id");
        assert_eq!(l("/users/alice"), "/users/alice");
        // A parameter never matches an empty segment.
        assert_eq!(l("/users//orders"), "/users//orders");
    }

    #[test]
    fn hostile_paths_are_bounded_and_safe() {
        assert_eq!(
            label("/a b/\"q\"/{x}/c:d/%2e%2e"),
            "/a_b/_q_/_x_/c_d/_2e_2e"
        );
        assert_eq!(path_label(b"/ok/\xff", &[], 128), INVALID);
        assert_eq!(
            path_label(b"/ok?\xff", &[], 128),
            "/ok",
            "bad bytes in the query are dropped"
        );
        assert_eq!(path_label(b"", &[], 128), label::EMPTY);
        assert_eq!(label("*"), "_");
        let deep = "/a".repeat(MAX_SEGMENTS + 1);
        assert_eq!(label(&deep), TOO_LONG);
        assert_eq!(label(&"/a".repeat(MAX_SEGMENTS)), "/a".repeat(MAX_SEGMENTS));
        let huge = format!("/{}", "x".repeat(MAX_RAW_PATH_BYTES));
        assert_eq!(label(&huge), TOO_LONG);
        assert_eq!(path_label(b"/abcdefgh/ijklmnop", &[], 10), TOO_LONG);
        assert_eq!(label("/status_rq_5xx"), "/status_rq-5xx");
        assert_eq!(label("/status_rq_200"), "/:id");
    }

    #[test]
    fn template_errors_name_the_entry_and_the_reason() {
        let err = |t: &str| {
            Template::parse(&FieldPath::root().field("path_templates").index(1), t)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("users/{id}"),
            "path_templates[1]: \"users/{id}\" must start with '/'"
        );
        assert_eq!(
            err("/users/{Id}"),
            "path_templates[1]: {Id} in \"/users/{Id}\": a parameter name is 1 to 32 of a-z, 0-9 and _, starting with a letter or _"
        );
        assert_eq!(
            err("/users/v{n}"),
            "path_templates[1]: \"v{n}\" in \"/users/v{n}\": a parameter must be a whole segment, like {id}"
        );
        assert_eq!(
            err("/a?b=1"),
            "path_templates[1]: \"/a?b=1\" must not contain a query or fragment (they never reach a label)"
        );
        assert!(err(&"/a".repeat(33)).ends_with("has more than 32 segments"));
        assert_eq!(
            Template::parse(&FieldPath::root(), "/a.b/{id}")
                .unwrap()
                .rendered(),
            "/a_b/:id"
        );
    }
}
