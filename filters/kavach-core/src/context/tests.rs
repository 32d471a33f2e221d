use super::{ContextHost, RequestContext, Sharing};
use crate::decision::{Decision, Outcome, Published};
use crate::host::{Fact, HeaderMap, Host};
use crate::testing::{CountingHost, MockHost};

fn counting() -> CountingHost {
    CountingHost::new(
        MockHost::new()
            .with_request(&[(":path", b"/a")])
            .with_property(&["source", "address"], b"10.0.0.1:5000")
            .with_property(&["xds", "route_name"], b"r1"),
    )
}

#[test]
fn the_request_headers_are_read_once_until_something_changes_them() {
    let reads = |f: &dyn Fn(&ContextHost)| {
        let host = counting();
        let cx = RequestContext::default();
        f(&cx.host(&host));
        host.count_of("headers Request")
    };
    assert_eq!(
        reads(&|h| {
            for _ in 0..5 {
                assert_eq!(h.request_headers().len(), 1);
                assert_eq!(h.headers(HeaderMap::Request).len(), 1);
            }
        }),
        1
    );
    // Changes made through the context are made to the copy, as Envoy makes them.
    let host = counting();
    let cx = RequestContext::default();
    let h = cx.host(&host);
    let held = h.request_headers();
    h.set_header(HeaderMap::Request, "X-A", Some(b"1"));
    let pairs = |h: &ContextHost| -> Vec<(String, Vec<u8>)> { h.request_headers().to_vec() };
    assert_eq!(
        held.len(),
        1,
        "what a filter holds does not change under it"
    );
    assert_eq!(pairs(&h), host.inner.request_headers.borrow().clone());
    h.add_header(HeaderMap::Request, "x-a", b"2");
    assert_eq!(h.request_headers().len(), 3);
    h.set_header(HeaderMap::Request, "x-a", Some(b"3"));
    assert_eq!(
        pairs(&h),
        vec![
            (":path".to_string(), b"/a".to_vec()),
            ("x-a".to_string(), b"3".to_vec())
        ]
    );
    h.set_header(HeaderMap::Request, "x-a", None);
    assert_eq!(pairs(&h), vec![(":path".to_string(), b"/a".to_vec())]);
    assert_eq!(host.count_of("headers Request"), 1);
    // A local reply: nothing of the request is kept.
    h.send_response(403, &[], b"");
    h.request_headers();
    assert_eq!(host.count_of("headers Request"), 2);
    // Response headers, and changes to them, are not the request's.
    assert_eq!(
        reads(&|h| {
            h.request_headers();
            h.set_header(HeaderMap::Response, "x-b", Some(b"1"));
            h.headers(HeaderMap::Response);
            h.request_headers();
        }),
        1
    );
}

#[test]
fn facts_are_asked_once_for_as_long_as_they_hold() {
    let host = counting();
    let cx = RequestContext::default();
    {
        let h = cx.host(&host);
        for _ in 0..3 {
            assert_eq!(
                h.fact(Fact::SourceAddress).as_deref(),
                Some(&b"10.0.0.1:5000"[..])
            );
            assert_eq!(h.fact(Fact::RouteName).as_deref(), Some(&b"r1"[..]));
            assert_eq!(h.fact(Fact::PeerPrincipal), None, "absent is an answer too");
            h.now();
        }
        assert_eq!(host.count_of("property xds.route_name"), 1);
        assert_eq!(host.count_of("now"), 1);
        // A changed request header makes Envoy resolve the route again.
        h.set_header(HeaderMap::Request, "x-reroute", Some(b"1"));
        h.fact(Fact::RouteName);
        h.fact(Fact::SourceAddress);
        assert_eq!(host.count_of("property xds.route_name"), 2);
    }
    // The next callback: the route and the clock are asked again, the connection facts not.
    let h = cx.host(&host);
    h.fact(Fact::RouteName);
    h.fact(Fact::SourceAddress);
    h.fact(Fact::PeerPrincipal);
    h.now();
    assert_eq!(host.count_of("property xds.route_name"), 3);
    assert_eq!(host.count_of("property source.address"), 1);
    assert_eq!(
        host.count_of("property connection.uri_san_peer_certificate"),
        1
    );
    assert_eq!(host.count_of("now"), 2);
}

#[test]
fn decisions_of_this_vm_stay_in_memory_unless_published() {
    let mut d = Decision::new("pci_authz", Outcome::Deny);
    d.reason = Some("no_rule_matched".into());

    let host = counting();
    let cx = RequestContext::new(Sharing::in_memory(&["audit", "pci_authz"]));
    let h = cx.host(&host);
    h.publish_decision(d.clone());
    h.set_audit_id("id-1");
    assert_eq!(host.count_of("set_property kavach.decision.pci_authz"), 0);
    assert_eq!(host.count_of("set_property kavach.audit_id"), 0);
    assert_eq!(h.audit_id().as_deref(), Some("id-1"));
    assert_eq!(
        h.decision("pci_authz", false),
        Some(Published::Decision(d.clone()))
    );
    assert_eq!(
        h.decision("pci_authz", true),
        Some(Published::Decision(d.clone()))
    );
    assert_eq!(h.decision("pci_authz", false), None, "taken");
    // A filter outside this VM publishes through filter state, and is read from there.
    h.decision("ratelimit", false);
    assert_eq!(host.count_of("property kavach.decision.ratelimit"), 1);

    // Publishing: filter state, exactly as separate modules do.
    let host = counting();
    let cx = RequestContext::new(Sharing::PUBLISH);
    let h = cx.host(&host);
    h.publish_decision(d.clone());
    h.set_audit_id("id-2");
    assert_eq!(host.count_of("set_property kavach.decision.pci_authz"), 1);
    assert_eq!(host.count_of("set_property kavach.audit_id"), 1);
    assert_eq!(h.decision("pci_authz", true), Some(Published::Decision(d)));
}

#[test]
fn every_fact_has_its_own_slot() {
    for (i, f) in Fact::ALL.iter().enumerate() {
        assert_eq!(f.index(), i, "{f:?}");
    }
}
