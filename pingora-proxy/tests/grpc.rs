//! gRPC through the proxy with a real client and server (grpcio, the
//! C-core implementation, from Debian's python3-grpcio): unary,
//! client-streaming, server-streaming and bidi calls, an error status and
//! trailing metadata carried in trailers, a 3 MiB message; over h2c and
//! over TLS (h2 by ALPN) downstream, h2c upstream; and h2c downstream, TLS
//! (h2 by ALPN, certificate verified) upstream.

use std::process::Stdio;
use std::sync::Arc;

use pingora_core::apps::http_app::HttpServer;
use pingora_proxy::{HttpProxy, ProxyOptions};
use pingora_test_support::{grpc_script, PYTHON};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;
use common::*;

/// The gRPC server, killed when dropped; and its port.
async fn grpc_server() -> (tokio::process::Child, u16) {
    grpc_server_with(&["server"]).await
}

/// The gRPC server started with these arguments to the script.
async fn grpc_server_with(args: &[&str]) -> (tokio::process::Child, u16) {
    let mut child = tokio::process::Command::new(PYTHON)
        .arg(grpc_script())
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with grpcio (apt-get install python3-grpcio)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let port = line.trim().parse().expect("the gRPC server's port");
    (child, port)
}

async fn grpc_client(target: &str, ca: Option<&str>) {
    grpc_client_mode("client", target, ca).await
}

async fn grpc_client_mode(mode: &str, target: &str, ca: Option<&str>) {
    let mut cmd = tokio::process::Command::new(PYTHON);
    cmd.args([grpc_script(), mode, target]);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("the gRPC client finishes")
        .unwrap();
    assert!(
        out.status.success() && out.stdout == b"OK\n",
        "gRPC client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_h2c() {
    let (_server, up) = grpc_server().await;
    let (port, log) = proxy(vec![peer(up, true)], ProxyOptions::default()).await;
    calls_pass_with_trailers(port, &log).await;
}

/// The real client's calls through the proxy on `port` all succeed (the
/// client script checks each answer), and the proxy's phase log shows the
/// trailers of at least five of them passing the trailer filter.
async fn calls_pass_with_trailers(port: u16, log: &Arc<std::sync::Mutex<Vec<String>>>) {
    grpc_client(&format!("127.0.0.1:{port}"), None).await;
    let log = logged(log, 6).await;
    assert!(
        log.iter()
            .filter(|l| *l == "response_trailer_filter")
            .count()
            >= 5,
        "{log:#?}"
    );
}

/// An unreachable upstream is a gRPC UNAVAILABLE status, not an HTTP 502
/// page that gRPC clients cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_are_grpc_statuses() {
    let (port, _) = proxy(vec![peer(closed_port(), true)], ProxyOptions::default()).await;
    grpc_client_mode("unavailable", &format!("127.0.0.1:{port}"), None).await;
}

#[cfg(any(feature = "openssl", feature = "boringssl"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls() {
    use pingora_core::apps::ServerApp;
    use pingora_core::listeners::tls::TlsSettings;
    use pingora_core::protocols::L4Stream;

    let (dir, ca_file, cert, key) = localhost_cert("grpc");
    let mut tls = TlsSettings::intermediate(&cert, &key).unwrap();
    tls.enable_h2();
    let acceptor = Arc::new(tls.build().unwrap());

    let (_server, up) = grpc_server().await;
    let rec = Recorder {
        peers: vec![peer(up, true)],
        log: Arc::default(),
    };
    let app = Arc::new(HttpServer::new(HttpProxy::new(rec, None)));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = tx;
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, app, rx) = (acceptor.clone(), app.clone(), rx.clone());
            tokio::spawn(async move {
                if let Ok(s) = acceptor.handshake(L4Stream::from_tcp(s)).await {
                    app.process_new(Box::new(s), &rx).await;
                }
            });
        }
    });
    grpc_client(&format!("127.0.0.1:{port}"), Some(&ca_file)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The upstream over TLS: the proxy verifies the gRPC server's certificate
/// (our CA, SNI `localhost`), speaks h2 to it by ALPN, and every call type
/// with its trailers comes through.
#[cfg(any(feature = "openssl", feature = "boringssl"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_a_tls_upstream() {
    use pingora_core::upstreams::peer::{HttpPeer, ALPN};

    let (dir, ca_file, cert, key) = localhost_cert("grpc-up");
    let (_server, up) = grpc_server_with(&["tls-server", &cert, &key]).await;
    let mut tls_peer =
        HttpPeer::try_new(&format!("127.0.0.1:{up}"), true, "localhost".into()).unwrap();
    tls_peer.options.alpn = ALPN::H2;
    tls_peer.options.max_h2_streams = 100;
    tls_peer.options.ca = Some(ca_file.clone());
    let (port, log) = proxy(vec![tls_peer], ProxyOptions::default()).await;
    calls_pass_with_trailers(port, &log).await;
    // Without our CA the upstream's certificate is refused: no call gets
    // through (UNAVAILABLE, as for an unreachable upstream).
    let mut untrusted =
        HttpPeer::try_new(&format!("127.0.0.1:{up}"), true, "localhost".into()).unwrap();
    untrusted.options.alpn = ALPN::H2;
    let (port, _) = proxy(vec![untrusted], ProxyOptions::default()).await;
    grpc_client_mode("unavailable", &format!("127.0.0.1:{port}"), None).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A temp dir holding a new test CA (`ca_file`) and a certificate and key
/// it issued for `localhost`: (dir, ca_file, cert, key).
#[cfg(any(feature = "openssl", feature = "boringssl"))]
fn localhost_cert(tag: &str) -> (std::path::PathBuf, String, String, String) {
    use pingora_core::utils::certs::TestCa;
    let dir = std::env::temp_dir().join(format!("pingora-proxy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new(&format!("{tag} test CA")).unwrap();
    let (ca_file, _) = ca.ca.write(&dir, "ca").unwrap();
    let (cert, key) = ca
        .issue(&["localhost"], 1, false)
        .unwrap()
        .write(&dir, "localhost")
        .unwrap();
    (dir, ca_file, cert, key)
}
