//! Helpers shared by pingora-core's integration tests: a real nginx with
//! its own conf in a temp dir, on a port from the OS.
// Test helpers: `pub` for the test files, which are crates of their own.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nginx, stopped (by PID) and cleaned up on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_bin() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("nginx is not installed (.ci/run installs Debian's nginx package)");
}

/// A fresh directory for one nginx.
pub fn nginx_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pingora-nginx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).unwrap();
    dir
}

/// Start nginx in `dir` with `server` as the body of its one `server {}`
/// block (the `listen` line is added), on a port from the OS.
///
/// Another test may take the same free port between our asking and nginx
/// binding it: nginx then fails to bind and exits, and we try a new port.
/// nginx is ready once it wrote its pid file (after binding).
pub fn start_nginx(dir: PathBuf, server: &str) -> Nginx {
    for _ in 0..5 {
        if let Some(n) = try_start_nginx(&dir, server) {
            return n;
        }
    }
    panic!(
        "nginx could not bind a port in 5 tries; see {}",
        dir.display()
    );
}

fn try_start_nginx(dir: &Path, server: &str) -> Option<Nginx> {
    let _ = std::fs::remove_file(dir.join("nginx.pid"));
    let _ = std::fs::remove_file(dir.join("error.log"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    // `# http2` in the server block asks for HTTP/2 (nginx 1.22 syntax).
    let listen = format!(
        "listen 127.0.0.1:{port}{}{};",
        if server.contains("ssl_certificate") {
            " ssl"
        } else {
            ""
        },
        if server.contains("# http2") {
            " http2"
        } else {
            ""
        },
    );
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    server {{
        {listen}
        root {d}/www;
        {server}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut child = Command::new(nginx_bin())
        .args([
            "-p",
            &dir.to_string_lossy(),
            "-c",
            &dir.join("nginx.conf").to_string_lossy(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("nginx.pid").exists()
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            if log.contains("Address already in use") {
                return None;
            }
            panic!("nginx exited ({status}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "nginx did not start; see {d}/error.log"
        );
        std::thread::park_timeout(Duration::from_millis(5));
    }
    Some(Nginx {
        child,
        port,
        dir: dir.to_path_buf(),
    })
}

/// Poll `f` until true, failing after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        pingora_timeout::sleep(Duration::from_millis(5)).await;
    }
}

/// In `dir`: a new test CA and a certificate it issued for `up.test` (for
/// an nginx upstream over TLS). Returns (cert, key, ca_file, the CA).
#[cfg(any(feature = "openssl", feature = "boringssl"))]
pub fn up_test_cert(dir: &Path) -> (String, String, String, pingora_core::utils::certs::TestCa) {
    let ca = pingora_core::utils::certs::TestCa::new("Test CA").unwrap();
    let (cert, key) = ca
        .issue(&["up.test"], 30, false)
        .unwrap()
        .write(dir, "up")
        .unwrap();
    let (ca_file, _) = ca.ca.write(dir, "ca").unwrap();
    (cert, key, ca_file, ca)
}
