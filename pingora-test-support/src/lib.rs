//! What the workspace's integration tests share, once: ports from the OS,
//! polling with a deadline, child processes that do not outlive a failed
//! test, curl, a real nginx, and the real gRPC peer (grpcio).
//!
//! Not published: test crates take it as a dev-dependency. It depends on no
//! pingora crate, so that every crate of the workspace can.
//!
//! ```
//! use std::time::Duration;
//! use pingora_test_support::{connects, free_port, poll_until, wait_listening};
//!
//! // Never the same port twice in one process.
//! assert_ne!(free_port(), free_port());
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let port = listener.local_addr().unwrap().port();
//! wait_listening(port);
//! poll_until(Duration::from_secs(5), "a connection", || connects(port));
//! ```
#![forbid(unsafe_code)]

mod curl;
mod fs;
mod grpc;
mod nginx;
mod poll;
mod ports;
mod process;

pub use curl::{curl_raw, curl_text};
pub use fs::temp_dir;
pub use grpc::{grpc_peer_client, grpc_peer_server, grpc_script, PYTHON};
pub use nginx::{nginx_dir, start_nginx, Nginx};
pub use poll::{eventually, poll_until};
pub use ports::{closed_port, connects, free_port, wait_listening};
pub use process::{wait_pid_file, Proc};

// nix's signal and process id types, which `Proc::signal` and `Proc::pid`
// use: re-exported so that a test crate needs no nix dependency of its own.
#[doc(no_inline)]
pub use nix::sys::signal::Signal;
#[doc(no_inline)]
pub use nix::unistd::Pid;
