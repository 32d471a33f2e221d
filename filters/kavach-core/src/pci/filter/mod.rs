//! The filter over the [`Host`] interface: evaluate, publish the decision, count, reply.

use std::borrow::Cow;
use std::rc::Rc;

use serde::Serialize;

use super::config::{metric_name, Mode, PciConfig};
use super::evaluate::{evaluate, DenyReason, Evaluation, Verdict};
use super::identity::peer_principal;
use crate::config::ConfigError;
use crate::decision::{Decision, Outcome};
use crate::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use crate::host::{Counter, HeaderMap, Host, LogLevel};
use crate::text::sanitize;
use crate::time::unix_nanos;

/// Response header that marks a request shadow mode would have denied.
pub const SHADOW_HEADER: &str = "x-kavach-pci-shadow";
/// Longest principal or path copied into a decision.
const MAX_DETAIL_BYTES: usize = 512;
/// Longest audit id quoted in a denial body.
const MAX_AUDIT_ID_BYTES: usize = 128;

pub struct PciAuthzFactory;

impl FilterFactory for PciAuthzFactory {
    const NAME: &'static str = "pci_authz";

    fn configure(config: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError> {
        let cfg = PciConfig::parse(config)?;
        Ok(Box::new(PciAuthzRoot::new(cfg, host)))
    }
}

/// Counter ids, defined once per configuration (their number is bounded by the policy size).
struct Metrics {
    /// `kavach_pci_allow_total.rule.<rule>`, by rule index.
    allow: Vec<Counter>,
    /// `kavach_pci_deny_total.reason.<kind>`, for every [`DenyReason::KINDS`].
    deny: Vec<(&'static str, Counter)>,
    /// `kavach_pci_shadow_deny_total`.
    shadow_deny: Counter,
}

impl Metrics {
    fn define(host: &dyn Host, cfg: &PciConfig) -> Self {
        let counter = |name: &str| Counter::define(host, name);
        Metrics {
            allow: cfg
                .rules
                .iter()
                .map(|r| {
                    counter(&format!(
                        "kavach_pci_allow_total.rule.{}",
                        metric_name(&r.name)
                    ))
                })
                .collect(),
            deny: DenyReason::KINDS
                .iter()
                .map(|k| (*k, counter(&format!("kavach_pci_deny_total.reason.{k}"))))
                .collect(),
            shadow_deny: counter("kavach_pci_shadow_deny_total"),
        }
    }

    fn deny(&self, reason: DenyReason) -> Counter {
        let kind = reason.kind();
        self.deny
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

struct Shared {
    cfg: PciConfig,
    metrics: Metrics,
}

/// The configured filter of one VM.
pub struct PciAuthzRoot {
    shared: Rc<Shared>,
}

impl PciAuthzRoot {
    /// A root for an already validated policy (defines the counters).
    pub fn new(cfg: PciConfig, host: &dyn Host) -> Self {
        let metrics = Metrics::define(host, &cfg);
        host.log(
            LogLevel::Info,
            &format!(
                "pci_authz policy {:?} loaded: {} rules, {} mode",
                cfg.policy_version,
                cfg.rules.len(),
                match cfg.mode {
                    Mode::Enforce => "enforce",
                    Mode::Shadow => "shadow",
                }
            ),
        );
        PciAuthzRoot {
            shared: Rc::new(Shared { cfg, metrics }),
        }
    }

    pub fn config(&self) -> &PciConfig {
        &self.shared.cfg
    }
}

impl FilterRoot for PciAuthzRoot {
    fn name(&self) -> &'static str {
        PciAuthzFactory::NAME
    }

    fn new_stream(&self) -> Box<dyn HttpFilter> {
        Box::new(PciAuthzStream {
            shared: Rc::clone(&self.shared),
            shadow_denied: false,
        })
    }
}

/// One request.
pub struct PciAuthzStream {
    shared: Rc<Shared>,
    shadow_denied: bool,
}

#[derive(Serialize)]
struct DenyBody<'a> {
    error: &'a str,
    policy_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_id: Option<&'a str>,
}

impl PciAuthzStream {
    /// The decision on the request, its detail bounded.
    fn decision(&self, ev: &Evaluation) -> Decision {
        let cfg = &self.shared.cfg;
        let mut d = Decision::new(PciAuthzFactory::NAME, Outcome::Allow);
        d.policy_version = Some(cfg.policy_version.clone());
        match ev.verdict {
            Verdict::Allow { rule } => d.rule = cfg.rules.get(rule).map(|r| r.name.clone()),
            Verdict::Deny(reason) => {
                d.outcome = match cfg.mode {
                    Mode::Enforce => Outcome::Deny,
                    Mode::Shadow => Outcome::ShadowDeny,
                };
                d.reason = Some(match reason {
                    DenyReason::AmbiguousPath(_) => reason.to_string().into(),
                    other => other.kind().into(),
                });
            }
        }
        d.detail = detail(ev, MAX_DETAIL_BYTES);
        d
    }

    fn reply(&self, host: &dyn Host, reason: DenyReason) {
        let cfg = &self.shared.cfg;
        let (status, error) = if reason.is_bad_request() {
            (400, "bad_request")
        } else {
            (cfg.deny_status, "access_denied")
        };
        let audit_id = host
            .audit_id()
            .map(|v| sanitize(v.as_bytes(), MAX_AUDIT_ID_BYTES).0);
        let body = DenyBody {
            error,
            policy_version: &cfg.policy_version,
            audit_id: audit_id.as_deref(),
        };
        let body = serde_json::to_vec(&body)
            .unwrap_or_else(|_| format!("{{\"error\":\"{error}\"}}").into_bytes());
        host.send_response(status, &[("content-type", b"application/json")], &body);
    }
}

/// The facts of a decision: `principal` (when there is one), `via` (XFCC proxy), `path`
/// (canonical, or `-`), each cut to `limit` bytes.
fn detail(ev: &Evaluation, limit: usize) -> Vec<(Cow<'static, str>, String)> {
    let bounded = |s: &str| {
        let (mut text, cut) = sanitize(s.as_bytes(), limit);
        if cut {
            text.push_str("...");
        }
        text
    };
    let mut detail = Vec::with_capacity(3);
    if let Some(p) = &ev.principal {
        detail.push(("principal".into(), bounded(p)));
    }
    if let Some(v) = &ev.via {
        detail.push(("via".into(), bounded(v)));
    }
    let path = ev.path.as_deref().map_or_else(|| "-".to_string(), bounded);
    detail.push(("path".into(), path));
    detail
}

impl HttpFilter for PciAuthzStream {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        let cfg = &self.shared.cfg;
        let headers = host.request_headers();
        let now = i64::try_from(unix_nanos(host.now())).unwrap_or(i64::MAX);
        let ev = evaluate(cfg, &headers, peer_principal(host), now);
        host.publish_decision(self.decision(&ev));
        let metrics = &self.shared.metrics;
        match (ev.verdict, cfg.mode) {
            (Verdict::Allow { rule }, _) => {
                metrics
                    .allow
                    .get(rule)
                    .copied()
                    .unwrap_or_default()
                    .bump(host);
                Flow::Continue
            }
            (Verdict::Deny(_), Mode::Shadow) => {
                metrics.shadow_deny.bump(host);
                self.shadow_denied = true;
                Flow::Continue
            }
            (Verdict::Deny(reason), Mode::Enforce) => {
                metrics.deny(reason).bump(host);
                self.reply(host, reason);
                Flow::Stop
            }
        }
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        if self.shadow_denied {
            host.set_header(HeaderMap::Response, SHADOW_HEADER, Some(b"deny"));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests;
