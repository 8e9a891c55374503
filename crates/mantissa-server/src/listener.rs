//! Listeners and the accept loop.
//!
//! Each listener accepts, asks the [`Guard`] for a slot, does the TLS
//! handshake under a timeout, and hands the connection to its [`Protocol`].
//! A watcher task looks over every listener's open connections a few times
//! a second and closes the idle ones and those overdue with a request head
//! (`idle.rs`); when slots run out, the accept loop has it make room.
//! Admitted connections are served on the threads of `workers.rs`, each
//! staying on one thread for its life. Shutdown stops accepting at once,
//! tells every connection (protocols finish the request in flight and
//! close), and waits for them for the grace period before dropping the
//! rest.
//!
//! Saying no must cost the accept loop almost nothing, or a flood of
//! connections from one address delays everybody else's: a refused
//! connection is sent its protocol's short refusal with one non-blocking
//! write (what fits the socket's buffer, which a few hundred bytes always
//! do) and closed on the spot — no task, no timer. The kernel's queue of
//! connections waiting to be accepted is [`Limits::listen_backlog`]
//! (4,096) long, so that a burst arriving while the loop is busy waits
//! there instead of having its SYN dropped, which a client only sends again
//! a second later. Linux caps it at `net.core.somaxconn` (4,096 by default
//! since 5.4; raise both for bigger bursts).
//!
//! [`Limits::listen_backlog`]: crate::Limits::listen_backlog

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::guard::{Guard, Refusal, SlotGuard};
use crate::idle::{Activity, Overdue, Requests, Watched, Watchers};
use crate::workers::{ThreadStart, Workers};

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

    /// What to send a connection the guard refused before closing it, in
    /// the protocol's own words (an HTTP 503, an SMTP 421), or nothing.
    /// Sent on plain listeners only (a TLS client expects a handshake), with
    /// one non-blocking write: keep it short.
    fn refusal(&self, refusal: Refusal) -> Option<Vec<u8>> {
        let _ = refusal;
        None
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
    watchers: Watchers,
    on_thread_start: Option<ThreadStart>,
}

impl Server {
    /// A server with no listeners yet.
    pub fn new(guard: Guard) -> Server {
        Server {
            guard,
            listeners: Vec::new(),
            stop: watch::channel(false).0,
            watchers: Watchers::default(),
            on_thread_start: None,
        }
    }

    /// Has `hook` run first on each connection thread when [`Server::run`]
    /// starts them, with the thread's number (0, 1, … one per CPU), before
    /// it serves any connection. A site's server sends each thread's store
    /// reads to a reader queue of its own this way; this crate knows no
    /// store. Replaces an earlier hook.
    pub fn on_thread_start(&mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> &mut Self {
        self.on_thread_start = Some(Arc::new(hook));
        self
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
        let backlog = self.guard.limits().listen_backlog;
        let listener = bind(address, backlog).map_err(|e| ServerError::Bind {
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
            watchers,
            on_thread_start,
        } = self;
        let workers = Arc::new(Workers::start(on_thread_start));
        let mut accepting = JoinSet::new();
        for l in listeners {
            accepting.spawn(accept_loop(
                l,
                guard.clone(),
                workers.clone(),
                watchers.clone(),
                Shutdown(stop.subscribe()),
            ));
        }
        let looking = tokio::spawn(look_after(
            guard.clone(),
            watchers,
            Shutdown(stop.subscribe()),
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections");
        let _ = stop.send(true);
        let grace = guard.limits().shutdown_grace;
        let drained = async { while accepting.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("connections still open after {grace:?}; closing them");
        }
        looking.abort();
    }
}

/// Binds a listening socket with room for `backlog` connections waiting to
/// be accepted (see the module documentation).
fn bind(address: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's and std's `bind` do: a restarted server can listen again
    // at once, with connections of the old one still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Looks over every listener's connections a few times per header timeout
/// (at least once a second), so that a slow head is cut within a quarter
/// of it past its time; now and then forgets quiet addresses. The header
/// timeout is the one that applies now: shorter when slots run short.
async fn look_after(guard: Guard, watchers: Watchers, mut shutdown: Shutdown) {
    let idle = guard.limits().idle_timeout;
    let header_timeout = guard.limits().header_timeout;
    let mut look = tokio::time::interval(
        (header_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = sweep.tick() => guard.forget_quiet_addresses(),
            _ = look.tick() => {
                for (peer, why) in watchers.look(idle, guard.header_timeout_now()) {
                    match why {
                        Overdue::Idle => tracing::debug!(%peer, "closed an idle connection"),
                        Overdue::Head => tracing::debug!(%peer, "closed a connection whose request head was overdue"),
                    }
                }
            }
        }
    }
}

/// Takes a connection from `peer` in, making room when the slots are all
/// taken: the connections that have gone longest without a request are
/// closed, a few at a time, and this one takes one of their slots.
fn admit(guard: &Guard, watchers: &Watchers, peer: SocketAddr) -> Result<SlotGuard, Refusal> {
    /// Connections closed at once to make room: a look over all of them
    /// per batch, not per newcomer.
    const BATCH: usize = 16;
    match guard.admit(peer.ip()) {
        Err(Refusal::TooManyConnections) if guard.is_full() && !guard.ip_is_full(peer.ip()) => {
            // The closed connections give their slots back when their tasks
            // end, on their own threads, a moment from now: until then the
            // newcomers they made room for are let in beyond the cap.
            let mut leaving = watchers.leaving();
            if guard.open_connections() >= guard.limits().max_connections + leaving {
                leaving += watchers.make_room(BATCH);
            }
            guard.admit_beyond_cap(peer.ip(), leaving)
        }
        admitted => admitted,
    }
}

/// Sends a refused connection its protocol's refusal, if the listener is
/// plain and the protocol has one, with one non-blocking write; then closes
/// it (see the module documentation).
fn refuse(l: &Listening, stream: TcpStream, refusal: Refusal) {
    if l.tls.is_none()
        && let Some(words) = l.protocol.refusal(refusal)
    {
        let _ = stream.try_write(&words);
    }
    // Closed with our side's FIN after the refusal, rather than at once with
    // unread request bytes (which would reset it and could lose the words).
    if let Ok(std) = stream.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Write);
    }
}

async fn accept_loop(
    l: Listening,
    guard: Guard,
    workers: Arc<Workers>,
    watchers: Watchers,
    mut shutdown: Shutdown,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = l.listener.accept() => a,
            _ = shutdown.wait() => break,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (the process's or the system's):
                // the connections longest without a request make room, as
                // when the guard's slots run out. Otherwise wait a moment
                // rather than spin.
                tracing::warn!(error = %e, "accept failed");
                let out_of_files = matches!(e.raw_os_error(), Some(23 | 24));
                if !(out_of_files && watchers.make_room(16) > 0) {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = match admit(&guard, &watchers, peer) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                refuse(&l, stream, refusal);
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
