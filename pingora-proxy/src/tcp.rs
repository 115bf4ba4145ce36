//! The TCP (L4) proxy: accept a connection (plain, or TLS-terminating on a
//! TLS listener), choose an upstream with [`TcpProxyHandler::upstream_peer`],
//! connect (plain, or TLS-originating when the peer says so, with a PROXY
//! protocol header first if its options carry one), then copy bytes both
//! ways until both sides are done.
//!
//! Half-close is kept: when one side finishes sending (FIN, or TLS
//! `close_notify`), the other side's write half is shut down and the
//! opposite direction goes on until it finishes too. A connection on which
//! nothing moves for [`TcpProxyOptions::idle_timeout`] is closed. The
//! [`TcpProxyHandler::logging`] callback runs once per connection with the
//! byte counts and the error, if any.
//!
//! ```no_run
//! use async_trait::async_trait;
//! use pingora_core::server::Server;
//! use pingora_core::upstreams::peer::BasicPeer;
//! use pingora_error::Result;
//! use pingora_proxy::tcp::{tcp_proxy_service, TcpProxyHandler, TcpSession};
//!
//! struct ToEcho;
//!
//! #[async_trait]
//! impl TcpProxyHandler for ToEcho {
//!     type CTX = ();
//!     fn new_ctx(&self) {}
//!     async fn upstream_peer(&self, _s: &TcpSession, _ctx: &mut ()) -> Result<Box<BasicPeer>> {
//!         Ok(Box::new(BasicPeer::try_new("127.0.0.1:7")?))
//!     }
//! }
//!
//! let mut server = Server::new(None).unwrap();
//! server.bootstrap();
//! let mut proxy = tcp_proxy_service(&server.configuration, ToEcho);
//! proxy.add_tcp("127.0.0.1:6190");
//! server.add_service(proxy);
//! server.run_forever();
//! ```

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::{SocketAddr, SocketDigest, Stream, TlsDigest};
use pingora_core::server::{ServerConf, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::BasicPeer;
use pingora_error::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, warn};

/// The user's part of a TCP proxy.
#[async_trait]
pub trait TcpProxyHandler: Send + Sync + 'static {
    /// Per-connection state.
    type CTX: Send + Sync;

    /// A fresh context for a new connection.
    fn new_ctx(&self) -> Self::CTX;

    /// Where to send this connection. After a failed connect it is asked
    /// again (up to [`TcpProxyOptions::max_retries`] times), with
    /// [`TcpSession::previous_error`] set, and may pick another upstream.
    async fn upstream_peer(
        &self,
        session: &TcpSession,
        ctx: &mut Self::CTX,
    ) -> Result<Box<BasicPeer>>;

    /// The upstream connection is up (`connect_time` includes TLS).
    async fn connected_to_upstream(
        &self,
        _session: &TcpSession,
        _peer: &BasicPeer,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        Ok(())
    }

    /// Called once per connection, at its end, with the error that ended
    /// it if any. The session has the byte counts and timings.
    async fn logging(&self, _session: &TcpSession, _e: Option<&Error>, _ctx: &mut Self::CTX) {}
}

/// Settings of a [`TcpProxy`].
#[derive(Debug, Clone)]
pub struct TcpProxyOptions {
    /// Close a connection on which nothing moved in either direction for
    /// this long (nginx's `proxy_timeout`; default 10 minutes).
    pub idle_timeout: Duration,
    /// Connect attempts after the first that failed (default 1).
    pub max_retries: usize,
    /// Bytes buffered per direction (default 16 KiB, one TLS record).
    pub buffer_size: usize,
}

impl Default for TcpProxyOptions {
    fn default() -> Self {
        TcpProxyOptions {
            idle_timeout: Duration::from_secs(600),
            max_retries: 1,
            buffer_size: 16 * 1024,
        }
    }
}

/// Names the type; its state is not shown.
impl std::fmt::Debug for TcpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSession").finish_non_exhaustive()
    }
}

/// One proxied connection, as the callbacks see it.
pub struct TcpSession {
    downstream: Stream,
    start: Instant,
    retries: usize,
    previous_error: Option<Box<Error>>,
    upstream: Option<String>,
    connect_time: Option<Duration>,
    /// Bytes read from the client and sent upstream.
    pub bytes_from_downstream: u64,
    /// Bytes read from the upstream and sent to the client.
    pub bytes_from_upstream: u64,
}

