//! Listeners: the TCP and Unix-domain sockets a service accepts on.
//!
//! Each listening socket is known by its address string as configured
//! (`"0.0.0.0:80"`, `"/run/app.sock"`). That string is also its key in the
//! [`ListenFds`] table, which is what a graceful upgrade hands to the new
//! process: a listener whose key is in the inherited table is taken from it
//! instead of being bound again, so no connection attempt meets a closed
//! port.

use std::fs::Permissions;
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use pingora_error::{Error, ErrorType, OkOrErr, OrErr, Result};

mod fds;
mod filter;
#[cfg(feature = "any_tls")]
pub mod tls;
// The same names without a TLS library: every constructor an error.
#[cfg(not(feature = "any_tls"))]
#[path = "no_tls.rs"]
pub mod tls;

use crate::protocols::sockopt::set_tcp_int;
/// Where the TCP keepalive settings live (shared with the connectors).
pub use crate::protocols::sockopt::TcpKeepalive;
/// Pingora's path to the ALPN choice (`TlsSettings::set_alpn`).
pub use crate::upstreams::peer::ALPN;
pub use fds::{FdsGuard, ListenFds};
pub use filter::{AddressFilter, ConnectionFilter};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
/// Pingora's paths to the TLS accept hooks.
#[cfg(feature = "any_tls")]
#[cfg_attr(docsrs, doc(cfg(any(feature = "openssl", feature = "boringssl"))))]
pub use tls::{TlsAccept, TlsAcceptCallbacks};

/// Per-listener TCP options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpSocketOptions {
    /// `IPV6_V6ONLY` on an IPv6 listener: `true` accepts IPv6 only,
    /// `false` also IPv4-mapped. Unset keeps the system default.
    pub ipv6_only: Option<bool>,
    /// `SO_REUSEPORT`: let several sockets bind the same address.
    pub reuseport: Option<bool>,
    /// The accept backlog (default [`DEFAULT_BACKLOG`], capped by the
    /// kernel's `somaxconn`).
    pub backlog: Option<u32>,
    /// `TCP_FASTOPEN` with this queue length.
    pub tcp_fastopen: Option<u32>,
    /// Keepalive probes, inherited by accepted connections.
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// The default accept backlog.
pub const DEFAULT_BACKLOG: u32 = 65535;

/// An address to listen on.
#[derive(Debug, Clone)]
pub enum ServerAddress {
    /// `host:port` (IPv6 in brackets), with options.
    Tcp(String, Option<TcpSocketOptions>),
    /// A Unix socket path, with the file mode to give it.
    Uds(String, Option<Permissions>),
}

impl ServerAddress {
    /// The key of this address in a [`ListenFds`] table.
    pub fn key(&self) -> &str {
        match self {
            ServerAddress::Tcp(a, _) | ServerAddress::Uds(a, _) => a,
        }
    }

    /// Take this listener from `fds` if it was inherited, else bind it, and
    /// record it in `fds` for a later hand-over.
    ///
    /// # Errors
    ///
    /// `BindError` if the address does not resolve, a socket option, `bind` or
    /// `listen` fails, or a Unix path exists and is not a socket; `SocketError`
    /// if the listener cannot be made non-blocking.
    pub fn bind(&self, fds: &ListenFds) -> Result<BoundListener> {
        let inherited = fds.take_inherited(self.key());
        let l = match (self, inherited) {
            // SAFETY (both arms): the fd was received from the previous
            // process for exactly this key, is a listening socket of this
            // kind, and is owned by nobody else in this process.
            (ServerAddress::Tcp(..), Some(fd)) => {
                // SAFETY: see above.
                BoundListener::Tcp(unsafe { std::net::TcpListener::from_raw_fd(fd) })
            }
            (ServerAddress::Uds(..), Some(fd)) => {
                // SAFETY: see above.
                BoundListener::Unix(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
            }
            (ServerAddress::Tcp(addr, opt), None) => bind_tcp(addr, opt.as_ref())?,
            (ServerAddress::Uds(path, perm), None) => bind_uds(path, perm.clone())?,
        };
        l.set_nonblocking()?;
        fds.add(self.key().to_string(), l.as_raw_fd());
        Ok(l)
    }
}

/// A bound, listening socket.
#[derive(Debug)]
pub enum BoundListener {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// Unix domain.
    Unix(std::os::unix::net::UnixListener),
}

impl BoundListener {
    /// The raw fd.
    pub fn as_raw_fd(&self) -> RawFd {
        match self {
            BoundListener::Tcp(l) => l.as_raw_fd(),
            BoundListener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// A second handle to the same socket (for another runtime to accept on).
    ///
    /// # Errors
    ///
    /// `SocketError` if the fd cannot be duplicated (`dup` fails).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(match self {
            BoundListener::Tcp(l) => BoundListener::Tcp(
                l.try_clone()
                    .or_err(ErrorType::SocketError, "dup listener")?,
            ),
            BoundListener::Unix(l) => BoundListener::Unix(
                l.try_clone()
                    .or_err(ErrorType::SocketError, "dup listener")?,
            ),
        })
    }

