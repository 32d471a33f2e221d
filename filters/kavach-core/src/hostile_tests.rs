//! Hostile traffic through the whole chain: thousands of generated requests with the bytes real
//! clients and broken proxies send (invalid UTF-8, control characters, encoded tricks, huge and
//! empty values, duplicated and re-spelled headers, odd methods, garbage properties), through the
//! demo chain's five filters as the bundle runs them. A panic here would trap the VM in Envoy;
//! the test passes only if every request completes, and every local reply is one the filters
//! document.

use crate::chain;
use crate::filter::Flow;
use crate::filters;
use crate::host::Host;
use crate::testing::MockHost;

/// The bundle configuration of the demo chain (envoy-config/chain-bundle.yaml, which is JSON
/// after its comment lines).
fn demo_chain_config() -> String {
    let file = include_str!("../../../envoy-config/chain-bundle.yaml");
    let json: String = file
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let v: serde_json::Value = serde_json::from_str(&json).expect("chain-bundle.yaml is JSON");
    let filters = v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("bundle configuration")
        .to_string();
    filters
}

/// A small deterministic generator (the test must be repeatable).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"",
            b"a",
            b"/",
            b"//",
            b"..",
            b".",
            b"%2e",
            b"%2F",
            b"%5C",
            b"%25",
            b"%00",
            b"%",
            b"%zz",
            b";x=1",
            b"#f",
            b"?q=1",
            b"\\",
            b"\r\n",
            b"\0",
            b"\x7f",
            b"\xff\xfe",
            b"\xc3\x28",
            "é".as_bytes(),
            "₹".as_bytes(),
            b"4111 1111 1111 1111",
            b"9999 4105 7058",
            b"ABCPE1234F",
            b"user@okaxis",
            b"SBIN0001234",
            b"spiffe://bank.local/ns/a/sa/b",
            b"*",
            b"**",
            b"{}",
            b"\"",
            b"'",
            b"<",
            b" ",
            b"\t",
            b"0",
            b"-1",
            b"18446744073709551616",
            b"::ffff:1.2.3.4",
            b"1.2.3.4, 5.6.7.8",
            b"2001:db8::1",
            b"payment",
            b"PII",
            b"unknown",
        ];
        let mut out = Vec::new();
        for _ in 0..self.below(12) {
            let piece: &[u8] = PIECES[self.below(PIECES.len())];
            out.extend_from_slice(piece);
        }
        if self.below(50) == 0 {
            out.extend(std::iter::repeat_n(b'x', 20_000 + self.below(50_000)));
        }
        out
    }
}

const HEADER_NAMES: &[&str] = &[
    "x-audit-id",
    "x_audit_id",
    "x.audit.principal",
    "X-Audit-Region",
    "x-data-class",
    "x-tenant",
    "x-forwarded-for",
    "x-http-method-override",
    "x_http_method_override",
    "x-cde-token",
    "x-forwarded-client-cert",
    "x-request-id",
    "x-kavach-residency",
    "content-type",
    "content-length",
    "transfer-encoding",
    "user-agent",
    "x-partner-id",
    "",
];

const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"PUT", b"get", b"", b"DELETE", b"\xff", b"CONNECT",
];

const PATHS: &[&str] = &[
    "/demo/",
    "/pay/",
    "/kyc/",
    "/v1/cards/",
    "/",
    "",
    "*",
    "http://x/",
];

