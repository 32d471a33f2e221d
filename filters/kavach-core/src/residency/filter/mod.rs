//! Per-request residency logic: the decide stage and the recheck stage.
//!
//! Why two stages: Envoy re-resolves the route lazily. After this filter sets the re-route
//! header, `xds.cluster_name` and the cluster metadata still describe the old route, in this
//! callback, in the body callback and in any later wasm filter; only a filter that asks Envoy for
//! the route (the CORS filter does, for every request) makes Envoy resolve it again. So the decide
//! stage classifies and re-routes, a route-resolving filter follows, and the recheck stage (this
//! filter again, `"stage": "recheck"`) checks the cluster the request will really go to.

use std::rc::Rc;

use super::classify::{declared, ClassId, Classification, Declared, Source};
use super::config::{
    Action, Mode, Oversize, Regions, ResidencyConfig, Stage, Untagged, UNCLASSIFIED,
};
use crate::config::ConfigError;
use crate::decision::{Decision, Outcome, Published};
use crate::detect::{find_with, Detector};
use crate::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use crate::headers::{single, Single};
use crate::host::{Counter, Fact, HeaderMap, Host, HostExt, LogLevel};
use crate::text::sanitize;

pub const NAME: &str = "residency";

/// Longest cluster name or region copied into a decision.
const MAX_DETAIL: usize = 128;

pub struct ResidencyFactory;

impl FilterFactory for ResidencyFactory {
    const NAME: &'static str = NAME;

    fn configure(config: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError> {
        let cfg = ResidencyConfig::parse(config)?;
        Ok(Box::new(ResidencyRoot::new(cfg, host)))
    }
}

/// What a request's counter records. Each stage defines only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Allow,
    Reroute,
    Deny,
    DryRun,
    /// Refused for a malformed request: invalid class header, body over the limit.
    Rejected,
    UpstreamMismatch,
    RecheckAllow,
    RecheckDeny,
    RecheckDryRun,
    /// The recheck stage found no decision of the decide stage.
    RecheckMissing,
}

impl Counted {
    const DECIDE: [Counted; 6] = [
        Counted::Allow,
        Counted::Reroute,
        Counted::Deny,
        Counted::DryRun,
        Counted::Rejected,
        Counted::UpstreamMismatch,
    ];
    const RECHECK: [Counted; 4] = [
        Counted::RecheckAllow,
        Counted::RecheckDeny,
        Counted::RecheckDryRun,
        Counted::RecheckMissing,
    ];

    fn name(self) -> &'static str {
        match self {
            Counted::Allow => "allow",
            Counted::Reroute => "reroute",
            Counted::Deny => "deny",
            Counted::DryRun => "dry_run",
            Counted::Rejected => "rejected",
            Counted::UpstreamMismatch => "upstream_mismatch",
            Counted::RecheckAllow => "recheck_allow",
            Counted::RecheckDeny => "recheck_deny",
            Counted::RecheckDryRun => "recheck_dry_run",
            Counted::RecheckMissing => "recheck_missing",
        }
    }
}

/// Counters per class (plus "unclassified") × decision, all defined at configure time:
/// `kavach_residency.<class>.<decision>.requests_total`.
struct Counters {
    decisions: &'static [Counted],
    /// Row per class, last row "unclassified"; column per decision.
    ids: Vec<Counter>,
}

impl Counters {
    fn define(host: &dyn Host, cfg: &ResidencyConfig) -> Self {
        let decisions: &'static [Counted] = match cfg.stage {
            Stage::Decide => &Counted::DECIDE,
            Stage::Recheck => &Counted::RECHECK,
        };
        let mut ids = Vec::new();
        let names = cfg
            .classes
            .iter()
            .map(|c| c.name.as_str())
            .chain([UNCLASSIFIED]);
        for class in names {
            for d in decisions {
                ids.push(Counter::define(
                    host,
                    &format!("kavach_residency.{class}.{}.requests_total", d.name()),
                ));
            }
        }
        Counters { decisions, ids }
    }

    fn bump(&self, host: &dyn Host, class: Option<ClassId>, what: Counted, classes: usize) {
        let row = class.map_or(classes, |c| usize::from(c.0).min(classes));
        let Some(col) = self.decisions.iter().position(|d| *d == what) else {
            return;
        };
        if let Some(c) = self.ids.get(row * self.decisions.len() + col) {
            c.bump(host);
        }
    }
}

struct Shared {
    cfg: ResidencyConfig,
    counters: Counters,
    detectors: Vec<Detector>,
}

impl Shared {
    fn count(&self, host: &dyn Host, class: Option<ClassId>, what: Counted) {
        self.counters
            .bump(host, class, what, self.cfg.classes.len());
    }
}

pub struct ResidencyRoot {
    shared: Rc<Shared>,
}

