//! One connection's digest in Pingora's shape: the socket, the TLS
//! session, the proxy hop and when each layer was set up, as
//! `ProxyHttp::connected_to_upstream` and `Session::digest` hand it out.
//!
//! Built once per connection, on first use ([`IO::connection_digest`]),
//! from what the stream already knows ([`SocketDigest`], [`TlsDigest`]),
//! and kept with it (a pooled connection keeps its digest).

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use pingora_http::ResponseHeader;

use super::tls::SslDigest;
use super::{SocketDigest, TlsDigest, IO};

/// What is known about a connection, layer by layer.
#[derive(Clone, Debug, Default)]
pub struct Digest {
    /// The TLS session, on a TLS connection.
    pub ssl_digest: Option<Arc<SslDigest>>,
    /// When each layer was set up, from the socket up (`None` for a layer
    /// that does not say).
    pub timing_digest: Vec<Option<TimingDigest>>,
    /// The CONNECT proxy's answer, for a connection through one.
    pub proxy_digest: Option<Arc<ProxyDigest>>,
    /// The socket: descriptor, addresses, PROXY protocol header.
    pub socket_digest: Option<Arc<SocketDigest>>,
}

impl Digest {
    /// The digest of a connection from its socket's and TLS session's.
    pub fn new(socket: Option<&SocketDigest>, tls: Option<&TlsDigest>) -> Self {
        let established = socket.map(|s| s.accepted_at);
        let mut timing_digest = vec![established.map(|t| TimingDigest { established_ts: t })];
        if let Some(t) = tls {
            timing_digest.push(established.map(|at| TimingDigest {
                established_ts: at + t.handshake_duration,
            }));
        }
        Digest {
            ssl_digest: tls.map(|t| Arc::new(t.clone())),
            timing_digest,
            proxy_digest: None,
            socket_digest: socket.map(|s| Arc::new(s.clone())),
        }
    }

    /// The digest of `stream`, built now (streams keep theirs: see
    /// [`IO::connection_digest`]).
    pub fn of(stream: &dyn IO) -> Self {
        Self::new(stream.socket_digest(), stream.tls_digest())
    }
}

/// When one layer of a connection was set up.
#[derive(Clone, Debug)]
pub struct TimingDigest {
    /// When the layer was established (accepted, connected, handshaken).
    pub established_ts: SystemTime,
}

impl Default for TimingDigest {
    fn default() -> Self {
        TimingDigest {
            established_ts: SystemTime::UNIX_EPOCH,
        }
    }
}

/// What an HTTP CONNECT proxy answered when the tunnel was opened.
#[derive(Debug)]
pub struct ProxyDigest {
    /// The proxy's response header.
    pub response: Box<ResponseHeader>,
    /// Whatever the user's hook kept about it.
    pub user_data: Option<Box<dyn Any + Send + Sync>>,
}

impl ProxyDigest {
    /// A digest of the proxy's `response`.
    pub fn new(
        response: Box<ResponseHeader>,
        user_data: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        ProxyDigest {
            response,
            user_data,
        }
    }
}

/// A connection digest kept by a stream, built on first use.
#[derive(Debug, Default)]
pub(crate) struct KeptDigest(std::sync::OnceLock<Box<Digest>>);

impl KeptDigest {
    /// The digest, built from `socket` and `tls` the first time.
    pub(crate) fn get(&self, socket: Option<&SocketDigest>, tls: Option<&TlsDigest>) -> &Digest {
        self.0.get_or_init(|| Box::new(Digest::new(socket, tls)))
    }
}

/// Pingora's: a stream's socket digest, shared.
pub trait GetSocketDigest {
    /// The socket's digest, if the stream has a socket.
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>>;
    /// Pingora's setter; streams here make their digest themselves, so it
    /// does nothing.
    fn set_socket_digest(&mut self, _socket_digest: SocketDigest) {}
}

/// Pingora's: when each layer of a stream was set up.
pub trait GetTimingDigest {
    /// One entry per layer, from the socket up.
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>>;
    /// Time spent waiting to read (not tracked here: zero).
    fn get_read_pending_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Time spent waiting to write (not tracked here: zero).
    fn get_write_pending_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Pingora's: what a CONNECT proxy answered for this stream.
pub trait GetProxyDigest {
    /// The proxy's digest, for a stream through one.
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>>;
    /// Pingora's setter; does nothing here.
    fn set_proxy_digest(&mut self, _digest: ProxyDigest) {}
}

/// The digest a stream keeps, or one built now.
fn digest_of<T: IO + ?Sized>(stream: &T) -> std::borrow::Cow<'_, Digest> {
    match stream.connection_digest() {
        Some(d) => std::borrow::Cow::Borrowed(d),
        None => std::borrow::Cow::Owned(Digest::new(stream.socket_digest(), stream.tls_digest())),
    }
}

impl<T: IO + ?Sized> GetSocketDigest for T {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        digest_of(self).socket_digest.clone()
    }
}

impl<T: IO + ?Sized> GetTimingDigest for T {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        digest_of(self).timing_digest.clone()
    }
}

impl<T: IO + ?Sized> GetProxyDigest for T {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        digest_of(self).proxy_digest.clone()
    }
}
