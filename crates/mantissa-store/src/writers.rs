//! The threads that run [`Store::write`](crate::Store::write): one bounded
//! pool for every open store.
//!
//! A thread per open store kept each store's writes in order, but a site
//! holding a thousand user stores open ran a thousand threads (and their
//! stacks) for stores that mostly sit idle. Here a store with writes
//! waiting is put on one run queue, once; a pool thread takes it, takes its
//! write lock (`write_lock.rs`), runs what it has waiting, a few at a time,
//! and puts it back at the end of the queue if more came meanwhile. So
//! writes to one store still run one at a time and in the order they were
//! asked for, writes to different stores run in parallel on up to
//! [`max_threads`] threads, and an idle store costs no thread at all.
//!
//! Writes wait mostly for the disk (a commit syncs the write-ahead log), so
//! the pool is larger than the number of CPUs: more commits can be waiting
//! for the disk at once. Threads start when writes wait and none is idle,
//! and stay.
//!
//! `Store::write_blocking` does not come here: it runs on its caller's
//! thread, which blocks anyway.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};

use crate::store::Store;

/// The pool's size: [`THREADS_PER_CPU`] per CPU, at least [`MIN_THREADS`].
pub(crate) fn max_threads() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        (cpus * THREADS_PER_CPU).max(MIN_THREADS)
    })
}

const THREADS_PER_CPU: usize = 4;
const MIN_THREADS: usize = 8;

struct Pool {
    run: Sender<Store>,
    take: Receiver<Store>,
    threads: AtomicUsize,
    idle: AtomicUsize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (run, take) = crossbeam_channel::unbounded();
        Pool {
            run,
            take,
            threads: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
        }
    })
}

/// Puts `store`, which has writes waiting, on the run queue. Called once
/// per turn: the store says whether it is on the queue already.
pub(crate) fn schedule(store: Store) {
    let p = pool();
    // The pool keeps a receiver, so the queue never closes.
    let _ = p.run.send(store);
    if p.take.len() > p.idle.load(Ordering::SeqCst) {
        start_thread(p);
    }
}

fn start_thread(p: &'static Pool) {
    let room = p
        .threads
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max_threads()).then_some(n + 1)
        })
        .is_ok();
    if !room {
        return;
    }
    let n = p.threads.load(Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name(format!("store-write-{n}"))
        .spawn(move || {
            loop {
                p.idle.fetch_add(1, Ordering::SeqCst);
                let store = p.take.recv();
                p.idle.fetch_sub(1, Ordering::SeqCst);
                let Ok(store) = store else { return };
                // A store's writes catch their own panics; this keeps the
                // thread if anything else panics.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store.run_queued();
                }));
            }
        });
    if let Err(e) = spawned {
        p.threads.fetch_sub(1, Ordering::SeqCst);
        tracing::error!(error = %e, "could not start a store write thread");
    }
}
