//! The scheduler: persistent timed work.
//!
//! An item whose type implements [`Scheduled`] can be scheduled to run at a
//! time. The schedule is a table in the item's store, so it survives
//! restarts; each due entry runs in a transaction together with the update
//! of its own schedule entry, so its effects on the store happen once. A
//! failing run is recorded and retried with exponential backoff; a recurring
//! one returns its next time.
//!
//! User stores tell the site, inside the transaction that schedules, when
//! they next have work due (see [`Site::run_due`](crate::Site::run_due)), so
//! the site finds due stores without opening them all.
//!
//! ```
//! use mantissa_store::*;
//!
//! #[derive(Item)]
//! #[item(name = "doc.sched.reminder", version = 1)]
//! struct Reminder { text: String, fired: i64 }
//!
//! impl Scheduled for Reminder {
//!     type Error = StoreError;
//!     fn run(mut me: Stored<Self>, tx: &mut Write<'_>, _now: Timestamp) -> Result<Option<Timestamp>> {
//!         me.fired += 1;
//!         tx.update(&me)?;
//!         Ok(None) // once; return Some(time) to recur
//!     }
//! }
//! scheduled!(Reminder);
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let site = Site::open(dir.path()).unwrap();
//! let alice = site.user_store("alice").unwrap();
//! let id = alice.write_blocking(|tx| -> Result<_> {
//!     let id = tx.insert(&Reminder { text: "tea".into(), fired: 0 })?;
//!     tx.schedule(id, Timestamp::now())?;
//!     Ok(id)
//! }).unwrap();
//! site.run_due(Timestamp::now().plus(std::time::Duration::from_secs(1))).unwrap();
//! assert_eq!(alice.read_blocking(move |r| r.get(id)).unwrap().fired, 1);
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Failure, Result, StoreError};
use crate::item::{Item, Stored};
use crate::store::{Store, Writer, run_write};
use crate::tx::{Read, Write};
use crate::value::{Ref, Timestamp, Value};

/// An item type that can be scheduled. Register it with
/// [`scheduled!`](crate::scheduled).
pub trait Scheduled: Item {
    /// What a run's failure is: the store only logs it and keeps its text,
    /// so the implementor's own type serves.
    type Error: From<StoreError> + std::fmt::Display;
    /// Does the item's work, in a transaction of its store. Returns the time
    /// to run again, or `None` when done. An error is recorded and the run
    /// retried later, with backoff; what the failed run wrote is undone.
    fn run(
        item: Stored<Self>,
        tx: &mut Write<'_>,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, Self::Error>;
}

type Runner = fn(&mut Write<'_>, i64, Timestamp) -> Result<Option<Timestamp>, Failure>;

fn run_one<T: Scheduled>(
    tx: &mut Write<'_>,
    id: i64,
    now: Timestamp,
) -> Result<Option<Timestamp>, Failure> {
    match tx.find(Ref::<T>::from_id(id))? {
        Some(item) => T::run(item, tx, now).map_err(Failure::of),
        None => Ok(None),
    }
}

/// Submitted by [`scheduled!`](crate::scheduled); not for hand use.
#[doc(hidden)]
pub struct ScheduledRegistration {
    item: &'static str,
    run: Runner,
}

impl ScheduledRegistration {
    #[doc(hidden)]
    pub const fn of<T: Scheduled>() -> Self {
        ScheduledRegistration {
            item: T::NAME,
            run: run_one::<T>,
        }
    }
}

inventory::collect!(ScheduledRegistration);

/// Registers a [`Scheduled`] item type with the scheduler.
#[macro_export]
macro_rules! scheduled {
    ($item:ty) => {
        $crate::__private::inventory::submit! {
            $crate::__private::ScheduledRegistration::of::<$item>()
        }
    };
}

fn runners() -> &'static HashMap<&'static str, Runner> {
    static RUNNERS: OnceLock<HashMap<&'static str, Runner>> = OnceLock::new();
    RUNNERS.get_or_init(|| {
        inventory::iter::<ScheduledRegistration>
            .into_iter()
            .map(|r| (r.item, r.run))
            .collect()
    })
}

/// One entry of a store's schedule.
#[derive(Debug, Clone)]
pub struct ScheduleEntry {
    /// The item type.
    pub item_type: String,
    /// The item's id.
    pub item_id: i64,
    /// When it is due.
    pub due: Timestamp,
    /// Failed runs since the last success.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
}

/// How long to wait after the `attempts`-th failure: 1 s, 2 s, 4 s… up to
/// an hour.
pub(crate) fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(12)).min(Duration::from_secs(3600))
}

impl Write<'_> {
    /// Schedules `item` to run at `at` (replacing an earlier schedule of it).
    pub fn schedule<T: Scheduled>(&mut self, item: Ref<T>, at: Timestamp) -> Result<()> {
        self.get(item)?;
        self.conn().execute(
            "INSERT INTO _schedule (item_type, item_id, due) VALUES (?, ?, ?)
             ON CONFLICT (item_type, item_id) DO UPDATE SET due = excluded.due, attempts = 0, last_error = NULL",
            &[
                Value::Text(T::NAME.into()),
                Value::Integer(item.id()),
                Value::Integer(at.as_micros()),
            ],
        )?;
        self.note_work_at(at);
        Ok(())
    }

    /// Takes `item` off the schedule; returns whether it was on it.
    pub fn unschedule<T: Scheduled>(&mut self, item: Ref<T>) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM _schedule WHERE item_type = ? AND item_id = ?",
            &[Value::Text(T::NAME.into()), Value::Integer(item.id())],
        )? > 0)
    }
}

