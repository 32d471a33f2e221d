//! The audit filter: unforgeable audit headers and a hash-chained record of every request.
//!
//! - [`config`]: the plugin configuration and its validation.
//! - [`record`]: the record, its chaining and its wire form (one JSON line).
//! - [`verify`]: checks a stream of records for edits, drops, reordering and insertions.
//! - [`collector`]: the bounded, retrying batch sender to an HTTP collector.
//! - [`filter`]: the per-request logic over the [`crate::host::Host`] interface.

pub mod collector;
pub mod config;
pub mod filter;
pub mod record;
pub mod verify;

pub use filter::AuditFactory;

/// Filter-state name under which the finished record is published for access logs:
/// `%FILTER_STATE(wasm.kavach.audit.record:PLAIN)%`.
pub const RECORD_PROPERTY: &str = "kavach.audit.record";
