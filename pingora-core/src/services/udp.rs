//! UDP services: a [`UdpApp`] handed every datagram that arrives on its
//! sockets, with the sender's address and a handle to send datagrams back.
//!
//! A [`UdpService`] runs under the same [`Server`](crate::server::Server)
//! as the TCP services: the same worker threads (one receive loop per
//! worker, all reading the same socket, so each datagram is handled once),
//! the same graceful shutdown (receiving stops, then the app's
//! [`cleanup`](UdpApp::cleanup) runs), and the same zero-downtime upgrade:
//! the UDP sockets are handed to the new process with the listening TCP
//! sockets (key `udp:ADDR`), so datagrams queued in them are read by
//! whichever process reads next and none is dropped by a rebind.
//!
//! ```no_run
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use pingora_core::server::Server;
//! use pingora_core::services::udp::{UdpApp, UdpDownstream, UdpService};
//!
//! /// Sends every datagram back to whoever sent it.
//! struct Echo;
//!
//! #[async_trait]
//! impl UdpApp for Echo {
//!     async fn process_datagram(
//!         self: &Arc<Self>,
//!         datagram: &[u8],
//!         peer: std::net::SocketAddr,
//!         downstream: &UdpDownstream,
//!     ) {
//!         let _ = downstream.send_to(datagram, peer).await;
//!     }
//! }
//!
//! let mut server = Server::new(None).unwrap();
//! server.bootstrap();
//! let mut echo = UdpService::new("echo".into(), Echo);
//! echo.add_udp("127.0.0.1:5353");
//! server.add_service(echo);
//! server.run_forever();
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use async_trait::async_trait;
use pingora_error::{ErrorType, OrErr, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, error, info};

use super::{Service as ServiceTrait, ServiceContext};
use crate::listeners::ListenFds;
use crate::shutdown::ShutdownWatch;

/// The largest datagram a receive loop takes in (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;

/// Where a datagram arrived, and the way to answer: datagrams sent here go
/// out from the service's own address.
#[derive(Debug, Clone)]
pub struct UdpDownstream {
    socket: Arc<UdpSocket>,
}

impl UdpDownstream {
    /// Answers that go out through `socket` (the service makes these for
    /// its sockets; an app that drives a socket of its own, or a test, can
    /// too).
    pub fn new(socket: Arc<UdpSocket>) -> Self {
        UdpDownstream { socket }
    }

    /// Send one datagram to `peer` from the service's address.
    ///
    /// # Errors
    ///
    /// The socket's `io::Error`: a datagram too large for the socket, or a
    /// `peer` that is unreachable or of the other address family.
    pub async fn send_to(&self, datagram: &[u8], peer: std::net::SocketAddr) -> io::Result<usize> {
        self.socket.send_to(datagram, peer).await
    }

    /// The service's address.
    ///
    /// # Errors
    ///
    /// The socket's `io::Error` if the system cannot report its address.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }
}

/// Handles the datagrams of a [`UdpService`].
#[async_trait]
pub trait UdpApp: Send + Sync + 'static {
    /// One datagram from `peer`. Answer (any number of datagrams, now or
    /// later from a task of the app's) through `downstream`. The receive
    /// loop that called waits for this to return before it reads again, so
    /// keep it short; other loops go on meanwhile.
    async fn process_datagram(
        self: &Arc<Self>,
        datagram: &[u8],
        peer: std::net::SocketAddr,
        downstream: &UdpDownstream,
    );

    /// Called once after receiving stopped at shutdown (or upgrade): finish
    /// what is in flight, then return.
    async fn cleanup(&self) {}
}

/// Names the type; its state is not shown.
impl<A> std::fmt::Debug for UdpService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpService").finish_non_exhaustive()
    }
}

/// A UDP service: sockets plus a [`UdpApp`].
pub struct UdpService<A> {
    name: String,
    addrs: Vec<String>,
    bound: Vec<std::net::UdpSocket>,
    app: Arc<A>,
    /// Worker threads; `None` uses the conf's `threads`.
    pub threads: Option<usize>,
}

impl<A: UdpApp> UdpService<A> {
    /// A service named `name` with no sockets yet.
    pub fn new(name: String, app: A) -> Self {
        UdpService {
            name,
            addrs: vec![],
            bound: vec![],
            app: Arc::new(app),
            threads: None,
        }
    }

    /// Receive on `addr` (`host:port`, IPv6 in brackets).
    pub fn add_udp(&mut self, addr: &str) {
        self.addrs.push(addr.to_string());
    }

    /// The app.
    pub fn app_logic(&self) -> &Arc<A> {
        &self.app
    }

