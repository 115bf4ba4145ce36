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

/// What the session map holds for a client.
enum Found {
    Live(Arc<Session>),
    Full,
    Room,
}

/// The UDP proxy app.
pub struct UdpProxy<H> {
    handler: H,
    options: UdpProxyOptions,
    sessions: Mutex<HashMap<SocketAddr, Arc<Session>>>,
    /// Sessions per client IP address, kept beside `sessions` (locked
    /// after it).
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
            None if map.len() >= self.options.max_sessions => Found::Full,
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

    /// The client's session, made if it is new.
    async fn session(
        self: &Arc<Self>,
        client: SocketAddr,
        downstream: &UdpDownstream,
    ) -> Option<Arc<Session>> {
        let found = self.find(&self.lock(), client);
        match found {
            Found::Live(s) => return Some(s),
            Found::Full => {
                self.drop_datagram(client, "session limit reached");
                return None;
            }
            Found::Room => {}
        }
        let (sock, peer) = match self.connect_upstream(client).await {
            Ok(x) => x,
            Err((why, detail)) => {
                warn!(%client, "UDP proxy: {why}: {detail}");
                self.drop_datagram(client, why);
                return None;
            }
        };
        let mut map = self.lock();
        // Another receive loop may have made it, or filled the last place,
        // meanwhile.
        match self.find(&map, client) {
            Found::Live(s) => return Some(s),
            Found::Full => {
                drop(map);
                self.drop_datagram(client, "session limit reached");
                return None;
            }
            Found::Room => {}
        }
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
        map.insert(client, s.clone());
        *self.per_ip_lock().entry(client.ip()).or_insert(0) += 1;
        drop(map);
        tokio::spawn(self.clone().replies(client, s.clone(), downstream.clone()));
        Some(s)
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
                            let mut per_ip = self.per_ip_lock();
                            if let Some(n) = per_ip.get_mut(&client.ip()) {
                                *n -= 1;
                                if *n == 0 {
                                    per_ip.remove(&client.ip());
                                }
                            }
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
        let Some(s) = self.session(client, downstream).await else {
            return;
        };
        s.from_client.fetch_add(1, Ordering::Relaxed);
        s.bytes_from_client
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        if let Err(e) = s.upstream.send(datagram).await {
            debug!(%client, "UDP proxy: to upstream {}: {e}", s.peer);
        }
    }

    async fn cleanup(&self) {
        self.draining.send_replace(true);
        loop {
            let ended = self.ended.notified();
            if self.lock().is_empty() {
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
