//! Harness for black-box tests of the Kavach filters in the real Envoy binary.
//!
//! - [`echo`]: a real HTTP/1.1 upstream that answers with what it received, as JSON.
//! - [`client`]: a raw HTTP/1.1 client (plain or mTLS) that can send what real clients send:
//!   duplicate headers, invalid UTF-8, huge values.
//! - [`envoy`]: renders an Envoy config for a test, starts Envoy, waits for `/ready`, stops it on
//!   drop and prints its log when the test failed.
//! - [`pki`]: a test CA and SPIFFE workload certificates made at run time.
//! - [`registry`]: a real OCI registry on loopback, and skopeo.
//! - [`load`]: many requests from many threads, counted by outcome.
//! - [`prometheus`]: parses `/stats/prometheus`; the `stats_config` for the metrics filter.
//! - [`rls`]: a rate-limit service speaking Envoy's RLS v3 gRPC API over h2c, with fixed
//!   windows; also one that accepts calls and never answers.

// Test support: when Envoy cannot start or a tool is missing, the test using the harness must
// fail with the reason, so the harness panics like a test does.
#![allow(clippy::panic)]

pub mod client;
pub mod echo;
pub mod envoy;
pub mod load;
pub mod pki;
pub mod prometheus;
pub mod registry;
pub mod rls;

pub use client::{Connection, Request, Response, Streaming};
pub use echo::{Behaviour, EchoServer, Received};
pub use envoy::{Envoy, EnvoySpec, FilterSpec, Module};
