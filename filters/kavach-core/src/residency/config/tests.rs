use super::*;

const CLASSES: &str = r#"[
    {"name":"public","allowed_regions":["*"]},
    {"name":"pii","allowed_regions":["in-west","in-south"],"action":"reroute",
     "reroute":{"header":"x-kavach-residency","value":"in"}},
    {"name":"payment","allowed_regions":["in-west","in-south"],"action":"deny"}]"#;

fn with(extra: &str) -> String {
    if extra.is_empty() {
        format!(r#"{{"policy_version":"2026-11-01","classes":{CLASSES}}}"#)
    } else {
        format!(r#"{{"policy_version":"2026-11-01","classes":{CLASSES},{extra}}}"#)
    }
}

fn ok(json: &str) -> ResidencyConfig {
    match ResidencyConfig::parse(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn err(json: &str) -> String {
    ResidencyConfig::parse(json.as_bytes())
        .unwrap_err()
        .to_string()
}

fn classes_err(classes: &str) -> String {
    err(&format!(r#"{{"policy_version":"v1","classes":{classes}}}"#))
}

#[test]
fn defaults_are_complete_and_fail_closed() {
    let c = ok(&with(""));
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.stage, Stage::Decide);
    assert_eq!(c.default_class, ClassId(0));
    assert_eq!(c.class_header, "x-data-class");
    assert_eq!(c.residence_header, "x-data-residence");
    assert_eq!(c.dry_run_header, "x-kavach-residency-dry-run");
    assert_eq!(
        c.cluster_region_property,
        [
            "xds",
            "cluster_metadata",
            "filter_metadata",
            "kavach",
            "region"
        ]
    );
    assert_eq!(c.untagged_cluster, Untagged::Violation);
    assert!(c.body_detection.is_none());
    assert!(c.upstream_check.enabled);
    assert_eq!(
        c.upstream_check.region_properties,
        default_upstream_region_properties()
    );
    assert_eq!(c.upstream_check.untagged_host, Untagged::Allow);
    assert_eq!(c.highest(), ClassId(2));
    assert_eq!(c.reroute_headers(), vec!["x-kavach-residency"]);
    assert_eq!(
        c.class(ClassId(1)).unwrap().action,
        Action::Reroute {
            header: "x-kavach-residency".into(),
            value: "in".into()
        }
    );
    assert_eq!(c.class(ClassId(0)).unwrap().regions, Regions::Anywhere);
}

#[test]
fn names_and_regions_are_normalised() {
    let c = ok(r#"{"policy_version":"v1","classes":[
        {"name":" Public ","allowed_regions":["*"]},
        {"name":"PAYMENT","allowed_regions":[" IN-West "]}],
        "default_class":"PUBLIC","cluster_regions":{"Legacy":"IN-SOUTH"}}"#);
    assert_eq!(c.classes[1].name, "payment");
    assert_eq!(c.classes[1].regions, Regions::Only(vec!["in-west".into()]));
    assert_eq!(c.class_by_name(b"payment"), Some(ClassId(1)));
    assert_eq!(c.cluster_regions.get("Legacy").unwrap(), "in-south");
}

#[test]
fn a_full_policy_parses() {
    let c = ok(&with(
        r#""mode":"dry_run","stage":"recheck","default_class":"pii",
        "class_header":"x-kv-class","residence_header":"x-kv-residence","dry_run_header":"x-kv-dry",
        "cluster_region_property":["xds","cluster_metadata","filter_metadata","acme","geo"],
        "cluster_regions":{"legacy_pay":"in-west"},"untagged_cluster":"allow",
        "routes":{"pay":{"min_class":"payment"},"kyc":{"detect_body":true},"health":{"detect_body":false}},
        "body_detection":{"max_body_bytes":1024,"oversize":"reject_413",
          "detectors":{"card":"payment","aadhaar":"pii","pan":"pii","ifsc":"payment","upi_vpa":"payment"}},
        "upstream_check":{"enabled":true,"region_properties":[["upstream","locality","region"]],"untagged_host":"violation"}"#,
    ));
    assert_eq!(c.mode, Mode::DryRun);
    assert_eq!(c.stage, Stage::Recheck);
    assert_eq!(c.default_class, ClassId(1));
    assert_eq!(
        c.routes.get("pay"),
        Some(&RoutePolicy {
            min_class: Some(ClassId(2)),
            detect_body: None
        })
    );
    let b = c.body_detection.unwrap();
    assert_eq!(b.max_body_bytes, 1024);
    assert_eq!(b.oversize, Oversize::Reject413);
    assert!(!b.enabled_by_default);
    assert!(b.detectors.contains(&(Detector::UpiVpa, ClassId(2))));
    assert_eq!(b.detectors.len(), 5);
    assert_eq!(c.upstream_check.untagged_host, Untagged::Violation);
}

#[test]
fn class_errors_name_the_field_and_reason() {
    assert_eq!(classes_err("[]"), "classes: must list 1 to 16 classes");
    assert_eq!(
        classes_err(
            r#"[{"name":"pii","allowed_regions":["in"]},{"name":"PII","allowed_regions":["in"]}]"#
        ),
        "classes[1].name: \"pii\" is already classes[0]"
    );
    assert_eq!(
        classes_err(r#"[{"name":"pay ment","allowed_regions":["in"]}]"#),
        "classes[0].name: \"pay ment\" may only contain a-z 0-9 _ -"
    );
    assert_eq!(
        classes_err(r#"[{"name":"unclassified","allowed_regions":["in"]}]"#),
        "classes[0].name: \"unclassified\" is reserved"
    );
    assert_eq!(
        classes_err(r#"[{"name":"a","allowed_regions":[]}]"#),
        "classes[0].allowed_regions: must list at least one region, or \"*\""
    );
    assert_eq!(
        classes_err(r#"[{"name":"a","allowed_regions":["*","in"]}]"#),
        "classes[0].allowed_regions: \"*\" (anywhere) must be the only entry"
    );
    assert_eq!(
        classes_err(r#"[{"name":"a","allowed_regions":["in","IN"]}]"#),
        "classes[0].allowed_regions[1]: \"in\" is listed twice"
    );
    assert_eq!(
        classes_err(r#"[{"name":"a","allowed_regions":["ap south"]}]"#),
        "classes[0].allowed_regions[0]: \"ap south\" may only contain a-z 0-9 . _ -"
    );
    assert_eq!(
        classes_err(r#"[{"name":"a","allowed_regions":["in"],"action":"reroute"}]"#),
        "classes[0].reroute: is required with \"action\": \"reroute\" (header and value)"
    );
    assert_eq!(
        classes_err(
            r#"[{"name":"a","allowed_regions":["in"],"reroute":{"header":"x","value":"y"}}]"#
        ),
        "classes[0].reroute: is only used with \"action\": \"reroute\""
    );
    assert_eq!(
        classes_err(
            r#"[{"name":"a","allowed_regions":["in"],"action":"reroute","reroute":{"header":"x-data-class","value":"y"}}]"#
        ),
        "classes[0].reroute.header: \"x-data-class\" is already used by class_header"
    );
    assert_eq!(
        classes_err(
            r#"[{"name":"a","allowed_regions":["in"],"action":"reroute","reroute":{"header":":authority","value":"y"}}]"#
        ),
        "classes[0].reroute.header: \":authority\" is not a valid HTTP header name"
    );
    assert_eq!(
        classes_err(
            r#"[{"name":"a","allowed_regions":["in"],"action":"reroute","reroute":{"header":"x-r","value":"a\nb"}}]"#
        ),
        "classes[0].reroute.value: may only contain printable ASCII"
    );
    assert_eq!(
        classes_err(
            r#"[{"name":"a","allowed_regions":["*"],"action":"reroute","reroute":{"header":"x-r","value":"v"}}]"#
        ),
        "classes[0].action: a class allowed anywhere never violates; it takes no action"
    );
    assert!(
        classes_err(r#"[{"name":"a","allowed_regions":["in"],"action":"block"}]"#)
            .starts_with("classes[0].action: unknown variant `block`")
    );
    assert!(
        classes_err(r#"[{"name":"a","allowed_regions":["in"],"rank":1}]"#)
            .starts_with("classes[0].rank: unknown field `rank`")
    );
}

#[test]
fn a_more_sensitive_class_may_not_allow_more_regions() {
    assert_eq!(
        classes_err(r#"[{"name":"pii","allowed_regions":["in-west"]},{"name":"payment","allowed_regions":["in-west","sg"]}]"#),
        "classes[1].allowed_regions: \"sg\" is not allowed for classes[0] (\"pii\"): a more sensitive class may not allow more regions"
    );
    assert_eq!(
        classes_err(r#"[{"name":"pii","allowed_regions":["in-west"]},{"name":"public","allowed_regions":["*"]}]"#),
        "classes[1].allowed_regions: \"*\" allows more than classes[0] (\"pii\"): a more sensitive class may not allow more regions"
    );
    // Equal or narrower is fine.
    ok(
        r#"{"policy_version":"v1","classes":[{"name":"a","allowed_regions":["x","y"]},{"name":"b","allowed_regions":["y"]},{"name":"c","allowed_regions":["y"]}]}"#,
    );
}

#[test]
fn other_errors_name_the_field_and_reason() {
    assert!(err(r#"{"classes":[]}"#).contains("missing field `policy_version`"));
    assert_eq!(
        err(&format!(r#"{{"policy_version":" ","classes":{CLASSES}}}"#)),
        "policy_version: must not be empty"
    );
    assert_eq!(
        err(&format!(
            r#"{{"policy_version":"v1 final","classes":{CLASSES}}}"#
        )),
        "policy_version: \"v1 final\" may only contain A-Z a-z 0-9 . _ : + -"
    );
    assert!(err(&with(r#""mode":"shadow""#)).starts_with("mode: unknown variant `shadow`"));
    assert_eq!(
        err(&with(r#""default_class":"secret""#)),
        "default_class: \"secret\" is not a class (classes: public, pii, payment)"
    );
    assert_eq!(
        err(&with(r#""residence_header":"x-data-class""#)),
        "residence_header: \"x-data-class\" is already used by class_header"
    );
    assert_eq!(
        err(&with(r#""class_header":"host""#)),
        "class_header: \"host\" may not be used"
    );
    assert_eq!(
        err(&with(r#""cluster_region_property":[]"#)),
        "cluster_region_property: must have 1 to 8 path segments"
    );
    assert_eq!(
        err(&with(r#""cluster_regions":{"c1":""}"#)),
        "cluster_regions[\"c1\"]: must not be empty"
    );
    assert_eq!(
        err(&with(r#""routes":{"r1":{}}"#)),
        "routes[\"r1\"]: sets neither min_class nor detect_body"
    );
    assert_eq!(
        err(&with(r#""routes":{"r1":{"min_class":"gold"}}"#)),
        "routes[\"r1\"].min_class: \"gold\" is not a class (classes: public, pii, payment)"
    );
    assert_eq!(
        err(&with(r#""routes":{"r1":{"detect_body":true}}"#)),
        "routes[\"r1\"].detect_body: needs the body_detection section (detectors, limits)"
    );
    assert_eq!(
        err(&with(r#""upstream_check":{"region_properties":[]}"#)),
        "upstream_check.region_properties: must name at least one property path when the check is enabled"
    );
    assert_eq!(
        err(&with(
            r#""upstream_check":{"region_properties":[["upstream",""]]}"#
        )),
        "upstream_check.region_properties[0][1]: must not be empty"
    );
    assert!(err(&with(r#""untagged_cluster":"deny""#))
        .starts_with("untagged_cluster: unknown variant `deny`"));
}

#[test]
fn body_detection_errors_name_the_field_and_reason() {
    let body = |b: &str| err(&with(&format!(r#""body_detection":{b}"#)));
    assert_eq!(
        body(r#"{"enabled_by_default":true,"detectors":{}}"#),
        "body_detection.detectors: must map at least one detector to a class"
    );
    assert_eq!(
        body(r#"{"enabled_by_default":true,"detectors":{"iban":"payment"}}"#),
        "body_detection.detectors[\"iban\"]: unknown detector (detectors: card, aadhaar, pan, ifsc, upi_vpa)"
    );
    assert_eq!(
        body(r#"{"enabled_by_default":true,"detectors":{"card":"gold"}}"#),
        "body_detection.detectors[\"card\"]: \"gold\" is not a class (classes: public, pii, payment)"
    );
    assert_eq!(
        body(r#"{"enabled_by_default":true,"max_body_bytes":0,"detectors":{"card":"payment"}}"#),
        "body_detection.max_body_bytes: must be between 16 and 1048576, got 0"
    );
    assert_eq!(
        body(r#"{"detectors":{"card":"payment"}}"#),
        "body_detection: no route inspects bodies: set enabled_by_default or routes.<name>.detect_body"
    );
    assert!(body(
        r#"{"enabled_by_default":true,"oversize":"truncate","detectors":{"card":"payment"}}"#
    )
    .starts_with("body_detection.oversize: unknown variant `truncate`"));
}

#[test]
fn bounds_are_enforced() {
    let many: Vec<String> = (0..17)
        .map(|i| format!(r#"{{"name":"c{i}","allowed_regions":["*"]}}"#))
        .collect();
    assert_eq!(
        classes_err(&format!("[{}]", many.join(","))),
        "classes: must list 1 to 16 classes"
    );
    let map: Vec<String> = (0..=MAX_MAP_ENTRIES)
        .map(|i| format!(r#""c{i}":"in""#))
        .collect();
    assert_eq!(
        err(&with(&format!(
            r#""cluster_regions":{{{}}}"#,
            map.join(",")
        ))),
        "cluster_regions: at most 4096 entries"
    );
    let long = "x".repeat(65);
    assert_eq!(
        err(&format!(
            r#"{{"policy_version":"{long}","classes":{CLASSES}}}"#
        )),
        "policy_version: longer than 64 characters"
    );
}
