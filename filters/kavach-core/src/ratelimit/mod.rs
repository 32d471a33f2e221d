//! The rate-limit filter: exact token buckets per client, shared by every Envoy worker, in a
//! table whose size is fixed by configuration.
//!
//! - [`config`]: the plugin configuration and its validation.
//! - [`bucket`]: token-bucket arithmetic (exact, in integers).
//! - [`key`]: client addresses (`x-forwarded-for` through trusted hops, IPv6 prefixes, mapped
//!   IPv4) and header values in canonical form; the bytes of a bucket key.
//! - [`matcher`]: which requests a rule applies to (routes, canonical path globs, methods).
//! - [`table`]: the bucket table in Envoy's shared data, updated with compare-and-swap.
//! - [`fields`]: `retry-after`, the IETF `RateLimit-Policy` / `RateLimit` fields, the legacy
//!   `x-ratelimit-*` trio and the 429 body.
//! - [`rls`]: the messages of Envoy's rate-limit service API (RLS v3) for `global` rules.
//! - [`filter`]: the per-request logic over the [`crate::host::Host`] interface.

pub mod bucket;
pub mod config;
pub mod fields;
pub mod filter;
pub mod key;
pub mod matcher;
pub mod rls;
pub mod table;

pub use filter::RateLimitFactory;
