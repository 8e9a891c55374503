//! Closing connections that have gone quiet, or that take too long to say
//! what they want.
//!
//! Two watches, looked at a few times a second by the listener's accept
//! loop over all its connections at once ([`Watchers`]), so that nothing
//! here costs a timer per request or per connection:
//!
//! - the **idle** watch: how long no bytes at all have moved — a keep-alive
//!   connection nobody uses, or a client that stopped reading. It wraps the
//!   byte stream, so it works the same for every protocol.
//! - the **head** watch ([`Requests`]): how long the connection has been
//!   waiting for the head of its next request (HTTP's headers, an SMTP
//!   command) — slowloris clients trickle a header line now and then and
//!   never finish. The protocol says when a request's head has arrived and
//!   when its answer is ready. hyper's own header timeout did this with a
//!   tokio timer armed and cancelled on every request, which cost 3–8 % of
//!   the plaintext benchmark (`bench/README.md`, "Web").
//!
//! When connection slots run out, [`Watchers::make_room`] closes the
//! connections that have gone longest without a request (waiting for a
//! head, or for a TLS handshake to end), oldest first: a visitor's browser
//! sends its head as soon as it connects, so the connections pushed out
//! are those of clients that dawdle — a slowloris from many addresses, each
//! under its address's cap, pushes out its own connections.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether bytes moved on a connection since its watcher last looked.
///
/// A flag, not a time: reading the clock on every read and write cost
/// more than the rest of this module, and the watcher looks a few times a
/// second anyway, so it keeps the time itself.
#[derive(Clone, Debug, Default)]
pub(crate) struct Activity {
    moved: Arc<AtomicBool>,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity::default()
    }

    fn touch(&self) {
        // Only write when it changes: a store on every read and write
        // would keep the flag's cache line bouncing with the watcher's.
        if !self.moved.load(Ordering::Relaxed) {
            self.moved.store(true, Ordering::Relaxed);
        }
    }

    /// Whether bytes moved since the last call.
    fn take(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }
}

/// Tells, looking now and then, how long a connection has been quiet.
pub(crate) struct IdleWatch {
    activity: Activity,
    quiet_since: Instant,
}

impl IdleWatch {
    pub(crate) fn new(activity: Activity) -> IdleWatch {
        IdleWatch {
            activity,
            quiet_since: Instant::now(),
        }
    }

    /// How long no bytes have moved, as far as can be told from the looks
    /// taken (each look is at most as precise as the time between looks).
    pub(crate) fn idle(&mut self) -> Duration {
        if self.activity.take() {
            self.quiet_since = Instant::now();
        }
        self.quiet_since.elapsed()
    }
}

/// What a connection's protocol tells the head watch about its requests.
/// Cheap to clone; one per connection, in [`Connection`](crate::Connection).
#[derive(Clone, Debug, Default)]
pub struct Requests(Arc<RequestCounts>);

#[derive(Debug, Default)]
struct RequestCounts {
    /// The protocol has the connection (a TLS handshake is over): until
    /// then the handshake's own timeout applies.
    serving: AtomicBool,
    /// Heads received since the connection opened.
    heads: AtomicU64,
    /// Requests whose answer is not ready yet.
    in_flight: AtomicUsize,
    /// The protocol bounds its own waiting (HTTP/2): no head timeout.
    exempt: AtomicBool,
}

impl Requests {
    /// The connection is handed to its protocol: the head watch starts.
    pub(crate) fn serving(&self) {
        self.0.serving.store(true, Ordering::Relaxed);
    }

