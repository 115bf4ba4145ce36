//! Parked idle connections.
//!
//! A keep-alive connection that has been idle for a while leaves its task:
//! its socket goes out of tokio's reactor into an epoll set of our own, and
//! what is kept is the socket and its accept-time facts ([`ParkedL4`],
//! tens of bytes) instead of a task, a future and a reactor registration
//! (a kilobyte or more). One watcher task per accept loop waits on the
//! epoll set: a parked connection that becomes readable (a request, or the
//! client closing) goes back into the reactor and gets a new task; one
//! idle past its timeout is closed; on shutdown all are closed.
//!
//! Parking costs four system calls (out of the reactor, into the set, and
//! back), so apps park a connection only once it has been idle for a
//! while (see `HttpServer::set_park_idle_after`), never between the
//! requests of a busy connection.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::debug;

use crate::protocols::l4::ParkedL4;
use crate::protocols::L4Stream;
use crate::shutdown::ShutdownWatch;

/// Parked connections, each with a token `T` that lives as long as the
/// connection does (the service's count of open connections).
pub(crate) struct IdleSet<T> {
    epoll: AsyncFd<OwnedFd>,
    slots: Mutex<Slots<T>>,
    /// How long a connection may stay parked; `None`: no limit.
    timeout: Option<Duration>,
    /// A connection was parked into an empty set (the watcher has a
    /// deadline to wait for now), or enough were parked to trim the heap.
    parked: Notify,
    /// Connections parked since the heap was last trimmed.
    parks_since_trim: AtomicUsize,
    last_trim: Mutex<Option<Instant>>,
    /// Connections parked now, for the metrics.
    gauge: Option<prometheus::IntGauge>,
}

/// After this many connections were parked, the memory their tasks held
/// is handed back to the OS (at most once a second): a burst of clients
/// that then idle leaves the process as small as their parked sockets.
const TRIM_AFTER_PARKS: usize = 256;
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

struct Slots<T> {
    entries: Vec<Slot<T>>,
    free: Vec<u32>,
    /// (slot, generation, deadline) in the order parked, which is the
    /// order of deadlines (one timeout for all). Entries of connections
    /// that left meanwhile are skipped (their generation moved on).
    order: VecDeque<(u32, u32, Instant)>,
    count: usize,
}

struct Slot<T> {
    generation: u32,
    conn: Option<(ParkedL4, T)>,
}