    fn set_nonblocking(&self) -> Result<()> {
        match self {
            BoundListener::Tcp(l) => l.set_nonblocking(true),
            BoundListener::Unix(l) => l.set_nonblocking(true),
        }
        .or_err(ErrorType::SocketError, "set listener non-blocking")
    }

    /// The local address, for logs (and for tests that bind port 0).
    pub fn local_addr(&self) -> Option<crate::protocols::SocketAddr> {
        match self {
            BoundListener::Tcp(l) => l.local_addr().ok().map(Into::into),
            BoundListener::Unix(l) => l.local_addr().ok().map(|a| {
                crate::protocols::SocketAddr::Unix(a.as_pathname().map(|p| p.to_path_buf()))
            }),
        }
    }
}

/// The one socket address a listen address (`host:port`) names: its
/// first, if a name resolves to several.
pub(crate) fn resolve_listen_addr(addr: &str) -> Result<std::net::SocketAddr> {
    addr.to_socket_addrs()
        .or_err_with(ErrorType::BindError, || {
            format!("invalid listen address {addr:?}")
        })?
        .next()
        .or_err_with(ErrorType::BindError, || {
            format!("{addr:?} resolves to no address")
        })
}

fn bind_tcp(addr: &str, opt: Option<&TcpSocketOptions>) -> Result<BoundListener> {
    let sock_addr = resolve_listen_addr(addr)?;
    let ctx = |what: &str| format!("{what} on listener {addr}");
    let socket = Socket::new(
        Domain::for_address(sock_addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .or_err_with(ErrorType::BindError, || ctx("socket()"))?;
    socket
        .set_reuse_address(true)
        .or_err_with(ErrorType::BindError, || ctx("SO_REUSEADDR"))?;
    let default = TcpSocketOptions::default();
    let opt = opt.unwrap_or(&default);
    if let Some(v6only) = opt.ipv6_only {
        if sock_addr.is_ipv6() {
            socket
                .set_only_v6(v6only)
                .or_err_with(ErrorType::BindError, || ctx("IPV6_V6ONLY"))?;
        }
    }
    if let Some(reuse) = opt.reuseport {
        socket
            .set_reuse_port(reuse)
            .or_err_with(ErrorType::BindError, || ctx("SO_REUSEPORT"))?;
    }
    if let Some(ka) = &opt.tcp_keepalive {
        ka.apply(socket2::SockRef::from(&socket))
            .or_err_with(ErrorType::BindError, || ctx("TCP keepalive"))?;
    }
    if let Some(qlen) = opt.tcp_fastopen {
        set_tcp_int(socket.as_raw_fd(), libc::TCP_FASTOPEN, qlen as libc::c_int)
            .or_err_with(ErrorType::BindError, || ctx("TCP_FASTOPEN"))?;
    }
    socket
        .bind(&SockAddr::from(sock_addr))
        .or_err_with(ErrorType::BindError, || format!("bind {addr}"))?;
    let backlog = opt.backlog.unwrap_or(DEFAULT_BACKLOG).min(i32::MAX as u32) as i32;
    socket
        .listen(backlog)
        .or_err_with(ErrorType::BindError, || format!("listen {addr}"))?;
    Ok(BoundListener::Tcp(socket.into()))
}

fn bind_uds(path: &str, perm: Option<Permissions>) -> Result<BoundListener> {
    // A socket file left by a process that is gone would make bind fail;
    // remove it, but never remove anything that is not a socket.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        } else {
            return Error::e_explain(
                ErrorType::BindError,
                format!("{path} exists and is not a socket"),
            );
        }
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .or_err_with(ErrorType::BindError, || format!("bind unix socket {path}"))?;
    let perm = perm.unwrap_or_else(|| Permissions::from_mode(0o666));
    std::fs::set_permissions(path, perm)
        .or_err_with(ErrorType::BindError, || format!("chmod unix socket {path}"))?;
    Ok(BoundListener::Unix(l))
}

/// The TLS handshake of a listener, if it has one (always none in a build
/// without a TLS library).
pub type TlsHandshake = Option<Arc<tls::Acceptor>>;

/// Names the type; its state is not shown.
impl std::fmt::Debug for AcceptOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptOptions").finish_non_exhaustive()
    }
}

