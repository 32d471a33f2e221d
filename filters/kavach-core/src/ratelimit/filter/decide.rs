//! Deciding: each matching rule's key, its local bucket or a place in the service call, and
//! the outcome of the rules together.

use super::*;

/// Tokens a rule took for this request (given back if another rule refuses it).
pub(super) struct Taken {
    pub(super) rule: usize,
    pub(super) fp: u64,
    pub(super) limits: Limits,
}

/// A rule that let the request through.
pub(super) struct Admitted {
    pub(super) rule: usize,
    pub(super) tier: usize,
    pub(super) limits: Limits,
    pub(super) remaining: u64,
}

/// How a rule let a request through.
pub(super) enum Admit {
    /// A bucket in this Envoy's shared data.
    Local { fp: u64, bucket: Bucket },
    /// The rate-limit service said OK.
    Global {
        limits: Limits,
        remaining: u64,
        reset_s: u64,
    },
}

/// Where a request stands while its rules are decided.
pub(super) struct Progress {
    pub(super) now: u64,
    pub(super) matched: bool,
    pub(super) taken: Vec<Taken>,
    pub(super) admitted: Vec<Admitted>,
    pub(super) reports: Vec<Report>,
    /// The first rule that would refuse in shadow mode: (rule, tier, limits, why).
    pub(super) shadow: Option<(usize, usize, Limits, Refusal)>,
    /// What the rate-limit service said (`ok`, `timeout`, `unavailable`...), when asked.
    pub(super) service: Option<String>,
}

/// A fact of the request as key text (None when absent or not usable as a key).
pub(super) fn fact_text(host: &dyn Host, fact: Fact) -> Option<String> {
    host.fact(fact).and_then(|v| text_value(&v, false).ok())
}

/// Descriptor entry key of a key part (the names Envoy's own rate-limit actions use where one
/// exists; a header's entry is named after the header).
pub(super) fn entry_key(part: &KeyPart) -> &str {
    match part {
        KeyPart::ClientAddress => "remote_address",
        KeyPart::Principal => "principal",
        KeyPart::Route => "route",
        KeyPart::Header { name, .. } => name,
    }
}

impl RateLimitStream {
    pub(super) fn tier(&self, rule: &Rule, host: &dyn Host, headers: &Headers) -> usize {
        let tiers = &rule.tiers;
        let named = |name: &str| tiers.tiers.iter().position(|t| t.name == name);
        let found = match &tiers.by {
            TierSource::Fixed => None,
            TierSource::Header(h) => header_value(headers, h, false).ok().and_then(|v| named(&v)),
            TierSource::Principal(map) => {
                fact_text(host, Fact::PeerPrincipal).and_then(|p| map.get(&p).copied())
            }
        };
        found.unwrap_or(tiers.default)
    }

    /// The canonical value of each key part of the rule, in order.
    pub(super) fn key_values(
        &self,
        rule: &Rule,
        host: &dyn Host,
        headers: &Headers,
    ) -> Result<Vec<String>, Missing> {
        let mut values = Vec::with_capacity(rule.key.len());
        for part in &rule.key {
            values.push(match part {
                KeyPart::ClientAddress => {
                    let source = host.fact(Fact::SourceAddress);
                    let ip = client_address(source.as_deref()).ok_or(Missing::Absent)?;
                    canonical_network(ip, &self.cfg().address)
                }
                KeyPart::Principal => {
                    let p = host.fact(Fact::PeerPrincipal);
                    text_value(p.as_deref().unwrap_or_default(), false)?
                }
                KeyPart::Route => fact_text(host, Fact::RouteName).ok_or(Missing::Absent)?,
                KeyPart::Header { name, lowercase } => header_value(headers, name, *lowercase)?,
            });
        }
        Ok(values)
    }

