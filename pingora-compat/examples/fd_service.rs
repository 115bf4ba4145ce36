//! A service in Pingora's shape that takes its listening socket itself in
//! `start_service`: the one a graceful upgrade handed over (looked up in
//! `fds`), else a new one, recorded in `fds` for the next upgrade. Each
//! connection gets `hello from PID`. Compiled by CI and run by
//! `tests/fd_service.rs`; by hand:
//! `HELLO_ADDR=127.0.0.1:6199 cargo run -p pingora-compat --example fd_service -- -c conf.yaml`
//! (then a second one with `-u` and SIGQUIT to the first).
use std::os::fd::{AsRawFd, FromRawFd};

use async_trait::async_trait;
use pingora_core::listeners::ListenFds;
use pingora_core::prelude::Opt;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::Service;
use tokio::io::AsyncWriteExt;

/// Says hello on one address.
struct Hello {
    addr: String,
}

#[async_trait]
impl Service for Hello {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let fds = fds.expect("the server passes its socket table");
        let inherited = fds.lock().get(&self.addr).copied();
        let listener = match inherited {
            // SAFETY: the previous process handed this socket over for this
            // address, and nothing else in this process uses it.
            Some(fd) => unsafe { std::net::TcpListener::from_raw_fd(fd) },
            None => {
                let l = std::net::TcpListener::bind(&self.addr).expect("bind");
                fds.lock().add(self.addr.clone(), l.as_raw_fd());
                l
            }
        };
        let how = if inherited.is_some() {
            "inherited"
        } else {
            "bound"
        };
        eprintln!("listening on {} ({how})", self.addr);
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        let hello = format!("hello from {}\n", std::process::id());
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                accepted = listener.accept() => {
                    if let Ok((mut s, _)) = accepted {
                        let _ = s.write_all(hello.as_bytes()).await;
                    }
                }
            }
        }
    }

    fn name(&self) -> &str {
        "hello"
    }
}

fn main() {
    let addr = std::env::var("HELLO_ADDR").unwrap_or_else(|_| "127.0.0.1:6199".into());
    let mut server = Server::new(Some(Opt::parse_args())).unwrap();
    server.bootstrap();
    server.add_service(Hello { addr });
    server.run_forever();
}
