//! The listening service: listeners plus an app.
//!
//! Accept loops run on every runtime of the service (one per listener per
//! runtime). Each accepted connection is a task of its own, which hands the
//! stream to the app again for as long as the app returns it (keep-alive).
//! A panic in one connection's task is caught and logged; the service goes
//! on. On shutdown the accept loops stop, and the service waits for the
//! connections in flight to finish.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_error::Result;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use super::idle::IdleSet;
use super::{Service as ServiceTrait, ServiceContext};
use crate::apps::{IdlePolicy, ServerApp};
use crate::listeners::{
    AcceptOptions, BoundListener, ConnectionFilter, ListenFds, Listeners, TcpSocketOptions,
    TlsHandshake,
};
use crate::protocols::{into_parkable, proxy_protocol, L4Stream, Stream};
use crate::shutdown::ShutdownWatch;

/// Names the type; its state is not shown.
impl<A> std::fmt::Debug for Service<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

/// A listening service: accepts on its listeners, hands each connection to
/// the app.
pub struct Service<A> {
    name: String,
    listeners: Listeners,
    bound: Vec<BoundListener>,
    app: Arc<A>,
    /// Worker threads; `None` uses the conf's `threads`.
    pub threads: Option<usize>,
    tracker: Arc<ConnTracker>,
}

impl<A: ServerApp> Service<A> {
    /// A service named `name` with no listeners yet.
    pub fn new(name: String, app: A) -> Self {
        Self::with_listeners(name, Listeners::new(), app)
    }

    /// A service with these listeners.
    pub fn with_listeners(name: String, listeners: Listeners, app: A) -> Self {
        Service {
            name,
            listeners,
            bound: vec![],
            app: Arc::new(app),
            threads: None,
            tracker: Arc::default(),
        }
    }

    /// Listen on a TCP address.
    pub fn add_tcp(&mut self, addr: &str) {
        self.listeners.add_tcp(addr);
    }

    /// Listen on a TCP address, with options.
    pub fn add_tcp_with_settings(&mut self, addr: &str, opt: TcpSocketOptions) {
        self.listeners.add_tcp_with_settings(addr, opt);
    }

    /// Listen on a Unix socket.
    pub fn add_uds(&mut self, path: &str, perm: Option<std::fs::Permissions>) {
        self.listeners.add_uds(path, perm);
    }

    /// Listen with TLS on a TCP address, with this certificate and key
    /// (PEM files).
    ///
    /// # Errors
    ///
    /// `FileReadError` if a file cannot be read; `InvalidCert` if it holds no
    /// PEM certificate or key, or they do not match; `InternalError` if the TLS
    /// library fails (always, in a build without one).
    pub fn add_tls(&mut self, addr: &str, cert_path: &str, key_path: &str) -> Result<()> {
        self.listeners.add_tls(addr, cert_path, key_path)
    }

    /// Listen with TLS on a TCP address, with socket options and TLS
    /// settings (SNI callbacks, ALPN, mTLS, …).
    ///
    /// # Errors
    ///
    /// Those of [`Listeners::add_tls_with_settings`]: the settings do not
    /// build (`ConfError`, `InvalidCert`, `FileReadError`, `InternalError`).
    pub fn add_tls_with_settings(
        &mut self,
        addr: &str,
        opt: Option<TcpSocketOptions>,
        settings: crate::listeners::tls::TlsSettings,
    ) -> Result<()> {
        self.listeners.add_tls_with_settings(addr, opt, settings)
    }

