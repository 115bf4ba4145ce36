//! `timeout` and `sleep` on the shared timer wheel.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::wheel::{register, Registration};
use crate::Elapsed;

pin_project_lite::pin_project! {
    /// A future that fails with [`Elapsed`] if `inner` takes longer than the
    /// duration given to [`timeout`]. The timer starts at the first poll
    /// that finds `inner` not ready.
    pub struct Timeout<F> {
        #[pin]
        inner: F,
        duration: Duration,
        timer: Option<Registration>,
    }
}

/// Run `future` with a deadline `duration` after its first poll, on the
/// shared timer wheel.
///
/// No timer is registered if `future` is ready on its first poll. The
/// deadline is rounded up to the wheel's tick ([`crate::RESOLUTION`]).
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        inner: future,
        duration,
        timer: None,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.timer {
            Some(t) if t.fired() => Poll::Ready(Err(Elapsed)),
            Some(t) => {
                t.update(cx.waker());
                Poll::Pending
            }
            None if this.duration.is_zero() => Poll::Ready(Err(Elapsed)),
            None => match register(*this.duration, cx.waker()) {
                Some(t) => {
                    *this.timer = Some(t);
                    Poll::Pending
                }
                None => Poll::Ready(Err(Elapsed)),
            },
        }
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep").finish_non_exhaustive()
    }
}

/// A future that completes once its duration has passed; see [`sleep`].
pub struct Sleep {
    duration: Duration,
    timer: Option<Registration>,
    done: bool,
}

/// Wait for `duration` after the first poll, on the shared timer wheel.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration,
        timer: None,
        done: duration.is_zero(),
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        match &self.timer {
            Some(t) if t.fired() => {
                self.done = true;
                self.timer = None;
                Poll::Ready(())
            }
            Some(t) => {
                t.update(cx.waker());
                Poll::Pending
            }
            None => match register(self.duration, cx.waker()) {
                Some(t) => {
                    self.timer = Some(t);
                    Poll::Pending
                }
                None => {
                    self.done = true;
                    Poll::Ready(())
                }
            },
        }
    }
}
