//! The native `kavach` tool's commands, as a library so they are tested directly.

pub mod oci;
pub mod validate;
