//! [`Deadline`]: one moving deadline for a connection's operations.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::wheel::{due_tick, register_at, Registration};
use crate::Elapsed;

/// A deadline that moves with each operation, for a connection whose reads
/// and writes each get a time limit.
///
/// [`timeout`](crate::timeout) registers a timer each time its future is
/// not ready at once and removes it when done: two locked updates of the
/// wheel per wait. A busy connection waits many times a second, and almost
/// none of those waits time out. A `Deadline` instead keeps one timer
/// registered and only moves its own due tick: [`arm`](Self::arm) at the
/// start of an operation is an atomic load and an addition, and a wait
/// that finds the timer already due no later than the operation's deadline
/// leaves it alone. When that timer fires before the operation's deadline
/// (the deadline moved on since), the wait registers again for the real
/// one, so a busy connection registers about once per timeout period
/// instead of once per wait. A later, shorter operation (a 1 s idle wait
/// after a 60 s read) registers the earlier tick.
///
/// The price: a timer may fire and wake its task with nothing expired (at
/// most once per period), and a registration may outlive the operation,
/// holding its task's waker until it fires or the `Deadline` is dropped or
/// [`disarm`](Self::disarm)ed.
///
/// ```
/// use std::future::poll_fn;
/// use std::time::Duration;
/// use pingora_timeout::Deadline;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut deadline = Deadline::new();
/// // A wait that never ends, under a 20 ms limit: it times out.
/// deadline.arm(Duration::from_millis(20));
/// poll_fn(|cx| deadline.poll_expired(cx)).await;
/// # }
/// ```
#[derive(Default)]
pub struct Deadline {
    /// The current operation's limit; `None` when none is armed.
    limit: Option<Duration>,
    /// The tick at which it times out, fixed at its first wait (an
    /// operation that never waits costs no tick arithmetic).
    due: Option<u64>,
    /// The registered timer and the tick it is due at.
    timer: Option<(u64, Registration)>,
    /// The waker the timer holds, to tell cheaply whether it must change.
    waker: Option<Waker>,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("limit", &self.limit)
            .field("due", &self.due)
            .field("timer", &self.timer.as_ref().map(|(t, _)| t))
            .finish()
    }
}

impl Deadline {
    /// A deadline with nothing armed and no timer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Start an operation that may take `limit`, counted from its first
    /// wait (as [`timeout`](crate::timeout) counts from its first poll
    /// that is not ready). Two stores: the tick is computed at that wait,
    /// from the wheel's published tick (no clock read while it runs).
    pub fn arm(&mut self, limit: Duration) {
        self.limit = Some(limit);
        self.due = None;
    }

    /// Ready once the armed operation's time is up; otherwise makes sure
    /// `cx`'s task is woken by then. Pending forever when nothing is armed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let due = match (self.due, self.limit) {
            (Some(due), _) => due,
            (None, Some(limit)) => *self.due.insert(due_tick(limit)),
            (None, None) => return Poll::Pending,
        };
        if let Some((at, timer)) = &self.timer {
            if timer.fired() {
                if *at >= due {
                    return Poll::Ready(());
                }
                // Fired for an earlier operation: register for this one.
            } else if *at <= due {
                // Fires no later than needed; it must wake this task.
                if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    timer.update(cx.waker());
                    self.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
        self.timer = None;
        match register_at(due, cx.waker()) {
            Some(timer) => {
                self.timer = Some((due, timer));
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(()),
        }
    }

    /// Run `future` as an operation under `limit` (none: no limit) on this
    /// deadline: fails with [`Elapsed`] if it is not done in time.
    pub fn timeout<F: Future>(
        &mut self,
        limit: Option<Duration>,
        future: F,
    ) -> DeadlineTimeout<'_, F> {
        let deadline = limit.map(|l| {
            self.arm(l);
            self
        });
        DeadlineTimeout {
            inner: future,
            deadline,
        }
    }

    /// Drop the registered timer (and the waker it holds), e.g. before the
    /// connection goes idle in a pool.
    pub fn disarm(&mut self) {
        self.limit = None;
        self.due = None;
        self.timer = None;
        self.waker = None;
    }
}

pin_project_lite::pin_project! {
    /// A future run under a [`Deadline`]; see [`Deadline::timeout`].
    pub struct DeadlineTimeout<'a, F> {
        #[pin]
        inner: F,
        deadline: Option<&'a mut Deadline>,
    }
}

impl<F: Future> Future for DeadlineTimeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.deadline {
            Some(d) => d.poll_expired(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}
