//! A proxy that overrides Pingora 0.8's phases with Pingora's signatures:
//! it answers `/health` itself, rewrites response headers, rate-limits
//! bodies, turns trailers into a body suffix, and answers failures with a
//! body of its own while keeping the client's connection. Compiled by CI
//! (`cargo test` builds examples); `cargo run -p pingora-compat --example
//! phases` serves 127.0.0.1:6190 in front of 127.0.0.1:8080.
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora_http::ResponseHeader;
use pingora_proxy::FailToProxy;

/// The proxy; its per-request state counts body bytes.
struct Phases;

#[async_trait]
impl ProxyHttp for Phases {
    type CTX = usize;
    fn new_ctx(&self) -> usize {
        0
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut usize) -> Result<bool> {
        if session.req_header().uri.path() == "/health" {
            let mut resp = ResponseHeader::build(200, None)?;
            resp.set_content_length(3)?;
            session.write_response_header(Box::new(resp), false).await?;
            session
                .write_response_body(Some(Bytes::from_static(b"ok\n")), true)
                .await?;
            session.set_keepalive(Some(60));
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut usize,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            "127.0.0.1:8080",
            false,
            String::new(),
        )))
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        reused: bool,
        peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        _ctx: &mut usize,
    ) -> Result<()> {
        // Both ends' digests: addresses, and the TLS session if any.
        let upstream: Option<&pingora::protocols::l4::socket::SocketAddr> = digest
            .and_then(|d| d.socket_digest.as_ref())
            .and_then(|s| s.peer_addr());
        let client_tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|s| s.version.to_string());
        println!("{peer} fd {fd} reused {reused} at {upstream:?}, client TLS {client_tls:?}");
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut usize,
    ) -> Result<()> {
        upstream_response.insert_header("x-via", "phases")?;
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut usize,
    ) -> Result<Option<Duration>> {
        *ctx += body.as_ref().map_or(0, Bytes::len);
        // Past 1 MB, slow down.
        Ok((*ctx > 1 << 20).then(|| Duration::from_millis(10)))
    }

    async fn response_trailer_filter(
        &self,
        _session: &mut Session,
        upstream_trailers: &mut http::HeaderMap,
        _ctx: &mut usize,
    ) -> Result<Option<Bytes>> {
        Ok(upstream_trailers
            .get("x-checksum")
            .map(|v| Bytes::copy_from_slice(v.as_bytes())))
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut usize,
    ) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(code) => *code,
            _ => 502,
        };
        let answered = session
            .respond_error_with_body(code, Bytes::from_static(b"try again later\n"))
            .await
            .is_ok();
        FailToProxy {
            error_code: code,
            can_reuse_downstream: answered,
        }
    }
}

fn main() {
    let mut server = Server::new(None).unwrap();
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Phases);
    proxy.add_tcp("127.0.0.1:6190");
    server.add_service(proxy);
    server.run_forever();
}
