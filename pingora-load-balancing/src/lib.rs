//! Load balancing across backends.
//!
//! This crate will hold backends and their discovery (static, DNS, the
//! user's own), selection algorithms (round robin, weighted, consistent
//! hashing, Maglev, least connections, peak-EWMA), active health checks,
//! outlier ejection, and `LoadBalancer`, which runs as a background service.
//!
//! It arrives with the load-balancing issue; today the crate holds only this
//! description, so that the workspace has its final shape.
#![warn(missing_docs)]
