//! What clients are told: `retry-after`, the IETF RateLimit fields and the legacy trio.
//!
//! The fields follow draft-ietf-httpapi-ratelimit-headers (-09/-10): both are Structured Field
//! Lists whose members are the policy name as a String with parameters.
//!
//! ```text
//! RateLimit-Policy: "orders-per-client";q=100;w=60
//! RateLimit: "orders-per-client";r=0;t=17
//! ```
//!
//! `q` is the rule's `limit` and `w` its period in seconds; `r` the whole tokens left after
//! this request; `t` the seconds until the request would pass (on a 429) or until the bucket
//! is full again (on a response that passed).

use std::fmt::Write;

use serde::Serialize;

use super::bucket::Limits;

/// One rule's state as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub rule: String,
    pub limits: Limits,
    pub remaining: u64,
    pub reset_s: u64,
}

/// `RateLimit-Policy` value for the reports, in order.
pub fn policy_field(reports: &[Report]) -> String {
    let mut out = String::new();
    for (i, r) in reports.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(
            out,
            "{sep}\"{}\";q={};w={}",
            r.rule, r.limits.limit, r.limits.period_s
        );
    }
    out
}

/// `RateLimit` value for the reports, in order.
pub fn ratelimit_field(reports: &[Report]) -> String {
    let mut out = String::new();
    for (i, r) in reports.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}\"{}\";r={};t={}", r.rule, r.remaining, r.reset_s);
    }
    out
}

/// The response headers for `reports`; the legacy trio describes the first report (the one that
/// refused, or the one closest to refusing).
pub fn fields(reports: &[Report], ietf: bool, legacy: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if reports.is_empty() {
        return out;
    }
    if ietf {
        out.push(("ratelimit-policy", policy_field(reports)));
        out.push(("ratelimit", ratelimit_field(reports)));
    }
    if let (true, Some(first)) = (legacy, reports.first()) {
        out.push(("x-ratelimit-limit", first.limits.limit.to_string()));
        out.push(("x-ratelimit-remaining", first.remaining.to_string()));
        out.push(("x-ratelimit-reset", first.reset_s.to_string()));
    }
    out
}

#[derive(Serialize)]
struct LimitedBody<'a> {
    error: &'a str,
    rule: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_id: Option<&'a str>,
}

/// `{"error":"rate_limited","rule":"<name>","retry_after":<s>}` (plus the audit id when the
/// audit filter runs, so callers can quote it).
pub fn limited_body(rule: &str, retry_after: u64, audit_id: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&LimitedBody {
        error: "rate_limited",
        rule,
        retry_after: Some(retry_after),
        audit_id,
    })
    .unwrap_or_default()
}

/// `{"error":"rate_limit_key_missing","rule":"<name>"}` for a rule that refuses requests it
/// cannot identify.
pub fn key_missing_body(rule: &str, audit_id: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&LimitedBody {
        error: "rate_limit_key_missing",
        rule,
        retry_after: None,
        audit_id,
    })
    .unwrap_or_default()
}

/// `{"error":"rate_limit_service_unavailable","rule":"<name>","retry_after":<s>}` when a global
/// rule's service gave no verdict and the rule fails closed.
pub fn unavailable_body(rule: &str, retry_after: u64, audit_id: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&LimitedBody {
        error: "rate_limit_service_unavailable",
        rule,
        retry_after: Some(retry_after),
        audit_id,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rule: &str, limit: u64, period_s: u64, remaining: u64, reset_s: u64) -> Report {
        Report {
            rule: rule.into(),
            limits: Limits {
                limit,
                period_s,
                burst: 0,
            },
            remaining,
            reset_s,
        }
    }

    #[test]
    fn fields_are_structured_field_lists() {
        let rs = [
            report("orders", 100, 60, 42, 17),
            report("burst-1", 10, 1, 3, 1),
        ];
        assert_eq!(
            policy_field(&rs),
            "\"orders\";q=100;w=60, \"burst-1\";q=10;w=1"
        );
        assert_eq!(
            ratelimit_field(&rs),
            "\"orders\";r=42;t=17, \"burst-1\";r=3;t=1"
        );
        let all = fields(&rs, true, true);
        assert_eq!(
            all.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [
                "ratelimit-policy",
                "ratelimit",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset"
            ]
        );
        assert_eq!(all[2].1, "100");
        assert_eq!(all[3].1, "42");
        assert_eq!(all[4].1, "17");
        assert!(fields(&rs, false, false).is_empty());
        assert!(fields(&[], true, true).is_empty());
        assert_eq!(fields(&rs, false, true).len(), 3);
    }

    #[test]
    fn bodies_are_json() {
        assert_eq!(
            limited_body("orders", 17, None),
            br#"{"error":"rate_limited","rule":"orders","retry_after":17}"#
        );
        assert_eq!(
            limited_body("orders", 1, Some("a-b")),
            br#"{"error":"rate_limited","rule":"orders","retry_after":1,"audit_id":"a-b"}"#
        );
        assert_eq!(
            key_missing_body("orders", None),
            br#"{"error":"rate_limit_key_missing","rule":"orders"}"#
        );
    }
}
