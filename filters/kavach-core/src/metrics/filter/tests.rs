use super::*;
use crate::metrics::label::{INVALID, OTHER, TOO_LONG};
use crate::testing::MockHost;

const REQUESTS: &str = r#"{"metrics":[{"name":"kavach_requests_total","type":"counter","max_series":3,
    "labels":[{"source":"route"},{"source":"method"},{"source":"status_class"}]}]}"#;

fn root(config: &str, host: &MockHost) -> Box<dyn FilterRoot> {
    match MetricsFactory::configure(config.as_bytes(), host) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// A host in the state of a completed request.
fn completed(method: &str, path: &str, code: i64) -> MockHost {
    MockHost::new()
        .with_request(&[
            (":method", method.as_bytes()),
            (":path", path.as_bytes()),
            (":authority", b"bank.local"),
        ])
        .with_property(&["response", "code"], &code.to_le_bytes())
        .with_property(&["xds", "route_name"], b"payments")
        .with_property(&["xds", "cluster_name"], b"payments.svc")
        .with_property(&["request", "duration"], &7_400_000i64.to_le_bytes())
        .with_property(&["request", "total_size"], &321i64.to_le_bytes())
        .with_property(&["response", "total_size"], &4321i64.to_le_bytes())
}

/// One request that takes 7.4 ms on the mock clock.
fn serve(r: &dyn FilterRoot, host: &MockHost) {
    let mut s = r.new_stream();
    assert_eq!(s.on_request_headers(host, true), Flow::Continue);
    assert_eq!(s.on_response_headers(host, true), Flow::Continue);
    host.advance(std::time::Duration::from_micros(7_400));
    s.on_log(host);
}

/// Replaces the request headers and the response code of `host`, keeping its metrics and
/// shared data (the next request on the same VM).
fn next(host: &MockHost, method: &str, path: &str, code: i64) {
    *host.request_headers.borrow_mut() = vec![
        (":method".into(), method.as_bytes().to_vec()),
        (":path".into(), path.as_bytes().to_vec()),
    ];
    host.properties
        .borrow_mut()
        .insert("response\u{0}code".into(), code.to_le_bytes().to_vec());
}

const OTHER_SERIES: &str =
    "kavach_requests_total.route.(other).method.(other).status_class.(other)";
const OVERFLOW: &str = "kavach_metrics_overflow_total.metric.kavach_requests_total";
const GAUGE: &str = "kavach_metrics_series.metric.kavach_requests_total";

#[test]
fn requests_are_counted_per_label_combination() {
    let host = completed("GET", "/pay/42", 200);
    let r = root(REQUESTS, &host);
    serve(r.as_ref(), &host);
    serve(r.as_ref(), &host);
    next(&host, "POST", "/pay", 503);
    serve(r.as_ref(), &host);
    assert_eq!(
        host.metric("kavach_requests_total.route.payments.method.GET.status_class.2xx"),
        2
    );
    assert_eq!(
        host.metric("kavach_requests_total.route.payments.method.POST.status_class.5xx"),
        1
    );
    assert_eq!(host.metric(OTHER_SERIES), 0);
    assert_eq!(host.metric(OVERFLOW), 0);
    assert_eq!(host.metric(GAUGE), 2);
    // The (other) series and the overflow counter exist from the start.
    let names: Vec<String> = host.metrics.borrow().iter().map(|m| m.0.clone()).collect();
    assert!(names.contains(&OTHER_SERIES.to_string()));
    assert!(names.contains(&OVERFLOW.to_string()));
}

#[test]
fn combinations_beyond_the_budget_go_to_other_and_are_counted_as_overflow() {
    let host = completed("GET", "/", 200);
    let r = root(REQUESTS, &host);
    for (method, code) in [
        ("GET", 200),
        ("GET", 404),
        ("PUT", 200),
        ("POST", 200),
        ("DELETE", 500),
    ] {
        next(&host, method, "/", code);
        serve(r.as_ref(), &host);
    }
    // Budget 3: GET/2xx, GET/4xx, PUT/2xx have series; POST and DELETE do not.
    assert_eq!(
        host.metric("kavach_requests_total.route.payments.method.PUT.status_class.2xx"),
        1
    );
    let defined: Vec<String> = host
        .metrics
        .borrow()
        .iter()
        .map(|m| m.0.clone())
        .filter(|n| n.starts_with("kavach_requests_total.") && !n.contains(OTHER))
        .collect();
    assert_eq!(defined.len(), 3, "{defined:?}");
    assert_eq!(host.metric(OTHER_SERIES), 2);
    assert_eq!(host.metric(OVERFLOW), 2);
    assert_eq!(host.metric(GAUGE), 3);
    // Admitted combinations keep their series after the budget is spent.
    next(&host, "GET", "/", 200);
    serve(r.as_ref(), &host);
    assert_eq!(
        host.metric("kavach_requests_total.route.payments.method.GET.status_class.2xx"),
        2
    );
    assert_eq!(host.metric(OVERFLOW), 2);
    let warnings = host
        .logs
        .borrow()
        .iter()
        .filter(|(l, m)| {
            *l == LogLevel::Warn && m.contains("all 3 series of its budget are in use")
        })
        .count();
    assert_eq!(warnings, 1, "warned once per VM");
}

#[test]
fn the_budget_is_shared_by_every_vm_of_the_process() {
    // Two roots on one host: two workers' VMs over one shared-data store.
    let host = completed("GET", "/", 200);
    let w1 = root(REQUESTS, &host);
    let w2 = root(REQUESTS, &host);
    next(&host, "GET", "/", 200);
    serve(w1.as_ref(), &host);
    serve(w2.as_ref(), &host);
    next(&host, "PUT", "/", 200);
    serve(w2.as_ref(), &host);
    next(&host, "POST", "/", 200);
    serve(w1.as_ref(), &host);
    next(&host, "DELETE", "/", 200);
    serve(w2.as_ref(), &host);
    serve(w1.as_ref(), &host);
    assert_eq!(host.metric(GAUGE), 3, "GET, PUT, POST; not GET twice");
    assert_eq!(host.metric(OTHER_SERIES), 2, "DELETE on both VMs");
    assert_eq!(
        host.shared.get("kavach.m.kavach_requests_total.count").0,
        Some(b"3".to_vec())
    );
}

#[test]
fn every_label_source_renders_safely() {
    let config = r#"{"path_templates":["/users/{user}/orders"],"metrics":[{"name":"m","type":"counter",
        "labels":[{"source":"method"},{"source":"path"},{"source":"status_code"},{"source":"cluster"},
                  {"source":"principal"},{"source":"header","header":"x-tenant","name":"tenant"}]}]}"#;
    let host = completed("PATCH", "/users/alice/orders?card=4111111111111111", 201).with_property(
        &["connection", "uri_san_peer_certificate"],
        b"spiffe://bank.local/ns/pay/sa/api",
    );
    host.add_header(HeaderMap::Request, "x-tenant", b"acme.in");
    let r = root(config, &host);
    serve(r.as_ref(), &host);
    assert_eq!(
        host.metric("m.method.PATCH.path./users/:user/orders.status_code.201.cluster.payments_svc.principal.spiffe://bank_local/ns/pay/sa/api.tenant.acme_in"),
        1
    );
}

