//! Rate-limit filter configuration.
//!
//! ```json
//! {
//!   "mode": "enforce",
//!   "client_address": { "ipv4_prefix": 32, "ipv6_prefix": 64 },
//!   "response_headers": { "legacy": true, "on_allowed": true },
//!   "rules": [
//!     { "name": "orders-per-client", "match": { "paths": ["/v1/orders/**"], "methods": ["POST"] },
//!       "key": ["client_address"], "limit": 100, "period_s": 60, "burst": 20 },
//!     { "name": "partner-api", "key": [{ "header": "x-partner-id" }],
//!       "tiers": { "by": { "header": "x-partner-tier" }, "default": "standard",
//!                  "limits": { "premium": { "limit": 1000, "period_s": 60 },
//!                              "standard": { "limit": 100, "period_s": 60 } } } },
//!     { "name": "payments-global", "global": true, "key": ["principal"],
//!       "limit": 50, "period_s": 1 }
//!   ],
//!   "rate_limit_service": { "cluster": "ratelimit", "domain": "kavach", "timeout_ms": 50,
//!                           "failure_mode": "local" }
//! }
//! ```
//!
//! A `global` rule is decided by the rate-limit service (Envoy's RLS v3 API) so that every Envoy
//! sharing it counts together; its own limit is the local fallback (`failure_mode: local`).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::bucket::Limits;
use super::key::AddressPolicy;
use super::matcher::{Matcher, PathPattern};
use super::table::config_tag;
use crate::config::{self, header_name, http_method, in_range, non_empty, ConfigError, FieldPath};

