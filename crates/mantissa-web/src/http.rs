//! HTTP as a protocol of `mantissa-server`: hyper serves each admitted
//! connection (HTTP/1.1 with a header-read timeout, or HTTP/2 by ALPN) and
//! hands requests to the web service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mantissa_server::{BoxFuture, Connection, Io, Limits, Protocol, Refusal};
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

/// Who is on the other end of a request's connection (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The HTTP protocol, serving a tower service: Mantissa's
/// [`WebService`](crate::WebService), or any axum `Router`.
pub struct HttpProtocol<S = crate::WebService> {
    router: S,
    limits: Limits,
}

impl<S> HttpProtocol<S> {
    /// HTTP serving `router` within `limits`.
    pub fn new(router: S, limits: Limits) -> HttpProtocol<S> {
        HttpProtocol { router, limits }
    }
}

impl<S, B> Protocol for HttpProtocol<S>
where
    S: tower::Service<Request, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn serve(&self, conn: Connection) -> BoxFuture {
        let router = self.router.clone();
        let header_timeout = self.limits.header_timeout;
        Box::pin(async move {
            let Connection {
                io,
                peer,
                tls,
                slot,
                mut shutdown,
            } = conn;
            let info = ClientInfo { peer, tls };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(info);
                router.clone().oneshot(req.map(Body::new))
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(64 * 1024);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(64)
                .max_header_list_size(64 * 1024)
                .keep_alive_interval(Some(Duration::from_secs(30)));
            let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(served);
            let result = tokio::select! {
                r = served.as_mut() => r,
                _ = shutdown.wait() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(e) = result {
                tracing::info!(%peer, error = %e, "HTTP connection ended with an error (malformed or cut-off request)");
            }
            drop(slot);
        })
    }

    fn refuse(&self, mut io: Box<dyn Io>, refusal: Refusal) -> BoxFuture {
        Box::pin(async move {
            let body = "The server is busy; please try again shortly.\n";
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                refusal.retry_after_secs(),
                body.len()
            );
            let _ = io.write_all(head.as_bytes()).await;
            let _ = io.shutdown().await;
        })
    }
}
