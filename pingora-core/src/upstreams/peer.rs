//! Peers: where and how to reach an upstream.
//!
//! [`HttpPeer`] carries Pingora's fields and options (address, TLS, SNI,
//! timeouts, verification, ALPN, client certificate, keepalive, bind
//! address, HTTP/2 settings); [`BasicPeer`] is a plain L4 peer. Each
//! computes a reuse hash: two connections with equal hashes are
//! interchangeable in the connection pool.

use std::hash::{Hash, Hasher};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use pingora_error::{Error, ErrorType::*, OrErr, Result};

use crate::protocols::proxy_protocol::ProxyHeader;
use crate::protocols::sockopt::TcpKeepalive;
use crate::protocols::SocketAddr;

/// What a connector needs to know about any upstream: where it is, whether
/// to speak TLS and with what name, and how to connect.
pub trait Peer: std::fmt::Display + Send + Sync {
    /// The address.
    fn address(&self) -> &SocketAddr;
    /// Whether to speak TLS.
    fn tls(&self) -> bool;
    /// The server name for SNI and certificate checks.
    fn sni(&self) -> &str;
    /// How to connect.
    fn options(&self) -> &PeerOptions;
    /// The client certificate and key to present: the peer's own (as
    /// Pingora's `HttpPeer::client_cert_key`), else the options'.
    fn get_client_cert_key(&self) -> Option<&Arc<crate::listeners::tls::CertKey>> {
        self.options().client_cert_key.as_ref()
    }
    /// The HTTP CONNECT proxy to reach the peer through, if any.
    fn get_proxy(&self) -> Option<&Proxy> {
        None
    }
    /// The options, to change them (as Pingora's).
    fn get_mut_peer_options(&mut self) -> Option<&mut PeerOptions> {
        None
    }
    /// The options (as Pingora's name for [`options`](Self::options)).
    fn get_peer_options(&self) -> Option<&PeerOptions> {
        Some(self.options())
    }
    /// Connections to peers with equal hashes are interchangeable.
    fn reuse_hash(&self) -> u64 {
        let mut h = crate::utils::KeyHasher::default();
        self.address().hash(&mut h);
        self.tls().hash(&mut h);
        self.sni().hash(&mut h);
        self.options().hash_into(&mut h);
        h.finish()
    }
}

/// Which HTTP versions to offer by ALPN, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ALPN {
    /// HTTP/1.1 only.
    #[default]
    H1,
    /// HTTP/2 only.
    H2,
    /// HTTP/2 preferred, HTTP/1.1 accepted.
    H2H1,
    /// No ALPN at all (for protocols other than HTTP).
    None,
}

impl ALPN {
    /// The protocol names, most preferred first.
    pub fn protocols(&self) -> Vec<Vec<u8>> {
        match self {
            ALPN::H1 => vec![b"http/1.1".to_vec()],
            ALPN::H2 => vec![b"h2".to_vec()],
            ALPN::H2H1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            ALPN::None => vec![],
        }
    }
}

/// The default read and write timeouts of a peer: 60 s, as nginx's.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(60);

