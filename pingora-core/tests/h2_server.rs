//! The HTTP/2 server's settings (`H2Options`) as clients meet them: the
//! SETTINGS and connection WINDOW_UPDATE that `nghttp -v` receives carry
//! the configured values, and a client that opens more streams than the
//! configured maximum gets the extra one refused (RST_STREAM with
//! REFUSED_STREAM), seen on the wire by a client of raw frames.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora_core::apps::http_app::{HttpServer, HttpServerApp};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::v1::H1Options;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::L4Stream;
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers `/` at once; holds `/held` until the test lets go (or 10 s).
struct Hold(tokio::sync::watch::Receiver<bool>);

impl HttpServerApp for Hold {
    async fn process_request(
        self: &Arc<Self>,
        s: &mut ServerSession,
        _: &ShutdownWatch,
    ) -> pingora_error::Result<()> {
        if s.req_header().uri.path() == "/held" {
            let mut go = self.0.clone();
            let _ = tokio::time::timeout(Duration::from_secs(10), go.wait_for(|g| *g)).await;
        }
        if s.req_header().uri.path() == "/read" {
            while s.read_request_body().await?.is_some() {}
        }
        let resp = ResponseHeader::build(200, None)?;
        s.write_response_header(Box::new(resp)).await?;
        s.write_response_body(Bytes::from_static(b"ok\n")).await?;
        s.finish_body().await
    }
}

const OPTIONS: H2Options = H2Options {
    max_concurrent_streams: 3,
    initial_window_size: 100_000,
    initial_connection_window_size: 3_000_000,
    ping_interval: None,
    max_header_list_size: 32_768,
    max_reset_streams: 100,
};

/// Our h2c server with [`OPTIONS`] on a port from the OS; the sender
/// releases held requests.
async fn serve() -> (u16, tokio::sync::watch::Sender<bool>) {
    serve_with(H1Options::default()).await
}

/// [`serve`] with these limits and timeouts.
async fn serve_with(h1: H1Options) -> (u16, tokio::sync::watch::Sender<bool>) {
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut http = HttpServer::with_options(Hold(go_rx), h1);
    http.set_h2c(true);
    http.set_h2_options(OPTIONS);
    let app = Arc::new(http);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        while let Ok((s, _)) = l.accept().await {
            let (app, rx) = (app.clone(), rx.clone());
            tokio::spawn(async move {
                app.process_new(Box::new(L4Stream::from_tcp(s)), &rx).await;
            });
        }
    });
    (port, go_tx)
}

