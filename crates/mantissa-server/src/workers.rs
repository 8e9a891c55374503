//! The threads connections are served on.
//!
//! Not tokio's multi-threaded runtime, which the accept loops run on: it
//! moves a connection's task to whichever of its threads polled the socket
//! or stole the task, so one connection's consecutive requests run on
//! different CPUs, and everything a request touches (the task, hyper's
//! buffers and state, the protocol's) moves from one CPU's cache to the
//! other's with it. Where a machine's CPUs are far apart — two cores on
//! different chiplets, as cloud VMs often get them — moving a cache line
//! costs about 200 ns instead of 40, and a request moves dozens
//! (`bench/README.md`, "Web", "cross-CPU latency").
//!
//! Here a connection stays on one thread for its whole life: one
//! single-threaded runtime per CPU, and the accept loop deals the
//! connections it admits to them in turn (as actix-web and nginx's workers
//! do). What this gives up is work stealing: a connection whose handler
//! holds its thread with CPU work delays the others on that thread.
//! Mantissa's handlers do their blocking work (store reads, password
//! hashing) off the runtime, so that is rare.
//!
//! Each thread first runs the server's thread-start hook with its
//! number, if one was given: what starts a site's server has each thread
//! send its store reads to a reader queue of its own, for the same reason
//! (`mantissa-store`'s `readers.rs`). The hook is how that happens without
//! this crate knowing the store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinSet};

/// What each connection thread runs first, given its number (0, 1, … one
/// per CPU): state a thread keeps for the connections it serves, such as
/// the store reader queue its reads go to.
pub(crate) type ThreadStart = Arc<dyn Fn(usize) + Send + Sync>;

/// One single-threaded runtime per CPU, stopped when this is dropped.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropping these ends the threads (and their runtimes, with whatever
    /// tasks are still on them).
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts one thread per CPU, each running `on_start` first. When none
    /// can be started, connections are served on the caller's runtime
    /// instead (logged), and `on_start` runs nowhere.
    pub(crate) fn start(on_start: Option<ThreadStart>) -> Workers {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "could not make a connection runtime");
                    break;
                }
            };
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let on_start = on_start.clone();
            let started = std::thread::Builder::new()
                .name(format!("mantissa-conn-{i}"))
                .spawn(move || {
                    if let Some(on_start) = on_start {
                        on_start(i);
                    }
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                });
            match started {
                Ok(_) => {
                    handles.push(handle);
                    stops.push(stop);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not start a connection thread");
                    break;
                }
            }
        }
        Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stops,
        }
    }

    /// Runs `task` in `set` on the next thread in turn.
    pub(crate) fn spawn<F>(&self, set: &mut JoinSet<()>, task: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.handles.is_empty() {
            return set.spawn(task);
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        set.spawn_on(task, &self.handles[i])
    }
}
