//! The bundled module: every Kavach filter in one VM, run as the chain its configuration names
//! (`kavach_core::chain`). Each filter keeps its own module too; this one saves the per-filter
//! crossing into the VM when several run together.

use kavach_core::chain::{self, Registry};
use kavach_core::config::ConfigError;
use kavach_core::filter::{FilterFactory, FilterRoot};
use kavach_core::host::Host;

/// The filters the bundle can run, by their section name.
const FILTERS: Registry = &[
    (
        kavach_core::audit::AuditFactory::NAME,
        kavach_core::audit::AuditFactory::configure,
    ),
    (
        kavach_core::pci::PciAuthzFactory::NAME,
        kavach_core::pci::PciAuthzFactory::configure,
    ),
];

fn configure(bytes: &[u8], host: &dyn Host) -> Result<Box<dyn FilterRoot>, ConfigError> {
    chain::configure(FILTERS, bytes, host)
}

proxy_wasm::main! {{
    kavach_host::start_with(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), configure);
}}
