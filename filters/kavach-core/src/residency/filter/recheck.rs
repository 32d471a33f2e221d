//! The recheck stage: after a route-resolving filter, the cluster the request will really go
//! to, judged for the class the decide stage published.

use super::*;

pub struct RecheckStream {
    pub(super) shared: Rc<Shared>,
}

impl RecheckStream {
    pub(super) fn missing(&self, host: &dyn Host, reason: &'static str) -> Flow {
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
        if d.outcome == Outcome::ShadowDeny {
            // Dry run, and the decide stage already found what enforcing would have done:
            // refused (or re-routed) the request before it got here. Its reason stands; the
            // recheck only adds where the request is going, and counts nothing.
            host.publish_decision(d);
            return Flow::Continue;
        }
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
                    d.outcome = Outcome::ShadowDeny;
                    set_detail(&mut d, Key::Action, "deny".into());
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
