//! How a labelled series is named, and the Envoy tag regexes that turn the name back into
//! Prometheus labels.
//!
//! proxy-wasm metrics have a name only, and Envoy shows a metric defined as `n` as
//! `wasmcustom.n`. A series is named `<metric>(.<label>.<value>)*`, labels in configured order:
//!
//! ```text
//! wasmcustom.kavach_requests_total.route.payments.method.GET.status_class.2xx
//! ```
//!
//! Metric and label names are `[a-z_][a-z0-9_]*` and values never contain `.` (see
//! [`super::label`]), so the name splits on `.` into the metric name and then strict
//! name/value pairs. One `stats_config.stats_tags` entry per label name ([`tag_regex`]) consumes
//! whole pairs from the start, lazily, until it reaches its own label name in a *name*
//! position; a value that happens to equal a label name (`route.route`) cannot confuse it.
//! Envoy removes each first capture group from the name, so `/stats/prometheus` shows
//!
//! ```text
//! kavach_requests_total{route="payments",method="GET",status_class="2xx"} 3
//! ```

/// Counts, per metric, the requests that went to the `(other)` series because the metric's
/// series budget was spent. Named `kavach_metrics_overflow_total.metric.<metric>`.
pub const OVERFLOW_COUNTER: &str = "kavach_metrics_overflow_total";
/// Gauge of the labelled series admitted so far, per metric, for the whole Envoy process.
pub const SERIES_GAUGE: &str = "kavach_metrics_series";
/// The label naming the metric on [`OVERFLOW_COUNTER`] and [`SERIES_GAUGE`].
pub const METRIC_LABEL: &str = "metric";

/// Whether `s` is a metric or label name: `[a-z_][a-z0-9_]*`.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The stat name of one series: `metric.label1.value1.label2.value2`.
pub fn series_name<'a>(
    metric: &str,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut name = String::with_capacity(metric.len() + 64);
    name.push_str(metric);
    for (label, value) in labels {
        name.push('.');
        name.push_str(label);
        name.push('.');
        name.push_str(value);
    }
    name
}

/// `kavach_metrics_overflow_total.metric.<metric>`.
pub fn overflow_counter_name(metric: &str) -> String {
    series_name(OVERFLOW_COUNTER, [(METRIC_LABEL, metric)])
}

/// `kavach_metrics_series.metric.<metric>`.
pub fn series_gauge_name(metric: &str) -> String {
    series_name(SERIES_GAUGE, [(METRIC_LABEL, metric)])
}

/// The `stats_config.stats_tags[].regex` for `label` (a valid name, so nothing to escape).
/// Envoy matches it against the full stat name, `wasmcustom.` included.
pub fn tag_regex(label: &str) -> String {
    format!(r"^wasmcustom\.[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*\.[^.]+)*?(\.{label}\.([^.]+))")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_snake_case() {
        for ok in ["kavach_requests_total", "_x", "a1", "route"] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "1a", "Route", "a.b", "a-b", "a b", "é"] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn series_names_alternate_label_names_and_values() {
        assert_eq!(
            series_name(
                "kavach_requests_total",
                [
                    ("route", "payments"),
                    ("method", "GET"),
                    ("status_class", "2xx")
                ]
            ),
            "kavach_requests_total.route.payments.method.GET.status_class.2xx"
        );
        assert_eq!(series_name("m", []), "m");
        assert_eq!(
            overflow_counter_name("kavach_requests_total"),
            "kavach_metrics_overflow_total.metric.kavach_requests_total"
        );
        assert_eq!(series_gauge_name("m"), "kavach_metrics_series.metric.m");
    }

    #[test]
    fn tag_regexes_only_match_a_label_name_in_a_name_position() {
        // The regex crate follows the same leftmost, lazy semantics as Envoy's engines here.
        let tag = |stat: &str, label: &str| -> Option<(String, String)> {
            let re = regex::Regex::new(&tag_regex(label)).unwrap();
            let c = re.captures(stat)?;
            Some((c[1].to_string(), c[2].to_string()))
        };
        let stat = "wasmcustom.m.route.route.method.method.status_class.route";
        assert_eq!(
            tag(stat, "route"),
            Some((".route.route".into(), "route".into()))
        );
        assert_eq!(
            tag(stat, "method"),
            Some((".method.method".into(), "method".into()))
        );
        assert_eq!(
            tag(stat, "status_class"),
            Some((".status_class.route".into(), "route".into()))
        );
        let stat = "wasmcustom.kavach_requests_total.tenant.method.path./users/:id";
        assert_eq!(
            tag(stat, "method"),
            None,
            "a value is never read as a label name"
        );
        assert_eq!(tag(stat, "path").unwrap().1, "/users/:id");
        assert_eq!(tag("wasmcustom.kavach_audit_records_total", "route"), None);
        assert_eq!(tag("cluster.route.x.y", "route"), None);
        assert_eq!(
            tag_regex("route"),
            r"^wasmcustom\.[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*\.[^.]+)*?(\.route\.([^.]+))"
        );
    }
}
