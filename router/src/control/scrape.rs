//! The Prometheus metrics listener (`metrics-listen`): a small, strict HTTP/1.x server that
//! answers `GET /metrics` and nothing else.
//!
//! Like the management socket, each client is served in its own task with bounded size and
//! time, and at most [`MAX_CLIENTS`] at once; the task asks the control loop for a status
//! snapshot over a bounded channel (the loop owns the WCCP and steering drivers) and renders it
//! itself, so a slow scraper never holds up WCCP timers. One request per connection: the reply
//! closes it, which Prometheus handles at its scrape interval at no cost worth keeping a
//! connection for. Hand-rolled rather than hyper: one route, one method, no bodies, no
//! keep-alive, and the limits are easier to see in sixty lines than in a framework's settings.

use crate::status::{MetricsStatus, Status};
use anyhow::{Context, Result};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Largest request head (request line and headers) in bytes; a scraper sends a few hundred.
pub const MAX_HEAD_BYTES: usize = 8192;
/// Clients served at once; more get 503.
pub const MAX_CLIENTS: usize = 4;
/// Time a client has, from connecting, to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits a server runs with; [`Limits::default`] is the production set, tests shrink it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head.
    pub max_head: usize,
    /// Clients served at once.
    pub max_clients: usize,
    /// Time to send the request head.
    pub read_timeout: Duration,
    /// Time to take the reply.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: MAX_HEAD_BYTES,
            max_clients: MAX_CLIENTS,
            read_timeout: READ_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// A scrape's request for a status snapshot; the control loop sends the snapshot back.
pub type SnapshotRequest = oneshot::Sender<Box<Status>>;

/// What the listener counts, for `swrouter status` and the metrics themselves.
#[derive(Debug, Default)]
pub struct Counters {
    served: AtomicU64,
    refused_busy: AtomicU64,
    bad_requests: AtomicU64,
    not_found: AtomicU64,
    timed_out: AtomicU64,
}

