//! What the filters of one chain already asked the host during a request.
//!
//! Every host call crosses out of the VM. In a chain, several filters read the same request
//! headers (every filter reads them all, to see duplicates) and the same properties (the caller's
//! principal, the route, the cluster), and the audit filter reads back what the others published.
//! The chain serves repeats from memory:
//!
//! - request headers: cached until a filter changes a request header;
//! - properties: cached within one callback (a property such as `response.code` changes between
//!   callbacks) and dropped when a request header changes (Envoy may pick another route);
//! - filter state the chain's filters wrote (`set_property`): always written through to Envoy
//!   (access logs and other filters see it) and remembered until the callback ends. Between
//!   callbacks a filter outside the bundle may overwrite it (a residency recheck stage after a
//!   route-resolving filter does), so it is read from Envoy again.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use crate::host::{HeaderMap, Headers, Host, LogLevel, MetricKind, SharedDataError};

#[derive(Default)]
pub struct StreamCache {
    request_headers: RefCell<Option<Headers>>,
    properties: RefCell<Vec<(String, Option<Vec<u8>>)>>,
    written: RefCell<Vec<(String, Vec<u8>)>>,
}

impl StreamCache {
    /// Forgets what may have changed since the last callback.
    pub fn begin_callback(&self) {
        *self.request_headers.borrow_mut() = None;
        self.properties.borrow_mut().clear();
        self.written.borrow_mut().clear();
    }

    fn request_changed(&self) {
        *self.request_headers.borrow_mut() = None;
        self.properties.borrow_mut().clear();
    }
}

fn key(path: &[&str]) -> String {
    path.join("\u{0}")
}

/// The host, seen through the chain's cache.
pub struct CachedHost<'a> {
    pub host: &'a dyn Host,
    pub cache: &'a StreamCache,
}

impl Host for CachedHost<'_> {
    fn now(&self) -> SystemTime {
        self.host.now()
    }

    fn random(&self, buf: &mut [u8]) -> bool {
        self.host.random(buf)
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.host.log(level, message);
    }

    fn headers(&self, map: HeaderMap) -> Headers {
        if map != HeaderMap::Request {
            return self.host.headers(map);
        }
        if let Some(h) = self.cache.request_headers.borrow().as_ref() {
            return h.clone();
        }
        let h = self.host.headers(map);
        *self.cache.request_headers.borrow_mut() = Some(h.clone());
        h
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>) {
        self.host.set_header(map, name, value);
        if map == HeaderMap::Request {
            self.cache.request_changed();
        }
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) {
        self.host.add_header(map, name, value);
        if map == HeaderMap::Request {
            self.cache.request_changed();
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let k = key(path);
        if let Some((_, v)) = self.cache.written.borrow().iter().find(|(n, _)| *n == k) {
            return Some(v.clone());
        }
        if let Some((_, v)) = self.cache.properties.borrow().iter().find(|(n, _)| *n == k) {
            return v.clone();
        }
        let v = self.host.property(path);
        self.cache.properties.borrow_mut().push((k, v.clone()));
        v
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        let ok = self.host.set_property(path, value);
        let k = key(path);
        let mut written = self.cache.written.borrow_mut();
        match written.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = value.to_vec(),
            None => written.push((k, value.to_vec())),
        }
        ok
    }

    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        self.host.send_response(status, headers, body);
    }

    fn request_body(&self, start: usize, max_size: usize) -> Option<Vec<u8>> {
        self.host.request_body(start, max_size)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.host.define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, offset: i64) {
        self.host.increment_metric(id, offset);
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.host.record_metric(id, value);
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.host.shared_get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.host.shared_set(key, value, cas)
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        self.host.http_call(cluster, headers, body, timeout)
    }

    fn http_call_status(&self) -> Option<u32> {
        self.host.http_call_status()
    }

    fn set_tick_period(&self, period: Duration) {
        self.host.set_tick_period(period);
    }
}