    /// The bucket key (and, for a global rule, the descriptor entries) of a request: `Err` when
    /// the rule cannot identify it and refuses such requests.
    pub(super) fn key(
        &self,
        host: &dyn Host,
        (i, rule, tier): (usize, &Rule, &str),
        headers: &Headers,
    ) -> Result<(KeyBytes, Vec<(String, String)>), Refusal> {
        let mut k = KeyBytes::new();
        k.push(0, tier.as_bytes());
        let mut entries = Vec::new();
        if rule.global {
            entries.push(("rule".to_string(), rule.name.clone()));
            if rule.is_tiered() {
                entries.push(("tier".to_string(), tier.to_string()));
            }
        }
        match self.key_values(rule, host, headers) {
            Ok(values) => {
                for (part, value) in rule.key.iter().zip(&values) {
                    let tag = match part {
                        KeyPart::ClientAddress => 1,
                        KeyPart::Principal => 2,
                        KeyPart::Route => 3,
                        KeyPart::Header { .. } => 4,
                    };
                    k.push(tag, value.as_bytes());
                }
                if rule.global {
                    entries.extend(
                        rule.key
                            .iter()
                            .zip(values)
                            .map(|(part, v)| (entry_key(part).to_string(), v)),
                    );
                }
            }
            Err(missing) => {
                let m = self.shared.metrics.get(i).copied().unwrap_or_default();
                m.key_missing.bump(host);
                if rule.when_key_missing == WhenKeyMissing::Deny {
                    return Err(Refusal::KeyMissing(missing));
                }
                // Every request the rule cannot identify shares one bucket of the rule.
                k.push(0xff, b"missing");
                if rule.global {
                    entries.push(("key".to_string(), "missing".to_string()));
                }
            }
        }
        Ok((k, entries))
    }

    /// Takes the rule's cost from its local bucket for `key`.
    pub(super) fn take_local(
        &self,
        host: &dyn Host,
        i: usize,
        limits: &Limits,
        key: &KeyBytes,
        now: u64,
    ) -> Result<Admit, Refusal> {
        let shared = &self.shared;
        let m = shared.metrics.get(i).copied().unwrap_or_default();
        let (Some(Some(table)), Some(rule)) = (shared.tables.get(i), shared.cfg.rules.get(i))
        else {
            return Err(Refusal::StoreError);
        };
        let fp = fingerprint(&shared.seed, key.as_bytes());
        match table.take(host, fp, limits, rule.cost, now) {
            Outcome::Admitted(bucket) => Ok(Admit::Local { fp, bucket }),
            Outcome::Limited { bucket, wait_ns } => Err(Refusal::Limited {
                remaining: bucket.tokens(limits),
                wait_ns,
            }),
            Outcome::TableFull => {
                m.table_full.bump(host);
                Err(Refusal::TableFull)
            }
            Outcome::Contention => {
                m.cas_exhausted.bump(host);
                Err(Refusal::CasExhausted)
            }
            Outcome::StoreError => {
                m.store_errors.bump(host);
                Err(Refusal::StoreError)
            }
        }
    }

    /// Applies one rule's verdict. Some(flow) when the request is refused (the reply is sent).
    pub(super) fn settle(
        &mut self,
        host: &dyn Host,
        p: &mut Progress,
        (i, tier, limits): (usize, usize, Limits),
        verdict: Result<Admit, Refusal>,
    ) -> Option<Flow> {
        let shared = Rc::clone(&self.shared);
        let rule = shared.cfg.rules.get(i)?;
        let m = shared.metrics.get(i).copied().unwrap_or_default();
        match verdict {
            Ok(admit) => {
                let (limits, remaining, reset_s) = match admit {
                    Admit::Local { fp, bucket } => {
                        p.taken.push(Taken {
                            rule: i,
                            fp,
                            limits,
                        });
                        (
                            limits,
                            bucket.tokens(&limits),
                            seconds_ceil(bucket.nanos_until_full(&limits)),
                        )
                    }
                    Admit::Global {
                        limits,
                        remaining,
                        reset_s,
                    } => (limits, remaining, reset_s),
                };
                if rule.mode == Mode::Enforce {
                    p.reports
                        .push(Self::report(rule, limits, remaining, reset_s));
                }
                p.admitted.push(Admitted {
                    rule: i,
                    tier,
                    limits,
                    remaining,
                });
                None
            }
            Err(refusal) if rule.mode == Mode::Shadow => {
                m.shadow_limited.bump(host);
                if p.shadow.is_none() {
                    p.shadow = Some((i, tier, limits, refusal));
                }
                None
            }
            Err(refusal) => {
                // Refused: tokens other rules took for it go back.
                for t in &p.taken {
                    if let (Some(Some(table)), Some(r)) =
                        (shared.tables.get(t.rule), shared.cfg.rules.get(t.rule))
                    {
                        table.give_back(host, t.fp, &t.limits, r.cost, p.now);
                    }
                }
                m.limited.bump(host);
                let mut d = decision(rule, tier, limits, DecisionOutcome::Deny, refusal);
                if let Some(s) = &p.service {
                    d.detail.push(("service".into(), s.clone()));
                }
                host.publish_decision(d);
                Some(self.refuse(host, rule, limits, refusal))
            }
        }
    }

