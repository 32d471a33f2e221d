//! PCI authorization filter module; the logic is `kavach_core::pci`.

proxy_wasm::main! {{
    kavach_host::start::<kavach_core::pci::PciAuthzFactory>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
}}
