//! Upstreams: the peers a server connects to.

pub mod peer;