/// How to connect to a peer and talk to it. Defaults: 10 s connect
/// timeout, 60 s read and write timeouts, verification on, HTTP/1.1.
#[derive(Clone, Debug)]
pub struct PeerOptions {
    /// Time allowed for the TCP (or Unix) connect.
    pub connection_timeout: Option<Duration>,
    /// Time allowed for connect and TLS handshake together.
    pub total_connection_timeout: Option<Duration>,
    /// Time allowed for each read: the response header, then each piece
    /// of body (default 60 s, as nginx's `proxy_read_timeout`; `None`
    /// waits forever). A silent upstream is answered 504.
    pub read_timeout: Option<Duration>,
    /// Time allowed for each write (default 60 s, as nginx's
    /// `proxy_send_timeout`; `None` waits forever).
    pub write_timeout: Option<Duration>,
    /// How long an idle connection stays in the pool; an HTTP/2 connection
    /// with no stream open for this long is closed too (default 60 s).
    pub idle_timeout: Option<Duration>,
    /// Verify the certificate chain.
    pub verify_cert: bool,
    /// Verify that the certificate names the SNI (or `alternative_cn`).
    pub verify_hostname: bool,
    /// Another name the certificate may carry.
    pub alternative_cn: Option<String>,
    /// ALPN preference.
    pub alpn: ALPN,
    /// CA file (PEM) to trust instead of the system's.
    pub ca: Option<String>,
    /// CA certificates (PEM bytes, from memory) to trust instead of the
    /// system's; takes precedence over `ca`. Connections are shared, and
    /// TLS contexts kept, per distinct CA text (hashed into the pool key
    /// for each request, so keep it to the CAs needed).
    pub ca_pem: Option<Arc<[u8]>>,
    /// Client certificate and key to present.
    pub client_cert_key: Option<Arc<crate::listeners::tls::CertKey>>,
    /// TCP keepalive probes.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Use TCP Fast Open for the connect.
    pub tcp_fast_open: bool,
    /// HTTP/2 ping interval (keepalive).
    pub h2_ping_interval: Option<Duration>,
    /// Most concurrent streams this side opens on one HTTP/2 connection.
    pub max_h2_streams: usize,
    /// Most HTTP/2 connections open (or opening) to this peer at once,
    /// from one connector. When all are full, a request that needs a new
    /// one fails with a 503 (as Envoy's connection circuit breaker) rather
    /// than open connections without bound. Default 128.
    pub max_h2_connections: usize,
    /// Local address to connect from.
    pub bind_to: Option<std::net::SocketAddr>,
    /// A PROXY protocol header to send first on each new connection
    /// (before TLS). Connections carrying different headers are never
    /// shared: the header is part of the reuse hash. See
    /// [`ProxyHeader::for_client`].
    pub proxy_protocol: Option<ProxyHeader>,
    /// A connector of the user's for the L4 layer, in place of the TCP or
    /// Unix connect (see [`L4Connect`](crate::connectors::L4Connect)).
    /// Connections it made are shared only with peers using the same one.
    pub custom_l4: Option<Arc<dyn crate::connectors::L4Connect + Send + Sync>>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            connection_timeout: Some(Duration::from_secs(10)),
            total_connection_timeout: None,
            read_timeout: Some(DEFAULT_IO_TIMEOUT),
            write_timeout: Some(DEFAULT_IO_TIMEOUT),
            idle_timeout: Some(Duration::from_secs(60)),
            verify_cert: true,
            verify_hostname: true,
            alternative_cn: None,
            alpn: ALPN::H1,
            ca: None,
            ca_pem: None,
            client_cert_key: None,
            tcp_keepalive: None,
            tcp_fast_open: false,
            h2_ping_interval: None,
            max_h2_streams: 1,
            max_h2_connections: 128,
            bind_to: None,
            proxy_protocol: None,
            custom_l4: None,
        }
    }
}

impl PeerOptions {
    /// The defaults (as `Default`), by Pingora's name for them.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offer HTTP versions `min` to `max` (1 or 2) by ALPN: `(2, 2)` is
    /// HTTP/2 only, `(2, 1)` HTTP/2 preferred with HTTP/1.1 accepted, and
    /// anything else HTTP/1.1.
    pub fn set_http_version(&mut self, max: u8, min: u8) {
        self.alpn = match (max, min) {
            (2, 2) => ALPN::H2,
            (2, _) => ALPN::H2H1,
            _ => ALPN::H1,
        };
    }