/// The value nghttp printed for a setting (e.g.
/// `SETTINGS_INITIAL_WINDOW_SIZE`) in the first SETTINGS frame it received:
/// the parameters are the indented lines under the frame's line.
fn received_setting(out: &str, name: &str) -> Option<u64> {
    let key = format!("[{name}(");
    out.lines()
        .skip_while(|l| !l.contains("recv SETTINGS frame"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .find_map(|l| {
            let l = l.trim();
            let v = l.strip_prefix(&key)?.split("):").nth(1)?;
            v.trim_end_matches(']').parse().ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_sent_carry_the_configured_values() {
    let (port, _go) = serve().await;
    let url = format!("http://127.0.0.1:{port}/");
    let out = tokio::task::spawn_blocking(move || {
        let o = Command::new("nghttp")
            .args(["-v", "-n", &url])
            .output()
            .expect("nghttp is installed (.ci/run installs nghttp2-client)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    })
    .await
    .unwrap();
    let get = |name| received_setting(&out, name).unwrap_or_else(|| panic!("no {name}: {out}"));
    assert_eq!(get("SETTINGS_MAX_CONCURRENT_STREAMS"), 3, "{out}");
    assert_eq!(get("SETTINGS_INITIAL_WINDOW_SIZE"), 100_000, "{out}");
    assert_eq!(get("SETTINGS_MAX_HEADER_LIST_SIZE"), 32_768, "{out}");
    // The connection window starts at 65,535 (RFC 9113 §6.9.2) and the
    // server raises it to what was configured with a WINDOW_UPDATE on
    // stream 0.
    let raised = out
        .split("recv WINDOW_UPDATE frame <length=4, flags=0x00, stream_id=0>")
        .skip(1)
        .filter_map(|rest| {
            let v = rest.split("window_size_increment=").nth(1)?;
            v.split(')').next()?.trim().parse::<u64>().ok()
        })
        .next()
        .unwrap_or_else(|| panic!("no connection WINDOW_UPDATE: {out}"));
    assert_eq!(65_535 + raised, 3_000_000, "{out}");
}

/// One HTTP/2 frame as read off the wire.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn read_frame(s: &mut tokio::net::TcpStream) -> Frame {
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .expect("a frame within 10 s")
        .expect("the connection stays open");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }
}

/// A client that ignores the advertised limit (real clients keep to it,
/// so this one writes frames itself): with 3 streams held open, a 4th is
/// refused with REFUSED_STREAM while the 3 go on; once they finish, a new
/// stream is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_beyond_max_concurrent_is_refused() {
    let (port, go) = serve().await;
    let mut s = raw_client(port, &[]).await;
    // HPACK from the static table: :method GET (2), :scheme http (6),
    // then :path as a literal without indexing (name index 4), and
    // :authority likewise (name index 1).
    let headers = |path: &str| {
        let mut b = vec![0x82, 0x86, 0x04, path.len() as u8];
        b.extend_from_slice(path.as_bytes());
        b.extend([0x01, 0x01, b'a']);
        b
    };
    // END_STREAM | END_HEADERS: each request is complete, its stream open
    // until the held response ends.
    for id in [1, 3, 5, 7] {
        s.write_all(&frame(HEADERS, 0x5, id, &headers("/held")))
            .await
            .unwrap();
    }
    let refused = loop {
        let f = read_frame(&mut s).await;
        if f.kind == RST_STREAM {
            let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
            break (f.stream, code);
        }
        assert!(f.kind != HEADERS, "a response before any was let go: {f:?}");
    };
    assert_eq!(refused, (7, REFUSED_STREAM));
    // The three held streams are answered once let go; then a new stream
    // fits again.
    go.send_replace(true);
    let mut answered = Vec::new();
    while answered.len() < 3 {
        let f = read_frame(&mut s).await;
        if f.kind == HEADERS {
            answered.push(f.stream);
        }
        assert_ne!(f.kind, RST_STREAM, "{f:?}");
    }
    answered.sort();
    assert_eq!(answered, [1, 3, 5]);
    s.write_all(&frame(HEADERS, 0x5, 9, &headers("/")))
        .await
        .unwrap();
    loop {
        let f = read_frame(&mut s).await;
        assert_ne!(f.kind, RST_STREAM, "{f:?}");
        if f.kind == HEADERS && f.stream == 9 {
            assert_eq!(f.flags & 0x4, 0x4, "END_HEADERS");
            break;
        }
    }
}

const GOAWAY: u8 = 0x7;
const DATA: u8 = 0x0;

/// A raw-frame h2c client past the handshake: preface, our SETTINGS
/// (`settings` payload), the server's SETTINGS (which come first)
/// acknowledged.
async fn raw_client(port: u16, settings: &[u8]) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, settings)).await.unwrap();
    let first = read_frame(&mut s).await;
    assert_eq!(first.kind, SETTINGS, "{first:?}");
    s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
    s
}

/// HPACK for a request: `method` as a literal (name index 2), :scheme
/// http, `path` (name index 4), :authority `a`, then `extra` fields
/// already encoded.
fn request_block(method: &str, path: &str, extra: &[u8]) -> Vec<u8> {
    let mut b = vec![0x02, method.len() as u8];
    b.extend_from_slice(method.as_bytes());
    b.extend([0x86, 0x04, path.len() as u8]);
    b.extend_from_slice(path.as_bytes());
    b.extend([0x01, 0x01, b'a']);
    b.extend_from_slice(extra);
    b
}

/// The first frame on `stream` that answers it: a HEADERS frame's first
/// HPACK byte (an indexed :status: 0x88 = 200, 0x8c = 400), or the
/// RST_STREAM code as `Err`.
async fn answer(s: &mut tokio::net::TcpStream, stream: u32) -> Result<u8, u32> {
    loop {
        let f = read_frame(s).await;
        if f.stream != stream {
            continue;
        }
        match f.kind {
            HEADERS => return Ok(f.payload[0]),
            RST_STREAM => return Err(u32::from_be_bytes(f.payload[..4].try_into().unwrap())),
            _ => {}
        }
    }
}

/// RFC 9113 §8.3.1 as HTTP/1 has it: a `:path` that is not origin-form
/// (nor `*` for OPTIONS) is refused (400, or RST_STREAM PROTOCOL_ERROR
/// where the `h2` crate finds it malformed first), a `host` that differs
/// from `:authority` is answered 400, a `content-length` above
/// `max_body_bytes` 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_as_over_http1() {
    let h1 = H1Options {
        max_body_bytes: Some(10),
        ..Default::default()
    };
    let (port, _go) = serve_with(h1).await;
    let mut s = raw_client(port, &[]).await;
    // host `b` (literal, name index 38) against :authority `a`.
    let host_b = [0x0f, 0x17, 0x01, b'b'];
    let host_a = [0x0f, 0x17, 0x01, b'a'];
    // content-length 100 (literal, name index 28).
    let length = [0x0f, 0x0d, 0x03, b'1', b'0', b'0'];
    let cases: [(&str, &str, &[u8], u8); 6] = [
        ("GET", "foo", &[], 0x8c),
        ("GET", "*", &[], 0x8c),
        ("OPTIONS", "*", &[], 0x88),
        ("GET", "/", &host_b, 0x8c),
        ("GET", "/", &host_a, 0x88),
        ("POST", "/", &length, 0),
    ];
    for (i, (method, path, extra, want)) in cases.into_iter().enumerate() {
        let id = 1 + 2 * i as u32;
        // END_HEADERS, and END_STREAM unless a body is announced.
        let flags = if method == "POST" { 0x4 } else { 0x5 };
        s.write_all(&frame(
            HEADERS,
            flags,
            id,
            &request_block(method, path, extra),
        ))
        .await
        .unwrap();
        let got = answer(&mut s, id).await;
        if method == "POST" {
            // 413 is not in the static table: a literal :status.
            let got = got.expect("an answer, not a reset");
            assert_ne!(got, 0x88, "{method} {path}: 200 for a body over the limit");
            continue;
        }
        if want == 0x8c && got == Err(1) {
            continue; // PROTOCOL_ERROR from the h2 crate
        }
        assert_eq!(got, Ok(want), "{method} {path} {extra:?}");
    }
}

/// The connection-level waits are bounded: an h2c client that sends part
/// of the preface and stops, one that sends the preface but no SETTINGS,
/// and a connection left with no stream open (the keep-alive timeout: it
/// gets GOAWAY) are all closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniffing_the_handshake_and_an_idle_connection_are_bounded() {
    let h1 = H1Options {
        header_read_timeout: Some(Duration::from_millis(300)),
        keepalive_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let (port, _go) = serve_with(h1).await;
    for start in [&b"PRI * HT"[..], &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(start).await.unwrap();
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "still open after {start:?}");
    }
    // A request, then nothing: GOAWAY, then the connection closes.
    let mut s = raw_client(port, &[]).await;
    s.write_all(&frame(HEADERS, 0x5, 1, &request_block("GET", "/", &[])))
        .await
        .unwrap();
    assert_eq!(answer(&mut s, 1).await, Ok(0x88));
    loop {
        let f = read_frame(&mut s).await;
        if f.kind == GOAWAY {
            let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
            assert_eq!(code, 0, "NO_ERROR");
            break;
        }
    }
}

