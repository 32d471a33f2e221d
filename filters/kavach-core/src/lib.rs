//! Host-independent logic of the Kavach filters.
//!
//! Nothing here depends on proxy-wasm: every filter talks to Envoy through the small [`host::Host`]
//! trait, so the policy code is unit-tested natively (and compiled to wasm32 in CI) with a mock
//! host, and the same code runs inside one filter module or in the bundled chain.

pub mod audit;
pub mod chain;
pub mod config;
pub mod context;
pub mod decision;
pub mod detect;
pub mod filter;
pub mod filters;
pub mod headers;
pub mod host;
pub mod metrics;
pub mod path_canon;
pub mod path_glob;
pub mod pci;
pub mod ratelimit;
pub mod residency;
pub mod text;
pub mod time;

#[cfg(test)]
pub mod testing;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod profile_tests;
