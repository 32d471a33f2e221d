//! The bundled module: every Kavach filter in one VM, run as the chain its configuration names
//! (`kavach_core::chain`). Each filter keeps its own module too; this one saves the per-filter
//! crossing into the VM when several run together.

use kavach_core::chain;
use kavach_core::config::ConfigError;
use kavach_core::filter::FilterRoot;
use kavach_core::host::Host;

fn configure(bytes: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError> {
    chain::configure(kavach_core::filters::ALL, bytes, host)
}

proxy_wasm::main! {{
    kavach_host::start_with(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), configure);
}}
