//! Replicated storage for pbxha: DRBD configuration, control, status and promotion rules
//! ([`drbd`]), the filesystem on the replicated device ([`filesystem`]), and moving PBX
//! directories onto it and back ([`migrate`]).

pub mod drbd;
pub mod error;
pub mod filesystem;
pub mod holders;
pub mod migrate;
pub mod mysql;

pub use error::{Error, Result};
