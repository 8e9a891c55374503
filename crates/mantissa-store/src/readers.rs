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
//! Reads queued together share a read transaction: beginning and ending one
//! takes and drops a lock on the WAL index (two `fcntl` calls and a mutex
//! every thread shares), a tenth of a small read's cost. Sharing keeps the
//! promise that a read sees everything written before it was asked for,
//! because only reads sent before the transaction began join it; and it is
//! kept short ([`SHARED_FOR`]). A read that panics, or after which SQLite
//! has ended the transaction itself, ends the sharing; while a store's
//! background upgrades run, its reads do not share at all
//! (`Snapshot::may_go_on` says why). Under load the queues hold several reads
//! at a time, so most reads share (bench/README.md, "Web": 8 % more
//! Fortunes requests a second).
//!
//! Reads that take less time than the hand-over itself do not come here
//! at all. Sending a read to a reader thread and its answer back wakes two
//! sleeping threads, 15–20 µs on the machines measured, about what a small
//! indexed query costs: awaited, such a read took 1.7 times as long as the
//! same read done where it was asked for (`bench/README.md`, "Store").
//! So [`CallSite`] keeps, for each place in the program that reads (the
//! closure's type), how long its reads take, and an awaited read from a
//! place whose reads take under [`INLINE_UNDER`] runs on the async
//! thread that awaits it — as tokio's guidance allows for work that short —
//! except on a server's connection threads, which hand every read over
//! ([`hands_over_here`] says why). A place is first measured on the reader
//! threads, and a read that turns out slow sends the next ones back to
//! them.
//!
//! Slow reads must not hold up quick ones: when reads are queued and no
//! thread has taken one for [`PATIENCE`] (every thread busy with something
//! slow), new reads go to tokio's blocking pool until they take one again.
//! A thread takes the next read only when it has finished the last, so a
//! slow read keeps no other waiting.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::Result;
use crate::store::Store;
use crate::tx::Read;

/// How long the threads may go without taking a queued read before new
/// reads are sent to tokio's blocking pool instead.
pub(crate) const PATIENCE: Duration = Duration::from_millis(10);

/// Reads from a place whose reads take less than this run on the async
/// thread that awaits them ([`CallSite`]).
pub(crate) const INLINE_UNDER: Duration = Duration::from_micros(50);

/// How long the reads of one place in the program take: an average that
/// follows them (each read weighs an eighth, and a read four times slower
/// than the average replaces it, so that one slow read sends the next ones
/// to the reader threads at once).
///
/// Kept in a table of [`CALL_SITES`] slots, each one word: 32 bits that
/// name the place and 32 bits of average in nanoseconds. Two places that
/// share a slot take turns in it; a place whose name is not in its slot
/// counts as not measured.
pub(crate) struct CallSite {
    slot: &'static AtomicU64,
    tag: u64,
}

const CALL_SITES: usize = 1024;

static SITES: [AtomicU64; CALL_SITES] = [const { AtomicU64::new(0) }; CALL_SITES];

impl CallSite {
    /// The place that reads with a closure of type `F`.
    pub(crate) fn of<F: 'static>() -> CallSite {
        use std::hash::{Hash, Hasher};
        /// A type's id is already a hash: mixing its words is enough (a
        /// keyed hash of it cost more than a tenth of a small read).
        #[derive(Default)]
        struct Mix(u64);
        impl Hasher for Mix {
            fn finish(&self) -> u64 {
                self.0
            }
            fn write(&mut self, bytes: &[u8]) {
                for chunk in bytes.chunks(8) {
                    let mut word = [0u8; 8];
                    word[..chunk.len()].copy_from_slice(chunk);
                    self.write_u64(u64::from_le_bytes(word));
                }
            }
            fn write_u64(&mut self, n: u64) {
                self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            }
        }
        let mut h = Mix::default();
        std::any::TypeId::of::<F>().hash(&mut h);
        let hash = h.finish();
        CallSite {
            slot: &SITES[(hash as usize) % CALL_SITES],
            // Never 0, which an empty slot holds.
            tag: (hash >> 32) | 1,
        }
    }

    /// Whether this place's reads are known to be quick.
    pub(crate) fn is_quick(&self) -> bool {
        let v = self.slot.load(Ordering::Relaxed);
        v >> 32 == self.tag && ((v & 0xffff_ffff) as u128) < INLINE_UNDER.as_nanos()
    }

    /// Counts a read that took `took`.
    pub(crate) fn took(&self, took: Duration) {
        let ns = took.as_nanos().min(u32::MAX as u128) as u64;
        let v = self.slot.load(Ordering::Relaxed);
        let average = if v >> 32 == self.tag {
            let old = v & 0xffff_ffff;
            if ns > 4 * old {
                ns
            } else {
                old - old / 8 + ns / 8
            }
        } else {
            ns
        };
        self.slot.store(self.tag << 32 | average, Ordering::Relaxed);
    }
}

