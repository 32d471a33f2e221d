//! The JSON Schemas in schemas/ are current, and every example configuration in the repository
//! passes both its schema and the filter's own validation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::path::{Path, PathBuf};

use kavach_cli::validate::{check, extract};
use kavach_core::filters::schema;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_committed_schemas_are_what_the_code_generates() {
    for name in schema::names() {
        let generated = serde_json::to_string_pretty(&schema::of(name).unwrap()).unwrap() + "\n";
        let path = repo().join("schemas").join(format!("{name}.schema.json"));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date: run `cargo run -p kavach-cli -- schema --write schemas`",
            path.display()
        );
    }
}

#[test]
fn every_example_configuration_passes_its_schema_and_its_filter() {
    let mut files = yaml_files(&repo().join("envoy-config"));
    files.extend(yaml_files(&repo().join("envoy-config/istio")));
    let mut checked = 0;
    for file in files {
        for pc in extract(&file).unwrap() {
            let json = pc
                .json()
                .unwrap_or_else(|| panic!("{}: not JSON", pc.origin));
            let schema = schema::of(&pc.filter).unwrap();
            let validator = jsonschema::validator_for(&schema).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{}: schema errors: {errors:?}",
                pc.origin
            );
            assert_eq!(check(&pc), Ok(()), "{}", pc.origin);
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} configurations found");
}

#[test]
fn the_schemas_reject_what_the_filters_reject_by_shape() {
    let audit = jsonschema::validator_for(&schema::of("audit").unwrap()).unwrap();
    assert!(audit.is_valid(&serde_json::json!({"utc_offset": "+05:30"})));
    assert!(
        !audit.is_valid(&serde_json::json!({"colector": {}})),
        "unknown fields"
    );
    assert!(
        !audit.is_valid(&serde_json::json!({"query": "keep"})),
        "unknown enum value"
    );
    let bundle = jsonschema::validator_for(&schema::of("bundle").unwrap()).unwrap();
    assert!(bundle.is_valid(&serde_json::json!({"chain": [{"filter": "audit", "config": {}}]})));
    assert!(
        !bundle.is_valid(&serde_json::json!({"chain": [{"filter": "audit", "config": {"x": 1}}]}))
    );
    assert!(!bundle.is_valid(&serde_json::json!({"chain": [{"filter": "nope"}]})));
    assert!(!bundle.is_valid(&serde_json::json!({"chain": []})));
}
