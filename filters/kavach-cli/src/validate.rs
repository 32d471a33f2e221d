//! Finds the Kavach plugin configurations in deployment files and checks them with the same code
//! the filters run in Envoy's configure step, so a bad config fails in CI with the message Envoy
//! would log, instead of being NACKed at deploy time.
//!
//! Understands Istio `WasmPlugin` manifests (`spec.url` names the module, `spec.pluginConfig` is
//! the configuration, `spec.vmConfig.env` the VM environment) and Envoy configs (every
//! `envoy.extensions.filters.http.wasm.v3.Wasm` filter whose code is a Kavach module).

use std::path::Path;

use kavach_core::filters;
use kavach_core::host::NullHost;
use serde_json::Value;

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// A VM environment variable: a literal value, or one taken from the host at deploy time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Literal(String),
    FromHost,
}

/// One plugin configuration found in a file.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Where it was found, for messages (`envoy-config/chain.yaml: kavach.audit`).
    pub origin: String,
    /// Filter name (`audit`, `pci_authz`) or `bundle`.
    pub filter: String,
    /// The configuration as JSON text, exactly as the filter receives it.
    pub config: String,
    pub env: Vec<(String, EnvValue)>,
}

impl PluginConfig {
    pub fn module(&self) -> String {
        filters::module_of(&self.filter)
    }

    /// The configuration parsed as JSON (None when it is not JSON at all).
    pub fn json(&self) -> Option<Value> {
        if self.config.trim().is_empty() {
            return Some(Value::Object(Default::default()));
        }
        serde_json::from_str(&self.config).ok()
    }
}

/// A value taken from the host at deploy time is replaced by this placeholder while checking.
const HOST_VALUE_PLACEHOLDER: &str =
    "placeholder-for-a-value-the-host-supplies-at-deploy-time-0000";

/// Runs the filter's configure step on `pc`; Err is the line Envoy would log.
pub fn check(pc: &PluginConfig) -> Result<(), String> {
    for (name, value) in &pc.env {
        let v = match value {
            EnvValue::Literal(v) => v.as_str(),
            EnvValue::FromHost => HOST_VALUE_PLACEHOLDER,
        };
        std::env::set_var(name, v);
    }
    let result = if pc.filter == "bundle" {
        kavach_core::chain::configure(filters::ALL, pc.config.as_bytes(), &NullHost::default())
            .map(|_| ())
    } else {
        match filters::ALL.iter().find(|(n, _)| *n == pc.filter) {
            Some((_, configure)) => {
                configure(pc.config.as_bytes(), &NullHost::default()).map(|_| ())
            }
            None => {
                return Err(format!("unknown filter {:?}", pc.filter));
            }
        }
    };
    for (name, _) in &pc.env {
        std::env::remove_var(name);
    }
    result.map_err(|e| format!("{}: invalid configuration: {e}", pc.module()))
}

/// The Kavach module named by a path or URL (`oci://reg/kavach/kavach-audit:0.1.0`,
/// `dist/kavach-audit.wasm`, `file:///x/kavach-bundle.wasm`).
fn filter_from_location(location: &str) -> Option<String> {
    let last = location.rsplit('/').next()?;
    let last = last.split(['@', ':']).next()?;
    filters::filter_of(last.strip_suffix(".wasm").unwrap_or(last))
}

fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: serde_norway::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
        if v.is_null() {
            continue;
        }
        docs.push(serde_json::to_value(v).map_err(|e| format!("not representable as JSON: {e}"))?);
    }
    Ok(docs)
}

/// Every Kavach plugin configuration in a YAML file (WasmPlugin manifests or Envoy configs).
pub fn extract(path: &Path) -> Result<Vec<PluginConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let file = path.display().to_string();
    let mut found = Vec::new();
    for doc in yaml_docs(&text)? {
        if doc["kind"] == "WasmPlugin" {
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            let url = doc["spec"]["url"].as_str().unwrap_or("");
            let Some(filter) = filter_from_location(url) else {
                continue;
            };
            let config = match &doc["spec"]["pluginConfig"] {
                Value::Null => String::new(),
                v => v.to_string(),
            };
            let env = doc["spec"]["vmConfig"]["env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| {
                            let n = e["name"].as_str()?.to_string();
                            let v = if e["valueFrom"] == "HOST" {
                                EnvValue::FromHost
                            } else {
                                EnvValue::Literal(e["value"].as_str().unwrap_or("").to_string())
                            };
                            Some((n, v))
                        })
                        .collect()
                })
                .unwrap_or_default();
            found.push(PluginConfig {
                origin: format!("{file}: WasmPlugin {name}"),
                filter,
                config,
                env,
            });
        } else {
            walk_envoy(&doc, &file, &mut found);
        }
    }
    Ok(found)
}

