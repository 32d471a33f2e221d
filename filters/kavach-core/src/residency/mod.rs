//! The data-residency filter: requests carrying regulated data only reach clusters in the regions
//! their data class allows.
//!
//! - [`config`]: the policy (classes in sensitivity order, regions, actions, routes, detectors).
//! - [`classify`]: the class algebra (declared header, route floor, body detection; only ever
//!   raised) and the declared-header rules.
//! - [`filter`]: the decide stage (classify, check the destination cluster's region, deny or
//!   re-route, check the upstream's answer) and the recheck stage (check the cluster Envoy
//!   resolved after a re-route).

pub mod classify;
pub mod config;
pub mod filter;

pub use filter::ResidencyFactory;
