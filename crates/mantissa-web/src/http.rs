//! HTTP as a protocol of `mantissa-server`: hyper serves each admitted
//! connection (HTTP/1.1 with a header-read timeout, or HTTP/2 by ALPN) and
//! hands requests to the web service. [`site_server`] makes the server a
//! site is served by.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::Response;
use futures_util::TryFutureExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use mantissa_server::{Answering, BoxFuture, Connection, Guard, Protocol, Refusal, Server};
use tower::ServiceExt;

/// A server for a site's protocols, sharing `guard`, whose connection
/// threads each send their store reads to a reader queue of their own
/// ([`mantissa_store::use_reader_queue`], with the thread's number): no
/// two threads share a queue, so a read's state does not cross CPUs, and
/// every read is handed over, quick ones too (`mantissa-store`'s
/// `readers.rs` says why). `mantissa-server` knows no store, so this is
/// done here, by the hook it runs on each thread; whatever serves a site
/// starts its server here, so that none forgets it.
pub fn site_server(guard: Guard) -> Server {
    let mut server = Server::new(guard);
    server.on_thread_start(mantissa_store::use_reader_queue);
    server
}

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
///
/// Its time limits are the server's: the header timeout is
/// `mantissa-server`'s head watch, the idle timeout its idle watch.
pub struct HttpProtocol<S = crate::WebService> {
    router: S,
}

impl<S> HttpProtocol<S> {
    /// HTTP serving `router`.
    pub fn new(router: S) -> HttpProtocol<S> {
        HttpProtocol { router }
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
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn serve(&self, conn: Connection) -> BoxFuture {
        let router = self.router.clone();
        Box::pin(async move {
            let Connection {
                io,
                peer,
                tls,
                slot,
                mut shutdown,
                requests,
            } = conn;
            let info = ClientInfo { peer, tls };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                // The header timeout is `mantissa-server`'s head watch, not
                // hyper's (a timer per request; see mantissa-server's idle.rs).
                if req.version() == http::Version::HTTP_2 {
                    requests.exempt_from_head_timeout();
                }
                let answering = requests.head_received();
                req.extensions_mut().insert(info);
                router
                    .clone()
                    .oneshot(req.map(Body::new))
                    .map_ok(move |response| response.map(|body| Answered { body, answering }))
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().max_buf_size(64 * 1024);
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

    fn refusal(&self, refusal: Refusal) -> Option<Vec<u8>> {
        let body = "The server is busy; please try again shortly.\n";
        Some(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                refusal.retry_after_secs(),
                body.len()
            )
            .into_bytes(),
        )
    }
}

/// A response body that tells the head watch, when hyper is done with it
/// (sent to the end, or given up), that the connection now waits for its
/// next request: until then a slow download is not a slow head.
struct Answered<B> {
    body: B,
    #[allow(dead_code)] // Held for its drop.
    answering: Answering,
}

impl<B: HttpBody + Unpin> HttpBody for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
