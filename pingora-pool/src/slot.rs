//! One idle connection's place in the pool, and the state machine that
//! decides who may touch it. Built on the `sync` shim below, so that the
//! same code runs under loom (`RUSTFLAGS="--cfg loom"`), whose model
//! checker tries every interleaving of `take`, `peek` and `refill` (the
//! tests at the end of this file).

use std::time::Instant;

use sync::{spin_loop, AtomicU8, Cell, Ordering};

/// The atomics and the cell, from std; from loom under `--cfg loom`.
#[cfg(not(loom))]
mod sync {
    pub(super) use std::hint::spin_loop;
    pub(super) use std::sync::atomic::{AtomicU8, Ordering};

    /// `std::cell::UnsafeCell` with loom's access shape: the pointer is
    /// only lent to a closure.
    #[derive(Debug)]
    pub(super) struct Cell<T>(std::cell::UnsafeCell<T>);

    impl<T> Cell<T> {
        pub(super) fn new(v: T) -> Self {
            Cell(std::cell::UnsafeCell::new(v))
        }

        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
mod sync {
    pub(super) use loom::cell::UnsafeCell as Cell;
    pub(super) use loom::hint::spin_loop;
    pub(super) use loom::sync::atomic::{AtomicU8, Ordering};
}

/// Slot states.
const IDLE: u8 = 0;
/// A sweep is looking at the connection (a few instructions).
const PEEKING: u8 = 1;
const TAKEN: u8 = 2;

/// One idle connection's place in the pool. The state word decides who
/// may touch the connection: whoever moves it from `IDLE` to `TAKEN` owns
/// it; a sweep borrows it only between `IDLE` → `PEEKING` → `IDLE`.
#[derive(Debug)]
pub(crate) struct Slot<S> {
    state: AtomicU8,
    conn: Cell<Option<S>>,
    /// When its idle time is up, if it has a limit.
    deadline: Option<Instant>,
}

// SAFETY: `conn` is only accessed by the thread that won the state
// transition (see `take` and `peek`), or through `&mut self`, so sharing
// a `Slot` is as safe as sending an `S`.
unsafe impl<S: Send> Send for Slot<S> {}
// SAFETY: as for `Send` above.
unsafe impl<S: Send> Sync for Slot<S> {}

impl<S> Slot<S> {
    pub(crate) fn new(conn: S, deadline: Option<Instant>) -> Self {
        Slot {
            state: AtomicU8::new(IDLE),
            conn: Cell::new(Some(conn)),
            deadline,
        }
    }

    /// Whether its idle time is up (`now` is read once, when first needed).
    pub(crate) fn expired(&self, now: &mut Option<Instant>) -> bool {
        self.deadline
            .is_some_and(|d| d <= *now.get_or_insert_with(Instant::now))
    }

    /// Take the connection if it is still idle. Lock-free, except that it
    /// waits out a sweep's peek in progress (a few instructions).
    pub(crate) fn take(&self) -> Option<S> {
        loop {
            match self
                .state
                .compare_exchange(IDLE, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: we moved the state to TAKEN: nobody else
                    // touches `conn` any more.
                    return self.conn.with_mut(|c| unsafe { (*c).take() });
                }
                Err(TAKEN) => return None,
                Err(_) => spin_loop(),
            }
        }
    }

    /// Look at the idle connection, if it is still idle.
    pub(crate) fn peek<R>(&self, f: impl FnOnce(&S) -> R) -> Option<R> {
        if self
            .state
            .compare_exchange(IDLE, PEEKING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        struct Back<'a>(&'a AtomicU8);
        impl Drop for Back<'_> {
            fn drop(&mut self) {
                self.0.store(IDLE, Ordering::Release);
            }
        }
        let _back = Back(&self.state);
        // SAFETY: PEEKING keeps `take` away until `_back` resets the state.
        self.conn.with(|c| unsafe { (*c).as_ref().map(f) })
    }

    /// Whether the connection was taken (the slot is out of use).
    pub(crate) fn is_taken(&self) -> bool {
        self.state.load(Ordering::Acquire) == TAKEN
    }

    /// Make a retired slot hold `conn` again (its allocation reused).
    pub(crate) fn refill(&mut self, conn: S, deadline: Option<Instant>) {
        // SAFETY: `&mut self`: no other reference to the slot exists.
        self.conn.with_mut(|c| unsafe { *c = Some(conn) });
        self.deadline = deadline;
        self.state.store(IDLE, Ordering::Release);
    }
}

/// The model checks: every interleaving of the operations that race in
/// the pool (two `get`s after one slot, a `sweep` peeking while a `get`
/// takes, a slot retired and refilled). Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p pingora-pool --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    /// A connection that counts its drops.
    struct Conn(Arc<AtomicUsize>);

    impl Drop for Conn {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn slot() -> (Arc<Slot<Conn>>, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        (Arc::new(Slot::new(Conn(drops.clone()), None)), drops)
    }

    #[test]
    fn two_takers_one_wins() {
        loom::model(|| {
            let (s, drops) = slot();
            let other = {
                let s = s.clone();
                thread::spawn(move || s.take().is_some())
            };
            let mine = s.take().is_some();
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs, "exactly one take gets the connection");
            assert!(s.is_taken());
            // The winner's connection was dropped with its `Option`.
            assert_eq!(drops.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_peek_never_loses_the_connection_to_a_take() {
        loom::model(|| {
            let (s, drops) = slot();
            let sweeper = {
                let s = s.clone();
                thread::spawn(move || s.peek(|c| c.0.load(Ordering::SeqCst)))
            };
            // A take waits out the peek instead of failing.
            let taken = s.take();
            assert!(taken.is_some());
            // The peek saw the connection alive, or did not see it at all.
            assert!(matches!(sweeper.join().unwrap(), None | Some(0)));
            assert_eq!(drops.load(Ordering::SeqCst), 0);
            drop(taken);
            assert_eq!(drops.load(Ordering::SeqCst), 1);
            assert!(s.peek(|_| ()).is_none(), "nothing to peek at once taken");
        });
    }

    #[test]
    fn a_refilled_slot_is_taken_again_once() {
        loom::model(|| {
            let (s, drops) = slot();
            let mut s = Arc::try_unwrap(s).ok().unwrap();
            assert!(s.take().is_some());
            s.refill(Conn(drops.clone()), None);
            let s = Arc::new(s);
            let other = {
                let s = s.clone();
                thread::spawn(move || s.take().is_some())
            };
            let peeked = s.peek(|_| ()).is_some();
            let theirs = other.join().unwrap();
            assert!(theirs, "the only take gets the refilled connection");
            let _ = peeked;
            assert_eq!(drops.load(Ordering::SeqCst), 2);
        });
    }
}
