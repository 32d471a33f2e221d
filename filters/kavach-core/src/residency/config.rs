//! Residency filter configuration.
//!
//! ```json
//! {
//!   "policy_version": "2026-11-01",
//!   "mode": "enforce",
//!   "classes": [
//!     { "name": "public", "allowed_regions": ["*"] },
//!     { "name": "pii", "allowed_regions": ["in-west", "in-south"], "action": "reroute",
//!       "reroute": { "header": "x-kavach-residency", "value": "in" } },
//!     { "name": "payment", "allowed_regions": ["in-west", "in-south"], "action": "deny" }
//!   ],
//!   "routes": { "payments": { "min_class": "payment" }, "kyc": { "detect_body": true } },
//!   "body_detection": {
//!     "max_body_bytes": 65536, "oversize": "treat_as_highest",
//!     "detectors": { "card": "payment", "upi_vpa": "payment", "aadhaar": "pii", "pan": "pii" }
//!   }
//! }
//! ```
//!
//! Classes are listed from least to most sensitive: the list order is the sensitivity order.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::classify::ClassId;
use crate::config::{self, header_name, in_range, non_empty, ConfigError, FieldPath};
use crate::detect::Detector;

/// Most classes a policy may define (counters are defined per class and decision).
pub const MAX_CLASSES: usize = 16;
/// Most entries of `cluster_regions` and of `routes`.
pub const MAX_MAP_ENTRIES: usize = 4096;
/// Class name used for counters of requests that have no class (invalid class header...).
pub const UNCLASSIFIED: &str = "unclassified";
/// Longest region, class and policy version names.
const MAX_NAME: usize = 64;

pub fn default_cluster_region_property() -> Vec<String> {
    [
        "xds",
        "cluster_metadata",
        "filter_metadata",
        "kavach",
        "region",
    ]
    .map(String::from)
    .to_vec()
}

