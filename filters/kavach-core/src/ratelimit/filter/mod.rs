//! Per-request rate-limit logic.

use std::rc::Rc;

use super::bucket::{seconds_ceil, Bucket, Limits};
use super::config::{KeyPart, Mode, RateLimitConfig, Rule, TierSource, WhenKeyMissing};
use super::fields::{fields, key_missing_body, limited_body, Report};
use super::key::{canonical_network, client_address, header_value, text_value, KeyBytes, Missing};
use super::matcher::canonical_path;
use super::table::{fingerprint, shared_seed, Outcome, Seed, Table};
use crate::config::ConfigError;
use crate::decision::{publish, Decision, Outcome as DecisionOutcome, AUDIT_ID_PROPERTY};
use crate::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use crate::headers::{single, Single};
use crate::host::{HeaderMap, Headers, Host, HostExt, LogLevel, MetricKind};
use crate::time::unix_nanos;

/// `retry-after` when no bucket says when to come back (table full, contention, store error).
const RETRY_UNKNOWN_S: u64 = 1;

const PRINCIPAL: [&str; 2] = ["connection", "uri_san_peer_certificate"];
const SOURCE: [&str; 2] = ["source", "address"];
const ROUTE: [&str; 2] = ["xds", "route_name"];

pub struct RateLimitFactory;

impl FilterFactory for RateLimitFactory {
    const NAME: &'static str = "ratelimit";

    fn configure(config: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError> {
        let cfg = RateLimitConfig::parse(config)?;
        Ok(Box::new(RateLimitRoot::new(cfg, host)?))
    }
}

fn store_error(reason: String) -> ConfigError {
    ConfigError {
        path: String::new(),
        reason,
    }
}

/// Counters of one rule, defined at configure time (names only: `.rule.<name>` is turned into
/// a label with a `stats_tags` regex).
#[derive(Debug, Default, Clone, Copy)]
struct RuleMetrics {
    allowed: Option<u32>,
    limited: Option<u32>,
    shadow_limited: Option<u32>,
    table_full: Option<u32>,
    cas_exhausted: Option<u32>,
    store_errors: Option<u32>,
    key_missing: Option<u32>,
}

impl RuleMetrics {
    fn define(host: &dyn Host, rule: &str) -> Self {
        let c = |what: &str| {
            host.define_metric(
                MetricKind::Counter,
                &format!("kavach_ratelimit_{what}_total.rule.{rule}"),
            )
        };
        RuleMetrics {
            allowed: c("allowed"),
            limited: c("limited"),
            shadow_limited: c("shadow_limited"),
            table_full: c("table_full"),
            cas_exhausted: c("cas_exhausted"),
            store_errors: c("store_errors"),
            key_missing: c("key_missing"),
        }
    }
}

fn bump(host: &dyn Host, id: Option<u32>) {
    if let Some(id) = id {
        host.increment_metric(id, 1);
    }
}

struct Shared {
    cfg: RateLimitConfig,
    seed: Seed,
    tables: Vec<Table>,
    metrics: Vec<RuleMetrics>,
}

pub struct RateLimitRoot {
    shared: Rc<Shared>,
}

impl RateLimitRoot {
    pub fn new(cfg: RateLimitConfig, host: &dyn Host) -> Result<Self, ConfigError> {
        let seed = shared_seed(host).map_err(store_error)?;
        let mut tables = Vec::new();
        let mut metrics = Vec::new();
        let mut created = 0;
        for rule in &cfg.rules {
            let table = Table::new(
                &rule.name,
                rule.slots,
                cfg.probes,
                cfg.cas_retries,
                rule.tag,
            );
            created += table.create_slots(host).map_err(store_error)?;
            tables.push(table);
            metrics.push(RuleMetrics::define(host, &rule.name));
        }
        host.log(
            LogLevel::Info,
            &format!(
                "ratelimit: {} rules, {} slots ({created} created by this worker)",
                cfg.rules.len(),
                cfg.rules.iter().map(|r| u64::from(r.slots)).sum::<u64>()
            ),
        );
        Ok(RateLimitRoot {
            shared: Rc::new(Shared {
                cfg,
                seed,
                tables,
                metrics,
            }),
        })
    }
}

impl FilterRoot for RateLimitRoot {
    fn name(&self) -> &'static str {
        RateLimitFactory::NAME
    }

