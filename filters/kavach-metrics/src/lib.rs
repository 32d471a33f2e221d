//! Bounded-metrics filter module; the logic is `kavach_core::metrics`.

proxy_wasm::main! {{
    kavach_host::start::<kavach_core::metrics::MetricsFactory>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
}}