/// How long reads may go on sharing one read transaction. Short: an open
/// transaction keeps a checkpoint from moving past it.
const SHARED_FOR: Duration = Duration::from_millis(1);

/// A read, with its answer's sender inside: runs in the transaction it is
/// given (or is told why there is none), and says whether the next read may
/// share that transaction (not if it panicked).
pub(crate) type ReadFn = Box<dyn FnOnce(Result<&Read<'_>>) -> bool + Send>;

/// A read waiting in a queue.
struct ReadJob {
    store: Store,
    /// How many reads were sent to its queue before it: reads sent before a
    /// transaction began may share it.
    sent: u64,
    run: ReadFn,
}

impl ReadJob {
    /// Runs the read in a transaction of its own.
    fn run_alone(self) {
        match self.store.snapshot() {
            Ok(snapshot) => drop((self.run)(Ok(&snapshot.read()))),
            Err(e) => drop((self.run)(Err(e))),
        }
    }
}

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
    /// Reads sent to the queue so far.
    sent: AtomicU64,
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
    /// Whether this thread chose its queue ([`hands_over_here`]).
    static PIPELINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Sends the reads this thread starts from now on to queue `index` (modulo
/// the number of queues, one per CPU) and its reader threads — all of them,
/// quick ones too ([`Store::read`](crate::Store::read)).
///
/// A server calls it once on each of its connection threads, with that
/// thread's number, so that no two of them share a queue. Threads that do
/// not are dealt a queue in turn on their first read.
pub fn use_reader_queue(index: usize) {
    QUEUE.set(Some(index % queues()));
    PIPELINED.set(true);
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
            sent: AtomicU64::new(0),
        });
        for i in 0..THREADS_PER_QUEUE {
            let rx = rx.clone();
            let state = state.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("store-read-{n}-{i}"))
                .spawn(move || {
                    let mut next = None;
                    loop {
                        let Some(job) = next.take().or_else(|| rx.recv().ok()) else {
                            return;
                        };
                        // The reads catch their own panics; this keeps the
                        // thread if anything else in it panics.
                        let _ = catch_unwind(AssertUnwindSafe(|| {
                            next = take_reads(job, &rx, &state);
                        }));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a store reader thread");
            }
        }
        Pool { queue, state }
    }
}

/// Runs `first` and then, in the same transaction, the reads queued after
/// it that may share it; returns the first read that may not.
fn take_reads(first: ReadJob, rx: &Receiver<ReadJob>, state: &PoolState) -> Option<ReadJob> {
    state.last_taken.store(state.now(), Ordering::Relaxed);
    // Every read sent before this load may share the transaction: it
    // begins after, so it sees what those reads' senders wrote before.
    let horizon = state.sent.load(Ordering::Acquire);
    let began = Instant::now();
    let snapshot = match first.store.snapshot() {
        Ok(snapshot) => snapshot,
        Err(e) => {
            (first.run)(Err(e));
            return None;
        }
    };
    let mut job = first;
    loop {
        if !(job.run)(Ok(&snapshot.read())) || !snapshot.may_go_on() {
            return None;
        }
        job = rx.try_recv().ok()?;
        state.last_taken.store(state.now(), Ordering::Relaxed);
        if job.sent >= horizon || !snapshot.is_of(&job.store) || began.elapsed() > SHARED_FOR {
            return Some(job);
        }
    }
}

/// Whether this thread hands every read over: a thread that chose its
/// reader queue ([`use_reader_queue`]), as a server's connection threads
/// do, serves many connections at once, and a read handed over overlaps
/// with its other work and shares a transaction with the reads queued
/// beside it. Under load that serves more reads a second than running
/// quick ones where they are awaited (`bench/README.md`, "Store": 20 %
/// more Fortunes requests a second).
pub(crate) fn hands_over_here() -> bool {
    PIPELINED.get()
}

