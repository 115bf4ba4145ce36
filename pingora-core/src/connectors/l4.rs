//! L4 connect: TCP (with bind address, keepalive, TCP Fast Open) or Unix
//! socket, under a connect timeout. Failures are told apart: refused, timed
//! out, no route, bind failure.

use std::io;
use std::os::fd::AsRawFd;

use pingora_error::{Error, ErrorType, ErrorType::*, OrErr, Result};
use tokio::net::{TcpSocket, UnixStream};

use crate::protocols::sockopt::{set_sock_int, set_tcp_int};
use crate::protocols::{L4Stream, SocketAddr};
use crate::upstreams::peer::PeerOptions;

fn connect_error(e: io::Error, addr: &SocketAddr) -> Box<Error> {
    let kind: ErrorType = match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ConnectRefused,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => ConnectNoRoute,
        Some(libc::ETIMEDOUT) => ConnectTimedout,
        _ => ConnectError,
    };
    Error::because(kind, format!("connecting to {addr}"), e).into_up()
}

/// Connect to `addr` with `opts`' L4 settings.
///
/// # Errors
///
/// As [`connect_from`]: `ConnectTimedout`, `ConnectRefused`, `ConnectNoRoute`,
/// `ConnectError`, `BindError`, `SocketError`, `InvalidInput`.
pub async fn connect(addr: &SocketAddr, opts: &PeerOptions) -> Result<L4Stream> {
    connect_from(addr, opts, None).await
}

/// Connect to `addr` with `opts`' L4 settings, binding the source to
/// `default_bind` when `opts` names no `bind_to` of its own (the server
/// conf's `client_bind_to_ipv4` / `client_bind_to_ipv6`). Ignored for
/// Unix sockets.
///
/// A source bound with port 0 gets `IP_BIND_ADDRESS_NO_PORT`, so the port
/// is chosen at connect time for the whole 4-tuple: binding does not use
/// up the address's ephemeral ports.
///
/// # Errors
///
/// `ConnectTimedout` past `opts.connection_timeout`; `ConnectRefused`,
/// `ConnectNoRoute`, else `ConnectError`, as the connect fails; `BindError` if
/// the source address cannot be bound; `SocketError` if the socket or one of
/// its options fails; `InvalidInput` for an unnamed Unix socket. A
/// `custom_l4` connector's own errors come back as they are.
pub async fn connect_from(
    addr: &SocketAddr,
    opts: &PeerOptions,
    default_bind: Option<std::net::SocketAddr>,
) -> Result<L4Stream> {
    if let Some(custom) = &opts.custom_l4 {
        let attempt = custom.connect(addr);
        let attempt = std::pin::pin!(attempt);
        return super::connect_within(
            opts.connection_timeout,
            "custom L4 connect to",
            &addr,
            attempt,
        )
        .await
        .map_err(|e| e.into_up());
    }
    let attempt = async {
        match addr {
            SocketAddr::Unix(Some(path)) => UnixStream::connect(path)
                .await
                .map(L4Stream::from_unix)
                .map_err(|e| connect_error(e, addr)),
            SocketAddr::Unix(None) => Error::e_explain(InvalidInput, "unnamed Unix socket"),
            SocketAddr::Inet(inet) => {
                let socket = if inet.is_ipv4() {
                    TcpSocket::new_v4()
                } else {
                    TcpSocket::new_v6()
                }
                .or_err(SocketError, "creating a socket")?;
                if let Some(local) = opts.bind_to.or(default_bind) {
                    // Linux only; elsewhere bind picks the port.
                    #[cfg(target_os = "linux")]
                    if local.port() == 0 {
                        // Best effort: without it (old kernels) bind
                        // picks a port, which still works.
                        let _ = set_sock_int(
                            socket.as_raw_fd(),
                            libc::IPPROTO_IP,
                            libc::IP_BIND_ADDRESS_NO_PORT,
                            1,
                        );
                    }
                    socket
                        .bind(local)
                        .or_err_with(BindError, || format!("binding to {local}"))?;
                }
                if let Some(ka) = &opts.tcp_keepalive {
                    ka.apply(socket2::SockRef::from(&socket))
                        .or_err(SocketError, "setting TCP keepalive")?;
                }
                if opts.tcp_fast_open {
                    fast_open_connect(&socket)?;
                }
                let s = socket
                    .connect(*inet)
                    .await
                    .map_err(|e| connect_error(e, addr))?;
                let _ = s.set_nodelay(true);
                Ok(L4Stream::from_tcp(s))
            }
        }
    };
    let attempt = std::pin::pin!(attempt);
    super::connect_within(opts.connection_timeout, "connecting to", &addr, attempt).await
}

