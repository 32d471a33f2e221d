//! Per-request rate-limit logic: the root, the stream and its callbacks. The stages live
//! beside it: [`decide`] (keys, local buckets, the rules' outcome), [`service`] (the global
//! rules' call to the rate-limit service) and [`refuse`] (refusals, replies, decisions).

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

mod decide;
mod refuse;
mod service;

use decide::*;
use refuse::*;
use service::*;

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

impl RateLimitStream {
    fn cfg(&self) -> &RateLimitConfig {
        &self.shared.cfg
    }
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
        self.answer(host, token, status, size)
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
