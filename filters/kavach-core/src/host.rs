//! The one small interface between filter logic and the proxy.
//!
//! The wasm adapter implements it over proxy-wasm host calls (always the `Result`-returning ones);
//! unit tests implement it with an in-memory mock. Filters see nothing else of the host.

use std::time::{Duration, SystemTime};

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
        let bytes = self.property(path)?;
        let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        Some(i64::from_le_bytes(arr))
    }
}

impl<H: Host + ?Sized> HostExt for H {}

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
}
