//! The decision for one request: a pure function of the policy, the request headers, the
//! verified peer and the clock.
//!
//! Checks run in this order, the first failure being the reason:
//! 1. `:method` and `:path` present exactly once (`malformed_request`);
//! 2. the path has a canonical form (`ambiguous_path:<kind>`);
//! 3. the identity is unambiguous (`ambiguous_identity`, XFCC behind a trusted proxy only);
//! 4. no header a decision reads appears twice or in another spelling (`duplicate_header`);
//! 5. the rules, in order: the first rule whose every condition holds allows the request.
//!    A method-override header disqualifies every rule without `allow_method_override`
//!    (`method_override`); a rule with `require_token` needs a valid token (`token_*` when
//!    that was the only thing missing); otherwise `no_rule_matched`.
//!
//! A principal outside the policy's trust domain matches no rule at all, not even one without
//! a principal condition.

use std::fmt;

use hashbrown::HashSet;

use super::config::{PciConfig, Rule};
use super::identity::resolve;
use super::matcher::in_trust_domain;
use super::token::{verify_token, TokenError};
use crate::headers::{alias_eq, single, Single};
use crate::host::Headers;
use crate::path_canon::{canonicalize, PathError};

/// Headers that ask a server to treat the request as another method (in alias form).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Why a request is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// `:method` or `:path` absent, empty or duplicated.
    MalformedRequest,
    /// The path has no canonical form; answered with 400.
    AmbiguousPath(PathError),
    /// XFCC from a trusted proxy is duplicated or unparsable.
    AmbiguousIdentity,
    /// A header some decision reads is duplicated or sent in another spelling.
    DuplicateHeader,
    /// A method-override header, and no rule that allows it matched.
    MethodOverride,
    /// A rule matched except for its token.
    Token(TokenError),
    NoRuleMatched,
}

impl DenyReason {
    /// Every value of [`DenyReason::kind`]: the deny counters are defined for these.
    pub const KINDS: [&'static str; 11] = [
        "malformed_request",
        "ambiguous_path",
        "ambiguous_identity",
        "duplicate_header",
        "method_override",
        "token_missing",
        "token_malformed",
        "token_expired",
        "token_bad_signature",
        "token_ttl_too_long",
        "no_rule_matched",
    ];

    /// The reason without detail (`ambiguous_path`, not `ambiguous_path:fragment`).
    pub fn kind(self) -> &'static str {
        match self {
            DenyReason::MalformedRequest => "malformed_request",
            DenyReason::AmbiguousPath(_) => "ambiguous_path",
            DenyReason::AmbiguousIdentity => "ambiguous_identity",
            DenyReason::DuplicateHeader => "duplicate_header",
            DenyReason::MethodOverride => "method_override",
            DenyReason::Token(t) => t.kind(),
            DenyReason::NoRuleMatched => "no_rule_matched",
        }
    }

    /// Whether the request is refused as malformed (400) rather than unauthorized.
    pub fn is_bad_request(self) -> bool {
        matches!(self, DenyReason::AmbiguousPath(_))
    }
}

impl fmt::Display for DenyReason {
    /// The reason as published in the decision: `ambiguous_path:encoded_slash`, `token_expired`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::AmbiguousPath(e) => write!(f, "ambiguous_path:{}", e.kind()),
            other => f.write_str(other.kind()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by `rules[rule]`.
    Allow {
        rule: usize,
    },
    Deny(DenyReason),
}

/// The verdict and the facts it was based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The principal the request was judged as (even one outside the trust domain).
    pub principal: Option<String>,
    /// The trusted proxy whose XFCC header named the principal.
    pub via: Option<String>,
    /// The canonical path, when there is one.
    pub path: Option<String>,
    pub verdict: Verdict,
}

impl Evaluation {
    fn deny(mut self, reason: DenyReason) -> Self {
        self.verdict = Verdict::Deny(reason);
        self
    }
}

