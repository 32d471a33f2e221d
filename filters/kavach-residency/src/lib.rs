//! Data-residency filter module; the logic is `kavach_core::residency`.

proxy_wasm::main! {{
    kavach_host::start::<kavach_core::residency::ResidencyFactory>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
}}
