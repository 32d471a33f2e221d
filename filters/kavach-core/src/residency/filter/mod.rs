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

// ---------------------------------------------------------------------------------------------
// Decide stage

enum Phase {
    Start,
    /// Headers held back until the body is seen.
    Buffering {
        so_far: Classification,
    },
    /// Let through with this class.
    Passed {
        class: ClassId,
        /// We set the re-route header: the cluster read at decision time is not the final one,
        /// only the recheck stage sees that.
        rerouted: bool,
    },
    /// A local reply was sent; nothing more to do.
    Replied,
}

pub struct DecideStream {
    shared: Rc<Shared>,
    phase: Phase,
}

/// Facts about the classification to record with the decision.
#[derive(Default)]
struct Evidence {
    detectors: Vec<Detector>,
    /// `oversize` or `unreadable` when the body could not be inspected.
    body_note: Option<&'static str>,
}

impl DecideStream {
    fn cfg(&self) -> &ResidencyConfig {
        &self.shared.cfg
    }

    fn new_decision(&self, outcome: Outcome) -> Decision {
        let mut d = Decision::new(NAME, outcome);
        d.policy_version = Some(self.cfg().policy_version.clone());
        d
    }

    /// Whether the client sent a re-route header. Only this filter may set one: the route Envoy
    /// resolved for such a request (its name, its cluster) is the one the client steered to, and
    /// removing the header here would leave every property describing a route the request no
    /// longer takes. So such a request is refused, never repaired.
    fn carries_reroute_header(&self, headers: &crate::host::Headers) -> bool {
        self.cfg()
            .reroute_headers()
            .iter()
            .any(|name| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
    }

    /// Refuses a malformed request with 400 (dry run: records it and lets it through).
    fn refuse(&mut self, host: &dyn Host, reason: &'static str, error: &str) -> Flow {
        let mut d = self.new_decision(Outcome::Deny);
        d.reason = Some(reason.into());
        if self.cfg().mode == Mode::DryRun {
            d.outcome = Outcome::ShadowDeny;
            host.publish_decision(d);
            self.shared.count(host, None, Counted::DryRun);
            // No class to enforce: the request goes on as it came.
            self.phase = Phase::Passed {
                class: self.cfg().default_class,
                rerouted: false,
            };
            return Flow::Continue;
        }
        host.publish_decision(d);
        self.shared.count(host, None, Counted::Rejected);
        reply(host, 400, error_body(error, None, self.cfg()));
        self.phase = Phase::Replied;
        Flow::Stop
    }

    fn oversize(&mut self, host: &dyn Host, so_far: Classification) -> Flow {
        let oversize = self
            .cfg()
            .body_detection
            .as_ref()
            .map_or(Oversize::TreatAsHighest, |b| b.oversize);
        match (oversize, self.cfg().mode) {
            (Oversize::Reject413, Mode::Enforce) => {
                let mut d = self.new_decision(Outcome::Deny);
                d.reason = Some("body_too_large".into());
                set_detail(
                    &mut d,
                    Key::Class,
                    self.cfg().class_name(so_far.class).to_string(),
                );
                host.publish_decision(d);
                self.shared
                    .count(host, Some(so_far.class), Counted::Rejected);
                reply(host, 413, error_body("payload_too_large", None, self.cfg()));
                self.phase = Phase::Replied;
                Flow::Stop
            }
            // treat_as_highest; and reject_413 in dry run, which never blocks: the request goes
            // on classified as the most sensitive class.
            _ => {
                let c = so_far.raise(self.cfg().highest(), Source::Body);
                let evidence = Evidence {
                    detectors: Vec::new(),
                    body_note: Some("oversize"),
                };
                self.decide(host, c, evidence)
            }
        }
    }

    /// Reads the buffered body (up to the limit), runs the detectors and decides.
    fn finish_body(&mut self, host: &dyn Host, so_far: Classification) -> Flow {
        let Some(body_cfg) = self.cfg().body_detection.as_ref() else {
            return self.decide(host, so_far, Evidence::default());
        };
        let max = body_cfg.max_body_bytes;
        let Some(body) = host.request_body(0, max.saturating_add(1)) else {
            // Unreadable: fail closed as the most sensitive class.
            let c = so_far.raise(self.cfg().highest(), Source::Body);
            let evidence = Evidence {
                detectors: Vec::new(),
                body_note: Some("unreadable"),
            };
            return self.decide(host, c, evidence);
        };
        if body.len() > max {
            return self.oversize(host, so_far);
        }
        let mut c = so_far;
        let mut fired: Vec<Detector> = Vec::new();
        for (detector, _) in find_with(&body, &self.shared.detectors) {
            if !fired.contains(&detector) {
                fired.push(detector);
            }
        }
        fired.sort();
        for d in &fired {
            if let Some((_, class)) = body_cfg.detectors.iter().find(|(k, _)| k == d) {
                c = c.raise(*class, Source::Body);
            }
        }
        let evidence = Evidence {
            detectors: fired,
            body_note: None,
        };
        self.decide(host, c, evidence)
    }

    /// Checks the destination for the final class and enforces.
    fn decide(&mut self, host: &dyn Host, c: Classification, evidence: Evidence) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let Some(class) = cfg.class(c.class) else {
            // Unreachable by construction (ids come from the config); fail closed anyway.
            reply(host, 500, error_body("residency_not_evaluated", None, cfg));
            self.phase = Phase::Replied;
            return Flow::Stop;
        };
        let mut d = self.new_decision(Outcome::Allow);
        set_detail(&mut d, Key::Class, class.name.clone());
        set_detail(&mut d, Key::Source, c.source.name().to_string());
        if !evidence.detectors.is_empty() {
            let names: Vec<&str> = evidence.detectors.iter().map(|d| d.name()).collect();
            set_detail(&mut d, Key::Detectors, names.join(","));
        }
        if let Some(note) = evidence.body_note {
            set_detail(&mut d, Key::Body, note.to_string());
        }

        let Regions::Only(allowed) = &class.regions else {
            // Allowed anywhere: no residence header.
            d.reason = Some("unrestricted_class".into());
            set_detail(&mut d, Key::Action, "none".into());
            host.publish_decision(d);
            shared.count(host, Some(c.class), Counted::Allow);
            self.phase = Phase::Passed {
                class: c.class,
                rerouted: false,
            };
            return Flow::Continue;
        };

        let dest = Destination::read(host, cfg);
        set_detail(&mut d, Key::Cluster, dest.cluster_text());
        set_detail(&mut d, Key::Region, dest.region_text());
        let verdict = judge(&class.regions, &dest, cfg.untagged_cluster);
        let mut rerouted = false;
        match verdict {
            Verdict::Allowed(reason) => {
                d.reason = Some(reason.into());
                set_detail(&mut d, Key::Action, "none".into());
                shared.count(host, Some(c.class), Counted::Allow);
            }
            Verdict::Violation(reason) => {
                d.reason = Some(reason.into());
                let action = match &class.action {
                    Action::Deny => "deny",
                    Action::Reroute { .. } => "reroute",
                };
                set_detail(&mut d, Key::Action, action.into());
                match (cfg.mode, &class.action) {
                    (Mode::DryRun, _) => {
                        d.outcome = Outcome::ShadowDeny;
                        shared.count(host, Some(c.class), Counted::DryRun);
                    }
                    (Mode::Enforce, Action::Deny) => {
                        d.outcome = Outcome::Deny;
                        host.publish_decision(d);
                        shared.count(host, Some(c.class), Counted::Deny);
                        reply(
                            host,
                            451,
                            error_body("unavailable_for_legal_reasons", Some(&class.name), cfg),
                        );
                        self.phase = Phase::Replied;
                        return Flow::Stop;
                    }
                    (Mode::Enforce, Action::Reroute { header, value }) => {
                        d.outcome = Outcome::Reroute;
                        host.set_header(HeaderMap::Request, header, Some(value.as_bytes()));
                        rerouted = true;
                        shared.count(host, Some(c.class), Counted::Reroute);
                    }
                }
            }
        }
        host.set_header(
            HeaderMap::Request,
            &cfg.residence_header,
            Some(allowed.join(",").as_bytes()),
        );
        host.publish_decision(d);
        self.phase = Phase::Passed {
            class: c.class,
            rerouted,
        };
        Flow::Continue
    }

