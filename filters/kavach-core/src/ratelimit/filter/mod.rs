//! Per-request rate-limit logic.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::bucket::{seconds_ceil, Bucket, Limits};
use super::config::{
    FailureMode, KeyPart, Mode, RateLimitConfig, Rule, TierSource, WhenKeyMissing,
};
use super::fields::{fields, key_missing_body, limited_body, unavailable_body, Report};
use super::key::{canonical_network, client_address, header_value, text_value, KeyBytes, Missing};
use super::matcher::canonical_path;
use super::rls::{
    decode_response, encode_request, Code, Descriptor, Response as RlsResponse,
    Status as RlsStatus, MAX_RESPONSE_BYTES, METHOD, SERVICE,
};
use super::table::{fingerprint, shared_seed, Outcome, Seed, Table};
use crate::config::ConfigError;
use crate::decision::{Decision, Outcome as DecisionOutcome};
use crate::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use crate::headers::{single, Single};
use crate::host::{Counter, Fact, HeaderMap, Headers, Host, LogLevel};
use crate::time::unix_nanos;

/// `retry-after` when no bucket says when to come back (table full, contention, store error).
const RETRY_UNKNOWN_S: u64 = 1;

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
    allowed: Counter,
    limited: Counter,
    shadow_limited: Counter,
    table_full: Counter,
    cas_exhausted: Counter,
    store_errors: Counter,
    key_missing: Counter,
    service_errors: Counter,
}

impl RuleMetrics {
    fn define(host: &dyn Host, rule: &Rule) -> Self {
        let c = |what: &str| {
            Counter::define(
                host,
                &format!("kavach_ratelimit_{what}_total.rule.{}", rule.name),
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
            service_errors: if rule.global {
                c("service_errors")
            } else {
                Counter::default()
            },
        }
    }
}

struct Shared {
    cfg: RateLimitConfig,
    seed: Seed,
    /// Per rule; None for a global rule without a local fallback.
    tables: Vec<Option<Table>>,
    metrics: Vec<RuleMetrics>,
    /// The first failure to reach the rate-limit service is logged as a warning; later ones
    /// are counted (`kavach_ratelimit_service_errors_total`) and logged at debug level.
    warned: Cell<bool>,
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
        let mut slots: u64 = 0;
        for rule in &cfg.rules {
            if cfg.has_local_table(rule) {
                let table = Table::new(
                    &rule.name,
                    rule.slots,
                    cfg.probes,
                    cfg.cas_retries,
                    rule.tag,
                );
                created += table.create_slots(host).map_err(store_error)?;
                slots += u64::from(rule.slots);
                tables.push(Some(table));
            } else {
                tables.push(None);
            }
            metrics.push(RuleMetrics::define(host, rule));
        }
        host.log(
            LogLevel::Info,
            &format!(
                "ratelimit: {} rules ({} global), {slots} slots ({created} created by this worker)",
                cfg.rules.len(),
                cfg.rules.iter().filter(|r| r.global).count(),
            ),
        );
        Ok(RateLimitRoot {
            shared: Rc::new(Shared {
                cfg,
                seed,
                tables,
                metrics,
                warned: Cell::new(false),
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
            pending: None,
        })
    }
}

pub struct RateLimitStream {
    shared: Rc<Shared>,
    /// What to tell the client on a response that passed (only with `on_allowed`).
    reports: Vec<Report>,
    /// The request waits for the rate-limit service.
    pending: Option<Pending>,
}

/// Tokens a rule took for this request (given back if another rule refuses it).
struct Taken {
    rule: usize,
    fp: u64,
    limits: Limits,
}

/// A rule that let the request through.
struct Admitted {
    rule: usize,
    tier: usize,
    limits: Limits,
    remaining: u64,
}

/// How a rule let a request through.
enum Admit {
    /// A bucket in this Envoy's shared data.
    Local { fp: u64, bucket: Bucket },
    /// The rate-limit service said OK.
    Global {
        limits: Limits,
        remaining: u64,
        reset_s: u64,
    },
}

/// Why a rule refuses (or, in shadow mode, would refuse) the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
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
    fn reason(self) -> &'static str {
        match self {
            Refusal::Limited { .. } => "limited",
            Refusal::TableFull => "table_full",
            Refusal::CasExhausted => "cas_exhausted",
            Refusal::StoreError => "store_error",
            Refusal::KeyMissing(_) => "key_missing",
            Refusal::ServiceUnavailable => "service_unavailable",
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

/// A global rule that applies to the request, waiting for the service's verdict.
struct GlobalHit {
    rule: usize,
    tier: usize,
    limits: Limits,
    /// The local bucket key, for `failure_mode: local`.
    key: KeyBytes,
    descriptor: Descriptor,
}

/// Where a request stands while its rules are decided.
struct Progress {
    now: u64,
    matched: bool,
    taken: Vec<Taken>,
    admitted: Vec<Admitted>,
    reports: Vec<Report>,
    /// The first rule that would refuse in shadow mode: (rule, tier, limits, why).
    shadow: Option<(usize, usize, Limits, Refusal)>,
    /// What the rate-limit service said (`ok`, `timeout`, `unavailable`...), when asked.
    service: Option<String>,
}

struct Pending {
    token: u32,
    hits: Vec<GlobalHit>,
    progress: Progress,
}

/// Why the rate-limit service gave no usable verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServiceFailure {
    /// The call could not start (no such cluster in Envoy).
    NotStarted,
    /// gRPC status of the failed call (4: deadline exceeded, 14: unavailable...).
    Status(u32),
    /// An answer that is not a readable `RateLimitResponse` or says neither OK nor OVER_LIMIT.
    BadAnswer,
}

impl ServiceFailure {
    fn as_string(self) -> String {
        match self {
            ServiceFailure::NotStarted => "not_started".into(),
            ServiceFailure::Status(4) => "timeout".into(),
            ServiceFailure::Status(14) => "unavailable".into(),
            ServiceFailure::Status(n) => format!("grpc_status_{n}"),
            ServiceFailure::BadAnswer => "bad_answer".into(),
        }
    }
}

/// A fact of the request as key text (None when absent or not usable as a key).
fn fact_text(host: &dyn Host, fact: Fact) -> Option<String> {
    host.fact(fact).and_then(|v| text_value(&v, false).ok())
}

/// Descriptor entry key of a key part (the names Envoy's own rate-limit actions use where one
/// exists; a header's entry is named after the header).
fn entry_key(part: &KeyPart) -> &str {
    match part {
        KeyPart::ClientAddress => "remote_address",
        KeyPart::Principal => "principal",
        KeyPart::Route => "route",
        KeyPart::Header { name, .. } => name,
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
            TierSource::Principal(map) => {
                fact_text(host, Fact::PeerPrincipal).and_then(|p| map.get(&p).copied())
            }
        };
        found.unwrap_or(tiers.default)
    }