/// A connector of the user's for the L4 layer (as Pingora's `L4Connect`):
/// set as `PeerOptions::custom_l4`, it makes the stream to a peer in place
/// of the TCP or Unix connect (a virtual socket to an in-process service,
/// a tunnel; see [`virt`](crate::protocols::l4::virt)). TLS and HTTP run
/// on what it returns as on a socket.
#[async_trait::async_trait]
pub trait Connect: std::fmt::Debug {
    /// A stream to `addr` (the peer's address).
    async fn connect(&self, addr: &SocketAddr) -> Result<L4Stream>;
}

/// Most bytes of a CONNECT proxy's response header.
const MAX_PROXY_HEADER: usize = 16 * 1024;

/// A tunnel to `proxy.host:proxy.port` through the HTTP CONNECT proxy on
/// the Unix socket `proxy.next_hop` (the peer's connect timeout bounds the
/// whole exchange): the CONNECT request with the proxy's extra headers, and
/// a 2xx answer. Anything the proxy sent past its header is kept for the
/// first read. A refusal fails with `ConnectProxyFailure`, naming the
/// status.
///
/// # Errors
///
/// `ConnectTimedout` past the connect timeout; `ConnectRefused` or
/// `ConnectError` if the proxy's socket cannot be reached; `InvalidInput` for
/// an extra header that is not a valid header line; `ConnectProxyFailure` if
/// the exchange fails, or the answer is not 2xx, is malformed or over 16 KiB.
pub async fn connect_through_proxy(
    proxy: &crate::upstreams::peer::Proxy,
    opts: &PeerOptions,
) -> Result<L4Stream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hop = SocketAddr::Unix(Some(proxy.next_hop.to_path_buf()));
    let attempt = async {
        let mut s = UnixStream::connect(&proxy.next_hop)
            .await
            .map(L4Stream::from_unix)
            .map_err(|e| connect_error(e, &hop))?;
        let target = if proxy.host.contains(':') {
            format!("[{}]:{}", proxy.host, proxy.port)
        } else {
            format!("{}:{}", proxy.host, proxy.port)
        };
        let mut req = format!("CONNECT {target} HTTP/1.1\r\n").into_bytes();
        // A Host of the user's replaces ours.
        if !proxy.headers.keys().any(|k| k.eq_ignore_ascii_case("host")) {
            req.extend_from_slice(format!("Host: {target}\r\n").as_bytes());
        }
        for (name, value) in &proxy.headers {
            if httparse::parse_headers(
                &[name.as_bytes(), b": ", value, b"\r\n\r\n"].concat(),
                &mut [httparse::EMPTY_HEADER; 1],
            )
            .ok()
            .is_none_or(|s| s.is_partial())
            {
                return Error::e_explain(
                    InvalidInput,
                    format!("CONNECT proxy header {name:?} is not a valid header line"),
                );
            }
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(value);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        s.write_all(&req)
            .await
            .or_err_with(ConnectProxyFailure, || format!("sending CONNECT to {hop}"))?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            if buf.len() >= MAX_PROXY_HEADER {
                return Error::e_explain(
                    ConnectProxyFailure,
                    format!("the CONNECT proxy at {hop} sent a header over 16 KiB"),
                );
            }
            let mut chunk = [0u8; 1024];
            let n = s
                .read(&mut chunk)
                .await
                .or_err_with(ConnectProxyFailure, || {
                    format!("reading from the CONNECT proxy at {hop}")
                })?;
            if n == 0 {
                return Error::e_explain(
                    ConnectProxyFailure,
                    format!("the CONNECT proxy at {hop} closed before answering"),
                );
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Partial) => continue,
                Ok(httparse::Status::Complete(end)) => {
                    let code = resp.code.unwrap_or(0);
                    if !(200..300).contains(&code) {
                        return Error::e_explain(
                            ConnectProxyFailure,
                            format!("the CONNECT proxy at {hop} answered {code} for {target}"),
                        );
                    }
                    s.unread(buf[end..].to_vec());
                    return Ok(s);
                }
                Err(e) => {
                    return Error::e_explain(
                        ConnectProxyFailure,
                        format!("the CONNECT proxy at {hop} sent a malformed answer: {e}"),
                    )
                }
            }
        }
    };
    let attempt = std::pin::pin!(attempt);
    super::connect_within(opts.connection_timeout, "CONNECT through", &hop, attempt)
        .await
        .map_err(|e| e.into_up())
}

/// `TCP_FASTOPEN_CONNECT` on `socket` (Linux; elsewhere an error that says
/// the platform lacks it, rather than a connection without it).
fn fast_open_connect(socket: &TcpSocket) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        set_tcp_int(socket.as_raw_fd(), libc::TCP_FASTOPEN_CONNECT, 1)
            .or_err(SocketError, "setting TCP_FASTOPEN_CONNECT")
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = socket;
        Error::e_explain(SocketError, "TCP fast open to upstreams needs Linux")
    }
}
