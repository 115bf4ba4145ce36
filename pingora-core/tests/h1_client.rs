//! The HTTP/1 client session against a real nginx (Debian's package, its
//! own conf in a temp dir, on a port from the OS): Content-Length, chunked
//! with trailers, read-until-close, HEAD, 100-continue, chunked uploads,
//! and whether the connection may be reused. The 101 upgrade against a
//! real WebSocket server (tokio-tungstenite), frames written by hand.

use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::protocols::{L4Stream, Stream};
use pingora_http::RequestHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{nginx_dir, start_nginx, Nginx};

const HELLO: &str = "hello from nginx\n";

fn big_text() -> String {
    (0..4000)
        .map(|i| format!("line {i} of a compressible file\n"))
        .collect()
}

fn nginx(tag: &str) -> Nginx {
    let dir = nginx_dir(tag);
    std::fs::create_dir_all(dir.join("www/gz")).unwrap();
    std::fs::create_dir_all(dir.join("www/dav")).unwrap();
    std::fs::write(dir.join("www/hello.txt"), HELLO).unwrap();
    std::fs::write(dir.join("www/gz/big.txt"), big_text()).unwrap();
    start_nginx(
        dir,
        r#"location /gz/ {
            gzip on;
            gzip_min_length 0;
            gzip_http_version 1.0;
            gzip_types text/plain;
            add_trailer X-Trailer-Test yes;
        }
        location /dav/ {
            dav_methods PUT;
            client_max_body_size 10m;
        }"#,
    )
}

async fn connect(port: u16) -> Stream {
    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    Box::new(L4Stream::from_tcp(s))
}

fn get(path: &str) -> Box<RequestHeader> {
    let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
    req.insert_header("Host", "localhost").unwrap();
    Box::new(req)
}

async fn read_all(s: &mut HttpSession) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(chunk) = s.read_body_bytes().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    body
}

#[tokio::test]
async fn content_length_keepalive_and_head() {
    let nginx = nginx("cl");
    let mut s = HttpSession::new(connect(nginx.port).await);
    s.write_request_header(get("/hello.txt")).await.unwrap();
    s.read_response().await.unwrap();
    let resp = s.resp_header().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.headers["content-length"],
        HELLO.len().to_string().as_str()
    );
    assert!(!s.can_reuse(), "body not read yet");
    assert_eq!(read_all(&mut s).await, HELLO.as_bytes());
    assert!(s.can_reuse());

    // The same connection carries a HEAD, then a GET for a missing file.
    let mut s = HttpSession::new(s.reuse().expect("reusable"));
    let mut head = get("/hello.txt");
    head.set_method(http::Method::HEAD);
    s.write_request_header(head).await.unwrap();
    s.read_response().await.unwrap();
    assert_eq!(s.resp_header().unwrap().headers["content-length"], "17");
    assert!(read_all(&mut s).await.is_empty());
    let mut s = HttpSession::new(s.reuse().expect("reusable after HEAD"));
    s.write_request_header(get("/missing")).await.unwrap();
    s.read_response().await.unwrap();
    assert_eq!(s.resp_header().unwrap().status, 404);
    read_all(&mut s).await;
    assert!(s.can_reuse());

    // `Connection: close` from us: not reusable.
    let mut s = HttpSession::new(s.reuse().unwrap());
    let mut req = get("/hello.txt");
    req.insert_header("Connection", "close").unwrap();
    s.write_request_header(req).await.unwrap();
    s.read_response().await.unwrap();
    read_all(&mut s).await;
    assert!(s.reuse().is_none());
}

