//! Utilities that do not belong to one layer.

pub mod certs;