    fn hash_into<H: Hasher>(&self, h: &mut H) {
        self.verify_cert.hash(h);
        self.verify_hostname.hash(h);
        self.alternative_cn.hash(h);
        self.alpn.hash(h);
        self.ca.hash(h);
        // By content and by id, not by address: a connection verified
        // against one CA, or made with one client certificate, must not be
        // handed to a peer with another that was later allocated at the
        // same address.
        self.ca_pem.as_deref().hash(h);
        self.client_cert_key.as_ref().map(|c| c.id()).hash(h);
        self.bind_to.hash(h);
        self.proxy_protocol.hash(h);
        // By identity: another connector's streams are not interchangeable.
        self.custom_l4.as_ref().map(connector_id).hash(h);
    }
}

/// A custom L4 connector, as the registry of ids keeps it.
type L4Connector = dyn crate::connectors::L4Connect + Send + Sync;

/// Ids of the custom L4 connectors in use, by their address. Each entry
/// keeps a weak handle, so that the connector's memory (and so its address)
/// is not reused while the entry lives; entries of dropped connectors are
/// pruned, and a connector later made at a pruned address gets a new id.
/// The pool key holds the id, never the address: the pooled streams of a
/// dropped connector are never handed to another.
static L4_IDS: std::sync::Mutex<Vec<(usize, std::sync::Weak<L4Connector>, u64)>> =
    std::sync::Mutex::new(Vec::new());

/// The id of `connector` (see [`L4_IDS`]).
fn connector_id(connector: &Arc<L4Connector>) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let addr = Arc::as_ptr(connector) as *const () as usize;
    let mut ids = L4_IDS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, _, id)) = ids.iter().find(|(a, _, _)| *a == addr) {
        return *id;
    }
    // A few connectors in a program: a short list, pruned as it grows.
    if ids.len() >= 16 && ids.len().is_power_of_two() {
        ids.retain(|(_, w, _)| w.strong_count() > 0);
    }
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ids.push((addr, Arc::downgrade(connector), id));
    id
}

/// What `HttpPeer::new` and `LoadBalancer`'s constructors take as an
/// address: anything std can resolve to socket addresses (`"1.2.3.4:80"`,
/// `("example.com", 443)`, a `std::net::SocketAddr`), under the name
/// Pingora gives it.
pub use std::net::ToSocketAddrs as ToInetSocketAddrs;

/// The first address `address` resolves to. Panics if it resolves to none
/// (Pingora's infallible constructors do the same; the `try_` forms
/// return an error instead).
fn resolve_or_panic<A: ToInetSocketAddrs>(address: A) -> SocketAddr {
    match address.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => SocketAddr::Inet(a),
        None => panic!("peer address does not resolve to any socket address"),
    }
}

/// Resolve `address` (`host:port`, or `unix:/path`) to one socket address.
fn resolve(address: &str) -> Result<SocketAddr> {
    if let Some(path) = address.strip_prefix("unix:") {
        return Ok(SocketAddr::Unix(Some(path.into())));
    }
    address
        .to_socket_addrs()
        .or_err_with(InvalidInput, || format!("invalid peer address {address:?}"))?
        .next()
        .map(SocketAddr::Inet)
        .ok_or_else(|| Error::explain(InvalidInput, format!("{address:?} resolves to nothing")))
}

/// `Peer` for a struct with `_address`, `tls`, `sni` and `options`.
macro_rules! impl_peer {
    ($t:ty) => {
        impl Peer for $t {
            fn address(&self) -> &SocketAddr {
                &self._address
            }
            fn tls(&self) -> bool {
                self.tls
            }
            fn sni(&self) -> &str {
                &self.sni
            }
            fn options(&self) -> &PeerOptions {
                &self.options
            }
        }
    };
}

/// HTTP or HTTPS: whether an [`HttpPeer`] speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain text.
    HTTP,
    /// Over TLS.
    HTTPS,
}

impl Scheme {
    /// `HTTPS` for `true`.
    pub fn from_tls_bool(tls: bool) -> Self {
        if tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::HTTP => "HTTP",
            Scheme::HTTPS => "HTTPS",
        })
    }
}