    fn new_stream(&self) -> Box<dyn HttpFilter> {
        Box::new(RateLimitStream {
            shared: Rc::clone(&self.shared),
            reports: Vec::new(),
        })
    }
}

pub struct RateLimitStream {
    shared: Rc<Shared>,
    /// What to tell the client on a response that passed (only with `on_allowed`).
    reports: Vec<Report>,
}

/// Tokens a rule took for this request (given back if another rule refuses it).
struct Taken {
    rule: usize,
    tier: usize,
    fp: u64,
    limits: Limits,
    bucket: Bucket,
}

/// Why a rule refuses (or, in shadow mode, would refuse) the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Limited { remaining: u64, wait_ns: u64 },
    TableFull,
    CasExhausted,
    StoreError,
    KeyMissing(Missing),
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Limited { .. } => "limited",
            Refusal::TableFull => "table_full",
            Refusal::CasExhausted => "cas_exhausted",
            Refusal::StoreError => "store_error",
            Refusal::KeyMissing(_) => "key_missing",
        }
    }

    fn retry_after_s(self) -> u64 {
        match self {
            Refusal::Limited { wait_ns, .. } => seconds_ceil(wait_ns).max(1),
            _ => RETRY_UNKNOWN_S,
        }
    }

    fn remaining(self) -> u64 {
        match self {
            Refusal::Limited { remaining, .. } => remaining,
            _ => 0,
        }
    }
}

/// The request's route name, looked up at most once.
#[derive(Default)]
struct RouteName(Option<Option<String>>);

impl RouteName {
    fn get(&mut self, host: &dyn Host) -> Option<String> {
        self.0
            .get_or_insert_with(|| {
                host.property(&ROUTE)
                    .and_then(|r| text_value(&r, false).ok())
            })
            .clone()
    }
}

impl RateLimitStream {
    fn cfg(&self) -> &RateLimitConfig {
        &self.shared.cfg
    }

    fn tier(&self, rule: &Rule, host: &dyn Host, headers: &Headers) -> usize {
        let tiers = &rule.tiers;
        let named = |name: &str| tiers.tiers.iter().position(|t| t.name == name);
        let found = match &tiers.by {
            TierSource::Fixed => None,
            TierSource::Header(h) => header_value(headers, h, false).ok().and_then(|v| named(&v)),
            TierSource::Principal(map) => host
                .property(&PRINCIPAL)
                .and_then(|p| text_value(&p, false).ok())
                .and_then(|p| map.get(&p).copied()),
        };
        found.unwrap_or(tiers.default)
    }

    fn key(
        &self,
        rule: &Rule,
        tier: &str,
        host: &dyn Host,
        headers: &Headers,
        route: &mut RouteName,
    ) -> Result<KeyBytes, Missing> {
        let mut k = KeyBytes::new();
        k.push(0, tier.as_bytes());
        for part in &rule.key {
            match part {
                KeyPart::ClientAddress => {
                    let source = host.property(&SOURCE);
                    let ip = client_address(source.as_deref()).ok_or(Missing::Absent)?;
                    k.push(1, canonical_network(ip, &self.cfg().address).as_bytes());
                }
                KeyPart::Principal => {
                    let p = host.property(&PRINCIPAL).unwrap_or_default();
                    k.push(2, text_value(&p, false)?.as_bytes());
                }
                KeyPart::Route => {
                    let r = route.get(host).ok_or(Missing::Absent)?;
                    k.push(3, r.as_bytes());
                }
                KeyPart::Header { name, lowercase } => {
                    k.push(4, header_value(headers, name, *lowercase)?.as_bytes());
                }
            }
        }
        Ok(k)
    }

    /// The key of the rule's shared bucket for requests it cannot identify.
    fn missing_key(tier: &str) -> KeyBytes {
        let mut k = KeyBytes::new();
        k.push(0, tier.as_bytes());
        k.push(0xff, b"missing");
        k
    }

