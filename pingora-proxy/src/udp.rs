//! The UDP proxy: a [`UdpApp`] that maps each client address to a session
//! with an upstream socket of its own, so the upstream's replies go back to
//! the client that caused them and to no one else.
//!
//! The first datagram from a new client address asks
//! [`UdpProxyHandler::upstream_peer`] where its session goes (with a load
//! balancer, hash the client address to keep it on one backend). A session
//! ends after [`UdpProxyOptions::idle_timeout`] with no datagram either
//! way; at most [`UdpProxyOptions::max_sessions`] exist at once, and
//! datagrams from new clients beyond that are dropped (and counted). At
//! shutdown or upgrade, receiving stops and each session lingers only until
//! it has been quiet for [`UdpProxyOptions::drain_timeout`], so replies in
//! flight still reach their clients.
//!
//! ```no_run
//! use async_trait::async_trait;
//! use pingora_core::server::Server;
//! use pingora_error::Result;
//! use pingora_proxy::udp::{udp_proxy_service, UdpProxyHandler};
//!
//! struct ToDns;
//!
//! #[async_trait]
//! impl UdpProxyHandler for ToDns {
//!     async fn upstream_peer(&self, _client: std::net::SocketAddr) -> Result<std::net::SocketAddr> {
//!         Ok("127.0.0.1:5353".parse().unwrap())
//!     }
//! }
//!
//! let mut server = Server::new(None).unwrap();
//! server.bootstrap();
//! let mut proxy = udp_proxy_service(ToDns);
//! proxy.add_udp("127.0.0.1:6191");
//! server.add_service(proxy);
//! server.run_forever();
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::services::udp::{UdpApp, UdpDownstream, UdpService, MAX_DATAGRAM};
use pingora_error::Result;
use tokio::net::UdpSocket;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

/// The user's part of a UDP proxy.
#[async_trait]
pub trait UdpProxyHandler: Send + Sync + 'static {
    /// Where the session of a new client goes.
    async fn upstream_peer(&self, client: SocketAddr) -> Result<SocketAddr>;

    /// A session ended (idle, or drained at shutdown): for logs.
    async fn session_closed(&self, _summary: &UdpSessionSummary) {}
}

/// Settings of a [`UdpProxy`].
#[derive(Debug, Clone)]
pub struct UdpProxyOptions {
    /// A session with no datagram either way for this long ends (default
    /// 60 s).
    pub idle_timeout: Duration,
    /// Most sessions at once (default 10,000).
    pub max_sessions: usize,
    /// Most sessions at once from one client IP address, whatever its
    /// ports (default 2,000, a fifth of `max_sessions`): one host cannot
    /// take every place, while clients behind one NAT still fit.
    pub max_sessions_per_ip: usize,
    /// At shutdown, a session ends once quiet this long (default 1 s).
    pub drain_timeout: Duration,
}

impl Default for UdpProxyOptions {
    fn default() -> Self {
        UdpProxyOptions {
            idle_timeout: Duration::from_secs(60),
            max_sessions: 10_000,
            max_sessions_per_ip: 2_000,
            drain_timeout: Duration::from_secs(1),
        }
    }
}

/// What a finished session did.
#[derive(Debug, Clone)]
pub struct UdpSessionSummary {
    /// The client's address.
    pub client: SocketAddr,
    /// The upstream it was mapped to.
    pub upstream: SocketAddr,
    /// Datagrams from the client, sent upstream.
    pub datagrams_from_client: u64,
    /// Datagrams from the upstream, sent to the client.
    pub datagrams_from_upstream: u64,
    /// Bytes from the client.
    pub bytes_from_client: u64,
    /// Bytes from the upstream.
    pub bytes_from_upstream: u64,
    /// How long the session lived.
    pub duration: Duration,
}

struct Session {
    upstream: UdpSocket,
    peer: SocketAddr,
    started: Instant,
    /// Last datagram either way, in ms since the proxy's epoch.
    last: AtomicU64,
    from_client: AtomicU64,
    from_upstream: AtomicU64,
    bytes_from_client: AtomicU64,
    bytes_from_upstream: AtomicU64,
}

/// Datagrams from a new client kept while its session opens, at most.
const MAX_QUEUED: usize = 16;

