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
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut http = HttpServer::new(Hold(go_rx));
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
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    // The server's SETTINGS come first; acknowledge them.
    let first = read_frame(&mut s).await;
    assert_eq!(first.kind, SETTINGS, "{first:?}");
    s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
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
