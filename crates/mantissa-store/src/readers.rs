//! The threads that run [`Store::read`](crate::Store::read).
//!
//! SQLite calls block, so async code must not make them on its own thread.
//! tokio's blocking pool would do, but it wakes a sleeping thread for every
//! read it is handed (and starts one when none is idle): under load that is
//! a context switch or two per read, which costs more than a small read
//! itself (measured: `bench/web.sh`; "Web" in bench/README.md). These few
//! threads take reads from queues instead, and while one holds work its
//! threads go from one read to the next without sleeping.
//!
//! One queue per CPU, two threads each, and each thread that reads keeps
//! to one queue: a queue every thread writes to, and reader threads that
//! take work from every thread, move the queue's state, the read's
//! connection and its answer between CPUs on every read, which costs 200 ns
//! a cache line on machines whose CPUs share no cache ("Web" in
//! bench/README.md: 4–27 % more Fortunes requests a second with a queue
//! per connection thread, where the CPUs are far apart).
//!
//! Slow reads must not hold up quick ones: when reads are queued and no
//! thread has taken one for [`PATIENCE`] (every thread busy with something
//! slow), new reads go to tokio's blocking pool until they take one again.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

/// How long the threads may go without taking a queued read before new
/// reads are sent to tokio's blocking pool instead.
pub(crate) const PATIENCE: Duration = Duration::from_millis(10);

/// A read, with its answer's sender inside.
pub(crate) type ReadJob = Box<dyn FnOnce() + Send>;

/// Reader threads per queue: reads mostly use the CPU (the pages are
/// cached); a second thread covers one waiting for the disk.
const THREADS_PER_QUEUE: usize = 2;

/// One queue and what its threads tell about it.
struct Pool {
    queue: Sender<ReadJob>,
    state: Arc<PoolState>,
}

struct PoolState {
    started: Instant,
    /// When a thread last took a read, in microseconds since `started`.
    last_taken: AtomicU64,
}

impl PoolState {
    fn now(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
}

impl Pool {
    fn stalled(&self) -> bool {
        !self.queue.is_empty()
            && self
                .state
                .now()
                .saturating_sub(self.state.last_taken.load(Ordering::Relaxed))
                > PATIENCE.as_micros() as u64
    }
}

/// How many queues there are: one per CPU.
fn queues() -> usize {
    static QUEUES: OnceLock<usize> = OnceLock::new();
    *QUEUES.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// The queues with their threads, started on the first read.
fn pools() -> &'static [Pool] {
    static POOLS: OnceLock<Vec<Pool>> = OnceLock::new();
    POOLS.get_or_init(|| (0..queues()).map(Pool::start).collect())
}

thread_local! {
    /// The queue this thread's reads go to, once chosen.
    static QUEUE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Sends the reads this thread starts from now on to queue `index` (modulo
/// the number of queues, one per CPU) and its reader threads.
///
/// A server calls it once on each of its connection threads, with that
/// thread's number, so that no two of them share a queue. Threads that do
/// not are dealt a queue in turn on their first read.
pub fn use_reader_queue(index: usize) {
    QUEUE.set(Some(index % queues()));
}

/// The calling thread's queue.
fn pool() -> &'static Pool {
    let i = QUEUE.get().unwrap_or_else(|| {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let i = NEXT.fetch_add(1, Ordering::Relaxed) % queues();
        QUEUE.set(Some(i));
        i
    });
    &pools()[i]
}

impl Pool {
    /// A queue and [`THREADS_PER_QUEUE`] threads taking reads from it.
    fn start(n: usize) -> Pool {
        let (queue, rx) = crossbeam_channel::unbounded::<ReadJob>();
        let state = Arc::new(PoolState {
            started: Instant::now(),
            last_taken: AtomicU64::new(0),
        });
        for i in 0..THREADS_PER_QUEUE {
            let rx = rx.clone();
            let state = state.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("store-read-{n}-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        state.last_taken.store(state.now(), Ordering::Relaxed);
                        // The job catches its read's panics; this keeps the
                        // thread if anything else in it panics.
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a store reader thread");
            }
        }
        Pool { queue, state }
    }
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