/// An HTTP CONNECT proxy to reach a peer through: a Unix socket
/// (`next_hop`) where the proxy listens, and the host and port to ask it
/// for, with extra request headers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proxy {
    /// The proxy's Unix socket path.
    pub next_hop: Box<std::path::Path>,
    /// The host to ask for (`CONNECT host:port`).
    pub host: String,
    /// The port to ask for.
    pub port: u16,
    /// Extra headers for the CONNECT request.
    pub headers: std::collections::BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "next_hop: {}, host: {}, port: {}",
            self.next_hop.display(),
            self.host,
            self.port
        )
    }
}

/// An HTTP upstream.
#[derive(Clone, Debug)]
pub struct HttpPeer {
    /// Where it is.
    pub _address: SocketAddr,
    /// HTTP or HTTPS (TLS).
    pub scheme: Scheme,
    /// The server name for SNI and certificate checks.
    pub sni: String,
    /// An HTTP CONNECT proxy to go through.
    pub proxy: Option<Proxy>,
    /// The client certificate and key to present (over the options').
    pub client_cert_key: Option<Arc<crate::listeners::tls::CertKey>>,
    /// Set apart connections that would otherwise be shared: peers that
    /// differ only in `group_key` never share a pooled connection.
    pub group_key: u64,
    /// How to connect.
    pub options: PeerOptions,
}

impl HttpPeer {
    /// A peer at `address` (anything std resolves: `"1.2.3.4:80"`,
    /// `("example.com", 443)`, a `std::net::SocketAddr`), with TLS or not,
    /// and this SNI, as Pingora's. Panics if the address resolves to
    /// nothing; [`try_new`](Self::try_new) returns an error instead.
    pub fn new<A: ToInetSocketAddrs>(address: A, tls: bool, sni: String) -> Self {
        HttpPeer::new_from_sockaddr(resolve_or_panic(address), tls, sni)
    }

    /// A peer at `address` (`host:port`, or `unix:/path`), with TLS or not,
    /// and this SNI. Fails if the address does not parse or resolve.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `address` is neither `unix:/path` nor a `host:port`
    /// that resolves to at least one address.
    pub fn try_new(address: &str, tls: bool, sni: String) -> Result<Self> {
        Ok(HttpPeer::new_from_sockaddr(resolve(address)?, tls, sni))
    }

    /// A peer at an address already resolved (no parsing, no lookup).
    pub fn new_from_sockaddr(address: SocketAddr, tls: bool, sni: String) -> Self {
        HttpPeer {
            _address: address,
            scheme: Scheme::from_tls_bool(tls),
            sni,
            proxy: None,
            client_cert_key: None,
            group_key: 0,
            options: PeerOptions::default(),
        }
    }

    /// A peer on a Unix socket. (Pingora's returns a `Result`; this
    /// cannot fail.)
    pub fn new_uds(path: &str, tls: bool, sni: String) -> Self {
        HttpPeer::new_from_sockaddr(SocketAddr::Unix(Some(path.into())), tls, sni)
    }

    /// A TLS peer that presents this client certificate, as Pingora's.
    pub fn new_mtls<A: ToInetSocketAddrs>(
        address: A,
        sni: String,
        client_cert_key: Arc<crate::listeners::tls::CertKey>,
    ) -> Self {
        let mut p = HttpPeer::new(address, true, sni);
        p.client_cert_key = Some(client_cert_key);
        p
    }

