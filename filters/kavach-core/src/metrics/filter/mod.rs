//! Per-request metrics logic: label values when the request arrives, the series and the value
//! when the stream completes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::admission::{Admission, Budget, Overflow};
use super::config::{HistogramValue, Kind, MetricConfig, MetricsConfig, Source};
use super::label::{self, label_value, method_value, status_class, status_code, MULTIPLE, NONE};
use super::naming::{overflow_counter_name, series_gauge_name, series_name};
use super::path_template::path_label;
use crate::config::{ConfigError, FieldPath};
use crate::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use crate::headers::{single, Single};
use crate::host::{Fact, HeaderMap, Headers, Host, HostExt, LogLevel, MetricKind};

pub struct MetricsFactory;

impl FilterFactory for MetricsFactory {
    const NAME: &'static str = "metrics";

    fn configure(config: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError> {
        let cfg = MetricsConfig::parse(config)?;
        Ok(Box::new(MetricsRoot::new(cfg, host)?))
    }
}

/// One metric's state in this VM.
struct MetricState {
    budget: Budget,
    /// Series this VM has defined, by name. Only admitted series enter, so it holds at most
    /// `max_series` entries.
    series: HashMap<String, u32>,
    other: Option<u32>,
    overflow: Option<u32>,
    series_gauge: Option<u32>,
    /// The "budget spent" warning was logged by this VM.
    warned: bool,
}

/// Which facts of the completed stream some label needs.
#[derive(Debug, Default)]
struct Wanted {
    status: bool,
    route: bool,
    cluster: bool,
    principal: bool,
}

/// Per-VM state shared by the root and every stream of this VM.
struct Shared {
    wanted: Wanted,
    /// A histogram records the duration: note when the request arrives.
    wants_start: bool,
    cfg: MetricsConfig,
    /// Distinct request headers used as labels, in first-use order.
    headers: Vec<String>,
    states: RefCell<Vec<MetricState>>,
}

pub struct MetricsRoot {
    shared: Rc<Shared>,
}

fn kind_of(m: &MetricConfig) -> MetricKind {
    match m.kind {
        Kind::Counter => MetricKind::Counter,
        Kind::Histogram(_) => MetricKind::Histogram,
    }
}

impl MetricsRoot {
    fn new(cfg: MetricsConfig, host: &dyn Host) -> Result<Self, ConfigError> {
        let mut headers: Vec<String> = Vec::new();
        for m in &cfg.metrics {
            for l in &m.labels {
                if let Source::Header(h) = &l.source {
                    if !headers.contains(h) {
                        headers.push(h.clone());
                    }
                }
            }
        }
        let mut states = Vec::with_capacity(cfg.metrics.len());
        for (i, m) in cfg.metrics.iter().enumerate() {
            let budget = Budget::new(&m.name, m.max_series);
            let admitted = budget
                .init(host)
                .map_err(|reason| FieldPath::root().field("metrics").index(i).error(reason))?;
            let other = series_name(
                &m.name,
                m.labels.iter().map(|l| (l.name.as_str(), label::OTHER)),
            );
            states.push(MetricState {
                budget,
                series: HashMap::new(),
                other: host.define_metric(kind_of(m), &other),
                overflow: host.define_metric(MetricKind::Counter, &overflow_counter_name(&m.name)),
                series_gauge: host.define_metric(MetricKind::Gauge, &series_gauge_name(&m.name)),
                warned: false,
            });
            host.log(
                LogLevel::Info,
                &format!(
                    "metric {}: {} of {} series admitted in this process",
                    m.name, admitted, m.max_series
                ),
            );
        }
        let mut wanted = Wanted::default();
        for l in cfg.metrics.iter().flat_map(|m| m.labels.iter()) {
            match l.source {
                Source::StatusCode | Source::StatusClass => wanted.status = true,
                Source::Route => wanted.route = true,
                Source::Cluster => wanted.cluster = true,
                Source::Principal => wanted.principal = true,
                _ => {}
            }
        }
        let wants_start = cfg
            .metrics
            .iter()
            .any(|m| matches!(m.kind, Kind::Histogram(HistogramValue::DurationMs)));
        Ok(MetricsRoot {
            shared: Rc::new(Shared {
                wanted,
                wants_start,
                cfg,
                headers,
                states: RefCell::new(states),
            }),
        })
    }
}

impl FilterRoot for MetricsRoot {
    fn name(&self) -> &'static str {
        MetricsFactory::NAME
    }

    fn new_stream(&self) -> Box<dyn HttpFilter> {
        Box::new(MetricsStream {
            shared: Rc::clone(&self.shared),
            request: None,
        })
    }
}

/// Label values known when the request arrives.
struct RequestSide {
    /// When this filter saw the request (None when it never did).
    start: Option<std::time::SystemTime>,
    method: String,
    path: String,
    /// One value per entry of `Shared::headers`.
    headers: Vec<String>,
}

impl RequestSide {
    fn capture(shared: &Shared, headers: &Headers) -> Self {
        let max = shared.cfg.max_label_bytes;
        let method = match single(headers, ":method") {
            Single::One(v) => method_value(v),
            _ => NONE.into(),
        };
        let path = match single(headers, ":path") {
            Single::One(v) => path_label(v, &shared.cfg.path_templates, max),
            _ => NONE.into(),
        };
        let headers = shared
            .headers
            .iter()
            .map(|name| match single(headers, name) {
                Single::Absent => NONE.into(),
                Single::One(v) => label_value(v, max),
                Single::Duplicated => MULTIPLE.into(),
            })
            .collect();
        RequestSide {
            start: None,
            method,
            path,
            headers,
        }
    }

