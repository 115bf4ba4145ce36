//! TLS listeners and connectors with whichever backend this build uses
//! (`.ci/run` runs this file once with OpenSSL and once with BoringSSL):
//! curl and `openssl s_client` against the listener, and our connector
//! against listeners with good and bad certificates. Certificates are made
//! at test time; no key is committed.
#![cfg(feature = "any_tls")]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::apps::ServerApp;
use pingora_core::connectors::tls::{TlsConnector, TlsPeer};
use pingora_core::listeners::tls::{
    Acceptor, CaCerts, CertKey, TlsAccept, TlsSettings, TlsVersion,
};
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::tls::SslStream;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::{L4Stream, IO};
use pingora_core::tls::ext;
use pingora_core::tls::{pkey::PKey, ssl::NameType, x509::X509};
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
        // The same session through Pingora's digest.
        let digest = s.digest().expect("a connection digest");
        let ssl = digest.ssl_digest.as_ref().expect("a TLS digest");
        assert_eq!(ssl.version, d.version);
        assert_eq!(digest.timing_digest.len(), 2, "socket and TLS layers");
        assert_eq!(
            digest.socket_digest.as_ref().and_then(|s| s.peer_addr()),
            s.client_addr()
        );
        let body = format!(
            "sni={} alpn={} version={} group={} peer={} sans={} cipher={} handshake_us={} cn={} serial={} certsha={} ext={}\n",
            d.sni.unwrap_or_default(),
            alpn.unwrap_or_default(),
            d.version,
            d.group.unwrap_or_default(),
            d.peer_subject.unwrap_or_default(),
            d.peer_sans.join(","),
            d.cipher,
            d.handshake_duration.as_micros(),
            d.peer_cn.unwrap_or_default(),
            d.serial_number.is_some_and(|s| !s.is_empty()),
            d.cert_digest.len(),
            d.extension.get::<String>().cloned().unwrap_or_default(),
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

    /// A test CA, its certificate written as `ca.crt` here (for curl).
    fn ca(&self) -> TestCa {
        let ca = TestCa::new("Test CA").unwrap();
        std::fs::write(self.path("ca.crt"), ca.ca.cert_pem()).unwrap();
        ca
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
    serve_with(acceptor, Default::default()).await
}

/// [`serve`] with these HTTP limits and timeouts.
async fn serve_with(acceptor: Acceptor, h1: pingora_core::protocols::http::v1::H1Options) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = Arc::new(acceptor);
    let app = Arc::new(HttpServer::with_options(Describe, h1));
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

/// Pingora's callbacks: the pair for the SNI looked up asynchronously
/// (after a wait, as a store or a fetch would take), and a value attached
/// to the connection once the handshake is done.
struct Lookup {
    a: Issued,
    b: Issued,
}

#[async_trait]
impl TlsAccept for Lookup {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let pair = match ssl.servername(NameType::HOST_NAME) {
            Some("b.test") => &self.b,
            _ => &self.a,
        };
        let cert = X509::from_pem(pair.cert_pem().as_bytes()).unwrap();
        let key = PKey::private_key_from_pem(pair.key_pem().as_bytes()).unwrap();
        ext::ssl_use_certificate(ssl, &cert).unwrap();
        ext::ssl_use_private_key(ssl, &key).unwrap();
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let name = ssl.servername(NameType::HOST_NAME).unwrap_or("-");
        Some(Arc::new(format!("seen-{name}")))
    }
}

