//! The request headers, read from the host once per callback for all the filters of a chain.
//!
//! Within one callback only the filters of this VM run, and they change the request headers only
//! through this host, so the copy stays exact: any change through it drops the copy, and the
//! next filter that asks reads the headers again. Nothing else is kept, and nothing outlives the
//! callback (filters outside the VM may change anything between callbacks).

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use crate::host::{HeaderMap, Headers, Host, LogLevel, MetricKind, SharedDataError};

pub struct CallbackHost<'a> {
    inner: &'a dyn Host,
    request: RefCell<Option<Headers>>,
}

impl<'a> CallbackHost<'a> {
    pub fn new(inner: &'a dyn Host) -> Self {
        CallbackHost {
            inner,
            request: RefCell::new(None),
        }
    }

    fn changed(&self, map: HeaderMap) {
        if map == HeaderMap::Request {
            self.request.borrow_mut().take();
        }
    }
}

impl Host for CallbackHost<'_> {
    fn now(&self) -> SystemTime {
        self.inner.now()
    }
    fn random(&self, buf: &mut [u8]) -> bool {
        self.inner.random(buf)
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.inner.log(level, message)
    }
    fn headers(&self, map: HeaderMap) -> Headers {
        if map != HeaderMap::Request {
            return self.inner.headers(map);
        }
        if let Some(h) = self.request.borrow().as_ref() {
            return h.clone();
        }
        let h = self.inner.headers(map);
        *self.request.borrow_mut() = Some(h.clone());
        h
    }
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>) {
        self.changed(map);
        self.inner.set_header(map, name, value)
    }
    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) {
        self.changed(map);
        self.inner.add_header(map, name, value)
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.inner.property(path)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        self.inner.set_property(path, value)
    }
    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        self.changed(HeaderMap::Request);
        self.inner.send_response(status, headers, body)
    }
    fn request_body(&self, start: usize, max_size: usize) -> Option<Vec<u8>> {
        self.inner.request_body(start, max_size)
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.inner.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, offset: i64) {
        self.inner.increment_metric(id, offset)
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.inner.record_metric(id, value)
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.inner.shared_set(key, value, cas)
    }
    fn http_call(&self, c: &str, h: &[(&str, &str)], b: &[u8], t: Duration) -> Option<u32> {
        self.inner.http_call(c, h, b, t)
    }
    fn http_call_status(&self) -> Option<u32> {
        self.inner.http_call_status()
    }
    fn set_tick_period(&self, period: Duration) {
        self.inner.set_tick_period(period)
    }
    fn grpc_call(&self, c: &str, s: &str, m: &str, b: &[u8], t: Duration) -> Option<u32> {
        self.inner.grpc_call(c, s, m, b, t)
    }
    fn grpc_response(&self, max_size: usize) -> Option<Vec<u8>> {
        self.inner.grpc_response(max_size)
    }
    fn resume_request(&self) {
        self.inner.resume_request()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CountingHost, MockHost};

    /// How many reads of the request headers reach the host while `f` runs.
    fn reads_through(f: impl Fn(&CallbackHost)) -> u64 {
        let counting = CountingHost::new(MockHost::new().with_request(&[(":path", b"/a")]));
        f(&CallbackHost::new(&counting));
        counting.count_of("headers Request")
    }

    #[test]
    fn the_request_headers_are_read_once_until_something_changes_them() {
        assert_eq!(
            reads_through(|h| {
                for _ in 0..5 {
                    assert_eq!(h.headers(HeaderMap::Request).len(), 1);
                }
            }),
            1
        );
        assert_eq!(
            reads_through(|h| {
                h.headers(HeaderMap::Request);
                h.set_header(HeaderMap::Request, "x-a", Some(b"1"));
                assert_eq!(
                    h.headers(HeaderMap::Request).len(),
                    2,
                    "sees its own change"
                );
                h.add_header(HeaderMap::Request, "x-a", b"2");
                assert_eq!(h.headers(HeaderMap::Request).len(), 3);
                h.set_header(HeaderMap::Request, "x-a", None);
                assert_eq!(h.headers(HeaderMap::Request).len(), 1);
                h.send_response(403, &[], b"");
                h.headers(HeaderMap::Request);
            }),
            5
        );
        // Response headers, and changes to them, are not the request's.
        assert_eq!(
            reads_through(|h| {
                h.headers(HeaderMap::Request);
                h.set_header(HeaderMap::Response, "x-b", Some(b"1"));
                h.headers(HeaderMap::Response);
                h.headers(HeaderMap::Request);
            }),
            1
        );
    }
}
