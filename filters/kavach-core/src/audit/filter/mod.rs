//! Per-request audit logic.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::SystemTime;

use super::collector::Collector;
use super::config::{AuditConfig, QueryMode};
use super::record::{Algorithm, Chain, Record};
use super::RECORD_PROPERTY;
use crate::config::{ConfigError, FieldPath};
use crate::decision::{self, Published};
use crate::detect::redact;
use crate::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use crate::headers::{names_with_alias_prefix, single, Single};
use crate::host::{Counter, Fact, HeaderMap, Host, HostExt, LogLevel};
use crate::text::{hex, is_uuid, sanitize};
use crate::time::{rfc3339, unix_nanos};

/// Longest path, authority or identity kept in a record before the size cap applies.
const MAX_FIELD_BYTES: usize = 2048;
/// Field length after a record had to be shortened.
const FITTED_FIELD_BYTES: usize = 128;

pub struct AuditFactory;

impl FilterFactory for AuditFactory {
    const NAME: &'static str = "audit";

    fn configure(config: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError> {
        let cfg = AuditConfig::parse(config)?;
        Ok(Box::new(AuditRoot::new(cfg, host)?))
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Metrics {
    records: Counter,
    forged_removed: Counter,
    truncated: Counter,
    sent: Counter,
    failed: Counter,
    dropped: Counter,
}

impl Metrics {
    fn define(host: &dyn Host, with_collector: bool) -> Self {
        let c = |name: &str| Counter::define(host, name);
        let collector = |name: &str| {
            if with_collector {
                c(name)
            } else {
                Counter::default()
            }
        };
        Metrics {
            records: c("kavach_audit_records_total"),
            forged_removed: c("kavach_audit_forged_headers_removed_total"),
            truncated: c("kavach_audit_records_truncated_total"),
            sent: collector("kavach_audit_collector_sent_total"),
            failed: collector("kavach_audit_collector_failed_total"),
            dropped: collector("kavach_audit_collector_dropped_total"),
        }
    }
}

/// Per-VM state shared by the root and every stream of this VM.
struct Shared {
    cfg: AuditConfig,
    chain: RefCell<Chain>,
    collector: RefCell<Option<Collector>>,
    metrics: Metrics,
    ids: IdGenerator,
    /// The node id and region: fixed for the life of the VM, read on the first request.
    node: RefCell<Option<(Option<String>, Option<String>)>>,
}

/// Audit ids: 128 random bits drawn once per VM, plus a per-VM counter, formatted as an RFC 9562
/// UUIDv8 (the vendor-specific version). Unique within a VM by the counter and across VMs
/// (workers, restarts) by the random part, without asking the host for randomness per request.
struct IdGenerator {
    base: [u8; 16],
    counter: std::cell::Cell<u64>,
}

impl IdGenerator {
    fn next(&self) -> String {
        let n = self.counter.get().wrapping_add(1);
        self.counter.set(n);
        let mut b = self.base;
        let low = u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        b[8..16].copy_from_slice(&low.wrapping_add(n).to_be_bytes());
        b[6] = (b[6] & 0x0f) | 0x80;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

pub struct AuditRoot {
    shared: Rc<Shared>,
}

impl AuditRoot {
    fn new(cfg: AuditConfig, host: &dyn Host) -> Result<Self, ConfigError> {
        let key = match &cfg.chain_key_env {
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.is_empty() => Some(k.into_bytes()),
                _ => {
                    return Err(FieldPath::root().field("chain_key_env").error(format!(
                        "environment variable {var:?} is not set in the VM (vm_config.environment_variables)"
                    )))
                }
            },
            None => None,
        };
        let mut id = [0u8; 16];
        let mut id_base = [0u8; 16];
        if !host.random(&mut id) || !host.random(&mut id_base) {
            return Err(FieldPath::root().error("the host gave no randomness for the chain id"));
        }
        let chain = Chain::new(hex(&id), key);
        let metrics = Metrics::define(host, cfg.collector.is_some());
        let collector = cfg.collector.clone().map(Collector::new);
        host.log(
            LogLevel::Info,
            &format!(
                "audit chain {} started ({})",
                chain.id(),
                match chain.algorithm() {
                    Algorithm::Sha256 => "sha256",
                    Algorithm::HmacSha256 => "hmac-sha256",
                }
            ),
        );
        Ok(AuditRoot {
            shared: Rc::new(Shared {
                cfg,
                chain: RefCell::new(chain),
                collector: RefCell::new(collector),
                metrics,
                ids: IdGenerator {
                    base: id_base,
                    counter: std::cell::Cell::new(0),
                },
                node: RefCell::new(None),
            }),
        })
    }

    fn flush_counts(&self, host: &dyn Host) {
        let counts = match self.shared.collector.borrow_mut().as_mut() {
            Some(c) => c.take_counts(),
            None => return,
        };
        let m = self.shared.metrics;
        m.sent.add(host, counts.sent);
        m.failed.add(host, counts.failed_attempts);
        m.dropped.add(host, counts.dropped);
    }
}

fn now_ms(host: &dyn Host) -> u64 {
    unix_nanos(host.now()) / 1_000_000
}

impl FilterRoot for AuditRoot {
    fn name(&self) -> &'static str {
        AuditFactory::NAME
    }

    fn new_stream(&self) -> Box<dyn HttpFilter> {
        Box::new(AuditStream {
            shared: Rc::clone(&self.shared),
            seen: None,
        })
    }

    fn tick_period_ms(&self) -> Option<u64> {
        self.shared
            .collector
            .borrow()
            .as_ref()
            .map(Collector::flush_interval_ms)
    }

    fn on_tick(&mut self, host: &dyn Host) {
        let now = now_ms(host);
        let mut guard = self.shared.collector.borrow_mut();
        let Some(collector) = guard.as_mut() else {
            return;
        };
        if let Some(send) = collector.next(now) {
            let headers = [
                (":method", "POST"),
                (":path", send.path.as_str()),
                (":authority", send.authority.as_str()),
                ("content-type", "application/x-ndjson"),
            ];
            match host.http_call(&send.cluster, &headers, &send.body, send.timeout) {
                Some(token) => collector.dispatched(token),
                None => {
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "audit collector call to cluster {:?} could not start",
                            send.cluster
                        ),
                    );
                    collector.failed(now);
                }
            }
        }
        drop(guard);
        self.flush_counts(host);
    }

    fn on_http_call_response(&mut self, host: &dyn Host, token: u32) -> bool {
        let now = now_ms(host);
        {
            let mut guard = self.shared.collector.borrow_mut();
            let Some(collector) = guard.as_mut().filter(|c| c.owns(token)) else {
                return false;
            };
            match host.http_call_status() {
                Some(status) if (200..300).contains(&status) => collector.sent(),
                status => {
                    host.log(
                        LogLevel::Warn,
                        &format!("audit collector batch failed (status {status:?}); will retry"),
                    );
                    collector.failed(now);
                }
            }
        }
        self.flush_counts(host);
        true
    }
}

/// What the stream learned when the request arrived.
struct Seen {
    audit_id: String,
    ts: String,
    start: SystemTime,
    request_id: Option<String>,
    method: String,
    path: String,
    authority: String,
    principal: Option<String>,
    source: Option<String>,
    node: Option<String>,
    region: Option<String>,
    /// Observed at log time (the request never reached this filter's request callback).
    late: bool,
}

pub struct AuditStream {
    shared: Rc<Shared>,
    seen: Option<Seen>,
}

impl AuditStream {
    fn clean(&self, bytes: &[u8]) -> String {
        let (text, _) = sanitize(bytes, MAX_FIELD_BYTES);
        match redact(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(masked) => masked,
        }
    }

