//! Listeners and the accept loop.
//!
//! Each listener accepts, asks the [`Guard`] for a slot, does the TLS
//! handshake under a timeout, and hands the connection to its [`Protocol`].
//! Between accepts, its loop looks over its open connections and closes
//! the idle ones and those overdue with a request head (`idle.rs`).
//! Admitted connections are served on the threads of `workers.rs`, each
//! staying on one thread for its life. Shutdown stops accepting at once,
//! tells every connection (protocols finish the request in flight and
//! close), and waits for them for the grace period before dropping the
//! rest.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::guard::{Guard, Refusal, SlotGuard};
use crate::idle::{Activity, Overdue, Requests, Watched, Watchers};
use crate::workers::Workers;

/// A byte stream a protocol talks over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed future, as protocols return them.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A connection the guard admitted, handed to a protocol.
pub struct Connection {
    /// The byte stream (TLS already negotiated on secure ports).
    pub io: Box<dyn Io>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The connection's slot; dropping it frees the slot.
    pub slot: SlotGuard,
    /// Becomes set when the server shuts down.
    pub shutdown: Shutdown,
    /// Where the protocol says when a request's head has arrived and when
    /// its answer is ready: a connection that waits longer than the header
    /// timeout for a head is closed.
    pub requests: Requests,
}

/// A protocol served on a listener (HTTP, SMTP, SIP…).
pub trait Protocol: Send + Sync + 'static {
    /// Serves one connection to its end.
    fn serve(&self, conn: Connection) -> BoxFuture;

    /// Says no to a connection the guard refused, in the protocol's own words
    /// if it has some (an HTTP 503, an SMTP 421), then closes it.
    fn refuse(&self, io: Box<dyn Io>, refusal: Refusal) -> BoxFuture {
        let _ = refusal;
        Box::pin(async move { drop(io) })
    }
}

/// The server-wide shutdown signal, as connections see it.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown begins.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|set| *set).await;
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding a listening address failed.
    #[error("cannot listen on {address}: {reason}")]
    Bind {
        /// The address.
        address: String,
        /// Why, in words.
        reason: String,
    },
    /// A certificate or key could not be used.
    #[error("TLS for {what}: {reason}")]
    Tls {
        /// The file or listener.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

struct Listening {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    protocol: Arc<dyn Protocol>,
}

/// A set of listeners sharing one guard.
pub struct Server {
    guard: Guard,
    listeners: Vec<Listening>,
    stop: watch::Sender<bool>,
}

impl Server {
    /// A server with no listeners yet.
    pub fn new(guard: Guard) -> Server {
        Server {
            guard,
            listeners: Vec::new(),
            stop: watch::channel(false).0,
        }
    }

    /// The guard.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Binds `address` for `protocol`, with TLS if given. Returns the bound
    /// address (useful with port 0).
    pub async fn listen(
        &mut self,
        address: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        protocol: Arc<dyn Protocol>,
    ) -> Result<SocketAddr, ServerError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| ServerError::Bind {
                address: address.to_string(),
                reason: match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        "the address is already in use (is another server running?)".into()
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied (ports below 1024 need privileges)".into()
                    }
                    _ => e.to_string(),
                },
            })?;
        let local = listener.local_addr().map_err(|e| ServerError::Bind {
            address: address.to_string(),
            reason: e.to_string(),
        })?;
        self.listeners.push(Listening {
            listener,
            tls: tls.map(TlsAcceptor::from),
            protocol,
        });
        Ok(local)
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Server {
            guard,
            listeners,
            stop,
        } = self;
        let workers = Arc::new(Workers::start());
        let mut accepting = JoinSet::new();
        for l in listeners {
            accepting.spawn(accept_loop(
                l,
                guard.clone(),
                workers.clone(),
                Shutdown(stop.subscribe()),
            ));
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections");
        let _ = stop.send(true);
        let grace = guard.limits().shutdown_grace;
        let drained = async { while accepting.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("connections still open after {grace:?}; closing them");
        }
    }
}

async fn accept_loop(l: Listening, guard: Guard, workers: Arc<Workers>, mut shutdown: Shutdown) {
    let mut connections = JoinSet::new();
    let mut sweep = tokio::time::interval(std::time::Duration::from_secs(60));
    let idle = guard.limits().idle_timeout;
    let header_timeout = guard.limits().header_timeout;
    // Looks at the connections a few times per header timeout (at least
    // once a second), so a slow head is cut within a quarter of it past
    // its time.
    let watchers = Watchers::default();
    let mut look = tokio::time::interval(
        (header_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let accepted = tokio::select! {
            a = l.listener.accept() => a,
            _ = shutdown.wait() => break,
            _ = sweep.tick() => {
                guard.forget_quiet_addresses();
                continue;
            }
            _ = look.tick() => {
                for (peer, why) in watchers.look(idle, header_timeout) {
                    match why {
                        Overdue::Idle => tracing::debug!(%peer, "closed an idle connection"),
                        Overdue::Head => tracing::debug!(%peer, "closed a connection whose request head was overdue"),
                    }
                }
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment rather
                // than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match guard.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                let protocol = l.protocol.clone();
                connections.spawn(async move {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(2),
                        protocol.refuse(Box::new(stream), refusal),
                    )
                    .await;
                });
                continue;
            }
        };
        // Registered again with the reactor of the thread that serves it.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "could not hand over a connection");
                continue;
            }
        };
        let protocol = l.protocol.clone();
        let tls = l.tls.clone();
        let handshake = guard.limits().handshake_timeout;
        let shutdown = shutdown.clone();
        let activity = Activity::new();
        let requests = Requests::default();
        let (watched_activity, watched_requests) = (activity.clone(), requests.clone());
        let task = workers.spawn(&mut connections, async move {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "could not take over a connection");
                    return;
                }
            };
            let (io, secure): (Box<dyn Io>, bool) = match tls {
                None => (Box::new(stream), false),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => (Box::new(s), true),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            requests.serving();
            protocol
                .serve(Connection {
                    io: Box::new(Watched::new(io, activity)),
                    peer,
                    tls: secure,
                    slot,
                    shutdown,
                    requests,
                })
                .await;
        });
        watchers.watch(peer, watched_activity, watched_requests, task);
    }
    while connections.join_next().await.is_some() {}
}
