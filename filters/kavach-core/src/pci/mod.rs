//! The PCI authorization filter (deny-by-default access to the cardholder data environment).
//!
//! A request reaches the CDE only when a rule of the policy allows it: the caller's SPIFFE ID
//! (from the verified mTLS peer certificate, or from XFCC behind a trusted proxy), the method,
//! the canonical path, header conditions, an optional validity window and an optional
//! HMAC token bound to the caller. Everything else is denied (403, or 400 for an ambiguous
//! path) with a JSON body quoting the policy version and audit id, or only recorded in shadow
//! mode. Every request gets exactly one decision under `kavach.decision.pci_authz`.
//!
//! - [`config`]: the policy and its validation.
//! - [`matcher`]: principal, method, path-glob, header and time-window conditions.
//! - [`identity`]: the caller's principal (peer certificate, XFCC).
//! - [`token`]: minting and verifying CDE access tokens.
//! - [`evaluate`]: the verdict for one request, host-independent.
//! - [`filter`]: the factory, root and stream over [`crate::host::Host`].

pub mod config;
pub mod evaluate;
pub mod filter;
pub mod identity;
pub mod matcher;
pub mod token;

pub use crate::path_canon::{canonicalize, DotSegments, PathError};
pub use config::PciConfig;
pub use filter::{PciAuthzFactory, PciAuthzRoot, SHADOW_HEADER};
pub use token::{mint_token, verify_token, TokenError};