/// Judges one request. `peer` is the verified mTLS peer's URI SAN; `now_unix_nanos` the host
/// clock.
pub fn evaluate(
    cfg: &PciConfig,
    headers: &Headers,
    peer: Option<String>,
    now_unix_nanos: i64,
) -> Evaluation {
    let identity = resolve(peer.clone(), headers, cfg.xfcc.as_ref());
    let (principal, via) = match &identity {
        Ok(id) => (id.principal.clone(), id.via.clone()),
        // Only a trusted proxy's XFCC can be ambiguous: record the proxy.
        Err(_) => (None, peer),
    };
    let ev = Evaluation {
        principal,
        via,
        path: None,
        verdict: Verdict::Deny(DenyReason::NoRuleMatched),
    };

    let (Single::One(method), Single::One(raw_path)) =
        (single(headers, ":method"), single(headers, ":path"))
    else {
        return ev.deny(DenyReason::MalformedRequest);
    };
    if method.is_empty() {
        return ev.deny(DenyReason::MalformedRequest);
    }
    let path = match canonicalize(raw_path, cfg.dot_segments) {
        Ok(p) => p,
        Err(e) => return ev.deny(DenyReason::AmbiguousPath(e)),
    };
    let mut ev = Evaluation {
        path: Some(path),
        ..ev
    };
    if identity.is_err() {
        return ev.deny(DenyReason::AmbiguousIdentity);
    }
    if has_ambiguous_header(cfg, headers) {
        return ev.deny(DenyReason::DuplicateHeader);
    }
    let principal = match ev.principal.as_deref() {
        Some(p) if !in_trust_domain(p, &cfg.trust_domain) => {
            return ev.deny(DenyReason::NoRuleMatched)
        }
        p => p,
    };
    let overridden = headers
        .iter()
        .any(|(n, _)| METHOD_OVERRIDE_HEADERS.iter().any(|o| alias_eq(n, o)));
    let path = ev.path.as_deref().unwrap_or_default();

    let mut token: Option<Result<(), TokenError>> = None;
    let mut token_failure = None;
    let mut allowed = None;
    for (i, rule) in cfg.rules.iter().enumerate() {
        if !conditions_hold(rule, principal, method, path, headers, now_unix_nanos) {
            continue;
        }
        if overridden && !rule.allow_method_override {
            continue;
        }
        if rule.require_token {
            let checked =
                *token.get_or_insert_with(|| check_token(cfg, headers, principal, now_unix_nanos));
            if let Err(e) = checked {
                token_failure.get_or_insert(e);
                continue;
            }
        }
        allowed = Some(i);
        break;
    }
    ev.verdict = match (allowed, token_failure) {
        (Some(rule), _) => Verdict::Allow { rule },
        (None, _) if overridden => Verdict::Deny(DenyReason::MethodOverride),
        (None, Some(e)) => Verdict::Deny(DenyReason::Token(e)),
        (None, None) => Verdict::Deny(DenyReason::NoRuleMatched),
    };
    ev
}

/// Every condition of `rule` except its token and the method-override permission.
fn conditions_hold(
    rule: &Rule,
    principal: Option<&str>,
    method: &[u8],
    path: &str,
    headers: &Headers,
    now_unix_nanos: i64,
) -> bool {
    rule.window.contains(now_unix_nanos)
        && rule
            .principals
            .as_ref()
            .is_none_or(|ps| principal.is_some_and(|p| ps.iter().any(|pattern| pattern.matches(p))))
        && rule
            .methods
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|m| m.as_bytes() == method))
        && rule
            .paths
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|pattern| pattern.matches(path)))
        && rule
            .headers
            .iter()
            .all(|h| h.matches(single(headers, &h.name)))
}

fn check_token(
    cfg: &PciConfig,
    headers: &Headers,
    principal: Option<&str>,
    now_unix_nanos: i64,
) -> Result<(), TokenError> {
    let Some(t) = &cfg.token else {
        // Validation refuses `require_token` without a token section.
        return Err(TokenError::Missing);
    };
    let value = match single(headers, &t.header) {
        Single::Absent => return Err(TokenError::Missing),
        // Already refused as duplicate_header; never pick one.
        Single::Duplicated => return Err(TokenError::Malformed),
        Single::One(v) => v,
    };
    let now = u64::try_from(now_unix_nanos / 1_000_000_000).unwrap_or(0);
    verify_token(&t.key, value, principal, now, t.max_ttl_seconds).map(|_| ())
}

/// Whether a header some decision reads appears more than once (in any spelling), or in a
/// spelling other than the configured one (`x_tenant` for `x-tenant`).
fn has_ambiguous_header(cfg: &PciConfig, headers: &Headers) -> bool {
    if cfg.decision_headers.is_empty() {
        return false;
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for (name, _) in headers {
        // A handful of configured headers: a scan without building the alias form.
        let found = cfg
            .decision_headers
            .iter()
            .find(|(alias, _)| alias_eq(name, alias));
        if let Some((_, configured)) = found {
            if !name.eq_ignore_ascii_case(configured) || !seen.insert(configured.as_str()) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
