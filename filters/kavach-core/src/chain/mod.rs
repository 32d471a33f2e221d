//! Several filters in one VM: the bundled module's chain.
//!
//! Crossing into a wasm VM is most of a wasm filter's cost, so the bundle runs the configured
//! filters, in order, inside one VM with one entry per request callback. It composes filters only
//! through [`FilterRoot`] / [`HttpFilter`]; it knows nothing of what they do.
//!
//! Configuration: `{"chain": [{"filter": "audit", "config": {...}}, {"filter": "pci_authz", ...}]}`.
//! Each `config` is exactly what the filter's own module takes; errors are reported with their
//! place in the chain: `chain[1].config.rules[0].paths[0]: "**" may only be the last segment`.
//!
//! Request flow mirrors Envoy's filter chain: request headers go through the filters in order
//! until one stops (local reply, or waiting for the body); body data goes to every filter that has
//! seen the headers; when the stopped filter continues from its body callback, the later filters
//! get the request headers and then the same body. Response headers go through the filters that
//! saw the request, in reverse order. Every filter's log callback runs for every request.

use serde::Deserialize;

use crate::config::{self, ConfigError, FieldPath};
use crate::context::Sharing;
use crate::filter::{FilterRoot, Flow, HttpFilter};
use crate::host::Host;

/// Builds a filter root from its configuration bytes.
pub type Configure = fn(&[u8], &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError>;

/// The filters a bundle can run, by name.
pub type Registry = &'static [(&'static str, Configure)];

