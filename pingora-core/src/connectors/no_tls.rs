//! TLS to upstreams in a build without a TLS library (neither the
//! `openssl` nor the `boringssl` feature): connecting to a peer that wants
//! TLS is an error that says so; plain peers are unaffected.

use std::sync::Arc;
use std::time::Instant;

use pingora_error::Result;

use crate::listeners::tls::{no_tls, CertKey};
use crate::protocols::{L4Stream, Stream};
use crate::upstreams::peer::Peer;

/// Makes TLS connections to upstreams; in this build, refuses to.
#[derive(Debug, Default)]
pub struct TlsConnector;

impl TlsConnector {
    /// A connector (the CA file is not read in this build).
    pub fn new(_default_ca_file: Option<&str>) -> Self {
        TlsConnector
    }

    /// Always an error: no TLS library in this build.
    pub(crate) async fn connect_peer<P: Peer + ?Sized>(
        &self,
        _stream: L4Stream,
        peer: &P,
        _default_cert: Option<&Arc<CertKey>>,
        _start: Instant,
    ) -> Result<Stream> {
        no_tls(&format!("{peer} wants TLS"))
    }
}

#[cfg(test)]
mod tests {
    use crate::connectors::TransportConnector;
    use crate::listeners::Listeners;
    use crate::upstreams::peer::HttpPeer;

    // Run by `.ci/run` with `cargo test -p pingora-core --no-default-features`.
    #[test]
    fn tls_listeners_are_refused_naming_the_features() {
        let mut l = Listeners::new();
        let e = l.add_tls("127.0.0.1:0", "c.pem", "k.pem").unwrap_err();
        assert!(e.to_string().contains("`openssl` or `boringssl`"), "{e}");
        assert!(Listeners::tls("127.0.0.1:0", "c.pem", "k.pem").is_err());
    }

    #[tokio::test]
    async fn a_tls_peer_is_an_error_and_a_plain_one_connects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let c = TransportConnector::new(None);
        let e = c
            .new_stream(&HttpPeer::new(addr, true, "example.org".into()))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("wants TLS"), "{e}");
        let plain = HttpPeer::new(addr, false, String::new());
        assert!(c.new_stream(&plain).await.is_ok());
    }
}
