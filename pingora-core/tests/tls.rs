//! TLS listeners and connectors with whichever backend this build uses
//! (`.ci/run` runs this file once with OpenSSL and once with BoringSSL):
//! curl and `openssl s_client` against the listener, and our connector
//! against listeners with good and bad certificates. Certificates are made
//! at test time; no key is committed.
#![cfg(any(feature = "openssl", feature = "boringssl"))]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::apps::ServerApp;
use pingora_core::connectors::tls::{TlsConnector, TlsPeer};
use pingora_core::listeners::tls::{Acceptor, CertKey, TlsAccept, TlsSettings};
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::tls::SslStream;
use pingora_core::protocols::{L4Stream, IO};
use pingora_core::tls::ext;
use pingora_core::utils::certs::{Issued, TestCa};
use pingora_error::ErrorType;
use pingora_http::RequestHeader;
use tokio::io::AsyncReadExt;

/// Answers with what the TLS digest says.
struct Describe;

#[async_trait]
impl ServeHttp for Describe {
    async fn response(&self, s: &mut ServerSession) -> http::Response<Vec<u8>> {
        let d = s.tls_digest().cloned().unwrap_or_default();
        let alpn = d.alpn.map(|a| String::from_utf8_lossy(&a).into_owned());
        let body = format!(
            "sni={} alpn={} version={} group={} peer={} sans={}\n",
            d.sni.unwrap_or_default(),
            alpn.unwrap_or_default(),
            d.version,
            d.group.unwrap_or_default(),
            d.peer_subject.unwrap_or_default(),
            d.peer_sans.join(","),
        );
        http::Response::new(body.into_bytes())
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("pingora-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write(&self, issued: &Issued, name: &str) -> (String, String) {
        issued.write(&self.0, name).unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serve `Describe` over TLS on a port from the OS; returns the port.
async fn serve(acceptor: Acceptor) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = Arc::new(acceptor);
    let app = Arc::new(HttpServer::new(Describe));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _keep = _tx;
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (acceptor, app, rx) = (acceptor.clone(), app.clone(), rx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.handshake(L4Stream::from_tcp(s)).await {
                    app.process_new(Box::new(tls), &rx).await;
                }
            });
        }
    });
    port
}

async fn tcp(port: u16) -> L4Stream {
    L4Stream::from_tcp(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap(),
    )
}

