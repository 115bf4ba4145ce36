//! Helpers shared by pingora-core's integration tests: a real nginx with
//! its own conf in a temp dir (pingora-test-support's), and a certificate
//! for it.
// Test helpers: `pub` for the test files, which are crates of their own;
// each uses some of them.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub use pingora_test_support::{eventually, nginx_dir, start_nginx, Nginx};

/// In `dir`: a new test CA and a certificate it issued for `up.test` (for
/// an nginx upstream over TLS). Returns (cert, key, ca_file, the CA).
#[cfg(any(feature = "openssl", feature = "boringssl"))]
pub fn up_test_cert(
    dir: &std::path::Path,
) -> (String, String, String, pingora_core::utils::certs::TestCa) {
    let ca = pingora_core::utils::certs::TestCa::new("Test CA").unwrap();
    let (cert, key) = ca
        .issue(&["up.test"], 30, false)
        .unwrap()
        .write(dir, "up")
        .unwrap();
    let (ca_file, _) = ca.ca.write(dir, "ca").unwrap();
    (cert, key, ca_file, ca)
}