    /// Read a PROXY protocol header (v1 or v2) first on every connection to
    /// the listener at `addr` (as added); see
    /// [`Listeners::enable_proxy_protocol`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` if no listener was added at `addr`.
    pub fn enable_proxy_protocol(
        &mut self,
        addr: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<()> {
        self.listeners.enable_proxy_protocol(addr, timeout)
    }

    /// Take HTTP/2 with prior knowledge (h2c) on the plain listener at
    /// `addr` (as added), or refuse it there, whatever the app's default;
    /// see [`Listeners::set_h2c`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` if no listener was added at `addr`.
    pub fn set_h2c(&mut self, addr: &str, on: bool) -> Result<()> {
        self.listeners.set_h2c(addr, on)
    }

    /// Most connections open at once across this service's listeners
    /// (like nginx's `worker_connections`); default: no limit. Past it a
    /// new connection is accepted and closed at once (a FIN, nothing read),
    /// so clients see a refusal rather than a hang in the backlog; a
    /// warning is logged when refusing starts, a note when it stops.
    pub fn set_max_connections(&mut self, max: Option<usize>) {
        // 0 stands for no limit (a limit of 0 would refuse everything).
        let max = max.map_or(0, |m| m.max(1));
        self.tracker.max.store(max, Ordering::Relaxed);
    }

    /// Filter connections to all of this service's listeners by peer
    /// address, before the TLS handshake.
    pub fn set_connection_filter(&mut self, filter: Arc<dyn ConnectionFilter>) {
        self.listeners.set_connection_filter(filter);
    }

    /// The app.
    pub fn app_logic(&self) -> &Arc<A> {
        &self.app
    }

    /// Connections being served right now.
    pub fn active_connections(&self) -> usize {
        self.tracker.count.load(Ordering::Acquire)
    }
}

/// Counts live connections; wakes the drain when the count reaches zero.
#[derive(Default)]
struct ConnTracker {
    count: AtomicUsize,
    idle: Notify,
    /// `max_connections`; 0: no limit.
    max: AtomicUsize,
}

struct ConnGuard(Arc<ConnTracker>);

impl ConnTracker {
    fn enter(self: &Arc<Self>) -> ConnGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ConnGuard(self.clone())
    }

    async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Polls a future, turning a panic into `Err` instead of unwinding.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic)")
}

/// What happens between accept and the app: the connection filter, the
/// PROXY protocol header, the TLS handshake. `None` closes the connection.
async fn prepare(
    mut stream: L4Stream,
    opts: &AcceptOptions,
    filter: Option<&Arc<dyn ConnectionFilter>>,
    service: &str,
) -> Option<Stream> {
    if let Some(f) = filter {
        let peer = stream.digest().peer_addr.as_ref().and_then(|a| a.as_inet());
        if !f.should_accept(peer).await {
            debug!(
                service,
                "connection from {peer:?} refused by the connection filter"
            );
            return None;
        }
    }
    if opts.h2c.is_some() {
        stream.set_h2c(opts.h2c);
    }
    if opts.proxy_protocol {
        let header = Box::pin(proxy_protocol::accept(
            &mut stream,
            opts.proxy_protocol_timeout,
        ));
        if let Err(e) = header.await {
            let peer = stream.digest().peer_addr.clone();
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            warn!(service, peer, "closing connection: {e}");
            return None;
        }
    }
    if opts.tls.is_none() {
        return Some(Box::new(stream));
    }
    // Boxed: the TLS handshake's state would otherwise grow every
    // connection's task, plain ones too, and each spawn copies it.
    Box::pin(handshake(opts.tls.clone(), stream)).await
}

/// The stream to serve: TLS after a handshake, or as accepted.
async fn handshake(tls: TlsHandshake, stream: L4Stream) -> Option<Stream> {
    let Some(acceptor) = tls else {
        return Some(Box::new(stream));
    };
    match acceptor.handshake(stream).await {
        Ok(s) => {
            crate::metrics::core().tls_handshakes.inc();
            Some(Box::new(s))
        }
        Err(e) => {
            crate::metrics::core().tls_handshake_failures.inc();
            debug!("{e}");
            None
        }
    }
}

