//! Bounded-metrics configuration.
//!
//! ```json
//! {
//!   "max_total_series": 2000,
//!   "max_label_bytes": 96,
//!   "path_templates": ["/users/{id}/orders"],
//!   "metrics": [
//!     { "name": "kavach_requests_total", "type": "counter", "max_series": 500,
//!       "labels": [ {"source": "route"}, {"source": "method"}, {"source": "status_class"} ] },
//!     { "name": "kavach_request_duration_ms", "type": "histogram", "value": "duration_ms",
//!       "max_series": 100, "labels": [ {"source": "route"} ] },
//!     { "name": "kavach_requests_by_tenant_total", "type": "counter", "max_series": 200,
//!       "labels": [ {"source": "header", "header": "x-tenant", "name": "tenant"} ] }
//!   ]
//! }
//! ```

use serde::Deserialize;

use crate::config::{self, header_name, in_range, ConfigError, FieldPath};

use super::label::defuse_builtin_tags;
use super::naming::{is_name, OVERFLOW_COUNTER, SERIES_GAUGE};
use super::path_template::Template;

/// Hard ceiling on `max_total_series`: every series costs memory in every worker for the life
/// of the process.
pub const MAX_TOTAL_SERIES_LIMIT: u32 = 100_000;
pub const MAX_METRICS: usize = 32;
pub const MAX_LABELS: usize = 8;
pub const MAX_TEMPLATES: usize = 256;
const MAX_NAME_BYTES: usize = 96;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfigJson {
    /// Ceiling on the series all configured metrics may ever create in one Envoy process
    /// (each metric's `max_series` plus its `(other)` series).
    #[serde(default = "default_max_total_series")]
    pub max_total_series: u32,
    /// Longest label value in bytes; longer values are `(too_long)`.
    #[serde(default = "default_max_label_bytes")]
    pub max_label_bytes: usize,
    /// Path templates for the `path` label, tried in order before the automatic rules.
    #[serde(default)]
    pub path_templates: Vec<String>,
    pub metrics: Vec<MetricJson>,
}