/// What the session map holds for a client.
enum Found {
    Live(Arc<Session>),
    Full,
    Room,
}

/// Names the type; its state is not shown.
impl<H> std::fmt::Debug for UdpProxy<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpProxy").finish_non_exhaustive()
    }
}

/// The UDP proxy app.
pub struct UdpProxy<H> {
    handler: H,
    options: UdpProxyOptions,
    sessions: Mutex<HashMap<SocketAddr, Arc<Session>>>,
    /// Clients whose session is opening (in a task of its own: choosing
    /// and reaching the upstream never holds up the receive loop), with
    /// the datagrams that came meanwhile. Locked after `sessions`; counted
    /// against the caps like sessions.
    opening: Mutex<HashMap<SocketAddr, Vec<Vec<u8>>>>,
    /// Sessions (and opening ones) per client IP address, kept beside
    /// `sessions` (locked after it and `opening`).
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    epoch: Instant,
    draining: watch::Sender<bool>,
    ended: Notify,
    dropped: AtomicUsize,
}

impl<H: UdpProxyHandler> UdpProxy<H> {
    /// A proxy with default options.
    pub fn new(handler: H) -> Self {
        Self::with_options(handler, UdpProxyOptions::default())
    }

    /// A proxy with these options.
    pub fn with_options(handler: H, options: UdpProxyOptions) -> Self {
        UdpProxy {
            handler,
            options,
            sessions: Mutex::default(),
            opening: Mutex::default(),
            per_ip: Mutex::default(),
            epoch: Instant::now(),
            draining: watch::channel(false).0,
            ended: Notify::new(),
            dropped: AtomicUsize::new(0),
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.lock().len()
    }

    /// Datagrams dropped: from new clients beyond the session caps, or for
    /// which no upstream could be chosen or reached.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn opening_lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Vec<u8>>>> {
        self.opening.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One session (or opening one) fewer from `ip`.
    fn release_ip(&self, ip: std::net::IpAddr) {
        let mut per_ip = self.per_ip_lock();
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    fn per_ip_lock(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sessions open now from this client address.
    fn ip_sessions(&self, ip: std::net::IpAddr) -> usize {
        self.per_ip_lock().get(&ip).copied().unwrap_or(0)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn drop_datagram(&self, client: SocketAddr, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        debug!(%client, "UDP proxy dropped a datagram: {why}");
    }

    /// The client's live session (touched under the lock, so an expiry
    /// that holds the lock sees it), or whether there is room for one.
    fn find(&self, map: &HashMap<SocketAddr, Arc<Session>>, client: SocketAddr) -> Found {
        match map.get(&client) {
            Some(s) => {
                s.last.store(self.now_ms(), Ordering::Relaxed);
                Found::Live(s.clone())
            }
            None if map.len() + self.opening_lock().len() >= self.options.max_sessions => {
                Found::Full
            }
            None if self.ip_sessions(client.ip()) >= self.options.max_sessions_per_ip => {
                Found::Full
            }
            None => Found::Room,
        }
    }

    /// A socket connected to the upstream chosen for a new client, or why
    /// there is none.
    async fn connect_upstream(
        &self,
        client: SocketAddr,
    ) -> std::result::Result<(UdpSocket, SocketAddr), (&'static str, String)> {
        let peer = self
            .handler
            .upstream_peer(client)
            .await
            .map_err(|e| ("no upstream", e.to_string()))?;
        let local: SocketAddr = if peer.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| ("no upstream socket", e.to_string()))?;
        sock.connect(peer)
            .await
            .map_err(|e| ("upstream unreachable", format!("connecting to {peer}: {e}")))?;
        Ok((sock, peer))
    }

    /// Hand `datagram` from `client` on: to its live session, or, for a
    /// new client, to a session opened by a task of its own (the datagram
    /// and up to [`MAX_QUEUED`] more wait for it), so that choosing and
    /// reaching an upstream never holds up the receive loop.
    async fn forward(self: &Arc<Self>, datagram: &[u8], client: SocketAddr, down: &UdpDownstream) {
        let s = {
            let map = self.lock();
            match self.find(&map, client) {
                Found::Live(s) => s,
                Found::Full => {
                    drop(map);
                    self.drop_datagram(client, "session limit reached");
                    return;
                }
                Found::Room => {
                    let mut opening = self.opening_lock();
                    match opening.get_mut(&client) {
                        Some(queue) if queue.len() < MAX_QUEUED => queue.push(datagram.to_vec()),
                        Some(_) => {
                            drop(opening);
                            drop(map);
                            self.drop_datagram(client, "session still opening");
                        }
                        None => {
                            opening.insert(client, vec![datagram.to_vec()]);
                            *self.per_ip_lock().entry(client.ip()).or_insert(0) += 1;
                            drop(opening);
                            drop(map);
                            tokio::spawn(self.clone().open(client, down.clone()));
                        }
                    }
                    return;
                }
            }
        };
        s.from_client.fetch_add(1, Ordering::Relaxed);
        s.bytes_from_client
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        if let Err(e) = s.upstream.send(datagram).await {
            debug!(%client, "UDP proxy: to upstream {}: {e}", s.peer);
        }
    }

    /// Open `client`'s session: choose and reach its upstream, send what
    /// it sent meanwhile, in order, and make the session live.
    async fn open(self: Arc<Self>, client: SocketAddr, down: UdpDownstream) {
        let (sock, peer) = match self.connect_upstream(client).await {
            Ok(x) => x,
            Err((why, detail)) => {
                warn!(%client, "UDP proxy: {why}: {detail}");
                let queued = self.opening_lock().remove(&client).map_or(0, |q| q.len());
                self.release_ip(client.ip());
                for _ in 0..queued {
                    self.drop_datagram(client, why);
                }
                self.ended.notify_waiters();
                return;
            }
        };
        let s = Arc::new(Session {
            upstream: sock,
            peer,
            started: Instant::now(),
            last: AtomicU64::new(self.now_ms()),
            from_client: AtomicU64::new(0),
            from_upstream: AtomicU64::new(0),
            bytes_from_client: AtomicU64::new(0),
            bytes_from_upstream: AtomicU64::new(0),
        });
        // What came while opening goes first; the queue is taken and the
        // session made live under the locks, so a datagram that comes
        // after goes behind them.
        let queued = {
            let mut map = self.lock();
            let queued = self.opening_lock().remove(&client).unwrap_or_default();
            map.insert(client, s.clone());
            queued
        };
        tokio::spawn(self.clone().replies(client, s.clone(), down));
        for d in queued {
            s.from_client.fetch_add(1, Ordering::Relaxed);
            s.bytes_from_client
                .fetch_add(d.len() as u64, Ordering::Relaxed);
            if let Err(e) = s.upstream.send(&d).await {
                debug!(%client, "UDP proxy: to upstream {}: {e}", s.peer);
            }
        }
    }

    /// The session's task: replies from the upstream go to the client,
    /// until the session has been idle long enough.
    async fn replies(self: Arc<Self>, client: SocketAddr, s: Arc<Session>, down: UdpDownstream) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut draining = self.draining.subscribe();
        loop {
            let limit = if *draining.borrow() {
                self.options.drain_timeout.min(self.options.idle_timeout)
            } else {
                self.options.idle_timeout
            };
            let idle_for = self.now_ms().saturating_sub(s.last.load(Ordering::Relaxed));
            let wait = limit.saturating_sub(Duration::from_millis(idle_for));
            tokio::select! {
                r = s.upstream.recv(&mut buf) => match r {
                    Ok(n) => {
                        s.last.store(self.now_ms(), Ordering::Relaxed);
                        s.from_upstream.fetch_add(1, Ordering::Relaxed);
                        s.bytes_from_upstream.fetch_add(n as u64, Ordering::Relaxed);
                        if let Err(e) = down.send_to(&buf[..n], client).await {
                            debug!(%client, "UDP proxy: reply to client: {e}");
                        }
                    }
                    // ICMP port unreachable from the upstream, for one
                    // datagram: the session itself is still good.
                    Err(e) => debug!(%client, "UDP proxy: from upstream {}: {e}", s.peer),
                },
                _ = pingora_timeout::sleep(wait) => {
                    let mut map = self.lock();
                    let idle_for = self.now_ms().saturating_sub(s.last.load(Ordering::Relaxed));
                    if Duration::from_millis(idle_for) >= limit {
                        if map.get(&client).is_some_and(|x| Arc::ptr_eq(x, &s)) {
                            map.remove(&client);
                            self.release_ip(client.ip());
                        }
                        break;
                    }
                }
                _ = draining.changed() => {}
            }
        }
        let summary = UdpSessionSummary {
            client,
            upstream: s.peer,
            datagrams_from_client: s.from_client.load(Ordering::Relaxed),
            datagrams_from_upstream: s.from_upstream.load(Ordering::Relaxed),
            bytes_from_client: s.bytes_from_client.load(Ordering::Relaxed),
            bytes_from_upstream: s.bytes_from_upstream.load(Ordering::Relaxed),
            duration: s.started.elapsed(),
        };
        self.handler.session_closed(&summary).await;
        self.ended.notify_waiters();
    }
}

#[async_trait]
impl<H: UdpProxyHandler> UdpApp for UdpProxy<H> {
    async fn process_datagram(
        self: &Arc<Self>,
        datagram: &[u8],
        client: SocketAddr,
        downstream: &UdpDownstream,
    ) {
        self.forward(datagram, client, downstream).await;
    }

    async fn cleanup(&self) {
        self.draining.send_replace(true);
        loop {
            let ended = self.ended.notified();
            if self.lock().is_empty() && self.opening_lock().is_empty() {
                return;
            }
            ended.await;
        }
    }
}

/// A UDP proxy service named "UDP proxy", with default options.
pub fn udp_proxy_service<H: UdpProxyHandler>(handler: H) -> UdpService<UdpProxy<H>> {
    UdpService::new("UDP proxy".into(), UdpProxy::new(handler))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends each client's sessions to `echo`; the session of a client from
    /// port `slow` takes 2 s to choose.
    struct SlowFor {
        slow: u16,
        echo: SocketAddr,
    }

    #[async_trait]
    impl UdpProxyHandler for SlowFor {
        async fn upstream_peer(&self, client: SocketAddr) -> Result<SocketAddr> {
            if client.port() == self.slow {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Ok(self.echo)
        }
    }

    async fn bound() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    /// The next datagram on `sock` within `limit`.
    async fn next(sock: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(limit, sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf[..n].to_vec())
    }

    /// A new client whose upstream is slow to choose holds up nobody: its
    /// first datagram is handed on at once (the receive loop reads the
    /// next), another client is served meanwhile, and the slow client's
    /// datagrams, the one that opened the session and one that came while
    /// it opened, reach the upstream in order once it is chosen.
    #[tokio::test]
    async fn a_slow_new_session_does_not_hold_up_other_clients() {
        let echo = bound().await;
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let service = Arc::new(bound().await);
        let down = UdpDownstream::new(service.clone());
        let (slow, fast) = (bound().await, bound().await);
        let (slow_addr, fast_addr) = (slow.local_addr().unwrap(), fast.local_addr().unwrap());
        for c in [&slow, &fast] {
            c.connect(service.local_addr().unwrap()).await.unwrap();
        }
        let proxy = Arc::new(UdpProxy::new(SlowFor {
            slow: slow_addr.port(),
            echo: echo_addr,
        }));
        let quick = Duration::from_millis(500);
        let handed_on =
            tokio::time::timeout(quick, proxy.process_datagram(b"s1", slow_addr, &down));
        assert!(
            handed_on.await.is_ok(),
            "the receive loop waited on the slow session"
        );
        let handed_on =
            tokio::time::timeout(quick, proxy.process_datagram(b"s2", slow_addr, &down));
        assert!(handed_on.await.is_ok());
        proxy.process_datagram(b"f1", fast_addr, &down).await;
        assert_eq!(
            next(&fast, Duration::from_secs(1)).await.as_deref(),
            Some(&b"f1"[..])
        );
        assert_eq!(
            next(&slow, Duration::from_secs(5)).await.as_deref(),
            Some(&b"s1"[..])
        );
        assert_eq!(
            next(&slow, Duration::from_secs(1)).await.as_deref(),
            Some(&b"s2"[..])
        );
        assert_eq!(proxy.sessions(), 2);
        assert_eq!(proxy.dropped(), 0);
    }
}
