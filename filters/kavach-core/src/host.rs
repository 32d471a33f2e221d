//! The one small interface between filter logic and the proxy.
//!
//! The wasm adapter implements it over proxy-wasm host calls (always the `Result`-returning ones);
//! unit tests implement it with an in-memory mock. Filters see nothing else of the host.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use crate::decision::{self, Decision, Published, AUDIT_ID_PROPERTY};

/// Which header map a call refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Kinds of metric the host can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Why a shared-data write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedDataError {
    /// Another worker changed the value since it was read (compare-and-swap lost).
    CasMismatch,
    /// Any other host failure.
    Failed,
}

/// An HTTP header list as the host gives it: names as text, values as raw bytes (a value may be
/// any bytes a client sent, including invalid UTF-8), every duplicate kept in order.
pub type Headers = Vec<(String, Vec<u8>)>;

/// A change to a header map.
#[derive(Debug, Clone, Copy)]
pub enum HeaderEdit<'a> {
    /// Replace every value of the header (None: remove it).
    Set(Option<&'a [u8]>),
    /// Append one more value.
    Add(&'a [u8]),
}

/// Makes `edit` to `headers` as Envoy makes it to a header map: names are stored in lower
/// case and compared without case; a set replaces the first value in place and drops the
/// others (or adds the header at the end); a removal drops every value; an add appends.
pub fn edit_headers(headers: &mut Headers, name: &str, edit: HeaderEdit<'_>) {
    match edit {
        HeaderEdit::Add(v) => headers.push((name.to_ascii_lowercase(), v.to_vec())),
        HeaderEdit::Set(value) => {
            let mut kept = false;
            headers.retain_mut(|(n, v)| {
                if !n.eq_ignore_ascii_case(name) {
                    return true;
                }
                match value {
                    Some(new) if !kept => {
                        kept = true;
                        *v = new.to_vec();
                        true
                    }
                    _ => false,
                }
            });
            if let (Some(v), false) = (value, kept) {
                headers.push((name.to_ascii_lowercase(), v.to_vec()));
            }
        }
    }
}

/// Facts about the current request that several filters need, each read from one proxy
/// property. How long an answer stays true decides how long a request context may keep it
/// ([`crate::context`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// First URI SAN of the verified mTLS peer certificate: fixed for the connection.
    PeerPrincipal,
    /// The client address Envoy derived (XFF trusted hops): fixed for the request.
    SourceAddress,
    /// The route Envoy resolved: changes when a filter changes the request headers.
    RouteName,
    /// That route's cluster: changes with the route.
    ClusterName,
    /// The response status (8 little-endian bytes), once there is a response.
    ResponseCode,
}

/// How long the answer to a [`Fact`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasts {
    /// The whole request.
    Request,
    /// One callback, and only until a filter changes the request headers (Envoy then
    /// re-resolves the route).
    Route,
    /// One callback.
    Callback,
}

impl Fact {
    pub const COUNT: usize = 5;
    /// Every fact, by [`Fact::index`].
    pub const ALL: [Fact; Fact::COUNT] = [
        Fact::PeerPrincipal,
        Fact::SourceAddress,
        Fact::RouteName,
        Fact::ClusterName,
        Fact::ResponseCode,
    ];

