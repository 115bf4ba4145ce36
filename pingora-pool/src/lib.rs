//! A generic, keyed connection pool.
//!
//! This crate will hold the pool that pingora-core's connectors use to keep
//! upstream connections for reuse: per-key idle lists, a global LRU cap, an
//! idle timeout, a watch on each idle connection so a remote close is
//! noticed before anyone picks it, and a lock-free fast path. It knows
//! nothing of HTTP or TLS.
//!
//! The pool is built by the HTTP/2-and-connectors issue; today the crate
//! holds only this description, so that the workspace has its final shape.
#![warn(missing_docs)]
