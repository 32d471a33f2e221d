//! An in-memory [`Host`] for unit tests.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::host::{
    edit_headers, HeaderEdit, HeaderMap, Headers, Host, HostLayer, LogLevel, MetricKind,
    SharedDataError, SharedMemory,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

#[derive(Default)]
pub struct MockHost {
    pub now: Cell<u64>,
    pub request_headers: RefCell<Headers>,
    pub response_headers: RefCell<Headers>,
    pub properties: RefCell<HashMap<String, Vec<u8>>>,
    pub reply: RefCell<Option<LocalReply>>,
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    pub metrics: RefCell<Vec<(String, MetricKind, i64)>>,
    pub shared: SharedMemory,
    pub calls: RefCell<Vec<(String, Vec<u8>)>>,
    pub call_status: Cell<Option<u32>>,
    pub random_counter: Cell<u8>,
    pub body: RefCell<Vec<u8>>,
    /// gRPC calls started: (cluster, service, method, message, timeout).
    pub grpc_calls: RefCell<Vec<GrpcCall>>,
    /// The message `grpc_response` hands out.
    pub grpc_answer: RefCell<Vec<u8>>,
    /// Makes `grpc_call` fail to start (no such cluster).
    pub grpc_refused: Cell<bool>,
    /// How often a held request was resumed.
    pub resumed: Cell<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub message: Vec<u8>,
    pub timeout: Duration,
}

impl MockHost {
    pub fn new() -> Self {
        let h = MockHost::default();
        h.now.set(1_764_115_030_000_000_000);
        h
    }

    pub fn with_request(self, pairs: &[(&str, &[u8])]) -> Self {
        *self.request_headers.borrow_mut() = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect();
        self
    }

    pub fn with_property(self, path: &[&str], value: &[u8]) -> Self {
        self.properties
            .borrow_mut()
            .insert(path.join("\u{0}"), value.to_vec());
        self
    }

    pub fn advance(&self, d: Duration) {
        self.now
            .set(self.now.get() + u64::try_from(d.as_nanos()).unwrap());
    }

    pub fn request_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.request_headers
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn metric(&self, name: &str) -> i64 {
        self.metrics
            .borrow()
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or(0, |(_, _, v)| *v)
    }

    fn map(&self, map: HeaderMap) -> &RefCell<Headers> {
        match map {
            HeaderMap::Request => &self.request_headers,
            HeaderMap::Response => &self.response_headers,
        }
    }
}

impl Host for MockHost {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.now.get())
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        for b in buf.iter_mut() {
            let n = self.random_counter.get().wrapping_add(1);
            self.random_counter.set(n);
            *b = n;
        }
        true
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn headers(&self, map: HeaderMap) -> Headers {
        self.map(map).borrow().clone()
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>) {
        edit_headers(
            &mut self.map(map).borrow_mut(),
            name,
            HeaderEdit::Set(value),
        );
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) {
        edit_headers(
            &mut self.map(map).borrow_mut(),
            name,
            HeaderEdit::Add(value),
        );
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.borrow().get(&path.join("\u{0}")).cloned()
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.properties
            .borrow_mut()
            .insert(path.join("\u{0}"), value.to_vec());
        true
    }

    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        *self.reply.borrow_mut() = Some(LocalReply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
            body: body.to_vec(),
        });
    }

    fn request_body(&self, start: usize, max_size: usize) -> Option<Vec<u8>> {
        let body = self.body.borrow();
        let end = start.saturating_add(max_size).min(body.len());
        body.get(start..end).map(<[u8]>::to_vec)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut metrics = self.metrics.borrow_mut();
        if let Some(i) = metrics.iter().position(|(n, _, _)| n == name) {
            return u32::try_from(i).ok();
        }
        metrics.push((name.to_string(), kind, 0));
        u32::try_from(metrics.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, offset: i64) {
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.2 += offset;
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        if let Some(m) = self.metrics.borrow_mut().get_mut(id as usize) {
            m.2 = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.shared.get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.shared.set(key, value, cas)
    }

    fn http_call(
        &self,
        cluster: &str,
        _headers: &[(&str, &str)],
        body: &[u8],
        _timeout: Duration,
    ) -> Option<u32> {
        let mut calls = self.calls.borrow_mut();
        calls.push((cluster.to_string(), body.to_vec()));
        u32::try_from(calls.len()).ok()
    }

    fn http_call_status(&self) -> Option<u32> {
        self.call_status.get()
    }

    fn set_tick_period(&self, _period: Duration) {}

    fn grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        if self.grpc_refused.get() {
            return None;
        }
        let mut calls = self.grpc_calls.borrow_mut();
        calls.push(GrpcCall {
            cluster: cluster.into(),
            service: service.into(),
            method: method.into(),
            message: message.to_vec(),
            timeout,
        });
        u32::try_from(calls.len()).ok().map(|n| 1000 + n)
    }

    fn grpc_response(&self, max_size: usize) -> Option<Vec<u8>> {
        let a = self.grpc_answer.borrow();
        Some(a[..a.len().min(max_size)].to_vec())
    }

    fn resume_request(&self) {
        self.resumed.set(self.resumed.get() + 1);
    }
    fn as_dyn(&self) -> &dyn Host {
        self
    }
}

