//! The work queue: reliable processing of new items of a type.
//!
//! A [`Listener`] sees every item of its type inserted into a store, once, in
//! id order (Axiom's batch processors). Its position is a cursor stored in
//! the same store and advanced in the same transaction as the listener's own
//! writes, so after a crash processing resumes exactly where it stopped: the
//! store's effects happen once, and effects outside the store at least once.
//! A failing item is retried with backoff and holds back the items after it,
//! so order is kept.
//!
//! ```
//! use mantissa_store::*;
//!
//! #[derive(Item)]
//! #[item(name = "doc.q.incoming", version = 1)]
//! struct Incoming { subject: String }
//!
//! #[derive(Item)]
//! #[item(name = "doc.q.tally", version = 1)]
//! struct Tally { seen: i64 }
//!
//! struct CountIncoming;
//! impl Listener for CountIncoming {
//!     type Item = Incoming;
//!     const NAME: &'static str = "doc.count-incoming";
//!     type Error = StoreError;
//!     fn process(_item: Stored<Incoming>, tx: &mut Write<'_>) -> Result<()> {
//!         match tx.query::<Tally>().first()? {
//!             Some(mut t) => { t.seen += 1; tx.update(&t) }
//!             None => tx.insert(&Tally { seen: 1 }).map(drop),
//!         }
//!     }
//! }
//! listener!(CountIncoming);
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let site = Site::open(dir.path()).unwrap();
//! let bob = site.user_store("bob").unwrap();
//! bob.write_blocking(|tx| {
//!     tx.insert(&Incoming { subject: "a".into() })?;
//!     tx.insert(&Incoming { subject: "b".into() }).map(drop)
//! }).unwrap();
//! site.run_due(Timestamp::now()).unwrap();
//! let seen = bob.read_blocking(|r| -> Result<_> { Ok(r.query::<Tally>().first()?.map(|t| t.seen)) }).unwrap();
//! assert_eq!(seen, Some(2));
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Failure, Result, StoreError};
use crate::item::{Item, Stored, table_name};
use crate::scheduler::backoff;
use crate::sql::ident;
use crate::store::{Store, Writer, run_write};
use crate::tx::Write;
use crate::value::{Ref, Timestamp, Value};

/// Processes every new item of one type. Register with
/// [`listener!`](crate::listener).
pub trait Listener: 'static {
    /// The item type it listens to.
    type Item: Item;
    /// A stable name, which keys its position in each store.
    const NAME: &'static str;
    /// What processing's failure is: the store only logs it and keeps its
    /// text, so the implementor's own type serves.
    type Error: From<StoreError> + std::fmt::Display;
    /// Processes one item, in a transaction of its store.
    fn process(item: Stored<Self::Item>, tx: &mut Write<'_>) -> Result<(), Self::Error>;
}

type Processor = fn(&mut Write<'_>, i64) -> Result<(), Failure>;

fn process_one<L: Listener>(tx: &mut Write<'_>, id: i64) -> Result<(), Failure> {
    match tx.find(Ref::<L::Item>::from_id(id))? {
        Some(item) => L::process(item, tx).map_err(Failure::of),
        None => Ok(()),
    }
}

/// Submitted by [`listener!`](crate::listener); not for hand use.
#[doc(hidden)]
pub struct ListenerRegistration {
    name: &'static str,
    item: &'static str,
    process: Processor,
}

impl ListenerRegistration {
    #[doc(hidden)]
    pub const fn of<L: Listener>() -> Self {
        ListenerRegistration {
            name: L::NAME,
            item: <L::Item as Item>::NAME,
            process: process_one::<L>,
        }
    }
}

inventory::collect!(ListenerRegistration);

/// Registers a [`Listener`].
#[macro_export]
macro_rules! listener {
    ($listener:ty) => {
        $crate::__private::inventory::submit! {
            $crate::__private::ListenerRegistration::of::<$listener>()
        }
    };
}

fn listeners() -> &'static HashMap<&'static str, Vec<&'static ListenerRegistration>> {
    static LISTENERS: OnceLock<HashMap<&'static str, Vec<&'static ListenerRegistration>>> =
        OnceLock::new();
    LISTENERS.get_or_init(|| {
        let mut map: HashMap<&'static str, Vec<&'static ListenerRegistration>> = HashMap::new();
        for l in inventory::iter::<ListenerRegistration> {
            map.entry(l.item).or_default().push(l);
        }
        map
    })
}

/// Whether inserting an item of this type gives a listener work.
pub(crate) fn is_listened(item: &str) -> bool {
    listeners().contains_key(item)
}

/// What became of one item a listener was given.
enum Claim {
    Done,
    Failed,
    /// Another process processed it first.
    Moved,
}

fn int(v: Option<Value<'static>>) -> i64 {
    match v {
        Some(Value::Integer(i)) => i,
        _ => 0,
    }
}

