//! Spare header boxes, a few per thread.
//!
//! A proxy boxes two headers per request (the request it sends upstream
//! and the response it reads back) and is done with both when the
//! exchange ends. Rather than free each box and allocate the next, the
//! code that is done with a header gives its box back
//! ([`RequestHeader::recycle`](crate::RequestHeader::recycle)): what it
//! holds is dropped at once (so the buffers it shared can be reused), and
//! the empty allocation waits for the next
//! [`boxed`](crate::RequestHeader::boxed) on the same thread. A thread
//! keeps up to [`KEPT`] of each, enough for the exchanges it has in
//! flight at once on a busy connection mix. (Measured:
//! filling the box with an empty header instead costs more than the
//! allocation it saves.)

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::thread::LocalKey;

/// How many empty boxes of each kind a thread keeps at most.
pub(crate) const KEPT: usize = 64;

/// One thread's spare (empty) boxes for a `T`. (Boxed in the vector on
/// purpose: each is handed out as the allocation of a `Box<T>`.)
#[allow(clippy::vec_box)]
pub(crate) type Spares<T> = RefCell<Vec<Box<MaybeUninit<T>>>>;

/// Where one thread keeps its [`Spares`].
pub(crate) type SpareBox<T> = LocalKey<Spares<T>>;

/// `value` in one of this thread's spare boxes, or in a new one.
pub(crate) fn boxed<T: 'static>(spare: &'static SpareBox<T>, value: T) -> Box<T> {
    match spare.try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop())) {
        Ok(Some(empty)) => {
            let p = Box::into_raw(empty).cast::<T>();
            // SAFETY: `p` is the allocation of a `Box<MaybeUninit<T>>`,
            // so it is valid and aligned for a `T` (same layout) and owned
            // here; writing a `T` initialises it, and the new box owns it.
            unsafe {
                p.write(value);
                Box::from_raw(p)
            }
        }
        _ => Box::new(value),
    }
}

/// Drop what `b` holds now and keep its allocation among this thread's
/// spares (past [`KEPT`], it is freed).
pub(crate) fn recycle<T: 'static>(spare: &'static SpareBox<T>, b: Box<T>) {
    let p = Box::into_raw(b);
    // SAFETY: `p` comes from a `Box<T>` just now: valid, initialised and
    // owned here. The value is dropped exactly once, and the allocation is
    // then owned again as uninitialised memory of the same layout. (If the
    // drop panics, the allocation leaks; nothing is freed twice.)
    let empty = unsafe {
        std::ptr::drop_in_place(p);
        Box::from_raw(p.cast::<MaybeUninit<T>>())
    };
    // On a thread being torn down the allocation is simply freed.
    let _ = spare.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < KEPT {
                if s.capacity() == 0 {
                    s.reserve_exact(KEPT);
                }
                s.push(empty);
            }
        }
    });
}
