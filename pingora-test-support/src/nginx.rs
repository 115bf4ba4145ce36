//! A real nginx as a peer (upstream, or origin behind a proxy), with its
//! own conf in a temp dir, on a port from the OS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::poll::POLL;
use crate::ports::{connects, free_port};
use crate::process::Proc;

/// A running nginx, stopped (by pid) and its directory removed on drop.
#[derive(Debug)]
pub struct Nginx {
    proc: Proc,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    /// Its directory: `nginx.conf`, `error.log`, the pid file, and `www`,
    /// the document root.
    pub dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Stopped first, so that nothing writes to the directory after it
        // is removed.
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian's nginx (`.ci/run` installs the package).
fn nginx_bin() -> &'static str {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("nginx is not installed (.ci/run installs Debian's nginx package)");
}

/// A fresh directory for one nginx, with an empty `www` (the document
/// root) for the test to fill.
///
/// # Panics
///
/// If the directory cannot be created.
pub fn nginx_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pingora-nginx-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www"))
        .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Start nginx in `dir` with `server` as the body of its one `server {}`
/// block (the `listen` line is added: with `ssl` when `server` has an
/// `ssl_certificate`, with `http2` when it has a `# http2` comment), on a
/// port from the OS.
///
/// Another process may take the free port between our asking and nginx
/// binding it: nginx then fails to bind and exits, and we try a new port.
/// nginx is ready once it wrote its pid file (after binding) and the port
/// answers.
///
/// # Panics
///
/// If nginx is not installed, `nginx.conf` cannot be written, nginx exits
/// for another reason than a taken port (with its error log), it is not
/// ready within 20 s, or no port could be bound in 5 tries.
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

/// One try of [`start_nginx`]: `None` if the port was taken.
fn try_start_nginx(dir: &Path, server: &str) -> Option<Nginx> {
    let _ = std::fs::remove_file(dir.join("nginx.pid"));
    let _ = std::fs::remove_file(dir.join("error.log"));
    let port = free_port();
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
    // In a `Proc` from the start: killed if this test fails while waiting.
    let mut nginx = Proc::spawn(
        Command::new(nginx_bin())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(dir.join("nginx.pid").exists() && connects(port)) {
        if let Some(status) = nginx.try_exit() {
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
        std::thread::sleep(POLL);
    }
    Some(Nginx {
        proc: nginx,
        port,
        dir: dir.to_path_buf(),
    })
}
