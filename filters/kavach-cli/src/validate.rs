//! Finds the Kavach plugin configurations in deployment files and checks them with the same code
//! the filters run in Envoy's configure step, so a bad config fails in CI with the message Envoy
//! would log, instead of being NACKed at deploy time.
//!
//! Understands Istio `WasmPlugin` manifests (`spec.url` names the module, `spec.pluginConfig` is
//! the configuration, `spec.vmConfig.env` the VM environment) and Envoy configs (every
//! `envoy.extensions.filters.http.wasm.v3.Wasm` filter whose code is a Kavach module).
//!
//! In an Envoy config whose clusters are all static, the clusters a configuration calls (the
//! rate-limit service of global rules, the audit collector) must be among them, and the
//! rate-limit service's must speak HTTP/2: a typo there would otherwise only show at run time,
//! as every call failing.

use std::collections::BTreeMap;
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
    /// The file's clusters by name (true: speaks HTTP/2), when they are all static.
    pub clusters: Option<BTreeMap<String, bool>>,
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
    result
        .map_err(|e| e.to_string())
        .and_then(|()| check_clusters(pc))
        .map_err(|e| format!("{}: invalid configuration: {e}", pc.module()))
}

/// The clusters a configuration calls: (field path, cluster name, needs HTTP/2).
fn called_clusters(filter: &str, config: &Value, at: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    match filter {
        "ratelimit" => {
            if let Some(c) = config["rate_limit_service"]["cluster"].as_str() {
                out.push((
                    format!("{at}rate_limit_service.cluster"),
                    c.to_string(),
                    true,
                ));
            }
        }
        "audit" => {
            if let Some(c) = config["collector"]["cluster"].as_str() {
                out.push((format!("{at}collector.cluster"), c.to_string(), false));
            }
        }
        "bundle" => {
            for (i, link) in config["chain"].as_array().into_iter().flatten().enumerate() {
                if let Some(f) = link["filter"].as_str() {
                    out.extend(called_clusters(
                        f,
                        &link["config"],
                        &format!("chain[{i}].config."),
                    ));
                }
            }
        }
        _ => {}
    }
    out
}

fn check_clusters(pc: &PluginConfig) -> Result<(), String> {
    let (Some(clusters), Some(config)) = (&pc.clusters, pc.json()) else {
        return Ok(());
    };
    for (at, name, http2) in called_clusters(&pc.filter, &config, "") {
        match clusters.get(&name) {
            None => return Err(format!("{at}: no cluster {name:?} in this file's static_resources")),
            Some(false) if http2 => {
                return Err(format!(
                    "{at}: cluster {name:?} does not speak HTTP/2, which gRPC needs (typed_extension_protocol_options: explicit_http_config.http2_protocol_options)"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The clusters of an Envoy bootstrap by name (true: HTTP/2 upstream), or None when it also
/// gets clusters from a management server (they cannot be checked here).
fn static_clusters(doc: &Value) -> Option<BTreeMap<String, bool>> {
    if !doc["dynamic_resources"]["cds_config"].is_null() || doc["static_resources"].is_null() {
        return None;
    }
    let mut out = BTreeMap::new();
    for c in doc["static_resources"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = c["name"].as_str() else {
            continue;
        };
        let options = &c["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let http2 = !options["explicit_http_config"]["http2_protocol_options"].is_null()
            || !c["http2_protocol_options"].is_null();
        out.insert(name.to_string(), http2);
    }
    Some(out)
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
                clusters: None,
            });
        } else {
            let first = found.len();
            walk_envoy(&doc, &file, &mut found);
            let clusters = static_clusters(&doc);
            for pc in found.iter_mut().skip(first) {
                pc.clusters.clone_from(&clusters);
            }
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
                        clusters: None,
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
            clusters: None,
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

    #[test]
    fn the_clusters_a_configuration_calls_must_exist_and_grpc_needs_http2() {
        let dir = std::env::temp_dir().join(format!("kavach-clusters-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let envoy = |service_cluster: &str, collector_cluster: &str, rls_http2: bool| {
            let rls_options = if rls_http2 {
                r#"typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: { http2_protocol_options: {} }"#
            } else {
                ""
            };
            let rl = format!(
                r#"{{"rules":[{{"name":"g","global":true,"key":[],"limit":1,"period_s":1}}],"rate_limit_service":{{"cluster":"{service_cluster}","domain":"d"}}}}"#
            );
            let chain = format!(
                r#"{{"chain":[{{"filter":"audit","config":{{"collector":{{"cluster":"{collector_cluster}"}}}}}},{{"filter":"ratelimit","config":{rl}}}]}}"#
            );
            let filter = |name: &str, module: &str, config: &str| {
                format!(
                    r#"
            - name: {name}
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                config:
                  name: {name}
                  configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: '{config}' }}
                  vm_config: {{ runtime: envoy.wasm.runtime.v8, code: {{ local: {{ filename: dist/{module}.wasm }} }} }}"#
                )
            };
            format!(
                r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          http_filters:{}{}
  clusters:
    - name: rls
      {rls_options}
    - name: collector
"#,
                filter("kavach.ratelimit", "kavach-ratelimit", &rl),
                filter("kavach.bundle", "kavach-bundle", &chain)
            )
        };
        let results = |text: String| {
            let f = dir.join("e.yaml");
            std::fs::write(&f, text).unwrap();
            extract(&f).unwrap().iter().map(check).collect::<Vec<_>>()
        };
        assert_eq!(
            results(envoy("rls", "collector", true)),
            vec![Ok(()), Ok(())]
        );
        assert_eq!(
            results(envoy("rlx", "collector", true)),
            vec![
                Err(r#"kavach-ratelimit: invalid configuration: rate_limit_service.cluster: no cluster "rlx" in this file's static_resources"#.to_string()),
                Err(r#"kavach-bundle: invalid configuration: chain[1].config.rate_limit_service.cluster: no cluster "rlx" in this file's static_resources"#.to_string()),
            ]
        );
        let r = results(envoy("rls", "collector", false));
        assert!(
            r[0].as_ref()
                .unwrap_err()
                .contains(r#"cluster "rls" does not speak HTTP/2"#),
            "{r:?}"
        );
        assert_eq!(
            results(envoy("rls", "colector", true))[1],
            Err(r#"kavach-bundle: invalid configuration: chain[0].config.collector.cluster: no cluster "colector" in this file's static_resources"#.to_string())
        );
        // Clusters from a management server cannot be checked here.
        let dynamic =
            envoy("rlx", "collector", true) + "dynamic_resources: { cds_config: { ads: {} } }\n";
        assert_eq!(results(dynamic), vec![Ok(()), Ok(())]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
