//! Serving the API with limits a hostile client cannot get around: at most so many connections
//! in all and per client address, a deadline for a request's head, a deadline for its body, and
//! an idle timeout.
//!
//! A validator's file descriptors are shared with consensus, whose journals must always be able
//! to open a file: idle connections held open by one client used to exhaust them, and the node
//! died (issue #10 review). The issuer service serves its API the same way. Connections beyond
//! the total wait in the kernel's backlog (the listener simply stops accepting); a client
//! address past its share is closed at once. A body sent a byte at a time never looks idle, so
//! it has a deadline of its own: without it a few addresses dripping bodies held every
//! connection slot (issue #11 attack review).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connection limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections open at once, all clients together (keep it well below the process's
    /// file-descriptor limit: consensus needs the rest).
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_per_address: usize,
    /// Time a client has to send a whole request head.
    pub header_timeout: Duration,
    /// A connection on which nothing moves for this long is closed.
    pub idle_timeout: Duration,
    /// Time a client has to send a whole request body, from the end of its head; reading past
    /// it fails (the handler answers, the connection is closed).
    pub body_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_per_address: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(20),
        }
    }
}

impl ServeLimits {
    /// The defaults, with the connection cap lowered to a quarter of this process's
    /// file-descriptor limit when that is lower (read from `/proc/self/limits` on Linux).
    pub fn for_this_process() -> Self {
        let d = Self::default();
        let cap = fd_soft_limit().map_or(d.max_connections, |n| {
            d.max_connections
                .min(usize::try_from(n / 4).unwrap_or(usize::MAX).max(8))
        });
        Self {
            max_connections: cap,
            max_per_address: d.max_per_address.min(cap),
            ..d
        }
    }
}

/// The soft limit on open files, if the system says.
fn fd_soft_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Open connections per client address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection's place in the per-address count, given back when the connection ends.
struct AddressSlot {
    table: PerAddress,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(table: &PerAddress, ip: IpAddr, max: usize) -> Option<Self> {
        let mut t = table.lock().ok()?;
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Self {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock()
            && let Some(n) = t.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
    }
}

/// Serve `router` on `listener` within `limits` until `shutdown` completes. Handlers find the
/// client's address as `ConnectInfo<SocketAddr>` in the request extensions.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address: PerAddress = Arc::default();
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            () = &mut shutdown => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors or a connection reset before accept: wait a little rather
                // than spin; the node's own files come first.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let Some(slot) = AddressSlot::take(&per_address, peer.ip(), limits.max_per_address) else {
            // Closed at once: this address holds its share already.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_timeout;
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::middleware::map_request(
                    move |req: axum::extract::Request| async move {
                        req.map(|b| axum::body::Body::new(DeadlineBody::new(b, body_timeout)))
                    },
                ))
                .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer))),
        );
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(io, service);
            let _ = connection.await;
            drop(slot);
            drop(permit);
        });
    }
}

/// A request body that fails with `TimedOut` once its deadline has passed.
struct DeadlineBody {
    inner: axum::body::Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: axum::body::Body, within: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// The error a body read past its deadline fails with.
pub fn body_too_slow() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request body not sent in time")
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending if this.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Some(Err(axum::Error::new(body_too_slow()))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A stream that fails with `TimedOut` once nothing has been read or written for `idle`.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_address_gets_its_share_and_gives_it_back() {
        let table: PerAddress = Arc::default();
        let ip: IpAddr = [127, 0, 0, 9].into();
        let a = AddressSlot::take(&table, ip, 2).unwrap();
        let b = AddressSlot::take(&table, ip, 2).unwrap();
        assert!(AddressSlot::take(&table, ip, 2).is_none());
        assert!(AddressSlot::take(&table, [127, 0, 0, 10].into(), 2).is_some());
        drop(a);
        assert!(AddressSlot::take(&table, ip, 2).is_some());
        drop(b);
    }
}