/// A plausible request with one hostile part at most, so that the chain's later stages (and
/// the upstream-answer checks) see traffic too, not only the early refusals.
fn mostly_clean(rng: &mut Rng) -> MockHost {
    let method: &[u8] = if rng.below(2) == 0 { b"GET" } else { b"POST" };
    let path = format!(
        "{}item{}",
        rng.pick(&["/demo/", "/pay/", "/kyc/"]),
        rng.below(1000)
    );
    let mut pairs: Vec<(String, Vec<u8>)> = vec![
        (":method".into(), method.to_vec()),
        (":path".into(), path.into_bytes()),
        (":authority".into(), b"bank.local".to_vec()),
        (
            "x-request-id".into(),
            format!("{:032x}", rng.next()).into_bytes(),
        ),
    ];
    if rng.below(3) == 0 {
        pairs.push((
            rng.pick(&["x-tenant", "user-agent", "x-audit-id", "x-data-class"])
                .to_string(),
            rng.bytes(),
        ));
    }
    let host = MockHost::new();
    *host.request_headers.borrow_mut() = pairs;
    host.set_property(
        &["source", "address"],
        format!("10.0.{}.{}:443", rng.below(256), rng.below(256)).as_bytes(),
    );
    host.set_property(&["xds", "cluster_name"], b"demo_upstream");
    host.set_property(
        &["xds", "route_name"],
        rng.pick(&["demo", "payments", "kyc"]).as_bytes(),
    );
    host.set_property(
        &[
            "xds",
            "cluster_metadata",
            "filter_metadata",
            "kavach",
            "region",
        ],
        b"in-west",
    );
    *host.body.borrow_mut() = rng.bytes();
    host
}

fn request(rng: &mut Rng) -> MockHost {
    if rng.below(2) == 0 {
        return mostly_clean(rng);
    }
    let method = rng.pick(METHODS).to_vec();
    let mut path = rng.pick(PATHS).as_bytes().to_vec();
    if rng.below(2) == 0 {
        path.extend(rng.bytes());
    } else {
        // A well-formed path, so that requests also get past the early refusals.
        path.extend(format!("item{}", rng.below(1000)).as_bytes());
    }
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
    if rng.below(20) != 0 {
        pairs.push((":method".into(), method));
    }
    if rng.below(20) != 0 {
        pairs.push((":path".into(), path));
    }
    if rng.below(30) == 0 {
        pairs.push((":path".into(), b"/demo/dup".to_vec()));
    }
    pairs.push((":authority".into(), rng.bytes()));
    for _ in 0..rng.below(10) {
        pairs.push((rng.pick(HEADER_NAMES).to_string(), rng.bytes()));
    }
    let host = MockHost::new();
    *host.request_headers.borrow_mut() = pairs;
    let props: &[&[&str]] = &[
        &["connection", "uri_san_peer_certificate"],
        &["source", "address"],
        &["xds", "route_name"],
        &["xds", "cluster_name"],
        &[
            "xds",
            "cluster_metadata",
            "filter_metadata",
            "kavach",
            "region",
        ],
        &[
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            "kavach",
            "region",
        ],
        &["upstream", "address"],
    ];
    for p in props {
        if rng.below(3) != 0 {
            host.set_property(p, &rng.bytes());
        }
    }
    for p in [
        &["response", "code"][..],
        &["request", "total_size"],
        &["response", "total_size"],
    ] {
        if rng.below(3) != 0 {
            let n = rng.next() as i64 - (1 << 30);
            host.set_property(p, &n.to_le_bytes());
        }
    }
    *host.body.borrow_mut() = rng.bytes();
    host
}