/// Processes what every listener has pending in this store. Returns how many
/// items were processed and, if some wait for a retry, when.
pub(crate) fn process(w: &mut Writer, now: Timestamp) -> Result<(usize, Option<Timestamp>)> {
    let mut done = 0;
    let mut retry: Option<Timestamp> = None;
    for (item, regs) in listeners() {
        if w.shared.registry.find(item).is_none() {
            continue;
        }
        crate::upgrade::finish(w.conn(), &w.shared, item)?;
        if !crate::schema::has_table(w.conn(), &w.shared, item, false)? {
            continue; // no items of the type yet
        }
        for l in regs {
            loop {
                let row = w.conn().rows(
                    "SELECT last_id, attempts, retry_at FROM _cursors WHERE listener = ?",
                    &[Value::Text(l.name.into())],
                )?;
                let mut it = row.into_iter().next().unwrap_or_default().into_iter();
                let (last, attempts, retry_at) = (int(it.next()), int(it.next()), int(it.next()));
                if retry_at > now.as_micros() {
                    let at = Timestamp::from_micros(retry_at);
                    retry = Some(retry.map_or(at, |r| r.min(at)));
                    break;
                }
                let ids: Vec<i64> = w
                    .conn()
                    .rows(
                        &format!(
                            "SELECT id FROM {} WHERE id > ? ORDER BY id LIMIT 100",
                            ident(&table_name(item))
                        ),
                        &[Value::Integer(last)],
                    )?
                    .into_iter()
                    .map(|r| int(r.into_iter().next()))
                    .collect();
                if ids.is_empty() {
                    break;
                }
                let mut failed = false;
                // Where the cursor is, as far as this process knows.
                let mut expected = last;
                let mut moved = false;
                for id in ids {
                    let ok = run_write(w, |tx| -> Result<_> {
                        // Claimed here, under the store's write lock, which
                        // every node's writers of the store take: another
                        // process may have moved the cursor past it.
                        let now_at = tx.conn().rows(
                            "SELECT last_id FROM _cursors WHERE listener = ?",
                            &[Value::Text(l.name.into())],
                        )?;
                        let now_at =
                            int(now_at.into_iter().next().and_then(|r| r.into_iter().next()));
                        if now_at != expected {
                            return Ok(Claim::Moved);
                        }
                        let outcome =
                            tx.savepoint(|tx| crate::store::caught(|| (l.process)(tx, id)));
                        let (last_id, attempts, retry_at, error) = match &outcome {
                            Ok(()) => (id, 0, 0, None),
                            Err(e) => {
                                let n = attempts + 1;
                                tracing::warn!(store = tx.store_name(), listener = l.name, id, attempts = n, error = %e, "work queue item failed");
                                (
                                    id - 1,
                                    n,
                                    now.plus(backoff(n as u32)).as_micros(),
                                    Some(e.to_string()),
                                )
                            }
                        };
                        crate::schema::Internal::Cursors.ensure(tx.conn())?;
                        tx.conn().execute(
                            "INSERT INTO _cursors (listener, last_id, attempts, retry_at, last_error) VALUES (?, ?, ?, ?, ?)
                             ON CONFLICT (listener) DO UPDATE SET last_id = excluded.last_id,
                               attempts = excluded.attempts, retry_at = excluded.retry_at, last_error = excluded.last_error",
                            &[
                                Value::Text(l.name.into()),
                                Value::Integer(last_id),
                                Value::Integer(attempts),
                                Value::Integer(retry_at),
                                error.map_or(Value::Null, |e| Value::Text(e.into())),
                            ],
                        )?;
                        Ok(if outcome.is_ok() {
                            Claim::Done
                        } else {
                            Claim::Failed
                        })
                    })?;
                    match ok {
                        Claim::Done => {
                            expected = id;
                            done += 1;
                        }
                        Claim::Failed => {
                            failed = true;
                            break;
                        }
                        Claim::Moved => {
                            moved = true;
                            break;
                        }
                    }
                }
                if failed || moved {
                    // The loop top records when to retry, or reads where
                    // the other process left the cursor.
                    continue;
                }
            }
        }
    }
    Ok((done, retry))
}

impl Store {
    /// Runs every listener over the new items of this store; returns how many
    /// items were processed. (The site does this for stores with new work.)
    pub fn process_work(&self) -> Result<usize> {
        let now = Timestamp::now();
        Ok(self
            .on_writer("Store::process_work", move |w| process(w, now))??
            .0)
    }
}

/// When this store next has work of any kind: a schedule entry, an item a
/// listener has not processed, a listener retry, a message to deliver.
pub(crate) fn next_work(
    conn: &crate::backend::Conn,
    shared: &crate::store::Shared,
) -> Result<Option<Timestamp>> {
    let mut next: Option<i64> = None;
    let mut at = |v: Option<Value<'static>>| {
        if let Some(Value::Integer(i)) = v {
            next = Some(next.map_or(i, |n| n.min(i)));
        }
    };
    at(conn.scalar("SELECT MIN(due) FROM _schedule", &[])?);
    at(conn.scalar(
        "SELECT MIN(next_try) FROM _outbox WHERE state = 'pending'",
        &[],
    )?);
    at(conn.scalar("SELECT MIN(retry_at) FROM _cursors WHERE retry_at > 0", &[])?);
    for (item, regs) in listeners() {
        if shared.registry.find(item).is_none()
            || shared.upgrade_pending(item)
            || !crate::schema::has_table(conn, shared, item, false)?
        {
            continue;
        }
        for l in regs {
            let last = int(conn.scalar(
                "SELECT last_id FROM _cursors WHERE listener = ?",
                &[Value::Text(l.name.into())],
            )?);
            let waiting = conn
                .scalar(
                    &format!(
                        "SELECT 1 FROM {} WHERE id > ? LIMIT 1",
                        ident(&table_name(item))
                    ),
                    &[Value::Integer(last)],
                )?
                .is_some();
            if waiting {
                at(Some(Value::Integer(Timestamp::now().as_micros())));
            }
        }
    }
    Ok(next.map(Timestamp::from_micros))
}
