//! Root and HTTP contexts that drive a kavach-core filter root.

use std::sync::OnceLock;
use std::time::Duration;

use kavach_core::config::ConfigError;
use kavach_core::context::ContextStream;
use kavach_core::filter::{FilterFactory, FilterRoot, Flow, HttpFilter};
use kavach_core::host::{Host, LogLevel};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};

use crate::ProxyHost;

/// Builds a configured filter root from plugin configuration bytes.
pub type Configure = fn(&[u8], &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError>;

/// Registers a single filter as this module's root context.
pub fn start<F: FilterFactory>(module: &'static str, version: &'static str) {
    start_with(module, version, F::configure);
}

/// Registers a root context that configures itself with `configure` (the bundle passes its
/// chain builder here).
pub fn start_with(module: &'static str, version: &'static str, configure: Configure) {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    // The SDK takes a plain fn for new root contexts, so the module's settings live in a static.
    let _ = MODULE.set(Module {
        name: module,
        version,
        configure,
    });
    proxy_wasm::set_root_context(|_| match MODULE.get() {
        Some(m) => Box::new(Root {
            module: m.name,
            version: m.version,
            configure: m.configure,
            inner: None,
        }),
        None => Box::new(Root {
            module: "kavach",
            version: "?",
            configure: |_, _| {
                Err(ConfigError {
                    path: String::new(),
                    reason: "module registered no filter".into(),
                })
            },
            inner: None,
        }),
    });
}

struct Module {
    name: &'static str,
    version: &'static str,
    configure: Configure,
}

static MODULE: OnceLock<Module> = OnceLock::new();

struct Root {
    module: &'static str,
    version: &'static str,
    configure: Configure,
    inner: Option<Box<dyn FilterRoot>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        if let Some(inner) = self.inner.as_mut() {
            inner.on_http_call_response(&ProxyHost, token);
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        ProxyHost.log(
            LogLevel::Info,
            &format!("{} {} starting", self.module, self.version),
        );
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        match (self.configure)(&bytes, &ProxyHost) {
            Ok(root) => {
                if let Some(ms) = root.tick_period_ms() {
                    ProxyHost.set_tick_period(Duration::from_millis(ms));
                }
                ProxyHost.log(
                    LogLevel::Info,
                    &format!(
                        "{} {}: configured {}",
                        self.module,
                        self.version,
                        root.name()
                    ),
                );
                self.inner = Some(root);
                true
            }
            Err(e) => {
                // Envoy prints this as `wasm log <root_id> <vm_id>: ...` and refuses the plugin.
                ProxyHost.log(
                    LogLevel::Error,
                    &format!("{}: invalid configuration: {e}", self.module),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.on_tick(&ProxyHost);
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let inner = self.inner.as_ref().map(|r| ContextStream::new(r.as_ref()));
        Some(Box::new(Stream { inner }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    /// None only if a request arrives at an unconfigured root: refused, never passed through.
    inner: Option<ContextStream>,
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Stop => Action::Pause,
    }
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        if let Some(f) = self.inner.as_mut() {
            if f.on_grpc_response(&ProxyHost, token, status, size) == Flow::Continue {
                ProxyHost.resume_request();
            }
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        match self.inner.as_mut() {
            Some(f) => action(f.on_request_headers(&ProxyHost, end_of_stream)),
            None => {
                ProxyHost.send_response(500, &[], b"filter not configured\n");
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.inner.as_mut() {
            Some(f) => action(f.on_request_body(&ProxyHost, body_size, end_of_stream)),
            None => Action::Pause,
        }
    }

    fn on_http_request_trailers(&mut self, _n: usize) -> Action {
        match self.inner.as_mut() {
            Some(f) => action(f.on_request_trailers(&ProxyHost)),
            None => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        match self.inner.as_mut() {
            Some(f) => action(f.on_response_headers(&ProxyHost, end_of_stream)),
            None => Action::Continue,
        }
    }

    fn on_log(&mut self) {
        if let Some(f) = self.inner.as_mut() {
            f.on_log(&ProxyHost);
        }
    }
}