fn default_max_total_series() -> u32 {
    2000
}
fn default_max_label_bytes() -> usize {
    96
}
fn default_max_series() -> u32 {
    100
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricJson {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: KindJson,
    /// What a histogram records.
    #[serde(default)]
    pub value: Option<HistogramValue>,
    #[serde(default)]
    pub labels: Vec<LabelJson>,
    /// Labelled series this metric may create in the whole process.
    #[serde(default = "default_max_series")]
    pub max_series: u32,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindJson {
    Counter,
    Histogram,
}

/// What a histogram records, read when the stream completes.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistogramValue {
    /// `request.duration`, in whole milliseconds (Envoy's default buckets are milliseconds).
    DurationMs,
    /// `request.total_size`: request headers and body, in bytes.
    RequestBytes,
    /// `response.total_size`: response headers and body, in bytes.
    ResponseBytes,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelJson {
    pub source: SourceJson,
    /// Label name; defaults to the source's name (the header name with `-` as `_`).
    #[serde(default)]
    pub name: Option<String>,
    /// The request header, for `"source": "header"`.
    #[serde(default)]
    pub header: Option<String>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceJson {
    Method,
    StatusCode,
    StatusClass,
    Route,
    Cluster,
    Principal,
    Path,
    Header,
}

impl SourceJson {
    fn default_name(self) -> &'static str {
        match self {
            SourceJson::Method => "method",
            SourceJson::StatusCode => "status_code",
            SourceJson::StatusClass => "status_class",
            SourceJson::Route => "route",
            SourceJson::Cluster => "cluster",
            SourceJson::Principal => "principal",
            SourceJson::Path => "path",
            SourceJson::Header => "header",
        }
    }
}

/// Where a label's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `:method`; non-standard methods are `(nonstandard)`.
    Method,
    /// `response.code` (`200`).
    StatusCode,
    /// `response.code` as a class (`2xx`).
    StatusClass,
    /// `xds.route_name`.
    Route,
    /// `xds.cluster_name`.
    Cluster,
    /// `connection.uri_san_peer_certificate` (the verified mTLS peer's SPIFFE id).
    Principal,
    /// The templated `:path`.
    Path,
    /// A request header (lower-case name).
    Header(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram(HistogramValue),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricConfig {
    pub name: String,
    pub kind: Kind,
    pub labels: Vec<Label>,
    pub max_series: u32,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub max_total_series: u32,
    pub max_label_bytes: usize,
    pub path_templates: Vec<Template>,
    pub metrics: Vec<MetricConfig>,
}

impl MetricsConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::validate(config::parse::<MetricsConfigJson>(bytes)?)
    }

    pub fn validate(json: MetricsConfigJson) -> Result<Self, ConfigError> {
        let root = FieldPath::root();
        let max_total_series = in_range(
            &root.field("max_total_series"),
            json.max_total_series,
            1,
            MAX_TOTAL_SERIES_LIMIT,
        )?;
        let max_label_bytes = in_range(
            &root.field("max_label_bytes"),
            json.max_label_bytes,
            16,
            256,
        )?;

        let at = root.field("path_templates");
        if json.path_templates.len() > MAX_TEMPLATES {
            return Err(at.error(format!("at most {MAX_TEMPLATES} templates")));
        }
        let mut path_templates: Vec<Template> = Vec::with_capacity(json.path_templates.len());
        for (i, text) in json.path_templates.iter().enumerate() {
            let at = at.index(i);
            let t = Template::parse(&at, text)?;
            if t.rendered().len() > max_label_bytes {
                return Err(at.error(format!(
                    "{text:?} renders as a label of {} bytes, over max_label_bytes {max_label_bytes}",
                    t.rendered().len()
                )));
            }
            if let Some(j) = path_templates.iter().position(|p| *p == t) {
                return Err(at.error(format!("{text:?} is the same as path_templates[{j}]")));
            }
            path_templates.push(t);
        }

        let at = root.field("metrics");
        if json.metrics.is_empty() {
            return Err(at.error("list at least one metric"));
        }
        if json.metrics.len() > MAX_METRICS {
            return Err(at.error(format!("at most {MAX_METRICS} metrics")));
        }
        let mut metrics: Vec<MetricConfig> = Vec::with_capacity(json.metrics.len());
        let mut total: u64 = 0;
        for (i, m) in json.metrics.into_iter().enumerate() {
            let at = at.index(i);
            let metric = validate_metric(&at, m, max_total_series)?;
            if let Some(j) = metrics.iter().position(|o| o.name == metric.name) {
                return Err(at
                    .field("name")
                    .error(format!("{:?} is already used by metrics[{j}]", metric.name)));
            }
            // Each metric may create max_series labelled series plus its "(other)" series.
            total += u64::from(metric.max_series) + 1;
            if total > u64::from(max_total_series) {
                return Err(at.field("max_series").error(format!(
                    "the budgets add up to at least {total} series (each metric's max_series plus its \"(other)\" series), over max_total_series {max_total_series}"
                )));
            }
            metrics.push(metric);
        }
        Ok(MetricsConfig {
            max_total_series,
            max_label_bytes,
            path_templates,
            metrics,
        })
    }
}

fn validate_metric(
    at: &FieldPath,
    m: MetricJson,
    max_total_series: u32,
) -> Result<MetricConfig, ConfigError> {
    let name_at = at.field("name");
    if !is_name(&m.name) || m.name.len() > MAX_NAME_BYTES {
        return Err(name_at.error(format!(
            "{:?} is not a metric name (1 to {MAX_NAME_BYTES} of a-z, 0-9 and _, starting with a letter or _)",
            m.name
        )));
    }
    if m.name == OVERFLOW_COUNTER || m.name == SERIES_GAUGE {
        return Err(name_at.error(format!(
            "{:?} is reserved for the filter's own metrics",
            m.name
        )));
    }
    let mut defused = m.name.clone();
    defuse_builtin_tags(&mut defused);
    if defused != m.name {
        return Err(name_at.error(format!(
            "{:?} ends like an Envoy response-code stat (_rq_NNN, _rq_Nxx) and would be split by Envoy's built-in tags",
            m.name
        )));
    }
    let kind = match (m.kind, m.value) {
        (KindJson::Counter, None) => Kind::Counter,
        (KindJson::Counter, Some(_)) => {
            return Err(at.field("value").error("only a histogram takes a value"))
        }
        (KindJson::Histogram, Some(v)) => Kind::Histogram(v),
        (KindJson::Histogram, None) => {
            return Err(at
                .field("value")
                .error("a histogram needs a value: duration_ms, request_bytes or response_bytes"))
        }
    };
    let max_series = in_range(&at.field("max_series"), m.max_series, 1, max_total_series)?;

    let labels_at = at.field("labels");
    if m.labels.len() > MAX_LABELS {
        return Err(labels_at.error(format!("at most {MAX_LABELS} labels")));
    }
    let mut labels: Vec<Label> = Vec::with_capacity(m.labels.len());
    for (i, l) in m.labels.into_iter().enumerate() {
        let at = labels_at.index(i);
        let label = validate_label(&at, l)?;
        if let Some(j) = labels.iter().position(|o| o.name == label.name) {
            return Err(at
                .field("name")
                .error(format!("{:?} is already used by labels[{j}]", label.name)));
        }
        labels.push(label);
    }
    Ok(MetricConfig {
        name: m.name,
        kind,
        labels,
        max_series,
    })
}

fn validate_label(at: &FieldPath, l: LabelJson) -> Result<Label, ConfigError> {
    let source = match (l.source, &l.header) {
        (SourceJson::Header, Some(h)) => Source::Header(header_name(&at.field("header"), h)?),
        (SourceJson::Header, None) => {
            return Err(at
                .field("header")
                .error("a label with source \"header\" needs the header name"))
        }
        (_, Some(_)) => {
            return Err(at
                .field("header")
                .error("only a label with source \"header\" takes a header"))
        }
        (SourceJson::Method, None) => Source::Method,
        (SourceJson::StatusCode, None) => Source::StatusCode,
        (SourceJson::StatusClass, None) => Source::StatusClass,
        (SourceJson::Route, None) => Source::Route,
        (SourceJson::Cluster, None) => Source::Cluster,
        (SourceJson::Principal, None) => Source::Principal,
        (SourceJson::Path, None) => Source::Path,
    };
    let (name, name_at) = match (&l.name, &source) {
        (Some(n), _) => (n.clone(), at.field("name")),
        (None, Source::Header(h)) => (h.replace('-', "_"), at.field("header")),
        (None, _) => (l.source.default_name().to_string(), at.field("source")),
    };
    if !is_name(&name) || name.len() > MAX_NAME_BYTES {
        return Err(name_at.error(format!(
            "{name:?} is not a label name (1 to {MAX_NAME_BYTES} of a-z, 0-9 and _, starting with a letter or _); set \"name\""
        )));
    }
    if name.starts_with("__") || name == "le" || name == "quantile" {
        return Err(name_at.error(format!("{name:?} is reserved by Prometheus")));
    }
    Ok(Label { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"metrics":[{"name":"kavach_requests_total","type":"counter","labels":[{"source":"route"}]}]}"#;

    fn err(json: &str) -> String {
        MetricsConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    fn metric(fields: &str) -> String {
        format!(r#"{{"metrics":[{{"name":"m","type":"counter",{fields}}}]}}"#)
    }

    #[test]
    fn a_minimal_config_gets_sane_defaults() {
        let c = MetricsConfig::parse(ONE.as_bytes()).unwrap();
        assert_eq!(c.max_total_series, 2000);
        assert_eq!(c.max_label_bytes, 96);
        assert_eq!(c.metrics[0].max_series, 100);
        assert_eq!(c.metrics[0].kind, Kind::Counter);
        assert_eq!(
            c.metrics[0].labels,
            vec![Label {
                name: "route".into(),
                source: Source::Route
            }]
        );
    }

    #[test]
    fn every_source_and_kind_parses() {
        let c = MetricsConfig::parse(
            br#"{"path_templates":["/users/{id}/orders"],"metrics":[
                {"name":"a","type":"counter","labels":[
                    {"source":"method"},{"source":"status_code"},{"source":"status_class"},
                    {"source":"route"},{"source":"cluster"},{"source":"principal","name":"caller"},
                    {"source":"path"},{"source":"header","header":"X-Tenant-Id"}]},
                {"name":"b","type":"histogram","value":"duration_ms"},
                {"name":"c","type":"histogram","value":"request_bytes"},
                {"name":"d","type":"histogram","value":"response_bytes"}]}"#,
        )
        .unwrap();
        let names: Vec<&str> = c.metrics[0]
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "method",
                "status_code",
                "status_class",
                "route",
                "cluster",
                "caller",
                "path",
                "x_tenant_id"
            ]
        );
        assert_eq!(
            c.metrics[0].labels[7].source,
            Source::Header("x-tenant-id".into())
        );
        assert_eq!(
            c.metrics[1].kind,
            Kind::Histogram(HistogramValue::DurationMs)
        );
        assert_eq!(
            c.metrics[3].kind,
            Kind::Histogram(HistogramValue::ResponseBytes)
        );
        assert_eq!(c.path_templates[0].rendered(), "/users/:id/orders");
    }

    #[test]
    fn budgets_over_the_global_ceiling_are_refused_naming_the_metric() {
        assert_eq!(
            err(r#"{"max_total_series":300,"metrics":[
                {"name":"a","type":"counter","max_series":199},
                {"name":"b","type":"counter","max_series":100}]}"#),
            "metrics[1].max_series: the budgets add up to at least 301 series (each metric's max_series plus its \"(other)\" series), over max_total_series 300"
        );
        // Exactly at the ceiling is fine.
        assert!(MetricsConfig::parse(
            br#"{"max_total_series":301,"metrics":[
                {"name":"a","type":"counter","max_series":199},
                {"name":"b","type":"counter","max_series":100}]}"#
        )
        .is_ok());
        assert_eq!(
            err(r#"{"max_total_series":100001,"metrics":[]}"#),
            "max_total_series: must be between 1 and 100000, got 100001"
        );
        assert_eq!(
            err(&metric(r#""max_series":0"#)),
            "metrics[0].max_series: must be between 1 and 2000, got 0"
        );
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        assert!(err("").contains("missing field `metrics`"));
        assert_eq!(
            err(r#"{"metrics":[]}"#),
            "metrics: list at least one metric"
        );
        assert_eq!(
            err(r#"{"metrics":[{"name":"Requests.Total","type":"counter"}]}"#),
            "metrics[0].name: \"Requests.Total\" is not a metric name (1 to 96 of a-z, 0-9 and _, starting with a letter or _)"
        );
        assert_eq!(
            err(r#"{"metrics":[{"name":"kavach_metrics_series","type":"counter"}]}"#),
            "metrics[0].name: \"kavach_metrics_series\" is reserved for the filter's own metrics"
        );
        assert!(err(r#"{"metrics":[{"name":"m_rq_200","type":"counter"}]}"#)
            .starts_with("metrics[0].name: \"m_rq_200\" ends like an Envoy response-code stat"));
        assert_eq!(
            err(r#"{"metrics":[{"name":"m","type":"counter"},{"name":"m","type":"counter"}]}"#),
            "metrics[1].name: \"m\" is already used by metrics[0]"
        );
        assert!(err(r#"{"metrics":[{"name":"m","type":"gauge"}]}"#)
            .starts_with("metrics[0].type: unknown variant `gauge`"));
        assert_eq!(
            err(&metric(r#""value":"duration_ms""#)),
            "metrics[0].value: only a histogram takes a value"
        );
        assert_eq!(
            err(r#"{"metrics":[{"name":"m","type":"histogram"}]}"#),
            "metrics[0].value: a histogram needs a value: duration_ms, request_bytes or response_bytes"
        );
        assert!(err(&metric(r#""labels":[{"source":"trace_id"}]"#))
            .starts_with("metrics[0].labels[0].source: unknown variant `trace_id`"));
        assert_eq!(
            err(&metric(r#""labels":[{"source":"header"}]"#)),
            "metrics[0].labels[0].header: a label with source \"header\" needs the header name"
        );
        assert_eq!(
            err(&metric(r#""labels":[{"source":"route","header":"x-a"}]"#)),
            "metrics[0].labels[0].header: only a label with source \"header\" takes a header"
        );
        assert_eq!(
            err(&metric(
                r#""labels":[{"source":"header","header":"bad header"}]"#
            )),
            "metrics[0].labels[0].header: \"bad header\" is not a valid HTTP header name"
        );
        assert_eq!(
            err(&metric(r#""labels":[{"source":"header","header":"1x"}]"#)),
            "metrics[0].labels[0].header: \"1x\" is not a label name (1 to 96 of a-z, 0-9 and _, starting with a letter or _); set \"name\""
        );
        assert_eq!(
            err(&metric(
                r#""labels":[{"source":"route"},{"source":"cluster","name":"route"}]"#
            )),
            "metrics[0].labels[1].name: \"route\" is already used by labels[0]"
        );
        assert_eq!(
            err(&metric(r#""labels":[{"source":"route","name":"le"}]"#)),
            "metrics[0].labels[0].name: \"le\" is reserved by Prometheus"
        );
        assert_eq!(
            err(&metric(
                r#""labels":[{"source":"route","name":"__name__"}]"#
            )),
            "metrics[0].labels[0].name: \"__name__\" is reserved by Prometheus"
        );
        let nine: Vec<String> = (0..9)
            .map(|i| format!(r#"{{"source":"route","name":"l{i}"}}"#))
            .collect();
        assert_eq!(
            err(&metric(&format!(r#""labels":[{}]"#, nine.join(",")))),
            "metrics[0].labels: at most 8 labels"
        );
        assert!(err(&metric(r#""lables":[]"#)).starts_with("metrics[0].lables: unknown field"));
        assert_eq!(
            err(&format!(r#"{{"max_label_bytes":8,{}"#, &ONE[1..])),
            "max_label_bytes: must be between 16 and 256, got 8"
        );
    }

    #[test]
    fn template_errors_carry_their_index() {
        let with = |t: &str| format!(r#"{{"path_templates":["/ok",{t}],{}"#, &ONE[1..]);
        assert_eq!(
            err(&with(r#""nope""#)),
            "path_templates[1]: \"nope\" must start with '/'"
        );
        assert_eq!(
            err(&with(r#""/ok""#)),
            "path_templates[1]: \"/ok\" is the same as path_templates[0]"
        );
        let long = format!(r#""/{}""#, "a".repeat(96));
        assert!(
            err(&with(&long)).ends_with("renders as a label of 97 bytes, over max_label_bytes 96")
        );
    }
}
