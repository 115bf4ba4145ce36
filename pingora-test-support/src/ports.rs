//! Ports on loopback: free ones for servers to bind, and a check that
//! something listens.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use crate::poll::poll_until;

/// A port that was free a moment ago (the OS picks it), and never one
/// already handed to another test of this process: pingora's listeners use
/// SO_REUSEPORT, so two tests' servers given the same port would both bind
/// it and share its connections.
///
/// # Panics
///
/// If no port can be bound on 127.0.0.1.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port from the OS")
            .port();
        // A test that panicked holding the lock leaves the set as it was.
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.insert(port) {
            return port;
        }
    }
}

/// A port where nothing listens, so that connecting to it is refused,
/// for as long as this process runs: the port stays bound (by a socket
/// that never listens, without `SO_REUSEADDR`), so the OS cannot hand it
/// to another test's listener, whose connections a "closed" peer would
/// then reach.
///
/// # Panics
///
/// If no socket can be made, or none bound on 127.0.0.1.
pub fn closed_port() -> u16 {
    use socket2::{Domain, Socket, Type};
    static HELD: Mutex<Vec<Socket>> = Mutex::new(Vec::new());
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).expect("a port from the OS");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound address")
        .port();
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push(socket);
    port
}

/// Whether a connection to `port` on 127.0.0.1 reaches a listener. A
/// connect to a port in the ephemeral range where nothing listens can
/// "succeed" by meeting its own socket (TCP simultaneous open, when the OS
/// picks that port as the source): that is not a listener, so it does not
/// count.
pub fn connects(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// Wait (30 s at most) until something listens on `port` on 127.0.0.1.
pub fn wait_listening(port: u16) {
    poll_until(
        Duration::from_secs(30),
        &format!("a listener on port {port}"),
        || connects(port),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_given_once() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    #[test]
    fn a_listener_is_seen() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        wait_listening(port);
        assert!(!connects(closed_port()));
    }
}