    /// The canonical value of each key part of the rule, in order.
    fn key_values(
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
    fn key(
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
    fn take_local(
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

    fn report(rule: &Rule, limits: Limits, remaining: u64, reset_s: u64) -> Report {
        Report {
            rule: rule.name.clone(),
            limits,
            remaining,
            reset_s,
        }
    }

    /// Sends the refusal: 400 for a request the rule cannot identify, 503 when the rate-limit
    /// service failed (`failure_mode: deny`), 429 otherwise.
    fn refuse(&self, host: &dyn Host, rule: &Rule, limits: Limits, refusal: Refusal) -> Flow {
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

    /// Applies one rule's verdict. Some(flow) when the request is refused (the reply is sent).
    fn settle(
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

    fn decide(&mut self, host: &dyn Host) -> Flow {
        let shared = Rc::clone(&self.shared);
        let cfg = &shared.cfg;
        let headers = host.request_headers();
        let text = |name: &str| match single(&headers, name) {
            Single::One(v) => String::from_utf8_lossy(v).into_owned(),
            _ => String::new(),
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
        let Some(service) = cfg.service.as_ref() else {
            return self.resolve(host, hits, p, Err(ServiceFailure::NotStarted));
        };
        let message = encode_request(&service.domain, hits.iter().map(|h| &h.descriptor));
        let timeout = Duration::from_millis(service.timeout_ms);
        match host.grpc_call(&service.cluster, SERVICE, METHOD, &message, timeout) {
            Some(token) => {
                self.pending = Some(Pending {
                    token,
                    hits,
                    progress: p,
                });
                Flow::Stop
            }
            None => self.resolve(host, hits, p, Err(ServiceFailure::NotStarted)),
        }
    }

    /// The service's answer (or its failure) for the global rules, then the request's outcome.
    fn resolve(
        &mut self,
        host: &dyn Host,
        hits: Vec<GlobalHit>,
        mut p: Progress,
        answer: Result<RlsResponse, ServiceFailure>,
    ) -> Flow {
        let answer = answer.and_then(|r| match r.overall {
            Code::Ok | Code::OverLimit => Ok(r),
            Code::Unknown => Err(ServiceFailure::BadAnswer),
        });
        match answer {
            Ok(r) => {
                p.service = Some(
                    match r.overall {
                        Code::OverLimit => "over_limit",
                        _ => "ok",
                    }
                    .into(),
                );
                for (n, hit) in hits.iter().enumerate() {
                    let verdict = global_verdict(&r, n, hit.limits);
                    let limits = match &verdict {
                        Ok(Admit::Global { limits, .. }) => *limits,
                        _ => reported_limits(r.statuses.get(n), hit.limits),
                    };
                    if let Some(flow) =
                        self.settle(host, &mut p, (hit.rule, hit.tier, limits), verdict)
                    {
                        return flow;
                    }
                }
            }
            Err(failure) => {
                let what = failure.as_string();
                let message = format!("ratelimit: rate-limit service gave no verdict ({what})");
                if self.shared.warned.replace(true) {
                    host.log(LogLevel::Debug, &message);
                } else {
                    host.log(LogLevel::Warn, &format!("{message}; failures are counted in kavach_ratelimit_service_errors_total"));
                }
                p.service = Some(what);
                p.now = unix_nanos(host.now());
                let mode = self.cfg().service.as_ref().map(|s| s.failure_mode);
                for hit in &hits {
                    let m = self
                        .shared
                        .metrics
                        .get(hit.rule)
                        .copied()
                        .unwrap_or_default();
                    m.service_errors.bump(host);
                    let verdict = match mode {
                        Some(FailureMode::Allow) => continue,
                        Some(FailureMode::Local) => {
                            self.take_local(host, hit.rule, &hit.limits, &hit.key, p.now)
                        }
                        Some(FailureMode::Deny) | None => Err(Refusal::ServiceUnavailable),
                    };
                    if let Some(flow) =
                        self.settle(host, &mut p, (hit.rule, hit.tier, hit.limits), verdict)
                    {
                        return flow;
                    }
                }
            }
        }
        self.finish(host, p)
    }

    /// Every rule let the request through (or only shadow rules refused it).
    fn finish(&mut self, host: &dyn Host, p: Progress) -> Flow {
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

/// The limits to report for a descriptor: the service's own when it says them.
fn reported_limits(status: Option<&RlsStatus>, fallback: Limits) -> Limits {
    match status.and_then(|s| s.current_limit.as_ref()) {
        Some(l) if l.requests_per_unit > 0 && l.unit_s > 0 => Limits {
            limit: u64::from(l.requests_per_unit),
            period_s: l.unit_s,
            burst: 0,
        },
        _ => fallback,
    }
}

/// The verdict of the `n`th descriptor; without a status of its own, the overall code decides.
fn global_verdict(r: &RlsResponse, n: usize, fallback: Limits) -> Result<Admit, Refusal> {
    let status = r.statuses.get(n);
    let limits = reported_limits(status, fallback);
    let over = match status {
        Some(s) => s.code == Code::OverLimit,
        None => r.overall == Code::OverLimit,
    };
    let remaining = status.map_or(0, |s| u64::from(s.remaining));
    let reset_s = status.and_then(|s| s.reset_s).unwrap_or(limits.period_s);
    if over {
        Err(Refusal::Limited {
            remaining,
            wait_ns: reset_s.saturating_mul(1_000_000_000),
        })
    } else {
        Ok(Admit::Global {
            limits,
            remaining,
            reset_s,
        })
    }
}

/// The limit that applied, for the decision record.
fn limit_detail(rule: &Rule, tier: usize, limits: Limits) -> Vec<(Cow<'static, str>, String)> {
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

fn decision(
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

impl HttpFilter for RateLimitStream {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        self.decide(host)
    }

    /// While the service decides, the body waits too.
    fn on_request_body(&mut self, _host: &dyn Host, _size: usize, _end_of_stream: bool) -> Flow {
        if self.pending.is_some() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn on_request_trailers(&mut self, _host: &dyn Host) -> Flow {
        if self.pending.is_some() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) -> Flow {
        let Some(pending) = self.pending.take() else {
            return Flow::Stop;
        };
        if pending.token != token {
            self.pending = Some(pending);
            return Flow::Stop;
        }
        let answer = if status != 0 {
            Err(ServiceFailure::Status(status))
        } else if size > MAX_RESPONSE_BYTES {
            Err(ServiceFailure::BadAnswer)
        } else {
            host.grpc_response(size)
                .ok_or(ServiceFailure::BadAnswer)
                .and_then(|b| decode_response(&b).map_err(|_| ServiceFailure::BadAnswer))
        };
        self.resolve(host, pending.hits, pending.progress, answer)
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
