//! The decision contract: how every Kavach filter tells the audit filter (and access logs) what
//! it decided for a request.
//!
//! Each filter writes one JSON object as per-request filter state under
//! `kavach.decision.<filter>` (visible to access logs as
//! `%FILTER_STATE(wasm.kavach.decision.<filter>:PLAIN)%`). The audit filter reads every name in
//! [`FILTERS`] when the stream completes and puts the decisions into the audit record. A filter
//! that took no decision on a request writes nothing.
//!
//! The audit id of the request is published under [`AUDIT_ID_PROPERTY`] so that filters which
//! refuse a request can quote it in their response body.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::host::Host;

/// Prefix of the filter-state names decisions are published under.
pub const PROPERTY_PREFIX: &str = "kavach.decision.";

/// Filter-state name of the request's audit id.
pub const AUDIT_ID_PROPERTY: &str = "kavach.audit_id";

/// Every filter that publishes decisions, in chain order.
pub const FILTERS: &[&str] = &["residency", "pci_authz", "ratelimit"];

/// Longest decision the audit filter accepts from filter state; a longer one is recorded as
/// oversized instead of being copied into the record.
pub const MAX_DECISION_BYTES: usize = 2048;

/// What a filter did with the request.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Let through.
    Allow,
    /// Refused (the filter sent a local reply).
    Deny,
    /// Would have refused, but the filter runs in shadow / dry-run mode.
    ShadowDeny,
    /// Sent elsewhere (residency re-route).
    Reroute,
}

/// One filter's decision for one request.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Filter name, one of [`FILTERS`].
    pub filter: Cow<'static, str>,
    pub outcome: Outcome,
    /// The rule that matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why: a short machine-readable reason (`no_rule_matched`, `ambiguous_path`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Filter-specific facts (class, region, limit...), as ordered pairs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<(Cow<'static, str>, String)>,
}

impl Decision {
    pub fn new(filter: &'static str, outcome: Outcome) -> Self {
        Decision {
            filter: Cow::Borrowed(filter),
            outcome,
            rule: None,
            reason: None,
            policy_version: None,
            detail: Vec::new(),
        }
    }
}

/// The detail of a decision as plain string pairs (tests compare against literals).
#[cfg(test)]
pub fn detail_pairs(d: &Decision) -> Vec<(String, String)> {
    d.detail
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// Publishes `decision` for the current request to filter state, as JSON of at most
/// [`MAX_DECISION_BYTES`] (the audit filter refuses larger ones): detail values are shortened,
/// then dropped, until it fits.
pub fn publish(host: &dyn Host, decision: &Decision) {
    let Some(json) = fitted_json(decision) else {
        return;
    };
    let name = format!("{PROPERTY_PREFIX}{}", decision.filter);
    host.set_property(&[name.as_str()], &json);
}

/// Longest detail value after a decision had to be shortened to fit.
const FITTED_DETAIL_BYTES: usize = 64;

fn fitted_json(decision: &Decision) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(decision).ok()?;
    if json.len() <= MAX_DECISION_BYTES {
        return Some(json);
    }
    let mut d = decision.clone();
    for (_, v) in d.detail.iter_mut() {
        if v.len() > FITTED_DETAIL_BYTES {
            let mut end = FITTED_DETAIL_BYTES;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
            v.push_str("...");
        }
    }
    match serde_json::to_vec(&d) {
        Ok(json) if json.len() <= MAX_DECISION_BYTES => Some(json),
        _ => {
            d.detail.clear();
            serde_json::to_vec(&d).ok()
        }
    }
}

/// What the audit filter found under one filter's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Decision(Decision),
    /// Something was there but it is not a valid decision (recorded as such, never trusted).
    Invalid {
        filter: String,
    },
}

/// Every decision of the current request, taken for the audit record.
pub fn collect(host: &dyn Host) -> Vec<Published> {
    FILTERS
        .iter()
        .filter_map(|f| host.decision(f, true))
        .collect()
}

/// The decision `filter` published for this request, if any.
pub fn read(host: &dyn Host, filter: &str) -> Option<Published> {
    let name = format!("{PROPERTY_PREFIX}{filter}");
    let bytes = host.property(&[name.as_str()]).filter(|b| !b.is_empty())?;
    let parsed = if bytes.len() > MAX_DECISION_BYTES {
        None
    } else {
        serde_json::from_slice::<Decision>(&bytes)
            .ok()
            .filter(|d| d.filter == filter)
    };
    Some(match parsed {
        Some(d) => Published::Decision(d),
        None => Published::Invalid {
            filter: filter.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockHost;

    #[test]
    fn a_published_decision_is_collected_intact() {
        let host = MockHost::new();
        let mut d = Decision::new("pci_authz", Outcome::Deny);
        d.reason = Some("no_rule_matched".into());
        d.policy_version = Some("2026-11-01".into());
        d.detail
            .push(("principal".into(), "spiffe://bank/ns/a/sa/b".into()));
        publish(&host, &d);
        assert_eq!(collect(&host), vec![Published::Decision(d)]);
        let raw = host.property(&["kavach.decision.pci_authz"]).unwrap();
        assert!(String::from_utf8(raw)
            .unwrap()
            .contains(r#""outcome":"deny""#));
    }

    #[test]
    fn garbage_or_misnamed_state_is_reported_invalid() {
        let host = MockHost::new();
        host.set_property(&["kavach.decision.ratelimit"], b"not json");
        let other = Decision::new("residency", Outcome::Allow);
        host.set_property(
            &["kavach.decision.pci_authz"],
            &serde_json::to_vec(&other).unwrap(),
        );
        let got = collect(&host);
        assert_eq!(
            got,
            vec![
                Published::Invalid {
                    filter: "pci_authz".into()
                },
                Published::Invalid {
                    filter: "ratelimit".into()
                },
            ]
        );
    }

    #[test]
    fn nothing_published_means_nothing_collected() {
        assert!(collect(&MockHost::new()).is_empty());
    }
}