impl TcpSession {
    /// The client connection's socket digest (addresses, PROXY header).
    pub fn socket_digest(&self) -> Option<&SocketDigest> {
        self.downstream.socket_digest()
    }

    /// The client: the original one a PROXY header named, else the peer.
    pub fn client_addr(&self) -> Option<&SocketAddr> {
        self.socket_digest()?.client_addr()
    }

    /// The local address the client connected to.
    pub fn server_addr(&self) -> Option<&SocketAddr> {
        self.socket_digest()?.local_addr.as_ref()
    }

    /// The TLS digest, on a TLS listener.
    pub fn tls_digest(&self) -> Option<&TlsDigest> {
        self.downstream.tls_digest()
    }

    /// Failed connect attempts so far.
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// Why the last connect attempt failed.
    pub fn previous_error(&self) -> Option<&Error> {
        self.previous_error.as_deref()
    }

    /// The upstream connected to, once connected.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.as_deref()
    }

    /// How long the upstream connect took.
    pub fn connect_time(&self) -> Option<Duration> {
        self.connect_time
    }

    /// Time since the connection was handed to the proxy.
    pub fn duration(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Names the type; its state is not shown.
impl<H> std::fmt::Debug for TcpProxy<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpProxy").finish_non_exhaustive()
    }
}

/// The TCP proxy app: runs a [`TcpProxyHandler`] for every connection.
pub struct TcpProxy<H> {
    handler: H,
    connector: TransportConnector,
    options: TcpProxyOptions,
}

impl<H: TcpProxyHandler> TcpProxy<H> {
    /// A proxy with default options, connecting with the conf's CA file.
    pub fn new(conf: &Arc<ServerConf>, handler: H) -> Self {
        Self::with_options(conf, handler, TcpProxyOptions::default())
    }

    /// A proxy with these options.
    pub fn with_options(conf: &Arc<ServerConf>, handler: H, options: TcpProxyOptions) -> Self {
        TcpProxy {
            handler,
            connector: TransportConnector::new(Some(ConnectorOptions::from_server_conf(conf))),
            options,
        }
    }

