//! PCI authorization policy: its JSON form and its validation.
//!
//! ```json
//! {
//!   "policy_version": "2026-11-01",
//!   "mode": "enforce",
//!   "trust_domain": "bank.local",
//!   "dot_segments": "reject",
//!   "deny_status": 403,
//!   "xfcc": { "enabled": false, "trusted_proxies": ["spiffe://bank.local/ns/edge/sa/gateway"] },
//!   "token": { "header": "x-cde-token", "key_env": "KAVACH_PCI_TOKEN_KEY", "max_ttl_seconds": 3600 },
//!   "rules": [
//!     { "name": "payments-api-read",
//!       "principals": ["spiffe://bank.local/ns/payments/sa/api", "spiffe://bank.local/ns/cde/*"],
//!       "methods": ["GET", "HEAD"],
//!       "paths": ["/v1/cards/*", "/v1/tokens/**"],
//!       "headers": [{ "name": "x-tenant", "present": true }, { "name": "x-env", "exact": "prod" }],
//!       "require_token": true,
//!       "allow_method_override": false,
//!       "not_before": "2026-11-01T00:00:00+05:30", "not_after": "2026-11-02T00:00:00+05:30" }
//!   ]
//! }
//! ```
//!
//! A request is allowed iff some rule matches all of its conditions; an omitted condition means
//! "any", an empty list is an error. `rules` must be given; `[]` denies everything.

mod rules;

use hashbrown::HashMap;
use serde::{Deserialize, Deserializer};

use super::identity::{XfccConfig, XfccElements};
use super::matcher::{trust_domain, PrincipalPattern};
use crate::config::{self, header_name, in_range, non_empty, ConfigError, FieldPath};
use crate::path_canon::DotSegments;

pub use rules::{metric_name, HeaderJson, Rule, RuleJson, MAX_RULE_NAME_BYTES};

/// Most rules in one policy.
pub const MAX_RULES: usize = 1024;
/// Most entries in one list (principals, methods, paths, headers, trusted proxies).
pub const MAX_LIST: usize = 256;
/// Longest `policy_version`.
pub const MAX_POLICY_VERSION_BYTES: usize = 128;
/// Shortest token key: HMAC-SHA256 wants 32 bytes of secret.
pub const MIN_TOKEN_KEY_BYTES: usize = 32;
/// Longest allowed `token.max_ttl_seconds` (one day).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 86_400;

/// Whether denials are enforced.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Denied requests get a local reply.
    #[default]
    Enforce,
    /// Nothing is blocked; would-be denials are recorded as `shadow_deny`.
    Shadow,
}

/// Deserializes a field that, when present, must not be `null`.
pub(crate) fn some<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PciConfigJson {
    pub policy_version: String,
    #[serde(default)]
    pub mode: Mode,
    pub trust_domain: String,
    #[serde(default)]
    pub dot_segments: DotSegments,
    #[serde(default = "default_deny_status")]
    pub deny_status: u32,
    #[serde(default, deserialize_with = "some")]
    pub xfcc: Option<XfccJson>,
    #[serde(default, deserialize_with = "some")]
    pub token: Option<TokenJson>,
    pub rules: Vec<RuleJson>,
}

fn default_deny_status() -> u32 {
    403
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XfccJson {
    pub enabled: bool,
    pub trusted_proxies: Vec<String>,
    /// Which element of a multi-element value is the caller: `single` (default: a value with
    /// more than one element is ambiguous and denied) or `last` (the element the trusted proxy
    /// appended, for proxies in `APPEND_FORWARD` mode).
    pub elements: XfccElements,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenJson {
    #[serde(default = "default_token_header")]
    pub header: String,
    pub key_env: String,
    #[serde(default = "default_max_ttl_seconds")]
    pub max_ttl_seconds: u64,
}

fn default_token_header() -> String {
    "x-cde-token".into()
}

fn default_max_ttl_seconds() -> u64 {
    3600
}

/// Token settings, with the key read from the VM environment.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// Lower-case header name.
    pub header: String,
    pub key: Vec<u8>,
    pub max_ttl_seconds: u64,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("header", &self.header)
            .field("key", &"<redacted>")
            .field("max_ttl_seconds", &self.max_ttl_seconds)
            .finish()
    }
}

/// The validated policy.
#[derive(Debug, Clone)]
pub struct PciConfig {
    pub policy_version: String,
    pub mode: Mode,
    pub trust_domain: String,
    pub dot_segments: DotSegments,
    /// Status of a denial (403 or 404); path errors always get 400.
    pub deny_status: u32,
    /// Present only when `xfcc.enabled`.
    pub xfcc: Option<XfccConfig>,
    pub token: Option<TokenConfig>,
    pub rules: Vec<Rule>,
    /// Every header a decision reads (condition headers, and the token header when a rule
    /// requires a token), keyed by [`crate::headers::alias_form`], valued by the configured
    /// lower-case spelling. A request carrying one of them twice, or in another spelling, is
    /// denied as `duplicate_header`.
    pub decision_headers: HashMap<String, String>,
}

