//! Audit filter module; the logic is `kavach_core::audit`.

proxy_wasm::main! {{
    kavach_host::start::<kavach_core::audit::AuditFactory>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
}}
