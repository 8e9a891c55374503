//! Who may write a store now: one thread at a time, and never a thread
//! that would wait for ever.
//!
//! A write transaction runs on the thread that holds its store's write
//! lock: the caller's own thread for [`Store::write_blocking`], a pool
//! thread for [`Store::write`] (`writers.rs`). A mutex would do for "one at
//! a time", but a mutex lets a thread wait for a lock it holds itself (a
//! `write_blocking` of store S inside a write of S), or for a lock whose
//! holder waits for one of its own (a write of A that writes B, while a
//! write of B writes A), and both hang for ever without a word. This lock
//! refuses both at once with an error that names the stores, so the
//! transaction that asked rolls back and the store stays usable.
//!
//! Waits are checked the way a database's lock manager checks them: a
//! thread about to wait records what it waits for in one table that every
//! store shares, then follows the holder of that lock, what that holder
//! waits for, and so on; coming back to itself means the wait would never
//! end. A thread takes a lock before it can wait for another, so of the
//! threads that close a cycle, the last to record its wait sees the whole
//! cycle. Taking a free lock touches neither the table nor anything shared
//! but the lock itself.
//!
//! [`Store::write`]: crate::Store::write
//! [`Store::write_blocking`]: crate::Store::write_blocking

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Result, StoreError};

/// This thread's number: never 0 (a free lock), never reused.
fn this_thread() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static ME: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    ME.with(|me| *me)
}

/// What each waiting thread waits for.
static WAITS: Mutex<Option<HashMap<u64, Arc<Core>>>> = Mutex::new(None);

/// The write lock of one open store. Cheap to clone (one lock, many
/// handles).
#[derive(Clone)]
pub(crate) struct WriteLock(Arc<Core>);

struct Core {
    /// The store's name, for errors.
    store: String,
    /// The thread that holds the lock, or 0.
    holder: AtomicU64,
    /// Threads waiting: a release wakes one only when there are any.
    waiters: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// Proof that this thread holds a store's write lock; dropping it
/// releases the lock.
pub(crate) struct Held<'a> {
    lock: &'a Core,
    /// Held by the thread that took it: it may not move to another.
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl WriteLock {
    pub(crate) fn new(store: &str) -> WriteLock {
        WriteLock(Arc::new(Core {
            store: store.to_string(),
            holder: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        }))
    }

    /// Whether this thread holds the lock (it is inside a write of the
    /// store).
    pub(crate) fn held_here(&self) -> bool {
        self.0.holder.load(Ordering::Acquire) == this_thread()
    }

    /// Refuses a write of the store from inside one of its writes: it
    /// would wait for itself for ever.
    pub(crate) fn refuse_nested(&self) -> Result<()> {
        if self.held_here() {
            return Err(StoreError::NestedWrite {
                store: self.0.store.clone(),
            });
        }
        Ok(())
    }

    /// Takes the lock, waiting while another thread holds it; refuses at
    /// once when the wait could never end.
    pub(crate) fn acquire(&self) -> Result<Held<'_>> {
        let me = this_thread();
        let core = &*self.0;
        if core
            .holder
            .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(core.held());
        }
        self.refuse_nested()?;
        self.record_wait(me)?;
        core.waiters.fetch_add(1, Ordering::SeqCst);
        let mut sleeping = core.sleep.lock().unwrap_or_else(|e| e.into_inner());
        while core
            .holder
            .compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            sleeping = core.wake.wait(sleeping).unwrap_or_else(|e| e.into_inner());
        }
        drop(sleeping);
        core.waiters.fetch_sub(1, Ordering::SeqCst);
        waits_table(|waits| waits.remove(&me));
        Ok(core.held())
    }

    /// Records that this thread waits for the lock, unless following the
    /// holders leads back to this thread.
    fn record_wait(&self, me: u64) -> Result<()> {
        waits_table(|waits| {
            let mut chain = vec![self.0.store.clone()];
            let mut lock = self.0.clone();
            // A cycle is at most as long as there are waiting threads.
            for _ in 0..=waits.len() {
                let holder = lock.holder.load(Ordering::SeqCst);
                if holder == me {
                    return Err(StoreError::Deadlock { stores: chain });
                }
                match waits.get(&holder) {
                    Some(next) => {
                        chain.push(next.store.clone());
                        lock = next.clone();
                    }
                    None => break,
                }
            }
            waits.insert(me, self.0.clone());
            Ok(())
        })
    }
}

fn waits_table<R>(f: impl FnOnce(&mut HashMap<u64, Arc<Core>>) -> R) -> R {
    let mut waits = WAITS.lock().unwrap_or_else(|e| e.into_inner());
    f(waits.get_or_insert_with(HashMap::new))
}

impl Core {
    fn held(&self) -> Held<'_> {
        Held {
            lock: self,
            _thread_bound: std::marker::PhantomData,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let core = self.lock;
        core.holder.store(0, Ordering::SeqCst);
        if core.waiters.load(Ordering::SeqCst) > 0 {
            // Taken so that a waiter between its check and its sleep
            // cannot miss the wake-up.
            let _sleeping = core.sleep.lock().unwrap_or_else(|e| e.into_inner());
            core.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_thread_cannot_take_its_own_lock_twice() {
        let lock = WriteLock::new("alice");
        let held = lock.acquire().unwrap();
        let err = lock.acquire().err().unwrap();
        assert!(matches!(err, StoreError::NestedWrite { ref store } if store == "alice"));
        drop(held);
        lock.acquire().unwrap();
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released() {
        let lock = WriteLock::new("s");
        let held = lock.acquire().unwrap();
        let other = lock.clone();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || {
            let _h = other.acquire().unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(held);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }

    /// A holds a and waits for b; B holds b and asks for a: B is refused,
    /// and once it lets b go, A goes on.
    #[test]
    fn two_threads_waiting_for_each_other_are_refused() {
        let (a, b) = (WriteLock::new("a"), WriteLock::new("b"));
        let (a2, b2) = (a.clone(), b.clone());
        let (b_taken, wait_b) = mpsc::channel();
        let (a_waiting, wait_a) = mpsc::channel();
        let t = std::thread::spawn(move || {
            let _hb = b2.acquire().unwrap();
            b_taken.send(()).unwrap();
            // Until the other thread has recorded its wait for b (the
            // table is the process's: other tests record theirs in it).
            wait_a.recv().unwrap();
            loop {
                let recorded = waits_table(|w| w.values().any(|l| Arc::ptr_eq(l, &b2.0)));
                if recorded {
                    break;
                }
                std::thread::yield_now();
            }
            a2.acquire().err().unwrap()
        });
        let _ha = a.acquire().unwrap();
        wait_b.recv().unwrap();
        a_waiting.send(()).unwrap();
        let _hb = b.acquire().unwrap();
        let err = t.join().unwrap();
        assert!(
            matches!(err, StoreError::Deadlock { ref stores } if stores == &["a", "b"]),
            "{err:?}"
        );
    }
}
