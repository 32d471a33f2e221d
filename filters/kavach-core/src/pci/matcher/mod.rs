//! The conditions of a rule, each validated at configuration time and matched per request:
//! principals, methods, path globs, header conditions and the validity window.
//!
//! Everything is compared literally: principals and paths are never turned into regular
//! expressions, and only header conditions that say `"regex"` use one.

use chrono::DateTime;
use regex::bytes::{Regex, RegexBuilder};

pub use crate::config::MAX_METHOD_BYTES;
use crate::config::{ConfigError, FieldPath};
use crate::headers::Single;
pub use crate::path_glob::{PathPattern, MAX_PATH_BYTES};

/// Longest SPIFFE ID (the SPIFFE specification caps URIs at 2048 bytes).
pub const MAX_PRINCIPAL_BYTES: usize = 2048;
/// Longest `exact` or `prefix` header value.
pub const MAX_HEADER_VALUE_BYTES: usize = 8192;
/// Longest regular expression source.
pub const MAX_REGEX_SOURCE_BYTES: usize = 4096;
/// Size limit of a compiled regular expression (and of its lazy DFA).
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Principals
// ---------------------------------------------------------------------------------------------

/// Checks a SPIFFE trust domain name: lower-case letters, digits, `.`, `-`, `_`.
pub fn trust_domain(at: &FieldPath, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(at.error("must not be empty"));
    }
    if name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(at.error(format!(
            "{name:?} is not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')"
        )));
    }
    Ok(name.to_string())
}

/// A principal condition: one SPIFFE ID, or every ID exactly one segment below a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalPattern {
    /// `spiffe://bank.local/ns/payments/sa/api`.
    Exact(String),
    /// `spiffe://bank.local/ns/cde/*`, stored as its prefix `spiffe://bank.local/ns/cde/`.
    OneSegmentBelow(String),
}

impl PrincipalPattern {
    /// Parses a principal of the policy, which must lie in `trust_domain`.
    pub fn parse(at: &FieldPath, text: &str, trust_domain: &str) -> Result<Self, ConfigError> {
        let prefix = format!("spiffe://{trust_domain}/");
        if text.len() > MAX_PRINCIPAL_BYTES {
            return Err(at.error(format!(
                "longer than {MAX_PRINCIPAL_BYTES} bytes ({} bytes)",
                text.len()
            )));
        }
        let Some(path) = text.strip_prefix(&prefix) else {
            return Err(at.error(format!(
                "{text:?} is outside the trust domain (must start with {prefix:?})"
            )));
        };
        let segments: Vec<&str> = path.split('/').collect();
        let last = segments.len().saturating_sub(1);
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                return Err(at.error(format!("{text:?} has an empty path segment")));
            }
            if segment.contains('*') {
                if *segment != "*" || i != last {
                    return Err(at.error(format!(
                        "{text:?}: \"*\" may only be the whole last segment"
                    )));
                }
                continue;
            }
            if !is_spiffe_segment(segment) {
                return Err(at.error(format!(
                    "{text:?}: segment {segment:?} is not a SPIFFE path segment (letters, digits, '.', '-', '_'; not \".\" or \"..\")"
                )));
            }
        }
        match text.strip_suffix('*') {
            Some(prefix) if text.ends_with("/*") => {
                Ok(PrincipalPattern::OneSegmentBelow(prefix.to_string()))
            }
            _ => Ok(PrincipalPattern::Exact(text.to_string())),
        }
    }

    pub fn is_pattern(&self) -> bool {
        matches!(self, PrincipalPattern::OneSegmentBelow(_))
    }

    pub fn matches(&self, principal: &str) -> bool {
        match self {
            PrincipalPattern::Exact(id) => principal == id,
            PrincipalPattern::OneSegmentBelow(prefix) => principal
                .strip_prefix(prefix.as_str())
                .is_some_and(is_spiffe_segment),
        }
    }
}

/// A non-empty SPIFFE path segment (`[A-Za-z0-9._-]+`, not `.` or `..`); never contains `/`.
fn is_spiffe_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether a principal presented by a request belongs to the trust domain at all.
pub fn in_trust_domain(principal: &str, trust_domain: &str) -> bool {
    principal
        .strip_prefix("spiffe://")
        .and_then(|rest| rest.strip_prefix(trust_domain))
        .is_some_and(|rest| rest.starts_with('/'))
}

