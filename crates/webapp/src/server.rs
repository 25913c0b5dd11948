//! The HTTP/1.1 server under the app: hyper with a header-read timeout and a cap on open
//! connections, so slow or stalled clients (slowloris) cannot hold the server.
//!
//! - A connection must send each request's headers within `header_read_timeout`, counted from
//!   when the server starts waiting for them, which includes the idle time of a kept-alive
//!   connection before its next request; otherwise it is closed.
//! - At most `max_connections` connections are served at once. One more is answered `503` with
//!   `Connection: close` and closed at once, without reading its request.
//! - Each request carries the TCP peer as [`ConnectInfo`] (the per-address limits use it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower_service::Service as _;

/// What `serve` holds open, from `[serve] header_read_timeout_secs` and `max_connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a connection gets to send a request's headers (idle time before them included).
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(15),
            max_connections: 256,
        }
    }
}

/// The answer to a connection over the cap. Nothing of the request is read.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 51\r\nretry-after: 5\r\n\r\n\
wxvault is serving too many connections; try again.";

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// open connections finish their requests. Accept errors (such as running out of file
/// descriptors) are logged and the loop carries on after a short pause, like axum's own server.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream, peer, limits.max_connections);
            continue;
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().call(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Timeouts, resets and malformed requests end here; they are the client's.
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over the cap with [`BUSY`] and closes it. The write is one
/// non-blocking attempt into an empty socket buffer, so a flood of connections costs no task.
fn refuse(stream: TcpStream, peer: SocketAddr, max: usize) {
    tracing::warn!(
        client = %peer,
        max_connections = max,
        "connection refused: [serve] max_connections are open"
    );
    let _ = stream.try_write(BUSY);
}

#[cfg(test)]
mod tests {
    use super::BUSY;

    #[test]
    fn the_busy_answer_has_the_length_it_says() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