/// What happens to each connection a listener accepts, before the app
/// sees it.
#[derive(Clone)]
pub struct AcceptOptions {
    /// The TLS handshake, for a TLS listener.
    pub tls: TlsHandshake,
    /// Read a PROXY protocol header (v1 or v2) first; a connection without
    /// a valid one is closed.
    pub proxy_protocol: bool,
    /// Time allowed for the PROXY protocol header.
    pub proxy_protocol_timeout: Duration,
    /// Take HTTP/2 with prior knowledge (h2c) on this plain listener
    /// (`Some(true)`), or not (`Some(false)`); `None` leaves it to the
    /// app (`HttpServer::set_h2c`). Recorded in each connection's
    /// [`SocketDigest::h2c`](crate::protocols::SocketDigest::h2c).
    pub h2c: Option<bool>,
}

impl Default for AcceptOptions {
    fn default() -> Self {
        AcceptOptions {
            tls: None,
            proxy_protocol: false,
            proxy_protocol_timeout: crate::protocols::proxy_protocol::DEFAULT_HEADER_TIMEOUT,
            h2c: None,
        }
    }
}

/// A set of addresses to listen on, each plain or TLS, each optionally
/// reading the PROXY protocol, all behind an optional connection filter.
#[derive(Clone, Default)]
pub struct Listeners {
    addrs: Vec<ServerAddress>,
    accept: Vec<AcceptOptions>,
    filter: Option<Arc<dyn ConnectionFilter>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tls: Vec<bool> = self.accept.iter().map(|a| a.tls.is_some()).collect();
        f.debug_struct("Listeners")
            .field("addrs", &self.addrs)
            .field("tls", &tls)
            .field("filter", &self.filter)
            .finish()
    }
}

impl Listeners {
    /// No addresses yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One TCP address.
    pub fn tcp(addr: &str) -> Self {
        let mut l = Self::new();
        l.add_tcp(addr);
        l
    }

    /// One TLS address serving these PEM files (as Pingora's).
    ///
    /// # Errors
    ///
    /// Those of [`add_tls`](Self::add_tls): `FileReadError`, `InvalidCert`,
    /// `InternalError`.
    pub fn tls(addr: &str, cert_path: &str, key_path: &str) -> Result<Self> {
        let mut l = Self::new();
        l.add_tls(addr, cert_path, key_path)?;
        Ok(l)
    }

    /// One Unix socket.
    pub fn uds(path: &str, perm: Option<Permissions>) -> Self {
        let mut l = Self::new();
        l.add_uds(path, perm);
        l
    }

    /// Add a TCP address with default options.
    pub fn add_tcp(&mut self, addr: &str) {
        self.add_address(ServerAddress::Tcp(addr.into(), None));
    }

    /// Add a TCP address with options.
    pub fn add_tcp_with_settings(&mut self, addr: &str, opt: TcpSocketOptions) {
        self.add_address(ServerAddress::Tcp(addr.into(), Some(opt)));
    }