#[test]
fn bad_header_values_become_placeholders() {
    let config = r#"{"max_label_bytes":16,"metrics":[{"name":"m","type":"counter","max_series":10,
        "labels":[{"source":"header","header":"x-tenant","name":"tenant"}]}]}"#;
    let host = completed("GET", "/", 200);
    let r = root(config, &host);
    let cases: Vec<(Vec<&[u8]>, &str)> = vec![
        (vec![b"ok\xff\xfe"], INVALID),
        (vec![&[b'a'; 17]], TOO_LONG),
        (vec![b""], label::EMPTY),
        (vec![b"a", b"b"], MULTIPLE),
        (vec![], NONE),
        (vec![b"x\"}\n{y"], "x____y"),
    ];
    for (values, want) in cases {
        next(&host, "GET", "/", 200);
        for v in &values {
            host.add_header(HeaderMap::Request, "x-tenant", v);
        }
        serve(r.as_ref(), &host);
        assert_eq!(host.metric(&format!("m.tenant.{want}")), 1, "{values:?}");
    }
}

#[test]
fn histograms_record_duration_and_sizes() {
    let config = r#"{"metrics":[
        {"name":"d","type":"histogram","value":"duration_ms","labels":[{"source":"route"}]},
        {"name":"q","type":"histogram","value":"request_bytes","labels":[{"source":"route"}]},
        {"name":"s","type":"histogram","value":"response_bytes","labels":[{"source":"route"}]}]}"#;
    let host = completed("GET", "/", 200);
    let r = root(config, &host);
    serve(r.as_ref(), &host);
    assert_eq!(
        host.metric("d.route.payments"),
        7,
        "7.4 ms in whole milliseconds"
    );
    assert_eq!(host.metric("q.route.payments"), 321);
    assert_eq!(host.metric("s.route.payments"), 4321);

    // A stream this filter never saw, and Envoy has no duration for it: nothing is recorded
    // and no budget is spent.
    let host = MockHost::new().with_property(&["xds", "route_name"], b"other_route");
    let r = root(config, &host);
    r.new_stream().on_log(&host);
    assert!(!host
        .metrics
        .borrow()
        .iter()
        .any(|m| m.0 == "d.route.other_route"));
    assert_eq!(host.metric("kavach_metrics_series.metric.d"), 0);
}

#[test]
fn a_request_answered_before_this_filter_still_counts() {
    let host = MockHost::new()
        .with_property(&["request", "method"], b"POST")
        .with_property(&["request", "path"], b"/pay/42?x=1")
        .with_property(&["response", "code"], &403i64.to_le_bytes());
    let config = r#"{"metrics":[{"name":"m","type":"counter",
        "labels":[{"source":"method"},{"source":"path"},{"source":"status_class"},{"source":"route"}]}]}"#;
    let r = root(config, &host);
    let mut s = r.new_stream();
    s.on_log(&host);
    assert_eq!(
        host.metric("m.method.POST.path./pay/:id.status_class.4xx.route.(none)"),
        1
    );
}

#[test]
fn a_garbled_budget_in_shared_data_refuses_to_start() {
    let host = MockHost::new();
    host.shared_set("kavach.m.kavach_requests_total.count", b"lots", None)
        .unwrap();
    let err = MetricsFactory::configure(REQUESTS.as_bytes(), &host)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "metrics[0]: shared data key \"kavach.m.kavach_requests_total.count\" does not hold a series count (another plugin in the same vm_id?)"
    );
}

#[test]
fn hostile_paths_and_methods_cannot_multiply_series() {
    let config = r#"{"metrics":[{"name":"m","type":"counter","max_series":50,
        "labels":[{"source":"method"},{"source":"path"}]}]}"#;
    let host = completed("GET", "/", 200);
    let r = root(config, &host);
    for i in 0..500 {
        let path = format!("/accounts/{i}/tx/{:032x}?trace={i}", i * 7919);
        let method = format!("M{i}");
        next(&host, &method, &path, 200);
        serve(r.as_ref(), &host);
    }
    assert_eq!(
        host.metric("m.method.(nonstandard).path./accounts/:id/tx/:id"),
        500
    );
    assert_eq!(host.metric("kavach_metrics_series.metric.m"), 1);
}