impl PciConfig {
    /// Parses and validates a policy, reading the token key from the process environment.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::parse_with_env(bytes, &|name| std::env::var(name).ok())
    }

    /// Like [`PciConfig::parse`], with the environment given as a lookup function.
    pub fn parse_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::validate(config::parse::<PciConfigJson>(bytes)?, env)
    }

    pub fn validate(
        json: PciConfigJson,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let root = FieldPath::root();
        let at = root.field("policy_version");
        let policy_version = non_empty(&at, &json.policy_version)?.to_string();
        if policy_version.len() > MAX_POLICY_VERSION_BYTES {
            return Err(at.error(format!(
                "longer than {MAX_POLICY_VERSION_BYTES} bytes ({} bytes)",
                policy_version.len()
            )));
        }
        if policy_version.chars().any(char::is_control) {
            return Err(at.error("contains a control character"));
        }
        let td = trust_domain(&root.field("trust_domain"), &json.trust_domain)?;
        let deny_status = json.deny_status;
        if deny_status != 403 && deny_status != 404 {
            return Err(root
                .field("deny_status")
                .error(format!("must be 403 or 404, got {deny_status}")));
        }
        let xfcc = match json.xfcc {
            Some(x) => validate_xfcc(&root.field("xfcc"), x, &td)?,
            None => None,
        };
        let token = match json.token {
            Some(t) => Some(validate_token(&root.field("token"), t, env)?),
            None => None,
        };

        let at = root.field("rules");
        if json.rules.len() > MAX_RULES {
            return Err(at.error(format!(
                "at most {MAX_RULES} rules, got {}",
                json.rules.len()
            )));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(json.rules.len());
        for (i, r) in json.rules.into_iter().enumerate() {
            let at_rule = at.index(i);
            let rule = Rule::validate(&at_rule, r, &td, token.is_some())?;
            if let Some(j) = rules.iter().position(|o| o.name == rule.name) {
                return Err(at_rule.field("name").error(format!(
                    "duplicate rule name {:?} (also rules[{j}].name)",
                    rule.name
                )));
            }
            let metric = metric_name(&rule.name);
            if let Some((j, other)) = rules
                .iter()
                .enumerate()
                .find(|(_, o)| metric_name(&o.name) == metric)
            {
                return Err(at_rule.field("name").error(format!(
                    "{:?} and rules[{j}].name {:?} give the same metric name {metric:?}",
                    rule.name, other.name
                )));
            }
            rules.push(rule);
        }

        let decision_headers = decision_headers(&rules, token.as_ref())?;
        Ok(PciConfig {
            policy_version,
            mode: json.mode,
            trust_domain: td,
            dot_segments: json.dot_segments,
            deny_status,
            xfcc,
            token,
            rules,
            decision_headers,
        })
    }
}

fn validate_xfcc(at: &FieldPath, x: XfccJson, td: &str) -> Result<Option<XfccConfig>, ConfigError> {
    let at_list = at.field("trusted_proxies");
    if x.trusted_proxies.len() > MAX_LIST {
        return Err(at_list.error(format!(
            "at most {MAX_LIST} entries, got {}",
            x.trusted_proxies.len()
        )));
    }
    for (i, p) in x.trusted_proxies.iter().enumerate() {
        let at_p = at_list.index(i);
        if PrincipalPattern::parse(&at_p, p, td)?.is_pattern() {
            return Err(at_p.error(format!("{p:?} must be an exact SPIFFE ID, not a pattern")));
        }
    }
    if !x.enabled {
        return Ok(None);
    }
    if x.trusted_proxies.is_empty() {
        return Err(at_list.error("must list at least one proxy when xfcc is enabled"));
    }
    Ok(Some(XfccConfig {
        trusted_proxies: x.trusted_proxies,
        elements: x.elements,
    }))
}

fn validate_token(
    at: &FieldPath,
    t: TokenJson,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<TokenConfig, ConfigError> {
    let header = header_name(&at.field("header"), &t.header)?;
    let at_env = at.field("key_env");
    let var = non_empty(&at_env, &t.key_env)?;
    let key = match env(var) {
        Some(k) if !k.is_empty() => k.into_bytes(),
        _ => {
            return Err(at_env.error(format!(
                "environment variable {var:?} is not set or empty in the VM (vm_config.environment_variables)"
            )))
        }
    };
    if key.len() < MIN_TOKEN_KEY_BYTES {
        return Err(at_env.error(format!(
            "the key in {var:?} is {} bytes; at least {MIN_TOKEN_KEY_BYTES} are needed",
            key.len()
        )));
    }
    let max_ttl_seconds = in_range(
        &at.field("max_ttl_seconds"),
        t.max_ttl_seconds,
        1,
        MAX_TOKEN_TTL_SECONDS,
    )?;
    Ok(TokenConfig {
        header,
        key,
        max_ttl_seconds,
    })
}

/// Collects the headers decisions read; two spellings of one name are a configuration error.
fn decision_headers(
    rules: &[Rule],
    token: Option<&TokenConfig>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut seen: HashMap<String, (String, FieldPath)> = HashMap::new();
    let mut add = |name: &str, at: FieldPath| -> Result<(), ConfigError> {
        let alias = crate::headers::alias_form(name);
        match seen.get(&alias) {
            Some((other, other_at)) if other != name => Err(at.error(format!(
                "{name:?} is another spelling of {other:?} ({other_at}); use one spelling"
            ))),
            Some(_) => Ok(()),
            None => {
                seen.insert(alias, (name.to_string(), at));
                Ok(())
            }
        }
    };
    if let Some(t) = token {
        if rules.iter().any(|r| r.require_token) {
            add(&t.header, FieldPath::root().field("token").field("header"))?;
        }
    }
    for (i, rule) in rules.iter().enumerate() {
        for (j, h) in rule.headers.iter().enumerate() {
            let at = FieldPath::root()
                .field("rules")
                .index(i)
                .field("headers")
                .index(j)
                .field("name");
            add(&h.name, at)?;
        }
    }
    Ok(seen
        .into_iter()
        .map(|(alias, (name, _))| (alias, name))
        .collect())
}

#[cfg(test)]
mod tests;
