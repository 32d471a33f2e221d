//! Audit filter configuration.
//!
//! ```json
//! {
//!   "header_prefix": "x-audit-",
//!   "utc_offset": "+05:30",
//!   "return_audit_id": true,
//!   "query": "redact_values",
//!   "chain_key_env": "KAVACH_AUDIT_CHAIN_KEY",
//!   "collector": { "cluster": "audit_collector", "path": "/v1/records" }
//! }
//! ```

use chrono::FixedOffset;
use serde::Deserialize;

use crate::config::{self, header_name, in_range, non_empty, ConfigError, FieldPath};
use crate::headers::alias_form;
use crate::time::parse_offset;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfigJson {
    /// Every inbound header under this prefix (in any `-`/`_`/`.` spelling) is removed.
    pub header_prefix: String,
    /// Names of the injected headers; each defaults to the prefix plus its key.
    pub headers: HeaderNamesJson,
    /// Offset of the timestamps, `+05:30` for IST.
    pub utc_offset: String,
    /// Use Envoy's `x-request-id` as the audit id. Only sound when the connection manager
    /// generates it for every request (`preserve_external_request_id: false` at the edge).
    pub audit_id_from_request_id: bool,
    /// Return the audit id to the client in a response header.
    pub return_audit_id: bool,
    /// What of the query string reaches the record.
    pub query: QueryMode,
    /// Node metadata key holding the region the proxy runs in (falls back to
    /// `node.locality.region`).
    pub region_metadata_key: String,
    /// Longest value of an injected header, in bytes.
    pub max_header_value_bytes: usize,
    /// Longest record line, in bytes; longer records are shortened and marked `truncated`.
    pub max_record_bytes: usize,
    /// Name of the VM environment variable holding a key for HMAC-SHA256 chaining. Without it
    /// records are chained with plain SHA-256 (detects edits, but whoever can rewrite the whole
    /// log can also recompute it).
    pub chain_key_env: Option<String>,
    pub collector: Option<CollectorJson>,
}

