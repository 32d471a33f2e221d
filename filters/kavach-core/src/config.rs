//! The configuration framework every filter uses.
//!
//! Two steps, so that every error names the field and the reason:
//! 1. [`parse`]: JSON into plain serde structs (`deny_unknown_fields` on every struct), with the
//!    path of the offending field (`rules[2].methods[0]: invalid type ...`).
//! 2. Conversion of those structs into validated types, by code that carries a [`FieldPath`] and
//!    returns a [`ConfigError`] such as `rules[2].paths[0]: "**" may only be the last segment`.
//!
//! The adapter logs `invalid configuration: <error>` and returns false from `on_configure`, so
//! Envoy refuses the plugin (a static bootstrap does not start; an xDS update is rejected).

use std::fmt;

use serde::de::DeserializeOwned;

/// A configuration error: where (`rules[2].paths[0]`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The location of a value inside the plugin configuration, rendered as `a.b[2].c`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    /// The named field below this one.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{}", self.0, name))
        }
    }

    /// The element `index` of the list at this path.
    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{}]", self.0, index))
    }

    /// The entry `key` of the map at this path.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{:?}]", self.0, key))
    }

    pub fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.0.clone(),
            reason: reason.into(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses plugin configuration bytes (JSON) into `T`. Empty configuration means `{}`, so a
/// filter whose fields all have defaults can be loaded without one.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let trimmed = trim_ascii(bytes);
    let input: &[u8] = if trimmed.is_empty() { b"{}" } else { trimmed };
    let text = std::str::from_utf8(input).map_err(|e| ConfigError {
        path: String::new(),
        reason: format!("configuration is not valid UTF-8 ({e})"),
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            path: if path == "." || path == "?" {
                String::new()
            } else {
                path
            },
            reason: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| ConfigError {
        path: String::new(),
        reason: format!("trailing characters after the configuration ({e})"),
    })?;
    Ok(value)
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Checks that `value` lies in `min..=max`.
pub fn in_range<T>(at: &FieldPath, value: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    if value < min || value > max {
        Err(at.error(format!("must be between {min} and {max}, got {value}")))
    } else {
        Ok(value)
    }
}

/// Checks that a string is not empty (after trimming).
pub fn non_empty<'a>(at: &FieldPath, value: &'a str) -> Result<&'a str, ConfigError> {
    if value.trim().is_empty() {
        Err(at.error("must not be empty"))
    } else {
        Ok(value)
    }
}

/// Checks that `name` is a lower-case HTTP header name (RFC 9110 token characters).
pub fn header_name(at: &FieldPath, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(at.error("header name must not be empty"));
    }
    if name.len() > 256 {
        return Err(at.error("header name longer than 256 characters"));
    }
    let valid = name.bytes().all(is_token_byte);
    if !valid {
        return Err(at.error(format!("{name:?} is not a valid HTTP header name")));
    }
    Ok(name.to_ascii_lowercase())
}

/// Longest HTTP method accepted in a configuration.
pub const MAX_METHOD_BYTES: usize = 32;

/// Checks an HTTP method name (an RFC 9110 token). Methods are case-sensitive: `get` is not
/// `GET`, so the name is kept as written.
pub fn http_method(at: &FieldPath, name: &str) -> Result<String, ConfigError> {
    let valid =
        !name.is_empty() && name.len() <= MAX_METHOD_BYTES && name.bytes().all(is_token_byte);
    if valid {
        Ok(name.to_string())
    } else {
        Err(at.error(format!(
            "{name:?} is not an HTTP method (1 to {MAX_METHOD_BYTES} token characters)"
        )))
    }
}

/// An RFC 9110 token character (header names, methods).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        rules: Vec<Rule>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default)]
        limit: u32,
    }

    #[test]
    fn it_names_the_path_of_a_wrong_type() {
        let err = parse::<Outer>(br#"{"name":"a","rules":[{},{"paths":[1]}]}"#).unwrap_err();
        assert_eq!(err.path, "rules[1].paths[0]");
        assert!(err.reason.contains("invalid type"), "{}", err.reason);
    }

    #[test]
    fn it_rejects_unknown_fields_by_name() {
        let err = parse::<Outer>(br#"{"name":"a","rules":[{"pathz":[]}]}"#).unwrap_err();
        assert_eq!(err.path, "rules[0].pathz");
        assert!(
            err.reason.contains("unknown field `pathz`"),
            "{}",
            err.reason
        );
        assert!(err.to_string().starts_with("rules[0].pathz: unknown field"));
    }

    #[test]
    fn it_reports_missing_required_fields() {
        let err = parse::<Outer>(br#"{"rules":[]}"#).unwrap_err();
        assert!(err.reason.contains("missing field `name`"), "{err}");
    }

    #[test]
    fn it_reports_numbers_out_of_type_range() {
        let err = parse::<Outer>(br#"{"name":"a","rules":[{"limit":-1}]}"#).unwrap_err();
        assert_eq!(err.path, "rules[0].limit");
    }

    #[test]
    fn it_treats_empty_configuration_as_an_empty_object() {
        #[derive(Debug, Deserialize, Default)]
        #[serde(deny_unknown_fields, default)]
        struct AllDefaults {
            x: u32,
        }
        assert_eq!(parse::<AllDefaults>(b"").unwrap().x, 0);
        assert_eq!(parse::<AllDefaults>(b"  \n").unwrap().x, 0);
    }

    #[test]
    fn it_rejects_invalid_utf8_and_trailing_garbage() {
        let err = parse::<Outer>(b"{\"name\":\"\xff\"}").unwrap_err();
        assert!(err.reason.contains("UTF-8"), "{err}");
        let err = parse::<Outer>(br#"{"name":"a"} x"#).unwrap_err();
        assert!(err.reason.contains("trailing"), "{err}");
    }

    #[test]
    fn field_paths_render_like_the_json() {
        let p = FieldPath::root()
            .field("rules")
            .index(2)
            .field("paths")
            .index(0);
        assert_eq!(p.to_string(), "rules[2].paths[0]");
        let e = p.error("\"**\" may only be the last segment");
        assert_eq!(
            e.to_string(),
            "rules[2].paths[0]: \"**\" may only be the last segment"
        );
        assert_eq!(
            FieldPath::root().field("tiers").key("gold").to_string(),
            "tiers[\"gold\"]"
        );
    }

    #[test]
    fn methods_are_tokens_kept_as_written() {
        let at = FieldPath::root().field("methods").index(0);
        assert_eq!(http_method(&at, "PURGE"), Ok("PURGE".to_string()));
        assert_eq!(http_method(&at, "get"), Ok("get".to_string()));
        assert_eq!(
            http_method(&at, "GET POST").unwrap_err().to_string(),
            "methods[0]: \"GET POST\" is not an HTTP method (1 to 32 token characters)"
        );
        assert!(http_method(&at, "").is_err());
        assert!(http_method(&at, &"A".repeat(33)).is_err());
    }

    #[test]
    fn range_and_name_checks_explain_themselves() {
        let at = FieldPath::root().field("max");
        assert_eq!(in_range(&at, 5u32, 1, 10), Ok(5));
        assert_eq!(
            in_range(&at, 0u32, 1, 10).unwrap_err().to_string(),
            "max: must be between 1 and 10, got 0"
        );
        assert!(header_name(&at, "x-audit-id").is_ok());
        assert_eq!(header_name(&at, "X-Audit").unwrap(), "x-audit");
        assert!(header_name(&at, "bad header").is_err());
        assert!(header_name(&at, "").is_err());
        assert!(non_empty(&at, "  ").is_err());
    }
}
