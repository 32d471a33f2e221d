//! A rate-limit service speaking Envoy's standard RLS v3 gRPC API
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), for the tests in which Envoy
//! calls it on behalf of a filter.
//!
//! [`RlsServer::start`] serves plaintext HTTP/2 with prior knowledge (h2c, what Envoy's gRPC
//! client speaks to a cluster with `http2_protocol_options`) on `127.0.0.1`, from a background
//! runtime the server owns, so the tests stay synchronous. Point a STATIC cluster at
//! [`RlsServer::addr`]; several Envoys may share one server, and so its counters.
//!
//! Limiting works like envoyproxy/ratelimit with fixed windows: a descriptor matches the first
//! [`Limit`] whose keys are exactly the descriptor's keys in the same order and whose fixed values
//! are equal; each distinct descriptor (keys and values) has its own counter per unit-aligned
//! window of unix time. A request counts even when it is over the limit.
//!
//! [`RlsServer::hanging`] accepts the HTTP/2 stream of each call, records the request, and never
//! answers, for timeout tests. It speaks bare HTTP/2 rather than going through tonic, because
//! tonic's server honours the `grpc-timeout` header Envoy sends and would answer `CANCELLED` at
//! the deadline.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// The unit of a [`Limit`]'s window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
}

impl Unit {
    /// The length of one window, in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
        }
    }

    fn proto(self) -> rate_limit::Unit {
        match self {
            Unit::Second => rate_limit::Unit::Second,
            Unit::Minute => rate_limit::Unit::Minute,
            Unit::Hour => rate_limit::Unit::Hour,
            Unit::Day => rate_limit::Unit::Day,
        }
    }
}

/// One configured limit of the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Reported as `current_limit.name`.
    pub name: String,
    /// The descriptor entry keys, in order. `Some(v)`: the entry's value must equal `v`; `None`:
    /// any value, and each distinct value has its own counter.
    pub entries: Vec<(String, Option<String>)>,
    pub requests_per_unit: u32,
    pub unit: Unit,
}

impl Limit {
    /// `Limit::new("per-address", &[("rule", Some("orders")), ("remote_address", None)], 3,
    /// Unit::Minute)`.
    pub fn new(
        name: &str,
        entries: &[(&str, Option<&str>)],
        requests_per_unit: u32,
        unit: Unit,
    ) -> Limit {
        Limit {
            name: name.to_owned(),
            entries: entries
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.map(str::to_owned)))
                .collect(),
            requests_per_unit,
            unit,
        }
    }

    fn matches(&self, entries: &[(String, String)]) -> bool {
        self.entries.len() == entries.len()
            && self
                .entries
                .iter()
                .zip(entries)
                .all(|((key, wanted), (k, v))| {
                    key == k && wanted.as_ref().is_none_or(|wanted| wanted == v)
                })
    }
}

/// One `ShouldRateLimit` request as the service received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub domain: String,
    /// The entries (key, value) of each descriptor, in order.
    pub descriptors: Vec<Vec<(String, String)>>,
    /// The effective hits of each descriptor: its own `hits_addend` if set, else the request's if
    /// non-zero, else 1.
    pub hits: Vec<u64>,
}

/// A rate-limit service on `127.0.0.1`, serving until dropped.
pub struct RlsServer {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<Runtime>,
}

impl RlsServer {
    /// Serves `limits` for `domain`; requests for any other domain are answered with
    /// `INVALID_ARGUMENT`. Listening when this returns.
    pub fn start(domain: &str, limits: Vec<Limit>) -> RlsServer {
        let state = Arc::new(State::new(domain, limits));
        let service = RateLimitServiceServer::from_arc(Arc::clone(&state));
        RlsServer::launch(state, |listener| async move {
            // `serve_with_incoming` on a bare service needs no router; tonic's server accepts
            // only HTTP/2 with prior knowledge unless HTTP/1 is enabled, which is what Envoy sends.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            if let Err(error) = Server::builder()
                .serve_with_incoming(service, incoming)
                .await
            {
                eprintln!("rate-limit service stopped: {error}");
            }
        })
    }

    /// A service that accepts every call, records its request, and never answers.
    pub fn hanging() -> RlsServer {
        let state = Arc::new(State::new("", Vec::new()));
        let recorder = Arc::clone(&state);
        RlsServer::launch(state, |listener| hang(listener, recorder))
    }