impl Counters {
    /// A snapshot for the status document.
    pub fn status(&self, listen: SocketAddrV4) -> MetricsStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsStatus {
            listen: listen.to_string(),
            served: get(&self.served),
            refused_busy: get(&self.refused_busy),
            bad_requests: get(&self.bad_requests),
            not_found: get(&self.not_found),
            timed_out: get(&self.timed_out),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Binds the metrics listener; the error names the config key and the address.
pub fn bind(addr: SocketAddrV4) -> Result<std::net::TcpListener> {
    // std sets SO_REUSEADDR, so a restart is not held up by the last scrape's TIME_WAIT.
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("metrics-listen {addr}: cannot listen there"))?;
    l.set_nonblocking(true)
        .with_context(|| format!("metrics-listen {addr}"))?;
    Ok(l)
}

/// Accepts scrapers forever, at most `limits.max_clients` at once, each in its own task.
pub async fn serve(
    listener: std::net::TcpListener,
    limits: Limits,
    snapshots: mpsc::Sender<SnapshotRequest>,
    counters: Arc<Counters>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener could not join the runtime");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends persist: pause rather than spin on them.
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            bump(&counters.refused_busy);
            // A fresh connection's send buffer is empty: the short reply goes out at once. What
            // the client already sent is taken in, since closing on unread data resets the
            // connection and the client would not see the 503.
            let _ = stream.try_write(&response("503 Service Unavailable", "text/plain", "busy\n"));
            let _ = stream.try_read(&mut [0u8; 4096]);
            continue;
        };
        tokio::spawn(client(
            stream,
            limits,
            snapshots.clone(),
            counters.clone(),
            slot,
        ));
    }
}

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`.
    Metrics,
    /// Another path.
    NotFound,
    /// Another method than GET.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line.
    BadRequest,
}

/// Reads the request line of `head` (HTTP/1.0 or 1.1; headers are not needed and not read).
pub fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Route::BadRequest;
    }
    if method != "GET" {
        return Route::MethodNotAllowed;
    }
    // A query string (Prometheus adds none unless told to) does not change the answer.
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// Why no request head came.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    TooLarge,
    Closed,
}

/// Reads until the blank line that ends the head, keeping at most `limit` bytes.
async fn read_head(stream: &mut TcpStream, limit: usize) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024.min(limit));
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let end = find(&buf, b"\r\n\r\n").map(|p| p + 4);
        let end = end.or_else(|| find(&buf, b"\n\n").map(|p| p + 2));
        match end {
            Some(end) if end <= limit => return Ok(buf),
            _ if buf.len() > limit => return Err(HeadError::TooLarge),
            _ => {}
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole HTTP/1.1 response that closes the connection.
fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        r.push_str("Allow: GET\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// Serves one client: its request head, a snapshot from the control loop, the reply.
async fn client(
    mut stream: TcpStream,
    limits: Limits,
    snapshots: mpsc::Sender<SnapshotRequest>,
    counters: Arc<Counters>,
    _slot: OwnedSemaphorePermit,
) {
    let head = tokio::time::timeout(limits.read_timeout, read_head(&mut stream, limits.max_head));
    let reply = match head.await {
        Err(_) => {
            bump(&counters.timed_out);
            response("408 Request Timeout", "text/plain", "no request in time\n")
        }
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::TooLarge)) => {
            bump(&counters.bad_requests);
            response(
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too large\n",
            )
        }
        Ok(Ok(head)) => match route(&head) {
            Route::Metrics => {
                let (tx, rx) = oneshot::channel();
                // Both fail only when the control loop is gone (the router is stopping).
                if snapshots.send(tx).await.is_err() {
                    return;
                }
                let Ok(status) = rx.await else {
                    return;
                };
                response(
                    "200 OK",
                    crate::metrics::CONTENT_TYPE,
                    &crate::metrics::render(&status),
                )
            }
            Route::NotFound => {
                bump(&counters.not_found);
                response("404 Not Found", "text/plain", "only /metrics is here\n")
            }
            Route::MethodNotAllowed => {
                bump(&counters.bad_requests);
                response(
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET is served\n",
                )
            }
            Route::BadRequest => {
                bump(&counters.bad_requests);
                response("400 Bad Request", "text/plain", "not an HTTP/1.x request\n")
            }
        },
    };
    let ok = reply.starts_with(b"HTTP/1.1 200");
    let write = async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(Ok(())) if ok => bump(&counters.served),
        Ok(Ok(())) => {
            // A refused request may not have been read to its end: take in the rest for a
            // moment (bounded), or closing would reset the connection before the client read
            // why it was refused.
            let drain = async {
                let mut sink = [0u8; 4096];
                let mut left = 64 * 1024usize;
                while left > 0 {
                    match stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        }
        Ok(Err(_)) => {}
        Err(_) => bump(&counters.timed_out),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_get_metrics_is_served() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\n\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route(b"GET /metrics HTTP/2.0\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"get /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"\xff /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
    }

    /// A server on loopback whose control loop answers every snapshot request with `status`.
    fn with_server<F: std::future::Future<Output = ()>>(
        limits: Limits,
        status: Status,
        body: impl FnOnce(SocketAddrV4, Arc<Counters>) -> F,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
                panic!("IPv4 bound")
            };
            let (tx, mut rx) = mpsc::channel::<SnapshotRequest>(4);
            let counters = Arc::new(Counters::default());
            tokio::spawn(serve(l, limits, tx, counters.clone()));
            tokio::spawn(async move {
                while let Some(r) = rx.recv().await {
                    let _ = r.send(Box::new(status.clone()));
                }
            });
            body(addr, counters).await;
        });
    }

    async fn exchange(addr: SocketAddrV4, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let status = crate::metrics::tests::sample();
        with_server(Limits::default(), status, |addr, counters| async move {
            let r = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
            assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
            assert!(r.contains("\r\n\r\n# HELP swrouter_info "), "{r}");
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            let r = exchange(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
            let r = exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await;
            assert!(
                r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET"),
                "{r}"
            );
            let r = exchange(addr, b"hello\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
            let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
            let r = exchange(addr, big.as_bytes()).await;
            assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
            let s = counters.status(addr);
            assert_eq!((s.served, s.not_found, s.bad_requests), (1, 1, 3), "{s:?}");
        });
    }

    #[test]
    fn silent_clients_time_out_and_extra_clients_are_refused() {
        let limits = Limits {
            max_clients: 1,
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let status = crate::metrics::tests::sample();
        with_server(limits, status, |addr, counters| async move {
            // The first client says nothing and holds the only slot until its timeout.
            let mut silent = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
            let mut out = String::new();
            silent.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
            drop(silent);
            // The slot is free again.
            let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
            let s = counters.status(addr);
            assert_eq!((s.refused_busy, s.timed_out, s.served), (1, 1, 1), "{s:?}");
        });
    }

    #[test]
    fn a_taken_address_is_an_error_naming_the_key() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            panic!("IPv4 bound")
        };
        let e = format!("{:#}", bind(addr).unwrap_err());
        assert!(
            e.starts_with(&format!("metrics-listen {addr}: cannot listen there: ")),
            "{e}"
        );
    }
}