/// epoll's data word: slot index and generation.
fn event_key(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

impl<T> Slots<T> {
    /// Take the connection in `index` if it is still generation `gen`.
    fn take(&mut self, index: u32, generation: u32) -> Option<(ParkedL4, T)> {
        let slot = self.entries.get_mut(index as usize)?;
        if slot.generation != generation {
            return None;
        }
        let conn = slot.conn.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.count -= 1;
        Some(conn)
    }

    fn is_live(&self, index: u32, generation: u32) -> bool {
        self.entries
            .get(index as usize)
            .is_some_and(|s| s.generation == generation && s.conn.is_some())
    }
}

impl<T> IdleSet<T> {
    /// An empty set, registered with the current tokio runtime.
    pub(crate) fn new(
        timeout: Option<Duration>,
        gauge: Option<prometheus::IntGauge>,
    ) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the `OwnedFd` is moved in and stays open, the same fd,
        // for as long as the `AsyncFd` holds it.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(IdleSet {
            epoll,
            slots: Mutex::new(Slots {
                entries: Vec::new(),
                free: Vec::new(),
                order: VecDeque::new(),
                count: 0,
            }),
            timeout,
            parked: Notify::new(),
            parks_since_trim: AtomicUsize::new(0),
            last_trim: Mutex::new(None),
            gauge,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Slots<T>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn epoll_ctl(&self, op: libc::c_int, fd: RawFd, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: key,
        };
        // SAFETY: both fds are open; `ev` outlives the call.
        let r = unsafe { libc::epoll_ctl(self.epoll.get_ref().as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Connections parked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().count
    }

    /// Park `conn` until it is readable. On error the connection is
    /// dropped (closed).
    pub(crate) fn park(&self, conn: ParkedL4, token: T) -> io::Result<()> {
        let fd = conn.raw_fd();
        let mut slots = self.lock();
        let index = match slots.free.pop() {
            Some(i) => i,
            None => {
                slots.entries.push(Slot {
                    generation: 0,
                    conn: None,
                });
                (slots.entries.len() - 1) as u32
            }
        };
        let generation = slots.entries[index as usize].generation;
        if let Err(e) = self.epoll_ctl(libc::EPOLL_CTL_ADD, fd, event_key(index, generation)) {
            slots.free.push(index);
            return Err(e);
        }
        slots.entries[index as usize].conn = Some((conn, token));
        slots.count += 1;
        if let Some(g) = &self.gauge {
            g.inc();
        }
        if let Some(t) = self.timeout {
            let was_empty = slots.order.is_empty();
            slots
                .order
                .push_back((index, generation, Instant::now() + t));
            // Keep the order list from filling with connections that left.
            if slots.order.len() > 2 * slots.count + 64 {
                let Slots { order, entries, .. } = &mut *slots;
                order.retain(|&(i, g, _)| {
                    entries
                        .get(i as usize)
                        .is_some_and(|s| s.generation == g && s.conn.is_some())
                });
            }
            if was_empty {
                self.parked.notify_one();
            }
        }
        drop(slots);
        if self.parks_since_trim.fetch_add(1, Ordering::Relaxed) + 1 == TRIM_AFTER_PARKS {
            self.parked.notify_one();
        }
        Ok(())
    }

    /// Hand freed heap memory back to the OS if enough connections were
    /// parked since the last time; otherwise, when to look again.
    fn maybe_trim(&self, now: Instant) -> Option<Instant> {
        if self.parks_since_trim.load(Ordering::Relaxed) < TRIM_AFTER_PARKS {
            return None;
        }
        let mut last = self.last_trim.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = *last {
            if now < t + TRIM_INTERVAL {
                return Some(t + TRIM_INTERVAL);
            }
        }
        *last = Some(now);
        self.parks_since_trim.store(0, Ordering::Relaxed);
        trim_heap();
        None
    }

    /// The parked connections epoll reports readable, taken out of the set.
    fn take_ready(&self) -> Vec<(ParkedL4, T)> {
        let mut out = Vec::new();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: the buffer holds `events.len()` entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.get_ref().as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            let mut slots = self.lock();
            for ev in &events[..n as usize] {
                let key = ev.u64;
                if let Some(conn) = slots.take(key as u32, (key >> 32) as u32) {
                    let _ = self.epoll_ctl(libc::EPOLL_CTL_DEL, conn.0.raw_fd(), 0);
                    out.push(conn);
                }
            }
            if (n as usize) < events.len() {
                break;
            }
        }
        self.uncount(out.len());
        out
    }

    fn uncount(&self, n: usize) {
        if let Some(g) = &self.gauge {
            g.sub(n as i64);
        }
    }

    /// Close the connections whose time is up; the next deadline, if any.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut expired = Vec::new();
        let next = {
            let mut slots = self.lock();
            loop {
                let Some(&(i, g, deadline)) = slots.order.front() else {
                    break None;
                };
                if !slots.is_live(i, g) {
                    slots.order.pop_front();
                    continue;
                }
                if deadline > now {
                    break Some(deadline);
                }
                slots.order.pop_front();
                if let Some(conn) = slots.take(i, g) {
                    expired.push(conn);
                }
            }
        };
        if !expired.is_empty() {
            debug!("closing {} parked idle connections", expired.len());
            self.uncount(expired.len());
        }
        // Dropped here, outside the lock: the sockets close.
        drop(expired);
        next
    }

    fn close_all(&self) {
        let all: Vec<_> = {
            let mut slots = self.lock();
            self.uncount(slots.count);
            slots.order.clear();
            slots.count = 0;
            slots.free.clear();
            std::mem::take(&mut slots.entries)
        };
        drop(all);
    }

    /// Watch the set until shutdown: readable connections go back into
    /// the reactor and to `wake`, expired ones are closed. Once a shutdown
    /// begins the watch goes on for `drain` (a connection whose client
    /// sends a request meanwhile is woken to serve it), then all are
    /// closed: closing at once would race a request already on its way.
    pub(crate) async fn run(
        &self,
        mut shutdown: ShutdownWatch,
        drain: Duration,
        wake: impl Fn(L4Stream, T),
    ) {
        // When draining: the end of the drain.
        let mut until: Option<Instant> = None;
        loop {
            if until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            let now = Instant::now();
            let next = match (self.expire(now), self.maybe_trim(now)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let next = match (next, until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timer = async {
                match next {
                    Some(d) => {
                        pingora_timeout::sleep(d.saturating_duration_since(Instant::now())).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|s| *s), if until.is_none() => {
                    if drain.is_zero() {
                        break;
                    }
                    until = Some(Instant::now() + drain);
                }
                _ = timer => {}
                _ = self.parked.notified() => {}
                ready = self.epoll.readable() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            debug!("idle connection set failed: {e}");
                            break;
                        }
                    };
                    guard.clear_ready();
                    for (conn, token) in self.take_ready() {
                        match conn.into_stream() {
                            Ok(s) => wake(s, token),
                            Err(e) => debug!("cannot resume a parked connection: {e}"),
                        }
                    }
                }
            }
        }
        self.close_all();
    }
}

