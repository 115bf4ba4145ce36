use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::task::Waker;

use super::*;

/// A fake connection: "closed" when its flag is set, waking the watcher.
struct Conn {
    id: u32,
    closed: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Conn {
    fn new(id: u32) -> (Conn, Arc<AtomicBool>, Arc<Mutex<Option<Waker>>>) {
        let closed = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(Mutex::new(None));
        (
            Conn {
                id,
                closed: closed.clone(),
                waker: waker.clone(),
            },
            closed,
            waker,
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

fn closed(c: &Conn, cx: &mut Context<'_>) -> Poll<()> {
    if c.closed.load(Ordering::SeqCst) {
        return Poll::Ready(());
    }
    *lock(&c.waker) = Some(cx.waker().clone());
    Poll::Pending
}

fn close(flag: &AtomicBool, waker: &Mutex<Option<Waker>>) {
    flag.store(true, Ordering::SeqCst);
    if let Some(w) = lock(waker).take() {
        w.wake();
    }
}

#[test]
fn per_key_lists_longest_idle_first() {
    let pool = ConnectionPool::new(10);
    pool.put(1, "a1");
    pool.put(2, "b1");
    pool.put(1, "a2");
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(pool.get(1), Some("a1"));
    assert_eq!(pool.get(1), Some("a2"));
    assert_eq!(pool.get(1), None);
    assert_eq!(pool.get(3), None);
    assert_eq!(pool.get(2), Some("b1"));
    let s = pool.stats();
    assert_eq!((s.hits, s.misses, s.idle), (3, 2, 0));
}

#[test]
fn global_cap_drops_the_longest_idle_across_keys() {
    let pool = ConnectionPool::new(3);
    pool.put(1, "oldest");
    pool.put(2, "b");
    pool.put(1, "c");
    pool.put(3, "d"); // over the cap: "oldest" goes
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(pool.get(1), Some("c"), "the evicted one is skipped");
    assert_eq!(pool.get(1), None);
    assert_eq!(pool.stats().evicted, 1);
    // Taken entries do not count against the cap.
    pool.put(4, "e");
    pool.put(5, "f");
    assert_eq!(pool.idle_count(), 3);
    assert_eq!(pool.get(2), None, "b was the longest idle");
}

#[test]
fn capacity_zero_keeps_nothing() {
    let pool = ConnectionPool::new(0);
    assert!(pool.put(1, "x").is_none());
    assert_eq!(pool.get(1), None);
}

#[test]
fn order_list_stays_bounded() {
    let pool = ConnectionPool::new(4);
    for i in 0..10_000 {
        pool.put(i % 3, i);
        pool.get(i % 3);
    }
    assert!(pool.order.len() <= 2 * 4 + 65 + 1);
}

#[test]
fn per_key_cap_drops_that_keys_longest_idle() {
    let pool = ConnectionPool::new(2);
    pool.put(9, 1);
    pool.put(9, 2);
    pool.put(9, 3);
    assert_eq!(pool.idle_count(), 2);
    assert_eq!(pool.get(9), Some(2));
    assert_eq!(pool.get(9), Some(3));
}

#[tokio::test]
async fn remote_close_is_noticed_while_idle() {
    let pool = Arc::new(ConnectionPool::new(10));
    let (c, flag, waker) = Conn::new(7);
    let h = pool.put(1, c).unwrap();
    let p = pool.clone();
    let watcher = tokio::spawn(async move { p.watch(h, None, closed).await });
    // Let the watcher register, then close the "remote" end.
    while lock(&waker).is_none() {
        tokio::task::yield_now().await;
    }
    close(&flag, &waker);
    watcher.await.unwrap();
    assert_eq!(pool.idle_count(), 0);
    assert!(
        pool.get(1).is_none(),
        "a closed connection must not be handed out"
    );
    assert_eq!(pool.stats().evicted, 1);
}

#[tokio::test]
async fn idle_timeout_drops_the_connection() {
    let pool = Arc::new(ConnectionPool::new(10));
    let (c, _flag, _waker) = Conn::new(1);
    let h = pool.put(1, c).unwrap();
    pool.watch(h, Some(Duration::from_millis(30)), closed).await;
    assert!(pool.get(1).is_none());
    assert_eq!(pool.stats().evicted, 1);
}

#[tokio::test]
async fn taking_a_connection_stops_its_watcher() {
    let pool = Arc::new(ConnectionPool::new(10));
    let (c, flag, waker) = Conn::new(3);
    let h = pool.put(1, c).unwrap();
    let p = pool.clone();
    let watcher = tokio::spawn(async move { p.watch(h, None, closed).await });
    let got = pool.get(1).unwrap();
    assert_eq!(got.id, 3);
    watcher.await.unwrap();
    // Closing it now is the new owner's business, not the pool's.
    close(&flag, &waker);
    assert_eq!(pool.stats().evicted, 0);
}

#[test]
fn many_threads_put_and_get() {
    let pool = Arc::new(ConnectionPool::new(64));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut got = 0;
                for i in 0..20_000u64 {
                    pool.put(i % 8, (t, i));
                    if pool.get((i + t) % 8).is_some() {
                        got += 1;
                    }
                }
                got
            })
        })
        .collect();
    let got: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(pool.idle_count() <= 64);
    let s = pool.stats();
    assert_eq!(s.hits as usize, got);
    assert_eq!(80_000 - got, s.idle + s.evicted as usize);
}