#[test]
fn thousands_of_hostile_requests_never_panic_the_whole_chain() {
    let config = demo_chain_config();
    let setup = MockHost::new();
    let root = match chain::configure(filters::ALL, config.as_bytes(), &setup) {
        Ok(r) => r,
        Err(e) => panic!("demo chain config: {e}"),
    };
    let mut rng = Rng(0x6b61_7661_6368);
    let mut replies = std::collections::BTreeMap::new();
    let mut passed = 0;
    for i in 0..3000 {
        let host = request(&mut rng);
        // The shared data (rate-limit table, metric budgets) persists across requests, as in a VM.
        *host.shared.entries.borrow_mut() = std::mem::take(&mut *setup.shared.entries.borrow_mut());
        let mut s = root.new_stream();
        let eos = rng.below(2) == 0;
        if s.on_request_headers(&host, eos) == Flow::Stop && host.reply.borrow().is_none() {
            // Waiting for the body: deliver it, in pieces, maybe ending with trailers.
            let total = host.body.borrow().len();
            let mut seen = 0;
            while seen < total {
                seen = (seen + 1 + rng.below(total)).min(total);
                let last = seen == total && rng.below(3) != 0;
                if s.on_request_body(&host, seen, last) == Flow::Continue
                    || host.reply.borrow().is_some()
                {
                    break;
                }
            }
            if host.reply.borrow().is_none() {
                s.on_request_trailers(&host);
            }
        }
        if rng.below(2) == 0 {
            host.set_property(&["response", "code"], &200i64.to_le_bytes());
        }
        s.on_response_headers(&host, true);
        s.on_log(&host);
        if let Some(reply) = host.reply.borrow().as_ref() {
            assert!(
                [400, 403, 404, 413, 429, 451, 500, 502].contains(&reply.status),
                "request {i}: unexpected local reply {}",
                reply.status
            );
            *replies.entry(reply.status).or_insert(0) += 1;
        } else {
            passed += 1;
        }
        *setup.shared.entries.borrow_mut() = std::mem::take(&mut *host.shared.entries.borrow_mut());
    }
    eprintln!("3000 hostile requests: {passed} passed, local replies by status {replies:?}");
    // The generator must actually reach the refusals, or the test proves little.
    assert!(replies.len() >= 3, "replies seen: {replies:?}");
    assert!(passed >= 500, "only {passed} requests got through");
}

/// Configuration comes from operators, not clients, but a bad push must be refused with a
/// message, never crash the configure step: the demo chain's configuration, mutated hundreds of
/// ways (characters dropped, duplicated, replaced, numbers swapped for extremes), either
/// configures or fails with an error naming a reason.
#[test]
fn mutated_configurations_are_refused_not_fatal() {
    let base = demo_chain_config();
    let mut rng = Rng(0x636f_6e66_6967);
    const SWAPS: &[&str] = &[
        "0",
        "-1",
        "18446744073709551615",
        "1e309",
        "null",
        "[]",
        "{}",
        "\"\"",
        "\"**\"",
        "\"/a/**/b\"",
        "true",
        "\"\\u0000\"",
        "\"é\"",
        "99999999999",
    ];
    let mut refused = 0;
    // Each successful configure builds the rate limiter's slot table, so keep the count modest.
    for _ in 0..400 {
        let mut text: Vec<u8> = base.as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(text.len());
            match rng.below(4) {
                0 => {
                    text.remove(at);
                }
                1 => {
                    let b = text[at];
                    text.insert(at, b);
                }
                2 => {
                    const BYTES: &[u8] = b"{}[],:\"0a-*/\\ ";
                    text[at] = BYTES[rng.below(BYTES.len())];
                }
                _ => {
                    // Replace the value after a colon with an extreme one.
                    if let Some(colon) = text[at..].iter().position(|b| *b == b':') {
                        let start = at + colon + 1;
                        let end = text[start..]
                            .iter()
                            .position(|b| *b == b',' || *b == b'}' || *b == b']')
                            .map_or(text.len(), |e| start + e);
                        text.splice(start..end, rng.pick(SWAPS).bytes());
                    }
                }
            }
        }
        let host = MockHost::new();
        if let Err(e) = chain::configure(filters::ALL, &text, &host) {
            assert!(!e.reason.is_empty());
            refused += 1;
        }
    }
    assert!(
        refused > 100,
        "the mutations should break most configurations ({refused})"
    );
}

/// The demo chain with its rate-limit rules made global, under `failure_mode`.
fn global_chain_config(failure_mode: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&demo_chain_config()).expect("demo chain JSON");
    for link in v["chain"].as_array_mut().expect("chain") {
        if link["filter"] == "ratelimit" {
            for rule in link["config"]["rules"].as_array_mut().expect("rules") {
                rule["global"] = serde_json::Value::Bool(true);
            }
            link["config"]["rate_limit_service"] = serde_json::json!({
                "cluster": "ratelimit", "domain": "kavach", "failure_mode": failure_mode
            });
        }
    }
    v.to_string()
}