/// curl with `args` (and `--cacert`, `--resolve` for `name`) against
/// `https://name:port/`; whether it succeeded, and what it printed.
async fn curl_to(dir: &Dir, name: &str, port: u16, args: &[&str]) -> (bool, String) {
    let cafile = dir.path("ca.crt");
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}/");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        run(Command::new("curl")
            .args([
                "-sS",
                "--http1.1",
                "--cacert",
                &cafile,
                "--resolve",
                &resolve,
            ])
            .args(&args)
            .arg(&url))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingoras_async_certificate_callback_and_handshake_data() {
    let dir = Dir::new("async-cert");
    let ca = dir.ca();
    let a = ca.issue(&["a.test"], 30, false).unwrap();
    let b = ca.issue(&["b.test"], 30, false).unwrap();
    let settings = TlsSettings::with_callbacks(Box::new(Lookup { a, b })).unwrap();
    let port = serve(settings.build().unwrap()).await;
    for name in ["a.test", "b.test"] {
        // curl checks that the certificate names the host it asked for.
        let (ok, out) = curl_to(&dir, name, port, &[]).await;
        assert!(ok, "{out}");
        assert!(out.starts_with(&format!("sni={name} ")), "{out}");
        assert!(
            out.trim_end().ends_with(&format!("ext=seen-{name}")),
            "{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_the_library_builder_through_deref() {
    let dir = Dir::new("deref");
    let ca = dir.ca();
    let a = ca.issue(&["a.test"], 30, false).unwrap();
    let mut settings = TlsSettings::with_cert(cert_key(&a));
    // The library's own call, as Pingora programs make it.
    settings
        .set_min_proto_version(Some(pingora_core::tls::ssl::SslVersion::TLS1_3))
        .unwrap();
    let port = serve(settings.build().unwrap()).await;
    let (ok, out) = curl_to(&dir, "a.test", port, &["--tls-max", "1.2"]).await;
    assert!(!ok, "TLS 1.2 got through: {out}");
    let (ok, out) = curl_to(&dir, "a.test", port, &[]).await;
    assert!(ok && out.contains("version=TLSv1.3"), "{out}");
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
    let ca = dir.ca();
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
        // curl checks that the certificate names the host it asked for.
        let (ok, out) = curl_to(&dir, name, port, &[]).await;
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
    // An unknown name gets no certificate: the handshake fails.
    let (ok, _) = curl_to(&dir, "c.test", port, &[]).await;
    assert!(!ok);
}

/// curl against a listener, with extra arguments: (succeeded, output).
type CurlTo = Box<dyn Fn(Vec<String>) -> tokio::task::JoinHandle<(bool, String)>>;

/// A listener asking for client certificates from a test CA (`required`
/// or not), with a client certificate from that CA and one from another.
struct Mtls {
    dir: Dir,
    port: u16,
    /// curl to the listener, trusting its CA.
    curl: CurlTo,
    ccert: String,
    ckey: String,
    bcert: String,
    bkey: String,
}

impl Mtls {
    async fn start(tag: &str, required: bool) -> Mtls {
        let dir = Dir::new(tag);
        let ca = TestCa::new("Test CA").unwrap();
        let other = TestCa::new("Other CA").unwrap();
        std::fs::write(dir.path("ca.crt"), ca.ca.cert_pem()).unwrap();
        let (cert, key) = dir.write(&ca.issue(&["localhost"], 30, false).unwrap(), "server");
        let (ccert, ckey) = dir.write(
            &ca.issue(&["client.test", "spiffe://test.org/client"], 30, true)
                .unwrap(),
            "client",
        );
        let (bcert, bkey) = dir.write(&other.issue(&["client.test"], 30, true).unwrap(), "bad");
        let mut settings = TlsSettings::intermediate(&cert, &key).unwrap();
        settings.set_client_ca_file(&dir.path("ca.crt"), required);
        let port = serve(settings.build().unwrap()).await;
        let url = format!("https://localhost:{port}/");
        let cafile = dir.path("ca.crt");
        let curl: CurlTo = Box::new(move |extra: Vec<String>| {
            let (cafile, url) = (cafile.clone(), url.clone());
            tokio::task::spawn_blocking(move || {
                run(Command::new("curl")
                    .args(["-sS", "--cacert", &cafile])
                    .args(&extra)
                    .arg(&url))
            })
        });
        Mtls {
            dir,
            port,
            curl,
            ccert,
            ckey,
            bcert,
            bkey,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_good_client_certs_only() {
    let Mtls {
        dir,
        port,
        curl,
        ccert,
        ckey,
        bcert,
        bkey,
    } = Mtls::start("mtls", true).await;
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
        out.contains("peer=CN=client.test sans=client.test,spiffe://test.org/client "),
        "{out}"
    );
    // The certificate's CN alone, its serial number and its SHA-256.
    assert!(
        out.contains(" cn=client.test serial=true certsha=32"),
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
            .expect_err("an unsupported group is refused");
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

/// `openssl s_client` against `port` with extra arguments; its output.
async fn s_client(port: u16, args: &[&str]) -> String {
    let connect = format!("127.0.0.1:{port}");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        run(Command::new("openssl")
            .args(["s_client", "-connect", &connect])
            .args(&args)
            .stdin(std::process::Stdio::null()))
        .1
    })
    .await
    .unwrap()
}

/// What s_client says it negotiated, e.g. `TLSv1.2`, or `None` when the
/// handshake failed.
fn s_client_protocol(out: &str) -> Option<String> {
    // "New, TLSv1.3, Cipher is ..." once a handshake completed;
    // "New, (NONE), Cipher is (NONE)" when it did not.
    let line = out.lines().find(|l| l.starts_with("New, "))?;
    let proto = line.split(", ").nth(1)?;
    (proto != "(NONE)").then(|| proto.to_string())
}

/// TLS 1.2 is the lowest version by default (a TLS 1.1 client is refused
/// with a protocol-version alert, a TLS 1.2 client served); a listener
/// set to TLS 1.3 refuses TLS 1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_protocol_version() {
    let ca = TestCa::new("Test CA").unwrap();
    let cert = cert_key(&ca.issue(&["v.test"], 30, false).unwrap());
    let default = serve(TlsSettings::with_cert(cert.clone()).build().unwrap()).await;
    // SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all.
    let out = s_client(
        default,
        &[
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-servername",
            "v.test",
        ],
    )
    .await;
    assert_eq!(s_client_protocol(&out), None, "{out}");
    assert!(out.contains("protocol version"), "{out}");
    let out = s_client(default, &["-tls1_2", "-servername", "v.test"]).await;
    assert_eq!(s_client_protocol(&out).as_deref(), Some("TLSv1.2"), "{out}");

    let mut s = TlsSettings::with_cert(cert);
    s.set_min_version(TlsVersion::Tls13);
    let strict = serve(s.build().unwrap()).await;
    let out = s_client(strict, &["-tls1_2", "-servername", "v.test"]).await;
    assert_eq!(s_client_protocol(&out), None, "{out}");
    assert!(out.contains("protocol version"), "{out}");
    let out = s_client(strict, &["-tls1_3", "-servername", "v.test"]).await;
    assert_eq!(s_client_protocol(&out).as_deref(), Some("TLSv1.3"), "{out}");
}

/// With session tickets off, a TLS 1.3 client gets no ticket and its
/// next connection is a full handshake; with them on (the default), it
/// gets one and resumes. Seen by `openssl s_client` and by our connector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tickets_can_be_turned_off() {
    let dir = Dir::new("tickets");
    let ca = dir.ca();
    let cert = cert_key(&ca.issue(&["t.test"], 30, false).unwrap());
    for tickets in [true, false] {
        let mut s = TlsSettings::with_cert(cert.clone());
        s.set_session_tickets(tickets);
        let port = serve(s.build().unwrap()).await;
        let sess = dir.path(&format!("sess-{tickets}"));
        let _ = std::fs::remove_file(&sess);
        // s_client reads the server's post-handshake messages (tickets)
        // before it leaves; a request makes sure they were sent.
        let connect = format!("127.0.0.1:{port}");
        let sess2 = sess.clone();
        let out = tokio::task::spawn_blocking(move || {
            let mut child = Command::new("openssl")
                .args(["s_client", "-connect", &connect, "-servername", "t.test"])
                .args(["-sess_out", &sess2, "-ign_eof"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n")
                .unwrap();
            let out = child.wait_with_output().unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .await
        .unwrap();
        assert!(out.contains("HTTP/1.1 200"), "{out}");
        assert_eq!(
            out.contains("New Session Ticket arrived"),
            tickets,
            "tickets {tickets}: {out}"
        );
        if tickets {
            let out = s_client(port, &["-servername", "t.test", "-sess_in", &sess]).await;
            assert!(out.contains("Reused, TLSv1.3"), "{out}");
        }

        // Our connector: resumes only when tickets are on.
        let connector = TlsConnector::new(Some(&dir.path("ca.crt")));
        let peer = TlsPeer::new("t.test");
        let first = connector.connect(tcp(port).await, &peer).await.unwrap();
        get(first, "t.test").await;
        let second = connector.connect(tcp(port).await, &peer).await.unwrap();
        assert_eq!(
            second.tls_digest().unwrap().session_reused,
            tickets,
            "tickets {tickets}"
        );
    }
}

/// mTLS with the certificate asked for but not required: a client
/// without one is served (no peer in the digest), a client with one has
/// its subject and names in the digest, and one from an unknown CA is
/// still refused (a certificate sent is checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates() {
    let Mtls {
        dir: _dir, // kept: the files go with it
        port,
        curl,
        ccert,
        ckey,
        bcert,
        bkey,
    } = Mtls::start("mtls-opt", false).await;
    let (ok, out) = curl(vec![]).await.unwrap();
    assert!(ok, "a client without a certificate is served: {out}");
    assert!(out.contains(" peer= sans= "), "{out}");
    let (ok, out) = curl(vec!["--cert".into(), ccert, "--key".into(), ckey])
        .await
        .unwrap();
    assert!(ok, "{out}");
    assert!(
        out.contains("peer=CN=client.test sans=client.test,spiffe://test.org/client "),
        "{out}"
    );
    let (ok, out) = curl(vec!["--cert".into(), bcert, "--key".into(), bkey])
        .await
        .unwrap();
    assert!(!ok, "a certificate from another CA is refused: {out}");
    // The server asked for a certificate (s_client shows the request).
    let out = s_client(port, &["-servername", "localhost"]).await;
    assert!(
        out.contains("Acceptable client certificate CA names")
            || out.contains("Requested Signature Algorithms"),
        "{out}"
    );
}

/// The digest on both sides: version, cipher, group and a handshake
/// duration that was measured (non-zero, and well under the time the
/// whole test takes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_has_cipher_group_and_handshake_time() {
    let dir = Dir::new("digest");
    let ca = dir.ca();
    let cert = cert_key(&ca.issue(&["d.test"], 30, false).unwrap());
    let started = std::time::Instant::now();
    for (min, proto) in [(None, "TLSv1.3"), (Some("-tls1_2"), "TLSv1.2")] {
        let port = serve(TlsSettings::with_cert(cert.clone()).build().unwrap()).await;
        // s_client as the client, pinned to a cipher and group so the
        // server's digest can be checked exactly.
        let mut args = vec!["-servername", "d.test", "-groups", "P-256", "-ign_eof"];
        match min {
            None => args.extend(["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"]),
            Some(v) => args.extend([
                v,
                "-cipher",
                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384",
            ]),
        }
        let connect = format!("127.0.0.1:{port}");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            let mut child = Command::new("openssl")
                .args(["s_client", "-connect", &connect])
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"GET / HTTP/1.1\r\nHost: d.test\r\nConnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
        })
        .await
        .unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with("sni="))
            .unwrap_or_else(|| panic!("no answer: {out}"));
        assert!(line.contains(&format!("version={proto} ")), "{line}");
        assert!(
            line.contains("group=prime256v1 ") || line.contains("group=P-256 "),
            "{line}"
        );
        let cipher = if min.is_none() {
            "TLS_CHACHA20_POLY1305_SHA256"
        } else {
            "ECDHE-"
        };
        assert!(line.contains(&format!("cipher={cipher}")), "{line}");
        let us: u128 = line
            .rsplit("handshake_us=")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(us > 0, "{line}");
        assert!(us < started.elapsed().as_micros(), "{line}");
    }

    // Our connector's digest of the same kind of connection.
    let port = serve(TlsSettings::with_cert(cert).build().unwrap()).await;
    let mut peer = TlsPeer::new("d.test");
    peer.ca_file = Some(dir.path("ca.crt"));
    peer.groups = Some("X25519".into());
    let before = std::time::Instant::now();
    let tls = TlsConnector::new(None)
        .connect(tcp(port).await, &peer)
        .await
        .unwrap();
    let took = before.elapsed();
    let d = tls.tls_digest().unwrap().clone();
    assert_eq!(d.version, "TLSv1.3");
    assert!(
        d.cipher.starts_with("TLS_AES_") || d.cipher.starts_with("TLS_CHACHA20"),
        "{}",
        d.cipher
    );
    assert_eq!(d.group.as_deref(), Some("X25519"));
    assert!(!d.handshake_duration.is_zero());
    assert!(
        d.handshake_duration <= took,
        "{:?} > {took:?}",
        d.handshake_duration
    );
    // The server measured its own side of it.
    let body = get(tls, "d.test").await;
    assert!(body.contains("version=TLSv1.3 group=X25519 "), "{body}");
    assert!(body.contains(&format!("cipher={} ", d.cipher)), "{body}");
}

/// CAs given as PEM bytes instead of files: the listener's client CA and
/// the connector's upstream CA (per TLS peer, and per HTTP peer through
/// the connector); a PEM without a certificate is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_from_memory() {
    use pingora_core::connectors::http::Connector;
    use pingora_core::upstreams::peer::HttpPeer;

    let ca = TestCa::new("Test CA").unwrap();
    let other = TestCa::new("Other CA").unwrap();
    let ca_pem: Arc<[u8]> = Arc::from(ca.ca.cert_pem().as_bytes());
    let server = cert_key(&ca.issue(&["m.test"], 30, false).unwrap());
    let client = cert_key(&ca.issue(&["client.test"], 30, true).unwrap());
    let stranger = cert_key(&other.issue(&["client.test"], 30, true).unwrap());
    let mut s = TlsSettings::with_cert(server);
    s.set_client_ca_pem(&ca_pem, true);
    let port = serve(s.build().unwrap()).await;

    let connector = TlsConnector::new(None);
    let mut peer = TlsPeer::new("m.test");
    peer.ca_pem = Some(ca_pem.clone());
    peer.client_cert_key = Some(client.clone());
    let tls = connector.connect(tcp(port).await, &peer).await.unwrap();
    assert!(get(tls, "m.test").await.contains("peer=CN=client.test"));
    // The server checks client certificates against that CA.
    peer.client_cert_key = Some(stranger);
    let refused = match connector.connect(tcp(port).await, &peer).await {
        Err(_) => true,
        // TLS 1.3: the client learns of the refusal on its first read.
        Ok(tls) => {
            let mut s = HttpSession::new(Box::new(tls));
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header("Host", "m.test").unwrap();
            s.write_request_header(Box::new(req)).await.is_err() || s.read_response().await.is_err()
        }
    };
    assert!(refused, "a client certificate from another CA was accepted");
    // The client checks the server against the CA in memory: another
    // CA's PEM does not vouch for it.
    let mut wrong = TlsPeer::new("m.test");
    wrong.ca_pem = Some(Arc::from(other.ca.cert_pem().as_bytes()));
    wrong.client_cert_key = Some(client.clone());
    let e = connector
        .connect(tcp(port).await, &wrong)
        .await
        .unwrap_err();
    assert_eq!(e.etype(), &ErrorType::CertUnknownCA, "{e}");

    // A connector-wide default CA in memory, for peers that name none.
    let by_default = TlsConnector::with_default_ca(Some(CaCerts::Pem(ca_pem.clone())));
    let mut plain = TlsPeer::new("m.test");
    plain.client_cert_key = Some(client.clone());
    let tls = by_default.connect(tcp(port).await, &plain).await.unwrap();
    assert!(get(tls, "m.test").await.contains("peer=CN=client.test"));

    // Through the HTTP connector: PeerOptions::ca_pem.
    let c = Connector::new(None);
    let mut hp = HttpPeer::try_new(&format!("127.0.0.1:{port}"), true, "m.test".into()).unwrap();
    hp.options.client_cert_key = Some(client);
    let e = c
        .get_http_session(&hp)
        .await
        .expect_err("system CAs do not know ours");
    assert_eq!(e.etype(), &ErrorType::CertUnknownCA, "{e}");
    hp.options.ca_pem = Some(ca_pem);
    let (mut sess, _) = c.get_http_session(&hp).await.unwrap();
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    req.insert_header("Host", "m.test").unwrap();
    sess.write_request_header_eos(Box::new(req), true)
        .await
        .unwrap();
    sess.read_response().await.unwrap();
    assert_eq!(sess.resp_header().unwrap().status, 200);

    // No certificate in the PEM: refused at build (listener) and at
    // connect (connector).
    let mut s = TlsSettings::with_cert(cert_key(&ca.issue(&["m.test"], 30, false).unwrap()));
    s.set_client_ca_pem(b"not a certificate", false);
    let e = s.build().expect_err("an empty CA PEM is refused");
    assert_eq!(e.etype(), &ErrorType::InvalidCert, "{e}");
    let mut bad = TlsPeer::new("m.test");
    bad.ca_pem = Some(Arc::from(&b""[..]));
    let e = connector.connect(tcp(port).await, &bad).await.unwrap_err();
    assert_eq!(e.etype(), &ErrorType::InvalidCert, "{e}");
}