/// A GET over `tls`; returns the body.
async fn get(tls: SslStream, host: &str) -> String {
    let mut s = HttpSession::new(Box::new(tls));
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("Host", host).unwrap();
    s.write_request_header(Box::new(req)).await.unwrap();
    s.read_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(b) = s.read_body_bytes().await.unwrap() {
        body.extend_from_slice(&b);
    }
    String::from_utf8(body).unwrap()
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e} (.ci/run installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Two certificates on one port, chosen by SNI.
struct BySni {
    a: Arc<CertKey>,
    b: Arc<CertKey>,
}

impl TlsAccept for BySni {
    fn certificate(&self, sni: Option<&str>) -> Option<Arc<CertKey>> {
        match sni {
            Some("b.test") => Some(self.b.clone()),
            Some("a.test") => Some(self.a.clone()),
            _ => None,
        }
    }
}

fn cert_key(i: &Issued) -> Arc<CertKey> {
    Arc::new(CertKey::from_pem(i.cert_pem().as_bytes(), i.key_pem().as_bytes()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_and_alpn_with_curl_and_s_client() {
    let dir = Dir::new("sni");
    let ca = TestCa::new("Test CA").unwrap();
    std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
    let a = ca.issue(&["a.test"], 30, false).unwrap();
    let b = ca.issue(&["b.test"], 30, false).unwrap();
    let mut settings = TlsSettings::with_callbacks(Box::new(BySni {
        a: cert_key(&a),
        b: cert_key(&b),
    }))
    .unwrap();
    settings.enable_h2();
    let port = serve(settings.build().unwrap()).await;

    for name in ["a.test", "b.test"] {
        let cafile = dir.path("ca.crt");
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/");
        // curl checks that the certificate names the host it asked for.
        let (ok, out) = tokio::task::spawn_blocking(move || {
            run(Command::new("curl").args([
                "-sS",
                "--http1.1",
                "--cacert",
                &cafile,
                "--resolve",
                &resolve,
                &url,
            ]))
        })
        .await
        .unwrap();
        assert!(ok, "{out}");
        assert!(
            out.starts_with(&format!("sni={name} alpn=http/1.1 version=TLSv1.3")),
            "{out}"
        );
        let cafile2 = dir.path("ca.crt");
        // s_client: the certificate for the name, and ALPN h2 when offered.
        let connect = format!("127.0.0.1:{port}");
        let name2 = name.to_string();
        let (_, out) = tokio::task::spawn_blocking(move || {
            run(Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &connect,
                    "-servername",
                    &name2,
                    "-alpn",
                    "h2,http/1.1",
                ])
                .args(["-CAfile", &cafile2, "-verify_return_error"])
                .stdin(std::process::Stdio::null()))
        })
        .await
        .unwrap();
        assert!(out.contains("ALPN protocol: h2"), "{out}");
        assert!(
            out.contains(&format!("CN = {name}")) || out.contains(&format!("CN={name}")),
            "{out}"
        );
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    let cafile = dir.path("ca.crt");
    // An unknown name gets no certificate: the handshake fails.
    let resolve = format!("c.test:{port}:127.0.0.1");
    let url = format!("https://c.test:{port}/");
    let (ok, _) = tokio::task::spawn_blocking(move || {
        run(Command::new("curl").args(["-sS", "--cacert", &cafile, "--resolve", &resolve, &url]))
    })
    .await
    .unwrap();
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_good_client_certs_only() {
    let dir = Dir::new("mtls");
    let ca = TestCa::new("Test CA").unwrap();
    let other = TestCa::new("Other CA").unwrap();
    std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
    let (cert, key) = dir.write(&ca.issue(&["localhost"], 30, false).unwrap(), "server");
    let (ccert, ckey) = dir.write(&ca.issue(&["client.test"], 30, true).unwrap(), "client");
    let (bcert, bkey) = dir.write(&other.issue(&["client.test"], 30, true).unwrap(), "bad");
    let mut settings = TlsSettings::intermediate(&cert, &key).unwrap();
    settings.set_client_ca_file(&dir.path("ca.crt"), true);
    let port = serve(settings.build().unwrap()).await;
    let url = format!("https://localhost:{port}/");
    let cafile = dir.path("ca.crt");

    let curl = move |extra: Vec<String>| {
        let (cafile, url) = (cafile.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            run(Command::new("curl")
                .args(["-sS", "--cacert", &cafile])
                .args(&extra)
                .arg(&url))
        })
    };
    let (ok, out) = curl(vec![
        "--cert".into(),
        ccert.clone(),
        "--key".into(),
        ckey.clone(),
    ])
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("peer=CN=client.test sans=client.test"),
        "{out}"
    );
    let (ok, out) = curl(vec![]).await.unwrap();
    assert!(!ok, "no client certificate must be refused: {out}");
    let (ok, out) = curl(vec!["--cert".into(), bcert, "--key".into(), bkey])
        .await
        .unwrap();
    assert!(!ok, "a certificate from another CA must be refused: {out}");

    // Our connector with a client certificate.
    let mut peer = TlsPeer::new("localhost");
    peer.ca_file = Some(dir.path("ca.crt"));
    peer.client_cert_key = Some(Arc::new(CertKey::from_files(&ccert, &ckey).unwrap()));
    let tls = TlsConnector::new(None)
        .connect(tcp(port).await, &peer)
        .await
        .unwrap();
    assert!(get(tls, "localhost").await.contains("peer=CN=client.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_names_each_failed_check() {
    let dir = Dir::new("verify");
    let ca = TestCa::new("Test CA").unwrap();
    let other = TestCa::new("Other CA").unwrap();
    std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let good = ca.issue(&["good.test", "127.0.0.1"], 30, false).unwrap();
    let expired = ca
        .issue_between(&["good.test"], now - 86400 * 60, now - 86400 * 30, false)
        .unwrap();
    let untrusted = other.issue(&["good.test"], 30, false).unwrap();
    let connector = TlsConnector::new(Some(&dir.path("ca.crt")));
    let mut peer = TlsPeer::new("good.test");
    peer.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let port = serve({
        let mut s = TlsSettings::with_cert(cert_key(&good));
        s.enable_h2();
        s.build().unwrap()
    })
    .await;
    let tls = connector.connect(tcp(port).await, &peer).await.unwrap();
    let d = tls.tls_digest().unwrap().clone();
    assert_eq!(d.alpn.as_deref(), Some(&b"h2"[..]));
    assert!(
        d.peer_sans.contains(&"good.test".to_string())
            && d.peer_sans.contains(&"127.0.0.1".to_string())
    );
    assert!(!d.session_reused);

    // Wrong name; then the same with an alternative name that matches.
    let mut wrong = TlsPeer::new("wrong.test");
    let e = connector
        .connect(tcp(port).await, &wrong)
        .await
        .unwrap_err();
    assert_eq!(e.etype(), &ErrorType::CertHostnameMismatch, "{e}");
    wrong.alternative_cn = Some("good.test".to_string());
    connector.connect(tcp(port).await, &wrong).await.unwrap();
    // An IP address as the name, matched against the IP SAN.
    connector
        .connect(tcp(port).await, &TlsPeer::new("127.0.0.1"))
        .await
        .unwrap();

    let port = serve(TlsSettings::with_cert(cert_key(&expired)).build().unwrap()).await;
    let e = connector.connect(tcp(port).await, &peer).await.unwrap_err();
    assert_eq!(e.etype(), &ErrorType::CertExpired, "{e}");

    let port = serve(
        TlsSettings::with_cert(cert_key(&untrusted))
            .build()
            .unwrap(),
    )
    .await;
    let e = connector.connect(tcp(port).await, &peer).await.unwrap_err();
    assert_eq!(e.etype(), &ErrorType::CertUnknownCA, "{e}");
    // Verification off: accepted.
    let mut lax = TlsPeer::new("good.test");
    lax.verify_cert = false;
    connector.connect(tcp(port).await, &lax).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_to_upstreams() {
    let ca = TestCa::new("Test CA").unwrap();
    let dir = Dir::new("resume");
    std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
    let port = serve(
        TlsSettings::with_cert(cert_key(&ca.issue(&["r.test"], 30, false).unwrap()))
            .build()
            .unwrap(),
    )
    .await;
    let connector = TlsConnector::new(Some(&dir.path("ca.crt")));
    let peer = TlsPeer::new("r.test");
    let first = connector.connect(tcp(port).await, &peer).await.unwrap();
    assert!(!first.tls_digest().unwrap().session_reused);
    // TLS 1.3 tickets arrive after the handshake: read a response.
    get(first, "r.test").await;
    let second = connector.connect(tcp(port).await, &peer).await.unwrap();
    assert!(
        second.tls_digest().unwrap().session_reused,
        "second connection did not resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_closes_silent_clients() {
    let ca = TestCa::new("Test CA").unwrap();
    let mut s = TlsSettings::with_cert(cert_key(&ca.issue(&["t.test"], 30, false).unwrap()));
    s.set_handshake_timeout(Duration::from_millis(200));
    let port = serve(s.build().unwrap()).await;
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the server closed a silent client")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// X25519MLKEM768 end to end where the library has it (BoringSSL;
/// OpenSSL 3.5+); elsewhere, asking for it is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_quantum_key_exchange() {
    let ca = TestCa::new("Test CA").unwrap();
    let dir = Dir::new("pq");
    std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
    let cert = cert_key(&ca.issue(&["pq.test"], 30, false).unwrap());
    let mut settings = TlsSettings::with_cert(cert.clone());
    settings.set_groups(ext::PQ_HYBRID_GROUP);
    if !ext::group_supported(ext::PQ_HYBRID_GROUP) {
        eprintln!(
            "{} has no {}: checking the fallback",
            pingora_core::tls::BACKEND,
            ext::PQ_HYBRID_GROUP
        );
        let e = settings
            .build()
            .err()
            .expect("an unsupported group is refused");
        assert_eq!(e.etype(), &ErrorType::ConfError, "{e}");
        // The default offers what the library has.
        let port = serve(TlsSettings::with_cert(cert).build().unwrap()).await;
        let mut peer = TlsPeer::new("pq.test");
        peer.ca_file = Some(dir.path("ca.crt"));
        let tls = TlsConnector::new(None)
            .connect(tcp(port).await, &peer)
            .await
            .unwrap();
        assert_eq!(tls.tls_digest().unwrap().group.as_deref(), Some("X25519"));
        return;
    }
    let port = serve(settings.build().unwrap()).await;
    let mut peer = TlsPeer::new("pq.test");
    peer.ca_file = Some(dir.path("ca.crt"));
    peer.groups = Some(ext::PQ_HYBRID_GROUP.to_string());
    let tls = TlsConnector::new(None)
        .connect(tcp(port).await, &peer)
        .await
        .unwrap();
    assert_eq!(
        tls.tls_digest().unwrap().group.as_deref(),
        Some(ext::PQ_HYBRID_GROUP)
    );
    // And the server saw the same.
    let body = get(tls, "pq.test").await;
    assert!(
        body.contains(&format!("group={}", ext::PQ_HYBRID_GROUP)),
        "{body}"
    );
}

/// Write slices go out coalesced into one TLS record where they fit
/// (one `write_vectored` takes a header and a small body whole, where a
/// plain TLS stream would take only the first slice), and whatever the
/// slices, the other end reads exactly the bytes written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectored_writes_are_coalesced_and_arrive_whole() {
    use std::io::IoSlice;
    use tokio::io::AsyncWriteExt;

    let ca = TestCa::new("Test CA").unwrap();
    let dir = Dir::new("vectored");
    std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
    let acceptor = TlsSettings::with_cert(cert_key(&ca.issue(&["v.test"], 30, false).unwrap()))
        .build()
        .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut tls = acceptor.handshake(L4Stream::from_tcp(s)).await.unwrap();
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        got
    });
    let connector = TlsConnector::new(Some(&dir.path("ca.crt")));
    let mut tls = connector
        .connect(tcp(port).await, &TlsPeer::new("v.test"))
        .await
        .unwrap();

    let header = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n".to_vec();
    let body = b"hello world".to_vec();
    let n = tls
        .write_vectored(&[IoSlice::new(&header), IoSlice::new(&body)])
        .await
        .unwrap();
    assert_eq!(n, header.len() + body.len(), "one write takes both slices");

    // Then patterns around the coalescing limit, written out fully.
    let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let patterns: Vec<Vec<&[u8]>> = vec![
        vec![b"a", &big[..20_000], b"\r\n"],
        vec![&big[..9_000], b"tail"],
        vec![b"", b"x", b"", &big[..8_191], b"yz"],
        (0..50).map(|i| &big[i * 7..i * 7 + 7]).collect(),
    ];
    let mut expect = [header, body].concat();
    for p in &patterns {
        let mut slices: Vec<IoSlice<'_>> = p.iter().map(|s| IoSlice::new(s)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let n = tls.write_vectored(rest).await.unwrap();
            assert!(n > 0);
            IoSlice::advance_slices(&mut rest, n);
        }
        expect.extend(p.iter().flat_map(|s| s.iter().copied()));
    }
    tls.shutdown().await.unwrap();
    drop(tls);
    let got = server.await.unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(
        got == expect,
        "the bytes read differ from the bytes written"
    );
}

/// Two pipelined requests in two TLS records that reach the server in
/// one read: the second waits, already read, under the TLS library (the
/// socket reads ahead), and must still be answered although the socket
/// itself has nothing more to say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_records_read_ahead_are_answered() {
    use tokio::io::AsyncWriteExt;

    let ca = TestCa::new("Test CA").unwrap();
    let dir = Dir::new("pipelined");
    std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
    let acceptor = TlsSettings::with_cert(cert_key(&ca.issue(&["p.test"], 30, false).unwrap()))
        .build()
        .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let tls = acceptor.handshake(L4Stream::from_tcp(s)).await.unwrap();
        // Both records are in the socket before the server reads at all.
        written_rx.await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        Arc::new(HttpServer::new(Describe))
            .process_new(Box::new(tls), &rx)
            .await;
    });
    let connector = TlsConnector::new(Some(&dir.path("ca.crt")));
    let mut tls = connector
        .connect(tcp(port).await, &TlsPeer::new("p.test"))
        .await
        .unwrap();
    let req = b"GET /a HTTP/1.1\r\nHost: p.test\r\n\r\n";
    tls.write_all(req).await.unwrap();
    tls.flush().await.unwrap();
    let last = b"GET /b HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n";
    tls.write_all(last).await.unwrap();
    tls.flush().await.unwrap();
    written_tx.send(()).unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got))
        .await
        .expect("both pipelined requests answered")
        .unwrap();
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    server.await.unwrap();
}