    /// Region of the upstream host that answered, from the first configured property present.
    fn upstream_region(&self, host: &dyn Host) -> Option<String> {
        self.cfg()
            .upstream_check
            .region_properties
            .iter()
            .find_map(|path| {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                host.property_string(&path)
                    .map(|r| r.trim().to_ascii_lowercase())
                    .filter(|r| !r.is_empty())
            })
    }

    /// Defence in depth on the answer: was it really served from an allowed region?
    fn check_response(&mut self, host: &dyn Host, class: ClassId, rerouted: bool) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let Some(mut d) = published(host) else {
            return Flow::Continue;
        };
        let restricted = cfg.class(class).filter(|c| c.regions.is_restricted());
        // A response that no upstream produced (a local reply, ours or another filter's) is
        // not checked; asked only when there is something to check.
        let from_upstream = restricted.is_some()
            && d.outcome != Outcome::Deny
            && host.property(&["upstream", "address"]).is_some();
        let mut violation = None;
        if let (Some(class_cfg), true, false) =
            (restricted, from_upstream, d.outcome == Outcome::Deny)
        {
            if rerouted && detail(&d, Key::RecheckRegion).is_none() {
                violation = Some("reroute_not_rechecked");
            }
            if cfg.upstream_check.enabled {
                match self.upstream_region(host) {
                    Some(region) => {
                        if violation.is_none() && !class_cfg.regions.allows(&region) {
                            violation = Some("upstream_region_mismatch");
                        }
                        set_detail(&mut d, Key::UpstreamRegion, clip(&region));
                    }
                    None => {
                        set_detail(&mut d, Key::UpstreamRegion, "untagged".into());
                        if violation.is_none()
                            && cfg.upstream_check.untagged_host == Untagged::Violation
                        {
                            violation = Some("untagged_upstream_host");
                        }
                    }
                }
            }
            if let Some(reason) = violation {
                d.reason = Some(reason.into());
                shared.count(host, Some(class), Counted::UpstreamMismatch);
                if cfg.mode == Mode::Enforce {
                    d.outcome = Outcome::Deny;
                    host.publish_decision(d);
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "residency: response replaced ({reason}, class {})",
                            class_cfg.name
                        ),
                    );
                    reply(
                        host,
                        502,
                        error_body("residency_violation", Some(&class_cfg.name), cfg),
                    );
                    self.phase = Phase::Replied;
                    return Flow::Stop;
                }
                d.outcome = Outcome::ShadowDeny;
            }
            host.publish_decision(d.clone());
        }
        if d.outcome == Outcome::ShadowDeny {
            let would = detail(&d, Key::Action).unwrap_or("deny");
            let would = if would == "none" { "deny" } else { would };
            let value = format!(
                "{would}; class={}",
                detail(&d, Key::Class).unwrap_or(UNCLASSIFIED)
            );
            host.set_header(
                HeaderMap::Response,
                &cfg.dry_run_header,
                Some(value.as_bytes()),
            );
        }
        Flow::Continue
    }
}