    /// Add a Unix socket.
    pub fn add_uds(&mut self, path: &str, perm: Option<Permissions>) {
        self.add_address(ServerAddress::Uds(path.into(), perm));
    }

    /// Add any address (plain, no TLS).
    pub fn add_address(&mut self, addr: ServerAddress) {
        self.addrs.push(addr);
        self.accept.push(AcceptOptions::default());
    }

    /// Add a TLS listener on a TCP address, serving the certificate and
    /// key in these PEM files with default settings.
    ///
    /// # Errors
    ///
    /// `FileReadError` if a file cannot be read; `InvalidCert` if it holds no
    /// PEM certificate or key, or they do not match; `InternalError` if the TLS
    /// library fails (always, in a build without one).
    pub fn add_tls(&mut self, addr: &str, cert_path: &str, key_path: &str) -> Result<()> {
        let settings = tls::TlsSettings::intermediate(cert_path, key_path)?;
        self.add_tls_with_settings(addr, None, settings)
    }

    /// Add a TLS listener on a TCP address with these socket options and
    /// TLS settings. Errors (a bad certificate, an unknown group) are
    /// reported here, at start-up.
    ///
    /// # Errors
    ///
    /// Those of [`TlsSettings::build`](tls::TlsSettings::build) (`ConfError`,
    /// `InvalidCert`, `FileReadError`, `InternalError`), with `addr` in the
    /// context; nothing is added then.
    pub fn add_tls_with_settings(
        &mut self,
        addr: &str,
        opt: Option<TcpSocketOptions>,
        settings: tls::TlsSettings,
    ) -> Result<()> {
        let acceptor = settings.build().map_err(|mut e| {
            e.add_context(format!("TLS listener {addr}"));
            e
        })?;
        self.addrs.push(ServerAddress::Tcp(addr.into(), opt));
        self.accept.push(AcceptOptions {
            tls: Some(Arc::new(acceptor)),
            ..Default::default()
        });
        Ok(())
    }

    /// The accept options of the listener at `addr` (as it was added); an
    /// error naming `addr` and `what` was to be done if there is none.
    fn accept_of(&mut self, addr: &str, what: &str) -> Result<&mut AcceptOptions> {
        let i = self
            .addrs
            .iter()
            .position(|a| a.key() == addr)
            .or_err_with(ErrorType::InvalidInput, || {
                format!("no listener {addr:?} {what}")
            })?;
        Ok(&mut self.accept[i])
    }

    /// Read a PROXY protocol header (v1 or v2) at the start of every
    /// connection to the listener at `addr` (as it was added), before any
    /// TLS handshake. Connections without a valid header within `timeout`
    /// are closed with a logged reason.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if no listener was added at `addr`.
    pub fn enable_proxy_protocol(&mut self, addr: &str, timeout: Option<Duration>) -> Result<()> {
        let accept = self.accept_of(addr, "to enable the PROXY protocol on")?;
        accept.proxy_protocol = true;
        if let Some(t) = timeout {
            accept.proxy_protocol_timeout = t;
        }
        Ok(())
    }

    /// Whether the plain listener at `addr` (as it was added) takes HTTP/2
    /// with prior knowledge (h2c) beside HTTP/1, overriding the app's own
    /// default (`HttpServer::set_h2c`) for its connections. Over TLS,
    /// HTTP/2 is chosen by ALPN and this does not apply.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if no listener was added at `addr`.
    pub fn set_h2c(&mut self, addr: &str, on: bool) -> Result<()> {
        self.accept_of(addr, "to set h2c on")?.h2c = Some(on);
        Ok(())
    }

    /// Filter the connections of every listener in this set by peer
    /// address, before anything is read from them.
    pub fn set_connection_filter(&mut self, filter: Arc<dyn ConnectionFilter>) {
        self.filter = Some(filter);
    }

    /// The connection filter, if one is set.
    pub fn connection_filter(&self) -> Option<&Arc<dyn ConnectionFilter>> {
        self.filter.as_ref()
    }

