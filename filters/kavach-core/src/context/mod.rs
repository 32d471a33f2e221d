//! One request's context inside the VM: each fact fetched from Envoy at most once, and what the
//! filters of one VM tell each other handed over in memory.
//!
//! Every question a filter asks Envoy is a host call out of the VM, and most answers come back
//! in through the VM's allocator. The driver of a stream (a module's adapter, or the bundle's
//! chain) keeps one [`RequestContext`] per request and wraps the host in a [`ContextHost`] for
//! each callback. Through it:
//!
//! - a [`Fact`] is asked once and kept as long as it holds ([`Lasts`]): the peer identity and
//!   the source address for the whole request; the route and cluster for one callback and
//!   only until a filter of this VM changes the request headers (Envoy then re-resolves the
//!   route); everything else for one callback (filters outside the VM may act in between);
//! - the request headers are read once per callback and shared by reference; a change a
//!   filter of this VM makes to them is made to the copy as well (as Envoy makes it), so
//!   they are not read again; the clock is read once per callback;
//! - decisions and the audit id of filters in this VM stay in memory as typed values when the
//!   context does not publish them ([`Sharing`]); published ones go through filter state
//!   exactly as between separate modules (`docs/decisions.md`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::SystemTime;

use crate::decision::{self, Decision, Published, FILTERS};
use crate::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use crate::host::{
    edit_headers, raw, Fact, HeaderEdit, HeaderMap, Headers, Host, HostLayer, Lasts,
};

/// What the filters of a VM hand each other in memory instead of through filter state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Bit `i` set: the decision of `decision::FILTERS[i]` stays in memory.
    decisions: u8,
    /// The audit id stays in memory (the audit filter runs in this VM and publishing is off).
    audit_id: bool,
}

impl Sharing {
    /// Everything through filter state: separate modules, or a chain that publishes.
    pub const PUBLISH: Sharing = Sharing {
        decisions: 0,
        audit_id: false,
    };

    /// In memory for the named filters of this VM (a chain that does not publish).
    pub fn in_memory(filters: &[&str]) -> Self {
        let mut decisions = 0u8;
        for (i, f) in FILTERS.iter().enumerate() {
            if filters.contains(f) {
                decisions |= 1 << i;
            }
        }
        Sharing {
            decisions,
            audit_id: filters.contains(&crate::audit::AuditFactory::NAME),
        }
    }

    fn slot(self, filter: &str) -> Option<usize> {
        let i = FILTERS.iter().position(|f| *f == filter)?;
        (self.decisions & (1 << i) != 0).then_some(i)
    }
}

type Answer = Option<Option<Rc<[u8]>>>;

/// What one request's filters know; owned by the stream's driver, kept across callbacks.
#[derive(Debug, Default)]
pub struct RequestContext {
    sharing: Sharing,
    facts: RefCell<[Answer; Fact::COUNT]>,
    headers: RefCell<Option<Rc<Headers>>>,
    now: Cell<Option<SystemTime>>,
    audit_id: RefCell<Option<Rc<str>>>,
    decisions: RefCell<[Option<Decision>; FILTERS.len()]>,
}

impl RequestContext {
    pub fn new(sharing: Sharing) -> Self {
        RequestContext {
            sharing,
            ..RequestContext::default()
        }
    }

    /// The host for one callback: what may have changed since the last one is forgotten.
    pub fn host<'a>(&'a self, inner: &'a dyn Host) -> ContextHost<'a> {
        self.forget(|l| l != Lasts::Request);
        self.headers.borrow_mut().take();
        self.now.set(None);
        ContextHost { inner, cx: self }
    }

    fn forget(&self, which: impl Fn(Lasts) -> bool) {
        let mut facts = self.facts.borrow_mut();
        for (i, slot) in facts.iter_mut().enumerate() {
            if Fact::ALL.get(i).is_some_and(|f| which(f.lasts())) {
                *slot = None;
            }
        }
    }

    /// A filter of this VM changes the request headers: the copy gets the same change (as
    /// Envoy makes it: a set replaces the first value and drops the others, a removal drops
    /// every value, an add appends), and the route Envoy will resolve again is forgotten.
    fn edit_headers(&self, name: &str, edit: HeaderEdit<'_>) {
        self.forget(|l| l == Lasts::Route);
        let mut cached = self.headers.borrow_mut();
        let Some(headers) = cached.as_mut() else {
            return;
        };
        edit_headers(Rc::make_mut(headers), name, edit);
    }

    /// A local reply replaced the request: nothing of it is kept.
    fn replied(&self) {
        self.headers.borrow_mut().take();
        self.forget(|l| l == Lasts::Route);
    }
}