    /// Where the service listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every `ShouldRateLimit` request received, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().seen.clone()
    }

    fn launch<F, Fut>(state: Arc<State>, serve: F) -> RlsServer
    where
        F: FnOnce(TcpListener) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kavach-rls")
            .enable_all()
            .build()
            .unwrap_or_else(|error| {
                panic!("cannot build the rate-limit service's runtime: {error}")
            });
        // Bound before returning, so that a client may connect at once.
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|error| panic!("cannot bind the rate-limit service: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("rate-limit service has no address: {error}"));
        listener.set_nonblocking(true).unwrap_or_else(|error| {
            panic!("cannot make the rate-limit listener non-blocking: {error}")
        });
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener)
                .unwrap_or_else(|error| panic!("cannot register the rate-limit listener: {error}"))
        };
        runtime.spawn(serve(listener));
        RlsServer {
            addr,
            state,
            runtime: Some(runtime),
        }
    }
}

impl Drop for RlsServer {
    /// Drops the serving tasks, which closes the listener and every connection, and waits for
    /// the runtime's thread to finish.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// The counter of one descriptor in its current window.
struct Window {
    index: u64,
    count: u64,
}

#[derive(Default)]
struct Counters {
    /// Keyed by the descriptor's entries; the domain is the server's own, since requests for
    /// other domains are refused.
    windows: HashMap<Vec<(String, String)>, Window>,
    seen: Vec<Seen>,
}

struct State {
    domain: String,
    limits: Vec<Limit>,
    counters: Mutex<Counters>,
}

impl State {
    fn new(domain: &str, limits: Vec<Limit>) -> State {
        State {
            domain: domain.to_owned(),
            limits,
            counters: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A test that panicked while holding the lock leaves consistent counters behind.
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, request: &RateLimitRequest) -> Seen {
        let seen = Seen {
            domain: request.domain.clone(),
            descriptors: request.descriptors.iter().map(entries).collect(),
            hits: request
                .descriptors
                .iter()
                .map(|descriptor| effective_hits(descriptor, request.hits_addend))
                .collect(),
        };
        self.lock().seen.push(seen.clone());
        seen
    }

    /// Counts the request and decides on it, at `now` (seconds of unix time).
    fn decide(
        &self,
        request: &RateLimitRequest,
        now: u64,
    ) -> Result<RateLimitResponse, tonic::Status> {
        let seen = self.record(request);
        if request.domain != self.domain {
            return Err(tonic::Status::invalid_argument(format!(
                "unknown domain {:?}; this service limits {:?}",
                request.domain, self.domain
            )));
        }
        let mut counters = self.lock();
        let mut overall = Code::Ok;
        let mut statuses = Vec::with_capacity(seen.descriptors.len());
        for (entries, hits) in seen.descriptors.into_iter().zip(seen.hits) {
            let Some(limit) = self.limits.iter().find(|limit| limit.matches(&entries)) else {
                statuses.push(DescriptorStatus {
                    code: Code::Ok.into(),
                    ..DescriptorStatus::default()
                });
                continue;
            };
            let unit = limit.unit.seconds();
            let index = now / unit;
            let window = counters
                .windows
                .entry(entries)
                .or_insert(Window { index, count: 0 });
            if window.index != index {
                *window = Window { index, count: 0 };
            }
            window.count = window.count.saturating_add(hits);
            let allowed = u64::from(limit.requests_per_unit);
            let code = if window.count > allowed {
                overall = Code::OverLimit;
                Code::OverLimit
            } else {
                Code::Ok
            };
            let remaining = allowed.saturating_sub(window.count);
            let until_reset = (index + 1) * unit - now;
            statuses.push(DescriptorStatus {
                code: code.into(),
                current_limit: Some(RateLimit {
                    name: limit.name.clone(),
                    requests_per_unit: limit.requests_per_unit,
                    unit: limit.unit.proto().into(),
                }),
                limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                duration_until_reset: Some(ProtoDuration {
                    seconds: i64::try_from(until_reset).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
                ..DescriptorStatus::default()
            });
        }
        Ok(RateLimitResponse {
            overall_code: overall.into(),
            statuses,
            ..RateLimitResponse::default()
        })
    }
}

#[tonic::async_trait]
impl RateLimitService for State {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        self.decide(request.get_ref(), unix_seconds())
            .map(tonic::Response::new)
    }
}

fn entries(descriptor: &RateLimitDescriptor) -> Vec<(String, String)> {
    descriptor
        .entries
        .iter()
        .map(|entry| (entry.key.clone(), entry.value.clone()))
        .collect()
}

fn effective_hits(descriptor: &RateLimitDescriptor, request_hits: u32) -> u64 {
    match &descriptor.hits_addend {
        Some(hits) => hits.value,
        None if request_hits != 0 => u64::from(request_hits),
        None => 1,
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}

async fn hang(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(hang_connection(socket, Arc::clone(&state)));
    }
}

/// Keeps the connection alive (settings, pings, flow control) and every stream open.
async fn hang_connection(socket: TcpStream, state: Arc<State>) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    let mut unanswered = Vec::new();
    while let Some(Ok((request, respond))) = connection.accept().await {
        unanswered.push(respond);
        tokio::spawn(record_call(request.into_body(), Arc::clone(&state)));
    }
}

/// Reads a unary gRPC request body to its end and records the `RateLimitRequest` in it.
async fn record_call(mut body: h2::RecvStream, state: Arc<State>) {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            return;
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    // gRPC length-prefixed message: a compression flag, a big-endian u32 length, the message.
    let Some((&[0, a, b, c, d], rest)) = bytes.split_first_chunk::<5>() else {
        return;
    };
    let length = u32::from_be_bytes([a, b, c, d]) as usize;
    if let Some(message) = rest.get(..length) {
        if let Ok(request) = RateLimitRequest::decode(message) {
            state.record(&request);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
    use envoy_types::pb::google::protobuf::UInt64Value;
    use std::time::Instant;
    use tonic::transport::{Channel, Endpoint};

    const DOMAIN: &str = "kavach";

    /// A tonic client on its own runtime, over a real socket.
    struct Client {
        runtime: Runtime,
        client: RateLimitServiceClient<Channel>,
    }

    impl Client {
        fn new(server: &RlsServer, timeout: Option<Duration>) -> Client {
            let runtime = runtime();
            let mut endpoint = Endpoint::from_shared(format!("http://{}", server.addr())).unwrap();
            if let Some(timeout) = timeout {
                endpoint = endpoint.timeout(timeout);
            }
            let channel = runtime.block_on(endpoint.connect()).unwrap();
            Client {
                runtime,
                client: RateLimitServiceClient::new(channel),
            }
        }

        fn call(&mut self, request: RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
            self.call_with(tonic::Request::new(request))
        }

        fn call_with(
            &mut self,
            request: tonic::Request<RateLimitRequest>,
        ) -> Result<RateLimitResponse, tonic::Status> {
            let client = &mut self.client;
            self.runtime
                .block_on(client.should_rate_limit(request))
                .map(tonic::Response::into_inner)
        }
    }

    fn runtime() -> Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| Entry {
                    key: (*key).to_owned(),
                    value: (*value).to_owned(),
                })
                .collect(),
            ..RateLimitDescriptor::default()
        }
    }