    async fn connect(&self, s: &mut TcpSession, ctx: &mut H::CTX) -> Result<Stream> {
        loop {
            let peer = self.handler.upstream_peer(s, ctx).await?;
            let t = Instant::now();
            // Never pooled: each client gets a connection of its own.
            match self.connector.new_stream(&*peer).await {
                Ok(up) => {
                    s.connect_time = Some(t.elapsed());
                    s.upstream = Some(peer.to_string());
                    self.handler.connected_to_upstream(s, &peer, ctx).await?;
                    return Ok(up);
                }
                Err(e) if s.retries < self.options.max_retries => {
                    debug!("connecting to {peer} failed, retrying: {e}");
                    s.retries += 1;
                    s.previous_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A TCP proxy service named "TCP proxy".
pub fn tcp_proxy_service<H: TcpProxyHandler>(
    conf: &Arc<ServerConf>,
    handler: H,
) -> Service<TcpProxy<H>> {
    Service::new("TCP proxy".into(), TcpProxy::new(conf, handler))
}

#[async_trait]
impl<H: TcpProxyHandler> ServerApp for TcpProxy<H> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut ctx = self.handler.new_ctx();
        let mut s = TcpSession {
            downstream: stream,
            start: Instant::now(),
            retries: 0,
            previous_error: None,
            upstream: None,
            connect_time: None,
            bytes_from_downstream: 0,
            bytes_from_upstream: 0,
        };
        let result = match self.connect(&mut s, &mut ctx).await {
            Ok(mut up) => {
                let mut pump = Duplex::new(self.options.buffer_size);
                let r = pump
                    .run(&mut s.downstream, &mut up, self.options.idle_timeout)
                    .await;
                s.bytes_from_downstream = pump.ab.bytes;
                s.bytes_from_upstream = pump.ba.bytes;
                r
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            let client = s.client_addr().map(|a| a.to_string()).unwrap_or_default();
            warn!(client, upstream = s.upstream(), "TCP proxy: {e}");
        }
        self.handler
            .logging(&s, result.as_ref().err().map(|e| &**e), &mut ctx)
            .await;
        // The connection is not reused: one client, one proxied session.
        None
    }
}

/// One direction of a [`Duplex`].
struct Half {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    read_done: bool,
    shut_done: bool,
    /// Bytes written to the other side.
    bytes: u64,
}

impl Half {
    fn new(size: usize) -> Self {
        Half {
            buf: vec![0; size.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
            read_done: false,
            shut_done: false,
            bytes: 0,
        }
    }

    /// Move what can be moved from `src` to `dst` without waiting.
    /// `Ready(Ok(true))`: something changed; `Pending`: nothing could.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &mut Stream,
        dst: &mut Stream,
    ) -> Poll<io::Result<bool>> {
        let mut progress = false;
        loop {
            if self.start < self.end {
                match Pin::new(&mut *dst).poll_write(cx, &self.buf[self.start..self.end]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        self.bytes += n as u64;
                        progress = true;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if !self.read_done {
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        self.start = 0;
                        self.end = n;
                        if n == 0 {
                            self.read_done = true;
                        }
                        progress = true;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if progress {
                            // Push out what a buffered writer holds.
                            if let Poll::Ready(Err(e)) = Pin::new(&mut *dst).poll_flush(cx) {
                                return Poll::Ready(Err(e));
                            }
                        }
                        break;
                    }
                }
            }
            if !self.shut_done {
                // The source finished: pass the half-close on.
                match Pin::new(&mut *dst).poll_shutdown(cx) {
                    Poll::Ready(r) => {
                        // A peer that already left cannot be told; that
                        // is not an error of the exchange.
                        if let Err(e) = r {
                            debug!("shutting down a write half: {e}");
                        }
                        self.shut_done = true;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            break;
        }
        if progress {
            Poll::Ready(Ok(true))
        } else {
            Poll::Pending
        }
    }

    fn done(&self) -> bool {
        self.shut_done
    }
}

/// Copies bytes both ways between two streams, with half-close.
struct Duplex {
    ab: Half,
    ba: Half,
}

impl Duplex {
    fn new(size: usize) -> Self {
        Duplex {
            ab: Half::new(size),
            ba: Half::new(size),
        }
    }

    /// Until both directions finished, an error, or `idle` without
    /// anything moving.
    async fn run(&mut self, a: &mut Stream, b: &mut Stream, idle: Duration) -> Result<()> {
        while !(self.ab.done() && self.ba.done()) {
            let step = poll_fn(|cx| {
                let x = if self.ab.done() {
                    Poll::Pending
                } else {
                    self.ab.poll(cx, a, b)
                };
                if let Poll::Ready(Err(e)) = x {
                    return Poll::Ready(Err(e));
                }
                let y = if self.ba.done() {
                    Poll::Pending
                } else {
                    self.ba.poll(cx, b, a)
                };
                match (x, y) {
                    (_, Poll::Ready(Err(e))) => Poll::Ready(Err(e)),
                    (Poll::Pending, Poll::Pending) => Poll::Pending,
                    _ => Poll::Ready(Ok(())),
                }
            });
            match pingora_timeout::timeout(idle, step).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Error::e_because(
                        ErrorType::ReadError,
                        "copying between client and upstream",
                        e,
                    )
                }
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::ReadTimedout,
                        format!("nothing moved for {idle:?}: idle timeout"),
                    )
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::L4Stream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A loopback TCP connection: the far end, and ours as a Stream.
    async fn pair() -> (TcpStream, Stream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (near, _) = l.accept().await.unwrap();
        (far, Box::new(L4Stream::from_tcp(near)))
    }

    #[tokio::test]
    async fn duplex_copies_both_ways_with_half_close() {
        let (mut client, mut a) = pair().await;
        let (mut server, mut b) = pair().await;
        let pump = tokio::spawn(async move {
            let mut d = Duplex::new(7);
            d.run(&mut a, &mut b, Duration::from_secs(5)).await.unwrap();
            (d.ab.bytes, d.ba.bytes)
        });
        client.write_all(b"hello upstream").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello upstream");
        // The other direction still flows after the half-close.
        server.write_all(b"and back").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"and back");
        assert_eq!(pump.await.unwrap(), (14, 8));
    }

    #[tokio::test]
    async fn duplex_idle_timeout() {
        let (_client, mut a) = pair().await;
        let (_server, mut b) = pair().await;
        let e = Duplex::new(64)
            .run(&mut a, &mut b, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ReadTimedout);
    }
}