    pub fn path(self) -> &'static [&'static str] {
        match self {
            Fact::PeerPrincipal => &["connection", "uri_san_peer_certificate"],
            Fact::SourceAddress => &["source", "address"],
            Fact::RouteName => &["xds", "route_name"],
            Fact::ClusterName => &["xds", "cluster_name"],
            Fact::ResponseCode => &["response", "code"],
        }
    }

    pub fn lasts(self) -> Lasts {
        match self {
            Fact::PeerPrincipal | Fact::SourceAddress => Lasts::Request,
            Fact::RouteName | Fact::ClusterName => Lasts::Route,
            Fact::ResponseCode => Lasts::Callback,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

pub trait Host {
    // ---- time, randomness, logging ----
    /// The proxy's wall clock.
    fn now(&self) -> SystemTime;
    /// Fills `buf` with random bytes from the host (WASI `random_get` in the VM). Returns false
    /// when no randomness is available.
    fn random(&self, buf: &mut [u8]) -> bool;
    fn log(&self, level: LogLevel, message: &str);

    // ---- headers of the current request ----
    /// Every header pair of `map`, duplicates included. Empty when unavailable.
    fn headers(&self, map: HeaderMap) -> Headers;
    /// Replaces every value of `name` with `value`, or removes the header when `value` is None.
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>);
    /// Appends one more value of `name`.
    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]);

    // ---- properties and filter state ----
    /// An Envoy property (`["connection", "uri_san_peer_certificate"]`), or filter state written by
    /// [`Host::set_property`] under the same name.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Writes per-request filter state, visible to later filters and to access logs as
    /// `%FILTER_STATE(wasm.<name>:PLAIN)%`.
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool;

    // ---- local replies and bodies ----
    /// Answers the request from the proxy without reaching the upstream.
    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]);
    /// A slice of the buffered request body.
    fn request_body(&self, start: usize, max_size: usize) -> Option<Vec<u8>>;

    // ---- metrics ----
    /// Defines (or finds) a metric; None when the host refused it.
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, offset: i64);
    fn record_metric(&self, id: u32, value: u64);

    // ---- state shared by every worker of this Envoy ----
    /// The value of `key` and its compare-and-swap token.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError>;

    // ---- out-of-band calls (root context only) ----
    /// Starts an HTTP call to `cluster`; returns its token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32>;
    /// Status of the response being delivered to `on_http_call_response`; None when the call
    /// failed without a response (reset, timeout, no healthy upstream).
    fn http_call_status(&self) -> Option<u32>;
    fn set_tick_period(&self, period: Duration);

    // ---- gRPC calls made while a request waits (stream context) ----
    /// Starts a unary gRPC call to `service`/`method` on `cluster` (an HTTP/2 cluster of this
    /// Envoy); returns its token. The answer arrives in [`crate::filter::HttpFilter::on_grpc_response`].
    fn grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Option<u32>;
    /// The message of the gRPC answer being delivered (at most `max_size` bytes).
    fn grpc_response(&self, max_size: usize) -> Option<Vec<u8>>;
    /// Lets a request that a filter held (for a call) go on through Envoy's filter chain.
    fn resume_request(&self);

    // ---- the request context: what filters tell each other about the current request ----
    // These defaults ask the proxy every time and exchange everything through filter state,
    // as separate modules must. A context host (`crate::context`) asks once per request (or per
    // callback, for what can change) and keeps what the filters of one VM hand each other in
    // memory.

    /// A fact about the current request; None when the proxy has no (non-empty) answer.
    fn fact(&self, fact: Fact) -> Option<Rc<[u8]>> {
        raw::fact(self.as_dyn(), fact)
    }

    /// The request headers, shared rather than copied where the host can.
    fn request_headers(&self) -> Rc<Headers> {
        raw::request_headers(self.as_dyn())
    }

    /// The audit id the audit filter gave this request.
    fn audit_id(&self) -> Option<Rc<str>> {
        raw::audit_id(self.as_dyn())
    }

    /// Gives this request its audit id (the audit filter).
    fn set_audit_id(&self, id: &str) {
        raw::set_audit_id(self.as_dyn(), id)
    }

    /// Hands a filter's decision on this request to the audit filter (and to access logs,
    /// where it is published).
    fn publish_decision(&self, decision: Decision) {
        decision::publish(self.as_dyn(), &decision);
    }

    /// The decision `filter` made on this request; `take` when the caller is its last reader
    /// (the audit record).
    fn decision(&self, filter: &str, _take: bool) -> Option<Published> {
        decision::read(self.as_dyn(), filter)
    }

    /// `self` as a trait object (for the defaults above).
    fn as_dyn(&self) -> &dyn Host;
}

/// A host that wraps another: every call goes to [`HostLayer::inner`] unless the layer
/// overrides it. The request context, the chain's host and the test hosts that count or
/// interleave calls are layers.
pub trait HostLayer {
    fn inner(&self) -> &dyn Host;

