use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::host::HeaderMap;
use crate::testing::MockHost;

/// A probe filter: records every callback into a shared journal, and can stop on headers or
/// wait for the end of the body.
struct Probe {
    name: &'static str,
    journal: Rc<RefCell<Vec<String>>>,
    stop_headers: bool,
    wait_body: bool,
    /// Holds the request headers for a call; an answer with status 0 lets it go, any other
    /// sends a local reply.
    call: bool,
    calling: bool,
}

impl HttpFilter for Probe {
    fn on_request_headers(&mut self, host: &dyn Host, _eos: bool) -> Flow {
        self.journal
            .borrow_mut()
            .push(format!("{}:headers", self.name));
        host.add_header(HeaderMap::Request, "x-seen-by", self.name.as_bytes());
        if self.stop_headers {
            host.send_response(403, &[], b"no");
            return Flow::Stop;
        }
        if self.wait_body {
            return Flow::Stop;
        }
        if self.call {
            self.calling = true;
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn on_request_body(&mut self, _host: &dyn Host, size: usize, eos: bool) -> Flow {
        self.journal.borrow_mut().push(format!(
            "{}:body{size}{}",
            self.name,
            if eos { "!" } else { "" }
        ));
        if (self.wait_body && !eos) || self.calling {
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn on_request_trailers(&mut self, _host: &dyn Host) -> Flow {
        self.journal
            .borrow_mut()
            .push(format!("{}:trailers", self.name));
        if self.calling {
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, status: u32, _size: usize) -> Flow {
        if !self.calling {
            // Not an answer to a call of ours: nothing to resume.
            return Flow::Stop;
        }
        self.journal
            .borrow_mut()
            .push(format!("{}:grpc{token}/{status}", self.name));
        self.calling = false;
        if status != 0 {
            host.send_response(429, &[], b"limited");
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn on_response_headers(&mut self, _host: &dyn Host, _eos: bool) -> Flow {
        self.journal
            .borrow_mut()
            .push(format!("{}:response", self.name));
        Flow::Continue
    }

    fn on_log(&mut self, _host: &dyn Host) {
        self.journal.borrow_mut().push(format!("{}:log", self.name));
    }
}

struct ProbeRoot {
    name: &'static str,
    journal: Rc<RefCell<Vec<String>>>,
    stop_headers: bool,
    wait_body: bool,
    call: bool,
    tick: Option<u64>,
}

impl FilterRoot for ProbeRoot {
    fn name(&self) -> &'static str {
        self.name
    }
    fn new_stream(&self) -> Box<dyn HttpFilter> {
        Box::new(Probe {
            name: self.name,
            journal: Rc::clone(&self.journal),
            stop_headers: self.stop_headers,
            wait_body: self.wait_body,
            call: self.call,
            calling: false,
        })
    }
    fn tick_period_ms(&self) -> Option<u64> {
        self.tick
    }
    fn on_tick(&mut self, _host: &dyn Host) {
        self.journal
            .borrow_mut()
            .push(format!("{}:tick", self.name));
    }
}

thread_local! {
    static JOURNAL: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
}

fn journal() -> Rc<RefCell<Vec<String>>> {
    JOURNAL.with(Rc::clone)
}

fn probe(name: &'static str, bytes: &[u8]) -> Result<Box<dyn FilterRoot>, ConfigError> {
    let v: serde_json::Value = config::parse(bytes)?;
    if v.get("bad").is_some() {
        return Err(FieldPath::root().field("rules").index(0).error("bad rule"));
    }
    Ok(Box::new(ProbeRoot {
        name,
        journal: journal(),
        stop_headers: v.get("deny").is_some(),
        wait_body: v.get("body").is_some(),
        call: v.get("call").is_some(),
        tick: v.get("tick").and_then(serde_json::Value::as_u64),
    }))
}

const REGISTRY: Registry = &[
    ("a", |b, _| probe("a", b)),
    ("b", |b, _| probe("b", b)),
    ("c", |b, _| probe("c", b)),
];

fn chain(config: &str) -> Box<dyn FilterRoot> {
    journal().borrow_mut().clear();
    match configure(REGISTRY, config.as_bytes(), &MockHost::new()) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn taken() -> Vec<String> {
    journal().borrow_mut().drain(..).collect()
}

#[test]
fn filters_run_in_order_and_respond_in_reverse() {
    let host = MockHost::new();
    let root = chain(r#"{"chain":[{"filter":"a"},{"filter":"b"},{"filter":"c"}]}"#);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Continue);
    s.on_response_headers(&host, true);
    s.on_log(&host);
    assert_eq!(
        taken(),
        [
            "a:headers",
            "b:headers",
            "c:headers",
            "c:response",
            "b:response",
            "a:response",
            "a:log",
            "b:log",
            "c:log"
        ]
    );
    assert_eq!(
        host.request_values("x-seen-by"),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn a_local_reply_stops_the_chain_but_everyone_logs() {
    let host = MockHost::new();
    let root =
        chain(r#"{"chain":[{"filter":"a"},{"filter":"b","config":{"deny":1}},{"filter":"c"}]}"#);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Stop);
    s.on_response_headers(&host, true);
    s.on_log(&host);
    assert_eq!(
        taken(),
        [
            "a:headers",
            "b:headers",
            "b:response",
            "a:response",
            "a:log",
            "b:log",
            "c:log"
        ]
    );
    assert_eq!(host.reply.borrow().as_ref().map(|r| r.status), Some(403));
}

#[test]
fn a_filter_waiting_for_the_body_holds_later_filters_until_it_continues() {
    let host = MockHost::new();
    let root =
        chain(r#"{"chain":[{"filter":"a"},{"filter":"b","config":{"body":1}},{"filter":"c"}]}"#);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 10, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 20, true), Flow::Continue);
    assert_eq!(
        taken(),
        [
            "a:headers",
            "b:headers",
            "a:body10",
            "b:body10",
            "a:body20!",
            "b:body20!",
            "c:headers",
            "c:body20!"
        ]
    );
}

#[test]
fn configuration_errors_name_their_place_in_the_chain() {
    let err = |c: &str| {
        configure(REGISTRY, c.as_bytes(), &MockHost::new())
            .err()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        err(r#"{"chain":[{"filter":"a"},{"filter":"b","config":{"bad":1}}]}"#),
        "chain[1].config.rules[0]: bad rule"
    );
    assert_eq!(
        err(r#"{"chain":[]}"#),
        "chain: must name at least one filter"
    );
    assert_eq!(
        err(r#"{"chain":[{"filter":"z"}]}"#),
        "chain[0].filter: unknown filter \"z\" (known: a, b, c)"
    );
    assert!(
        err(r#"{"chain":[{"filter":"a","cfg":{}}]}"#).starts_with("chain[0].cfg: unknown field")
    );
    assert!(err(r#"{"filters":[]}"#).starts_with("filters: unknown field"));
}

#[test]
fn one_host_timer_serves_every_filter_at_its_own_period() {
    let host = MockHost::new();
    let mut root = chain(
        r#"{"chain":[{"filter":"a","config":{"tick":200}},{"filter":"b","config":{"tick":300}},{"filter":"c"}]}"#,
    );
    assert_eq!(root.tick_period_ms(), Some(100));
    for _ in 0..6 {
        root.on_tick(&host);
        host.advance(std::time::Duration::from_millis(100));
    }
    let ticks = taken();
    assert_eq!(ticks.iter().filter(|t| *t == "a:tick").count(), 3);
    assert_eq!(ticks.iter().filter(|t| *t == "b:tick").count(), 2);
    assert!(!ticks.iter().any(|t| t.starts_with("c:")));
}

#[test]
fn trailers_end_the_wait_of_a_filter_holding_the_request() {
    let host = MockHost::new();
    let root =
        chain(r#"{"chain":[{"filter":"a"},{"filter":"b","config":{"body":1}},{"filter":"c"}]}"#);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 10, false), Flow::Stop);
    assert_eq!(s.on_request_trailers(&host), Flow::Continue);
    assert_eq!(
        taken(),
        [
            "a:headers",
            "b:headers",
            "a:body10",
            "b:body10",
            "a:trailers",
            "b:trailers",
            "c:headers",
            "c:trailers"
        ]
    );
}

#[test]
fn a_filter_may_appear_twice() {
    let host = MockHost::new();
    let root = chain(r#"{"chain":[{"filter":"a"},{"filter":"a"}]}"#);
    let mut s = root.new_stream();
    s.on_request_headers(&host, true);
    assert_eq!(taken(), ["a:headers", "a:headers"]);
}

#[test]
fn a_filter_holding_the_request_for_a_call_lets_later_filters_run_when_answered() {
    let host = MockHost::new();
    let root =
        chain(r#"{"chain":[{"filter":"a"},{"filter":"b","config":{"call":1}},{"filter":"c"}]}"#);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Stop);
    assert_eq!(s.on_grpc_response(&host, 7, 0, 0), Flow::Continue);
    s.on_response_headers(&host, true);
    assert_eq!(
        taken(),
        [
            "a:headers",
            "b:headers",
            "b:grpc7/0",
            "c:headers",
            "c:response",
            "b:response",
            "a:response"
        ]
    );
    // Nothing holds the request any more: a late answer has nothing to resume.
    assert_eq!(s.on_grpc_response(&host, 8, 0, 0), Flow::Stop);
}

#[test]
fn a_refusing_answer_stops_the_chain() {
    let host = MockHost::new();
    let root =
        chain(r#"{"chain":[{"filter":"a","config":{"call":1}},{"filter":"b"},{"filter":"c"}]}"#);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, true), Flow::Stop);
    assert_eq!(s.on_grpc_response(&host, 1, 14, 0), Flow::Stop);
    s.on_log(&host);
    assert_eq!(
        taken(),
        ["a:headers", "a:grpc1/14", "a:log", "b:log", "c:log"]
    );
    assert_eq!(host.reply.borrow().as_ref().map(|r| r.status), Some(429));
}

#[test]
fn body_and_trailers_that_came_during_a_call_reach_the_later_filters() {
    let host = MockHost::new();
    let root = chain(
        r#"{"chain":[{"filter":"a"},{"filter":"b","config":{"call":1}},{"filter":"c","config":{"body":1}}]}"#,
    );
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 5, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 9, true), Flow::Stop);
    assert_eq!(s.on_request_trailers(&host), Flow::Stop);
    // The answer: c gets the headers, then the whole body (it waited for its end), then trailers.
    assert_eq!(s.on_grpc_response(&host, 3, 0, 0), Flow::Continue);
    assert_eq!(
        taken(),
        [
            "a:headers",
            "b:headers",
            "a:body5",
            "b:body5",
            "a:body9!",
            "b:body9!",
            "a:trailers",
            "b:trailers",
            "b:grpc3/0",
            "c:headers",
            "c:body9!",
            "c:trailers"
        ]
    );
    // A later filter still waiting for the body keeps the request held.
    let root = chain(
        r#"{"chain":[{"filter":"b","config":{"call":1}},{"filter":"c","config":{"body":1}}]}"#,
    );
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 4, false), Flow::Stop);
    assert_eq!(s.on_grpc_response(&host, 4, 0, 0), Flow::Stop);
    assert_eq!(s.on_request_body(&host, 8, true), Flow::Continue);
    assert_eq!(
        taken(),
        [
            "b:headers",
            "b:body4",
            "b:grpc4/0",
            "c:headers",
            "c:body4",
            "b:body8!",
            "c:body8!"
        ]
    );
}

#[test]
fn a_stray_answer_never_resumes_a_held_request() {
    let host = MockHost::new();
    // b holds the headers for the body, not for a call.
    let root = chain(r#"{"chain":[{"filter":"b","config":{"body":1}},{"filter":"c"}]}"#);
    let mut s = root.new_stream();
    assert_eq!(s.on_request_headers(&host, false), Flow::Stop);
    assert_eq!(s.on_grpc_response(&host, 9, 0, 0), Flow::Stop);
    assert_eq!(taken(), ["b:headers"], "c never ran");
}

/// A filter that makes no calls: the trait's default answer handling.
struct Quiet;
impl HttpFilter for Quiet {}

#[test]
fn filters_that_make_no_calls_resume_nothing() {
    assert_eq!(
        Quiet.on_grpc_response(&MockHost::new(), 1, 0, 0),
        Flow::Stop
    );
}

/// The audit filter and PCI authorization in one chain, driven as the module's adapter drives
/// it (through the request context): one refused request, its reply and its record.
fn refused_through_context(publish: bool) -> (crate::testing::CountingHost, String, String) {
    use crate::context::ContextStream;
    use crate::testing::CountingHost;
    let config = format!(
        r#"{{"publish_decisions": {publish}, "chain": [
            {{"filter": "audit"}},
            {{"filter": "pci_authz", "config": {{"policy_version": "p1", "trust_domain": "bank.local",
              "rules": [{{"name": "cards", "methods": ["GET"], "paths": ["/v1/cards/*"]}}]}}}}]}}"#
    );
    let host = CountingHost::new(
        MockHost::new().with_request(&[(":method", b"GET"), (":path", b"/v1/accounts/7")]),
    );
    let root = match configure(crate::filters::ALL, config.as_bytes(), &host) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let mut s = ContextStream::new(root.as_ref());
    assert_eq!(s.on_request_headers(&host, true), Flow::Stop);
    s.on_log(&host);
    let reply = host.inner.reply.borrow().clone().expect("a denial");
    assert_eq!(reply.status, 403);
    let record = host
        .inner
        .property(&["kavach.audit.record"])
        .expect("a record");
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    let audit_id = record["audit_id"].as_str().unwrap().to_string();
    assert!(
        String::from_utf8_lossy(&reply.body).contains(&audit_id),
        "the denial quotes the audit id"
    );
    (host, record["decisions"].to_string(), audit_id)
}

#[test]
fn decisions_and_the_audit_id_travel_in_memory_unless_published() {
    let (host, in_memory, _) = refused_through_context(false);
    assert!(
        in_memory.contains(r#""filter":"pci_authz","outcome":"deny""#),
        "{in_memory}"
    );
    for name in ["kavach.decision.pci_authz", "kavach.audit_id"] {
        assert_eq!(host.count_of(&format!("set_property {name}")), 0, "{name}");
        assert_eq!(host.count_of(&format!("property {name}")), 0, "{name}");
    }

    // Published: the same record, through filter state, as separate modules exchange it.
    let (host, published, audit_id) = refused_through_context(true);
    assert_eq!(published, in_memory);
    assert_eq!(host.count_of("set_property kavach.decision.pci_authz"), 1);
    assert_eq!(host.count_of("set_property kavach.audit_id"), 1);
    assert_eq!(
        host.inner.property(&["kavach.audit_id"]),
        Some(audit_id.into_bytes())
    );
    assert!(host
        .inner
        .property(&["kavach.decision.pci_authz"])
        .is_some());
}