    /// A request's head has arrived whole; its answer is being made. The
    /// answer is ready when the returned guard is dropped.
    pub fn head_received(&self) -> Answering {
        self.0.heads.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    /// The protocol bounds how long it waits by itself (HTTP/2 multiplexes
    /// requests and pings idle connections): the head watch leaves this
    /// connection alone from now on.
    pub fn exempt_from_head_timeout(&self) {
        self.0.exempt.store(true, Ordering::Relaxed);
    }
}

/// A request being answered; dropping it says the answer is ready (or was
/// given up), and the connection waits for the next head.
#[derive(Debug)]
pub struct Answering(Requests);

impl Drop for Answering {
    fn drop(&mut self) {
        (self.0).0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells, looking now and then, how long a connection has waited for the
/// head of its next request.
pub(crate) struct HeadWatch {
    requests: Requests,
    heads_seen: u64,
    waiting_since: Instant,
    /// Since when, as far as the looks tell, the connection has had no
    /// request (none in flight, and no new head): whatever it was doing
    /// (a TLS handshake, waiting for a head, an idle HTTP/2 connection).
    unused_since: Instant,
}

impl HeadWatch {
    pub(crate) fn new(requests: Requests) -> HeadWatch {
        let now = Instant::now();
        HeadWatch {
            requests,
            heads_seen: 0,
            waiting_since: now,
            unused_since: now,
        }
    }

    /// Since when the connection has had no request, or `None` while one
    /// is being answered. Updates what [`HeadWatch::waiting`] knows too.
    fn unused_since(&mut self) -> Option<Instant> {
        let counts = &self.requests.0;
        let heads = counts.heads.load(Ordering::Relaxed);
        if counts.in_flight.load(Ordering::Relaxed) > 0 || heads != self.heads_seen {
            self.unused_since = Instant::now();
            self.waiting();
            return None;
        }
        Some(self.unused_since)
    }

    /// How long the connection has been waiting for a head, as far as can
    /// be told from the looks taken: zero while a request is being answered
    /// or when the protocol is exempt; a wait that began between two looks
    /// is counted from the later one.
    pub(crate) fn waiting(&mut self) -> Duration {
        let counts = &self.requests.0;
        let heads = counts.heads.load(Ordering::Relaxed);
        if !counts.serving.load(Ordering::Relaxed)
            || counts.exempt.load(Ordering::Relaxed)
            || counts.in_flight.load(Ordering::Relaxed) > 0
            || heads != self.heads_seen
        {
            if heads != self.heads_seen || counts.in_flight.load(Ordering::Relaxed) > 0 {
                self.unused_since = Instant::now();
            }
            self.heads_seen = heads;
            self.waiting_since = Instant::now();
            return Duration::ZERO;
        }
        self.waiting_since.elapsed()
    }
}

/// Every open connection of a listener, with its two watches, looked at
/// together by the accept loop ([`Watchers::look`]). One look over all of
/// them every so often, rather than a timer in every connection's task:
/// that timer was polled on every wake of the task, every request
/// (2–5 % of the plaintext benchmark).
#[derive(Clone, Default)]
pub(crate) struct Watchers {
    open: Arc<std::sync::Mutex<Vec<Watching>>>,
    /// Connections closed to make room whose tasks have not ended yet:
    /// their slots are about to come back.
    leaving: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

struct Watching {
    peer: std::net::SocketAddr,
    idle: IdleWatch,
    head: HeadWatch,
    task: tokio::task::AbortHandle,
}

/// Why a look closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overdue {
    /// No bytes moved for longer than the idle timeout.
    Idle,
    /// It waited longer than the header timeout for a request's head.
    Head,
}

impl Watchers {
    fn open(&self) -> std::sync::MutexGuard<'_, Vec<Watching>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many connections closed to make room still hold their slots.
    pub(crate) fn leaving(&self) -> usize {
        let mut leaving = self.leaving.lock().unwrap_or_else(|e| e.into_inner());
        leaving.retain(|t| !t.is_finished());
        leaving.len()
    }

    /// Watches the connection served by `task` until it ends.
    pub(crate) fn watch(
        &self,
        peer: std::net::SocketAddr,
        activity: Activity,
        requests: Requests,
        task: tokio::task::AbortHandle,
    ) {
        self.open().push(Watching {
            peer,
            idle: IdleWatch::new(activity),
            head: HeadWatch::new(requests),
            task,
        });
    }

    /// Looks at every connection: forgets those that ended, and closes
    /// (aborts the task of) those past a timeout.
    pub(crate) fn look(
        &self,
        idle: Duration,
        header: Duration,
    ) -> Vec<(std::net::SocketAddr, Overdue)> {
        let mut closed = Vec::new();
        self.open().retain_mut(|c| {
            if c.task.is_finished() {
                return false;
            }
            let overdue = if c.idle.idle() > idle {
                Overdue::Idle
            } else if c.head.waiting() > header {
                Overdue::Head
            } else {
                return true;
            };
            c.task.abort();
            closed.push((c.peer, overdue));
            false
        });
        closed
    }

    /// Closes (aborts the tasks of) up to `count` connections that have
    /// gone longest without a request, none that is being answered; says
    /// how many. Called when connection slots run out, so that a new
    /// connection can be taken in.
    pub(crate) fn make_room(&self, count: usize) -> usize {
        let mut open = self.open();
        let mut unused: Vec<(Instant, usize)> = open
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| !c.task.is_finished())
            .filter_map(|(i, c)| c.head.unused_since().map(|since| (since, i)))
            .collect();
        let count = count.min(unused.len());
        if count == 0 {
            return 0;
        }
        if count < unused.len() {
            unused.select_nth_unstable(count - 1);
        }
        let mut closing: Vec<usize> = unused[..count].iter().map(|&(_, i)| i).collect();
        closing.sort_unstable();
        let mut leaving = self.leaving.lock().unwrap_or_else(|e| e.into_inner());
        for &i in closing.iter().rev() {
            let c = open.swap_remove(i);
            c.task.abort();
            tracing::debug!(peer = %c.peer, "closed a connection without a request to make room");
            leaving.push(c.task);
        }
        metrics::counter!("mantissa_connections_closed_for_room_total").increment(count as u64);
        count
    }

    /// Connections being watched.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open().len()
    }
}

/// A byte stream that records its activity.
pub(crate) struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Activity) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_look_closes_overdue_connections_and_forgets_ended_ones() {
        let watchers = Watchers::default();
        let peer: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let forever = || tokio::spawn(std::future::pending::<()>());
        // Waiting for a head, being answered, ended.
        let waiting = forever();
        let answered = forever();
        let ended = tokio::spawn(async {});
        let head_waiting = Requests::default();
        head_waiting.serving();
        let being_answered = Requests::default();
        being_answered.serving();
        let _answering = being_answered.head_received();
        watchers.watch(peer, Activity::new(), head_waiting, waiting.abort_handle());
        watchers.watch(
            peer,
            Activity::new(),
            being_answered,
            answered.abort_handle(),
        );
        watchers.watch(
            peer,
            Activity::new(),
            Requests::default(),
            ended.abort_handle(),
        );
        ended.await.unwrap();
        std::thread::sleep(Duration::from_millis(20));

        let closed = watchers.look(Duration::from_secs(60), Duration::from_millis(10));
        assert_eq!(closed, vec![(peer, Overdue::Head)]);
        assert!(
            waiting.await.unwrap_err().is_cancelled(),
            "its task was aborted"
        );
        assert_eq!(watchers.len(), 1, "only the one being answered is left");

        // Past the idle timeout even a request in flight is closed: no
        // bytes moved.
        let closed = watchers.look(Duration::from_millis(10), Duration::from_secs(60));
        assert_eq!(closed, vec![(peer, Overdue::Idle)]);
        assert!(answered.await.unwrap_err().is_cancelled());
        assert_eq!(watchers.len(), 0);
    }

    #[tokio::test]
    async fn making_room_closes_the_connections_longest_without_a_request() {
        let watchers = Watchers::default();
        let forever = || tokio::spawn(std::future::pending::<()>());
        let at = |port: u16| -> std::net::SocketAddr { ([127, 0, 0, 1], port).into() };
        let (oldest, answered, newest) = (forever(), forever(), forever());
        let waiting = Requests::default();
        waiting.serving();
        watchers.watch(at(1), Activity::new(), waiting, oldest.abort_handle());
        let being_answered = Requests::default();
        being_answered.serving();
        let _answering = being_answered.head_received();
        watchers.watch(
            at(2),
            Activity::new(),
            being_answered,
            answered.abort_handle(),
        );
        std::thread::sleep(Duration::from_millis(5));
        // Still in its TLS handshake: it has sent no request either.
        watchers.watch(
            at(3),
            Activity::new(),
            Requests::default(),
            newest.abort_handle(),
        );

        assert_eq!(watchers.make_room(1), 1);
        assert!(oldest.await.unwrap_err().is_cancelled(), "the oldest went");
        assert_eq!(watchers.len(), 2);
        assert_eq!(
            watchers.make_room(5),
            1,
            "one being answered is never closed"
        );
        assert!(newest.await.unwrap_err().is_cancelled());
        assert_eq!(watchers.leaving(), 0, "both have ended");
        assert!(!answered.is_finished());
    }
}