/// Return the heap's free pages to the OS, off the runtime's threads
/// (glibc: `malloc_trim`; elsewhere nothing).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let run = || {
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(tokio::task::spawn_blocking(run));
        } else {
            run();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair: the server side as an L4Stream.
    async fn pair() -> (L4Stream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        (L4Stream::from_tcp(s), c)
    }

    #[tokio::test]
    async fn parked_connections_wake_expire_and_close_on_shutdown() {
        let set = Arc::new(IdleSet::new(Some(Duration::from_millis(300)), None).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, watch) = tokio::sync::watch::channel(false);
        let runner = {
            let set = set.clone();
            tokio::spawn(async move {
                set.run(watch, Duration::ZERO, move |s, token: u32| {
                    tx.send((s, token)).unwrap()
                })
                .await
            })
        };

        // One that will talk, one that will idle out, one that stays.
        let (a, mut ca) = pair().await;
        let (b, mut cb) = pair().await;
        let accepted_at = a.digest().accepted_at;
        set.park(a.into_parked().unwrap(), 1).unwrap();
        set.park(b.into_parked().unwrap(), 2).unwrap();
        assert_eq!(set.len(), 2);

        // Bytes on `a`: it comes back as the same connection, readable,
        // with its digest.
        ca.write_all(b"hello").await.unwrap();
        let (mut s, token) = rx.recv().await.unwrap();
        assert_eq!(token, 1);
        assert_eq!(s.digest().accepted_at, accepted_at);
        assert_eq!(
            s.digest().peer_addr.as_ref().and_then(|a| a.as_inet()),
            Some(&ca.local_addr().unwrap())
        );
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        s.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        ca.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"back");

        // `b` idles out: its client sees the close.
        let mut rest = Vec::new();
        assert_eq!(cb.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(set.len(), 0);

        // Parked again, then shutdown closes it.
        set.park(s.into_parked().unwrap(), 3).unwrap();
        assert_eq!(set.len(), 1);
        stop.send(true).unwrap();
        runner.await.unwrap();
        assert_eq!(ca.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(set.len(), 0);
    }

    /// With a drain time, a shutdown does not close the parked at once: a
    /// client whose request arrives during the drain is woken to be
    /// served; the quiet ones are closed when the drain ends.
    #[tokio::test]
    async fn a_shutdown_drains_the_parked_before_closing_them() {
        let set = Arc::new(IdleSet::<u32>::new(None, None).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, watch) = tokio::sync::watch::channel(false);
        let runner = {
            let set = set.clone();
            tokio::spawn(async move {
                set.run(watch, Duration::from_millis(400), move |s, t| {
                    tx.send((s, t)).unwrap()
                })
                .await
            })
        };
        let (a, mut ca) = pair().await;
        let (b, mut cb) = pair().await;
        set.park(a.into_parked().unwrap(), 1).unwrap();
        set.park(b.into_parked().unwrap(), 2).unwrap();
        let start = Instant::now();
        stop.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A request on its way as the shutdown began: served.
        ca.write_all(b"GET").await.unwrap();
        let (_s, token) = rx.recv().await.unwrap();
        assert_eq!(token, 1);
        // The quiet one closes when the drain ends, not before.
        let mut rest = Vec::new();
        assert_eq!(cb.read_to_end(&mut rest).await.unwrap(), 0);
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "{:?}",
            start.elapsed()
        );
        runner.await.unwrap();
        assert_eq!(set.len(), 0);
    }

    #[tokio::test]
    async fn a_client_closing_while_parked_wakes_it() {
        let set = Arc::new(IdleSet::<()>::new(None, None).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (_stop, watch) = tokio::sync::watch::channel(false);
        let runner = {
            let set = set.clone();
            tokio::spawn(async move {
                set.run(watch, Duration::ZERO, move |s, _| tx.send(s).unwrap())
                    .await
            })
        };
        let (a, ca) = pair().await;
        set.park(a.into_parked().unwrap(), ()).unwrap();
        drop(ca);
        // Woken to read the EOF (and be closed by its app).
        let mut s = rx.recv().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);
        runner.abort();
    }
}
