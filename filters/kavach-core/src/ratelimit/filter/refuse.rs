//! Refusals: why a rule refuses, the reply the client gets and the decision that records it.

use super::*;

/// Why a rule refuses (or, in shadow mode, would refuse) the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Limited {
        remaining: u64,
        wait_ns: u64,
    },
    TableFull,
    CasExhausted,
    StoreError,
    KeyMissing(Missing),
    /// A global rule whose service failed, under `failure_mode: deny`.
    ServiceUnavailable,
}

impl Refusal {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Refusal::Limited { .. } => "limited",
            Refusal::TableFull => "table_full",
            Refusal::CasExhausted => "cas_exhausted",
            Refusal::StoreError => "store_error",
            Refusal::KeyMissing(_) => "key_missing",
            Refusal::ServiceUnavailable => "service_unavailable",
        }
    }

    pub(super) fn retry_after_s(self) -> u64 {
        match self {
            Refusal::Limited { wait_ns, .. } => seconds_ceil(wait_ns).max(1),
            _ => RETRY_UNKNOWN_S,
        }
    }

    pub(super) fn remaining(self) -> u64 {
        match self {
            Refusal::Limited { remaining, .. } => remaining,
            _ => 0,
        }
    }
}

/// The limit that applied, for the decision record.
pub(super) fn limit_detail(
    rule: &Rule,
    tier: usize,
    limits: Limits,
) -> Vec<(Cow<'static, str>, String)> {
    let mut d = vec![
        ("limit".into(), limits.limit.to_string()),
        ("period_s".into(), limits.period_s.to_string()),
    ];
    if limits.burst > 0 {
        d.push(("burst".into(), limits.burst.to_string()));
    }
    if rule.is_tiered() {
        if let Some(t) = rule.tiers.tiers.get(tier) {
            d.push(("tier".into(), t.name.clone()));
        }
    }
    if rule.global {
        d.push(("scope".into(), "global".into()));
    }
    d
}

pub(super) fn decision(
    rule: &Rule,
    tier: usize,
    limits: Limits,
    outcome: DecisionOutcome,
    refusal: Refusal,
) -> Decision {
    let mut d = Decision::new(RateLimitFactory::NAME, outcome);
    d.rule = Some(rule.name.clone());
    d.reason = Some(refusal.reason().into());
    d.detail = limit_detail(rule, tier, limits);
    match refusal {
        Refusal::KeyMissing(m) => d.detail.push(("key".into(), m.as_str().into())),
        _ => d
            .detail
            .push(("retry_after".into(), refusal.retry_after_s().to_string())),
    }
    d
}

impl RateLimitStream {
    pub(super) fn report(rule: &Rule, limits: Limits, remaining: u64, reset_s: u64) -> Report {
        Report {
            rule: rule.name.clone(),
            limits,
            remaining,
            reset_s,
        }
    }

    /// Sends the refusal: 400 for a request the rule cannot identify, 503 when the rate-limit
    /// service failed (`failure_mode: deny`), 429 otherwise.
    pub(super) fn refuse(
        &self,
        host: &dyn Host,
        rule: &Rule,
        limits: Limits,
        refusal: Refusal,
    ) -> Flow {
        let audit_id = host.audit_id();
        let json: &[u8] = b"application/json";
        if let Refusal::KeyMissing(_) = refusal {
            let body = key_missing_body(&rule.name, audit_id.as_deref());
            host.send_response(400, &[("content-type", json)], &body);
            return Flow::Stop;
        }
        let retry = refusal.retry_after_s();
        let retry_text = retry.to_string();
        if refusal == Refusal::ServiceUnavailable {
            let body = unavailable_body(&rule.name, retry, audit_id.as_deref());
            host.send_response(
                503,
                &[
                    ("content-type", json),
                    ("retry-after", retry_text.as_bytes()),
                ],
                &body,
            );
            return Flow::Stop;
        }
        let body = limited_body(&rule.name, retry, audit_id.as_deref());
        let h = &self.cfg().headers;
        let report = Self::report(rule, limits, refusal.remaining(), retry);
        let mut headers = vec![("retry-after", retry_text)];
        headers.extend(fields(&[report], h.ietf, h.legacy));
        let mut pairs: Vec<(&str, &[u8])> = vec![("content-type", json)];
        pairs.extend(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
        host.send_response(429, &pairs, &body);
        Flow::Stop
    }
}
