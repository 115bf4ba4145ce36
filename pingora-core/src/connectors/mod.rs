//! Connecting to upstreams: L4 connect ([`l4`]), TLS on top ([`tls`]),
//! idle connections kept in a pool and reused ([`TransportConnector`]),
//! and HTTP/1 sessions over them ([`http`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use pingora_error::{Error, ErrorType::*, Result};
use pingora_pool::{ConnectionPool, PoolStats};

use crate::protocols::Stream;
use crate::server::ServerConf;
use crate::upstreams::peer::Peer;

pub mod http;
pub mod l4;
pub use l4::Connect as L4Connect;
#[cfg(feature = "any_tls")]
pub mod tls;
// The same names without a TLS library: connecting with TLS is an error.
#[cfg(not(feature = "any_tls"))]
#[path = "no_tls.rs"]
pub mod tls;

/// How a connector is set up (as Pingora's): pool size, CAs, a default
/// client certificate, source addresses.
#[derive(Clone, Debug)]
pub struct ConnectorOptions {
    /// CA file (PEM) to trust instead of the system's.
    pub ca_file: Option<String>,
    /// Client certificate and key files (PEM) presented to TLS peers that
    /// name none of their own.
    pub cert_key_file: Option<(String, String)>,
    /// Accepted for Pingora's sake; no effect here (TLS keys are never
    /// logged).
    pub debug_ssl_keylog: bool,
    /// Most idle connections kept for reuse.
    pub keepalive_pool_size: usize,
    /// Accepted for Pingora's sake; no effect here (handshakes run on the
    /// service's runtimes).
    pub offload_threadpool: Option<(usize, usize)>,
    /// IPv4 source addresses to connect from, in turn (the port is the
    /// system's choice), for peers with no `bind_to` of their own.
    pub bind_to_v4: Vec<SocketAddr>,
    /// IPv6 source addresses, as `bind_to_v4`.
    pub bind_to_v6: Vec<SocketAddr>,
}

impl ConnectorOptions {
    /// Defaults, with this pool size.
    pub fn new(keepalive_pool_size: usize) -> Self {
        ConnectorOptions {
            ca_file: None,
            cert_key_file: None,
            debug_ssl_keylog: false,
            keepalive_pool_size,
            offload_threadpool: None,
            bind_to_v4: vec![],
            bind_to_v6: vec![],
        }
    }

    /// From the server conf: `upstream_keepalive_pool_size`, `ca_file`,
    /// `client_bind_to_ipv4`, `client_bind_to_ipv6`.
    pub fn from_server_conf(conf: &ServerConf) -> Self {
        let addrs = |list: &[String], v4: bool| -> Vec<SocketAddr> {
            list.iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
                .filter(|ip| ip.is_ipv4() == v4)
                .map(|ip| SocketAddr::new(ip, 0))
                .collect()
        };
        ConnectorOptions {
            ca_file: conf.ca_file.clone(),
            bind_to_v4: addrs(&conf.client_bind_to_ipv4, true),
            bind_to_v6: addrs(&conf.client_bind_to_ipv6, false),
            ..Self::new(conf.upstream_keepalive_pool_size)
        }
    }
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        Self::new(128)
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for TransportConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConnector").finish_non_exhaustive()
    }
}

/// Makes connections to peers and keeps idle ones for reuse.
pub struct TransportConnector {
    pool: Arc<ConnectionPool<Stream>>,
    /// Whether a task sweeps the pool (see `sweep_while_idle`).
    sweeping: Arc<AtomicBool>,
    /// Source addresses for peers without a `bind_to` of their own.
    bind_to: BindTo,
    tls: tls::TlsConnector,
    /// The client certificate for TLS peers that name none.
    default_cert: Option<Arc<crate::listeners::tls::CertKey>>,
}