    fn header_text(&self, headers: &crate::host::Headers, name: &str) -> Option<String> {
        match single(headers, name) {
            Single::One(v) if !v.is_empty() => Some(self.clean(v)),
            _ => None,
        }
    }

    fn new_audit_id(&self, headers: &crate::host::Headers) -> String {
        if self.shared.cfg.audit_id_from_request_id {
            if let Single::One(v) = single(headers, "x-request-id") {
                if is_uuid(v) {
                    return String::from_utf8_lossy(v).to_ascii_lowercase();
                }
            }
        }
        self.shared.ids.next()
    }

    /// The node id and region (cached: they do not change while the VM lives).
    fn node(&self, host: &dyn Host) -> (Option<String>, Option<String>) {
        if let Some(n) = self.shared.node.borrow().as_ref() {
            return n.clone();
        }
        let prop = |path: &[&str]| {
            host.property(path)
                .filter(|v| !v.is_empty())
                .map(|v| self.clean(&v))
        };
        let key = self.shared.cfg.region_metadata_key.as_str();
        let node = (
            prop(&["xds", "node", "id"]),
            prop(&["xds", "node", "metadata", key])
                .or_else(|| prop(&["xds", "node", "locality", "region"])),
        );
        *self.shared.node.borrow_mut() = Some(node.clone());
        node
    }

