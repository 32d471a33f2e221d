//! Runs kavach-core filters inside Envoy through proxy-wasm.
//!
//! This crate only translates: [`ProxyHost`] implements the core's `Host` trait over the SDK's
//! `Result`-returning host calls (the SDK's convenience trait methods unwrap host results and
//! its String getters panic on invalid UTF-8; neither is used), and [`start`] registers a root
//! context that configures one filter root and hands each request to a stream of it.
//!
//! A filter module is three lines:
//!
//! ```ignore
//! proxy_wasm::main! {{
//!     kavach_host::start::<kavach_core::audit::AuditFactory>(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
//! }}
//! ```

mod context;
mod proxy_host;

pub use context::{start, start_with, Configure};
pub use proxy_host::ProxyHost;