/// Runs the read `run` of `store` on a reader thread, or on tokio's/// Runs the read `run` of `store` on a reader thread, or on tokio's
/// blocking pool when the reader threads are stuck on slow reads.
pub(crate) fn run(store: Store, run: ReadFn) {
    let p = pool();
    let sent = p.state.sent.fetch_add(1, Ordering::AcqRel);
    let job = ReadJob { store, sent, run };
    if p.stalled()
        && let Ok(handle) = tokio::runtime::Handle::try_current()
    {
        drop(handle.spawn_blocking(move || job.run_alone()));
        return;
    }
    if let Err(crossbeam_channel::SendError(job)) = p.queue.send(job) {
        job.run_alone();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, Instant};

    use crate::error::Result;
    use crate::store::SNAPSHOTS;

    type Reading<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

    /// Polls `read` once, which sends it to a reader queue. Outside any
    /// tokio runtime, so that it waits in the queue however long the queue
    /// is held up, instead of going to tokio's blocking pool.
    fn send<T>(read: &mut Reading<'_, T>) {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(read.as_mut().poll(&mut cx).is_pending());
    }

    /// How long a test waits for a reader thread before it fails.
    const WAIT: Duration = Duration::from_secs(60);

    fn answer<T>(mut read: Reading<'_, T>) -> Result<T> {
        let mut cx = Context::from_waker(Waker::noop());
        let end = Instant::now() + WAIT;
        loop {
            if let Poll::Ready(answer) = read.as_mut().poll(&mut cx) {
                return answer;
            }
            assert!(Instant::now() < end, "no answer from a reader thread");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The tests that count transactions take turns: the count is global.
    /// (No other test in this binary reads a store.)
    static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// How many transactions 100 reads of `store`'s site take when they
    /// wait in one queue together.
    fn transactions_for_100_queued_reads(store: &crate::Store) -> usize {
        let _turn = COUNTING.lock().unwrap_or_else(|e| e.into_inner());
        super::use_reader_queue(0);
        // Hold both of the queue's threads, so that the reads below wait
        // in the queue together.
        let (started, blocked) = mpsc::channel();
        let mut releases = Vec::new();
        let mut holds = Vec::new();
        for _ in 0..super::THREADS_PER_QUEUE {
            let (release, wait) = mpsc::channel::<()>();
            let started = started.clone();
            let mut hold: Reading<'_, ()> = Box::pin(store.read(move |_| {
                started.send(()).unwrap();
                let _ = wait.recv();
                Ok(())
            }));
            send(&mut hold);
            releases.push(release);
            holds.push(hold);
        }
        for _ in 0..super::THREADS_PER_QUEUE {
            blocked
                .recv_timeout(WAIT)
                .expect("a reader thread took the read");
        }
        let before = SNAPSHOTS.load(Ordering::Relaxed);
        let mut reads: Vec<Reading<'_, String>> = (0..100)
            .map(|_| {
                Box::pin(store.read(|r| Ok(r.store_name().to_string()))) as Reading<'_, String>
            })
            .collect();
        reads.iter_mut().for_each(send);
        drop(releases);
        for read in reads {
            assert_eq!(answer(read).unwrap(), "site");
        }
        for hold in holds {
            answer(hold).unwrap();
        }
        SNAPSHOTS.load(Ordering::Relaxed) - before
    }

    /// Reads that wait in a queue together run in a few transactions, not
    /// one each.
    #[test]
    fn reads_queued_together_share_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let site = crate::Site::open(dir.path()).unwrap();
        let made = transactions_for_100_queued_reads(site.store());
        assert!(made <= 50, "100 queued reads took {made} transactions");
    }

    /// While a store's background upgrades run, its reads do not share
    /// (`Snapshot::may_go_on`).
    #[test]
    fn reads_do_not_share_while_upgrades_run() {
        let dir = tempfile::tempdir().unwrap();
        let site = crate::Site::open(dir.path()).unwrap();
        let store = site.store();
        // As a store opened with an upgrade left to do says (with none in
        // the table, so that queries go on as usual).
        store.shared().any_upgrading.store(true, Ordering::Release);
        let made = transactions_for_100_queued_reads(store);
        assert_eq!(made, 100, "100 queued reads during upgrades");
    }
}