/// A client that advertises a zero flow-control window cannot hold a
/// response (and its stream) forever: after the write timeout the stream
/// is reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_client_is_cut_off_after_the_write_timeout() {
    let h1 = H1Options {
        write_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let (port, _go) = serve_with(h1).await;
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
    let mut s = raw_client(port, &[0x00, 0x04, 0, 0, 0, 0]).await;
    s.write_all(&frame(HEADERS, 0x5, 1, &request_block("GET", "/", &[])))
        .await
        .unwrap();
    assert_eq!(answer(&mut s, 1).await, Ok(0x88), "the header goes out");
    let reset = loop {
        let f = read_frame(&mut s).await;
        assert!(
            f.kind != DATA || f.payload.is_empty(),
            "no body without credit: {f:?}"
        );
        if f.kind == RST_STREAM && f.stream == 1 {
            break u32::from_be_bytes(f.payload[..4].try_into().unwrap());
        }
    };
    assert_eq!(reset, 0x2, "INTERNAL_ERROR");
}

/// curl over h2c: the status it got, or its exit code when the exchange
/// broke.
async fn curl_h2(args: Vec<String>) -> Result<u16, i32> {
    tokio::task::spawn_blocking(move || {
        let o = Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(&args)
            .output()
            .expect("curl");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0))
        } else {
            eprintln!("curl: {}", String::from_utf8_lossy(&o.stderr));
            Err(o.status.code().unwrap_or(-1))
        }
    })
    .await
    .unwrap()
}