fn content_length(headers: &crate::host::Headers) -> Option<usize> {
    match single(headers, "content-length") {
        Single::One(v) => std::str::from_utf8(v).ok()?.trim().parse().ok(),
        _ => None,
    }
}

impl HttpFilter for DecideStream {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Flow {
        if !matches!(self.phase, Phase::Start) {
            return Flow::Continue;
        }
        let headers = host.request_headers();
        if self.carries_reroute_header(&headers) {
            return self.refuse(host, "reroute_header_from_client", "invalid_routing_header");
        }
        // Only this filter says where a request may reside.
        let residence = &self.shared.cfg.residence_header;
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(residence))
        {
            host.set_header(HeaderMap::Request, residence, None);
        }
        let mut c = Classification::start(self.cfg().default_class);
        match declared(&headers, self.cfg()) {
            Declared::Invalid(why) => return self.refuse(host, why.reason(), "invalid_data_class"),
            Declared::Class(id) => c = c.raise(id, Source::Header),
            Declared::Absent => {}
        }
        let route = host
            .fact(Fact::RouteName)
            .and_then(|name| {
                let name = std::str::from_utf8(&name).ok()?;
                self.cfg().routes.get(name).copied()
            })
            .unwrap_or_default();
        if let Some(floor) = route.min_class {
            c = c.raise(floor, Source::Route);
        }
        let inspect = self
            .cfg()
            .body_detection
            .as_ref()
            .filter(|b| route.detect_body.unwrap_or(b.enabled_by_default));
        // Detection can only raise the class: at the top already, the body cannot matter.
        if let (Some(body), false, true) = (inspect, end_of_stream, c.class < self.cfg().highest())
        {
            if content_length(&headers).is_some_and(|n| n > body.max_body_bytes) {
                return self.oversize(host, c);
            }
            self.phase = Phase::Buffering { so_far: c };
            return Flow::Stop;
        }
        self.decide(host, c, Evidence::default())
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        let Phase::Buffering { so_far } = self.phase else {
            return Flow::Continue;
        };
        let max = self
            .cfg()
            .body_detection
            .as_ref()
            .map_or(0, |b| b.max_body_bytes);
        if body_size > max {
            return self.oversize(host, so_far);
        }
        if !end_of_stream {
            return Flow::Stop;
        }
        self.finish_body(host, so_far)
    }

    fn on_request_trailers(&mut self, host: &dyn Host) -> Flow {
        // Trailers end the request body without an end-of-stream body callback.
        let Phase::Buffering { so_far } = self.phase else {
            return Flow::Continue;
        };
        self.finish_body(host, so_far)
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        match self.phase {
            Phase::Passed { class, rerouted } => self.check_response(host, class, rerouted),
            _ => Flow::Continue,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Recheck stage

pub struct RecheckStream {
    shared: Rc<Shared>,
}

impl RecheckStream {
    fn missing(&self, host: &dyn Host, reason: &'static str) -> Flow {
        let cfg = &self.shared.cfg;
        let mut d = Decision::new(NAME, Outcome::Deny);
        d.policy_version = Some(cfg.policy_version.clone());
        d.reason = Some(reason.into());
        self.shared.count(host, None, Counted::RecheckMissing);
        host.log(
            LogLevel::Error,
            &format!("residency recheck: {reason}: the decide stage must run first on every route, with the same policy_version, and publish its decision (in a bundle: \"publish_decisions\": true)"),
        );
        if cfg.mode == Mode::DryRun {
            d.outcome = Outcome::ShadowDeny;
            host.publish_decision(d);
            return Flow::Continue;
        }
        host.publish_decision(d);
        reply(host, 500, error_body("residency_not_evaluated", None, cfg));
        Flow::Stop
    }
}

impl HttpFilter for RecheckStream {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let Some(mut d) = published(host) else {
            return self.missing(host, "decide_stage_missing");
        };
        if d.policy_version.as_deref() != Some(cfg.policy_version.as_str()) {
            return self.missing(host, "policy_version_mismatch");
        }
        let class_id = detail(&d, Key::Class).and_then(|n| cfg.class_by_name(n.as_bytes()));
        let Some((id, class)) = class_id.and_then(|id| cfg.class(id).map(|c| (id, c))) else {
            if d.outcome == Outcome::ShadowDeny {
                // Dry run let an invalid request through unclassified; nothing to check.
                return Flow::Continue;
            }
            return self.missing(host, "class_unknown_to_recheck");
        };
        if !class.regions.is_restricted() || d.outcome == Outcome::Deny {
            return Flow::Continue;
        }
        let dest = Destination::read(host, cfg);
        set_detail(&mut d, Key::RecheckCluster, dest.cluster_text());
        set_detail(&mut d, Key::RecheckRegion, dest.region_text());
        match judge(&class.regions, &dest, cfg.untagged_cluster) {
            Verdict::Allowed(_) => {
                host.publish_decision(d);
                shared.count(host, Some(id), Counted::RecheckAllow);
                Flow::Continue
            }
            Verdict::Violation(_) => {
                let reason = if d.outcome == Outcome::Reroute {
                    "reroute_target_not_allowed"
                } else {
                    "destination_changed"
                };
                d.reason = Some(reason.into());
                if cfg.mode == Mode::DryRun {
                    if d.outcome != Outcome::ShadowDeny {
                        d.outcome = Outcome::ShadowDeny;
                        set_detail(&mut d, Key::Action, "deny".into());
                    }
                    host.publish_decision(d);
                    shared.count(host, Some(id), Counted::RecheckDryRun);
                    return Flow::Continue;
                }
                d.outcome = Outcome::Deny;
                host.publish_decision(d);
                shared.count(host, Some(id), Counted::RecheckDeny);
                reply(
                    host,
                    451,
                    error_body("unavailable_for_legal_reasons", Some(&class.name), cfg),
                );
                Flow::Stop
            }
        }
    }
}

#[cfg(test)]
mod tests;