/// An answer from the rate-limit service as the network may deliver it: well-formed with any
/// numbers, cut short, or garbage.
fn service_answer(rng: &mut Rng) -> (u32, Vec<u8>) {
    use crate::ratelimit::rls::wire;
    let status = *rng.pick(&[0, 0, 0, 0, 1, 2, 4, 13, 14, 16]);
    let bytes = match rng.below(4) {
        0 => rng.bytes(),
        1 => Vec::new(),
        _ => {
            let statuses: Vec<wire::StatusSpec> = (0..rng.below(4))
                .map(|_| {
                    let limit = (rng.below(2) == 0).then(|| {
                        (
                            rng.next() % 5000,
                            rng.next() % 9,
                            *rng.pick(&["g", "", "x\u{0}y"]),
                        )
                    });
                    (rng.next() % 4, limit, rng.next(), rng.next())
                })
                .collect();
            let mut b = wire::response(rng.next() % 4, &statuses);
            if rng.below(5) == 0 {
                b.truncate(rng.below(b.len()));
            }
            b
        }
    };
    (status, bytes)
}

/// Global rate-limit rules in the whole chain, with whatever the service answers (or fails
/// with), bodies arriving while it decides, and answers for other calls: never a panic, only
/// documented replies.
#[test]
fn hostile_service_answers_never_panic_the_whole_chain() {
    let mut rng = Rng(0x726c_7320_6b76);
    let mut replies = std::collections::BTreeMap::new();
    let mut passed = 0;
    let mut asked = 0;
    for mode in ["deny", "allow", "local"] {
        let config = global_chain_config(mode);
        let setup = MockHost::new();
        let root = match chain::configure(filters::ALL, config.as_bytes(), &setup) {
            Ok(r) => r,
            Err(e) => panic!("global demo chain config: {e}"),
        };
        for i in 0..600 {
            let host = request(&mut rng);
            *host.shared.entries.borrow_mut() =
                std::mem::take(&mut *setup.shared.entries.borrow_mut());
            let mut s = root.new_stream();
            let mut flow = s.on_request_headers(&host, rng.below(2) == 0);
            let call = u32::try_from(host.grpc_calls.borrow().len()).unwrap_or(0);
            if call > 0 && host.reply.borrow().is_none() {
                asked += 1;
                if rng.below(3) == 0 {
                    let n = host.body.borrow().len();
                    assert_eq!(s.on_request_body(&host, n, rng.below(2) == 0), Flow::Stop);
                }
                if rng.below(5) == 0 {
                    assert_eq!(
                        s.on_grpc_response(&host, 7, 0, 0),
                        Flow::Stop,
                        "not its call"
                    );
                }
                let (status, bytes) = service_answer(&mut rng);
                let n = bytes.len();
                *host.grpc_answer.borrow_mut() = bytes;
                flow = s.on_grpc_response(&host, 1000 + call, status, n);
            }
            if flow == Flow::Stop && host.reply.borrow().is_none() {
                let n = host.body.borrow().len();
                s.on_request_body(&host, n, true);
            }
            s.on_response_headers(&host, true);
            s.on_log(&host);
            match host.reply.borrow().as_ref() {
                Some(reply) => {
                    assert!(
                        [400, 403, 404, 413, 429, 451, 500, 502, 503].contains(&reply.status),
                        "{mode} request {i}: unexpected local reply {}",
                        reply.status
                    );
                    *replies.entry(reply.status).or_insert(0) += 1;
                }
                None => passed += 1,
            }
            *setup.shared.entries.borrow_mut() =
                std::mem::take(&mut *host.shared.entries.borrow_mut());
        }
    }
    eprintln!("1800 requests, {asked} asked the service: {passed} passed, replies {replies:?}");
    assert!(asked >= 600, "only {asked} requests reached the service");
    assert!(
        replies.contains_key(&503),
        "deny mode refused nothing: {replies:?}"
    );
    assert!(
        replies.contains_key(&429),
        "no answer said over limit: {replies:?}"
    );
    assert!(passed >= 300, "only {passed} requests got through");
}
