//! The benchmark's floor: what any Rust proxy-wasm filter costs before it does any work. It reads
//! one request header and sets one, through the same host calls the Kavach filters use.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

struct Root;
impl Context for Root {}
impl RootContext for Root {
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop;
impl Context for Noop {}
impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let seen = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-bench")
            .ok()
            .flatten()
            .is_some();
        let value: &[u8] = if seen { b"1" } else { b"0" };
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "x-noop", Some(value));
        Action::Continue
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(Root));
}}
