//! One rule of the policy: JSON form and validation.

use serde::Deserialize;

use super::{some, MAX_LIST};
use crate::config::{header_name, ConfigError, FieldPath};
use crate::pci::matcher::{
    header_regex, header_value, instant, method, HeaderCondition, HeaderTest, PathPattern,
    PrincipalPattern, Window,
};

/// Longest rule name.
pub const MAX_RULE_NAME_BYTES: usize = 64;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleJson {
    pub name: String,
    #[serde(default, deserialize_with = "some")]
    pub principals: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some")]
    pub methods: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some")]
    pub paths: Option<Vec<String>>,
    #[serde(default, deserialize_with = "some")]
    pub headers: Option<Vec<HeaderJson>>,
    #[serde(default)]
    pub require_token: bool,
    #[serde(default)]
    pub allow_method_override: bool,
    #[serde(default, deserialize_with = "some")]
    pub not_before: Option<String>,
    #[serde(default, deserialize_with = "some")]
    pub not_after: Option<String>,
}

/// A header condition: `name` and exactly one of the tests.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderJson {
    pub name: String,
    #[serde(default, deserialize_with = "some")]
    pub present: Option<bool>,
    #[serde(default, deserialize_with = "some")]
    pub exact: Option<String>,
    #[serde(default, deserialize_with = "some")]
    pub prefix: Option<String>,
    #[serde(default, deserialize_with = "some")]
    pub regex: Option<String>,
}

/// A validated rule. `None` for a list means the rule does not constrain that dimension.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `[A-Za-z0-9_.-]{1,64}`, unique in the policy.
    pub name: String,
    pub principals: Option<Vec<PrincipalPattern>>,
    pub methods: Option<Vec<String>>,
    pub paths: Option<Vec<PathPattern>>,
    /// Every condition must hold (empty: no header conditions).
    pub headers: Vec<HeaderCondition>,
    pub require_token: bool,
    pub allow_method_override: bool,
    pub window: Window,
}

/// The rule name as it appears in metric names: lower case, `.` (and anything else outside
/// `[a-z0-9_-]`) as `_`.
pub fn metric_name(rule_name: &str) -> String {
    rule_name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .collect()
}

impl Rule {
    pub fn validate(
        at: &FieldPath,
        r: RuleJson,
        trust_domain: &str,
        token_configured: bool,
    ) -> Result<Self, ConfigError> {
        let name = rule_name(&at.field("name"), &r.name)?;
        if r.principals.is_none() && r.paths.is_none() {
            return Err(at.error(format!(
                "rule {name:?} must constrain \"principals\" or \"paths\" (with neither it would open the CDE to every caller)"
            )));
        }
        let principals = each(&at.field("principals"), r.principals, |at, p| {
            PrincipalPattern::parse(at, &p, trust_domain)
        })?;
        let methods = each(&at.field("methods"), r.methods, |at, m| method(at, &m))?;
        let paths = each(&at.field("paths"), r.paths, |at, p| {
            PathPattern::parse(at, &p)
        })?;
        let headers = each(&at.field("headers"), r.headers, header_condition)?.unwrap_or_default();
        if r.require_token && !token_configured {
            return Err(at
                .field("require_token")
                .error("needs the \"token\" section of the policy"));
        }
        let not_before = match &r.not_before {
            Some(t) => Some(instant(&at.field("not_before"), t)?),
            None => None,
        };
        let not_after = match &r.not_after {
            Some(t) => Some(instant(&at.field("not_after"), t)?),
            None => None,
        };
        if let (Some(nb), Some(na)) = (not_before, not_after) {
            if nb >= na {
                return Err(at.field("not_after").error("must be later than not_before"));
            }
        }
        Ok(Rule {
            name,
            principals,
            methods,
            paths,
            headers,
            require_token: r.require_token,
            allow_method_override: r.allow_method_override,
            window: Window {
                not_before,
                not_after,
            },
        })
    }
}

fn rule_name(at: &FieldPath, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(at.error("must not be empty"));
    }
    let valid = name.len() <= MAX_RULE_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !valid {
        return Err(at.error(format!(
            "{name:?} must be 1 to {MAX_RULE_NAME_BYTES} characters of A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(name.to_string())
}

/// Validates every element of an optional list; a present list must have 1 to
/// [`MAX_LIST`] entries.
fn each<T, U>(
    at: &FieldPath,
    items: Option<Vec<T>>,
    mut check: impl FnMut(&FieldPath, T) -> Result<U, ConfigError>,
) -> Result<Option<Vec<U>>, ConfigError> {
    let Some(items) = items else {
        return Ok(None);
    };
    if items.is_empty() {
        return Err(at.error("must not be an empty list (omit the field to allow any)"));
    }
    if items.len() > MAX_LIST {
        return Err(at.error(format!("at most {MAX_LIST} entries, got {}", items.len())));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        out.push(check(&at.index(i), item)?);
    }
    Ok(Some(out))
}

fn header_condition(at: &FieldPath, h: HeaderJson) -> Result<HeaderCondition, ConfigError> {
    let name = header_name(&at.field("name"), &h.name)?;
    let given = [
        h.present.is_some(),
        h.exact.is_some(),
        h.prefix.is_some(),
        h.regex.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(at.error("needs exactly one of \"present\", \"exact\", \"prefix\", \"regex\""));
    }
    let test = if let Some(p) = h.present {
        HeaderTest::Present(p)
    } else if let Some(e) = &h.exact {
        HeaderTest::Exact(header_value(&at.field("exact"), e, true)?)
    } else if let Some(p) = &h.prefix {
        HeaderTest::Prefix(header_value(&at.field("prefix"), p, false)?)
    } else if let Some(r) = &h.regex {
        HeaderTest::Regex(header_regex(&at.field("regex"), r)?)
    } else {
        return Err(at.error("needs a test"));
    };
    Ok(HeaderCondition { name, test })
}
