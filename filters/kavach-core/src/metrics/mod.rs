//! The bounded-metrics filter: request metrics whose label cardinality has a hard ceiling.
//!
//! Envoy never frees a metric a wasm filter defines, and proxy-wasm metrics have names only, so
//! every new label value is a new metric for the life of the process. This filter gives every
//! metric a series budget counted across all workers, sends label combinations beyond it to
//! one `(other)` series, and keeps label values short, safe and low-cardinality.
//!
//! - [`config`]: the plugin configuration and its validation (budgets against a global ceiling).
//! - [`label`]: label values from untrusted bytes: safe characters, placeholders.
//! - [`path_template`]: `/users/8812/orders?x=1` to `/users/:id/orders`.
//! - [`naming`]: series names (`metric.label.value...`) and the Envoy tag regexes.
//! - [`admission`]: the per-process series budget in shared data, with compare-and-swap.
//! - [`filter`]: the per-request logic over the [`crate::host::Host`] interface.

pub mod admission;
pub mod config;
pub mod filter;
pub mod label;
pub mod naming;
pub mod path_template;

pub use filter::MetricsFactory;