    fn with_hits(mut descriptor: RateLimitDescriptor, hits: u64) -> RateLimitDescriptor {
        descriptor.hits_addend = Some(UInt64Value { value: hits });
        descriptor
    }

    fn request(descriptors: Vec<RateLimitDescriptor>, hits_addend: u32) -> RateLimitRequest {
        RateLimitRequest {
            domain: DOMAIN.to_owned(),
            descriptors,
            hits_addend,
        }
    }

    fn orders(address: &str) -> RateLimitDescriptor {
        descriptor(&[("rule", "orders"), ("remote_address", address)])
    }

    fn per_address() -> Limit {
        Limit::new(
            "orders-per-address",
            &[("rule", Some("orders")), ("remote_address", None)],
            3,
            Unit::Minute,
        )
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Waits out the last two seconds of a window, so that a test's requests share one.
    fn away_from_window_end(unit: Unit) {
        let unit = unit.seconds();
        let left = unit - unix_seconds() % unit;
        if left <= 2 {
            std::thread::sleep(Duration::from_secs(left));
        }
    }

    fn code(status: &DescriptorStatus) -> Code {
        Code::try_from(status.code).unwrap()
    }

    #[test]
    fn limits_each_address_on_its_own_and_reports_the_limit() {
        let server = RlsServer::start(DOMAIN, vec![per_address()]);
        let mut client = Client::new(&server, None);
        away_from_window_end(Unit::Minute);

        for remaining in [2, 1, 0] {
            let response = client.call(request(vec![orders("10.0.0.1")], 0)).unwrap();
            assert_eq!(Code::try_from(response.overall_code), Ok(Code::Ok));
            let status = &response.statuses[0];
            assert_eq!(code(status), Code::Ok);
            assert_eq!(status.limit_remaining, remaining);
            assert_eq!(
                status.current_limit,
                Some(RateLimit {
                    name: "orders-per-address".to_owned(),
                    requests_per_unit: 3,
                    unit: rate_limit::Unit::Minute.into(),
                })
            );
            let reset = status.duration_until_reset.as_ref().unwrap().seconds;
            assert!((1..=60).contains(&reset), "{reset}");
        }

        let response = client.call(request(vec![orders("10.0.0.1")], 0)).unwrap();
        assert_eq!(Code::try_from(response.overall_code), Ok(Code::OverLimit));
        assert_eq!(code(&response.statuses[0]), Code::OverLimit);
        assert_eq!(response.statuses[0].limit_remaining, 0);
        assert!(response.statuses[0].current_limit.is_some());

        // Another address has its own counter.
        let response = client.call(request(vec![orders("10.0.0.2")], 0)).unwrap();
        assert_eq!(Code::try_from(response.overall_code), Ok(Code::Ok));
        assert_eq!(response.statuses[0].limit_remaining, 2);

        // Unmatched descriptors: another rule value, a key missing, a key too many. Statuses
        // follow the order of the descriptors; one over-limit descriptor makes the whole request
        // over the limit.
        let response = client
            .call(request(
                vec![
                    descriptor(&[("rule", "refunds"), ("remote_address", "10.0.0.1")]),
                    descriptor(&[("rule", "orders")]),
                    descriptor(&[
                        ("rule", "orders"),
                        ("remote_address", "10.0.0.1"),
                        ("path", "/"),
                    ]),
                    orders("10.0.0.1"),
                ],
                0,
            ))
            .unwrap();
        assert_eq!(response.statuses.len(), 4);
        for status in &response.statuses[..3] {
            assert_eq!(code(status), Code::Ok);
            assert_eq!(status.current_limit, None);
        }
        assert_eq!(code(&response.statuses[3]), Code::OverLimit);
        assert_eq!(Code::try_from(response.overall_code), Ok(Code::OverLimit));

        let seen = server.seen();
        assert_eq!(seen.len(), 6);
        assert_eq!(
            seen[0],
            Seen {
                domain: DOMAIN.to_owned(),
                descriptors: vec![pairs(&[("rule", "orders"), ("remote_address", "10.0.0.1")])],
                hits: vec![1],
            }
        );
        assert_eq!(seen[4].descriptors[0][1].1, "10.0.0.2");
        assert_eq!(seen[5].hits, vec![1, 1, 1, 1]);
    }

    #[test]
    fn hits_addend_of_the_request_and_of_each_descriptor() {
        let limit = Limit::new("api", &[("api", None)], 10, Unit::Hour);
        let server = RlsServer::start(DOMAIN, vec![limit]);
        let mut client = Client::new(&server, None);
        away_from_window_end(Unit::Hour);
        let api = || descriptor(&[("api", "v1")]);
        let remaining = |response: &RateLimitResponse| response.statuses[0].limit_remaining;

        // The request's hits_addend.
        let response = client.call(request(vec![api()], 4)).unwrap();
        assert_eq!(remaining(&response), 6);
        // A descriptor's own hits_addend wins over the request's, even when zero.
        let response = client
            .call(request(vec![with_hits(api(), 5)], 100))
            .unwrap();
        assert_eq!(remaining(&response), 1);
        let response = client
            .call(request(vec![with_hits(api(), 0)], 100))
            .unwrap();
        assert_eq!(remaining(&response), 1);
        assert_eq!(code(&response.statuses[0]), Code::Ok);
        // Neither: one hit, which reaches the limit without passing it.
        let response = client.call(request(vec![api()], 0)).unwrap();
        assert_eq!(remaining(&response), 0);
        assert_eq!(Code::try_from(response.overall_code), Ok(Code::Ok));
        // Passing it; the count still grows, so a later zero-hit check is over too.
        let response = client.call(request(vec![api()], 0)).unwrap();
        assert_eq!(Code::try_from(response.overall_code), Ok(Code::OverLimit));
        let response = client.call(request(vec![with_hits(api(), 0)], 0)).unwrap();
        assert_eq!(Code::try_from(response.overall_code), Ok(Code::OverLimit));

        // Each descriptor of one request takes its own hits, on its own counter.
        let response = client
            .call(request(
                vec![
                    with_hits(descriptor(&[("api", "v2")]), 7),
                    descriptor(&[("api", "v3")]),
                ],
                2,
            ))
            .unwrap();
        assert_eq!(response.statuses[0].limit_remaining, 3);
        assert_eq!(response.statuses[1].limit_remaining, 8);

        let hits: Vec<Vec<u64>> = server.seen().into_iter().map(|seen| seen.hits).collect();
        assert_eq!(
            hits,
            vec![
                vec![4],
                vec![5],
                vec![0],
                vec![1],
                vec![1],
                vec![0],
                vec![7, 2]
            ]
        );
    }

    #[test]
    fn counters_start_again_in_each_window() {
        let limit = Limit::new("one-per-minute", &[("k", Some("v"))], 1, Unit::Minute);
        let state = State::new(DOMAIN, vec![limit]);
        let check = |now| {
            let response = state
                .decide(&request(vec![descriptor(&[("k", "v")])], 0), now)
                .unwrap();
            let status = response.statuses[0].clone();
            (
                code(&status),
                status.duration_until_reset.map(|reset| reset.seconds),
            )
        };
        assert_eq!(check(125), (Code::Ok, Some(55)));
        assert_eq!(check(179), (Code::OverLimit, Some(1)));
        assert_eq!(check(180), (Code::Ok, Some(60)));
        assert_eq!(check(181), (Code::OverLimit, Some(59)));
    }

    #[test]
    fn another_domain_is_an_invalid_argument() {
        let server = RlsServer::start(DOMAIN, vec![per_address()]);
        let mut client = Client::new(&server, None);
        let mut wrong = request(vec![orders("10.0.0.1")], 0);
        wrong.domain = "elsewhere".to_owned();
        let status = client.call(wrong).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(server.seen()[0].domain, "elsewhere");
        // It did not count.
        let response = client.call(request(vec![orders("10.0.0.1")], 0)).unwrap();
        assert_eq!(response.statuses[0].limit_remaining, 2);
    }

    #[test]
    fn hanging_service_records_the_call_and_never_answers() {
        let server = RlsServer::hanging();
        let timeout = Duration::from_millis(300);
        let mut client = Client::new(&server, Some(timeout));
        // Also tell the service the deadline, as Envoy does with grpc-timeout: it must not answer
        // at the deadline either.
        let mut call = tonic::Request::new(request(vec![orders("10.0.0.1")], 0));
        call.set_timeout(timeout);
        let status = client.call_with(call).unwrap_err();
        assert!(
            matches!(
                status.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ),
            "{status:?}"
        );

        // tonic's client enforces grpc-timeout itself, so a bare HTTP/2 call shows that the
        // service stays silent past the deadline Envoy would send it.
        let answered = runtime().block_on(async {
            let socket = TcpStream::connect(server.addr()).await.unwrap();
            let (mut sender, connection) = h2::client::handshake(socket).await.unwrap();
            tokio::spawn(connection);
            let headers = tonic::codegen::http::Request::post(format!(
                "http://{}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                server.addr()
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "50m")
            .body(())
            .unwrap();
            let message = request(vec![orders("10.0.0.2")], 0).encode_to_vec();
            let mut frame = vec![0];
            frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&message);
            let (response, mut body) = sender.send_request(headers, false).unwrap();
            body.send_data(frame.into(), true).unwrap();
            tokio::time::timeout(Duration::from_millis(300), response)
                .await
                .is_ok()
        });
        assert!(!answered);

        let deadline = Instant::now() + Duration::from_secs(5);
        while server.seen().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let addresses: Vec<String> = server
            .seen()
            .iter()
            .map(|seen| seen.descriptors[0][1].1.clone())
            .collect();
        assert_eq!(addresses, ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn drop_closes_the_listener() {
        let server = RlsServer::start(DOMAIN, Vec::new());
        let addr = server.addr();
        std::net::TcpStream::connect(addr).unwrap();
        drop(server);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
