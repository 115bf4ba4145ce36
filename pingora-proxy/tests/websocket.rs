//! WebSocket through the proxy with a real client and server
//! (tokio-tungstenite): the 101 turns both sides into a tunnel that
//! carries 10,000 messages each way, and closes when idle. CONNECT
//! tunnels when enabled.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pingora_proxy::ProxyOptions;
use pingora_test_support::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::*;

/// A WebSocket echo server on a port from the OS.
async fn ws_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_the_proxy() {
    let up = ws_server().await;
    let (port, log) = proxy(vec![peer(up, false)], ProxyOptions::default()).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (ws, resp) = tokio_tungstenite::client_async("ws://example.test/chat", tcp)
        .await
        .expect("the upgrade goes through");
    assert_eq!(resp.status(), 101);
    let (mut tx, mut rx) = ws.split();
    const N: usize = 10_000;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let m = if i % 2 == 0 {
                Message::Text(format!("message {i}"))
            } else {
                Message::Binary(vec![(i % 251) as u8; i % 3000])
            };
            tx.send(m).await.unwrap();
        }
        tx
    });
    for i in 0..N {
        let m = tokio::time::timeout(Duration::from_secs(20), rx.next())
            .await
            .expect("an echo")
            .unwrap()
            .unwrap();
        if i % 2 == 0 {
            assert_eq!(m, Message::Text(format!("message {i}")));
        } else {
            assert_eq!(m, Message::Binary(vec![(i % 251) as u8; i % 3000]));
        }
    }
    let mut tx = sender.await.unwrap();
    tx.send(Message::Close(None)).await.unwrap();
    // The proxy ends the request once the tunnel closes.
    eventually(Duration::from_secs(10), "the tunnel to end", || {
        log.lock().unwrap().contains(&"logging".to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed() {
    let up = ws_server().await;
    let options = ProxyOptions {
        tunnel_idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (port, _) = proxy(vec![peer(up, false)], options).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://example.test/", tcp)
        .await
        .unwrap();
    ws.send(Message::Text("before".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Text("before".into())
    );
    // Nothing moves: the proxy closes the tunnel.
    let end = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the idle tunnel is closed");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_when_enabled() {
    // An upstream forward proxy that accepts CONNECT and then echoes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                assert!(head.starts_with(b"CONNECT db.test:5432 HTTP/1.1\r\n"));
                s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let options = ProxyOptions {
        allow_connect: true,
        ..Default::default()
    };
    let (port, _) = proxy(vec![peer(up, false)], options).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"CONNECT db.test:5432 HTTP/1.1\r\nHost: db.test:5432\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for word in ["ping", "through", "the tunnel"] {
        s.write_all(word.as_bytes()).await.unwrap();
        let mut back = vec![0u8; word.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, word.as_bytes());
    }
}
