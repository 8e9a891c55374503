//! Refusing blocking calls where they would block the async runtime.
//!
//! A blocking call on a runtime thread stops every task on that thread
//! until it returns, and tokio panics in some of them ("Cannot block the
//! current thread from within a runtime") — after the work was handed on,
//! so the caller saw a panic for a write that went on to commit. Every
//! blocking call of the store's API asks [`refuse_in_async`] first, before
//! it does anything.
//!
//! The rule is tokio's own: blocking is allowed on threads outside any
//! runtime and on `spawn_blocking` threads, not on a runtime's worker
//! threads nor inside `block_on`. tokio has no public way to ask it, so
//! this asks the one call that applies the rule and answers without
//! blocking when it may: waiting on a channel that is already closed. Where
//! blocking is not allowed, that call panics before it does anything; the
//! panic is caught here and not printed.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use crate::error::{Result, StoreError};

thread_local! {
    /// Set while this thread asks, so that the panic hook stays quiet.
    static ASKING: Cell<bool> = const { Cell::new(false) };
}

/// Refuses `call` with an error naming `instead` when this thread is one
/// of an async runtime's.
pub(crate) fn refuse_in_async(call: &'static str, instead: &'static str) -> Result<()> {
    if may_block() {
        Ok(())
    } else {
        Err(StoreError::BlockingInAsync { call, instead })
    }
}

/// Whether this thread may block (tokio's rule).
pub(crate) fn may_block() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        // No runtime at all on this thread.
        return true;
    }
    quiet_panic_hook();
    let (closed, rx) = tokio::sync::oneshot::channel::<()>();
    drop(closed);
    ASKING.set(true);
    let allowed = catch_unwind(AssertUnwindSafe(|| rx.blocking_recv())).is_ok();
    ASKING.set(false);
    allowed
}

/// Wraps the panic hook once, to keep it from printing the panic that
/// answers "no" in [`may_block`].
fn quiet_panic_hook() {
    static WRAPPED: Once = Once::new();
    WRAPPED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !ASKING.get() {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_is_allowed_outside_a_runtime_and_in_spawn_blocking_only() {
        assert!(may_block());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!rt.block_on(async { may_block() }));
        assert!(rt.block_on(async { tokio::task::spawn_blocking(may_block).await.unwrap() }));
        let guard = rt.enter();
        // Entered (a handle is current) but not running: blocking is fine.
        assert!(may_block());
        drop(guard);
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert!(!multi.block_on(async { tokio::spawn(async { may_block() }).await.unwrap() }));
    }
}
