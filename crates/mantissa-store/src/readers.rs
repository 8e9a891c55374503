//! The threads that run [`Store::read`](crate::Store::read).
//!
//! SQLite calls block, so async code must not make them on its own thread.
//! tokio's blocking pool would do, but it wakes a sleeping thread for every
//! read it is handed (and starts one when none is idle): under load that is
//! a context switch or two per read, which costs more than a small read
//! itself (measured: `bench/web.sh`; "Web" in bench/README.md). These few
//! threads take reads from one queue instead, and while it holds work they
//! go from one read to the next without sleeping.
//!
//! Slow reads must not hold up quick ones: when reads are queued and no
//! thread has taken one for [`PATIENCE`] (every thread busy with something
//! slow), new reads go to tokio's blocking pool until they take one again.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

/// How long the threads may go without taking a queued read before new
/// reads are sent to tokio's blocking pool instead.
pub(crate) const PATIENCE: Duration = Duration::from_millis(10);

/// A read, with its answer's sender inside.
pub(crate) type ReadJob = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: Sender<ReadJob>,
    started: Instant,
    /// When a thread last took a read, in microseconds since `started`.
    last_taken: AtomicU64,
}

impl Pool {
    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn stalled(&self) -> bool {
        !self.queue.is_empty()
            && self
                .now()
                .saturating_sub(self.last_taken.load(Ordering::Relaxed))
                > PATIENCE.as_micros() as u64
    }
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        // Reads mostly use the CPU (the pages are cached); a few more
        // threads than cores cover the ones waiting for the disk.
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() * 2)
            .unwrap_or(4)
            .max(4);
        let (queue, rx) = crossbeam_channel::unbounded::<ReadJob>();
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            queue,
            started: Instant::now(),
            last_taken: AtomicU64::new(0),
        }));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("store-read-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        pool.last_taken.store(pool.now(), Ordering::Relaxed);
                        // The job catches its read's panics; this keeps the
                        // thread if anything else in it panics.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a store reader thread");
            }
        }
        pool
    })
}

/// Runs `job` on a reader thread, or on tokio's blocking pool when the
/// reader threads are stuck on slow reads.
pub(crate) fn run(job: ReadJob) {
    let p = pool();
    if p.stalled()
        && let Ok(handle) = tokio::runtime::Handle::try_current()
    {
        drop(handle.spawn_blocking(job));
        return;
    }
    if let Err(crossbeam_channel::SendError(job)) = p.queue.send(job) {
        job();
    }
}