fn entry(row: Vec<Value<'static>>) -> Option<ScheduleEntry> {
    let mut it = row.into_iter();
    let item_type = match it.next()? {
        Value::Text(t) => t.into_owned(),
        _ => return None,
    };
    let int = |v: Option<Value<'static>>| match v {
        Some(Value::Integer(i)) => i,
        _ => 0,
    };
    Some(ScheduleEntry {
        item_type,
        item_id: int(it.next()),
        due: Timestamp::from_micros(int(it.next())),
        attempts: int(it.next()) as u32,
        last_error: match it.next() {
            Some(Value::Text(t)) => Some(t.into_owned()),
            _ => None,
        },
    })
}

impl Read<'_> {
    /// When `item` is scheduled to run, if it is.
    pub fn scheduled_at<T: Scheduled>(&self, item: Ref<T>) -> Result<Option<Timestamp>> {
        Ok(self
            .conn()
            .scalar(
                "SELECT due FROM _schedule WHERE item_type = ? AND item_id = ?",
                &[Value::Text(T::NAME.into()), Value::Integer(item.id())],
            )?
            .and_then(|v| match v {
                Value::Integer(i) => Some(Timestamp::from_micros(i)),
                _ => None,
            }))
    }

    /// The whole schedule, soonest first.
    pub fn schedule(&self) -> Result<Vec<ScheduleEntry>> {
        Ok(self
            .conn()
            .rows(
                "SELECT item_type, item_id, due, attempts, last_error FROM _schedule ORDER BY due, id",
                &[],
            )?
            .into_iter()
            .filter_map(entry)
            .collect())
    }
}

/// Runs every entry of this store due at `now`; returns how many ran.
pub(crate) fn run_due(w: &mut Writer, now: Timestamp) -> Result<usize> {
    let mut ran = 0;
    loop {
        let due: Vec<(i64, ScheduleEntry)> = w
            .conn()
            .rows(
                "SELECT id, item_type, item_id, due, attempts, last_error FROM _schedule
                 WHERE due <= ? ORDER BY due, id LIMIT 100",
                &[Value::Integer(now.as_micros())],
            )?
            .into_iter()
            .filter_map(|mut row| {
                let id = match row.remove(0) {
                    Value::Integer(i) => i,
                    _ => return None,
                };
                Some((id, entry(row)?))
            })
            .collect();
        if due.is_empty() {
            return Ok(ran);
        }
        for (row_id, e) in due {
            let ran_here = run_write(w, |tx| -> Result<_> {
                // Claimed here, under the store's write lock, which every
                // node's writers of the store take: another process may
                // have run the entry since it was read as due.
                let still = tx.conn().rows(
                    "SELECT attempts FROM _schedule WHERE id = ? AND due <= ?",
                    &[Value::Integer(row_id), Value::Integer(now.as_micros())],
                )?;
                let Some(attempts) = still
                    .into_iter()
                    .next()
                    .map(|r| crate::schema::int(r.into_iter().next()).unwrap_or(0))
                else {
                    return Ok(false);
                };
                let e = ScheduleEntry {
                    attempts: attempts as u32,
                    ..e
                };
                let outcome = match runners().get(e.item_type.as_str()) {
                    Some(run) => {
                        tx.savepoint(|tx| crate::store::caught(|| run(tx, e.item_id, now)))
                    }
                    None => Err(StoreError::UnknownType(e.item_type.clone()).into()),
                };
                match outcome {
                    Ok(Some(next)) => {
                        tx.conn().execute(
                            "UPDATE _schedule SET due = ?, attempts = 0, last_error = NULL WHERE id = ?",
                            &[Value::Integer(next.as_micros()), Value::Integer(row_id)],
                        )?;
                    }
                    Ok(None) => {
                        tx.conn().execute(
                            "DELETE FROM _schedule WHERE id = ?",
                            &[Value::Integer(row_id)],
                        )?;
                    }
                    Err(err) => {
                        let attempts = e.attempts + 1;
                        tracing::warn!(store = tx.store_name(), item = %e.item_type, id = e.item_id, attempts, error = %err, "scheduled run failed");
                        tx.conn().execute(
                            "UPDATE _schedule SET due = ?, attempts = ?, last_error = ? WHERE id = ?",
                            &[
                                Value::Integer(now.plus(backoff(attempts)).as_micros()),
                                Value::Integer(attempts.into()),
                                Value::Text(err.to_string().into()),
                                Value::Integer(row_id),
                            ],
                        )?;
                    }
                }
                Ok(true)
            })?;
            if ran_here {
                ran += 1;
            }
        }
    }
}

impl Store {
    /// Runs every scheduled entry of this store that is due at `now`, and
    /// returns how many ran. (The site runs this for every store with due
    /// work; call it directly for a store opened on its own.)
    pub fn run_due(&self, now: Timestamp) -> Result<usize> {
        self.on_writer("Store::run_due", move |w| run_due(w, now))?
    }

    /// When this store's next scheduled entry is due.
    pub fn next_due(&self) -> Result<Option<Timestamp>> {
        self.read_blocking(|r| {
            Ok(
                match r.conn().scalar("SELECT MIN(due) FROM _schedule", &[])? {
                    Some(Value::Integer(i)) => Some(Timestamp::from_micros(i)),
                    _ => None,
                },
            )
        })
    }
}
