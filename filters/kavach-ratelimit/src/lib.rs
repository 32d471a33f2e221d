//! Rate-limit filter module; the logic is `kavach_core::ratelimit`.

proxy_wasm::main! {{
    kavach_host::start::<kavach_core::ratelimit::RateLimitFactory>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
}}