// ---------------------------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------------------------

/// Checks a method name (an HTTP token). Matching is case-sensitive: `get` is not `GET`.
pub use crate::config::http_method as method;

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// What a header condition checks.
#[derive(Debug, Clone)]
pub enum HeaderTest {
    /// true: the header must be present; false: it must be absent.
    Present(bool),
    /// The value equals these bytes.
    Exact(Vec<u8>),
    /// The value starts with these bytes.
    Prefix(Vec<u8>),
    /// The value is valid UTF-8 and the expression finds a match in it (unanchored unless the
    /// expression says `^...$`). Classes and case folding are ASCII (`\d` is `[0-9]`).
    Regex(Regex),
}

/// One header condition of a rule.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    /// Lower-case header name.
    pub name: String,
    pub test: HeaderTest,
}

impl HeaderCondition {
    /// Whether the header's value (from [`crate::headers::single`]) passes. A duplicated header
    /// passes nothing.
    pub fn matches(&self, value: Single<'_>) -> bool {
        match (value, &self.test) {
            (Single::Duplicated, _) => false,
            (Single::Absent, HeaderTest::Present(want)) => !want,
            (Single::Absent, _) => false,
            (Single::One(_), HeaderTest::Present(want)) => *want,
            (Single::One(v), HeaderTest::Exact(e)) => v == e.as_slice(),
            (Single::One(v), HeaderTest::Prefix(p)) => v.starts_with(p),
            (Single::One(v), HeaderTest::Regex(r)) => {
                std::str::from_utf8(v).is_ok() && r.is_match(v)
            }
        }
    }
}

/// Compiles a header regex with bounded size.
pub fn header_regex(at: &FieldPath, source: &str) -> Result<Regex, ConfigError> {
    if source.is_empty() {
        return Err(at.error("must not be empty (use \"present\": true)"));
    }
    if source.len() > MAX_REGEX_SOURCE_BYTES {
        return Err(at.error(format!(
            "longer than {MAX_REGEX_SOURCE_BYTES} bytes ({} bytes)",
            source.len()
        )));
    }
    // ASCII semantics: header values are bytes, and it keeps Unicode tables out of the module.
    RegexBuilder::new(source)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let reason = e.to_string();
            // The parser's message spans several lines; keep the error on one.
            let reason: Vec<&str> = reason.split_whitespace().collect();
            at.error(format!("invalid regex: {}", reason.join(" ")))
        })
}

/// Checks an `exact` or `prefix` value.
pub fn header_value(
    at: &FieldPath,
    value: &str,
    allow_empty: bool,
) -> Result<Vec<u8>, ConfigError> {
    if value.is_empty() && !allow_empty {
        return Err(at.error("must not be empty (use \"present\": true)"));
    }
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(at.error(format!(
            "longer than {MAX_HEADER_VALUE_BYTES} bytes ({} bytes)",
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(at.error("contains a control character (no header value can match it)"));
    }
    Ok(value.as_bytes().to_vec())
}

// ---------------------------------------------------------------------------------------------
// Validity window
// ---------------------------------------------------------------------------------------------

/// When a rule applies: `not_before <= now < not_after`, both bounds optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Unix time in nanoseconds.
    pub not_before: Option<i64>,
    /// Unix time in nanoseconds.
    pub not_after: Option<i64>,
}

impl Window {
    pub fn contains(&self, now_unix_nanos: i64) -> bool {
        self.not_before.is_none_or(|nb| now_unix_nanos >= nb)
            && self.not_after.is_none_or(|na| now_unix_nanos < na)
    }
}

/// Parses an RFC 3339 timestamp into Unix nanoseconds.
pub fn instant(at: &FieldPath, text: &str) -> Result<i64, ConfigError> {
    let t = DateTime::parse_from_rfc3339(text).map_err(|e| {
        at.error(format!(
            "{text:?} is not an RFC 3339 timestamp like \"2026-11-01T00:00:00+05:30\" ({e})"
        ))
    })?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| at.error(format!("{text:?} is outside the years 1678 to 2261")))
}

#[cfg(test)]
mod tests;