    /// What happens on accept for each address, in the order of
    /// [`addresses`](Self::addresses).
    pub fn accept_options(&self) -> &[AcceptOptions] {
        &self.accept
    }

    /// The addresses.
    pub fn addresses(&self) -> &[ServerAddress] {
        &self.addrs
    }

    /// Bind (or inherit) every address.
    ///
    /// # Errors
    ///
    /// The first failure of [`ServerAddress::bind`] (`BindError`,
    /// `SocketError`).
    pub fn bind_all(&self, fds: &ListenFds) -> Result<Vec<BoundListener>> {
        self.addrs.iter().map(|a| a.bind(fds)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_tcp_with_options_and_inherits() {
        let fds = ListenFds::new();
        let opt = TcpSocketOptions {
            reuseport: Some(true),
            backlog: Some(16),
            tcp_fastopen: Some(8),
            tcp_keepalive: Some(TcpKeepalive {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(5),
                count: 3,
                user_timeout: Duration::from_secs(20),
            }),
            ..Default::default()
        };
        let addr = ServerAddress::Tcp("127.0.0.1:0".into(), Some(opt));
        let l = addr.bind(&fds).unwrap();
        let BoundListener::Tcp(std_l) = &l else {
            panic!()
        };
        let sock = socket2::SockRef::from(std_l);
        assert!(sock.reuse_port().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(30));
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(20))
        );
        assert_eq!(fds.own(), vec![("127.0.0.1:0".to_string(), l.as_raw_fd())]);

        // A second table that inherited the fd takes it instead of binding.
        let dup = l.try_clone().unwrap();
        let fd = dup.as_raw_fd();
        std::mem::forget(dup);
        let fds2 = ListenFds::new();
        fds2.set_inherited(vec![("127.0.0.1:0".into(), fd)]);
        let l2 = addr.bind(&fds2).unwrap();
        assert_eq!(l2.as_raw_fd(), fd);
        assert_eq!(l2.local_addr(), l.local_addr());
        assert!(fds2.unclaimed().is_empty());
    }

    #[test]
    fn binds_ipv6_only() {
        let fds = ListenFds::new();
        let opt = TcpSocketOptions {
            ipv6_only: Some(true),
            ..Default::default()
        };
        match ServerAddress::Tcp("[::1]:0".into(), Some(opt)).bind(&fds) {
            Ok(BoundListener::Tcp(l)) => {
                assert!(socket2::SockRef::from(&l).only_v6().unwrap());
            }
            Ok(_) => unreachable!(),
            // No IPv6 on this machine: nothing to check.
            Err(e) => assert_eq!(e.etype(), &ErrorType::BindError),
        }
    }

    #[test]
    fn uds_mode_and_stale_file() {
        let dir = std::env::temp_dir().join(format!("pingora-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let p = path.to_str().unwrap();
        let fds = ListenFds::new();
        let l = ServerAddress::Uds(p.into(), Some(Permissions::from_mode(0o600)))
            .bind(&fds)
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(l);
        // The stale socket file is replaced.
        ServerAddress::Uds(p.into(), None).bind(&fds).unwrap();
        // A regular file is never removed.
        let f = dir.join("plain");
        std::fs::write(&f, b"x").unwrap();
        let e = ServerAddress::Uds(f.to_str().unwrap().into(), None)
            .bind(&fds)
            .unwrap_err();
        assert!(e.to_string().contains("not a socket"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proxy_protocol_needs_a_known_listener() {
        let mut l = Listeners::tcp("127.0.0.1:0");
        l.enable_proxy_protocol("127.0.0.1:0", None).unwrap();
        assert!(l.accept_options()[0].proxy_protocol);
        let e = l.enable_proxy_protocol("127.0.0.1:1", None).unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:1"));
    }

    #[test]
    fn bad_address_is_an_error() {
        let e = ServerAddress::Tcp("not an address".into(), None)
            .bind(&ListenFds::new())
            .unwrap_err();
        assert_eq!(e.etype(), &ErrorType::BindError);
        assert!(e.to_string().contains("not an address"));
    }
}