impl TransportConnector {
    /// A connector set up by `options` (or the defaults: a pool of 128,
    /// the system's CAs); [`ConnectorOptions::from_server_conf`] reads
    /// them from the server conf.
    ///
    /// A peer whose options set no `bind_to` connects from one of the
    /// options' addresses of its own family (taken in turn when there are
    /// several), with a port chosen by the system; with none listed for
    /// that family, the system picks the source address too.
    ///
    /// # Panics
    ///
    /// If `cert_key_file` names files that cannot be read or do not hold a
    /// PEM certificate and key (a start-up mistake, as a bad conf file).
    pub fn new(options: Option<ConnectorOptions>) -> Self {
        let o = options.unwrap_or_default();
        TransportConnector {
            pool: crate::metrics::watch_pool(Arc::new(ConnectionPool::with_check(
                o.keepalive_pool_size,
                still_idle,
            ))),
            sweeping: Arc::default(),
            bind_to: BindTo::from_options(&o),
            tls: tls::TlsConnector::new(o.ca_file.as_deref()),
            default_cert: o.cert_key_file.as_ref().map(|(cert, key)| {
                match crate::listeners::tls::CertKey::from_files(cert, key) {
                    Ok(c) => Arc::new(c),
                    Err(e) => panic!("ConnectorOptions::cert_key_file ({cert}, {key}): {e}"),
                }
            }),
        }
    }

    /// A new connection to `peer`: connect, then TLS if the peer wants it,
    /// all within the peer's total connection timeout.
    ///
    /// A PROXY protocol header in the peer's options is sent first, before
    /// TLS.
    ///
    /// # Errors
    ///
    /// `ConnectTimedout` past the total connection timeout; the connect's
    /// errors ([`l4::connect_from`], or [`l4::connect_through_proxy`] for a
    /// proxied peer); `WriteError` if the PROXY header cannot be sent; the TLS
    /// handshake's errors (`TLSHandshakeFailure`, `TLSHandshakeTimedout`,
    /// `InvalidCert` and the other certificate kinds). All are the upstream's.
    pub async fn new_stream<P: Peer + ?Sized>(&self, peer: &P) -> Result<Stream> {
        let start = Instant::now();
        let attempt = async {
            let fallback = match peer.address() {
                crate::protocols::SocketAddr::Inet(a) if peer.options().bind_to.is_none() => {
                    self.bind_to.pick(a.is_ipv4())
                }
                _ => None,
            };
            let mut l4 = match peer.get_proxy() {
                Some(proxy) => l4::connect_through_proxy(proxy, peer.options()).await?,
                None => l4::connect_from(peer.address(), peer.options(), fallback).await?,
            };
            if let Some(h) = &peer.options().proxy_protocol {
                use tokio::io::AsyncWriteExt;
                l4.write_all(&h.to_bytes())
                    .await
                    .map_err(|e| {
                        Error::because(WriteError, format!("sending the PROXY header to {peer}"), e)
                    })
                    .map_err(|e| e.into_up())?;
            }
            if !peer.tls() {
                return Ok(Box::new(l4) as Stream);
            }
            self.tls_on(l4, peer, start).await
        };
        let attempt = std::pin::pin!(attempt);
        connect_within(
            peer.options().total_connection_timeout,
            "connecting to",
            &peer,
            attempt,
        )
        .await
    }

    async fn tls_on<P: Peer + ?Sized>(
        &self,
        l4: crate::protocols::L4Stream,
        peer: &P,
        start: Instant,
    ) -> Result<Stream> {
        let default_cert = self.default_cert.as_ref();
        self.tls.connect_peer(l4, peer, default_cert, start).await
    }

    /// An idle pooled connection to `peer` if there is one (`true`), else a
    /// new one (`false`).
    ///
    /// # Errors
    ///
    /// Only when a new connection is made: those of
    /// [`new_stream`](Self::new_stream) (`ConnectTimedout`, `ConnectRefused`,
    /// `TLSHandshakeFailure`, `InvalidCert`, ...).
    pub async fn get_stream<P: Peer + ?Sized>(&self, peer: &P) -> Result<(Stream, bool)> {
        self.get_stream_keyed(peer, peer.reuse_hash()).await
    }

    /// [`get_stream`](Self::get_stream) with the peer's reuse hash already
    /// computed.
    pub(crate) async fn get_stream_keyed<P: Peer + ?Sized>(
        &self,
        peer: &P,
        key: u64,
    ) -> Result<(Stream, bool)> {
        let m = crate::metrics::core();
        if let Some(s) = self.pool.get(key) {
            m.pool_hits.inc();
            return Ok((s, true));
        }
        m.pool_misses.inc();
        let start = Instant::now();
        match self.new_stream(peer).await {
            Ok(s) => {
                m.connect_seconds.observe(start.elapsed().as_secs_f64());
                Ok((s, false))
            }
            Err(e) => {
                m.connect_errors
                    .with_label_values(&[e.etype().as_str()])
                    .inc();
                Err(e)
            }
        }
    }