    fn report(rule: &Rule, limits: Limits, remaining: u64, reset_s: u64) -> Report {
        Report {
            rule: rule.name.clone(),
            limits,
            remaining,
            reset_s,
        }
    }

    /// Sends the refusal: 400 for a request the rule cannot identify, 429 otherwise.
    fn refuse(&self, host: &dyn Host, rule: &Rule, limits: Limits, refusal: Refusal) -> Flow {
        let audit_id = host.property_string(&[AUDIT_ID_PROPERTY]);
        let json: &[u8] = b"application/json";
        if let Refusal::KeyMissing(_) = refusal {
            let body = key_missing_body(&rule.name, audit_id.as_deref());
            host.send_response(400, &[("content-type", json)], &body);
            return Flow::Stop;
        }
        let retry = refusal.retry_after_s();
        let body = limited_body(&rule.name, retry, audit_id.as_deref());
        let h = &self.cfg().headers;
        let report = Self::report(rule, limits, refusal.remaining(), retry);
        let mut headers = vec![("retry-after", retry.to_string())];
        headers.extend(fields(&[report], h.ietf, h.legacy));
        let mut pairs: Vec<(&str, &[u8])> = vec![("content-type", json)];
        pairs.extend(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
        host.send_response(429, &pairs, &body);
        Flow::Stop
    }

    fn decide(&mut self, host: &dyn Host) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let headers = host.headers(HeaderMap::Request);
        let text = |name: &str| match single(&headers, name) {
            Single::One(v) => String::from_utf8_lossy(v).into_owned(),
            _ => String::new(),
        };
        let method = text(":method");
        let path = canonical_path(&text(":path"));
        let mut route = RouteName::default();
        let now = unix_nanos(host.now());
        let mut taken: Vec<Taken> = Vec::new();
        let mut reports: Vec<(usize, Report)> = Vec::new();
        let mut shadow: Option<(usize, usize, Refusal)> = None;
        let mut matched = false;

        for (i, rule) in cfg.rules.iter().enumerate() {
            if !rule
                .matcher
                .matches(&method, &path, &mut || route.get(host))
            {
                continue;
            }
            matched = true;
            let m = shared.metrics.get(i).copied().unwrap_or_default();
            let tier = self.tier(rule, host, &headers);
            let Some(t) = rule.tiers.tiers.get(tier) else {
                continue;
            };
            let limits = t.limits;
            let key = match self.key(rule, &t.name, host, &headers, &mut route) {
                Ok(k) => Ok(k),
                Err(missing) => {
                    bump(host, m.key_missing);
                    match rule.when_key_missing {
                        WhenKeyMissing::SharedBucket => Ok(Self::missing_key(&t.name)),
                        WhenKeyMissing::Deny => Err(Refusal::KeyMissing(missing)),
                    }
                }
            };
            let outcome = match key {
                Err(r) => Err(r),
                Ok(k) => {
                    let fp = fingerprint(&shared.seed, k.as_bytes());
                    let Some(table) = shared.tables.get(i) else {
                        continue;
                    };
                    match table.take(host, fp, &limits, rule.cost, now) {
                        Outcome::Admitted(bucket) => Ok((fp, bucket)),
                        Outcome::Limited { bucket, wait_ns } => Err(Refusal::Limited {
                            remaining: bucket.tokens(&limits),
                            wait_ns,
                        }),
                        Outcome::TableFull => {
                            bump(host, m.table_full);
                            Err(Refusal::TableFull)
                        }
                        Outcome::Contention => {
                            bump(host, m.cas_exhausted);
                            Err(Refusal::CasExhausted)
                        }
                        Outcome::StoreError => {
                            bump(host, m.store_errors);
                            Err(Refusal::StoreError)
                        }
                    }
                }
            };
            match outcome {
                Ok((fp, bucket)) => {
                    if rule.mode == Mode::Enforce {
                        let report = Self::report(
                            rule,
                            limits,
                            bucket.tokens(&limits),
                            seconds_ceil(bucket.nanos_until_full(&limits)),
                        );
                        reports.push((i, report));
                    }
                    taken.push(Taken {
                        rule: i,
                        tier,
                        fp,
                        limits,
                        bucket,
                    });
                }
                Err(refusal) if rule.mode == Mode::Shadow => {
                    bump(host, m.shadow_limited);
                    if shadow.is_none() {
                        shadow = Some((i, tier, refusal));
                    }
                }
                Err(refusal) => {
                    // Refused: tokens other rules took for it go back.
                    for t in &taken {
                        if let (Some(table), Some(r)) =
                            (shared.tables.get(t.rule), cfg.rules.get(t.rule))
                        {
                            table.give_back(host, t.fp, &t.limits, r.cost, now);
                        }
                    }
                    bump(host, m.limited);
                    publish(
                        host,
                        &decision(rule, tier, limits, DecisionOutcome::Deny, refusal),
                    );
                    return self.refuse(host, rule, limits, refusal);
                }
            }
        }
        if !matched {
            return Flow::Continue;
        }
        for t in &taken {
            bump(host, shared.metrics.get(t.rule).and_then(|m| m.allowed));
        }
        let d = match shadow {
            Some((i, tier, refusal)) => cfg.rules.get(i).and_then(|rule| {
                let limits = rule.tiers.tiers.get(tier)?.limits;
                Some(decision(
                    rule,
                    tier,
                    limits,
                    DecisionOutcome::ShadowDeny,
                    refusal,
                ))
            }),
            None => closest(&taken, cfg).map(|(rule, t)| {
                let mut d = Decision::new(RateLimitFactory::NAME, DecisionOutcome::Allow);
                d.rule = Some(rule.name.clone());
                d.detail = limit_detail(rule, t.tier, t.limits);
                d.detail
                    .push(("remaining".into(), t.bucket.tokens(&t.limits).to_string()));
                d
            }),
        };
        if let Some(d) = d {
            publish(host, &d);
        }
        if cfg.headers.on_allowed {
            // Closest to refusing first, so the legacy trio describes it.
            reports.sort_by_key(|(_, r)| r.remaining);
            self.reports = reports.into_iter().map(|(_, r)| r).collect();
        }
        Flow::Continue
    }
}

