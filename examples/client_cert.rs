//! Mutual TLS: the server accepts only clients with a certificate from its
//! CA, and our TLS connector presents one.
//!
//! ```sh
//! cargo run --example client_cert
//! ```
//!
//! It starts an mTLS listener on a port from the OS, then connects to it
//! three ways: with a good client certificate (accepted), without one and
//! with one from another CA (both refused). All certificates are made at
//! start-up; nothing leaves 127.0.0.1.
use std::sync::Arc;

use pingora::core::connectors::tls::{TlsConnector, TlsPeer};
use pingora::core::listeners::tls::{CertKey, TlsSettings};
use pingora::core::protocols::{L4Stream, IO};
use pingora::core::utils::certs::{Issued, TestCa};
use pingora::error::Result;

fn cert_key(i: &Issued) -> Result<Arc<CertKey>> {
    Ok(Arc::new(CertKey::from_pem(
        i.cert_pem().as_bytes(),
        i.key_pem().as_bytes(),
    )?))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pingora-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok();
    let ca = TestCa::new("mTLS example CA")?;
    let (ca_file, _) = ca.ca.write(&dir, "ca")?;
    let server_cert = ca.issue(&["server.test"], 1, false)?;
    let good_client = ca.issue(&["client.test"], 1, true)?;
    let stranger = TestCa::new("another CA")?.issue(&["client.test"], 1, true)?;

    // The server: client certificates required, checked against our CA.
    let mut settings = TlsSettings::with_cert(cert_key(&server_cert)?);
    settings.set_client_ca_file(&ca_file, true);
    let acceptor = settings.build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            match acceptor.handshake(L4Stream::from_tcp(s)).await {
                Ok(tls) => {
                    let who = tls.tls_digest().and_then(|d| d.peer_subject.clone());
                    println!("server: accepted client {}", who.unwrap_or_default());
                }
                Err(e) => println!("server: refused: {e}"),
            }
        }
    });

    // The client side: one connector, three attempts.
    let connector = TlsConnector::new(Some(&ca_file));
    for (label, cert) in [
        ("with a good certificate", Some(&good_client)),
        ("without a certificate", None),
        ("with a certificate from another CA", Some(&stranger)),
    ] {
        let mut peer = TlsPeer::new("server.test");
        peer.client_cert_key = cert.map(cert_key).transpose()?;
        let tcp = L4Stream::from_tcp(tokio::net::TcpStream::connect(addr).await.unwrap());
        match connector.connect(tcp, &peer).await {
            Ok(mut tls) => {
                // In TLS 1.3 the server checks the client certificate after
                // the client's handshake ends: a refusal shows up on read.
                use tokio::io::AsyncReadExt;
                let mut b = [0u8; 1];
                let read =
                    tokio::time::timeout(std::time::Duration::from_millis(500), tls.read(&mut b))
                        .await;
                match read {
                    Ok(Err(e)) => println!("client {label}: refused ({e})"),
                    _ => println!("client {label}: connected"),
                }
            }
            Err(e) => println!("client {label}: refused ({e})"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