#[tokio::test]
async fn chunked_with_trailers_and_read_until_close() {
    let nginx = nginx("chunked");
    let mut s = HttpSession::new(connect(nginx.port).await);
    let mut req = get("/gz/big.txt");
    req.insert_header("Accept-Encoding", "gzip").unwrap();
    req.insert_header("TE", "trailers").unwrap();
    s.write_request_header(req).await.unwrap();
    s.read_response().await.unwrap();
    let resp = s.resp_header().unwrap();
    assert_eq!(resp.headers["transfer-encoding"], "chunked");
    assert_eq!(resp.headers["content-encoding"], "gzip");
    let body = read_all(&mut s).await;
    assert_eq!(&body[..2], b"\x1f\x8b", "a gzip stream");
    assert!(body.len() < big_text().len() / 4);
    assert_eq!(s.trailers().unwrap()["x-trailer-test"], "yes");
    assert!(s.can_reuse());

    // Partly read: not reusable.
    let mut s = HttpSession::new(s.reuse().unwrap());
    s.write_request_header(get("/gz/big.txt")).await.unwrap();
    s.read_response().await.unwrap();
    s.read_body_bytes().await.unwrap().unwrap();
    assert!(!s.can_reuse());

    // HTTP/1.0 and a body of unknown length: read until close.
    let mut s = HttpSession::new(connect(nginx.port).await);
    let mut req = get("/gz/big.txt");
    req.set_version(http::Version::HTTP_10);
    req.insert_header("Accept-Encoding", "gzip").unwrap();
    s.write_request_header(req).await.unwrap();
    s.read_response().await.unwrap();
    let resp = s.resp_header().unwrap();
    assert!(!resp.headers.contains_key("content-length"));
    assert!(!resp.headers.contains_key("transfer-encoding"));
    let body = read_all(&mut s).await;
    assert_eq!(&body[..2], b"\x1f\x8b");
    assert!(s.is_body_done());
    assert!(s.reuse().is_none());
}

#[tokio::test]
async fn uploads_with_continue_and_chunked() {
    let nginx = nginx("upload");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    // Content-Length with Expect: 100-continue: the interim response comes
    // first, then the body goes, then the final response.
    let mut s = HttpSession::new(connect(nginx.port).await);
    let mut req = RequestHeader::build("PUT", b"/dav/a.bin", None).unwrap();
    req.insert_header("Host", "localhost").unwrap();
    req.insert_header("Content-Length", data.len().to_string())
        .unwrap();
    req.insert_header("Expect", "100-continue").unwrap();
    s.write_request_header(Box::new(req)).await.unwrap();
    s.read_response().await.unwrap();
    assert!(s.is_interim());
    assert_eq!(s.resp_header().unwrap().status, 100);
    for part in data.chunks(30_000) {
        s.write_body(part).await.unwrap();
    }
    s.finish_body(None).await.unwrap();
    s.read_response().await.unwrap();
    assert_eq!(s.resp_header().unwrap().status, 201);
    read_all(&mut s).await;

    // Chunked upload, on the same connection.
    let mut s = HttpSession::new(s.reuse().expect("reusable after the upload"));
    let mut req = RequestHeader::build("PUT", b"/dav/b.bin", None).unwrap();
    req.insert_header("Host", "localhost").unwrap();
    req.insert_header("Transfer-Encoding", "chunked").unwrap();
    s.write_request_header(Box::new(req)).await.unwrap();
    for part in data.chunks(7_777) {
        s.write_body(part).await.unwrap();
    }
    s.finish_body(None).await.unwrap();
    s.read_response().await.unwrap();
    assert_eq!(s.resp_header().unwrap().status, 201);
    read_all(&mut s).await;

    // Both arrived whole.
    for name in ["a.bin", "b.bin"] {
        let mut s = HttpSession::new(connect(nginx.port).await);
        s.write_request_header(get(&format!("/dav/{name}")))
            .await
            .unwrap();
        s.read_response().await.unwrap();
        assert!(read_all(&mut s).await == data, "{name} differs");
    }
}

/// Bytes that arrive in the same read as the `101` belong to the tunnel. A
/// hand-written peer sends them together, which a real server does only
/// by chance (see `websocket_upgrade_against_a_real_server` for one).
#[tokio::test]
async fn switching_protocols_becomes_a_tunnel() {
    // On a Unix socket, so it cannot take a TCP port an nginx of another
    // test was just given.
    let path = std::env::temp_dir().join(format!("pingora-h1-101-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let peer = tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let n = c.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        c.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nfirst")
            .await
            .unwrap();
        loop {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            c.write_all(&buf[..n]).await.unwrap();
        }
    });
    let unix = tokio::net::UnixStream::connect(&path).await.unwrap();
    let mut s = HttpSession::new(Box::new(L4Stream::from_unix(unix)));
    let mut req = get("/chat");
    req.insert_header("Connection", "Upgrade").unwrap();
    req.insert_header("Upgrade", "echo").unwrap();
    s.write_request_header(req).await.unwrap();
    s.read_response().await.unwrap();
    assert_eq!(s.resp_header().unwrap().status, 101);
    assert!(s.is_upgraded());
    // Bytes that came with the 101 are the tunnel's first bytes.
    assert_eq!(
        s.read_body_bytes().await.unwrap().unwrap(),
        Bytes::from_static(b"first")
    );
    s.write_body(b"ping").await.unwrap();
    assert_eq!(
        s.read_body_bytes().await.unwrap().unwrap(),
        Bytes::from_static(b"ping")
    );
    // Not reusable; dropping it closes the tunnel.
    assert!(s.reuse().is_none());
    peer.await.unwrap();
    let _ = std::fs::remove_file(&path);
}