/// What status `nghttp` received when it uploaded `body` to `url`, with a
/// `content-length` or (`declare_length` false) without one. nghttp, not
/// curl, for an answer that comes before the upload ends: the server
/// follows it with RST_STREAM(NO_ERROR) (RFC 9113 §8.1, as nginx does),
/// and curl 7.88 (Debian 12's) sometimes drops the complete response when
/// that reset arrives before it has sent its body (exit 92 or 52), which
/// the RFC forbids a client to do.
async fn nghttp_status(url: String, body: Vec<u8>, declare_length: bool) -> Option<u16> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut cmd = Command::new("nghttp");
        cmd.args(["-v", "-d", "-"]);
        if !declare_length {
            cmd.arg("--no-content-length");
        }
        let mut child = cmd
            .arg(&url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nghttp is installed (.ci/run installs nghttp2-client)");
        let mut input = child.stdin.take().unwrap();
        input.write_all(&body).unwrap();
        drop(input);
        let o = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        // The upload went as asked: with its length declared, or without.
        let declared = format!("content-length: {}", body.len());
        let sent = out.lines().any(|l| l.trim_start().starts_with(&declared));
        assert_eq!(sent, declare_length, "{out}");
        let status = out
            .lines()
            .filter(|l| l.contains("recv (stream_id="))
            .find_map(|l| l.split(":status: ").nth(1)?.trim().parse().ok());
        if status.is_none() {
            eprintln!("nghttp: {out}{}", String::from_utf8_lossy(&o.stderr));
        }
        status
    })
    .await
    .unwrap()
}

/// Limits over HTTP/2: a declared body over `max_body_bytes` gets 413, and
/// so does a body streamed without a length past it (no response had
/// begun), both seen by nghttp (see [`nghttp_status`]); with curl, a
/// body within the limit passes, a header list over
/// `max_header_list_size` gets 431, and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_and_header_limits_over_http2_with_curl() {
    let h1 = H1Options {
        max_body_bytes: Some(10),
        ..Default::default()
    };
    let (port, _go) = serve_with(h1).await;
    let url = format!("http://127.0.0.1:{port}/read");
    // Declared: 11 bytes.
    let r = nghttp_status(url.clone(), b"0123456789a".to_vec(), true).await;
    assert_eq!(r, Some(413));
    // Ten bytes pass.
    let r = curl_h2(vec![
        "--data-binary".into(),
        "0123456789".into(),
        url.clone(),
    ])
    .await;
    assert_eq!(r, Ok(200));
    // Streamed, no content-length: 100 bytes.
    let r = nghttp_status(url.clone(), vec![b'x'; 100], false).await;
    assert_eq!(r, Some(413));
    // A header list over 32 KiB ([`OPTIONS`]): one 40 KiB field.
    let big = format!("x-big: {}", "y".repeat(40 * 1024));
    let r = curl_h2(vec!["-H".into(), big, url.clone()]).await;
    assert_eq!(r, Ok(431));
    // The server goes on.
    let r = curl_h2(vec![url]).await;
    assert_eq!(r, Ok(200));
}