    pub(super) fn decide(&mut self, host: &dyn Host) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let headers = host.request_headers();
        let text = |name: &str| match single(&headers, name) {
            Single::One(v) => String::from_utf8_lossy(v),
            _ => Cow::Borrowed(""),
        };
        let method = text(":method");
        let path = canonical_path(&text(":path"));
        let mut p = Progress {
            now: unix_nanos(host.now()),
            matched: false,
            taken: Vec::new(),
            admitted: Vec::new(),
            reports: Vec::new(),
            shadow: None,
            service: None,
        };
        let mut hits: Vec<GlobalHit> = Vec::new();

        for (i, rule) in cfg.rules.iter().enumerate() {
            if !rule
                .matcher
                .matches(&method, &path, &mut || fact_text(host, Fact::RouteName))
            {
                continue;
            }
            p.matched = true;
            let tier = self.tier(rule, host, &headers);
            let Some(t) = rule.tiers.tiers.get(tier) else {
                continue;
            };
            let limits = t.limits;
            let verdict = match self.key(host, (i, rule, &t.name), &headers) {
                Err(refusal) => Err(refusal),
                Ok((key, entries)) if rule.global => {
                    hits.push(GlobalHit {
                        rule: i,
                        tier,
                        limits,
                        key,
                        descriptor: Descriptor {
                            entries,
                            hits: rule.cost,
                        },
                    });
                    continue;
                }
                Ok((key, _)) => self.take_local(host, i, &limits, &key, p.now),
            };
            if let Some(flow) = self.settle(host, &mut p, (i, tier, limits), verdict) {
                return flow;
            }
        }
        if hits.is_empty() {
            return self.finish(host, p);
        }
        self.call_service(host, hits, p)
    }

    /// Every rule let the request through (or only shadow rules refused it).
    pub(super) fn finish(&mut self, host: &dyn Host, p: Progress) -> Flow {
        if !p.matched {
            return Flow::Continue;
        }
        let cfg = &self.shared.cfg;
        for a in &p.admitted {
            if let Some(m) = self.shared.metrics.get(a.rule) {
                m.allowed.bump(host);
            }
        }
        let d = match p.shadow {
            Some((i, tier, limits, refusal)) => cfg
                .rules
                .get(i)
                .map(|rule| decision(rule, tier, limits, DecisionOutcome::ShadowDeny, refusal)),
            // The rule with the fewest requests left.
            None => p.admitted.iter().min_by_key(|a| a.remaining).and_then(|a| {
                let rule = cfg.rules.get(a.rule)?;
                let mut d = Decision::new(RateLimitFactory::NAME, DecisionOutcome::Allow);
                d.rule = Some(rule.name.clone());
                d.detail = limit_detail(rule, a.tier, a.limits);
                d.detail.push(("remaining".into(), a.remaining.to_string()));
                Some(d)
            }),
        };
        let d = d.or_else(|| {
            // Only global rules let through unchecked (`failure_mode: allow`).
            p.service.as_ref()?;
            Some(Decision::new(
                RateLimitFactory::NAME,
                DecisionOutcome::Allow,
            ))
        });
        if let Some(mut d) = d {
            if let Some(s) = &p.service {
                d.detail.push(("service".into(), s.clone()));
            }
            host.publish_decision(d);
        }
        if cfg.headers.on_allowed {
            // Closest to refusing first, so the legacy trio describes it.
            let mut reports = p.reports;
            reports.sort_by_key(|r| r.remaining);
            self.reports = reports;
        }
        Flow::Continue
    }
}
