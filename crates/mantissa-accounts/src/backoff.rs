//! Progressive back-off after failures, kept in memory.
//!
//! Replaces the old lock after ten failed log-ins, which any stranger could
//! trigger (and re-trigger after each unlock) to shut an owner out. Here a
//! key (an account, an address, an account's second factor) gets a number
//! of failures for free; after that each further failure makes the key
//! wait twice as long as the last, up to a ceiling, and the wait ends by
//! itself. A key forgets its failures once it has been quiet for a while,
//! and [`Backoff::prune`] drops those keys, so memory comes back.
//!
//! Keys are small and fixed in size (ids, addresses, hashes), never text an
//! attacker chose: see `service::Key`.
//!
//! Kept in memory, per process: a restart forgets, and on several nodes
//! each counts its own. That is the price of not writing a row per failed
//! attempt (which is itself something to flood).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rules of one back-off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    /// Failures without any wait.
    pub free: u32,
    /// The first wait, doubled at each further failure.
    pub first: Duration,
    /// The longest wait.
    pub longest: Duration,
    /// Quiet time after which a key's failures are forgotten.
    pub forget_after: Duration,
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    last: Instant,
    until: Option<Instant>,
}

/// Failures per key, and the waits they impose.
pub(crate) struct Backoff<K> {
    rules: Rules,
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: Hash + Eq> Backoff<K> {
    pub(crate) fn new(rules: Rules) -> Self {
        Backoff {
            rules,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` while `key` must still wait.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        match self.lock().get(key).and_then(|e| e.until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure for `key`.
    pub(crate) fn fail(&self, key: K) {
        let now = Instant::now();
        let rules = self.rules;
        let mut entries = self.lock();
        let e = entries.entry(key).or_insert(Entry {
            failures: 0,
            last: now,
            until: None,
        });
        if now.duration_since(e.last) > rules.forget_after {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        if e.failures > rules.free {
            let doublings = (e.failures - rules.free - 1).min(30);
            let wait = rules
                .first
                .saturating_mul(1u32 << doublings)
                .min(rules.longest);
            e.until = Some(now + wait);
        }
    }

    /// Forgets `key`'s failures (after a success).
    pub(crate) fn clear(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Drops the keys that have nothing left to remember.
    pub(crate) fn prune(&self) {
        self.prune_at(Instant::now());
    }

    fn prune_at(&self, now: Instant) {
        let forget = self.rules.forget_after;
        let mut entries = self.lock();
        entries.retain(|_, e| {
            now.duration_since(e.last) <= forget || e.until.is_some_and(|u| u > now)
        });
        entries.shrink_to_fit();
    }

    /// How many keys are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            free: 2,
            first: Duration::from_secs(60),
            longest: Duration::from_secs(600),
            forget_after: Duration::from_secs(3600),
        }
    }

    #[test]
    fn failures_beyond_the_free_ones_make_the_key_wait_and_success_forgets() {
        let b = Backoff::new(rules());
        b.fail(1);
        b.fail(1);
        assert!(b.check(&1).is_ok(), "two failures are free");
        b.fail(1);
        let wait = b.check(&1).unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        b.fail(1);
        assert!(
            b.check(&1).unwrap_err() > Duration::from_secs(110),
            "doubled"
        );
        for _ in 0..40 {
            b.fail(1);
        }
        assert!(
            b.check(&1).unwrap_err() <= Duration::from_secs(600),
            "capped"
        );
        assert!(b.check(&2).is_ok(), "other keys do not wait");
        b.clear(&1);
        assert!(b.check(&1).is_ok());
    }

    #[test]
    fn pruning_keeps_keys_that_still_wait_or_remember() {
        let b = Backoff::new(Rules {
            first: Duration::from_secs(3 * 3600),
            longest: Duration::from_secs(10 * 3600),
            ..rules()
        });
        b.fail(1);
        for _ in 0..3 {
            b.fail(2);
        }
        b.prune();
        assert_eq!(b.len(), 2, "recent failures are remembered");
        // Two hours on: key 1 was quiet for longer than an hour, key 2
        // still waits (three hours).
        b.prune_at(Instant::now() + Duration::from_secs(2 * 3600));
        assert_eq!(b.len(), 1, "only the waiting key is kept");
    }
}