    /// The bound addresses (after the server bound them), for logs and
    /// tests that bind port 0.
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.bound
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

/// The key of a UDP socket in the [`ListenFds`] hand-over table.
pub fn udp_key(addr: &str) -> String {
    format!("udp:{addr}")
}

/// Take the UDP socket for `addr` from `fds` if it was inherited, else
/// bind it; record it in `fds` for a later hand-over.
///
/// # Errors
///
/// `BindError` if `addr` does not resolve or the socket cannot be made or
/// bound; `SocketError` if it cannot be made non-blocking.
pub fn bind_udp(addr: &str, fds: &ListenFds) -> Result<std::net::UdpSocket> {
    let key = udp_key(addr);
    let sock = match fds.take_inherited(&key) {
        // SAFETY: received from the previous process for exactly this key
        // (a bound UDP socket), owned by nobody else in this process.
        Some(fd) => unsafe { std::net::UdpSocket::from_raw_fd(fd) },
        None => {
            let sa = crate::listeners::resolve_listen_addr(addr)?;
            let s = Socket::new(Domain::for_address(sa), Type::DGRAM, Some(Protocol::UDP))
                .or_err_with(ErrorType::BindError, || format!("UDP socket for {addr}"))?;
            s.set_reuse_address(true)
                .or_err_with(ErrorType::BindError, || format!("SO_REUSEADDR on {addr}"))?;
            s.bind(&SockAddr::from(sa))
                .or_err_with(ErrorType::BindError, || format!("bind UDP {addr}"))?;
            s.into()
        }
    };
    sock.set_nonblocking(true)
        .or_err(ErrorType::SocketError, "set UDP socket non-blocking")?;
    fds.add(key, sock.as_raw_fd());
    Ok(sock)
}

async fn receive_loop<A: UdpApp>(
    sock: std::net::UdpSocket,
    app: Arc<A>,
    mut shutdown: crate::shutdown::ShutdownWatch,
    name: String,
) {
    let sock = match UdpSocket::from_std(sock) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            error!(service = name, "cannot register UDP socket: {e}");
            return;
        }
    };
    let downstream = UdpDownstream {
        socket: sock.clone(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            r = sock.recv_from(&mut buf) => r,
        };
        match got {
            Ok((n, peer)) => app.process_datagram(&buf[..n], peer, &downstream).await,
            // An ICMP error for an earlier send, or a transient failure:
            // the socket is still good.
            Err(e) => debug!(service = name, "UDP receive: {e}"),
        }
    }
}

#[async_trait]
impl<A: UdpApp> ServiceTrait for UdpService<A> {
    fn bind(&mut self, fds: &ListenFds) -> Result<()> {
        self.bound = self
            .addrs
            .iter()
            .map(|a| bind_udp(a, fds))
            .collect::<Result<_>>()?;
        for s in &self.bound {
            if let Ok(a) = s.local_addr() {
                info!(service = self.name, "receiving UDP on {a}");
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
        // One receive loop per worker thread, spread over the runtimes.
        let loops_per_socket = ctx.threads.max(ctx.runtimes.len()).max(1);
        let mut loops = Vec::new();
        for sock in &self.bound {
            for i in 0..loops_per_socket {
                let dup = match sock.try_clone() {
                    Ok(s) => s,
                    Err(e) => {
                        error!(service = self.name, "dup UDP socket: {e}");
                        continue;
                    }
                };
                let rt = &ctx.runtimes[i % ctx.runtimes.len()];
                loops.push(rt.spawn(receive_loop(
                    dup,
                    self.app.clone(),
                    ctx.shutdown.clone(),
                    self.name.clone(),
                )));
            }
        }
        ctx.ready.notify_ready();
        for l in loops {
            let _ = l.await;
        }
        self.bound.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper;

    #[async_trait]
    impl UdpApp for Upper {
        async fn process_datagram(
            self: &Arc<Self>,
            d: &[u8],
            peer: std::net::SocketAddr,
            down: &UdpDownstream,
        ) {
            let _ = down.send_to(&d.to_ascii_uppercase(), peer).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_each_peer_and_hands_over_the_socket() {
        let fds = ListenFds::new();
        let mut svc = UdpService::new("upper".into(), Upper);
        svc.add_udp("127.0.0.1:0");
        svc.bind(&fds).unwrap();
        let addr = svc.local_addrs()[0];
        // The socket is in the hand-over table under its udp: key.
        assert_eq!(fds.own()[0].0, "udp:127.0.0.1:0");
        let (tx, task) = crate::services::start_for_test(svc, 2).await;
        let mut clients = vec![];
        for i in 0..20 {
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.send_to(format!("client {i}").as_bytes(), addr)
                .await
                .unwrap();
            clients.push(c);
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 64];
            let (n, from) = c.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, addr);
            assert_eq!(&buf[..n], format!("CLIENT {i}").as_bytes());
        }
        tx.send_replace(true);
        task.await.unwrap();
    }

    #[test]
    fn bad_udp_address_names_it() {
        let e = bind_udp("nope", &ListenFds::new()).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