/// HTTP/2 by ALPN, then silence: the HTTP/2 handshake (waiting for the
/// client's preface) is bounded by `header_read_timeout`, well before the
/// keep-alive timeout would close the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_client_that_sends_no_preface_is_closed_after_the_header_timeout() {
    let ca = TestCa::new("Test CA").unwrap();
    let cert = ca.issue(&["localhost"], 30, false).unwrap();
    let mut settings = TlsSettings::with_cert(cert_key(&cert));
    settings.enable_h2();
    let h1 = pingora_core::protocols::http::v1::H1Options {
        header_read_timeout: Some(Duration::from_millis(300)),
        keepalive_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let port = serve_with(settings.build().unwrap(), h1).await;
    let mut peer = TlsPeer::new("localhost");
    peer.verify_cert = false;
    peer.verify_hostname = false;
    peer.alpn = vec![b"h2".to_vec()];
    // From before the connection: the server's wait for the preface starts
    // after it, whatever delays this task once the handshake is done.
    let started = std::time::Instant::now();
    let mut tls = TlsConnector::new(None)
        .connect(tcp(port).await, &peer)
        .await
        .unwrap();
    assert!(tls.tls_digest().is_some_and(|d| d.is_h2()), "ALPN chose h2");
    let mut buf = [0u8; 1024];
    // The server's SETTINGS may come first; then the connection closes.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the silent HTTP/2 client was never closed"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