/// Read tunnel bytes until `n` have arrived (10 s at most).
async fn read_tunnel(s: &mut HttpSession, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.len() < n {
        let chunk = tokio::time::timeout_at(deadline, s.read_body_bytes())
            .await
            .expect("tunnel bytes within 10 s")
            .unwrap()
            .unwrap_or_else(|| panic!("tunnel closed after {} of {n} bytes", got.len()));
        got.extend_from_slice(&chunk);
    }
    got
}

/// A client frame (RFC 6455 §5.2): FIN, `opcode`, masked with `mask`.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The same frame as a server sends it: unmasked.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// Against a real WebSocket server (tokio-tungstenite, echoing): our
/// client sends the opening handshake, reads the 101 and its
/// `Sec-WebSocket-Accept`, then speaks WebSocket frames, written by hand,
/// over the raw tunnel: a text and a binary message echoed, and the
/// closing handshake.
#[tokio::test]
async fn websocket_upgrade_against_a_real_server() {
    use futures_util::{SinkExt, StreamExt};

    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (tcp, _) = l.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp)
            .await
            .expect("a valid opening handshake");
        let mut seen = 0;
        // On the client's Close, tungstenite answers it on the next poll,
        // then ends the stream.
        while let Some(m) = ws.next().await {
            let m = m.expect("valid frames from the client");
            if m.is_text() || m.is_binary() {
                seen += 1;
                ws.send(m).await.unwrap();
            }
        }
        seen
    });

    let mut s = HttpSession::new(connect(port).await);
    let mut req = get("/chat");
    req.insert_header("Connection", "Upgrade").unwrap();
    req.insert_header("Upgrade", "websocket").unwrap();
    req.insert_header("Sec-WebSocket-Version", "13").unwrap();
    // The key and accept value of RFC 6455 §1.3 (16 bytes, base64).
    req.insert_header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .unwrap();
    s.write_request_header(req).await.unwrap();
    s.read_response().await.unwrap();
    let resp = s.resp_header().unwrap();
    assert_eq!(resp.status, 101);
    assert!(resp.headers["upgrade"]
        .to_str()
        .unwrap()
        .eq_ignore_ascii_case("websocket"));
    assert!(resp.headers["connection"]
        .to_str()
        .unwrap()
        .eq_ignore_ascii_case("upgrade"));
    assert_eq!(
        resp.headers["sec-websocket-accept"],
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert!(s.is_upgraded());
    assert!(!s.can_reuse());

    // A masked text frame, echoed back unmasked.
    let text = b"hello through pingora's tunnel";
    s.write_body(&client_frame(0x1, text, [0x37, 0xfa, 0x21, 0x3d]))
        .await
        .unwrap();
    let want = server_frame(0x1, text);
    assert_eq!(read_tunnel(&mut s, want.len()).await, want);

    // A binary frame with a 16-bit length, written in two pieces: the
    // tunnel passes bytes, not messages.
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    let frame = client_frame(0x2, &data, [1, 2, 3, 4]);
    let (a, b) = frame.split_at(3);
    s.write_body(a).await.unwrap();
    s.write_body(b).await.unwrap();
    let want = server_frame(0x2, &data);
    assert_eq!(read_tunnel(&mut s, want.len()).await, want);

    // Closing handshake: our Close (1000) is answered with a Close, then
    // the server ends the connection.
    s.write_body(&client_frame(0x8, &1000u16.to_be_bytes(), [9, 8, 7, 6]))
        .await
        .unwrap();
    let want = server_frame(0x8, &1000u16.to_be_bytes());
    assert_eq!(read_tunnel(&mut s, want.len()).await, want);
    assert_eq!(server.await.unwrap(), 2, "the server echoed two messages");
    assert!(s.read_body_bytes().await.unwrap().is_none());
}