/// The host as the filters of one VM see it during one callback.
pub struct ContextHost<'a> {
    inner: &'a dyn Host,
    cx: &'a RequestContext,
}

impl HostLayer for ContextHost<'_> {
    fn inner(&self) -> &dyn Host {
        self.inner
    }

    fn now(&self) -> SystemTime {
        if let Some(t) = self.cx.now.get() {
            return t;
        }
        let t = self.inner.now();
        self.cx.now.set(Some(t));
        t
    }

    fn headers(&self, map: HeaderMap) -> Headers {
        match map {
            HeaderMap::Request => Host::request_headers(self).as_ref().clone(),
            HeaderMap::Response => self.inner.headers(map),
        }
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&[u8]>) {
        if map == HeaderMap::Request {
            self.cx.edit_headers(name, HeaderEdit::Set(value));
        }
        self.inner.set_header(map, name, value)
    }

    fn add_header(&self, map: HeaderMap, name: &str, value: &[u8]) {
        if map == HeaderMap::Request {
            self.cx.edit_headers(name, HeaderEdit::Add(value));
        }
        self.inner.add_header(map, name, value)
    }

    fn send_response(&self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        self.cx.replied();
        self.inner.send_response(status, headers, body)
    }

    fn fact(&self, fact: Fact) -> Option<Rc<[u8]>> {
        if let Some(Some(answer)) = self.cx.facts.borrow().get(fact.index()) {
            return answer.clone();
        }
        let answer = raw::fact(self.inner, fact);
        if let Some(slot) = self.cx.facts.borrow_mut().get_mut(fact.index()) {
            *slot = Some(answer.clone());
        }
        answer
    }

    fn request_headers(&self) -> Rc<Headers> {
        if let Some(h) = self.cx.headers.borrow().as_ref() {
            return Rc::clone(h);
        }
        let h = raw::request_headers(self.inner);
        *self.cx.headers.borrow_mut() = Some(Rc::clone(&h));
        h
    }

    fn audit_id(&self) -> Option<Rc<str>> {
        if let Some(id) = self.cx.audit_id.borrow().as_ref() {
            return Some(Rc::clone(id));
        }
        if self.cx.sharing.audit_id {
            // The audit filter runs here and has not given one (yet): nothing to ask Envoy.
            return None;
        }
        self.inner.audit_id()
    }

    fn set_audit_id(&self, id: &str) {
        *self.cx.audit_id.borrow_mut() = Some(Rc::from(id));
        if !self.cx.sharing.audit_id {
            self.inner.set_audit_id(id);
        }
    }

    fn publish_decision(&self, d: Decision) {
        match self.cx.sharing.slot(&d.filter) {
            Some(i) => {
                if let Some(slot) = self.cx.decisions.borrow_mut().get_mut(i) {
                    *slot = Some(d);
                }
            }
            None => decision::publish(self, &d),
        }
    }

    fn decision(&self, filter: &str, take: bool) -> Option<Published> {
        let Some(i) = self.cx.sharing.slot(filter) else {
            return decision::read(self, filter);
        };
        let mut decisions = self.cx.decisions.borrow_mut();
        let slot = decisions.get_mut(i)?;
        let d = if take { slot.take() } else { slot.clone() };
        d.map(Published::Decision)
    }
}

/// A filter's stream with its request context: what a module's adapter (and any test that
/// wants Envoy's view) drives. Every callback sees the host through the context.
pub struct ContextStream {
    cx: RequestContext,
    filter: Box<dyn HttpFilter>,
}

impl ContextStream {
    pub fn new(root: &dyn FilterRoot) -> Self {
        ContextStream {
            cx: RequestContext::new(root.sharing()),
            filter: root.new_stream(),
        }
    }
}

impl HttpFilter for ContextStream {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Flow {
        self.filter
            .on_request_headers(&self.cx.host(host), end_of_stream)
    }
    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        self.filter
            .on_request_body(&self.cx.host(host), body_size, end_of_stream)
    }
    fn on_request_trailers(&mut self, host: &dyn Host) -> Flow {
        self.filter.on_request_trailers(&self.cx.host(host))
    }
    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Flow {
        self.filter
            .on_response_headers(&self.cx.host(host), end_of_stream)
    }
    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) -> Flow {
        self.filter
            .on_grpc_response(&self.cx.host(host), token, status, size)
    }
    fn on_log(&mut self, host: &dyn Host) {
        self.filter.on_log(&self.cx.host(host))
    }
}

#[cfg(test)]
mod tests;