fn walk_envoy(v: &Value, file: &str, found: &mut Vec<PluginConfig>) {
    match v {
        Value::Object(m) => {
            if m.get("@type").and_then(Value::as_str) == Some(WASM_TYPE) {
                let cfg = &v["config"];
                let location = cfg["vm_config"]["code"]["local"]["filename"]
                    .as_str()
                    .or_else(|| cfg["vm_config"]["code"]["remote"]["http_uri"]["uri"].as_str())
                    .unwrap_or("");
                if let Some(filter) = filter_from_location(location) {
                    let mut env: Vec<(String, EnvValue)> = Vec::new();
                    let vars = &cfg["vm_config"]["environment_variables"];
                    if let Some(kv) = vars["key_values"].as_object() {
                        for (k, val) in kv {
                            env.push((
                                k.clone(),
                                EnvValue::Literal(val.as_str().unwrap_or("").to_string()),
                            ));
                        }
                    }
                    if let Some(keys) = vars["host_env_keys"].as_array() {
                        env.extend(
                            keys.iter().filter_map(|k| {
                                Some((k.as_str()?.to_string(), EnvValue::FromHost))
                            }),
                        );
                    }
                    found.push(PluginConfig {
                        origin: format!("{file}: {}", cfg["name"].as_str().unwrap_or("?")),
                        filter,
                        config: cfg["configuration"]["value"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        env,
                    });
                }
            }
            for x in m.values() {
                walk_envoy(x, file, found);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk_envoy(x, file, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_recognised_by_their_location() {
        assert_eq!(
            filter_from_location("oci://reg.example/kavach/kavach-audit:0.1.0").as_deref(),
            Some("audit")
        );
        assert_eq!(
            filter_from_location("dist/kavach-pci-authz.wasm").as_deref(),
            Some("pci_authz")
        );
        assert_eq!(
            filter_from_location("oci://r/kavach-bundle@sha256:ab").as_deref(),
            Some("bundle")
        );
        assert_eq!(filter_from_location("oci://r/other-plugin:1"), None);
    }

    #[test]
    fn a_bad_config_fails_with_the_line_envoy_would_log() {
        let pc = PluginConfig {
            origin: "x".into(),
            filter: "audit".into(),
            config: r#"{"utc_offset": "IST"}"#.into(),
            env: vec![],
        };
        assert_eq!(
            check(&pc).unwrap_err(),
            r#"kavach-audit: invalid configuration: utc_offset: "IST" is not a UTC offset like "+05:30" or "Z""#
        );
    }

    #[test]
    fn wasmplugin_manifests_are_read_with_their_environment() {
        let dir = std::env::temp_dir().join(format!("kavach-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.yaml");
        std::fs::write(
            &f,
            r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: { name: pci }
spec:
  url: oci://reg/kavach/kavach-pci-authz:0.1.0
  vmConfig:
    env:
    - { name: KAVACH_TEST_VALIDATE_KEY, valueFrom: HOST }
  pluginConfig:
    policy_version: v1
    trust_domain: bank.local
    token: { key_env: KAVACH_TEST_VALIDATE_KEY }
    rules: []
---
kind: WasmPlugin
metadata: { name: other }
spec: { url: oci://reg/someone-else:1 }
"#,
        )
        .unwrap();
        let found = extract(&f).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].filter, "pci_authz");
        assert_eq!(
            found[0].env,
            vec![("KAVACH_TEST_VALIDATE_KEY".to_string(), EnvValue::FromHost)]
        );
        assert_eq!(check(&found[0]), Ok(()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