    /// A peer at `ip_addr:port` reached through the HTTP CONNECT proxy
    /// listening on the Unix socket `next_hop`, which is asked for
    /// `ip_addr:port` with `headers`; as Pingora's.
    pub fn new_proxy(
        next_hop: &str,
        ip_addr: std::net::IpAddr,
        port: u16,
        tls: bool,
        sni: &str,
        headers: std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Self {
        let mut p = HttpPeer::new_from_sockaddr(
            SocketAddr::Inet((ip_addr, port).into()),
            tls,
            sni.to_string(),
        );
        p.proxy = Some(Proxy {
            next_hop: std::path::PathBuf::from(next_hop).into(),
            host: ip_addr.to_string(),
            port,
            headers,
        });
        p
    }

    /// The address.
    pub fn address(&self) -> &SocketAddr {
        &self._address
    }

    /// Whether to speak TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// Whether connections made for this peer and for another with the
    /// same hash are interchangeable.
    pub fn reuse_hash(&self) -> u64 {
        Peer::reuse_hash(self)
    }
}

impl Peer for HttpPeer {
    fn address(&self) -> &SocketAddr {
        &self._address
    }
    fn tls(&self) -> bool {
        self.is_tls()
    }
    fn sni(&self) -> &str {
        &self.sni
    }
    fn options(&self) -> &PeerOptions {
        &self.options
    }
    fn get_client_cert_key(&self) -> Option<&Arc<crate::listeners::tls::CertKey>> {
        self.client_cert_key
            .as_ref()
            .or(self.options.client_cert_key.as_ref())
    }
    fn get_proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }
    fn get_mut_peer_options(&mut self) -> Option<&mut PeerOptions> {
        Some(&mut self.options)
    }
    fn reuse_hash(&self) -> u64 {
        let mut h = crate::utils::KeyHasher::default();
        self._address.hash(&mut h);
        self.is_tls().hash(&mut h);
        self.sni.hash(&mut h);
        self.options.hash_into(&mut h);
        self.proxy.hash(&mut h);
        self.group_key.hash(&mut h);
        self.client_cert_key.as_ref().map(|c| c.id()).hash(&mut h);
        h.finish()
    }
}

impl std::fmt::Display for HttpPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{} (sni {:?})",
            if self.is_tls() { "tls://" } else { "" },
            self._address,
            self.sni
        )?;
        if let Some(p) = &self.proxy {
            write!(f, " via {p}")?;
        }
        Ok(())
    }
}

/// An L4 (TCP or Unix) upstream, plain or TLS: what a TCP proxy connects
/// to.
#[derive(Clone, Debug)]
pub struct BasicPeer {
    /// Where it is.
    pub _address: SocketAddr,
    /// Whether to speak TLS.
    pub tls: bool,
    /// The server name for SNI and certificate checks (TLS only).
    pub sni: String,
    /// How to connect (the HTTP settings do not apply; ALPN is offered
    /// only if set).
    pub options: PeerOptions,
}

impl BasicPeer {
    /// A plain peer at `address` (`host:port`, or `unix:/path`), as
    /// Pingora's; [`try_new`](Self::try_new) returns an error instead of
    /// panicking.
    ///
    /// # Panics
    ///
    /// If the address does not parse or resolve.
    pub fn new(address: &str) -> Self {
        match Self::try_new(address) {
            Ok(p) => p,
            Err(e) => panic!("invalid peer address: {e}"),
        }
    }

    /// A plain peer at `address` (`host:port`, or `unix:/path`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `address` is neither `unix:/path` nor a `host:port`
    /// that resolves to at least one address.
    pub fn try_new(address: &str) -> Result<Self> {
        Ok(BasicPeer {
            _address: resolve(address)?,
            tls: false,
            sni: String::new(),
            options: PeerOptions::default(),
        })
    }

    /// A TLS peer at `address`, reached by the name `sni`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `address` is neither `unix:/path` nor a `host:port`
    /// that resolves to at least one address.
    pub fn new_tls(address: &str, sni: String) -> Result<Self> {
        let mut p = Self::try_new(address)?;
        p.tls = true;
        p.sni = sni;
        // No HTTP here: no ALPN unless the user asks for one.
        p.options.alpn = ALPN::None;
        Ok(p)
    }
}

impl_peer!(BasicPeer);

impl std::fmt::Display for BasicPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls {
            write!(f, "tls://{} (sni {:?})", self._address, self.sni)
        } else {
            write!(f, "{}", self._address)
        }
    }
}

#[cfg(test)]
mod tests;