    fn now(&self) -> SystemTime {
        self.inner().now()
    }
    fn random(&self, buf: &mut [u8]) -> bool {
        self.inner().random(buf)
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.inner().log(level, message)
    }
    fn headers(&self, map: HeaderMap) -> Headers {
        self.inner().headers(map)
    }
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>) {
        self.inner().set_header(map, name, value)
    }
    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) {
        self.inner().add_header(map, name, value)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.inner().property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.inner().set_property(path, value)
    }
    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        self.inner().send_response(status, headers, body)
    }
    fn request_body(&self, start: usize, max_size: usize) -> Option<Vec<u8>> {
        self.inner().request_body(start, max_size)
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.inner().define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, offset: i64) {
        self.inner().increment_metric(id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.inner().record_metric(id, value)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner().shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.inner().shared_set(key, value, cas)
    }
    fn http_call(&self, c: &str, h: &[(&str, &str)], b: &[u8], t: Duration) -> Option<u32> {
        self.inner().http_call(c, h, b, t)
    }
    fn http_call_status(&self) -> Option<u32> {
        self.inner().http_call_status()
    }
    fn set_tick_period(&self, period: Duration) {
        self.inner().set_tick_period(period)
    }
    fn grpc_call(&self, c: &str, s: &str, m: &str, b: &[u8], t: Duration) -> Option<u32> {
        self.inner().grpc_call(c, s, m, b, t)
    }
    fn grpc_response(&self, max_size: usize) -> Option<Vec<u8>> {
        self.inner().grpc_response(max_size)
    }
    fn resume_request(&self) {
        self.inner().resume_request()
    }
    // The request context, by default answered through this layer's own calls (so a layer
    // that counts or interleaves calls sees them); a context layer overrides these.
    fn fact(&self, fact: Fact) -> Option<Rc<[u8]>>
    where
        Self: Host + Sized,
    {
        raw::fact(self, fact)
    }
    fn request_headers(&self) -> Rc<Headers>
    where
        Self: Host + Sized,
    {
        raw::request_headers(self)
    }
    fn audit_id(&self) -> Option<Rc<str>>
    where
        Self: Host + Sized,
    {
        raw::audit_id(self)
    }
    fn set_audit_id(&self, id: &str)
    where
        Self: Host + Sized,
    {
        raw::set_audit_id(self, id)
    }
    fn publish_decision(&self, d: Decision)
    where
        Self: Host + Sized,
    {
        decision::publish(self, &d)
    }
    fn decision(&self, filter: &str, _take: bool) -> Option<Published>
    where
        Self: Host + Sized,
    {
        decision::read(self, filter)
    }
}