impl Default for AuditConfigJson {
    fn default() -> Self {
        AuditConfigJson {
            header_prefix: "x-audit-".into(),
            headers: HeaderNamesJson::default(),
            utc_offset: "+05:30".into(),
            audit_id_from_request_id: false,
            return_audit_id: false,
            query: QueryMode::Drop,
            region_metadata_key: "region".into(),
            max_header_value_bytes: 512,
            max_record_bytes: 16 * 1024,
            chain_key_env: None,
            collector: None,
        }
    }
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderNamesJson {
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub principal: Option<String>,
    pub source: Option<String>,
    pub node: Option<String>,
    pub region: Option<String>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryMode {
    /// The record has the path without its query.
    Drop,
    /// Query keys are kept, every value becomes `<redacted>`.
    RedactValues,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorJson {
    /// Envoy cluster of the collector.
    pub cluster: String,
    #[serde(default = "default_collector_path")]
    pub path: String,
    #[serde(default = "default_collector_authority")]
    pub authority: String,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    #[serde(default = "default_queue_max_records")]
    pub queue_max_records: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per batch (first try included) before it is dropped and counted.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

fn default_collector_path() -> String {
    "/v1/audit-records".into()
}
fn default_collector_authority() -> String {
    "kavach-audit-collector".into()
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_batch_max_records() -> usize {
    100
}
fn default_queue_max_records() -> usize {
    10_000
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_backoff_base_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}

/// Validated audit configuration.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub header_prefix: String,
    pub headers: HeaderNames,
    pub utc_offset: FixedOffset,
    pub audit_id_from_request_id: bool,
    pub return_audit_id: bool,
    pub query: QueryMode,
    pub region_metadata_key: String,
    pub max_header_value_bytes: usize,
    pub max_record_bytes: usize,
    pub chain_key_env: Option<String>,
    pub collector: Option<CollectorConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    pub id: String,
    pub timestamp: String,
    pub principal: String,
    pub source: String,
    pub node: String,
    pub region: String,
}

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub flush_interval_ms: u64,
    pub batch_max_records: usize,
    pub queue_max_records: usize,
    pub timeout_ms: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl AuditConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::validate(config::parse::<AuditConfigJson>(bytes)?)
    }

    pub fn validate(json: AuditConfigJson) -> Result<Self, ConfigError> {
        let root = FieldPath::root();
        let at = root.field("header_prefix");
        let header_prefix = header_name(&at, &json.header_prefix)?;
        if header_prefix.len() < 3 {
            return Err(at.error("must be at least 3 characters, e.g. \"x-audit-\""));
        }
        let prefix_alias = alias_form(&header_prefix);

        let names_at = root.field("headers");
        let name = |key: &str, given: &Option<String>| -> Result<String, ConfigError> {
            let at = names_at.field(key);
            let n = match given {
                Some(n) => header_name(&at, n)?,
                None => format!("{header_prefix}{key}"),
            };
            if !alias_form(&n).starts_with(&prefix_alias) || alias_form(&n) == prefix_alias {
                return Err(at.error(format!(
                    "{n:?} must start with header_prefix {header_prefix:?} (otherwise a client could send it)"
                )));
            }
            Ok(n)
        };
        let headers = HeaderNames {
            id: name("id", &json.headers.id)?,
            timestamp: name("timestamp", &json.headers.timestamp)?,
            principal: name("principal", &json.headers.principal)?,
            source: name("source", &json.headers.source)?,
            node: name("node", &json.headers.node)?,
            region: name("region", &json.headers.region)?,
        };
        let all = [
            ("id", &headers.id),
            ("timestamp", &headers.timestamp),
            ("principal", &headers.principal),
            ("source", &headers.source),
            ("node", &headers.node),
            ("region", &headers.region),
        ];
        for (i, (key, n)) in all.iter().enumerate() {
            if let Some((other, _)) = all[..i]
                .iter()
                .find(|(_, m)| alias_form(m) == alias_form(n))
            {
                return Err(names_at
                    .field(key)
                    .error(format!("{n:?} is already used by headers.{other}")));
            }
        }

        let utc_offset = parse_offset(&root.field("utc_offset"), &json.utc_offset)?;
        let region_metadata_key = non_empty(
            &root.field("region_metadata_key"),
            &json.region_metadata_key,
        )?
        .to_string();
        let max_header_value_bytes = in_range(
            &root.field("max_header_value_bytes"),
            json.max_header_value_bytes,
            16,
            8192,
        )?;
        let max_record_bytes = in_range(
            &root.field("max_record_bytes"),
            json.max_record_bytes,
            4096,
            1 << 20,
        )?;
        let chain_key_env = match json.chain_key_env {
            Some(v) => Some(non_empty(&root.field("chain_key_env"), &v)?.to_string()),
            None => None,
        };
        let collector = match json.collector {
            Some(c) => Some(validate_collector(&root.field("collector"), c)?),
            None => None,
        };
        Ok(AuditConfig {
            header_prefix,
            headers,
            utc_offset,
            audit_id_from_request_id: json.audit_id_from_request_id,
            return_audit_id: json.return_audit_id,
            query: json.query,
            region_metadata_key,
            max_header_value_bytes,
            max_record_bytes,
            chain_key_env,
            collector,
        })
    }
}

fn validate_collector(at: &FieldPath, c: CollectorJson) -> Result<CollectorConfig, ConfigError> {
    let cluster = non_empty(&at.field("cluster"), &c.cluster)?.to_string();
    if !c.path.starts_with('/') {
        return Err(at
            .field("path")
            .error(format!("{:?} must start with '/'", c.path)));
    }
    non_empty(&at.field("authority"), &c.authority)?;
    let backoff_base_ms = in_range(&at.field("backoff_base_ms"), c.backoff_base_ms, 10, 60_000)?;
    let backoff_max_ms = in_range(
        &at.field("backoff_max_ms"),
        c.backoff_max_ms,
        backoff_base_ms,
        3_600_000,
    )?;
    Ok(CollectorConfig {
        cluster,
        path: c.path,
        authority: c.authority,
        flush_interval_ms: in_range(
            &at.field("flush_interval_ms"),
            c.flush_interval_ms,
            10,
            60_000,
        )?,
        batch_max_records: in_range(
            &at.field("batch_max_records"),
            c.batch_max_records,
            1,
            10_000,
        )?,
        queue_max_records: in_range(
            &at.field("queue_max_records"),
            c.queue_max_records,
            1,
            1_000_000,
        )?,
        timeout_ms: in_range(&at.field("timeout_ms"), c.timeout_ms, 10, 60_000)?,
        max_attempts: in_range(&at.field("max_attempts"), c.max_attempts, 1, 100)?,
        backoff_base_ms,
        backoff_max_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        AuditConfig::parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_complete_and_ist() {
        let c = AuditConfig::parse(b"").unwrap();
        assert_eq!(c.headers.id, "x-audit-id");
        assert_eq!(c.headers.region, "x-audit-region");
        assert_eq!(c.utc_offset.local_minus_utc(), 19800);
        assert_eq!(c.query, QueryMode::Drop);
        assert!(c.collector.is_none());
    }

    #[test]
    fn header_names_follow_a_custom_prefix() {
        let c = AuditConfig::parse(
            br#"{"header_prefix":"x-kv-audit-","headers":{"id":"x-kv-audit-rid"}}"#,
        )
        .unwrap();
        assert_eq!(c.headers.id, "x-kv-audit-rid");
        assert_eq!(c.headers.timestamp, "x-kv-audit-timestamp");
    }

    #[test]
    fn errors_name_the_field_and_reason() {
        assert_eq!(
            err(r#"{"headers":{"id":"x-request-id"}}"#),
            "headers.id: \"x-request-id\" must start with header_prefix \"x-audit-\" (otherwise a client could send it)"
        );
        assert!(err(r#"{"headers":{"node":"x_audit_id"}}"#)
            .starts_with("headers.node: \"x_audit_id\" is already used by headers.id"));
        assert!(
            err(r#"{"utc_offset":"IST"}"#).starts_with("utc_offset: \"IST\" is not a UTC offset")
        );
        assert!(err(r#"{"header_prefix":"x audit"}"#).starts_with("header_prefix: "));
        assert_eq!(
            err(r#"{"max_record_bytes":100}"#),
            "max_record_bytes: must be between 4096 and 1048576, got 100"
        );
        assert!(err(r#"{"query":"keep"}"#).starts_with("query: unknown variant `keep`"));
        assert!(err(r#"{"colector":{}}"#).starts_with("colector: unknown field"));
        assert!(err(r#"{"collector":{}}"#).contains("missing field `cluster`"));
        assert_eq!(
            err(r#"{"collector":{"cluster":"c","path":"v1"}}"#),
            "collector.path: \"v1\" must start with '/'"
        );
        assert!(
            err(r#"{"collector":{"cluster":"c","backoff_base_ms":100,"backoff_max_ms":50}}"#)
                .starts_with("collector.backoff_max_ms: must be between 100 and")
        );
    }
}
