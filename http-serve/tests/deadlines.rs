//! The server's limits against a real client on loopback: a body dripped a byte at a time is
//! cut at its deadline, and other clients are served meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use civis_http_serve::{ServeLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(limits: ServeLimits) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/echo",
            post(
                |body: Result<Bytes, axum::extract::rejection::BytesRejection>| async move {
                    match body {
                        Ok(b) => (axum::http::StatusCode::OK, format!("{}", b.len())),
                        Err(e) => (axum::http::StatusCode::REQUEST_TIMEOUT, e.body_text()),
                    }
                },
            ),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    addr
}

async fn get_health(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_dripped_a_byte_at_a_time_is_cut_at_its_deadline() {
    let limits = ServeLimits {
        max_connections: 4,
        max_per_address: 4,
        body_timeout: Duration::from_millis(300),
        ..ServeLimits::default()
    };
    let addr = start(limits).await;
    // Every slot taken by a dripping body; each is answered (not 200) and closed long before
    // its body could be complete (100 bytes at one every 100 ms), freeing its slot.
    let mut drips = Vec::new();
    for _ in 0..limits.max_connections {
        drips.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let mut buf = [0u8; 512];
            let mut closed = false;
            for _ in 0..100 {
                if s.write_all(b" ").await.is_err() {
                    closed = true;
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => {
                        closed = true;
                        break;
                    }
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            (closed, String::from_utf8_lossy(&answer).into_owned())
        }));
    }
    for d in drips {
        let (closed, answer) = d.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(closed, "the server closed the connection");
    }
    // The slots are free again.
    assert!(get_health(addr).await.ends_with("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_in_time_is_read_whole() {
    let addr = start(ServeLimits::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with('5'),
        "{out}"
    );
}