impl<T: HostLayer> Host for T {
    fn now(&self) -> SystemTime {
        HostLayer::now(self)
    }
    fn random(&self, buf: &mut [u8]) -> bool {
        HostLayer::random(self, buf)
    }
    fn log(&self, level: LogLevel, message: &str) {
        HostLayer::log(self, level, message)
    }
    fn headers(&self, map: HeaderMap) -> Headers {
        HostLayer::headers(self, map)
    }
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>) {
        HostLayer::set_header(self, map, name, value)
    }
    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) {
        HostLayer::add_header(self, map, name, value)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        HostLayer::property(self, path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        HostLayer::set_property(self, path, value)
    }
    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        HostLayer::send_response(self, status, headers, body)
    }
    fn request_body(&self, start: usize, max_size: usize) -> Option<Vec<u8>> {
        HostLayer::request_body(self, start, max_size)
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        HostLayer::define_metric(self, kind, name)
    }
    fn increment_metric(&self, id: u32, offset: i64) {
        HostLayer::increment_metric(self, id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) {
        HostLayer::record_metric(self, id, value)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        HostLayer::shared_get(self, key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        HostLayer::shared_set(self, key, value, cas)
    }
    fn http_call(&self, c: &str, h: &[(&str, &str)], b: &[u8], t: Duration) -> Option<u32> {
        HostLayer::http_call(self, c, h, b, t)
    }
    fn http_call_status(&self) -> Option<u32> {
        HostLayer::http_call_status(self)
    }
    fn set_tick_period(&self, period: Duration) {
        HostLayer::set_tick_period(self, period)
    }
    fn grpc_call(&self, c: &str, s: &str, m: &str, b: &[u8], t: Duration) -> Option<u32> {
        HostLayer::grpc_call(self, c, s, m, b, t)
    }
    fn grpc_response(&self, max_size: usize) -> Option<Vec<u8>> {
        HostLayer::grpc_response(self, max_size)
    }
    fn resume_request(&self) {
        HostLayer::resume_request(self)
    }
    fn fact(&self, fact: Fact) -> Option<Rc<[u8]>> {
        HostLayer::fact(self, fact)
    }
    fn request_headers(&self) -> Rc<Headers> {
        HostLayer::request_headers(self)
    }
    fn audit_id(&self) -> Option<Rc<str>> {
        HostLayer::audit_id(self)
    }
    fn set_audit_id(&self, id: &str) {
        HostLayer::set_audit_id(self, id)
    }
    fn publish_decision(&self, decision: Decision) {
        HostLayer::publish_decision(self, decision)
    }
    fn decision(&self, filter: &str, take: bool) -> Option<Published> {
        HostLayer::decision(self, filter, take)
    }
    fn as_dyn(&self) -> &dyn Host {
        self
    }
}

/// The request context answered by asking the proxy every time (the [`Host`] defaults).
pub mod raw {
    use super::*;

    pub fn fact(host: &dyn Host, fact: Fact) -> Option<Rc<[u8]>> {
        host.property(fact.path())
            .filter(|v| !v.is_empty())
            .map(Rc::from)
    }

    pub fn request_headers(host: &dyn Host) -> Rc<Headers> {
        Rc::new(host.headers(HeaderMap::Request))
    }

    pub fn audit_id(host: &dyn Host) -> Option<Rc<str>> {
        host.property(&[AUDIT_ID_PROPERTY])
            .filter(|v| !v.is_empty())
            .map(|v| Rc::from(String::from_utf8_lossy(&v)))
    }

    pub fn set_audit_id(host: &dyn Host, id: &str) {
        host.set_property(&[AUDIT_ID_PROPERTY], id.as_bytes());
    }
}

/// A counter defined at configure time (None when the host refused it).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counter(pub Option<u32>);

impl Counter {
    pub fn define(host: &dyn Host, name: &str) -> Self {
        Counter(host.define_metric(MetricKind::Counter, name))
    }

    pub fn bump(self, host: &dyn Host) {
        self.add(host, 1);
    }

    pub fn add(self, host: &dyn Host, by: u64) {
        if let (Some(id), true) = (self.0, by > 0) {
            host.increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }
}

/// Helpers over [`Host`] that every filter uses.
pub trait HostExt: Host {
    /// A property as UTF-8 text (lossy), None when absent or empty.
    fn property_string(&self, path: &[&str]) -> Option<String> {
        self.property(path)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// A numeric property (Envoy serialises integers as 8 little-endian bytes).
    fn property_i64(&self, path: &[&str]) -> Option<i64> {
        le_i64(&self.property(path)?)
    }

    /// A numeric fact ([`Fact::ResponseCode`]).
    fn fact_i64(&self, fact: Fact) -> Option<i64> {
        le_i64(&self.fact(fact)?)
    }
}

impl<H: Host + ?Sized> HostExt for H {}

fn le_i64(bytes: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(i64::from_le_bytes(arr))
}

/// Envoy's shared data, in memory: values with a compare-and-swap token, as proxy-wasm defines
/// them. A write with a token succeeds only while the token is current; a write to a key that
/// does not exist yet ignores the token (as Envoy does). For hosts outside Envoy.
#[derive(Debug, Default)]
pub struct SharedMemory {
    pub entries: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedMemory {
    pub fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.entries.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    pub fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        let mut entries = self.entries.borrow_mut();
        let current = entries.get(key).map(|(_, c)| *c);
        if let (Some(expected), Some(now)) = (cas, current) {
            if expected != 0 && expected != now {
                return Err(SharedDataError::CasMismatch);
            }
        }
        entries.insert(
            key.to_string(),
            (value.to_vec(), current.unwrap_or(0).wrapping_add(1)),
        );
        Ok(())
    }
}

/// A host for checking configuration outside Envoy (the `kavach validate` command runs each
/// filter's configure step against it): it answers no property, holds no request, and keeps
/// shared data in memory (with compare-and-swap) so configure steps that prepare shared state
/// behave as in Envoy.
#[derive(Debug, Default)]
pub struct NullHost {
    shared: SharedMemory,
}

impl Host for NullHost {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
    }
    fn random(&self, buf: &mut [u8]) -> bool {
        buf.fill(0);
        true
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
    fn headers(&self, _map: HeaderMap) -> Headers {
        Vec::new()
    }
    fn set_header(&self, _map: HeaderMap, _name: &str, _value: Option<&[u8]>) {}
    fn add_header(&self, _map: HeaderMap, _name: &str, _value: &[u8]) {}
    fn property(&self, _path: &[&str]) -> Option<Vec<u8>> {
        None
    }
    fn set_property(&self, _path: &[&str], _value: &[u8]) -> bool {
        false
    }
    fn send_response(&self, _status: u32, _headers: &[(&str, &[u8])], _body: &[u8]) {}
    fn request_body(&self, _start: usize, _max_size: usize) -> Option<Vec<u8>> {
        None
    }
    fn define_metric(&self, _kind: MetricKind, _name: &str) -> Option<u32> {
        None
    }
    fn increment_metric(&self, _id: u32, _offset: i64) {}
    fn record_metric(&self, _id: u32, _value: u64) {}
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.shared.get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.shared.set(key, value, cas)
    }
    fn http_call(&self, _c: &str, _h: &[(&str, &str)], _b: &[u8], _t: Duration) -> Option<u32> {
        None
    }
    fn http_call_status(&self) -> Option<u32> {
        None
    }
    fn set_tick_period(&self, _period: Duration) {}
    fn grpc_call(&self, _c: &str, _s: &str, _m: &str, _b: &[u8], _t: Duration) -> Option<u32> {
        None
    }
    fn grpc_response(&self, _max_size: usize) -> Option<Vec<u8>> {
        None
    }
    fn resume_request(&self) {}
    fn as_dyn(&self) -> &dyn Host {
        self
    }
}