    /// Keep `stream` for reuse by peers with hash `key`. It is not handed
    /// out again once it has been idle for `idle_timeout`, or when it has
    /// become readable meanwhile (the peer closed it or sent something
    /// unasked): both are checked when it is taken, with no syscall in the
    /// usual case. Idle connections cost no task or timer each; one task
    /// per connector (started on the current tokio runtime by the first
    /// release) sweeps the dead and expired ones out every second, so a
    /// closed connection's socket does not linger.
    pub fn release_stream(&self, stream: Stream, key: u64, idle_timeout: Option<Duration>) {
        // A stream without a socket (a virtual one) cannot be checked for
        // idleness: it would be evicted at the first check, pushing a real
        // idle connection out of a full pool on the way in.
        if stream.socket_digest().is_some_and(|d| d.raw_fd < 0) {
            return;
        }
        if self.pool.put_with_timeout(key, stream, idle_timeout)
            && !self.sweeping.load(Ordering::Relaxed)
        {
            self.start_sweeping();
        }
    }

    #[cold]
    fn start_sweeping(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime: connections are still checked when taken.
            return;
        };
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        rt.spawn(sweep_while_idle(
            Arc::downgrade(&self.pool),
            self.sweeping.clone(),
        ));
    }

    /// Pool counters: hits, misses, evictions, idle connections.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }
}

/// The conf's source addresses for outgoing connections, by family.
#[derive(Debug, Default)]
struct BindTo {
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
    /// Turns over the addresses of a family when there are several.
    next: AtomicUsize,
}

impl BindTo {
    /// The conf's lists; `ServerConf::validate` has checked each address,
    /// so one that does not parse (a conf built in code) is skipped.
    fn from_options(o: &ConnectorOptions) -> Self {
        let ips = |list: &[SocketAddr], v4: bool| -> Vec<IpAddr> {
            list.iter()
                .map(SocketAddr::ip)
                .filter(|ip| ip.is_ipv4() == v4)
                .collect()
        };
        BindTo {
            v4: ips(&o.bind_to_v4, true),
            v6: ips(&o.bind_to_v6, false),
            next: AtomicUsize::new(0),
        }
    }

    /// A source address (port 0) for a peer of this family, if the conf
    /// lists any.
    fn pick(&self, ipv4: bool) -> Option<SocketAddr> {
        let list = if ipv4 { &self.v4 } else { &self.v6 };
        let ip = match list.len() {
            0 => return None,
            1 => list[0],
            n => list[self.next.fetch_add(1, Ordering::Relaxed) % n],
        };
        Some(SocketAddr::new(ip, 0))
    }
}

/// How often idle upstream connections are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// `attempt` (`what` `target`: "connecting to 127.0.0.1:80") within
/// `limit`, if any; past it, an upstream `ConnectTimedout` that says so.
/// The attempt is taken pinned where it is (`pin!` at the caller), never
/// by value: moved in, a connect-and-handshake future (kilobytes) was
/// copied on every connection, +3,500 instructions per request in the
/// HTTP/2 benchmark (`H2C=1 bash benches/load/instructions.sh`). The
/// signature makes every caller do so.
pub(crate) async fn connect_within<T>(
    limit: Option<Duration>,
    what: &'static str,
    target: &(dyn std::fmt::Display + Sync),
    attempt: std::pin::Pin<&mut impl std::future::Future<Output = Result<T>>>,
) -> Result<T> {
    let Some(d) = limit else {
        return attempt.await;
    };
    match pingora_timeout::timeout(d, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::explain(
            ConnectTimedout,
            format!("{what} {target}: not done within {d:?}"),
        )
        .into_up()),
    }
}

/// The pool's check: an idle connection is still good while a read would
/// block (no EOF, no bytes nobody asked for). A readiness look with a
/// no-op waker: no syscall unless the reactor's readiness is stale.
fn still_idle(s: &Stream) -> bool {
    s.poll_read_ready(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

/// Sweep `pool` every [`SWEEP_EVERY`] for as long as it exists. If the
/// runtime drops the task first, `sweeping` is cleared, so that the next
/// release starts a new sweeper.
async fn sweep_while_idle(pool: Weak<ConnectionPool<Stream>>, sweeping: Arc<AtomicBool>) {
    struct Done(Arc<AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _done = Done(sweeping);
    loop {
        pingora_timeout::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep();
    }
}