pub fn default_upstream_region_properties() -> Vec<Vec<String>> {
    vec![
        [
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "kavach",
            "region",
        ]
        .map(String::from)
        .to_vec(),
        ["upstream", "locality", "region"]
            .map(String::from)
            .to_vec(),
    ]
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResidencyConfigJson {
    pub policy_version: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub stage: Stage,
    pub classes: Vec<ClassJson>,
    /// Class of a request nothing else classifies; the first (least sensitive) class if unset.
    #[serde(default)]
    pub default_class: Option<String>,
    #[serde(default = "default_class_header")]
    pub class_header: String,
    #[serde(default = "default_residence_header")]
    pub residence_header: String,
    #[serde(default = "default_dry_run_header")]
    pub dry_run_header: String,
    #[serde(default = "default_cluster_region_property")]
    pub cluster_region_property: Vec<String>,
    /// Static cluster name -> region map; an entry wins over the cluster's metadata.
    #[serde(default)]
    pub cluster_regions: BTreeMap<String, String>,
    #[serde(default)]
    pub untagged_cluster: Untagged,
    /// Per route (by `xds.route_name`): a minimum class and whether to inspect the body.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteJson>,
    #[serde(default)]
    pub body_detection: Option<BodyDetectionJson>,
    #[serde(default)]
    pub upstream_check: UpstreamCheckJson,
}

fn default_class_header() -> String {
    "x-data-class".into()
}
fn default_residence_header() -> String {
    "x-data-residence".into()
}
fn default_dry_run_header() -> String {
    "x-kavach-residency-dry-run".into()
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Deny, re-route and replace responses.
    #[default]
    Enforce,
    /// Decide and record only; add a response header; never block or re-route.
    DryRun,
}

/// Which of the two places in the chain this instance of the filter runs at.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Classifies, checks the destination, denies or re-routes; checks the upstream's answer.
    #[default]
    Decide,
    /// Placed after a filter that resolves the route again: checks the cluster the request will
    /// really go to, for the class the decide stage published.
    Recheck,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Untagged {
    /// No region known is a violation (fail closed).
    #[default]
    Violation,
    Allow,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// A body over the limit is classified as the most sensitive class.
    #[default]
    TreatAsHighest,
    /// A body over the limit is refused with 413.
    #[serde(rename = "reject_413")]
    Reject413,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionJson {
    #[default]
    Deny,
    Reroute,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassJson {
    pub name: String,
    /// Regions a request of this class may go to; `["*"]` for anywhere.
    pub allowed_regions: Vec<String>,
    #[serde(default)]
    pub action: ActionJson,
    #[serde(default)]
    pub reroute: Option<RerouteJson>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerouteJson {
    pub header: String,
    pub value: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteJson {
    #[serde(default)]
    pub min_class: Option<String>,
    #[serde(default)]
    pub detect_body: Option<bool>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BodyDetectionJson {
    /// Inspect bodies on routes that do not say (`routes.<name>.detect_body`).
    #[serde(default)]
    pub enabled_by_default: bool,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub oversize: Oversize,
    /// Detector name -> the class a finding puts the request in.
    pub detectors: BTreeMap<String, String>,
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamCheckJson {
    pub enabled: bool,
    /// Property paths tried in order for the region of the upstream host that answered.
    pub region_properties: Vec<Vec<String>>,
    pub untagged_host: Untagged,
}

impl Default for UpstreamCheckJson {
    fn default() -> Self {
        UpstreamCheckJson {
            enabled: true,
            region_properties: default_upstream_region_properties(),
            untagged_host: Untagged::Allow,
        }
    }
}

/// Where a class may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regions {
    Anywhere,
    Only(Vec<String>),
}

impl Regions {
    pub fn allows(&self, region: &str) -> bool {
        match self {
            Regions::Anywhere => true,
            Regions::Only(list) => list.iter().any(|r| r == region),
        }
    }

    pub fn is_restricted(&self) -> bool {
        matches!(self, Regions::Only(_))
    }
}

/// What happens to a request whose destination its class does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deny,
    /// Set `header: value` so that the route table sends the request to an allowed cluster.
    Reroute {
        header: String,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub name: String,
    pub regions: Regions,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoutePolicy {
    pub min_class: Option<ClassId>,
    pub detect_body: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDetection {
    pub enabled_by_default: bool,
    pub max_body_bytes: usize,
    pub oversize: Oversize,
    pub detectors: Vec<(Detector, ClassId)>,
}

impl BodyDetection {
    pub fn detector_names(&self) -> Vec<Detector> {
        self.detectors.iter().map(|(d, _)| *d).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCheck {
    pub enabled: bool,
    pub region_properties: Vec<Vec<String>>,
    pub untagged_host: Untagged,
}

/// Validated residency configuration.
#[derive(Debug, Clone)]
pub struct ResidencyConfig {
    pub policy_version: String,
    pub mode: Mode,
    pub stage: Stage,
    /// Least sensitive first; a [`ClassId`] is an index into this list.
    pub classes: Vec<Class>,
    pub default_class: ClassId,
    pub class_header: String,
    pub residence_header: String,
    pub dry_run_header: String,
    pub cluster_region_property: Vec<String>,
    pub cluster_regions: BTreeMap<String, String>,
    pub untagged_cluster: Untagged,
    pub routes: BTreeMap<String, RoutePolicy>,
    pub body_detection: Option<BodyDetection>,
    pub upstream_check: UpstreamCheck,
}

impl ResidencyConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::validate(config::parse::<ResidencyConfigJson>(bytes)?)
    }

    pub fn class(&self, id: ClassId) -> Option<&Class> {
        self.classes.get(usize::from(id.0))
    }

    /// The name of a class, for records and counters.
    pub fn class_name(&self, id: ClassId) -> &str {
        self.class(id).map_or(UNCLASSIFIED, |c| c.name.as_str())
    }

    /// A class by its (already normalised) name.
    pub fn class_by_name(&self, name: &[u8]) -> Option<ClassId> {
        self.classes
            .iter()
            .position(|c| c.name.as_bytes() == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(ClassId)
    }

    /// The most sensitive class.
    pub fn highest(&self) -> ClassId {
        ClassId(u8::try_from(self.classes.len().saturating_sub(1)).unwrap_or(0))
    }

    /// Every header a class re-routes with (stripped from client requests).
    pub fn reroute_headers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for c in &self.classes {
            if let Action::Reroute { header, .. } = &c.action {
                if !names.contains(&header.as_str()) {
                    names.push(header);
                }
            }
        }
        names
    }

    pub fn validate(json: ResidencyConfigJson) -> Result<Self, ConfigError> {
        let root = FieldPath::root();
        let policy_version = name_like(
            &root.field("policy_version"),
            json.policy_version.trim(),
            "A-Z a-z 0-9 . _ : + -",
            |b| b.is_ascii_alphanumeric() || b"._:+-".contains(&b),
        )?;

        let header = |field: &str, value: &str| -> Result<String, ConfigError> {
            let at = root.field(field);
            let name = header_name(&at, value)?;
            if name.starts_with(':') || name == "host" {
                return Err(at.error(format!("{name:?} may not be used")));
            }
            Ok(name)
        };
        let class_header = header("class_header", &json.class_header)?;
        let residence_header = header("residence_header", &json.residence_header)?;
        let dry_run_header = header("dry_run_header", &json.dry_run_header)?;
        let fixed_headers = [
            ("class_header", class_header.as_str()),
            ("residence_header", residence_header.as_str()),
            ("dry_run_header", dry_run_header.as_str()),
        ];
        for (i, (field, name)) in fixed_headers.iter().enumerate() {
            if let Some((other, _)) = fixed_headers[..i].iter().find(|(_, n)| n == name) {
                return Err(root
                    .field(field)
                    .error(format!("{name:?} is already used by {other}")));
            }
        }

        let classes = validate_classes(&root.field("classes"), &json.classes, &fixed_headers)?;
        let find_class = |at: &FieldPath, name: &str| -> Result<ClassId, ConfigError> {
            let wanted = normalise(name);
            classes
                .iter()
                .position(|c| c.name == wanted)
                .and_then(|i| u8::try_from(i).ok())
                .map(ClassId)
                .ok_or_else(|| {
                    at.error(format!(
                        "{name:?} is not a class (classes: {})",
                        classes
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        };
        let default_class = match &json.default_class {
            Some(name) => find_class(&root.field("default_class"), name)?,
            None => ClassId(0),
        };

        let at = root.field("cluster_region_property");
        if json.cluster_region_property.is_empty() || json.cluster_region_property.len() > 8 {
            return Err(at.error("must have 1 to 8 path segments"));
        }
        for (i, part) in json.cluster_region_property.iter().enumerate() {
            non_empty(&at.index(i), part)?;
        }

        let at = root.field("cluster_regions");
        if json.cluster_regions.len() > MAX_MAP_ENTRIES {
            return Err(at.error(format!("at most {MAX_MAP_ENTRIES} entries")));
        }
        let mut cluster_regions = BTreeMap::new();
        for (cluster, region) in &json.cluster_regions {
            let at = at.key(cluster);
            non_empty(&at, cluster)?;
            cluster_regions.insert(cluster.clone(), region_name(&at, region)?);
        }

        let body_detection = match &json.body_detection {
            Some(b) => Some(validate_body(
                &root.field("body_detection"),
                b,
                &find_class,
            )?),
            None => None,
        };

        let at = root.field("routes");
        if json.routes.len() > MAX_MAP_ENTRIES {
            return Err(at.error(format!("at most {MAX_MAP_ENTRIES} entries")));
        }
        let mut routes = BTreeMap::new();
        for (name, r) in &json.routes {
            let at = at.key(name);
            non_empty(&at, name)?;
            if r.min_class.is_none() && r.detect_body.is_none() {
                return Err(at.error("sets neither min_class nor detect_body"));
            }
            let min_class = match &r.min_class {
                Some(c) => Some(find_class(&at.field("min_class"), c)?),
                None => None,
            };
            if r.detect_body == Some(true) && body_detection.is_none() {
                return Err(at
                    .field("detect_body")
                    .error("needs the body_detection section (detectors, limits)"));
            }
            routes.insert(
                name.clone(),
                RoutePolicy {
                    min_class,
                    detect_body: r.detect_body,
                },
            );
        }
        if let Some(b) = &body_detection {
            let any_route = routes.values().any(|r| r.detect_body == Some(true));
            if !b.enabled_by_default && !any_route {
                return Err(root.field("body_detection").error(
                    "no route inspects bodies: set enabled_by_default or routes.<name>.detect_body",
                ));
            }
        }

        let at = root.field("upstream_check");
        let u = &json.upstream_check;
        if u.enabled && u.region_properties.is_empty() {
            return Err(at
                .field("region_properties")
                .error("must name at least one property path when the check is enabled"));
        }
        for (i, path) in u.region_properties.iter().enumerate() {
            let at = at.field("region_properties").index(i);
            if path.is_empty() || path.len() > 8 {
                return Err(at.error("must have 1 to 8 path segments"));
            }
            for (j, part) in path.iter().enumerate() {
                non_empty(&at.index(j), part)?;
            }
        }

        Ok(ResidencyConfig {
            policy_version: policy_version.to_string(),
            mode: json.mode,
            stage: json.stage,
            classes,
            default_class,
            class_header,
            residence_header,
            dry_run_header,
            cluster_region_property: json.cluster_region_property,
            cluster_regions,
            untagged_cluster: json.untagged_cluster,
            routes,
            body_detection,
            upstream_check: UpstreamCheck {
                enabled: u.enabled,
                region_properties: u.region_properties.clone(),
                untagged_host: u.untagged_host,
            },
        })
    }
}

/// Class names and regions are compared in this form: surrounding white space removed, ASCII
/// letters in lower case.
pub fn normalise(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}

fn name_like<'a>(
    at: &FieldPath,
    value: &'a str,
    allowed: &str,
    ok: impl Fn(u8) -> bool,
) -> Result<&'a str, ConfigError> {
    if value.is_empty() {
        return Err(at.error("must not be empty"));
    }
    if value.len() > MAX_NAME {
        return Err(at.error(format!("longer than {MAX_NAME} characters")));
    }
    if !value.bytes().all(ok) {
        return Err(at.error(format!("{value:?} may only contain {allowed}")));
    }
    Ok(value)
}

fn region_name(at: &FieldPath, value: &str) -> Result<String, ConfigError> {
    let v = normalise(value);
    name_like(at, &v, "a-z 0-9 . _ -", |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
    })?;
    Ok(v)
}

fn validate_classes(
    at: &FieldPath,
    json: &[ClassJson],
    fixed_headers: &[(&str, &str)],
) -> Result<Vec<Class>, ConfigError> {
    if json.is_empty() || json.len() > MAX_CLASSES {
        return Err(at.error(format!("must list 1 to {MAX_CLASSES} classes")));
    }
    let mut classes: Vec<Class> = Vec::with_capacity(json.len());
    for (i, c) in json.iter().enumerate() {
        let at = at.index(i);
        let name = normalise(&c.name);
        name_like(&at.field("name"), &name, "a-z 0-9 _ -", |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
        })?;
        if name == UNCLASSIFIED {
            return Err(at
                .field("name")
                .error(format!("{UNCLASSIFIED:?} is reserved")));
        }
        if let Some(j) = classes.iter().position(|o| o.name == name) {
            return Err(at
                .field("name")
                .error(format!("{name:?} is already classes[{j}]")));
        }

        let regions_at = at.field("allowed_regions");
        let regions = if c.allowed_regions.iter().any(|r| r.trim() == "*") {
            if c.allowed_regions.len() != 1 {
                return Err(regions_at.error("\"*\" (anywhere) must be the only entry"));
            }
            Regions::Anywhere
        } else {
            if c.allowed_regions.is_empty() {
                return Err(regions_at.error("must list at least one region, or \"*\""));
            }
            let mut list: Vec<String> = Vec::new();
            for (j, r) in c.allowed_regions.iter().enumerate() {
                let r = region_name(&regions_at.index(j), r)?;
                if list.contains(&r) {
                    return Err(regions_at.index(j).error(format!("{r:?} is listed twice")));
                }
                list.push(r);
            }
            Regions::Only(list)
        };

        // A more sensitive class may never go anywhere a less sensitive one may not: raising the
        // class of a request must never loosen where it can go.
        if let Some((j, below)) = classes.iter().enumerate().next_back() {
            match (&below.regions, &regions) {
                (_, Regions::Anywhere) if below.regions.is_restricted() => {
                    return Err(regions_at.error(format!(
                        "\"*\" allows more than classes[{j}] ({:?}): a more sensitive class may not allow more regions",
                        below.name
                    )));
                }
                (Regions::Only(lower), Regions::Only(list)) => {
                    if let Some(extra) = list.iter().find(|r| !lower.contains(r)) {
                        return Err(regions_at.error(format!(
                            "{extra:?} is not allowed for classes[{j}] ({:?}): a more sensitive class may not allow more regions",
                            below.name
                        )));
                    }
                }
                _ => {}
            }
        }

        let action = match (c.action, &c.reroute) {
            (ActionJson::Deny, None) => Action::Deny,
            (ActionJson::Deny, Some(_)) => {
                return Err(at
                    .field("reroute")
                    .error("is only used with \"action\": \"reroute\""))
            }
            (ActionJson::Reroute, None) => {
                return Err(at
                    .field("reroute")
                    .error("is required with \"action\": \"reroute\" (header and value)"))
            }
            (ActionJson::Reroute, Some(r)) => {
                let r_at = at.field("reroute");
                let header = header_name(&r_at.field("header"), &r.header)?;
                if header.starts_with(':') || header == "host" {
                    return Err(r_at
                        .field("header")
                        .error(format!("{header:?} may not be used")));
                }
                if let Some((field, _)) = fixed_headers.iter().find(|(_, n)| *n == header) {
                    return Err(r_at
                        .field("header")
                        .error(format!("{header:?} is already used by {field}")));
                }
                let value = r.value.trim();
                if value.is_empty() || value.len() > 256 {
                    return Err(r_at.field("value").error("must be 1 to 256 characters"));
                }
                if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(r_at
                        .field("value")
                        .error("may only contain printable ASCII"));
                }
                Action::Reroute {
                    header,
                    value: value.to_string(),
                }
            }
        };
        if regions == Regions::Anywhere && action != Action::Deny {
            return Err(at
                .field("action")
                .error("a class allowed anywhere never violates; it takes no action"));
        }
        classes.push(Class {
            name,
            regions,
            action,
        });
    }
    Ok(classes)
}

fn validate_body(
    at: &FieldPath,
    json: &BodyDetectionJson,
    find_class: &dyn Fn(&FieldPath, &str) -> Result<ClassId, ConfigError>,
) -> Result<BodyDetection, ConfigError> {
    let max_body_bytes = in_range(
        &at.field("max_body_bytes"),
        json.max_body_bytes,
        16,
        1 << 20,
    )?;
    let d_at = at.field("detectors");
    if json.detectors.is_empty() {
        return Err(d_at.error("must map at least one detector to a class"));
    }
    let mut detectors = Vec::new();
    for (name, class) in &json.detectors {
        let at = d_at.key(name);
        let detector = Detector::from_name(name).ok_or_else(|| {
            at.error(format!(
                "unknown detector (detectors: {})",
                Detector::ALL.map(Detector::name).join(", ")
            ))
        })?;
        detectors.push((detector, find_class(&at, class)?));
    }
    Ok(BodyDetection {
        enabled_by_default: json.enabled_by_default,
        max_body_bytes,
        oversize: json.oversize,
        detectors,
    })
}

#[cfg(test)]
mod tests;
