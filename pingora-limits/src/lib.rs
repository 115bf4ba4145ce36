//! Lock-free estimators of how often things happen, for rate limiting:
//! Pingora's `pingora-limits`, in the same shape.
//!
//! - [`estimator::Estimator`]: a count-min sketch. Counts per key in fixed
//!   memory (`hashes × slots` atomic counters, whatever the number of
//!   keys); an estimate is never below the true count, and above it only
//!   by what other keys that share all of its counters add.
//! - [`rate::Rate`]: events per key over an interval, from two sketches
//!   that take turns (the interval being counted and the one before).
//! - [`inflight::Inflight`]: how many of something are under way per key;
//!   the count goes down when the [`inflight::Guard`] drops.
//!
//! Keys are hashed with a per-instance random seed (foldhash, hashbrown's
//! default hasher), so a client cannot choose keys that collide with
//! another's counters; one hash per key gives all of a sketch's rows.
//!
//! ```
//! use std::time::Duration;
//! use pingora_limits::rate::Rate;
//!
//! // Requests per client over one-second intervals.
//! let rate = Rate::new(Duration::from_secs(1));
//! let client = "192.0.2.7";
//! for _ in 0..3 {
//!     rate.observe(&client, 1);
//! }
//! // 3 so far in this interval (an estimate: never fewer than the truth).
//! assert!(rate.observe(&client, 0) >= 3);
//! // The rate of the last whole interval: none has ended yet.
//! assert_eq!(rate.rate(&client), 0.0);
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod estimator;
pub mod inflight;
pub mod rate;