/// Longest chain accepted.
pub const MAX_FILTERS: usize = 16;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainJson {
    chain: Vec<LinkJson>,
    /// Also publish every decision and the audit id to filter state (for access-log fields,
    /// or a Kavach filter outside the bundle that reads them, such as a residency recheck
    /// stage). Off: the filters of the chain hand them over in memory.
    #[serde(default)]
    publish_decisions: bool,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkJson {
    filter: String,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// Configures a chain from the bundle's plugin configuration.
pub fn configure(
    registry: Registry,
    bytes: &[u8],
    host: &dyn Host,
) -> Result<Box<dyn FilterRoot>, ConfigError> {
    let json: ChainJson = config::parse(bytes)?;
    let at = FieldPath::root().field("chain");
    if json.chain.is_empty() {
        return Err(at.error("must name at least one filter"));
    }
    if json.chain.len() > MAX_FILTERS {
        return Err(at.error(format!("at most {MAX_FILTERS} filters")));
    }
    let mut roots: Vec<Box<dyn FilterRoot>> = Vec::new();
    let publish = json.publish_decisions;
    for (i, link) in json.chain.into_iter().enumerate() {
        let link_at = at.index(i);
        let Some((_, build)) = registry.iter().find(|(n, _)| *n == link.filter) else {
            let known: Vec<&str> = registry.iter().map(|(n, _)| *n).collect();
            return Err(link_at.field("filter").error(format!(
                "unknown filter {:?} (known: {})",
                link.filter,
                known.join(", ")
            )));
        };
        let bytes = match &link.config {
            Some(v) => {
                serde_json::to_vec(v).map_err(|e| link_at.field("config").error(e.to_string()))?
            }
            None => Vec::new(),
        };
        let config_at = link_at.field("config");
        let root = build(&bytes, host).map_err(|e| {
            let inner = if e.path.is_empty() {
                config_at.clone()
            } else {
                FieldPath::root().field(&format!("{}.{}", config_at, e.path))
            };
            inner.error(e.reason)
        })?;
        roots.push(root);
    }
    Ok(Box::new(ChainRoot::new(roots, publish)))
}

struct Timer {
    period_ms: u64,
    due_ms: u64,
}

pub struct ChainRoot {
    roots: Vec<Box<dyn FilterRoot>>,
    timers: Vec<Option<Timer>>,
    tick_ms: Option<u64>,
    sharing: Sharing,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl ChainRoot {
    fn new(roots: Vec<Box<dyn FilterRoot>>, publish: bool) -> Self {
        let sharing = if publish {
            Sharing::PUBLISH
        } else {
            let names: Vec<&str> = roots.iter().map(|r| r.name()).collect();
            Sharing::in_memory(&names)
        };
        let timers: Vec<Option<Timer>> = roots
            .iter()
            .map(|r| {
                r.tick_period_ms().map(|p| Timer {
                    period_ms: p.max(1),
                    due_ms: 0,
                })
            })
            .collect();
        // One host timer at the greatest common divisor of the filters' periods.
        let tick_ms = timers.iter().flatten().map(|t| t.period_ms).reduce(gcd);
        ChainRoot {
            roots,
            timers,
            tick_ms,
            sharing,
        }
    }
}

impl FilterRoot for ChainRoot {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn new_stream(&self) -> Box<dyn HttpFilter> {
        Box::new(ChainStream {
            filters: self.roots.iter().map(|r| r.new_stream()).collect(),
            passed: 0,
            stopped: false,
            headers_eos: false,
            body: None,
            trailers: false,
        })
    }

    fn tick_period_ms(&self) -> Option<u64> {
        self.tick_ms
    }

    fn sharing(&self) -> Sharing {
        self.sharing
    }

    fn on_tick(&mut self, host: &dyn Host) {
        let now = crate::time::unix_nanos(host.now()) / 1_000_000;
        for (root, timer) in self.roots.iter_mut().zip(self.timers.iter_mut()) {
            if let Some(t) = timer {
                if now >= t.due_ms {
                    t.due_ms = now.saturating_add(t.period_ms);
                    root.on_tick(host);
                }
            }
        }
    }

    fn on_http_call_response(&mut self, host: &dyn Host, token: u32) -> bool {
        self.roots
            .iter_mut()
            .any(|r| r.on_http_call_response(host, token))
    }
}

pub struct ChainStream {
    filters: Vec<Box<dyn HttpFilter>>,
    /// How many filters have passed the request headers on (Continue).
    passed: usize,
    /// A filter stopped the request headers (local reply, waiting for the body or for a call).
    stopped: bool,
    /// `end_of_stream` of the request headers.
    headers_eos: bool,
    /// The request body seen so far (buffered size, end of stream) and whether trailers came:
    /// given to the later filters when a filter holding the request for a call lets it go.
    body: Option<(usize, bool)>,
    trailers: bool,
}

impl ChainStream {
    /// Runs request headers from filter `self.passed` on; Stop at the first filter that stops.
    fn run_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Flow {
        while let Some(f) = self.filters.get_mut(self.passed) {
            if f.on_request_headers(host, end_of_stream) == Flow::Stop {
                self.stopped = true;
                return Flow::Stop;
            }
            self.passed += 1;
        }
        self.stopped = false;
        Flow::Continue
    }

    /// Filters that have seen the request headers (the passed ones and the one that stopped).
    fn seen(&self) -> usize {
        if self.stopped {
            (self.passed + 1).min(self.filters.len())
        } else {
            self.passed
        }
    }
}

impl HttpFilter for ChainStream {
    fn on_request_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Flow {
        self.passed = 0;
        self.headers_eos = end_of_stream;
        self.body = None;
        self.trailers = false;
        self.run_headers(host, end_of_stream)
    }

    fn on_request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        self.request_body(host, body_size, end_of_stream)
    }

    fn on_request_trailers(&mut self, host: &dyn Host) -> Flow {
        self.request_trailers(host)
    }

    fn on_response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Flow {
        self.response_headers(host, end_of_stream)
    }

    fn on_grpc_response(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) -> Flow {
        self.grpc_response(host, token, status, size)
    }

    fn on_log(&mut self, host: &dyn Host) {
        for f in &mut self.filters {
            f.on_log(host);
        }
    }
}

impl ChainStream {
    fn request_body(&mut self, host: &dyn Host, body_size: usize, end_of_stream: bool) -> Flow {
        self.body = Some((body_size, end_of_stream));
        self.deliver_body(host, 0, body_size, end_of_stream)
    }

    /// Body data for the filters from `from` on: those that let the headers through see it as
    /// it comes; the one holding the headers decides, and when it continues the later filters
    /// get the request headers and then the same body.
    fn deliver_body(
        &mut self,
        host: &dyn Host,
        from: usize,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        for f in self.filters.iter_mut().take(self.passed).skip(from) {
            if f.on_request_body(host, body_size, end_of_stream) == Flow::Stop {
                return Flow::Stop;
            }
        }
        while self.stopped {
            let Some(f) = self.filters.get_mut(self.passed) else {
                break;
            };
            if f.on_request_body(host, body_size, end_of_stream) == Flow::Stop {
                return Flow::Stop;
            }
            // The filter that held the headers continues: the rest get headers, then the body.
            self.passed += 1;
            self.stopped = false;
            let before = self.passed;
            if self.run_headers(host, false) == Flow::Stop {
                // Filters between `before` and the new stop passed the headers: give them the body.
                for f in self.filters.iter_mut().take(self.passed).skip(before) {
                    if f.on_request_body(host, body_size, end_of_stream) == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                continue;
            }
            for f in self.filters.iter_mut().skip(before) {
                if f.on_request_body(host, body_size, end_of_stream) == Flow::Stop {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    }

    fn request_trailers(&mut self, host: &dyn Host) -> Flow {
        self.trailers = true;
        self.deliver_trailers(host, 0)
    }

    /// Trailers end the body: like the body, they go to every filter from `from` that let the
    /// headers through and to the filter holding them; when that one continues, the later
    /// filters get the request headers and then the trailers.
    fn deliver_trailers(&mut self, host: &dyn Host, from: usize) -> Flow {
        for f in self.filters.iter_mut().take(self.passed).skip(from) {
            if f.on_request_trailers(host) == Flow::Stop {
                return Flow::Stop;
            }
        }
        while self.stopped {
            let Some(f) = self.filters.get_mut(self.passed) else {
                break;
            };
            if f.on_request_trailers(host) == Flow::Stop {
                return Flow::Stop;
            }
            self.passed += 1;
            self.stopped = false;
            let before = self.passed;
            let held = self.run_headers(host, false) == Flow::Stop;
            for f in self.filters.iter_mut().take(self.passed).skip(before) {
                if f.on_request_trailers(host) == Flow::Stop {
                    return Flow::Stop;
                }
            }
            if !held {
                break;
            }
        }
        Flow::Continue
    }

    /// A gRPC answer: it belongs to the filter holding the request headers. When that filter
    /// lets the request go, the later filters get the headers, then whatever body and trailers
    /// arrived meanwhile. Stop when no filter holds the request (nothing to resume).
    fn grpc_response(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) -> Flow {
        if !self.stopped {
            return Flow::Stop;
        }
        let Some(f) = self.filters.get_mut(self.passed) else {
            return Flow::Stop;
        };
        if f.on_grpc_response(host, token, status, size) == Flow::Stop {
            return Flow::Stop;
        }
        self.passed += 1;
        self.stopped = false;
        let from = self.passed;
        let held = self.run_headers(host, self.headers_eos) == Flow::Stop;
        if let Some((body_size, end_of_stream)) = self.body {
            if self.deliver_body(host, from, body_size, end_of_stream) == Flow::Stop {
                return Flow::Stop;
            }
        } else if held {
            return Flow::Stop;
        }
        if self.trailers {
            return self.deliver_trailers(host, from);
        }
        Flow::Continue
    }

    fn response_headers(&mut self, host: &dyn Host, end_of_stream: bool) -> Flow {
        let seen = self.seen();
        for f in self.filters.iter_mut().take(seen).rev() {
            if f.on_response_headers(host, end_of_stream) == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests;
