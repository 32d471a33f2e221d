//! Reading Envoy's `/stats/prometheus`: a small parser of the text exposition format, and the
//! `stats_config` that gives the metrics filter's series their labels.

use serde_json::{json, Value};

use kavach_core::metrics::naming::{tag_regex, METRIC_LABEL};

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed scrape; lines that do not parse are kept in `unparsed` so a test can fail on them.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub unparsed: Vec<String>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Some(s) => scrape.samples.push(s),
                None => scrape.unparsed.push(line.to_string()),
            }
        }
        scrape
    }

    /// Every sample named `name`.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The value of the sample named `name` with exactly these labels (in any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.label(k) == Some(v))
            })
            .map(|s| s.value)
    }

    /// Sum of the values of every sample named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.series(name).iter().map(|s| s.value).sum()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name_end, has_labels) = match line.find(['{', ' ']) {
        Some(i) => (i, line.as_bytes().get(i) == Some(&b'{')),
        None => return None,
    };
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if has_labels {
        rest = &rest[1..];
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find("=\"")?;
            let key = rest[..eq].to_string();
            rest = &rest[eq + 2..];
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.trim().split(' ').next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `stats_config` with one tag per label name of the metrics filter (plus `metric`, the label of
/// its overflow counter and series gauge), using the regexes the filter's naming scheme defines.
pub fn metrics_stats_config(labels: &[&str]) -> Value {
    let mut names: Vec<&str> = vec![METRIC_LABEL];
    names.extend(labels.iter().filter(|l| **l != METRIC_LABEL));
    let tags: Vec<Value> = names
        .iter()
        .map(|l| json!({ "tag_name": l, "regex": tag_regex(l) }))
        .collect();
    json!({ "stats_tags": tags })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes() {
        let s = Scrape::parse(
            "# TYPE x counter\nx{a=\"1\",b=\"q\\\"u\\\\o\\n\"} 3\ny 4.5\nz_bucket{le=\"+Inf\"} 2\nbroken{a=1} 2\n",
        );
        assert_eq!(s.value("x", &[("b", "q\"u\\o\n"), ("a", "1")]), Some(3.0));
        assert_eq!(s.value("y", &[]), Some(4.5));
        assert_eq!(s.value("z_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(s.unparsed, vec!["broken{a=1} 2".to_string()]);
    }
}