    fn record_path(&self, raw: &str) -> String {
        let raw = raw.split('#').next().unwrap_or("");
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        match (self.shared.cfg.query, query) {
            (QueryMode::RedactValues, Some(q)) if !q.is_empty() => {
                let keys: Vec<String> = q
                    .split('&')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let key = kv.split('=').next().unwrap_or("");
                        format!("{}=<redacted>", redact(key))
                    })
                    .collect();
                format!("{}?{}", redact(path), keys.join("&"))
            }
            _ => redact(path).into_owned(),
        }
    }

    fn observe(&self, host: &dyn Host, headers: &crate::host::Headers) -> Seen {
        let cfg = &self.shared.cfg;
        let start = host.now();
        let fact = |f: Fact| host.fact(f).map(|v| self.clean(&v));
        // Sanitised here, redacted (path and query keys) by record_path.
        let raw_path = match single(headers, ":path") {
            Single::One(v) => sanitize(v, MAX_FIELD_BYTES).0,
            _ => String::new(),
        };
        let (node, region) = self.node(host);
        Seen {
            audit_id: self.new_audit_id(headers),
            ts: rfc3339(start, cfg.utc_offset),
            start,
            request_id: self.header_text(headers, "x-request-id"),
            method: self.header_text(headers, ":method").unwrap_or_default(),
            path: self.record_path(&raw_path),
            authority: self.header_text(headers, ":authority").unwrap_or_default(),
            principal: fact(Fact::PeerPrincipal),
            source: fact(Fact::SourceAddress),
            node,
            region,
            late: false,
        }
    }

    /// Fallback when the request never reached this filter (an earlier filter replied).
    fn observe_late(&self, host: &dyn Host) -> Seen {
        let mut seen = self.observe(host, &Vec::new());
        seen.late = true;
        let prop = |path: &[&str]| {
            host.property(path)
                .filter(|v| !v.is_empty())
                .map(|v| self.clean(&v))
        };
        seen.method = prop(&["request", "method"]).unwrap_or_default();
        seen.path = self.record_path(&prop(&["request", "path"]).unwrap_or_default());
        seen.authority = prop(&["request", "host"]).unwrap_or_default();
        seen.request_id = prop(&["request", "id"]);
        if let Some(t) = host.property_i64(&["request", "time"]) {
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(u64::try_from(t).unwrap_or(0));
            seen.start = t;
            seen.ts = rfc3339(t, self.shared.cfg.utc_offset);
        }
        seen
    }

    fn inject(&self, host: &dyn Host, seen: &Seen) {
        let cfg = &self.shared.cfg;
        let names = &cfg.headers;
        // Values are already clean (sanitised, redacted): only the header cap may still cut.
        let put = |name: &str, value: &Option<String>| {
            if let Some(v) = value {
                let mut end = v.len().min(cfg.max_header_value_bytes);
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                host.set_header(HeaderMap::Request, name, v.as_bytes().get(..end));
            }
        };
        // Generated by us: ASCII, bounded, nothing to escape.
        host.set_header(
            HeaderMap::Request,
            &names.id,
            Some(seen.audit_id.as_bytes()),
        );
        host.set_header(
            HeaderMap::Request,
            &names.timestamp,
            Some(seen.ts.as_bytes()),
        );
        put(&names.principal, &seen.principal);
        put(&names.source, &seen.source);
        put(&names.node, &seen.node);
        put(&names.region, &seen.region);
    }

    fn build_record(&self, host: &dyn Host, seen: Seen) -> Record {
        let mut decisions = Vec::new();
        let mut invalid = Vec::new();
        for p in decision::collect(host) {
            match p {
                Published::Decision(mut d) => {
                    // Values the filters took from traffic are cleaned here, once; what is
                    // already clean (most of it) is kept without a copy.
                    let clean = |s: &str| (!is_clean(s)).then(|| self.clean(s.as_bytes()));
                    for r in d.rule.iter_mut().chain(d.policy_version.iter_mut()) {
                        if let Some(c) = clean(r) {
                            *r = c;
                        }
                    }
                    for r in d.reason.iter_mut() {
                        if let Some(c) = clean(r) {
                            *r = c.into();
                        }
                    }
                    for (k, v) in d.detail.iter_mut() {
                        if let Some(c) = clean(k) {
                            *k = c.into();
                        }
                        if let Some(c) = clean(v) {
                            *v = c;
                        }
                    }
                    decisions.push(d);
                }
                Published::Invalid { filter } => invalid.push(filter),
            }
        }
        // From our own clock (one cheap host call) when we saw the request start; Envoy's
        // request.duration otherwise.
        let own = || {
            host.now()
                .duration_since(seen.start)
                .ok()
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        };
        let envoys = || {
            host.property_i64(&["request", "duration"])
                .and_then(|ns| u64::try_from(ns).ok())
                .map(|ns| ns / 1000)
        };
        let duration_us = if seen.late {
            envoys().or_else(own)
        } else {
            own()
        };
        let num = |path: &[&str]| host.property_i64(path).and_then(|v| u64::try_from(v).ok());
        let status = host
            .fact_i64(Fact::ResponseCode)
            .and_then(|c| u32::try_from(c).ok());
        Record {
            v: 0,
            alg: Algorithm::Sha256,
            chain: String::new(),
            seq: 0,
            prev: String::new(),
            ts: seen.ts,
            audit_id: seen.audit_id,
            request_id: seen.request_id,
            method: seen.method,
            path: seen.path,
            authority: seen.authority,
            status,
            duration_us,
            bytes_in: num(&["request", "total_size"]),
            bytes_out: num(&["response", "total_size"]),
            cluster: host.fact(Fact::ClusterName).map(|v| self.clean(&v)),
            principal: seen.principal,
            source: seen.source,
            node: seen.node,
            region: seen.region,
            decisions,
            invalid_decisions: invalid,
            truncated: false,
        }
    }
}