/// An open connection, as the service counts it: in the tracker that
/// shutdown waits on, and in the `open` gauge. Dropped when the connection
/// closes, whether it was in a task or parked.
struct Live {
    _guard: ConnGuard,
    open: prometheus::IntGauge,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Parked connections of one accept loop, and what waking one needs.
struct Parking<A> {
    set: IdleSet<Live>,
    app: Arc<A>,
    shutdown: ShutdownWatch,
}

async fn serve_connection<A: ServerApp>(
    app: Arc<A>,
    stream: Stream,
    shutdown: ShutdownWatch,
    live: Live,
    parking: Option<Arc<Parking<A>>>,
) {
    let peer = Peer::of(&stream);
    let mut stream = Some(stream);
    while let Some(s) = stream.take() {
        let fut = app.process_new(s, &shutdown);
        match CatchUnwind(Box::pin(fut)).await {
            Ok(next) => stream = next,
            Err(panic) => {
                error!(%peer, "connection task panicked: {}", panic_message(&*panic));
                return;
            }
        }
        if *shutdown.borrow() {
            break;
        }
        let Some(p) = &parking else {
            continue;
        };
        let Some(s) = stream.take() else {
            break;
        };
        match into_parkable(s) {
            Ok(l4) => {
                // The task ends here; the connection waits in the set.
                match l4.into_parked() {
                    Ok(parked) => {
                        if let Err(e) = p.set.park(parked, live) {
                            debug!(%peer, "cannot park a connection: {e}");
                        }
                    }
                    Err(e) => debug!(%peer, "cannot park a connection: {e}"),
                }
                return;
            }
            Err(s) => stream = Some(s),
        }
    }
    drop(live);
}

/// The peer address of a stream, for log lines (formatted only when a line
/// is written: formatting it for every connection cost ~1,700
/// instructions and an allocation).
struct Peer(Option<crate::protocols::SocketAddr>);

impl Peer {
    fn of(stream: &Stream) -> Self {
        Peer(stream.socket_digest().and_then(|d| d.peer_addr.clone()))
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(a) => write!(f, "{a}"),
            None => Ok(()),
        }
    }
}

