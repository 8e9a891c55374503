//! Purging what accounts leave behind: ended sessions, used and expired
//! links, and passkey challenges nobody finished. Without it the site
//! store grew by a row per log-in, for ever.
//!
//! One [`Upkeep`] item in the site store runs on the store's scheduler
//! every [`PURGE_EVERY`]; [`Accounts::schedule_upkeep`] puts it there once
//! (the command line does at each start; doing it again changes nothing).
//! Being scheduled work, it runs in one transaction with its own
//! rescheduling, survives restarts, and on PostgreSQL runs once across
//! nodes.

use std::time::Duration;

use mantissa_store::{Item, Result, Scheduled, Stored, Timestamp, Write, scheduled};
use mantissa_web::SessionRecord;

use crate::model::Ticket;
use crate::passkeys::PasskeyChallenge;
use crate::service::{AccountError, Accounts};

/// How often the purge runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The purge's schedule entry, and what it has done.
#[derive(Item, Debug, Clone)]
#[item(name = "mantissa.accounts_upkeep", version = 1)]
pub struct Upkeep {
    /// Rows purged so far, all runs together (for the curious operator).
    pub purged: i64,
    /// When it last ran.
    pub last_run: Option<Timestamp>,
}

impl Scheduled for Upkeep {
    type Error = mantissa_store::StoreError;
    fn run(mut me: Stored<Self>, tx: &mut Write<'_>, now: Timestamp) -> Result<Option<Timestamp>> {
        let purged = purge(tx, now)?;
        me.purged += purged as i64;
        me.last_run = Some(now);
        tx.update(&me)?;
        if purged > 0 {
            tracing::info!(
                purged,
                "ended sessions, used links and old challenges purged"
            );
        }
        Ok(Some(now.plus(PURGE_EVERY)))
    }
}
scheduled!(Upkeep);

/// Deletes what ended before `now`; returns how many rows. A used link is
/// purged at once: missing or used, it is refused alike.
pub(crate) fn purge(tx: &mut Write<'_>, now: Timestamp) -> Result<usize> {
    let sessions = tx.delete_where(SessionRecord::expires.lt(now))?;
    let tickets = tx.delete_where(Ticket::used.eq(true).or(Ticket::expires.lt(now)))?;
    let challenges = tx.delete_where(PasskeyChallenge::expires.lt(now))?;
    Ok(sessions + tickets + challenges)
}

impl Accounts {
    /// Schedules the purge of ended sessions, used or expired links and
    /// old passkey challenges on the site store's scheduler, unless it is
    /// scheduled already. Blocking: call it off the async threads.
    pub fn schedule_upkeep(&self) -> std::result::Result<(), AccountError> {
        self.site().store().write_blocking(|tx| {
            if tx.query::<Upkeep>().count()? > 0 {
                return Ok(());
            }
            let id = tx.insert(&Upkeep {
                purged: 0,
                last_run: None,
            })?;
            tx.schedule(id, Timestamp::now().plus(PURGE_EVERY))
        })?;
        Ok(())
    }
}