/// Whether `text` is already what [`AuditStream::clean`] would make of it: short printable
/// ASCII with nothing to redact.
fn is_clean(text: &str) -> bool {
    text.len() <= MAX_FIELD_BYTES
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && matches!(redact(text), std::borrow::Cow::Borrowed(_))
}

/// Shortens a record that is over the size cap; false once nothing more can be cut.
fn fit(record: &mut Record) -> bool {
    if record.truncated && record.decisions.is_empty() {
        return false;
    }
    let cut = |s: &mut String| {
        if s.len() > FITTED_FIELD_BYTES {
            let mut end = FITTED_FIELD_BYTES;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    };
    if record.truncated {
        // Second round: decisions go (their filters' counters still have them).
        record.decisions.clear();
        return true;
    }
    for s in [
        &mut record.path,
        &mut record.authority,
        &mut record.audit_id,
    ] {
        cut(s);
    }
    for s in [
        &mut record.request_id,
        &mut record.principal,
        &mut record.source,
        &mut record.node,
        &mut record.region,
        &mut record.cluster,
    ]
    .into_iter()
    .flatten()
    {
        cut(s);
    }
    for d in &mut record.decisions {
        d.detail.clear();
    }
    record.truncated = true;
    true
}

impl HttpFilter for AuditStream {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        let headers = host.request_headers();
        let forged = names_with_alias_prefix(&headers, &self.shared.cfg.header_prefix);
        let seen = self.observe(host, &headers);
        // Let go of the headers before changing them: the context then changes its copy in
        // place instead of copying it.
        drop(headers);
        // Strip before anything else: nothing under our prefix may come from the client.
        for name in &forged {
            host.set_header(HeaderMap::Request, name, None);
        }
        self.shared
            .metrics
            .forged_removed
            .add(host, forged.len() as u64);
        self.inject(host, &seen);
        host.set_audit_id(&seen.audit_id);
        self.seen = Some(seen);
        Flow::Continue
    }

    fn on_response_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        if self.shared.cfg.return_audit_id {
            if let Some(seen) = &self.seen {
                host.set_header(
                    HeaderMap::Response,
                    &self.shared.cfg.headers.id,
                    Some(seen.audit_id.as_bytes()),
                );
            }
        }
        Flow::Continue
    }

    fn on_log(&mut self, host: &dyn Host) {
        let seen = match self.seen.take() {
            Some(s) => s,
            None => self.observe_late(host),
        };
        let mut record = self.build_record(host, seen);
        let max = self.shared.cfg.max_record_bytes;
        let line = self.shared.chain.borrow_mut().seal(&mut record, max, fit);
        let Some(line) = line else {
            host.log(LogLevel::Error, "audit record could not be serialised");
            return;
        };
        let m = self.shared.metrics;
        m.records.bump(host);
        if record.truncated {
            m.truncated.bump(host);
        }
        host.set_property(&[RECORD_PROPERTY], line.as_bytes());
        if let Some(c) = self.shared.collector.borrow_mut().as_mut() {
            // A full queue drops the record; the collector counts it and the next tick
            // publishes the count. The access log still has the record.
            c.push(line);
        }
    }
}

#[cfg(test)]
mod tests;