/// The rule with the fewest tokens left.
fn closest<'a>(taken: &'a [Taken], cfg: &'a RateLimitConfig) -> Option<(&'a Rule, &'a Taken)> {
    taken
        .iter()
        .min_by_key(|t| t.bucket.tokens(&t.limits))
        .and_then(|t| Some((cfg.rules.get(t.rule)?, t)))
}

/// The limit that applied, for the decision record.
fn limit_detail(rule: &Rule, tier: usize, limits: Limits) -> Vec<(String, String)> {
    let mut d = vec![
        ("limit".to_string(), limits.limit.to_string()),
        ("period_s".to_string(), limits.period_s.to_string()),
    ];
    if limits.burst > 0 {
        d.push(("burst".into(), limits.burst.to_string()));
    }
    if rule.is_tiered() {
        if let Some(t) = rule.tiers.tiers.get(tier) {
            d.push(("tier".into(), t.name.clone()));
        }
    }
    d
}

fn decision(
    rule: &Rule,
    tier: usize,
    limits: Limits,
    outcome: DecisionOutcome,
    refusal: Refusal,
) -> Decision {
    let mut d = Decision::new(RateLimitFactory::NAME, outcome);
    d.rule = Some(rule.name.clone());
    d.reason = Some(refusal.reason().to_string());
    d.detail = limit_detail(rule, tier, limits);
    match refusal {
        Refusal::KeyMissing(m) => d.detail.push(("key".into(), m.as_str().into())),
        _ => d
            .detail
            .push(("retry_after".into(), refusal.retry_after_s().to_string())),
    }
    d
}

impl HttpFilter for RateLimitStream {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        self.decide(host)
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        if self.reports.is_empty() {
            return Flow::Continue;
        }
        let h = &self.shared.cfg.headers;
        for (name, value) in fields(&self.reports, h.ietf, h.legacy) {
            host.set_header(HeaderMap::Response, name, Some(value.as_bytes()));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests;