    /// When the request never reached this filter (an earlier filter answered it), the
    /// request attributes still name the method and path.
    fn late(shared: &Shared, host: &dyn Host) -> Self {
        let headers = host.headers(HeaderMap::Request);
        if !headers.is_empty() {
            return Self::capture(shared, &headers);
        }
        let mut side = Self::capture(shared, &Vec::new());
        if let Some(m) = host.property(&["request", "method"]) {
            side.method = method_value(&m);
        }
        if let Some(p) = host.property(&["request", "path"]) {
            side.path = path_label(&p, &shared.cfg.path_templates, shared.cfg.max_label_bytes);
        }
        side
    }
}

/// Label values known when the stream completes.
struct ResponseSide {
    code: Option<i64>,
    route: String,
    cluster: String,
    principal: String,
}

impl ResponseSide {
    /// Only the facts some label uses are asked for.
    fn read(host: &dyn Host, max: usize, wanted: &Wanted) -> Self {
        let fact = |f: Fact, want: bool| match want.then(|| host.fact(f)).flatten() {
            Some(v) => label_value(&v, max),
            None => NONE.into(),
        };
        ResponseSide {
            code: if wanted.status {
                host.fact_i64(Fact::ResponseCode)
            } else {
                None
            },
            route: fact(Fact::RouteName, wanted.route),
            cluster: fact(Fact::ClusterName, wanted.cluster),
            principal: fact(Fact::PeerPrincipal, wanted.principal),
        }
    }
}

pub struct MetricsStream {
    shared: Rc<Shared>,
    request: Option<RequestSide>,
}

/// The value a histogram records. The duration is measured with the request's own clock
/// readings (from when this filter saw the request to the end of the stream); Envoy's
/// `request.duration` only for a request this filter never saw.
fn histogram_value(host: &dyn Host, v: HistogramValue, req: &RequestSide) -> Option<u64> {
    let read = |path: &[&str]| host.property_i64(path).and_then(|n| u64::try_from(n).ok());
    match v {
        HistogramValue::DurationMs => match req.start {
            Some(start) => host
                .now()
                .duration_since(start)
                .ok()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => read(&["request", "duration"]).map(|ns| ns / 1_000_000),
        },
        HistogramValue::RequestBytes => read(&["request", "total_size"]),
        HistogramValue::ResponseBytes => read(&["response", "total_size"]),
    }
}

impl MetricsStream {
    fn label<'a>(
        &self,
        source: &Source,
        req: &'a RequestSide,
        resp: &'a ResponseSide,
        status: &'a (String, String),
    ) -> &'a str {
        match source {
            Source::Method => &req.method,
            Source::Path => &req.path,
            Source::Header(name) => self
                .shared
                .headers
                .iter()
                .position(|h| h == name)
                .and_then(|i| req.headers.get(i))
                .map_or(NONE, String::as_str),
            Source::StatusCode => &status.0,
            Source::StatusClass => &status.1,
            Source::Route => &resp.route,
            Source::Cluster => &resp.cluster,
            Source::Principal => &resp.principal,
        }
    }
}

impl MetricState {
    /// The metric id to record `series` in: its own series when admitted, else `(other)`.
    fn target(&mut self, host: &dyn Host, metric: &MetricConfig, series: String) -> Option<u32> {
        if let Some(id) = self.series.get(&series) {
            return Some(*id);
        }
        match self.budget.admit(host, &series) {
            Admission::Admitted { new } => {
                if new {
                    if let Some(g) = self.series_gauge {
                        host.increment_metric(g, 1);
                    }
                }
                if let Some(id) = host.define_metric(kind_of(metric), &series) {
                    self.series.insert(series, id);
                    return Some(id);
                }
                host.log(
                    LogLevel::Warn,
                    &format!("metric {}: the host refused series {series:?}", metric.name),
                );
            }
            Admission::Overflow(reason) => {
                if reason == Overflow::Full && !self.warned {
                    self.warned = true;
                    host.log(
                        LogLevel::Warn,
                        &format!(
                            "metric {}: all {} series of its budget are in use; new label combinations count in its (other) series",
                            metric.name, metric.max_series
                        ),
                    );
                }
            }
        }
        if let Some(o) = self.overflow {
            host.increment_metric(o, 1);
        }
        self.other
    }
}

impl HttpFilter for MetricsStream {
    fn on_request_headers(&mut self, host: &dyn Host, _end_of_stream: bool) -> Flow {
        let headers = host.request_headers();
        let mut side = RequestSide::capture(&self.shared, &headers);
        if self.shared.wants_start {
            side.start = Some(host.now());
        }
        self.request = Some(side);
        Flow::Continue
    }

    fn on_log(&mut self, host: &dyn Host) {
        let shared = Rc::clone(&self.shared);
        let req = match self.request.take() {
            Some(r) => r,
            None => RequestSide::late(&shared, host),
        };
        let resp = ResponseSide::read(host, shared.cfg.max_label_bytes, &shared.wanted);
        let status = (status_code(resp.code), status_class(resp.code));
        let mut states = shared.states.borrow_mut();
        for (metric, state) in shared.cfg.metrics.iter().zip(states.iter_mut()) {
            let value = match metric.kind {
                Kind::Counter => None,
                Kind::Histogram(v) => match histogram_value(host, v, &req) {
                    Some(x) => Some(x),
                    // Nothing to record (the host has no such value for this stream).
                    None => continue,
                },
            };
            let series = series_name(
                &metric.name,
                metric
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), self.label(&l.source, &req, &resp, &status))),
            );
            let Some(id) = state.target(host, metric, series) else {
                continue;
            };
            match value {
                None => host.increment_metric(id, 1),
                Some(x) => host.record_metric(id, x),
            }
        }
    }
}

#[cfg(test)]
mod tests;
