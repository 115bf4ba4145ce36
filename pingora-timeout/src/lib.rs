//! Timeouts for I/O deadlines that cost far less than tokio's.
//!
//! Almost every socket operation in a proxy runs under a deadline, and
//! almost none of those deadlines fire: the read completes first and the
//! timer is thrown away. So the cost that matters is that of a timer made
//! and dropped, and this crate makes it small in two ways:
//!
//! 1. **Lazy.** [`timeout`] polls the wrapped future first and registers a
//!    timer only if that future is not ready yet. A read that finds data in
//!    the socket buffer costs no timer at all.
//! 2. **Coarse and shared.** Deadlines are rounded up to a 10 ms tick and
//!    every timer due on the same tick shares one bucket of a timer wheel,
//!    driven by one background thread. Registering is a thread-local lookup,
//!    a reference count and one uncontended lock; no clock is read.
//!
//! The price: a timer fires up to about three ticks (30 ms) after its
//! deadline, and not before it (unless the wheel's thread is kept off the
//! CPU for more than a tick, when it may fire early by that delay). That suits I/O deadlines measured in seconds;
//! it does not suit precise scheduling.
//!
//! [`tokio_timer`] has the same API over `tokio::time`, for code that needs
//! precise deadlines or that wants to compare the two.
//!
//! The wheel needs no runtime: its futures work under any executor.
//!
//! ```
//! use std::time::Duration;
//! use pingora_timeout::{sleep, timeout};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The future finishes first: no timer is ever registered.
//! let v = timeout(Duration::from_secs(1), async { 7 }).await;
//! assert_eq!(v, Ok(7));
//!
//! // The future never finishes: the timeout fires.
//! let r = timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
//! assert!(r.is_err());
//!
//! sleep(Duration::from_millis(10)).await;
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;

mod deadline;
mod fast;
pub mod tokio_timer;
mod wheel;

pub use deadline::{Deadline, DeadlineTimeout};
pub use fast::{sleep, timeout, Sleep, Timeout};

/// The names Pingora uses for the wheel-backed functions, so code written
/// against Pingora ports unchanged.
pub mod fast_timeout {
    pub use crate::fast::{sleep as fast_sleep, timeout as fast_timeout, Sleep, Timeout};
}

/// The error of a timeout whose deadline passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// The tick of the shared timer wheel: deadlines are rounded up to it.
pub const RESOLUTION: std::time::Duration = std::time::Duration::from_millis(wheel::TICK_MS);

#[cfg(test)]
mod tests;
