//! Every Kavach filter, by name: what the bundle can run and what `kavach validate` checks.

use crate::chain::Registry;
use crate::filter::FilterFactory;

/// Filter name → configure function, in the order the filters usually run.
pub const ALL: Registry = &[
    (
        crate::audit::AuditFactory::NAME,
        crate::audit::AuditFactory::configure,
    ),
    (
        crate::residency::ResidencyFactory::NAME,
        crate::residency::ResidencyFactory::configure,
    ),
    (
        crate::pci::PciAuthzFactory::NAME,
        crate::pci::PciAuthzFactory::configure,
    ),
    (
        crate::ratelimit::RateLimitFactory::NAME,
        crate::ratelimit::RateLimitFactory::configure,
    ),
    (
        crate::metrics::MetricsFactory::NAME,
        crate::metrics::MetricsFactory::configure,
    ),
];

/// The module file stem (`kavach-pci-authz`) of a filter name (`pci_authz`), or of the bundle.
pub fn module_of(filter: &str) -> String {
    format!("kavach-{}", filter.replace('_', "-"))
}

/// The filter name of a module file stem; `bundle` for the bundle.
pub fn filter_of(module: &str) -> Option<String> {
    let name = module.strip_prefix("kavach-")?.replace('-', "_");
    (name == "bundle" || ALL.iter().any(|(n, _)| *n == name)).then_some(name)
}

/// JSON Schemas of the configurations, generated from the config types.
#[cfg(feature = "schema")]
pub mod schema {
    use serde_json::{json, Map, Value};

    /// The schema of one filter's plugin configuration (`bundle` for the bundle's).
    pub fn of(filter: &str) -> Option<Value> {
        let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
        let schema = match filter {
            "audit" => generator.into_root_schema_for::<crate::audit::config::AuditConfigJson>(),
            "pci_authz" => generator.into_root_schema_for::<crate::pci::config::PciConfigJson>(),
            "metrics" => {
                generator.into_root_schema_for::<crate::metrics::config::MetricsConfigJson>()
            }
            "residency" => {
                generator.into_root_schema_for::<crate::residency::config::ResidencyConfigJson>()
            }
            "ratelimit" => {
                generator.into_root_schema_for::<crate::ratelimit::config::RateLimitConfigJson>()
            }
            "audit_record" => generator.into_root_schema_for::<crate::audit::record::Record>(),
            "bundle" => return Some(bundle()),
            _ => return None,
        };
        serde_json::to_value(schema).ok()
    }

    /// Every schema name: each filter, the bundle and the audit record.
    pub fn names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = super::ALL.iter().map(|(n, _)| *n).collect();
        names.push("bundle");
        names.push("audit_record");
        names
    }

    /// Rewrites `#/$defs/X` references to `#/$defs/<prefix>X`.
    fn prefix_refs(v: &mut Value, prefix: &str) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get_mut("$ref") {
                    if let Some(rest) = r.strip_prefix("#/$defs/") {
                        *r = format!("#/$defs/{prefix}{rest}");
                    }
                }
                for x in m.values_mut() {
                    prefix_refs(x, prefix);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| prefix_refs(x, prefix)),
            _ => {}
        }
    }

    /// The bundle's schema: a chain whose links each carry one filter's schema.
    fn bundle() -> Value {
        let mut defs = Map::new();
        let mut links = Vec::new();
        for (name, _) in super::ALL {
            let Some(mut s) = of(name) else { continue };
            let prefix = format!("{name}.");
            prefix_refs(&mut s, &prefix);
            if let Some(Value::Object(inner)) = s.as_object_mut().and_then(|o| o.remove("$defs")) {
                for (k, v) in inner {
                    defs.insert(format!("{prefix}{k}"), v);
                }
            }
            if let Some(o) = s.as_object_mut() {
                o.remove("$schema");
            }
            defs.insert(format!("{prefix}config"), s);
            links.push(json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["filter"],
                "properties": {
                    "filter": { "const": name },
                    "config": { "$ref": format!("#/$defs/{prefix}config") }
                }
            }));
        }
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Kavach bundle configuration",
            "description": "The filters the bundle runs, in order, each with its own configuration.",
            "type": "object",
            "additionalProperties": false,
            "required": ["chain"],
            "properties": {
                "chain": { "type": "array", "minItems": 1, "maxItems": crate::chain::MAX_FILTERS, "items": { "oneOf": links } },
                "publish_decisions": {
                    "type": "boolean",
                    "default": false,
                    "description": "Also publish every decision and the audit id to filter state (access-log fields, or a Kavach filter outside the bundle such as a residency recheck stage). Off: the filters of the chain hand them over in memory (docs/decisions.md)."
                }
            },
            "$defs": defs,
        })
    }
}