impl ResidencyRoot {
    fn new(cfg: ResidencyConfig, host: &dyn Host) -> Self {
        let counters = Counters::define(host, &cfg);
        let detectors = cfg
            .body_detection
            .as_ref()
            .map(|b| b.detector_names())
            .unwrap_or_default();
        host.log(
            LogLevel::Info,
            &format!(
                "residency policy {} ({:?}, {:?} stage, {} classes{})",
                cfg.policy_version,
                cfg.mode,
                cfg.stage,
                cfg.classes.len(),
                if cfg.body_detection.is_some() && cfg.stage == Stage::Decide {
                    "; body detection needs allow_on_headers_stop_iteration: true in the Wasm filter config"
                } else {
                    ""
                }
            ),
        );
        ResidencyRoot {
            shared: Rc::new(Shared {
                cfg,
                counters,
                detectors,
            }),
        }
    }
}

impl FilterRoot for ResidencyRoot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn new_stream(&self) -> Box<dyn HttpFilter> {
        let shared = Rc::clone(&self.shared);
        match self.shared.cfg.stage {
            Stage::Decide => Box::new(DecideStream {
                shared,
                phase: Phase::Start,
            }),
            Stage::Recheck => Box::new(RecheckStream { shared }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Where the request is going, as Envoy resolved the route at the time of reading.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Destination {
    cluster: Option<String>,
    region: Option<String>,
}

impl Destination {
    fn read(host: &dyn Host, cfg: &ResidencyConfig) -> Self {
        let cluster = host
            .fact(Fact::ClusterName)
            .map(|c| String::from_utf8_lossy(&c).into_owned());
        let from_map = cluster
            .as_ref()
            .and_then(|c| cfg.cluster_regions.get(c))
            .cloned();
        let region = from_map.or_else(|| {
            let path: Vec<&str> = cfg
                .cluster_region_property
                .iter()
                .map(String::as_str)
                .collect();
            host.property_string(&path)
                .map(|r| r.trim().to_ascii_lowercase())
                .filter(|r| !r.is_empty())
        });
        Destination { cluster, region }
    }

    fn cluster_text(&self) -> String {
        self.cluster
            .as_deref()
            .map_or_else(|| "none".to_string(), clip)
    }

    fn region_text(&self) -> String {
        self.region
            .as_deref()
            .map_or_else(|| "untagged".to_string(), clip)
    }
}

fn clip(text: &str) -> String {
    sanitize(text.as_bytes(), MAX_DETAIL).0
}

/// The verdict on a destination for a class with restricted regions.
enum Verdict {
    Allowed(&'static str),
    Violation(&'static str),
}

fn judge(regions: &Regions, dest: &Destination, untagged: Untagged) -> Verdict {
    if dest.cluster.is_none() {
        // A direct response, a redirect or no route: nothing leaves the proxy.
        return Verdict::Allowed("no_upstream_cluster");
    }
    match (&dest.region, untagged) {
        (Some(r), _) if regions.allows(r) => Verdict::Allowed("region_allowed"),
        (Some(_), _) => Verdict::Violation("region_not_allowed"),
        (None, Untagged::Allow) => Verdict::Allowed("untagged_cluster_allowed"),
        (None, Untagged::Violation) => Verdict::Violation("untagged_cluster"),
    }
}

/// The facts a residency decision records, in `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Class,
    Source,
    Detectors,
    Body,
    Action,
    Cluster,
    Region,
    RecheckCluster,
    RecheckRegion,
    UpstreamRegion,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Class => "class",
            Key::Source => "source",
            Key::Detectors => "detectors",
            Key::Body => "body",
            Key::Action => "action",
            Key::Cluster => "cluster",
            Key::Region => "region",
            Key::RecheckCluster => "recheck_cluster",
            Key::RecheckRegion => "recheck_region",
            Key::UpstreamRegion => "upstream_region",
        }
    }
}

fn set_detail(d: &mut Decision, key: Key, value: String) {
    let name = key.name();
    match d.detail.iter_mut().find(|(k, _)| k == name) {
        Some(entry) => entry.1 = value,
        None => d.detail.push((name.into(), value)),
    }
}

fn detail(d: &Decision, key: Key) -> Option<&str> {
    let name = key.name();
    d.detail
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// This filter's decision for the current request, as published (by either stage).
fn published(host: &dyn Host) -> Option<Decision> {
    match host.decision(NAME, false)? {
        Published::Decision(d) => Some(d),
        Published::Invalid { .. } => None,
    }
}

/// A local reply with a small JSON body; the audit id is quoted when the audit filter set one.
fn reply(host: &dyn Host, status: u32, mut body: serde_json::Map<String, serde_json::Value>) {
    if let Some(id) = host.audit_id() {
        body.insert("audit_id".into(), clip(&id).into());
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    host.send_response(status, &[("content-type", b"application/json")], &bytes);
}

fn error_body(
    error: &str,
    class: Option<&str>,
    cfg: &ResidencyConfig,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("error".into(), error.into());
    if let Some(c) = class {
        m.insert("class".into(), c.into());
    }
    m.insert("policy_version".into(), cfg.policy_version.clone().into());
    m
}

mod decide;
mod recheck;

use decide::*;
use recheck::*;

#[cfg(test)]
mod tests;
