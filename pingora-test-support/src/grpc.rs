//! The real gRPC peer: pingora-proxy's `tests/grpc_peer.py`, on grpcio
//! (the C-core implementation), as a server or as a client that checks
//! every call type.

use std::io::BufRead;
use std::process::{Command, Stdio};

use crate::process::Proc;

/// Debian's python, where python3-grpcio, -brotli and -zstandard are.
pub const PYTHON: &str = "/usr/bin/python3";

/// The path of the gRPC peer script, found from this crate's own
/// directory, so that every test crate of the workspace gets the same one.
pub fn grpc_script() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pingora-proxy/tests/grpc_peer.py"
    )
}

/// `python3 grpc_peer.py server`, which prints its port: the server
/// process (killed on drop) and `127.0.0.1:PORT`.
///
/// # Panics
///
/// If python3 cannot be started, or the script's first line of output
/// cannot be read or is not a port (python3-grpcio missing, say).
pub fn grpc_peer_server() -> (Proc, String) {
    let mut server = Proc::spawn(
        Command::new(PYTHON)
            .args([grpc_script(), "server"])
            .stdout(Stdio::piped()),
    );
    let stdout = server
        .child_mut()
        .stdout
        .take()
        .expect("the gRPC server's stdout, piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the gRPC server's port");
    let port: u16 = line.trim().parse().unwrap_or_else(|_| {
        panic!("the gRPC server printed {line:?}, not its port (is python3-grpcio installed?)")
    });
    (server, format!("127.0.0.1:{port}"))
}

/// `python3 grpc_peer.py MODE TARGET`: the real gRPC client's checks pass
/// against `target` (`client`: every call type answered; `unavailable`: a
/// call through a proxy whose upstream is down ends in UNAVAILABLE).
///
/// # Panics
///
/// If python3 cannot be run, or the client's checks fail (a failure exit
/// status); the message carries its output.
pub fn grpc_peer_client(mode: &str, target: &str) {
    let out = Command::new(PYTHON)
        .args([grpc_script(), mode, target])
        .output()
        .expect("python3 with grpcio");
    assert!(
        out.status.success(),
        "gRPC client {mode} {target}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
