//! HTTPS with two certificates on one port, chosen by the name the client
//! asks for (SNI), and HTTP/2 or HTTP/1.1 chosen by ALPN.
//!
//! ```sh
//! cargo run --example https_server -- --listen 127.0.0.1:6443
//! # it prints where it wrote its CA; then:
//! curl --cacert /tmp/.../ca.crt --resolve a.test:6443:127.0.0.1 https://a.test:6443/
//! curl --cacert /tmp/.../ca.crt --resolve b.test:6443:127.0.0.1 https://b.test:6443/
//! ```
//!
//! The certificates come from a private CA made at start-up (no key is
//! stored in the repository); pass `--cert-dir` to reuse a directory.
use std::sync::Arc;

use async_trait::async_trait;
use clap::Parser;
use pingora::core::apps::http_app::{HttpServer, ServeHttp};
use pingora::core::listeners::tls::{CertKey, TlsAccept, TlsSettings};
use pingora::core::protocols::http::ServerSession;
use pingora::core::server::{Opt, Server};
use pingora::core::services::listening::Service;
use pingora::core::utils::certs::TestCa;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    opt: Opt,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Where to write the CA and certificates (default: a new temp dir).
    #[arg(long)]
    cert_dir: Option<String>,
}

/// Picks the certificate by SNI: one per name, `a.test` when unknown.
struct Certs {
    a: Arc<CertKey>,
    b: Arc<CertKey>,
}

impl TlsAccept for Certs {
    fn certificate(&self, sni: Option<&str>) -> Option<Arc<CertKey>> {
        Some(if sni == Some("b.test") {
            self.b.clone()
        } else {
            self.a.clone()
        })
    }
}

/// Says which name, protocol and group the connection got.
struct Hello;

#[async_trait]
impl ServeHttp for Hello {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let tls = session.tls_digest().cloned().unwrap_or_default();
        let body = format!(
            "hello {} over {} {} ({}, {})\n",
            tls.sni.as_deref().unwrap_or("(no SNI)"),
            if session.is_http2() {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            },
            tls.version,
            tls.cipher,
            tls.group.as_deref().unwrap_or("?"),
        );
        http::Response::new(body.into_bytes())
    }
}

fn main() -> pingora::error::Result<()> {
    let args = Args::parse();
    let dir = match &args.cert_dir {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("pingora-https-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        pingora::error::Error::because(pingora::error::ErrorType::FileCreateError, "cert dir", e)
    })?;
    // A private CA and one certificate per name.
    let ca = TestCa::new("pingora example CA")?;
    ca.ca.write(&dir, "ca")?;
    let mut certs = Vec::new();
    for name in ["a.test", "b.test"] {
        let (cert, key) = ca.issue(&[name], 30, false)?.write(&dir, name)?;
        certs.push(Arc::new(CertKey::from_files(&cert, &key)?));
    }
    eprintln!("CA certificate: {}", dir.join("ca.crt").display());

    let mut server = Server::new_or_exit(args.opt);
    server.bootstrap();
    let mut tls = TlsSettings::with_callbacks(Box::new(Certs {
        a: certs[0].clone(),
        b: certs[1].clone(),
    }))?;
    tls.enable_h2();
    let mut service = Service::new("https".to_string(), HttpServer::new(Hello));
    service.add_tls_with_settings(&args.listen, None, tls)?;
    server.add_service(service);
    server.run_forever();
}