async fn accept_loop<A: ServerApp>(
    listener: BoundListener,
    opts: AcceptOptions,
    filter: Option<Arc<dyn ConnectionFilter>>,
    app: Arc<A>,
    tracker: Arc<ConnTracker>,
    mut shutdown: ShutdownWatch,
    name: String,
) {
    enum L {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let l = match listener {
        BoundListener::Tcp(l) => tokio::net::TcpListener::from_std(l).map(L::Tcp),
        BoundListener::Unix(l) => tokio::net::UnixListener::from_std(l).map(L::Unix),
    };
    let l = match l {
        Ok(l) => l,
        Err(e) => {
            error!(service = name, "cannot register listener: {e}");
            return;
        }
    };
    // Shared by the connections' tasks (no String copy per connection).
    let service_name: Arc<str> = Arc::from(name.as_str());
    let accepted_count = crate::metrics::core().accepted.with_label_values(&[&name]);
    let open_count = crate::metrics::core().open.with_label_values(&[&name]);
    // Connections the app hands back to be parked wait in a set of this
    // loop's, watched by a task of its own.
    let parking = match app.idle_policy() {
        IdlePolicy::CallAgain => None,
        IdlePolicy::Park(timeout) => match IdleSet::new(
            timeout,
            Some(crate::metrics::core().parked.with_label_values(&[&name])),
        ) {
            Ok(set) => Some(Arc::new(Parking {
                set,
                app: app.clone(),
                shutdown: shutdown.clone(),
            })),
            Err(e) => {
                warn!(service = name, "idle connections will not be parked: {e}");
                None
            }
        },
    };
    let watcher = parking.clone().map(|p| {
        tokio::spawn(async move {
            let wake = |stream: L4Stream, live: Live| {
                let p = p.clone();
                tokio::spawn(serve_connection(
                    p.app.clone(),
                    Box::new(stream),
                    p.shutdown.clone(),
                    live,
                    Some(p.clone()),
                ));
            };
            p.set
                .run(p.shutdown.clone(), p.app.shutdown_drain(), wake)
                .await;
        })
    });
    // A listener on a specific address is every accepted socket's local
    // address too (not so for a wildcard one).
    let tcp_local = match &l {
        L::Tcp(l) => l.local_addr().ok().filter(|a| !a.ip().is_unspecified()),
        L::Unix(_) => None,
    };
    // Whether new connections are being refused (max_connections).
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            r = async {
                match &l {
                    L::Tcp(l) => l.accept().await.map(|(s, peer)| {
                        let _ = s.set_nodelay(true);
                        L4Stream::from_accepted_tcp(s, peer, tcp_local)
                    }),
                    L::Unix(l) => l.accept().await.map(|(s, _)| L4Stream::from_unix(s)),
                }
            } => r,
        };
        match accepted {
            Ok(stream) => {
                let max = tracker.max.load(Ordering::Relaxed);
                if max > 0 {
                    if tracker.count.load(Ordering::Acquire) >= max {
                        if !refusing {
                            warn!(
                                service = name,
                                "{max} connections open (max_connections): refusing new ones"
                            );
                            refusing = true;
                        }
                        drop(stream);
                        continue;
                    }
                    if refusing {
                        info!(service = name, "below max_connections again: accepting");
                        refusing = false;
                    }
                }
                let app = app.clone();
                let shutdown = shutdown.clone();
                let opts = opts.clone();
                let filter = filter.clone();
                let name = service_name.clone();
                let parking = parking.clone();
                accepted_count.inc();
                open_count.inc();
                let live = Live {
                    _guard: tracker.enter(),
                    open: open_count.clone(),
                };
                tokio::spawn(async move {
                    // The filter, PROXY header and TLS handshake run in the
                    // connection's own task, so a slow one holds up nobody
                    // else.
                    if let Some(stream) = prepare(stream, &opts, filter.as_ref(), &name).await {
                        serve_connection(app, stream, shutdown, live, parking).await;
                    }
                });
            }
            Err(e) => {
                // Out of fds or memory: back off a little instead of
                // spinning; the backlog holds the connections meanwhile.
                warn!(service = name, "accept failed: {e}");
                pingora_timeout::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    debug!(service = name, "stopped accepting");
    // The watcher closes the parked connections on shutdown.
    if let Some(w) = watcher {
        let _ = w.await;
    }
}

#[async_trait]
impl<A: ServerApp> ServiceTrait for Service<A> {
    fn bind(&mut self, fds: &ListenFds) -> Result<()> {
        self.bound = self.listeners.bind_all(fds)?;
        for l in &self.bound {
            if let Some(a) = l.local_addr() {
                info!(service = self.name, "listening on {a}");
            }
        }
        Ok(())
    }

    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        super::start_here(self, fds, shutdown).await
    }

    async fn run(&mut self, ctx: ServiceContext) {
        let mut loops = Vec::new();
        // The original sockets stay open until the loops end: their fds are
        // what a graceful upgrade hands over.
        let accept = self.listeners.accept_options().to_vec();
        let filter = self.listeners.connection_filter().cloned();
        for (listener, opts) in self.bound.iter().zip(accept) {
            for rt in &ctx.runtimes {
                let l = match listener.try_clone() {
                    Ok(l) => l,
                    Err(e) => {
                        error!(service = self.name, "{e}");
                        continue;
                    }
                };
                loops.push(rt.spawn(accept_loop(
                    l,
                    opts.clone(),
                    filter.clone(),
                    self.app.clone(),
                    self.tracker.clone(),
                    ctx.shutdown.clone(),
                    self.name.clone(),
                )));
            }
        }
        ctx.ready.notify_ready();
        for l in loops {
            let _ = l.await;
        }
        // Close the listening sockets, so new connection attempts are
        // refused instead of waiting in a backlog nobody accepts from.
        self.bound.clear();
        let n = self.tracker.count.load(Ordering::Acquire);
        if n > 0 {
            info!(service = self.name, "waiting for {n} connections to finish");
        }
        self.tracker.drained().await;
        self.app.cleanup().await;
        info!(service = self.name, "stopped");
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }
}

impl Service<crate::apps::prometheus_http_app::PrometheusServer> {
    /// A listening service serving the metrics (add a listener to it),
    /// as Pingora 0.8's.
    pub fn prometheus_http_service() -> Self {
        Service::new(
            "Prometheus metric exporter".to_string(),
            crate::apps::prometheus_http_app::new_prometheus_server(),
        )
    }
}

#[cfg(test)]
mod tests;
