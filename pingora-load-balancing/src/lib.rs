//! Load balancing across backends.
//!
//! * [`Backend`]s, and the selection algorithms behind one trait,
//!   [`selection::BackendSelection`]: smooth weighted round robin, weighted
//!   random, Ketama consistent hashing, FNV hashing, Maglev, least
//!   connections, and the power of two choices over a peak-EWMA of latency.
//!   Each is built once per backend set and picks without locks.
//! * [`discovery`]: a static list (changeable at run time) or the user's
//!   own source.
//! * [`health_check`]: TCP and HTTP checks with thresholds, run in parallel.
//! * [`Backends`]: the live set (swapped atomically) and each backend's
//!   health, including outlier ejection from reported errors.
//! * [`LoadBalancer`]: all of it, run as a background service.
//!
//! ```
//! use std::collections::BTreeSet;
//! use std::sync::Arc;
//! use pingora_load_balancing::selection::{BackendIter, BackendSelection, Ketama, RoundRobin};
//! use pingora_load_balancing::Backend;
//!
//! let backends: BTreeSet<Backend> = [
//!     Backend::new("10.0.0.1:80").unwrap(),
//!     Backend::new_with_weight("10.0.0.2:80", 2).unwrap(),
//! ]
//! .into_iter()
//! .collect();
//! // Round robin ignores the key.
//! let rr = Arc::new(RoundRobin::build(&backends));
//! let first = rr.iter(b"").next().unwrap().clone();
//! // Consistent hashing: the same key, the same backend; `iter` also
//! // gives the fallbacks, in order (Pingora's `BackendIter`).
//! let ring = Arc::new(Ketama::build(&backends));
//! let mut walk = ring.iter(b"user-42");
//! let a = walk.next().unwrap().addr.clone();
//! let b = walk.next().unwrap().addr.clone();
//! assert!(walk.next().is_none());
//! assert_ne!(a, b);
//! assert_eq!(ring.iter(b"user-42").next().unwrap().addr, a);
//! # let _ = first;
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod backends;
pub mod discovery;
pub mod health_check;
mod load_balancer;
pub mod selection;

pub use backend::{fnv1a, Backend};
pub use backends::{Backends, HealthObserver, OutlierEjection};
pub use load_balancer::LoadBalancer;

/// The names most load-balancing programs need, in one
/// `use pingora_load_balancing::prelude::*`.
pub mod prelude {
    pub use crate::health_check::TcpHealthCheck;
    pub use crate::selection::RoundRobin;
    pub use crate::LoadBalancer;
}
