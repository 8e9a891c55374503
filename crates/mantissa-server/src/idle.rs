//! Closing connections that have gone quiet.
//!
//! Protocol timeouts (HTTP's header timeout) bound how long one message may
//! take; this bounds how long a connection may sit with no bytes moving at
//! all — a keep-alive connection nobody uses, or a client that stopped
//! reading — so that such connections cannot hold the slots forever. It
//! wraps the byte stream, so it works the same for every protocol.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether bytes moved on a connection since its watcher last looked.
///
/// A flag, not a time: reading the clock on every read and write cost
/// more than the rest of this module, and the watcher looks once a second
/// anyway, so it keeps the time itself.
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
