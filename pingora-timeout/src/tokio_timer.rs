//! The same API as the crate root, backed by `tokio::time`.
//!
//! Precise to the millisecond, but each timeout reads the clock and
//! registers with the runtime's timer as it is created. Needs a tokio
//! runtime with the time driver enabled.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::Elapsed;

pin_project_lite::pin_project! {
    /// A future that fails with [`Elapsed`] if `inner` takes longer than the
    /// duration given to [`timeout`].
    pub struct Timeout<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
    }
}

/// Run `future` with a deadline `duration` from now, on tokio's timer.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        inner: tokio::time::timeout(duration, future),
    }
}

/// Wait for `duration`, on tokio's timer.
pub fn sleep(duration: Duration) -> tokio::time::Sleep {
    tokio::time::sleep(duration)
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map(|r| r.map_err(|_| Elapsed))
    }
}