/// A host that counts its calls by kind (and, for properties, by path).
pub struct CountingHost {
    pub inner: MockHost,
    pub calls: RefCell<BTreeMap<String, u64>>,
}

impl CountingHost {
    pub fn new(inner: MockHost) -> Self {
        CountingHost {
            inner,
            calls: RefCell::new(BTreeMap::new()),
        }
    }

    /// How often `what` (`"headers Request"`, `"property source.address"`) was called.
    pub fn count_of(&self, what: &str) -> u64 {
        self.calls.borrow().get(what).copied().unwrap_or(0)
    }

    fn count(&self, what: &str) {
        *self.calls.borrow_mut().entry(what.to_string()).or_default() += 1;
    }
}

impl HostLayer for CountingHost {
    fn inner(&self) -> &dyn Host {
        &self.inner
    }

    fn now(&self) -> SystemTime {
        self.count("now");
        self.inner.now()
    }
    fn random(&self, buf: &mut [u8]) -> bool {
        self.count("random");
        self.inner.random(buf)
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.count("log");
        self.inner.log(level, message)
    }
    fn headers(&self, map: HeaderMap) -> Headers {
        self.count(&format!("headers {map:?}"));
        self.inner.headers(map)
    }
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>) {
        self.count(&format!("set_header {map:?}"));
        self.inner.set_header(map, name, value)
    }
    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) {
        self.count(&format!("add_header {map:?}"));
        self.inner.add_header(map, name, value)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.count(&format!("property {}", path.join(".")));
        self.inner.property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.count(&format!("set_property {}", path.join(".")));
        self.inner.set_property(path, value)
    }
    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        self.count("send_response");
        self.inner.send_response(status, headers, body)
    }
    fn request_body(&self, start: usize, max_size: usize) -> Option<Vec<u8>> {
        self.count("request_body");
        self.inner.request_body(start, max_size)
    }
    fn increment_metric(&self, id: u32, offset: i64) {
        self.count("increment_metric");
        self.inner.increment_metric(id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.count("record_metric");
        self.inner.record_metric(id, value)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.count("shared_get");
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.count("shared_set");
        self.inner.shared_set(key, value, cas)
    }
    fn http_call(&self, c: &str, h: &[(&str, &str)], b: &[u8], t: Duration) -> Option<u32> {
        self.count("http_call");
        self.inner.http_call(c, h, b, t)
    }
    fn grpc_call(&self, c: &str, s: &str, m: &str, b: &[u8], t: Duration) -> Option<u32> {
        self.count("grpc_call");
        self.inner.grpc_call(c, s, m, b, t)
    }
}