pub const DEFAULT_SLOTS: u32 = 16_384;
pub const MAX_SLOTS: u32 = 1 << 20;
/// Upper bound of the slots of all rules together (each slot is a shared-data entry of about
/// 150 bytes in Envoy: 4 Mi slots are about 600 MiB).
pub const MAX_TOTAL_SLOTS: u64 = 1 << 22;
pub const MAX_RULES: usize = 64;
pub const MAX_TIERS: usize = 32;
pub const MAX_TIER_PRINCIPALS: usize = 10_000;
pub const MAX_KEY_PARTS: usize = 8;
pub const MAX_MATCH_ENTRIES: usize = 64;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Over-limit requests get 429.
    Enforce,
    /// Over-limit requests are counted and recorded, never refused.
    Shadow,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenKeyMissing {
    /// Every request without a usable key shares one bucket of the rule.
    SharedBucket,
    /// Requests without a usable key are refused with 400.
    Deny,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfigJson {
    pub mode: Mode,
    pub client_address: ClientAddressJson,
    pub response_headers: ResponseHeadersJson,
    /// Slots tried per key (linear probing) before the table counts as full for it.
    pub probes: u32,
    /// Compare-and-swap attempts per update before the request is refused.
    pub cas_retries: u32,
    pub rules: Vec<RuleJson>,
    /// The rate-limit service that decides `global` rules.
    pub rate_limit_service: Option<ServiceJson>,
}

/// What a global rule does when the rate-limit service does not answer in time, fails, or
/// answers something unreadable.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Refuse the request (503, `retry-after`).
    Deny,
    /// Let the request through.
    Allow,
    /// Decide with the rule's own bucket in this Envoy (its `limit`, `period_s`, `burst`).
    Local,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceJson {
    /// Envoy cluster of the service; it must speak HTTP/2 (gRPC).
    pub cluster: String,
    /// The `domain` of every request to the service (its configuration is keyed by it).
    pub domain: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_failure_mode")]
    pub failure_mode: FailureMode,
}

fn default_timeout_ms() -> u64 {
    50
}
fn default_failure_mode() -> FailureMode {
    FailureMode::Local
}

/// Validated `rate_limit_service`.
#[derive(Debug, Clone)]
pub struct Service {
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u64,
    pub failure_mode: FailureMode,
}

impl Default for RateLimitConfigJson {
    fn default() -> Self {
        RateLimitConfigJson {
            mode: Mode::Enforce,
            client_address: ClientAddressJson::default(),
            response_headers: ResponseHeadersJson::default(),
            probes: 8,
            cas_retries: 32,
            rules: Vec::new(),
            rate_limit_service: None,
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAddressJson {
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Not a setting of this filter: refused with a pointer to the connection manager's.
    pub xff_trusted_hops: Option<u32>,
}

impl Default for ClientAddressJson {
    fn default() -> Self {
        let d = AddressPolicy::default();
        ClientAddressJson {
            ipv4_prefix: d.ipv4_prefix,
            ipv6_prefix: d.ipv6_prefix,
            xff_trusted_hops: None,
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseHeadersJson {
    /// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft) on 429 responses.
    pub ietf: bool,
    /// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` on 429 responses.
    pub legacy: bool,
    /// The same fields on responses that were let through.
    pub on_allowed: bool,
}

impl Default for ResponseHeadersJson {
    fn default() -> Self {
        ResponseHeadersJson {
            ietf: true,
            legacy: false,
            on_allowed: false,
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleJson {
    pub name: String,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default, rename = "match")]
    pub matcher: MatchJson,
    pub key: Vec<KeyPartJson>,
    #[serde(default = "default_when_key_missing")]
    pub when_key_missing: WhenKeyMissing,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub period_s: Option<u64>,
    #[serde(default)]
    pub burst: Option<u64>,
    #[serde(default)]
    pub tiers: Option<TiersJson>,
    #[serde(default = "default_cost")]
    pub cost: u64,
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Decided by the rate-limit service, shared by every Envoy that uses it.
    #[serde(default)]
    pub global: bool,
}

fn default_when_key_missing() -> WhenKeyMissing {
    WhenKeyMissing::SharedBucket
}
fn default_cost() -> u64 {
    1
}
fn default_slots() -> u32 {
    DEFAULT_SLOTS
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchJson {
    pub routes: Vec<String>,
    pub paths: Vec<String>,
    pub methods: Vec<String>,
}

/// One part of a bucket key.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPartJson {
    ClientAddress,
    Principal,
    Route,
    Header(String),
    HeaderLowercase(String),
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersJson {
    pub by: TierSourceJson,
    pub default: String,
    pub limits: BTreeMap<String, LimitsJson>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierSourceJson {
    /// The header's value (trimmed) is the tier name.
    Header(String),
    /// Verified mTLS principal (URI SAN) → tier name.
    Principal(BTreeMap<String, String>),
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsJson {
    pub limit: u64,
    pub period_s: u64,
    #[serde(default)]
    pub burst: u64,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub address: AddressPolicy,
    pub headers: ResponseHeadersJson,
    pub probes: u32,
    pub cas_retries: u32,
    pub rules: Vec<Rule>,
    pub service: Option<Service>,
}

#[derive(Debug, Clone)]
pub enum KeyPart {
    ClientAddress,
    Principal,
    Route,
    Header { name: String, lowercase: bool },
}

#[derive(Debug, Clone)]
pub enum TierSource {
    /// One limit for everybody (the rule's own `limit`, `period_s`, `burst`).
    Fixed,
    Header(String),
    Principal(HashMap<String, usize>),
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub limits: Limits,
}

#[derive(Debug, Clone)]
pub struct Tiers {
    pub by: TierSource,
    /// Index into `tiers` of the tier used when the source gives no known tier.
    pub default: usize,
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub mode: Mode,
    pub matcher: Matcher,
    pub key: Vec<KeyPart>,
    pub when_key_missing: WhenKeyMissing,
    pub tiers: Tiers,
    pub cost: u64,
    pub slots: u32,
    /// Digest of what the stored buckets depend on (limits, slots, probes).
    pub tag: u32,
    pub global: bool,
}

impl Rule {
    pub fn is_tiered(&self) -> bool {
        !matches!(self.tiers.by, TierSource::Fixed)
    }
}

/// Checks a rule or tier name: `[A-Za-z0-9_-]{1,64}` (it appears in metric names, shared-data
/// keys and response headers).
pub fn identifier<'a>(at: &FieldPath, name: &'a str) -> Result<&'a str, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(name)
    } else {
        Err(at.error(format!(
            "{name:?} must be 1 to 64 characters from A-Z a-z 0-9 _ -"
        )))
    }
}

fn limits(at: &FieldPath, limit: u64, period_s: u64, burst: u64) -> Result<Limits, ConfigError> {
    Ok(Limits {
        limit: in_range(&at.field("limit"), limit, 1, 1_000_000_000)?,
        period_s: in_range(&at.field("period_s"), period_s, 1, 86_400)?,
        burst: in_range(&at.field("burst"), burst, 0, 1_000_000_000)?,
    })
}

fn validate_match(at: &FieldPath, m: MatchJson) -> Result<Matcher, ConfigError> {
    for (field, len) in [
        ("routes", m.routes.len()),
        ("paths", m.paths.len()),
        ("methods", m.methods.len()),
    ] {
        if len > MAX_MATCH_ENTRIES {
            return Err(at
                .field(field)
                .error(format!("at most {MAX_MATCH_ENTRIES} entries")));
        }
    }
    let mut out = Matcher::default();
    for (i, r) in m.routes.iter().enumerate() {
        out.routes
            .push(non_empty(&at.field("routes").index(i), r)?.to_string());
    }
    for (i, p) in m.paths.iter().enumerate() {
        out.paths
            .push(PathPattern::parse(&at.field("paths").index(i), p)?);
    }
    for (i, x) in m.methods.iter().enumerate() {
        out.methods
            .push(http_method(&at.field("methods").index(i), x)?);
    }
    Ok(out)
}

fn validate_key(at: &FieldPath, parts: Vec<KeyPartJson>) -> Result<Vec<KeyPart>, ConfigError> {
    if parts.len() > MAX_KEY_PARTS {
        return Err(at.error(format!("at most {MAX_KEY_PARTS} parts")));
    }
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let pat = at.index(i);
        if parts[..i].contains(p) {
            return Err(pat.error("repeats an earlier part"));
        }
        out.push(match p {
            KeyPartJson::ClientAddress => KeyPart::ClientAddress,
            KeyPartJson::Principal => KeyPart::Principal,
            KeyPartJson::Route => KeyPart::Route,
            KeyPartJson::Header(n) => KeyPart::Header {
                name: header_name(&pat.field("header"), n)?,
                lowercase: false,
            },
            KeyPartJson::HeaderLowercase(n) => KeyPart::Header {
                name: header_name(&pat.field("header_lowercase"), n)?,
                lowercase: true,
            },
        });
    }
    Ok(out)
}

fn validate_tiers(at: &FieldPath, t: TiersJson) -> Result<Tiers, ConfigError> {
    let lat = at.field("limits");
    if t.limits.is_empty() {
        return Err(lat.error("at least one tier is required"));
    }
    if t.limits.len() > MAX_TIERS {
        return Err(lat.error(format!("at most {MAX_TIERS} tiers")));
    }
    let mut tiers = Vec::new();
    for (name, l) in &t.limits {
        let tat = lat.key(name);
        identifier(&tat, name)?;
        tiers.push(Tier {
            name: name.clone(),
            limits: limits(&tat, l.limit, l.period_s, l.burst)?,
        });
    }
    let index_of = |name: &str| tiers.iter().position(|x| x.name == name);
    let default = index_of(&t.default).ok_or_else(|| {
        at.field("default")
            .error(format!("{:?} is not a tier in limits", t.default))
    })?;
    let by = match t.by {
        TierSourceJson::Header(h) => {
            TierSource::Header(header_name(&at.field("by").field("header"), &h)?)
        }
        TierSourceJson::Principal(map) => {
            let pat = at.field("by").field("principal");
            if map.is_empty() {
                return Err(pat.error("at least one principal is required"));
            }
            if map.len() > MAX_TIER_PRINCIPALS {
                return Err(pat.error(format!("at most {MAX_TIER_PRINCIPALS} principals")));
            }
            let mut out = HashMap::new();
            for (principal, tier) in &map {
                let eat = pat.key(principal);
                non_empty(&eat, principal)?;
                let idx = index_of(tier)
                    .ok_or_else(|| eat.error(format!("{tier:?} is not a tier in limits")))?;
                out.insert(principal.clone(), idx);
            }
            TierSource::Principal(out)
        }
    };
    Ok(Tiers { by, default, tiers })
}

fn validate_rule(
    at: &FieldPath,
    r: RuleJson,
    top_mode: Mode,
    probes: u32,
) -> Result<Rule, ConfigError> {
    let name = identifier(&at.field("name"), &r.name)?.to_string();
    let tiers = match (r.tiers, r.limit, r.period_s) {
        (Some(t), None, None) if r.burst.is_none() => validate_tiers(&at.field("tiers"), t)?,
        (Some(_), _, _) => {
            return Err(at
                .field("tiers")
                .error("give either limit/period_s/burst or tiers, not both"))
        }
        (None, Some(limit), Some(period_s)) => Tiers {
            by: TierSource::Fixed,
            default: 0,
            tiers: vec![Tier {
                name: String::new(),
                limits: limits(at, limit, period_s, r.burst.unwrap_or(0))?,
            }],
        },
        (None, None, _) => return Err(at.field("limit").error("required (or tiers)")),
        (None, Some(_), None) => return Err(at.field("period_s").error("required with limit")),
    };
    let smallest = tiers
        .tiers
        .iter()
        .map(|t| t.limits.capacity())
        .min()
        .unwrap_or(1);
    if r.cost == 0 || r.cost > smallest {
        return Err(at.field("cost").error(format!(
            "must be between 1 and the smallest bucket capacity (limit + burst = {smallest}), got {}",
            r.cost
        )));
    }
    let slots = in_range(&at.field("slots"), r.slots, 64, MAX_SLOTS)?;
    let mut tag_parts: Vec<Vec<u8>> = vec![
        name.as_bytes().to_vec(),
        slots.to_le_bytes().to_vec(),
        probes.to_le_bytes().to_vec(),
    ];
    for t in &tiers.tiers {
        tag_parts.push(t.name.as_bytes().to_vec());
        for v in [t.limits.limit, t.limits.period_s, t.limits.burst] {
            tag_parts.push(v.to_le_bytes().to_vec());
        }
    }
    let tag_refs: Vec<&[u8]> = tag_parts.iter().map(Vec::as_slice).collect();
    Ok(Rule {
        name,
        mode: r.mode.unwrap_or(top_mode),
        matcher: validate_match(&at.field("match"), r.matcher)?,
        key: validate_key(&at.field("key"), r.key)?,
        when_key_missing: r.when_key_missing,
        tiers,
        cost: r.cost,
        slots,
        tag: config_tag(&tag_refs),
        global: r.global,
    })
}

fn validate_service(at: &FieldPath, s: ServiceJson) -> Result<Service, ConfigError> {
    let cluster = non_empty(&at.field("cluster"), &s.cluster)?.to_string();
    let domain = non_empty(&at.field("domain"), &s.domain)?;
    if domain.len() > 128 || domain.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(at
            .field("domain")
            .error("at most 128 characters, without spaces or control characters"));
    }
    Ok(Service {
        cluster,
        domain: domain.to_string(),
        timeout_ms: in_range(&at.field("timeout_ms"), s.timeout_ms, 1, 10_000)?,
        failure_mode: s.failure_mode,
    })
}

impl RateLimitConfig {
    /// Whether the rule keeps buckets in this Envoy (local rules, and global rules whose
    /// failure mode falls back to them).
    pub fn has_local_table(&self, rule: &Rule) -> bool {
        !rule.global
            || self
                .service
                .as_ref()
                .is_some_and(|s| s.failure_mode == FailureMode::Local)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::validate(config::parse::<RateLimitConfigJson>(bytes)?)
    }

    pub fn validate(json: RateLimitConfigJson) -> Result<Self, ConfigError> {
        let root = FieldPath::root();
        let ca = &json.client_address;
        let cat = root.field("client_address");
        if ca.xff_trusted_hops.is_some() {
            return Err(cat.field("xff_trusted_hops").error(
                "the client address is Envoy's: set use_remote_address and xff_num_trusted_hops on the HTTP connection manager",
            ));
        }
        let address = AddressPolicy {
            ipv4_prefix: in_range(&cat.field("ipv4_prefix"), ca.ipv4_prefix, 8, 32)?,
            ipv6_prefix: in_range(&cat.field("ipv6_prefix"), ca.ipv6_prefix, 32, 128)?,
        };
        let probes = in_range(&root.field("probes"), json.probes, 1, 64)?;
        let cas_retries = in_range(&root.field("cas_retries"), json.cas_retries, 1, 1000)?;
        let rat = root.field("rules");
        if json.rules.is_empty() {
            return Err(rat.error("at least one rule is required"));
        }
        if json.rules.len() > MAX_RULES {
            return Err(rat.error(format!("at most {MAX_RULES} rules")));
        }
        let mut rules: Vec<Rule> = Vec::new();
        let mut total_slots: u64 = 0;
        for (i, r) in json.rules.into_iter().enumerate() {
            let at = rat.index(i);
            let rule = validate_rule(&at, r, json.mode, probes)?;
            if let Some(j) = rules.iter().position(|x| x.name == rule.name) {
                return Err(at
                    .field("name")
                    .error(format!("{:?} is already used by rules[{j}]", rule.name)));
            }
            total_slots += u64::from(rule.slots);
            if total_slots > MAX_TOTAL_SLOTS {
                return Err(at.field("slots").error(format!(
                    "the rules' slots add up to {total_slots}, more than {MAX_TOTAL_SLOTS}"
                )));
            }
            rules.push(rule);
        }
        let sat = root.field("rate_limit_service");
        let service = match json.rate_limit_service {
            Some(s) => {
                if !rules.iter().any(|r| r.global) {
                    return Err(sat.error("no rule is global (set \"global\": true on a rule)"));
                }
                Some(validate_service(&sat, s)?)
            }
            None => {
                if let Some(i) = rules.iter().position(|r| r.global) {
                    return Err(rat.index(i).field("global").error(
                        "a global rule needs rate_limit_service (the cluster of an RLS v3 service)",
                    ));
                }
                None
            }
        };
        Ok(RateLimitConfig {
            address,
            headers: json.response_headers,
            probes,
            cas_retries,
            rules,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        RateLimitConfig::parse(json.as_bytes())
            .unwrap_err()
            .to_string()
    }

    fn ok(json: &str) -> RateLimitConfig {
        RateLimitConfig::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    const RULE: &str = r#"{"name":"r","key":["client_address"],"limit":10,"period_s":60}"#;

    fn with_rule(extra: &str) -> String {
        format!(
            r#"{{"rules":[{{"name":"r","key":["client_address"],"limit":10,"period_s":60{extra}}}]}}"#
        )
    }

    #[test]
    fn global_rules_need_a_service_and_a_service_needs_a_global_rule() {
        let svc = r#""rate_limit_service":{"cluster":"rls","domain":"kavach"}"#;
        let c = ok(&format!(
            r#"{{"rules":[{RULE},{{"name":"g","global":true,"key":["principal"],"limit":5,"period_s":1}}],{svc}}}"#
        ));
        let s = c.service.as_ref().unwrap();
        assert_eq!((s.cluster.as_str(), s.domain.as_str()), ("rls", "kavach"));
        assert_eq!(s.timeout_ms, 50);
        assert_eq!(s.failure_mode, FailureMode::Local);
        assert!(!c.rules[0].global && c.rules[1].global);
        assert!(c.has_local_table(&c.rules[0]) && c.has_local_table(&c.rules[1]));

        let deny = ok(
            r#"{"rules":[{"name":"g","global":true,"key":["principal"],"limit":5,"period_s":1}],
                "rate_limit_service":{"cluster":"rls","domain":"kavach","failure_mode":"deny","timeout_ms":20}}"#,
        );
        assert!(
            !deny.has_local_table(&deny.rules[0]),
            "no local buckets to fall back to"
        );

        assert_eq!(
            err(&with_rule(r#","global":true"#)),
            "rules[0].global: a global rule needs rate_limit_service (the cluster of an RLS v3 service)"
        );
        assert_eq!(
            err(&format!(r#"{{"rules":[{RULE}],{svc}}}"#)),
            r#"rate_limit_service: no rule is global (set "global": true on a rule)"#
        );
        let g = r#"{"name":"g","global":true,"key":["principal"],"limit":5,"period_s":1}"#;
        for (service, message) in [
            (r#"{"cluster":"","domain":"k"}"#, "rate_limit_service.cluster: must not be empty"),
            (r#"{"cluster":"c","domain":"a b"}"#, "rate_limit_service.domain: at most 128 characters, without spaces or control characters"),
            (r#"{"cluster":"c","domain":"k","timeout_ms":0}"#, "rate_limit_service.timeout_ms: must be between 1 and 10000, got 0"),
        ] {
            assert_eq!(
                err(&format!(r#"{{"rules":[{g}],"rate_limit_service":{service}}}"#)),
                message
            );
        }
        let e = err(&format!(
            r#"{{"rules":[{g}],"rate_limit_service":{{"cluster":"c","domain":"k","failure_mode":"open"}}}}"#
        ));
        assert!(
            e.starts_with("rate_limit_service.failure_mode: unknown variant `open`"),
            "{e}"
        );
        let e = err(&format!(
            r#"{{"rules":[{g}],"rate_limit_service":{{"cluster":"c","domain":"k","timeout":5}}}}"#
        ));
        assert!(
            e.starts_with("rate_limit_service.timeout: unknown field `timeout`"),
            "{e}"
        );
    }

    #[test]
    fn a_minimal_rule_gets_safe_defaults() {
        let c = ok(&format!(r#"{{"rules":[{RULE}]}}"#));
        assert_eq!(c.address, AddressPolicy::default());
        assert_eq!(c.probes, 8);
        assert_eq!(c.cas_retries, 32);
        assert!(c.headers.ietf && !c.headers.legacy && !c.headers.on_allowed);
        let r = &c.rules[0];
        assert_eq!(r.mode, Mode::Enforce);
        assert_eq!(r.slots, DEFAULT_SLOTS);
        assert_eq!(r.cost, 1);
        assert_eq!(r.when_key_missing, WhenKeyMissing::SharedBucket);
        assert_eq!(r.tiers.tiers.len(), 1);
        assert_eq!(
            r.tiers.tiers[0].limits,
            Limits {
                limit: 10,
                period_s: 60,
                burst: 0
            }
        );
        assert!(!r.is_tiered());
    }

    #[test]
    fn everything_can_be_configured() {
        let c = ok(r#"{
            "mode": "shadow",
            "client_address": {"ipv4_prefix": 24, "ipv6_prefix": 56},
            "response_headers": {"ietf": false, "legacy": true, "on_allowed": true},
            "probes": 4, "cas_retries": 100,
            "rules": [
              {"name": "orders", "mode": "enforce",
               "match": {"routes": ["orders"], "paths": ["/v1/orders/**"], "methods": ["POST"]},
               "key": ["client_address", {"header": "X-Api-Key"}, {"header_lowercase": "x-user"},
                       "principal", "route"],
               "when_key_missing": "deny", "limit": 5, "period_s": 1, "burst": 5, "cost": 2,
               "slots": 1024},
              {"name": "partners", "key": [],
               "tiers": {"by": {"principal": {"spiffe://bank/ns/p/sa/a": "gold"}},
                         "default": "basic",
                         "limits": {"gold": {"limit": 100, "period_s": 60, "burst": 10},
                                    "basic": {"limit": 10, "period_s": 60}}}}
            ]}"#);
        assert_eq!(c.address.ipv4_prefix, 24);
        assert_eq!(c.rules[0].mode, Mode::Enforce);
        assert_eq!(c.rules[1].mode, Mode::Shadow);
        assert_eq!(c.rules[0].key.len(), 5);
        assert!(
            matches!(&c.rules[0].key[1], KeyPart::Header { name, lowercase: false } if name == "x-api-key")
        );
        assert!(matches!(
            &c.rules[0].key[2],
            KeyPart::Header {
                lowercase: true,
                ..
            }
        ));
        let t = &c.rules[1].tiers;
        assert_eq!(t.tiers[t.default].name, "basic");
        assert!(c.rules[1].is_tiered());
        assert!(c.rules[1].key.is_empty());
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        assert_eq!(err("{}"), "rules: at least one rule is required");
        assert_eq!(
            err(r#"{"rules":[{"name":"bad name","key":[],"limit":1,"period_s":1}]}"#),
            "rules[0].name: \"bad name\" must be 1 to 64 characters from A-Z a-z 0-9 _ -"
        );
        assert_eq!(
            err(&format!(r#"{{"rules":[{RULE},{RULE}]}}"#)),
            "rules[1].name: \"r\" is already used by rules[0]"
        );
        assert_eq!(
            err(&with_rule(r#","limit2":1"#)).split(',').next().unwrap(),
            "rules[0].limit2: unknown field `limit2`"
        );
        assert_eq!(
            err(r#"{"rules":[{"name":"r","key":[]}]}"#),
            "rules[0].limit: required (or tiers)"
        );
        assert_eq!(
            err(r#"{"rules":[{"name":"r","key":[],"limit":3}]}"#),
            "rules[0].period_s: required with limit"
        );
        assert!(err(r#"{"rules":[{"name":"r","limit":3,"period_s":1}]}"#)
            .contains("missing field `key`"));
        assert_eq!(
            err(r#"{"rules":[{"name":"r","key":[],"limit":3,"period_s":0}]}"#),
            "rules[0].period_s: must be between 1 and 86400, got 0"
        );
    }

    #[test]
    fn limits_costs_and_sizes_are_bounded() {
        assert_eq!(
            err(r#"{"rules":[{"name":"r","key":[],"limit":0,"period_s":1}]}"#),
            "rules[0].limit: must be between 1 and 1000000000, got 0"
        );
        assert_eq!(
            err(r#"{"rules":[{"name":"r","key":[],"limit":2,"period_s":1,"burst":1,"cost":4}]}"#),
            "rules[0].cost: must be between 1 and the smallest bucket capacity (limit + burst = 3), got 4"
        );
        assert_eq!(
            err(&with_rule(r#","slots":10"#)),
            "rules[0].slots: must be between 64 and 1048576, got 10"
        );
        let many: Vec<String> = (0..5)
            .map(|i| {
                format!(r#"{{"name":"r{i}","key":[],"limit":1,"period_s":1,"slots":1048576}}"#)
            })
            .collect();
        assert_eq!(
            err(&format!(r#"{{"rules":[{}]}}"#, many.join(","))),
            "rules[4].slots: the rules' slots add up to 5242880, more than 4194304"
        );
        assert_eq!(
            err(&format!(r#"{{"probes":0,"rules":[{RULE}]}}"#)),
            "probes: must be between 1 and 64, got 0"
        );
        assert_eq!(
            err(&format!(
                r#"{{"client_address":{{"xff_trusted_hops":1}},"rules":[{RULE}]}}"#
            )),
            "client_address.xff_trusted_hops: the client address is Envoy's: set use_remote_address and xff_num_trusted_hops on the HTTP connection manager"
        );
        assert_eq!(
            err(&format!(
                r#"{{"client_address":{{"ipv6_prefix":129}},"rules":[{RULE}]}}"#
            )),
            "client_address.ipv6_prefix: must be between 32 and 128, got 129"
        );
    }

    #[test]
    fn keys_and_matches_are_checked() {
        assert_eq!(
            err(
                r#"{"rules":[{"name":"r","key":["client_address","client_address"],"limit":1,"period_s":1}]}"#
            ),
            "rules[0].key[1]: repeats an earlier part"
        );
        assert_eq!(
            err(
                r#"{"rules":[{"name":"r","key":[{"header":"bad header"}],"limit":1,"period_s":1}]}"#
            ),
            "rules[0].key[0].header: \"bad header\" is not a valid HTTP header name"
        );
        assert!(
            err(r#"{"rules":[{"name":"r","key":["ip"],"limit":1,"period_s":1}]}"#)
                .starts_with("rules[0].key[0]: unknown variant `ip`")
        );
        assert_eq!(
            err(&with_rule(r#","match":{"paths":["/a/**/b"]}"#)),
            "rules[0].match.paths[0]: \"**\" may only be the last segment"
        );
        assert_eq!(
            err(&with_rule(r#","match":{"methods":["GET POST"]}"#)),
            "rules[0].match.methods[0]: \"GET POST\" is not an HTTP method (1 to 32 token characters)"
        );
        assert_eq!(
            err(&with_rule(r#","match":{"routes":[" "]}"#)),
            "rules[0].match.routes[0]: must not be empty"
        );
        assert!(err(&with_rule(r#","when_key_missing":"skip""#))
            .starts_with("rules[0].when_key_missing: unknown variant `skip`"));
    }

    #[test]
    fn tiers_are_checked() {
        let tiered = |tiers: &str| {
            err(&format!(
                r#"{{"rules":[{{"name":"r","key":[],"tiers":{tiers}}}]}}"#
            ))
        };
        assert_eq!(
            tiered(
                r#"{"by":{"header":"x-tier"},"default":"gold","limits":{"basic":{"limit":1,"period_s":1}}}"#
            ),
            "rules[0].tiers.default: \"gold\" is not a tier in limits"
        );
        assert_eq!(
            tiered(r#"{"by":{"header":"x-tier"},"default":"a","limits":{}}"#),
            "rules[0].tiers.limits: at least one tier is required"
        );
        assert_eq!(
            tiered(
                r#"{"by":{"header":"x-tier"},"default":"a","limits":{"a":{"limit":0,"period_s":1}}}"#
            ),
            "rules[0].tiers.limits[\"a\"].limit: must be between 1 and 1000000000, got 0"
        );
        assert_eq!(
            tiered(
                r#"{"by":{"principal":{"spiffe://x":"gold"}},"default":"a","limits":{"a":{"limit":1,"period_s":1}}}"#
            ),
            "rules[0].tiers.by.principal[\"spiffe://x\"]: \"gold\" is not a tier in limits"
        );
        assert_eq!(
            tiered(
                r#"{"by":{"principal":{}},"default":"a","limits":{"a":{"limit":1,"period_s":1}}}"#
            ),
            "rules[0].tiers.by.principal: at least one principal is required"
        );
        assert_eq!(
            tiered(r#"{"by":{"header":"x-tier"},"default":"a b","limits":{"a b":{"limit":1,"period_s":1}}}"#),
            "rules[0].tiers.limits[\"a b\"]: \"a b\" must be 1 to 64 characters from A-Z a-z 0-9 _ -"
        );
        assert_eq!(
            err(
                r#"{"rules":[{"name":"r","key":[],"limit":1,"period_s":1,"tiers":{"by":{"header":"x"},"default":"a","limits":{"a":{"limit":1,"period_s":1}}}}]}"#
            ),
            "rules[0].tiers: give either limit/period_s/burst or tiers, not both"
        );
    }

    #[test]
    fn the_tag_changes_with_what_buckets_depend_on() {
        let tag = |extra: &str| ok(&with_rule(extra)).rules[0].tag;
        assert_eq!(
            tag(""),
            tag(r#","cost":2"#),
            "cost does not change stored buckets"
        );
        assert_ne!(tag(""), tag(r#","burst":1"#));
        assert_ne!(tag(""), tag(r#","slots":1024"#));
        let probes = ok(&format!(r#"{{"probes":4,"rules":[{RULE}]}}"#)).rules[0].tag;
        assert_ne!(tag(""), probes);
    }
}
