//! The decide stage: classify the request (declared header, route floor, body detectors),
//! check where it is going, and allow, re-route or refuse it; then check who answered.

use super::*;
use crate::headers::alias_eq;

pub(super) enum Phase {
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
    pub(super) shared: Rc<Shared>,
    pub(super) phase: Phase,
}

/// Facts about the classification to record with the decision.
#[derive(Default)]
pub(super) struct Evidence {
    pub(super) detectors: Vec<Detector>,
    /// Why the body was not inspected: `oversize`, `unreadable`, `encoded` or `stream`.
    pub(super) body_note: Option<&'static str>,
}

impl DecideStream {
    pub(super) fn cfg(&self) -> &ResidencyConfig {
        &self.shared.cfg
    }

    pub(super) fn new_decision(&self, outcome: Outcome) -> Decision {
        let mut d = Decision::new(NAME, outcome);
        d.policy_version = Some(self.cfg().policy_version.clone());
        d
    }

    /// Whether the client sent a re-route header. Only this filter may set one: the route Envoy
    /// resolved for such a request (its name, its cluster) is the one the client steered to, and
    /// removing the header here would leave every property describing a route the request no
    /// longer takes. So such a request is refused, never repaired.
    pub(super) fn carries_reroute_header(&self, headers: &crate::host::Headers) -> bool {
        self.cfg()
            .reroute_headers()
            .iter()
            .any(|name| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
    }

    /// Refuses a malformed request with 400 (dry run: records it and lets it through).
    pub(super) fn refuse(&mut self, host: &dyn Host, reason: &'static str, error: &str) -> Flow {
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

    pub(super) fn oversize(&mut self, host: &dyn Host, so_far: Classification) -> Flow {
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
    pub(super) fn finish_body(&mut self, host: &dyn Host, so_far: Classification) -> Flow {
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
    pub(super) fn decide(
        &mut self,
        host: &dyn Host,
        c: Classification,
        evidence: Evidence,
    ) -> Flow {
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
    pub(super) fn upstream_region(&self, host: &dyn Host) -> Option<String> {
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
    pub(super) fn check_response(
        &mut self,
        host: &dyn Host,
        class: ClassId,
        rerouted: bool,
    ) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let restricted = cfg.class(class).filter(|c| c.regions.is_restricted());
        // Nothing to check for a class allowed anywhere, and no dry-run mark to set when
        // enforcing: the decision is not even looked at.
        if restricted.is_none() && cfg.mode == Mode::Enforce {
            return Flow::Continue;
        }
        let Some(mut d) = published(host) else {
            return Flow::Continue;
        };
        // The answer is judged only when an upstream produced it (not a local reply, ours or
        // another filter's) for a request the decision let through: a refused one, and in dry
        // run one enforcing would have refused or re-routed, already says what happened.
        let judged = restricted.filter(|_| {
            !matches!(d.outcome, Outcome::Deny | Outcome::ShadowDeny)
                && host.property(&["upstream", "address"]).is_some()
        });
        let mut violation = None;
        if let Some(class_cfg) = judged {
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

/// Why a request's body cannot be inspected, judged from its headers:
/// - `encoded`: a content coding other than `identity` in any `content-encoding` header (any
///   spelling of the name, any coding, any case: the detectors read the bytes as sent, so a
///   gzip, deflate, br or zstd body hides what it carries). Envoy's decompressor filter placed
///   before this one decodes the body and removes the header: then the body is inspected.
/// - `stream`: the request opens a stream with no end to wait for: an upgrade (WebSocket over
///   HTTP/1.1), CONNECT (with or without `:protocol`, as HTTP/2 WebSockets use), or gRPC, whose
///   streaming calls may never half-close.
fn uninspectable(headers: &crate::host::Headers) -> Option<&'static str> {
    let mut stream = false;
    for (name, value) in headers {
        if alias_eq(name, "content-encoding") {
            let text = String::from_utf8_lossy(value);
            let coded = text
                .split(',')
                .map(str::trim)
                .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
            if coded {
                return Some("encoded");
            }
        }
        let grpc = || {
            value
                .get(..16)
                .is_some_and(|v| v.eq_ignore_ascii_case(b"application/grpc"))
        };
        stream |= alias_eq(name, "upgrade")
            || name == ":protocol"
            || (name == ":method" && value.eq_ignore_ascii_case(b"CONNECT"))
            || (alias_eq(name, "content-type") && grpc());
    }
    stream.then_some("stream")
}

pub(super) fn content_length(headers: &crate::host::Headers) -> Option<usize> {
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
            // A body the detectors cannot read, or one that never ends: decided now, on what
            // is known, as the most sensitive class (never held, never waited for).
            if let Some(note) = uninspectable(&headers) {
                let c = c.raise(self.cfg().highest(), Source::Body);
                let evidence = Evidence {
                    detectors: Vec::new(),
                    body_note: Some(note),
                };
                return self.decide(host, c, evidence);
            }
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
