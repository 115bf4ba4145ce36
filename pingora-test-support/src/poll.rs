//! Waiting for a condition, with a deadline: a test that waits fails with
//! what it waited for, rather than hanging until the harness gives up.

use std::time::{Duration, Instant};

/// Between two checks: short, since most waits are for a local process or
/// task that is nearly there.
pub(crate) const POLL: Duration = Duration::from_millis(5);

/// Call `f` until it returns true, sleeping briefly between calls; panics
/// with `what` once `limit` has passed.
///
/// # Panics
///
/// If `f` has not returned true by `limit`; the message names `what`.
pub fn poll_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`poll_until`] in a tokio task: between calls it yields and sleeps
/// without blocking the runtime, so that the tasks it waits for (on a
/// current-thread runtime, on this very thread) can run. Panics with
/// `what` once `limit` has passed.
///
/// # Panics
///
/// If `f` has not returned true by `limit`; the message names `what`.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_returns_once_true() {
        let mut calls = 0;
        poll_until(Duration::from_secs(10), "the third call", || {
            calls += 1;
            calls == 3
        });
        assert_eq!(calls, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible")]
    fn poll_until_fails_with_what_it_waited_for() {
        poll_until(Duration::from_millis(20), "the impossible", || false);
    }

    #[tokio::test]
    async fn eventually_lets_other_tasks_run() {
        // A current-thread runtime: the flag is set only if `eventually`
        // gives the spawned task its turn.
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let set = flag.clone();
        tokio::spawn(async move { set.store(true, std::sync::atomic::Ordering::Relaxed) });
        eventually(Duration::from_secs(10), "the task to run", || {
            flag.load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible")]
    async fn eventually_fails_with_what_it_waited_for() {
        eventually(Duration::from_millis(20), "the impossible", || false).await;
    }
}
