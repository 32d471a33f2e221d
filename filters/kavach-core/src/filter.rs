//! How a filter plugs into a host: a configured root per VM and one stream per request.
//!
//! A single-filter module wraps one [`FilterRoot`]; the bundled module runs several in the
//! configured order. Neither knows what any filter does.

use crate::config::ConfigError;
use crate::context::Sharing;
use crate::host::Host;

/// What the host should do after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Pass the request on to the next filter.
    Continue,
    /// Stop here: a local reply was sent, or the filter waits for more data (body).
    Stop,
}

/// Per-request filter logic.
pub trait HttpFilter {
    fn on_request_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }

    /// Called with the size of the request body buffered so far.
    fn on_request_body(
        &mut self,
        _host: &dyn Host,
        _body_size: usize,
        _end_of_stream: bool,
    ) -> Flow {
        Flow::Continue
    }

    /// Request trailers arrived: the body ended without an end-of-stream body callback. A filter
    /// holding the request for its body must decide here, or Envoy passes the request on.
    fn on_request_trailers(&mut self, _host: &dyn Host) -> Flow {
        Flow::Continue
    }

    fn on_response_headers(&mut self, _host: &dyn Host, _end_of_stream: bool) -> Flow {
        Flow::Continue
    }

    /// The answer to a gRPC call this stream started while holding the request headers:
    /// `status` is the gRPC status (0 = OK; the message is then [`Host::grpc_response`] of
    /// `size` bytes). Continue lets the held request go on; Stop keeps it held (or a local reply
    /// was sent). Filters that make no calls keep the default: an answer that is not theirs
    /// resumes nothing.
    fn on_grpc_response(
        &mut self,
        _host: &dyn Host,
        _token: u32,
        _status: u32,
        _size: usize,
    ) -> Flow {
        Flow::Stop
    }

    /// The stream is complete (also after a local reply); last chance to record it.
    fn on_log(&mut self, _host: &dyn Host) {}
}

/// Per-VM state of a configured filter.
pub trait FilterRoot {
    /// The filter's name as used in config sections, logs and decisions (`audit`, `pci_authz`).
    fn name(&self) -> &'static str;

    fn new_stream(&self) -> Box<dyn HttpFilter>;

    /// Periodic work; the adapter calls it at [`FilterRoot::tick_period_ms`].
    fn on_tick(&mut self, _host: &dyn Host) {}

    /// How often [`FilterRoot::on_tick`] should run; None for never.
    fn tick_period_ms(&self) -> Option<u64> {
        None
    }

    /// What this root's filters keep in memory instead of publishing to filter state (the
    /// bundle's chain, unless told to publish); a single filter publishes everything.
    fn sharing(&self) -> Sharing {
        Sharing::PUBLISH
    }

    /// A response to an HTTP call this root started. Returns false when the token is not its own.
    fn on_http_call_response(&mut self, _host: &dyn Host, _token: u32) -> bool {
        false
    }
}

/// Builds a filter's root from its plugin configuration.
pub trait FilterFactory {
    /// The filter's name (`audit`), also its section name in the bundle's configuration.
    const NAME: &'static str;

    fn configure(config: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError>;
}
